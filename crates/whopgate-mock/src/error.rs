//! The one error type of the mock.

use std::fmt;
use std::io;

/// What can go wrong when loading a state, changing it, minting a token or serving.
#[derive(Debug)]
#[non_exhaustive]
pub enum MockError {
    /// Reading a file or binding a socket failed.
    Io {
        /// What was being done, e.g. `reading state file ./mock.toml`.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A state (file, JSON body or Rust value) is malformed or inconsistent. The message names
    /// the file, the place in it and what is wrong.
    InvalidState(String),
    /// A change named a user, resource, membership or key that the state does not have.
    NotFound(String),
    /// A control request was malformed (bad JSON, unknown field, bad value).
    BadRequest(String),
    /// Key generation or signing failed.
    Crypto(String),
}

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MockError::Io { context, source } => write!(f, "{context}: {source}"),
            MockError::InvalidState(msg) => write!(f, "invalid mock state: {msg}"),
            MockError::NotFound(msg) => write!(f, "not found: {msg}"),
            MockError::BadRequest(msg) => write!(f, "bad request: {msg}"),
            MockError::Crypto(msg) => write!(f, "crypto error: {msg}"),
        }
    }
}

impl std::error::Error for MockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MockError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<MockError> for io::Error {
    fn from(e: MockError) -> Self {
        match e {
            MockError::Io { source, .. } => source,
            MockError::InvalidState(_) | MockError::BadRequest(_) => {
                io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
            }
            MockError::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            MockError::Crypto(_) => io::Error::other(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_context() {
        let e = MockError::Io {
            context: "reading state file x.toml".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(e.to_string(), "reading state file x.toml: no such file");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn converts_to_io_error_with_a_fitting_kind() {
        let e: io::Error = MockError::InvalidState("bad".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e: io::Error = MockError::NotFound("x".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
