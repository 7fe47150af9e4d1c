//! What `whopgate check` and `whopgate explain` print: the route table as the gate will use it,
//! and which rule one request would meet. No network access.

use std::fmt::Write;

use http::Method;

use crate::config::Config;
use crate::path;
use crate::route::{RouteTable, Rule};

/// The `check` report: a summary, the route table in match order, and warnings.
pub fn report(config: &Config) -> String {
    let table = RouteTable::new(&config.routes);
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", config.file);
    let _ = writeln!(out, "  listen    {}", config.listen);
    let upstream = config
        .upstream
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string);
    let _ = writeln!(out, "  upstream  {upstream}");
    let _ = writeln!(out);
    let _ = writeln!(out, "routes (first match wins):");
    let width = table.rules().iter().map(|r| r.conditions().len()).max().unwrap_or(0);
    for rule in table.rules() {
        let _ = writeln!(
            out,
            "  {:>2}  {:<width$}  -> {}{}",
            rule.index + 1,
            rule.conditions(),
            rule.requirement(),
            extras(rule)
        );
    }
    let _ = writeln!(out, "  {:>2}  {:<width$}  -> denied (403)", "*", "anything else");
    for warning in warnings(config, &table) {
        let _ = writeln!(out, "{warning}");
    }
    out
}

/// Warnings `check` prints after the table (shadowed rules).
pub fn warnings(config: &Config, table: &RouteTable) -> Vec<String> {
    table
        .shadowed()
        .into_iter()
        .map(|s| {
            let rule = &table.rules()[s.rule];
            let by = &table.rules()[s.by];
            format!(
                "{}:{}: warning: route {} ({}) never matches: route {} ({}, line {}) takes every request it would; \
                 move it above route {} or remove it",
                config.file,
                rule.line,
                s.rule + 1,
                rule.path,
                s.by + 1,
                by.path,
                by.line,
                s.by + 1
            )
        })
        .collect()
}

fn extras(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if !rule.public {
        if rule.mode != crate::config::RouteMode::Auto {
            parts.push(format!("mode={}", rule.mode.as_str()));
        }
        if rule.on_whop_error != crate::config::OnWhopError::Deny {
            parts.push(format!("on_whop_error={}", rule.on_whop_error.as_str()));
        }
        if let Some(url) = &rule.checkout_url {
            parts.push(format!("checkout={url}"));
        }
    }
    parts.push(format!("line {}", rule.line));
    format!("  ({})", parts.join(", "))
}

/// The `explain` answer for one request.
pub fn explain(config: &Config, method: &Method, raw_path: &str, host: Option<&str>) -> String {
    let table = RouteTable::new(&config.routes);
    let (path_only, query) = match raw_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw_path, None),
    };
    let mut out = String::new();
    let _ = write!(out, "{method} {raw_path}");
    if let Some(h) = host {
        let _ = write!(out, " (host {h})");
    }
    let _ = writeln!(out);
    let normalized = match path::normalize(path_only) {
        Ok(p) => p,
        Err(rejection) => {
            let _ = writeln!(out, "  path      rejected: {rejection}");
            let _ = writeln!(out, "  answer    400 bad request (never forwarded)");
            return out;
        }
    };
    if normalized != path_only {
        let _ = writeln!(out, "  path      normalised to {normalized}");
    }
    match table.find(method, host, &normalized) {
        Some(rule) => {
            let _ = writeln!(
                out,
                "  rule      {} ({}, line {})",
                rule.index + 1,
                rule.conditions(),
                rule.line
            );
            let _ = writeln!(out, "  requires  {}", rule.requirement());
            let forwarded = match query {
                Some(q) => format!("{normalized}?{q}"),
                None => normalized.into_owned(),
            };
            let _ = writeln!(out, "  forwards  {forwarded} when allowed");
        }
        None => {
            let _ = writeln!(out, "  rule      none matches");
            let _ = writeln!(out, "  answer    403 forbidden (default deny)");
        }
    }
    out
}
