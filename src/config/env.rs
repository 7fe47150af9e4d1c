//! `${NAME}` interpolation of string values from the environment.
//!
//! It runs on parsed string values, never on the raw file, so a secret containing quotes,
//! newlines or `#` cannot change the structure of the TOML. Substituted text is not scanned
//! again: a variable whose value contains `${…}` is taken literally.

use super::error::Problem;

/// The result of interpolating one string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interpolated {
    /// The value with every `${NAME}` replaced.
    pub value: String,
    /// Names of the variables used, in order (for messages such as "… comes from `${X}`").
    pub vars: Vec<String>,
}

/// Replaces every `${NAME}` in `text` with `env(NAME)`.
///
/// A `$` not followed by `{` is kept as it is. Errors name the variable, never a value.
pub(crate) fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, Vec<Problem>> {
    if !text.contains("${") {
        return Ok(Interpolated { value: text.to_owned(), vars: Vec::new() });
    }
    let mut value = String::with_capacity(text.len());
    let mut vars = Vec::new();
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        value.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(close) = after.find('}') else {
            problems.push(
                Problem::new("`${` is not closed").hint("write `${NAME}` to insert the environment variable NAME"),
            );
            rest = "";
            break;
        };
        let name = &after[..close];
        if !is_var_name(name) {
            problems.push(
                Problem::new(format!("`${{{name}}}` is not a valid environment variable reference"))
                    .hint("a name is letters, digits and `_`, not starting with a digit, e.g. `${WHOP_API_KEY}`"),
            );
        } else {
            match env(name) {
                Some(found) => value.push_str(&found),
                None => problems.push(
                    Problem::new(format!("environment variable `{name}` is not set"))
                        .hint(format!("set `{name}` in whopgate's environment, or write the value here directly")),
                ),
            }
            vars.push(name.to_owned());
        }
        rest = &after[close + 1..];
    }
    value.push_str(rest);
    if problems.is_empty() { Ok(Interpolated { value, vars }) } else { Err(problems) }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "QUOTE" => Some("a\"b'c\n#d".into()),
            "NESTED" => Some("${A}".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        match interpolate(text, &env) {
            Ok(i) => i.value,
            Err(p) => panic!("{text}: {p:?}"),
        }
    }

    fn err(text: &str) -> Vec<String> {
        match interpolate(text, &env) {
            Ok(i) => panic!("{text} gave {}", i.value),
            Err(p) => p.into_iter().map(|p| p.message).collect(),
        }
    }

    #[test]
    fn replaces_variables() {
        assert_eq!(ok("${A}"), "alpha");
        assert_eq!(ok("x-${A}-${A}-y"), "x-alpha-alpha-y");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(ok("${QUOTE}"), "a\"b'c\n#d");
    }

    #[test]
    fn records_the_names_used() {
        let i = interpolate("${A}:${EMPTY}", &env).ok();
        assert_eq!(i.map(|i| i.vars), Some(vec!["A".to_owned(), "EMPTY".to_owned()]));
    }

    #[test]
    fn a_lone_dollar_stays() {
        assert_eq!(ok("price $5"), "price $5");
        assert_eq!(ok("$A"), "$A");
        assert_eq!(ok("$$"), "$$");
        assert_eq!(ok("a$"), "a$");
        assert_eq!(ok("$${A}"), "$alpha");
    }

    #[test]
    fn substituted_text_is_not_scanned_again() {
        assert_eq!(ok("${NESTED}"), "${A}");
    }

    #[test]
    fn unset_variables_are_named() {
        assert_eq!(err("${NOPE}"), ["environment variable `NOPE` is not set"]);
        assert_eq!(
            err("${NOPE}/${ALSO_NOPE}"),
            ["environment variable `NOPE` is not set", "environment variable `ALSO_NOPE` is not set"]
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(err("${A"), ["`${` is not closed"]);
        assert_eq!(err("${}"), ["`${}` is not a valid environment variable reference"]);
        assert_eq!(err("${1A}"), ["`${1A}` is not a valid environment variable reference"]);
        assert_eq!(err("${A B}"), ["`${A B}` is not a valid environment variable reference"]);
    }
}
