//! What `whopgate check` and `whopgate explain` print: the route table as the gate will use it,
//! and which rule one request would meet. No network access.

use std::fmt::Write;

use http::Method;

use crate::config::Config;
use crate::gate::method_override;
use crate::path;
use crate::route::{RouteTable, Rule};

/// The `check` report: a summary and the route table in match order. Warnings come separately
/// ([`warnings`]), for stderr.
pub fn report(config: &Config) -> String {
    let table = RouteTable::new(&config.routes);
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", config.file);
    let upstream = config.upstream.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string);
    let sources: Vec<&str> = config.identity.sources.iter().map(|s| s.as_str()).collect();
    let admin = config.admin_listen.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let _ = writeln!(out, "  listen     {}", config.listen);
    let _ = writeln!(out, "  upstream   {upstream}");
    let _ = writeln!(out, "  admin      {admin}");
    let _ = writeln!(out, "  identity   {}", sources.join(", "));
    let _ = writeln!(out, "  whop       {} ({})", config.whop.api_base, config.whop.access_api.as_str());
    let _ = writeln!(out);
    let _ = writeln!(out, "routes (first match wins):");
    let mut rows =
        vec![["#".to_owned(), "path".into(), "methods".into(), "host".into(), "requires".into(), "line".into()]];
    for rule in table.rules() {
        rows.push([
            (rule.index + 1).to_string(),
            rule.path.clone(),
            rule.methods_text(),
            rule.host.as_ref().map_or_else(|| "any".to_owned(), ToString::to_string),
            format!("{}{}", rule.requirement(), extras(rule)),
            rule.line.to_string(),
        ]);
    }
    rows.push(["*".into(), "anything else".into(), String::new(), String::new(), "denied (403)".into(), String::new()]);
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 || c == 5 {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Warnings `check` prints to stderr after the table (shadowed rules, a budget above Whop's).
pub fn warnings(config: &Config, table: &RouteTable) -> Vec<String> {
    let mut out = Vec::new();
    if config.whop.rate_limit_per_minute > 600 {
        out.push(format!(
            "{}: warning: whop.rate_limit_per_minute = {} is above the 600 per minute Whop documents; \
             Whop will answer 429s (and whopgate pause) unless your account allows more",
            config.file, config.whop.rate_limit_per_minute
        ));
    }
    out.extend(not_yet_acted_on(config).into_iter().map(|what| {
        format!("{}: warning: {what} is accepted but not acted on by this version of whopgate", config.file)
    }));
    out.extend(shadow_warnings(config, table));
    out.extend(form_post_warnings(config, table));
    out
}

/// Paths where a form POST is refused because POST and an overridable method fall under two
/// rules (the gate's own test, `gate::method_override`), probed at each method-specific rule's
/// own path.
fn form_post_warnings(config: &Config, table: &RouteTable) -> Vec<String> {
    let mut out = Vec::new();
    for rule in table.rules().iter().filter(|r| r.methods.is_some()) {
        let host = rule.host.as_ref().map(ToString::to_string).filter(|h| !h.starts_with("*."));
        let host = host.as_deref();
        let post = table.find(&Method::POST, host, &rule.path).map(|r| r.index);
        if let Some((method, other)) = method_override::rerouted_to(table, host, &rule.path, post) {
            let under = |index: Option<usize>| index.map_or("no rule".to_owned(), |i| format!("route {}", i + 1));
            out.push(format!(
                "{}:{}: warning: form POSTs to {} are refused (400): POST falls under {} and {method} under {}, and \
                 a _method field in the body could make the app run one as the other; give both the same rule, or \
                 have clients send JSON or the method itself",
                config.file,
                rule.line,
                rule.path,
                under(post),
                under(other),
            ));
        }
    }
    out
}

/// Settings the schema already holds (so configs need not change later) whose feature this build
/// does not have yet. Each names the key and what the user will not get, so nobody relies on it.
pub fn not_yet_acted_on(config: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if config.mirror.enabled {
        out.push("mirror.enabled (no membership mirror: every decision comes from the access check)");
    }
    out
}

fn shadow_warnings(config: &Config, table: &RouteTable) -> Vec<String> {
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

/// The non-default settings of a protected rule, e.g. ` [mode=api, checkout=https://…]`.
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
    if parts.is_empty() { String::new() } else { format!(" [{}]", parts.join(", ")) }
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
            let _ = writeln!(out, "  rule      {} ({}, line {})", rule.index + 1, rule.conditions(), rule.line);
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
