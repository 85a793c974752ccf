//! Session ids: the names of sessions, and of their directories.
//!
//! An id becomes a path component under `state_dir`, so the allowed alphabet
//! is deliberately narrow: `[A-Za-z0-9_-]`, 1 to 64 characters. That rules out
//! `..`, `/`, NUL and absolute paths by construction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated session id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session id `{}`: use 1 to 64 characters from A-Z, a-z, 0-9, `_` and `-`", .0.escape_debug())]
pub struct InvalidSessionId(pub String);

impl SessionId {
    /// The id of the single session used when the config names none.
    pub fn default_id() -> SessionId {
        SessionId("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = InvalidSessionId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(SessionId(s))
        } else {
            Err(InvalidSessionId(s))
        }
    }
}

impl std::str::FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionId::try_from(s.to_owned())
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["default", "a", "Sales_2", "x-y", &"z".repeat(64)] {
            assert!(ok.parse::<SessionId>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../etc",
            "/abs",
            "a/b",
            "a\0b",
            "é",
            "a.b",
            " ",
            &"z".repeat(65),
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?}");
        }
    }
}
