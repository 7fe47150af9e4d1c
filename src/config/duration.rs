//! Durations written as strings: `"250ms"`, `"60s"`, `"5m"`, `"1h30m"`, `"7d"`.

use std::time::Duration;

use super::error::Problem;

/// What a duration looks like, for every duration message.
pub(crate) const DURATION_HINT: &str =
    "write a number with a unit, like \"250ms\", \"60s\", \"5m\", \"1h30m\" or \"7d\"";

/// Parses a duration string (humantime syntax, which also takes `"1h 30m"` and `"2days"`).
///
/// A bare number is refused because its unit would be a guess (seconds? milliseconds?).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, Problem> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Problem::new("a duration cannot be empty").hint(DURATION_HINT));
    }
    if trimmed.starts_with('-') {
        return Err(Problem::new(format!("`{trimmed}` is negative; durations cannot be")).hint(DURATION_HINT));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(Problem::new(format!("`{trimmed}` has no unit")).hint(DURATION_HINT));
    }
    humantime::parse_duration(trimmed)
        .map_err(|_| Problem::new(format!("`{trimmed}` is not a duration")).hint(DURATION_HINT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("60s", Duration::from_secs(60)),
            ("5m", Duration::from_secs(300)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1h 30m", Duration::from_secs(5_400)),
            ("0s", Duration::ZERO),
            (" 15m ", Duration::from_secs(900)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for (text, message) in [
            ("60", "`60` has no unit"),
            ("0", "`0` has no unit"),
            ("1.5", "`1.5` has no unit"),
            ("-5s", "`-5s` is negative; durations cannot be"),
            ("soon", "`soon` is not a duration"),
            ("5 parsecs", "`5 parsecs` is not a duration"),
            ("", "a duration cannot be empty"),
        ] {
            let problem = parse_duration(text).err();
            assert_eq!(problem.as_ref().map(|p| p.message.as_str()), Some(message), "{text}");
            assert_eq!(problem.and_then(|p| p.hint).as_deref(), Some(DURATION_HINT));
        }
    }
}
