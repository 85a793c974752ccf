//! The key layout under the cluster prefix, and the validation that keeps
//! every key inside it.
//!
//! ```text
//! <prefix>/sessions/<id>/owner   value: the owner's node name; lease: the owner's
//! <prefix>/sessions/<id>/state   value: the state the owner last published; same lease
//! ```
//!
//! Only two things ever go into a key: the prefix, validated by
//! [`Prefix::new`], and a session id, validated by [`validate_session_id`]
//! to the same `[A-Za-z0-9_-]{1,64}` as `wa_ctl_core::session_id`. Node
//! names can be anything an operator types, so they are only ever values.
//! This crate does not depend on wa-ctl-core (the supervisor will depend
//! on this crate), so the session id rule is repeated here; the unit tests
//! pin it.

use std::fmt;

/// The longest prefix accepted, in bytes. etcd keys may be far longer, but
/// a prefix this long is a mistake, and a bound keeps error messages short.
pub const MAX_PREFIX_LEN: usize = 256;

/// The longest session id, as in `wa_ctl_core::session_id`.
pub const MAX_SESSION_ID_LEN: usize = 64;

/// Why a prefix or a session id cannot be part of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The prefix does not start with `/`.
    #[error("prefix {prefix:?} must start with '/'")]
    PrefixNotAbsolute {
        /// The prefix as given.
        prefix: String,
    },
    /// The prefix is `/` alone, or ends with `/`.
    #[error("prefix {prefix:?} must name at least one segment and must not end with '/'")]
    PrefixTrailingSlash {
        /// The prefix as given.
        prefix: String,
    },
    /// The prefix has an empty, `.` or `..` segment.
    #[error("prefix {prefix:?} has an empty, '.' or '..' segment")]
    PrefixBadSegment {
        /// The prefix as given.
        prefix: String,
    },
    /// The prefix has a NUL or another control character.
    #[error("prefix {prefix:?} has a control character")]
    PrefixControlCharacter {
        /// The prefix as given.
        prefix: String,
    },
    /// The prefix is longer than [`MAX_PREFIX_LEN`] bytes.
    #[error("prefix is {len} bytes long, longer than {MAX_PREFIX_LEN}")]
    PrefixTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The session id is not `[A-Za-z0-9_-]{1,64}`.
    #[error("session id {id:?} is not 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")]
    BadSessionId {
        /// The id as given.
        id: String,
    },
}

/// A validated cluster prefix: absolute, at least one segment, no empty,
/// `.` or `..` segment, no trailing `/`, no control character.
///
/// Requiring exactly one spelling means `/wa-ctl` and `/wa-ctl/` can never
/// be two clusters that think they are one, and `/a/../b` can never reach
/// another cluster's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// Validates `prefix`.
    pub fn new(prefix: &str) -> Result<Prefix, KeyError> {
        let owned = || prefix.to_owned();
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(KeyError::PrefixTooLong { len: prefix.len() });
        }
        if prefix.chars().any(char::is_control) {
            return Err(KeyError::PrefixControlCharacter { prefix: owned() });
        }
        let Some(rest) = prefix.strip_prefix('/') else {
            return Err(KeyError::PrefixNotAbsolute { prefix: owned() });
        };
        if rest.is_empty() || rest.ends_with('/') {
            return Err(KeyError::PrefixTrailingSlash { prefix: owned() });
        }
        if rest
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(KeyError::PrefixBadSegment { prefix: owned() });
        }
        Ok(Prefix(prefix.to_owned()))
    }

    /// The prefix as a string, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<prefix>/sessions/`: every session key starts with it, and a range
    /// read or a watch over it sees all of them and nothing else (the
    /// trailing `/` keeps `/wa` from matching `/wa-ctl`).
    pub fn sessions_dir(&self) -> String {
        format!("{}/sessions/", self.0)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `id` is `[A-Za-z0-9_-]{1,64}`, so that it is one key
/// segment and nothing else.
pub fn validate_session_id(id: &str) -> Result<(), KeyError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(KeyError::BadSessionId { id: id.to_owned() })
    }
}

/// `<prefix>/sessions/<id>/owner`, the key whose existence is ownership.
/// Its value is the owner's node name and its `create_revision` the
/// session's epoch (the fencing token).
pub fn owner_key(prefix: &Prefix, id: &str) -> Result<String, KeyError> {
    validate_session_id(id)?;
    Ok(format!("{}{id}/owner", prefix.sessions_dir()))
}

/// `<prefix>/sessions/<id>/state`, what the owner last published.
pub fn state_key(prefix: &Prefix, id: &str) -> Result<String, KeyError> {
    validate_session_id(id)?;
    Ok(format!("{}{id}/state", prefix.sessions_dir()))
}

/// Which key of which session `key` is, if it is one of ours under
/// `prefix`: the reverse of [`owner_key`] and [`state_key`].
pub fn parse_session_key<'k>(prefix: &Prefix, key: &'k str) -> Option<(&'k str, SessionKey)> {
    let rest = key.strip_prefix(&prefix.sessions_dir())?;
    let (id, leaf) = rest.split_once('/')?;
    validate_session_id(id).ok()?;
    let kind = match leaf {
        "owner" => SessionKey::Owner,
        "state" => SessionKey::State,
        _ => return None,
    };
    Some((id, kind))
}

/// One of the keys a session has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKey {
    /// `<prefix>/sessions/<id>/owner`.
    Owner,
    /// `<prefix>/sessions/<id>/state`.
    State,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> Prefix {
        Prefix::new(p).unwrap()
    }

    #[test]
    fn owner_and_state_keys() {
        let p = prefix("/wa-ctl");
        assert_eq!(
            owner_key(&p, "default").unwrap(),
            "/wa-ctl/sessions/default/owner"
        );
        assert_eq!(
            state_key(&p, "a_B-9").unwrap(),
            "/wa-ctl/sessions/a_B-9/state"
        );
        let nested = prefix("/org/team one/wa-ctl");
        assert_eq!(
            owner_key(&nested, "x").unwrap(),
            "/org/team one/wa-ctl/sessions/x/owner"
        );
    }

    #[test]
    fn odd_session_ids_are_rejected_and_cannot_escape_the_prefix() {
        let p = prefix("/wa-ctl");
        let long = "a".repeat(MAX_SESSION_ID_LEN + 1);
        for id in [
            "",
            "/",
            "a/b",
            "..",
            "../other",
            "a/../../x",
            ".",
            "a\0b",
            "\0",
            "%2e%2e",
            "a%2Fb",
            "é",
            "sessão",
            "名前",
            "a b",
            "a\nb",
            "a.b",
            long.as_str(),
        ] {
            assert_eq!(
                owner_key(&p, id),
                Err(KeyError::BadSessionId { id: id.to_owned() }),
                "{id:?}"
            );
            assert!(state_key(&p, id).is_err(), "{id:?}");
        }
        let longest = "Z".repeat(MAX_SESSION_ID_LEN);
        for id in ["a", "-", "_", "A-z_09", longest.as_str()] {
            let key = owner_key(&p, id).unwrap();
            // Every accepted id stays one segment below the sessions dir.
            assert!(key.starts_with("/wa-ctl/sessions/"), "{key}");
            assert_eq!(key.matches('/').count(), 4, "{key}");
            assert_eq!(parse_session_key(&p, &key), Some((id, SessionKey::Owner)));
        }
    }

    #[test]
    fn prefixes_have_one_spelling() {
        for (bad, want) in [
            (
                "",
                KeyError::PrefixNotAbsolute {
                    prefix: String::new(),
                },
            ),
            (
                "wa-ctl",
                KeyError::PrefixNotAbsolute {
                    prefix: "wa-ctl".into(),
                },
            ),
            ("/", KeyError::PrefixTrailingSlash { prefix: "/".into() }),
            (
                "/wa-ctl/",
                KeyError::PrefixTrailingSlash {
                    prefix: "/wa-ctl/".into(),
                },
            ),
            (
                "//wa-ctl",
                KeyError::PrefixBadSegment {
                    prefix: "//wa-ctl".into(),
                },
            ),
            (
                "/a//b",
                KeyError::PrefixBadSegment {
                    prefix: "/a//b".into(),
                },
            ),
            (
                "/a/../b",
                KeyError::PrefixBadSegment {
                    prefix: "/a/../b".into(),
                },
            ),
            (
                "/..",
                KeyError::PrefixBadSegment {
                    prefix: "/..".into(),
                },
            ),
            (
                "/a/.",
                KeyError::PrefixBadSegment {
                    prefix: "/a/.".into(),
                },
            ),
            (
                "/a\0b",
                KeyError::PrefixControlCharacter {
                    prefix: "/a\0b".into(),
                },
            ),
            (
                "/a\nb",
                KeyError::PrefixControlCharacter {
                    prefix: "/a\nb".into(),
                },
            ),
        ] {
            assert_eq!(Prefix::new(bad), Err(want), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PREFIX_LEN));
        assert!(matches!(
            Prefix::new(&long),
            Err(KeyError::PrefixTooLong { .. })
        ));
        // Dots inside a segment, percent signs and unicode are names, not
        // navigation: etcd keys are bytes and nothing decodes them.
        for good in ["/wa-ctl", "/a.b/..c/%2e%2e", "/sessão/名前", "/a b"] {
            assert_eq!(Prefix::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn a_prefix_never_matches_a_longer_sibling() {
        let short = prefix("/wa");
        let long = prefix("/wa-ctl");
        let key = owner_key(&long, "default").unwrap();
        assert!(!key.starts_with(&short.sessions_dir()));
        assert_eq!(parse_session_key(&short, &key), None);
    }

    #[test]
    fn foreign_keys_are_not_parsed() {
        let p = prefix("/wa-ctl");
        for key in [
            "/wa-ctl/sessions/default",
            "/wa-ctl/sessions/default/other",
            "/wa-ctl/sessions/a/b/owner",
            "/wa-ctl/sessions//owner",
            "/wa-ctl/sessions/../owner",
            "/wa-ctl/nodes/x/owner",
        ] {
            assert_eq!(parse_session_key(&p, key), None, "{key}");
        }
        assert_eq!(
            parse_session_key(&p, "/wa-ctl/sessions/s1/state"),
            Some(("s1", SessionKey::State))
        );
    }
}
