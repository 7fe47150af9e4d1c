//! A small typed reader over the spanned TOML document that records every problem it meets
//! (with its place) and lets the caller fall back to defaults, so one run reports them all.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::duration::{DURATION_HINT, parse_duration};
use super::env::interpolate;
use super::error::{ConfigError, LineIndex, Problem};
use super::secret::Secret;
use super::values::{one_of_hint, quoted_list, suggest};

/// A parsed TOML value with its byte span in the file.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Every table whopgate reads and the keys it knows in each (the top level is `""`).
pub(crate) mod schema {
    /// Top-level keys.
    pub const TOP: &[&str] = &[
        "listen",
        "upstream",
        "admin_listen",
        "public_url",
        "prefix",
        "trusted_proxies",
        "upstream_timeout",
        "log_format",
        "tls_cert",
        "tls_key",
        "limits",
        "whop",
        "identity",
        "cache",
        "mirror",
        "webhook",
        "route",
    ];
    /// `[limits]`.
    pub const LIMITS: &[&str] = &["header_read_timeout", "max_header_bytes", "max_connections", "drain_timeout"];
    /// `[whop]`.
    pub const WHOP: &[&str] =
        &["api_key", "api_base", "app_id", "api_version_date", "timeout", "rate_limit_per_minute", "access_api"];
    /// `[identity]`.
    pub const IDENTITY: &[&str] = &["sources", "user_token", "session", "license_key", "dev"];
    /// `[identity.user_token]`.
    pub const USER_TOKEN: &[&str] = &["header", "jwks_url", "public_keys", "leeway", "accept_query_param"];
    /// `[identity.session]`.
    pub const SESSION: &[&str] = &[
        "client_id",
        "client_secret",
        "cookie_secret",
        "previous_cookie_secrets",
        "cookie_name",
        "lifetime",
        "scopes",
        "allowed_redirect_hosts",
    ];
    /// `[identity.license_key]`.
    pub const LICENSE_KEY: &[&str] = &["header", "bearer", "valid_statuses"];
    /// `[identity.dev]`.
    pub const DEV: &[&str] = &["user_id", "access_level"];
    /// `[cache]`.
    pub const CACHE: &[&str] =
        &["ttl", "negative_ttl", "stale_if_error", "max_entries", "redis_url", "revalidate_streams"];
    /// `[mirror]`.
    pub const MIRROR: &[&str] = &["enabled", "interval", "max_staleness"];
    /// `[webhook]`.
    pub const WEBHOOK: &[&str] = &["secret", "legacy_secret"];
    /// `[[route]]`.
    pub const ROUTE: &[&str] =
        &["path", "methods", "host", "public", "require", "access_level", "mode", "on_whop_error", "checkout_url"];

    /// Every table, for "this key belongs in [x]" hints.
    pub const ALL: &[(&str, &[&str])] = &[
        ("", TOP),
        ("limits", LIMITS),
        ("whop", WHOP),
        ("identity", IDENTITY),
        ("identity.user_token", USER_TOKEN),
        ("identity.session", SESSION),
        ("identity.license_key", LICENSE_KEY),
        ("identity.dev", DEV),
        ("cache", CACHE),
        ("mirror", MIRROR),
        ("webhook", WEBHOOK),
        ("route", ROUTE),
    ];

    /// How a table is named in messages.
    pub fn label(path: &str) -> String {
        match path {
            "" => "the top level".to_owned(),
            "route" => "[[route]]".to_owned(),
            _ => format!("[{path}]"),
        }
    }
}

/// A value read from the file, with where it was and which `${VARS}` went into it.
#[derive(Debug, Clone)]
pub(crate) struct Got<T> {
    pub value: T,
    pub span: Range<usize>,
    pub vars: Vec<String>,
}

impl<T> Got<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Got<U> {
        Got { value: f(self.value), span: self.span, vars: self.vars }
    }
}

/// One TOML table being read: which keys it may hold, and where it is.
pub(crate) struct Table<'t, 'i> {
    entries: Option<&'t DeTable<'i>>,
    /// The table's header (or, for an implicit table, its key); `0..0` for the top level.
    pub span: Range<usize>,
    /// Dotted path: `""`, `"limits"`, `"identity.session"`, `"route"`.
    pub path: &'static str,
    known: &'static [&'static str],
}

impl<'t, 'i> Table<'t, 'i> {
    /// The document itself.
    pub fn root(doc: &'t Spanned<DeTable<'i>>) -> Self {
        Table { entries: Some(doc.get_ref()), span: 0..0, path: "", known: schema::TOP }
    }

    /// A `[[route]]` entry.
    pub fn route(entries: &'t DeTable<'i>, span: Range<usize>) -> Self {
        Table { entries: Some(entries), span, path: "route", known: schema::ROUTE }
    }

    /// True when the table is written in the file.
    pub fn present(&self) -> bool {
        self.entries.is_some()
    }

    /// The value of `key`, if written.
    pub fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        debug_assert!(self.known.contains(&key), "`{key}` is not in the schema of [{}]", self.path);
        self.entries?.get(key)
    }

    /// True when `key` is written (with any value).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Where `key` itself is written, for problems about the key rather than its value.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries?.get_key_value(key).map(|(k, _)| k.span())
    }

    /// The name of `key` in messages: `listen`, `cache.ttl`, or just `path` inside a route.
    pub fn name(&self, key: &str) -> String {
        match self.path {
            "" | "route" => key.to_owned(),
            path => format!("{path}.{key}"),
        }
    }

    /// The sub-table `key` (absent when not written; a non-table value is reported).
    pub fn table(&self, r: &mut Reader<'_>, key: &str, path: &'static str, known: &'static [&'static str]) -> Self {
        let mut table = Table { entries: None, span: self.span.clone(), path, known };
        let Some(value) = self.get(key) else {
            return table;
        };
        match value.get_ref() {
            DeValue::Table(entries) => {
                table.entries = Some(entries);
                table.span = value.span();
            }
            other => r.error(
                &value.span(),
                Problem::new(format!("`{}` must be a table, found {}", self.name(key), kind(other)))
                    .hint(format!("write `[{path}]` on a line of its own, followed by its keys")),
            ),
        }
        table
    }

    /// Reports every key this table does not know, with a suggestion where one is close.
    pub fn check_unknown(&self, r: &mut Reader<'_>) {
        let Some(entries) = self.entries else { return };
        for (key, _) in entries.iter() {
            let key_text: &str = key.get_ref();
            if self.known.contains(&key_text) {
                continue;
            }
            let problem = Problem::new(format!("unknown key `{key_text}` in {}", schema::label(self.path)))
                .hint(self.unknown_key_hint(key_text));
            r.error(&key.span(), problem);
        }
    }

    fn unknown_key_hint(&self, key: &str) -> String {
        if let Some(near) = suggest(key, self.known) {
            return format!("did you mean `{near}`?");
        }
        // A key that is right but in the wrong table: usually a top-level key written after a
        // `[table]` header, which TOML then puts inside that table.
        let home =
            schema::ALL.iter().find(|(path, keys)| *path != self.path && keys.contains(&key)).map(|(path, _)| *path);
        match home {
            Some("") => {
                format!("`{key}` is a top-level key: move it above the first `[table]` header")
            }
            Some(path) => format!("`{key}` belongs in {}", schema::label(path)),
            None => format!("the keys of {} are: {}", schema::label(self.path), self.known.join(", ")),
        }
    }
}

/// "a string", "an integer", … for type messages.
pub(crate) fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// Reads typed values, collecting every problem with its file position.
pub(crate) struct Reader<'a> {
    file: &'a str,
    index: LineIndex<'a>,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    /// A reader for `text`, named `file` in messages, taking `${VARS}` from `env`.
    pub fn new(text: &'a str, file: &'a str, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Reader { file, index: LineIndex::new(text), env, errors: Vec::new() }
    }

    /// Records a problem at the start of `span`.
    pub fn error(&mut self, span: &Range<usize>, problem: Problem) {
        let (line, column) = self.index.start(span);
        self.push(line, column, problem);
    }

    /// Records a problem at the end of the file, where something missing would be added.
    pub fn error_at_end(&mut self, problem: Problem) {
        let (line, column) = self.index.end();
        self.push(line, column, problem);
    }

    fn push(&mut self, line: u32, column: u32, problem: Problem) {
        let error =
            ConfigError { file: self.file.to_owned(), line, column, message: problem.message, hint: problem.hint };
        if !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }

    /// Line and column (1-based) of the start of `span`.
    pub fn position(&self, span: &Range<usize>) -> (u32, u32) {
        self.index.start(span)
    }

    /// How many problems have been recorded so far (to tell "absent" from "invalid").
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// True once any problem has been recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The problems, in file order.
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        // Stable: problems at one place keep the order they were found in.
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors
    }

    /// Interpolates a string value; problems are reported against `name`.
    fn interpolate(&mut self, name: &str, text: &str, span: &Range<usize>) -> Option<Got<String>> {
        match interpolate(text, self.env) {
            Ok(done) => Some(Got { value: done.value, span: span.clone(), vars: done.vars }),
            Err(problems) => {
                for p in problems {
                    self.error(span, Problem { message: format!("`{name}`: {}", p.message), hint: p.hint });
                }
                None
            }
        }
    }

    /// A string value (any element or key), interpolated. `name` is used in messages.
    pub fn value_str(&mut self, name: &str, value: &Value<'_>) -> Option<Got<String>> {
        match value.get_ref() {
            DeValue::String(text) => self.interpolate(name, text, &value.span()),
            other => {
                self.error(
                    &value.span(),
                    Problem::new(format!("`{name}` must be a string, found {}", kind(other)))
                        .hint("put the value in double quotes"),
                );
                None
            }
        }
    }

    /// A string value run through a check; the check's problem is reported against `name`.
    pub fn value_parse<T>(
        &mut self,
        name: &str,
        value: &Value<'_>,
        check: impl FnOnce(&str) -> Result<T, Problem>,
    ) -> Option<Got<T>> {
        let got = self.value_str(name, value)?;
        match check(&got.value) {
            Ok(v) => Some(got.map(|_| v)),
            Err(p) => {
                self.error(&got.span, Problem { message: format!("`{name}`: {}", p.message), hint: p.hint });
                None
            }
        }
    }

    /// A word from a closed set (an enum's TOML spelling).
    pub fn value_choice<E>(
        &mut self,
        name: &str,
        value: &Value<'_>,
        parse: fn(&str) -> Option<E>,
        spellings: &[&str],
    ) -> Option<Got<E>> {
        self.value_parse(name, value, |text| {
            parse(text).ok_or_else(|| {
                Problem::new(format!("`{text}` is not one of {}", quoted_list(spellings)))
                    .hint(one_of_hint(text, spellings))
            })
        })
    }

    /// A string key.
    pub fn str(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Got<String>> {
        let value = t.get(key)?;
        self.value_str(&t.name(key), value)
    }

    /// A string key run through a check.
    pub fn parse<T>(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        check: impl FnOnce(&str) -> Result<T, Problem>,
    ) -> Option<Got<T>> {
        let value = t.get(key)?;
        self.value_parse(&t.name(key), value, check)
    }

    /// An optional string key where `""` means unset.
    pub fn parse_opt<T>(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        check: impl FnOnce(&str) -> Result<T, Problem>,
    ) -> Option<Got<T>> {
        let got = self.str(t, key)?;
        if got.value.is_empty() {
            return None;
        }
        match check(&got.value) {
            Ok(v) => Some(got.map(|_| v)),
            Err(p) => {
                self.error(&got.span, Problem { message: format!("`{}`: {}", t.name(key), p.message), hint: p.hint });
                None
            }
        }
    }

    /// A secret key; `""` means unset. Nothing about its value appears in messages.
    pub fn secret(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Got<Secret>> {
        let got = self.str(t, key)?;
        (!got.value.is_empty()).then(|| got.map(Secret::new))
    }

    /// A word from a closed set.
    pub fn choice<E>(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        parse: fn(&str) -> Option<E>,
        spellings: &[&str],
    ) -> Option<E> {
        let value = t.get(key)?;
        self.value_choice(&t.name(key), value, parse, spellings).map(|g| g.value)
    }

    /// A boolean key. A string is accepted only when it is all `${VAR}` (environments carry
    /// text), and must then be `true` or `false`.
    pub fn bool(&mut self, t: &Table<'_, '_>, key: &str) -> Option<bool> {
        let value = t.get(key)?;
        let name = t.name(key);
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            DeValue::String(text) if text.contains("${") => {
                let got = self.interpolate(&name, text, &value.span())?;
                match got.value.trim() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => {
                        self.error(
                            &value.span(),
                            Problem::new(format!(
                                "`{name}` must be true or false, but its variable gives something else"
                            ))
                            .hint("set the variable to `true` or `false`"),
                        );
                        None
                    }
                }
            }
            other => {
                self.error(
                    &value.span(),
                    Problem::new(format!("`{name}` must be true or false, found {}", kind(other)))
                        .hint(format!("write `{key} = true` or `{key} = false`, without quotes")),
                );
                None
            }
        }
    }

    /// An integer key within `min..=max`; `why` explains the bounds in the hint.
    pub fn int(&mut self, t: &Table<'_, '_>, key: &str, min: i128, max: i128, why: &str) -> Option<i128> {
        let value = t.get(key)?;
        let name = t.name(key);
        let number = match value.get_ref() {
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
            DeValue::String(text) if text.contains("${") => {
                let got = self.interpolate(&name, text, &value.span())?;
                let parsed = got.value.trim().replace('_', "").parse::<i128>().ok();
                if parsed.is_none() {
                    self.error(
                        &value.span(),
                        Problem::new(format!("`{name}` must be a whole number, but its variable gives something else"))
                            .hint("set the variable to digits only"),
                    );
                    return None;
                }
                parsed
            }
            other => {
                self.error(
                    &value.span(),
                    Problem::new(format!("`{name}` must be a whole number, found {}", kind(other)))
                        .hint(format!("write e.g. `{key} = {min}`, without quotes")),
                );
                return None;
            }
        };
        match number {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let found = number.map_or_else(|| "a number out of range".to_owned(), |n| n.to_string());
                let range =
                    if max == i128::MAX { format!("at least {min}") } else { format!("between {min} and {max}") };
                self.error(
                    &value.span(),
                    Problem::new(format!("`{name}` must be {range}; found {found}")).hint(why.to_owned()),
                );
                None
            }
        }
    }

    /// A duration key; with `positive`, zero is refused.
    pub fn duration(&mut self, t: &Table<'_, '_>, key: &str, positive: bool) -> Option<Duration> {
        let value = t.get(key)?;
        let name = t.name(key);
        let got = match value.get_ref() {
            DeValue::String(text) => self.interpolate(&name, text, &value.span())?,
            DeValue::Integer(i) => {
                self.error(
                    &value.span(),
                    Problem::new(format!("`{name}` must be a duration string, found an integer"))
                        .hint(format!("durations need a unit and quotes, e.g. `{key} = \"{}s\"`", i.as_str())),
                );
                return None;
            }
            other => {
                self.error(
                    &value.span(),
                    Problem::new(format!("`{name}` must be a duration string, found {}", kind(other)))
                        .hint(DURATION_HINT),
                );
                return None;
            }
        };
        match parse_duration(&got.value) {
            Ok(d) if positive && d.is_zero() => {
                self.error(&got.span, Problem::new(format!("`{name}` must be longer than zero")).hint(DURATION_HINT));
                None
            }
            Ok(d) => Some(d),
            Err(p) => {
                self.error(&got.span, Problem { message: format!("`{name}`: {}", p.message), hint: p.hint });
                None
            }
        }
    }

    /// A list key: its span and elements (a non-list is reported).
    pub fn list<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str) -> Option<(Range<usize>, &'t [Value<'i>])> {
        let value = t.get(key)?;
        match value.get_ref() {
            DeValue::Array(items) => Some((value.span(), items)),
            other => {
                self.error(
                    &value.span(),
                    Problem::new(format!("`{}` must be a list, found {}", t.name(key), kind(other)))
                        .hint(format!("write it in brackets, e.g. `{key} = [\"…\"]`")),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn schema_lists_every_table_once() {
        let mut paths: Vec<&str> = schema::ALL.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), schema::ALL.len());
        assert_eq!(schema::label(""), "the top level");
        assert_eq!(schema::label("route"), "[[route]]");
        assert_eq!(schema::label("identity.dev"), "[identity.dev]");
    }

    #[test]
    fn unknown_keys_get_the_best_hint() {
        let text = "lisen = 1\n[cache]\nttl = \"1s\"\nlisten = \"x\"\napi_key = \"k\"\nzzz = 1\n";
        let doc = DeTable::parse(text).ok();
        let Some(doc) = doc else { panic!("parse") };
        let env = no_env;
        let mut r = Reader::new(text, "f.toml", &env);
        let root = Table::root(&doc);
        root.check_unknown(&mut r);
        let cache = root.table(&mut r, "cache", "cache", schema::CACHE);
        cache.check_unknown(&mut r);
        let got: Vec<String> = r.into_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "f.toml:1:1: error: unknown key `lisen` in the top level; did you mean `listen`?",
                "f.toml:4:1: error: unknown key `listen` in [cache]; `listen` is a top-level key: move it above the first `[table]` header",
                "f.toml:5:1: error: unknown key `api_key` in [cache]; `api_key` belongs in [whop]",
                "f.toml:6:1: error: unknown key `zzz` in [cache]; the keys of [cache] are: ttl, negative_ttl, stale_if_error, max_entries, redis_url, revalidate_streams",
            ]
        );
    }
}
