//! The route table: which rule a request falls under.
//!
//! Rules are tried in file order and the first whose path, methods and host all match wins; a
//! request that matches none is denied. A rule's `path` is a *segment* prefix: `/assets` matches
//! `/assets` and `/assets/app.js`, never `/assetsX`. Paths are compared after
//! [`crate::path::normalize`], so the table never sees two spellings of one path.

use std::fmt;
use std::sync::Arc;

use http::Method;

use crate::config::{AccessLevel, OnWhopError, RouteConfig, RouteMode};

/// A Whop resource a rule requires: a product `prod_…`, an experience `exp_…` or a company `biz_…`.
pub type ResourceId = Arc<str>;

/// One `[[route]]` of the config, ready for matching.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the table (0-based), also the index of this rule's metrics.
    pub index: usize,
    /// Segment prefix the request path must fall under; `/` matches everything.
    pub path: String,
    /// Methods this rule applies to; `None` means any.
    pub methods: Option<Vec<Method>>,
    /// Host this rule applies to; `None` means any.
    pub host: Option<HostPattern>,
    /// No identity needed (identity headers are still set when one is present).
    pub public: bool,
    /// Resources of which any one grants access.
    pub require: Vec<ResourceId>,
    /// The access level the caller must hold on a required resource.
    pub access_level: AccessLevel,
    /// Whether denials may redirect (`browser`), never do (`api`), or follow the request (`auto`).
    pub mode: RouteMode,
    /// What to do when Whop cannot be asked and no cached decision can be served.
    pub on_whop_error: OnWhopError,
    /// Where a browser without access is sent.
    pub checkout_url: Option<String>,
    /// Line of the `[[route]]` header in the config file.
    pub line: u32,
}

impl Rule {
    fn from_config(index: usize, route: &RouteConfig) -> Self {
        Self {
            index,
            path: route.path.clone(),
            methods: route.methods.clone(),
            host: route.host.as_deref().map(HostPattern::new),
            public: route.public,
            require: route.require.iter().map(|r| Arc::from(r.as_str())).collect(),
            access_level: route.access_level,
            mode: route.mode,
            on_whop_error: route.on_whop_error,
            checkout_url: route.checkout_url.as_ref().map(ToString::to_string),
            line: route.line,
        }
    }

    /// Does this rule's path cover `path` (a normalised request path)?
    pub fn covers_path(&self, path: &str) -> bool {
        is_segment_prefix(&self.path, path)
    }

    fn matches(&self, method: &Method, host: Option<&str>, path: &str) -> bool {
        self.covers_path(path)
            && self.methods.as_ref().is_none_or(|ms| ms.contains(method))
            && self.host.as_ref().is_none_or(|pattern| host.is_some_and(|h| pattern.matches(h)))
    }

    /// What the rule demands, in words: `public`, `customer of prod_a`, `admin of any of biz_a, prod_b`.
    pub fn requirement(&self) -> String {
        if self.public {
            return "public".to_owned();
        }
        let level = self.access_level.as_str();
        match self.require.as_slice() {
            [one] => format!("{level} of {one}"),
            many => {
                let list: Vec<&str> = many.iter().map(|r| &**r).collect();
                format!("{level} of any of {}", list.join(", "))
            }
        }
    }

    /// The rule's methods, `GET,POST`, or `any`.
    pub fn methods_text(&self) -> String {
        match &self.methods {
            Some(ms) => ms.iter().map(Method::as_str).collect::<Vec<_>>().join(","),
            None => "any".to_owned(),
        }
    }

    /// The rule's match conditions, in words: `/api, GET,POST, host a.example.com`.
    pub fn conditions(&self) -> String {
        let mut out = self.path.clone();
        if self.methods.is_some() {
            out.push_str(", ");
            out.push_str(&self.methods_text());
        }
        if let Some(h) = &self.host {
            out.push_str(&format!(", host {h}"));
        }
        out
    }
}

/// `rule` is a segment prefix of `path`: equal, or followed by `/` in `path`, or `/` itself.
///
/// A `;` also ends the segment: servers that cut path parameters read `/admin;x` as `/admin`,
/// so the `/admin` rule must cover it.
fn is_segment_prefix(rule: &str, path: &str) -> bool {
    if rule == "/" {
        return true;
    }
    match path.strip_prefix(rule) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with(';'),
        None => false,
    }
}

/// A rule's `host`: an exact name or a `*.` wildcard, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pattern: String,
}

impl HostPattern {
    /// A pattern from the config's (already lower-cased) `host` value.
    pub fn new(pattern: &str) -> Self {
        Self { pattern: pattern.to_ascii_lowercase() }
    }

    /// Does the request's host (as sent, any case, maybe with a port) match?
    ///
    /// A pattern without a port matches the host on any port.
    pub fn matches(&self, request_host: &str) -> bool {
        let host = if has_port(&self.pattern) { request_host } else { strip_port(request_host) };
        match self.pattern.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            None => host.eq_ignore_ascii_case(&self.pattern),
        }
    }

    /// Every host this pattern matches is also matched by `self`.
    fn covers(&self, other: &HostPattern) -> bool {
        if self == other {
            return true;
        }
        match (self.pattern.strip_prefix("*."), other.pattern.starts_with("*.")) {
            (Some(_), false) => self.matches(&other.pattern),
            (Some(_), true) => other.pattern[1..].ends_with(&self.pattern[1..]),
            (None, _) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

fn has_port(host: &str) -> bool {
    // `[::1]:80` has a port, `[::1]` does not; a bare IPv6 literal cannot appear in Host.
    match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    }
}

fn strip_port(host: &str) -> &str {
    if has_port(host) { host.rsplit_once(':').map_or(host, |(h, _)| h) } else { host }
}

/// An earlier rule that catches every request a later rule would: the later one never applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// Index of the rule that can never match.
    pub rule: usize,
    /// Index of the earlier rule that takes all of its requests.
    pub by: usize,
}

/// The ordered rules; first match wins, no match is a denial.
#[derive(Debug, Clone)]
pub struct RouteTable {
    rules: Vec<Rule>,
}

impl RouteTable {
    /// Builds the table from the config's `[[route]]` list, keeping file order.
    pub fn new(routes: &[RouteConfig]) -> Self {
        Self { rules: routes.iter().enumerate().map(|(i, r)| Rule::from_config(i, r)).collect() }
    }

    /// The first rule that matches, or `None` (deny).
    ///
    /// `path` must already be normalised; `host` is the request's canonical host
    /// ([`crate::authority`]), if any.
    pub fn find(&self, method: &Method, host: Option<&str>, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.matches(method, host, path))
    }

    /// The rules in match order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Does any rule apply to some methods only? (Then a method override could change which rule
    /// a request falls under.)
    pub fn has_method_rules(&self) -> bool {
        self.rules.iter().any(|rule| rule.methods.is_some())
    }

    /// Rules that can never match because an earlier rule takes all their requests.
    pub fn shadowed(&self) -> Vec<Shadowed> {
        let mut out = Vec::new();
        for (j, later) in self.rules.iter().enumerate() {
            if let Some(earlier) = self.rules[..j].iter().find(|earlier| takes_all_of(earlier, later)) {
                out.push(Shadowed { rule: j, by: earlier.index });
            }
        }
        out
    }
}

/// Every request `later` matches is matched by `earlier`.
fn takes_all_of(earlier: &Rule, later: &Rule) -> bool {
    let paths = is_segment_prefix(&earlier.path, &later.path);
    let methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    };
    let hosts = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => e.covers(l),
    };
    paths && methods && hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> RouteConfig {
        RouteConfig {
            path: path.to_owned(),
            methods: None,
            host: None,
            public: false,
            require: vec!["prod_a".to_owned()],
            access_level: AccessLevel::Customer,
            mode: RouteMode::Auto,
            on_whop_error: OnWhopError::Deny,
            checkout_url: None,
            line: 1,
            column: 1,
        }
    }

    fn table(routes: Vec<RouteConfig>) -> RouteTable {
        RouteTable::new(&routes)
    }

    fn matched(t: &RouteTable, method: Method, host: Option<&str>, path: &str) -> Option<usize> {
        t.find(&method, host, path).map(|r| r.index)
    }

    #[test]
    fn segment_prefix() {
        let t = table(vec![route("/assets")]);
        assert_eq!(matched(&t, Method::GET, None, "/assets"), Some(0));
        assert_eq!(matched(&t, Method::GET, None, "/assets/"), Some(0));
        assert_eq!(matched(&t, Method::GET, None, "/assets/app.js"), Some(0));
        assert_eq!(matched(&t, Method::GET, None, "/assetsX"), None);
        assert_eq!(matched(&t, Method::GET, None, "/assets;jsessionid=1"), Some(0));
        assert_eq!(matched(&t, Method::GET, None, "/assets;x/y"), Some(0));
        assert_eq!(matched(&t, Method::GET, None, "/"), None);
    }

    #[test]
    fn first_match_wins_and_default_deny() {
        let t = table(vec![route("/api/admin"), route("/api"), route("/")]);
        assert_eq!(matched(&t, Method::GET, None, "/api/admin/x"), Some(0));
        assert_eq!(matched(&t, Method::GET, None, "/api/x"), Some(1));
        assert_eq!(matched(&t, Method::GET, None, "/other"), Some(2));
        let t = table(vec![route("/api")]);
        assert_eq!(matched(&t, Method::GET, None, "/other"), None);
    }

    #[test]
    fn methods_and_hosts() {
        let mut get_only = route("/api");
        get_only.methods = Some(vec![Method::GET, Method::HEAD]);
        let mut on_host = route("/");
        on_host.host = Some("app.example.com".to_owned());
        let mut wildcard = route("/");
        wildcard.host = Some("*.example.com".to_owned());
        let t = table(vec![get_only, on_host, wildcard]);
        assert_eq!(matched(&t, Method::GET, None, "/api"), Some(0));
        assert_eq!(matched(&t, Method::POST, Some("app.example.com:8080"), "/api"), Some(1));
        assert_eq!(matched(&t, Method::POST, Some("APP.example.com"), "/api"), Some(1));
        assert_eq!(matched(&t, Method::POST, Some("x.example.com"), "/api"), Some(2));
        assert_eq!(matched(&t, Method::POST, Some("example.com"), "/api"), None);
        assert_eq!(matched(&t, Method::POST, Some("evilexample.com"), "/api"), None);
        assert_eq!(matched(&t, Method::POST, None, "/api"), None);
    }

    #[test]
    fn host_with_port_is_exact() {
        let p = HostPattern::new("a.test:8443");
        assert!(p.matches("a.test:8443"));
        assert!(!p.matches("a.test"));
        assert!(!p.matches("a.test:80"));
        assert!(HostPattern::new("[::1]").matches("[::1]:8080"));
    }

    #[test]
    fn shadowed_rules() {
        let mut get_api = route("/api/v1");
        get_api.methods = Some(vec![Method::GET]);
        let mut host_rule = route("/x");
        host_rule.host = Some("a.example.com".to_owned());
        let mut wildcard = route("/y");
        wildcard.host = Some("*.example.com".to_owned());
        let mut narrower_host = route("/y/z");
        narrower_host.host = Some("b.example.com".to_owned());
        let t = table(vec![
            route("/api"),
            get_api,        // shadowed by /api
            host_rule,      // not shadowed: /api does not cover /x
            wildcard,       // not shadowed
            narrower_host,  // shadowed by the wildcard
            route("/"),     // not shadowed
            route("/late"), // shadowed by /
        ]);
        assert_eq!(
            t.shadowed(),
            vec![Shadowed { rule: 1, by: 0 }, Shadowed { rule: 4, by: 3 }, Shadowed { rule: 6, by: 5 }]
        );
    }

    #[test]
    fn method_subset_is_not_shadowing_the_other_way() {
        let mut get_only = route("/api");
        get_only.methods = Some(vec![Method::GET]);
        let t = table(vec![get_only, route("/api")]);
        assert!(t.shadowed().is_empty());
    }

    #[test]
    fn requirement_text() {
        let mut r = route("/api");
        r.require = vec!["prod_a".into(), "prod_b".into()];
        assert_eq!(Rule::from_config(0, &r).requirement(), "customer of any of prod_a, prod_b");
        r.public = true;
        assert_eq!(Rule::from_config(0, &r).requirement(), "public");
    }
}
