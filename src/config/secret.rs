//! A string that must not end up in logs, error messages or `Debug` output.

use std::fmt;

/// A secret value (API key, OAuth client secret, cookie key, webhook secret).
///
/// `Debug` and `Display` print `Secret(***)`, so a config can be logged or dumped whole without
/// leaking it; [`Secret::expose`] is the one way to read the value, which makes every use easy
/// to find. There is deliberately no `PartialEq`: comparing secrets belongs in constant-time code
/// next to where they are used.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret value itself. Use it where it is needed and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes; safe to show (e.g. "the cookie secret is 12 bytes, needs 32").
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("ws_supersecret".to_owned());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(***))");
        assert_eq!(s.expose(), "ws_supersecret");
        assert_eq!(s.len(), 14);
        assert!(!s.is_empty());
        assert!(Secret::from(String::new()).is_empty());
    }
}
