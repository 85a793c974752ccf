//! The bearer token: its file, and the check every `/v1` route makes.
//!
//! The token file is created at the first start when it is missing: 32
//! random bytes as hex, mode 0600, written whole or not at all. A file that
//! others can read is refused rather than used: the token starts and stops
//! sessions and shows their QR codes. The same rule holds for a webhook's
//! secret file.
//!
//! Tokens are compared through their SHA-256 digests, in constant time:
//! neither the content nor the length of the expected token shows in the
//! time a wrong guess takes.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest token accepted from a file an operator wrote.
const MIN_TOKEN: usize = 16;

/// Why a token or secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "{path} can be read by others (mode {mode:04o}): it holds a secret; \
         run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} belongs to uid {owner}, not to this user (uid {uid})")]
    NotOurs { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{path} holds {len} characters: use at least {MIN_TOKEN} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a secret file that must be private: owned by this user (or root
/// reading root's), not readable by group or others, and not too short.
pub(crate) fn read_private(path: &Path) -> Result<String, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid && uid != 0 {
        return Err(TokenError::NotOurs {
            path: path.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let secret = text.trim().to_owned();
    if secret.len() < MIN_TOKEN {
        return Err(TokenError::TooShort {
            path: path.to_owned(),
            len: secret.len(),
        });
    }
    Ok(secret)
}

/// The API token: read from `path`, or made and written there (0600) when
/// the file does not exist.
pub fn load_or_create_token(path: &Path) -> Result<String, TokenError> {
    match read_private(path) {
        Err(TokenError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create_token(path)
        }
        other => other,
    }
}

fn create_token(path: &Path) -> Result<String, TokenError> {
    let create = |source| TokenError::Create {
        path: path.to_owned(),
        source,
    };
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| create(std::io::Error::other(e.to_string())))?;
    let token = hex(&bytes);
    // Written to a private temporary name, then linked into place without
    // replacing anything: a reader never sees half a token, and two
    // starters cannot both win.
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".http.token.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(token),
        // Someone else made it first: theirs is the token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_private(path),
        Err(e) => Err(create(e)),
    }
}

/// The token, for a CLI that prints the page's address: `None` when the
/// file is missing or this user cannot read it.
pub fn read_token(path: &Path) -> Option<String> {
    read_private(path).ok()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The expected token, kept as its digest.
#[derive(Clone)]
pub(crate) struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub(crate) fn new(token: &str) -> Token {
        Token(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether an `Authorization` header's value carries the token.
    pub(crate) fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else {
            return false;
        };
        let Some(given) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim_ascii()).into();
        given.ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_token_is_created_private_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.token");
        let token = load_or_create_token(&path).unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_token(&path).unwrap(), token, "kept");
        assert_eq!(read_token(&path).as_deref(), Some(token.as_str()));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
    }

    #[test]
    fn a_token_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_token(&path).unwrap_err();
        assert!(
            matches!(err, TokenError::TooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create_token(&path).unwrap(), "0123456789abcdef0123");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            load_or_create_token(&path),
            Err(TokenError::TooShort { len: 5, .. })
        ));
    }

    #[test]
    fn the_check_takes_the_bearer_token_only() {
        let t = Token::new("secret-token-123456");
        assert!(t.accepts(Some(b"Bearer secret-token-123456")));
        assert!(!t.accepts(Some(b"Bearer secret-token-12345")));
        assert!(!t.accepts(Some(b"secret-token-123456")));
        assert!(!t.accepts(Some(b"Basic secret-token-123456")));
        assert!(!t.accepts(None));
    }
}
