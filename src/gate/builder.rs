//! [`GateBuilder`]: a gate described in code instead of a TOML file.
//!
//! The builder writes the config it describes as TOML and loads it with [`Config::from_toml`],
//! so a gate built in code is validated exactly like one built from a file (same rules, same
//! messages), with nothing to keep in step.

use std::fmt::Write;

use super::{Gate, GateError};
use crate::config::{Config, ConfigErrors};

/// Builds a [`Gate`] in code.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let gate = whopgate::Gate::builder()
///     .api_key("test-key")
///     .app_id("app_xxxxxxxxxxxxxx")
///     .public("/assets")
///     .require_admin("/admin", ["biz_xxxxxxxxxxxxxx"])
///     .require("/", ["prod_aaaaaaaaaaaaaa"])
///     .build()
///     .await?;
/// assert_eq!(gate.rule_count(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct GateBuilder {
    top: String,
    whop: String,
    tables: String,
    routes: String,
}

/// A TOML string literal (quoted and escaped).
fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let items: Vec<String> = items.into_iter().map(|s| quoted(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

impl GateBuilder {
    /// An empty description: add routes and the Whop settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// `whop.api_key`.
    pub fn api_key(mut self, key: impl AsRef<str>) -> Self {
        let _ = writeln!(self.whop, "api_key = {}", quoted(key.as_ref()));
        self
    }

    /// `whop.app_id`: the `aud` user tokens must carry.
    pub fn app_id(mut self, app_id: impl AsRef<str>) -> Self {
        let _ = writeln!(self.whop, "app_id = {}", quoted(app_id.as_ref()));
        self
    }

    /// `whop.api_base` (a sandbox, or a local mock in tests).
    pub fn api_base(mut self, url: impl AsRef<str>) -> Self {
        let _ = writeln!(self.whop, "api_base = {}", quoted(url.as_ref()));
        self
    }

    /// `prefix` for whopgate's own endpoints.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Self {
        let _ = writeln!(self.top, "prefix = {}", quoted(prefix.as_ref()));
        self
    }

    /// `public_url`: this site's external origin (needed for Sign in with Whop).
    pub fn public_url(mut self, url: impl AsRef<str>) -> Self {
        let _ = writeln!(self.top, "public_url = {}", quoted(url.as_ref()));
        self
    }

    /// A public route: no identity needed.
    pub fn public(mut self, path: impl AsRef<str>) -> Self {
        let _ = write!(self.routes, "\n[[route]]\npath = {}\npublic = true\n", quoted(path.as_ref()));
        self
    }

    /// A route open to customers of any of `resources`.
    pub fn require<I, S>(self, path: impl AsRef<str>, resources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.route(path, resources, "customer")
    }

    /// A route open only to team members (admins) of any of `resources`.
    pub fn require_admin<I, S>(self, path: impl AsRef<str>, resources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.route(path, resources, "admin")
    }

    fn route<I, S>(mut self, path: impl AsRef<str>, resources: I, level: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let _ = write!(
            self.routes,
            "\n[[route]]\npath = {}\nrequire = {}\naccess_level = {}\n",
            quoted(path.as_ref()),
            list(resources),
            quoted(level)
        );
        self
    }

    /// Any other part of the config, as TOML tables (e.g. `"[cache]\nttl = \"30s\""`), for
    /// settings without a method of their own.
    pub fn toml(mut self, tables: impl AsRef<str>) -> Self {
        self.tables.push('\n');
        self.tables.push_str(tables.as_ref());
        self.tables.push('\n');
        self
    }

    /// The config described so far, validated like a file.
    pub fn config(&self) -> Result<Config, ConfigErrors> {
        let text = format!("{}\n[whop]\n{}{}\n{}", self.top, self.whop, self.tables, self.routes);
        Config::from_toml(&text, "GateBuilder")
    }

    /// Builds the gate (inside a tokio runtime).
    pub async fn build(self) -> Result<Gate, GateError> {
        let config = self.config().map_err(GateError::Config)?;
        Gate::from_config(&config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_validated_config() {
        let config = GateBuilder::new()
            .api_key("k\"with quotes")
            .app_id("app_xxxxxxxxxxxxxx")
            .public("/assets")
            .require("/", ["prod_a", "prod_b"])
            .toml("[cache]\nttl = \"30s\"")
            .config()
            .unwrap();
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.routes[1].require, ["prod_a", "prod_b"]);
        assert_eq!(config.cache.ttl, std::time::Duration::from_secs(30));
        assert_eq!(config.whop.api_key.unwrap().expose(), "k\"with quotes");
    }

    #[test]
    fn invalid_descriptions_are_refused_like_files() {
        let errors = GateBuilder::new().app_id("app_xxxxxxxxxxxxxx").require("/", ["not_a_resource"]).config();
        let text = errors.unwrap_err().to_string();
        assert!(text.contains("not_a_resource"), "{text}");
        let errors = GateBuilder::new().app_id("app_xxxxxxxxxxxxxx").config();
        assert!(errors.unwrap_err().to_string().contains("[[route]]"));
    }
}
