//! Config problems with their place in the file, and the byte-offset → line:column mapping.

use std::fmt;
use std::ops::Range;

/// One problem found in a config file: where it is and what would be right.
///
/// `line` and `column` are 1-based and point at the key or value at fault. A problem that has no
/// place in the file (the file could not be read) has `line` and `column` 0.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The origin name used in messages, e.g. `whopgate.toml`.
    pub file: String,
    /// 1-based line, or 0 when the problem is not inside the file.
    pub line: u32,
    /// 1-based column in characters, or 0 when the problem is not inside the file.
    pub column: u32,
    /// What is wrong. Never contains a secret value.
    pub message: String,
    /// What would be right, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Compilers' `file:line:col:` form, so editors and terminals can jump to the place.
        if self.line == 0 {
            write!(f, "{}: error: {}", self.file, self.message)?;
        } else {
            write!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file, in file order. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no problem (never the case for an error returned by a loader).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem with a value, before it is given a place: the reader adds file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Problem { message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Maps byte offsets of the source text to 1-based line and column (columns count characters,
/// so a non-ASCII value earlier on the line does not shift the caret).
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// Line and column of a byte offset; offsets past the end map to the end.
    pub fn position(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.text.len());
        // An offset inside a multi-byte character counts as that character.
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset).saturating_sub(1);
        let start = self.starts.get(line).copied().unwrap_or(0);
        let column = self.text.get(start..offset).map_or(0, |prefix| prefix.chars().count());
        (to_u32(line + 1), to_u32(column + 1))
    }

    /// Position of the start of a span.
    pub fn start(&self, span: &Range<usize>) -> (u32, u32) {
        self.position(span.start)
    }

    /// Position just past the last character of the text: where something missing would go.
    pub fn end(&self) -> (u32, u32) {
        self.position(self.text.len())
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: u32, column: u32, hint: Option<&str>) -> ConfigError {
        ConfigError {
            file: "whopgate.toml".into(),
            line,
            column,
            message: "unknown key `upsteam` in the top level".into(),
            hint: hint.map(str::to_owned),
        }
    }

    #[test]
    fn display_matches_the_compiler_style() {
        let e = error(12, 5, Some("did you mean `upstream`?"));
        assert_eq!(
            e.to_string(),
            "whopgate.toml:12:5: error: unknown key `upsteam` in the top level; did you mean `upstream`?"
        );
        assert_eq!(error(1, 1, None).to_string(), "whopgate.toml:1:1: error: unknown key `upsteam` in the top level");
    }

    #[test]
    fn an_error_outside_the_file_has_no_position() {
        assert_eq!(error(0, 0, None).to_string(), "whopgate.toml: error: unknown key `upsteam` in the top level");
    }

    #[test]
    fn errors_print_one_per_line() {
        let all = ConfigErrors(vec![error(1, 1, None), error(2, 3, Some("x"))]);
        let text = all.to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).is_some_and(|l| l.starts_with("whopgate.toml:2:3:")));
        assert_eq!(all.len(), 2);
        assert!(!all.is_empty());
        assert_eq!(all.iter().count(), 2);
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let index = LineIndex::new(text);
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(4), (1, 5));
        assert_eq!(index.position(6), (2, 1));
        // `=` after the two-byte `é`: byte 10, character column 4.
        assert_eq!(index.position(10), (2, 4));
        // Inside the `é`: the column of the `é`.
        assert_eq!(index.position(8), (2, 2));
        assert_eq!(index.end(), (3, 1));
        assert_eq!(index.position(1000), (3, 1));
    }
}
