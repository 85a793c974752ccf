//! Configuration errors, and the mapping from a byte offset in the file (or
//! a toml parse error) to the file:line:column:key a person can act on.

use std::ops::Range;
use std::path::PathBuf;

/// An error in finding, reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "config file {path} is larger than 1 MiB (the most wa-ctl reads): check that --config or $WA_CTL_CONFIG names the configuration"
    )]
    TooLarge { path: PathBuf },
    #[error("{path}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
    #[error("cannot find a default {what}: set {hint}, or name it in the config file")]
    NoDefaultDir {
        what: &'static str,
        hint: &'static str,
    },
}

/// A validation failure before it is placed in the file: the span of the
/// offending value, the key it belongs to, and what is wrong with it.
pub(super) type SpannedError = (Range<usize>, &'static str, String);

/// The 1-based line and column of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// An error at `span` of `text`, naming `key`.
pub(super) fn invalid_at(
    path: &str,
    text: &str,
    span: Range<usize>,
    key: &str,
    message: String,
) -> ConfigError {
    let (line, column) = line_column(text, span.start);
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        key: Some(key.to_owned()),
        message,
    }
}

/// Turns a toml error into one that names the line and, when it can be
/// told from the text, the key.
pub(super) fn invalid_from_toml(path: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column, key) = match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                .filter(|k| !k.is_empty() && !k.starts_with('['));
            // An unknown field is reported at the key itself; name it from the span.
            let key = key.or_else(|| {
                let k = text.get(span.clone())?.trim();
                (!k.is_empty() && !k.contains('\n')).then(|| k.to_owned())
            });
            (line, column, key)
        }
        None => (1, 1, None),
    };
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        key,
        message: error.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw::RawConfig;
    use super::*;

    #[test]
    fn lines_and_columns() {
        assert_eq!(line_column("", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab\ncd", 99), (2, 3));
    }

    /// The line, key and message of the error that deserializing `text` gives.
    fn invalid(text: &str) -> (usize, Option<String>, String) {
        let error = toml::from_str::<RawConfig>(text).expect_err(text);
        match invalid_from_toml("/etc/x/wa.toml", text, &error) {
            ConfigError::Invalid {
                line, key, message, ..
            } => (line, key, message),
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, _) = invalid("[supervisor]\n\nstop_timout = \"1s\"\n");
        assert_eq!(line, 3);
        assert_eq!(key.as_deref(), Some("stop_timout"));
    }

    #[test]
    fn bad_duration() {
        let (line, key, msg) = invalid("[policy]\ninitial_backoff = \"soon\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("initial_backoff")));
        assert!(msg.contains("invalid duration"), "{msg}");
    }

    #[test]
    fn bad_action_and_code() {
        let (line, _, msg) = invalid("[policy.codes]\n401 = \"explode\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("explode"), "{msg}");
        let (line, key, _) = invalid("[policy.codes]\nfoo = \"stop\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("foo")));
    }

    #[test]
    fn bad_session_ids() {
        for bad in ["../x", "", "a/b", "x y", "/abs", &"a".repeat(65)] {
            let (line, key, msg) = invalid(&format!("[[session]]\nid = \"{bad}\"\n"));
            assert_eq!(line, 2, "{bad}");
            assert_eq!(key.as_deref(), Some("id"), "{bad}");
            assert!(msg.contains("session id"), "{msg}");
        }
    }

    #[test]
    fn bad_types() {
        invalid("[policy]\nmax_restarts = -1\n");
        invalid("supervisor = 3\n");
    }
}
