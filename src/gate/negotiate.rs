//! Browser or API client? Decides whether a denial is a page or redirect, or JSON.

use http::{HeaderMap, Method, header};

use crate::config::RouteMode;

/// How a denial is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStyle {
    /// HTML pages and redirects.
    Browser,
    /// Status codes and JSON, never a redirect.
    Api,
}

/// The style for a request under a rule's `mode` (`None` when no rule matched: `auto`).
///
/// `auto` means a browser when the request is a GET/HEAD whose `Accept` names `text/html` (or
/// `text/*`) and ranks it at least as high as `application/json`. A bare `*/*` (curl, fetch,
/// most HTTP libraries) is an API client: they cannot follow a login page anyway.
pub fn style(mode: Option<RouteMode>, method: &Method, headers: &HeaderMap) -> ResponseStyle {
    match mode {
        Some(RouteMode::Browser) => ResponseStyle::Browser,
        Some(RouteMode::Api) => ResponseStyle::Api,
        Some(RouteMode::Auto) | None => {
            if (method == Method::GET || method == Method::HEAD) && prefers_html(headers) {
                ResponseStyle::Browser
            } else {
                ResponseStyle::Api
            }
        }
    }
}

fn prefers_html(headers: &HeaderMap) -> bool {
    let mut html: Option<Rank> = None;
    let mut json: Option<Rank> = None;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let Some((kind, sub)) = media.split_once('/') else {
                continue;
            };
            let (kind, sub) = (kind.trim(), sub.trim());
            // Explicit mentions only for html: `*/*` does not make a browser.
            if kind.eq_ignore_ascii_case("text") {
                let specificity = if sub.eq_ignore_ascii_case("html") {
                    2
                } else if sub == "*" {
                    1
                } else {
                    0
                };
                if specificity > 0 {
                    update(&mut html, Rank { specificity, q });
                }
            }
            let specificity = match (kind, sub) {
                (k, s) if k.eq_ignore_ascii_case("application") && s.eq_ignore_ascii_case("json") => 3,
                (k, "*") if k.eq_ignore_ascii_case("application") => 2,
                ("*", "*") => 1,
                _ => 0,
            };
            if specificity > 0 {
                update(&mut json, Rank { specificity, q });
            }
        }
    }
    match html {
        Some(h) if h.q > 0.0 => json.is_none_or(|j| h.q >= j.q),
        _ => false,
    }
}

/// The q of the most specific media range that matched a type.
#[derive(Clone, Copy)]
struct Rank {
    specificity: u8,
    q: f32,
}

fn update(slot: &mut Option<Rank>, candidate: Rank) {
    if slot.is_none_or(|r| candidate.specificity > r.specificity) {
        *slot = Some(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn auto_mode() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        let cases = [
            (Method::GET, chrome, ResponseStyle::Browser),
            (Method::HEAD, "text/html", ResponseStyle::Browser),
            (Method::POST, chrome, ResponseStyle::Api),
            (Method::GET, "*/*", ResponseStyle::Api),
            (Method::GET, "application/json", ResponseStyle::Api),
            (Method::GET, "application/json, text/html;q=0.5", ResponseStyle::Api),
            (Method::GET, "text/html;q=0.9, application/json;q=0.9", ResponseStyle::Browser),
            (Method::GET, "text/*, application/json;q=0.5", ResponseStyle::Browser),
            (Method::GET, "text/html;q=0", ResponseStyle::Api),
        ];
        for (method, accept, want) in cases {
            assert_eq!(style(Some(RouteMode::Auto), &method, &with_accept(accept)), want, "{method} {accept}");
        }
        assert_eq!(style(None, &Method::GET, &HeaderMap::new()), ResponseStyle::Api);
    }

    #[test]
    fn fixed_modes() {
        let h = with_accept("application/json");
        assert_eq!(style(Some(RouteMode::Browser), &Method::POST, &h), ResponseStyle::Browser);
        assert_eq!(style(Some(RouteMode::Api), &Method::GET, &with_accept("text/html")), ResponseStyle::Api);
    }
}
