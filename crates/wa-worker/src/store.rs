//! A first look at the credential store, before SQLite opens it.
//!
//! The store is opened through a connection pool that retries a failing
//! connection for 30 s and then says only "database connection error". A
//! file that is not SQLite at all never gets better with retries, and
//! reconnecting would only repeat them, so the worker reads the 16-byte
//! header itself and reports such a file at once. It only reads: the file
//! may be the one copy of someone's credentials.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Why the store at a path is not a database SQLite can open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotADatabase {
    #[error("it is not a regular file")]
    NotAFile,
    #[error("it is {len} bytes long, shorter than the SQLite header")]
    Truncated { len: usize },
    #[error("it does not start with the SQLite header")]
    BadHeader,
}

/// Checks that `path`, if it exists, can be a SQLite database.
///
/// A missing or empty file passes: SQLite creates the store in it. Errors
/// other than these, such as a permission denied, pass too: the store's own
/// open reports them, and they may be passing.
pub fn check(path: &Path) -> Result<(), NotADatabase> {
    // O_NONBLOCK: a FIFO in the file's place must not block the open.
    let mut file = match std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(_) => return Ok(()),
    };
    match file.metadata() {
        Ok(meta) if !meta.is_file() => return Err(NotADatabase::NotAFile),
        Ok(_) => {}
        Err(_) => return Ok(()),
    }
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    if (&mut file)
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header)
        .is_err()
    {
        return Ok(());
    }
    judge(&header)
}

/// The verdict on the first bytes of a store file.
fn judge(header: &[u8]) -> Result<(), NotADatabase> {
    match header.len() {
        0 => Ok(()),
        len if len < SQLITE_HEADER.len() => Err(NotADatabase::Truncated { len }),
        _ if header == SQLITE_HEADER => Ok(()),
        _ => Err(NotADatabase::BadHeader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(judge(b""), Ok(()));
        assert_eq!(judge(SQLITE_HEADER), Ok(()));
        assert_eq!(
            judge(b"SQLite format 3"),
            Err(NotADatabase::Truncated { len: 15 })
        );
        assert_eq!(judge(b"SQLite format 4\0"), Err(NotADatabase::BadHeader));
        assert_eq!(judge(&[0xff; 16]), Err(NotADatabase::BadHeader));
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.db");
        assert_eq!(check(&path), Ok(()), "missing: a new store");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(check(&path), Ok(()), "empty: a new store");
        let mut db = SQLITE_HEADER.to_vec();
        db.resize(4096, 0);
        std::fs::write(&path, &db).unwrap();
        assert_eq!(check(&path), Ok(()));
        std::fs::write(&path, [7u8; 4096]).unwrap();
        assert_eq!(check(&path), Err(NotADatabase::BadHeader));
        assert_eq!(check(dir.path()), Err(NotADatabase::NotAFile));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(check(&fifo), Err(NotADatabase::NotAFile));
    }
}
