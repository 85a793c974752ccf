//! A first look at the credential store, before the library opens it.
//!
//! The store is opened through a connection pool that retries a failing
//! connection for 30 s and then says only "database connection error". A
//! file that is not a sound SQLite database never gets better with retries,
//! and reconnecting would only repeat them, so the worker looks first:
//!
//! 1. it reads the 16-byte header itself, which catches a file that is not
//!    SQLite at all, or not a file, without SQLite touching it;
//! 2. it opens the file read-only with SQLite and runs `PRAGMA quick_check`,
//!    which catches a damaged database behind a good header.
//!
//! Only SQLite's "not a database" and "corrupt" results, and a quick_check
//! that finds problems, count. Anything else (busy, permission denied, an
//! I/O error) may pass, and is left to the store's own open. Both steps only
//! read: the file may be the one copy of someone's credentials.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libsqlite3_sys as ffi;

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
    #[error("SQLite says: {detail}")]
    Damaged { detail: String },
}

/// Checks that `path`, if it exists, is a sound SQLite database.
///
/// A missing or empty file passes: SQLite creates the store in it. Errors
/// other than these, such as a permission denied, pass too: the store's own
/// open reports them, and they may be passing.
pub fn check(path: &Path) -> Result<(), NotADatabase> {
    if check_header(path)? {
        quick_check(path)?;
    }
    Ok(())
}

/// Step 1: says whether there is a database behind a good header to check
/// further.
fn check_header(path: &Path) -> Result<bool, NotADatabase> {
    // O_NONBLOCK: a FIFO in the file's place must not block the open.
    let mut file = match std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(_) => return Ok(false),
    };
    match file.metadata() {
        Ok(meta) if !meta.is_file() => return Err(NotADatabase::NotAFile),
        Ok(_) => {}
        Err(_) => return Ok(false),
    }
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    if (&mut file)
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header)
        .is_err()
    {
        return Ok(false);
    }
    judge(&header)?;
    Ok(!header.is_empty())
}

/// Step 2: `PRAGMA quick_check` on a read-only connection. quick_check
/// reads every page but skips the costly index cross-checks of
/// integrity_check: milliseconds for a session store of a few megabytes.
fn quick_check(path: &Path) -> Result<(), NotADatabase> {
    let Ok(uri) = CString::new(read_only_uri(path, has_journal(path))) else {
        return Ok(());
    };
    let connection = Connection::open_read_only(&uri);
    let Some(connection) = connection else {
        return Ok(());
    };
    connection.quick_check()
}

/// Whether a write-ahead log or a rollback journal lies beside the store:
/// then part of the database's truth is in it.
fn has_journal(path: &Path) -> bool {
    ["-wal", "-journal"].iter().any(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::fs::symlink_metadata(name).is_ok()
    })
}

/// The URI that opens `path` read-only. Without a journal beside it the
/// file is the whole database, and `immutable=1` makes SQLite read it
/// without locks, without a `-shm` and without creating a `-wal`: a plain
/// read-only open of a WAL database creates both. With a journal, SQLite
/// must read it, so the open is a plain read-only one, which uses the
/// existing files as they are.
fn read_only_uri(path: &Path, journal: bool) -> String {
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        // Everything but the unreserved characters and `/` is escaped: `?`
        // and `#` would end the path, `%` would start an escape.
        if byte.is_ascii_alphanumeric() || b"/._-~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str(if journal {
        "?mode=ro"
    } else {
        "?mode=ro&immutable=1"
    });
    uri
}

/// A read-only SQLite connection, closed on drop.
struct Connection(*mut ffi::sqlite3);

impl Connection {
    fn open_read_only(uri: &CStr) -> Option<Connection> {
        let mut db = std::ptr::null_mut();
        // SAFETY: a valid C string and an out pointer; SQLite allocates a
        // handle even on failure, and the returned value closes it.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                uri.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_URI,
                std::ptr::null(),
            )
        };
        let connection = Connection(db);
        (rc == ffi::SQLITE_OK && !db.is_null()).then_some(connection)
    }

    fn quick_check(&self) -> Result<(), NotADatabase> {
        let sql = c"PRAGMA quick_check";
        let mut statement = std::ptr::null_mut();
        // SAFETY: an open handle, a NUL-terminated statement (-1: read to
        // the NUL), an out pointer.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                self.0,
                sql.as_ptr(),
                -1,
                &mut statement,
                std::ptr::null_mut(),
            )
        };
        // Reading the schema while preparing is where a damaged first page
        // shows.
        if rc != ffi::SQLITE_OK {
            return self.verdict(rc);
        }
        let statement = Statement(statement);
        let mut problems = Vec::new();
        loop {
            // SAFETY: a prepared statement of this connection.
            match unsafe { ffi::sqlite3_step(statement.0) } {
                ffi::SQLITE_ROW => {
                    // SAFETY: column 0 of the current row; SQLite owns the
                    // text until the next step, and it is copied before.
                    let text = unsafe { ffi::sqlite3_column_text(statement.0, 0) };
                    let line = if text.is_null() {
                        String::new()
                    } else {
                        // SAFETY: SQLite's text is NUL-terminated.
                        unsafe { CStr::from_ptr(text.cast()) }
                            .to_string_lossy()
                            .into_owned()
                    };
                    if line != "ok" {
                        problems.push(line);
                    }
                }
                ffi::SQLITE_DONE => break,
                rc => return self.verdict(rc),
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        // quick_check lists up to 100 problems: the first few say enough.
        problems.truncate(3);
        Err(NotADatabase::Damaged {
            detail: problems.join("; "),
        })
    }

    /// An error result: only "not a database" and "corrupt" condemn the file.
    fn verdict(&self, rc: i32) -> Result<(), NotADatabase> {
        match rc & 0xff {
            ffi::SQLITE_NOTADB | ffi::SQLITE_CORRUPT => Err(NotADatabase::Damaged {
                detail: self.message(),
            }),
            _ => Ok(()),
        }
    }

    fn message(&self) -> String {
        // SAFETY: an open handle; the message is NUL-terminated and lives
        // until the next call on the handle, and it is copied before.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the handle from sqlite3_open_v2 (null is a no-op); every
        // statement was finalised before, as a Statement drops first.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

/// A prepared statement, finalised on drop.
struct Statement(*mut ffi::sqlite3_stmt);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: a statement from sqlite3_prepare_v2 (null is a no-op).
        unsafe { ffi::sqlite3_finalize(self.0) };
    }
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
        // A header and nothing behind it: SQLite's own verdict.
        let mut db = SQLITE_HEADER.to_vec();
        db.resize(4096, 0);
        std::fs::write(&path, &db).unwrap();
        assert_eq!(
            check(&path),
            Err(NotADatabase::Damaged {
                detail: "file is not a database".to_owned()
            })
        );
        std::fs::write(&path, [7u8; 4096]).unwrap();
        assert_eq!(check(&path), Err(NotADatabase::BadHeader));
        assert_eq!(check(dir.path()), Err(NotADatabase::NotAFile));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(check(&fifo), Err(NotADatabase::NotAFile));
    }

    #[test]
    fn uris() {
        assert_eq!(
            read_only_uri(Path::new("/s/a b?#%.db"), false),
            "file:/s/a%20b%3F%23%25.db?mode=ro&immutable=1"
        );
        assert_eq!(
            read_only_uri(Path::new("/s/session.db"), true),
            "file:/s/session.db?mode=ro"
        );
    }

    /// Writes a real database at `path`, in WAL mode like the store, and
    /// returns the open connection (dropping it closes it).
    fn create_database(path: &Path) -> Connection {
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut db = std::ptr::null_mut();
        // SAFETY: as in Connection::open_read_only, read-write.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c_path.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
                std::ptr::null(),
            )
        };
        let connection = Connection(db);
        assert_eq!(rc, ffi::SQLITE_OK);
        let sql = c"PRAGMA journal_mode = WAL; \
            CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); \
            CREATE INDEX t_v ON t (v); \
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
            INSERT INTO t (v) SELECT hex(randomblob(40)) FROM n; \
            PRAGMA wal_checkpoint(TRUNCATE);";
        // SAFETY: an open handle and NUL-terminated SQL; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                connection.0,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK, "{}", connection.message());
        connection
    }

    fn files_in(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_sound_database_passes_and_is_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.db");
        drop(create_database(&path));
        let before = files_in(dir.path());
        assert_eq!(before.len(), 1, "closed cleanly: no -wal");
        assert_eq!(check(&path), Ok(()));
        assert!(
            files_in(dir.path()) == before,
            "the check changed the directory"
        );
    }

    /// A store whose writer still runs, or died: the write-ahead log holds
    /// part of the truth, and the check reads it rather than condemn the
    /// main file, and leaves the main file and the log as they were.
    #[test]
    fn a_sound_database_with_its_log_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.db");
        let writer = create_database(&path);
        let sql = c"INSERT INTO t (v) SELECT v || 'x' FROM t;";
        // SAFETY: an open handle and NUL-terminated SQL; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                writer.0,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        let wal = dir.path().join("session.db-wal");
        let db_before = std::fs::read(&path).unwrap();
        let wal_before = std::fs::read(&wal).unwrap();
        assert!(!wal_before.is_empty());
        assert_eq!(check(&path), Ok(()));
        assert!(std::fs::read(&path).unwrap() == db_before);
        assert!(std::fs::read(&wal).unwrap() == wal_before);
        drop(writer);
    }

    /// A good header in front of damaged pages: the pool would retry it for
    /// 30 s; quick_check condemns it at once, and changes nothing.
    #[test]
    fn damage_behind_a_good_header_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.db");
        drop(create_database(&path));
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 3 * 4096, "{}", bytes.len());
        // Pages 2 and 3 (the table and its index) become noise.
        for (i, b) in bytes[4096..3 * 4096].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        std::fs::write(&path, &bytes).unwrap();
        let before = files_in(dir.path());
        let verdict = check(&path);
        assert!(
            matches!(verdict, Err(NotADatabase::Damaged { .. })),
            "{verdict:?}"
        );
        assert!(
            files_in(dir.path()) == before,
            "the check changed the directory"
        );

        // The first page's schema damaged, the header kept.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100..4096].fill(0xa5);
        std::fs::write(&path, &bytes).unwrap();
        let verdict = check(&path);
        assert!(
            matches!(verdict, Err(NotADatabase::Damaged { .. })),
            "{verdict:?}"
        );
    }
}
