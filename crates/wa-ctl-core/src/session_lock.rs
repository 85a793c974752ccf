//! Session locks: while a supervisor holds a session's lock, it is the only
//! process that may run a worker for that session.
//!
//! All the sessions of one `state_dir` share one lock file,
//! `<state_dir>/sessions.lock`, and each session locks one byte of it, at an
//! offset derived from its id, with an open-file-description lock
//! (`F_OFD_SETLK`). One descriptor therefore serves every session: 10,000
//! sessions must fit under a descriptor limit that also has to hold their
//! 10,000 events pipes, and a lock per session directory would need 10,000
//! more. Like `flock`, an OFD lock belongs to the open file, not to a
//! thread, and the kernel drops it when its holder dies, however it dies.
//!
//! Two ids could in principle hash to the same byte. Within one
//! configuration that is refused at start-up ([`SessionLocks::offsets_clash`]);
//! across supervisors sharing a `state_dir` it would only make a session
//! show `locked`, never run twice.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::session_id::SessionId;

/// The lock file's name inside `state_dir`.
pub const SESSION_LOCK_FILE: &str = "sessions.lock";

/// A session lock that could not be taken or checked.
#[derive(Debug, thiserror::Error)]
#[error("cannot lock session `{session}` in {path}")]
pub struct SessionLockError {
    pub path: PathBuf,
    pub session: String,
    #[source]
    pub source: io::Error,
}

/// The lock file of one `state_dir`, open once.
#[derive(Debug)]
pub struct SessionLocks {
    file: File,
    path: PathBuf,
}

/// A held session lock; dropping it releases the lock.
#[derive(Debug)]
pub struct SessionLock {
    locks: Arc<SessionLocks>,
    offset: i64,
}

/// The byte of the lock file that stands for `id`: FNV-1a, a fixed
/// function, so every supervisor and every version agrees on it.
pub fn offset_of(id: &SessionId) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Below 2^62, so that offset + 1 never overflows an off_t.
    (hash >> 2) as i64
}

fn ofd_lock(file: &File, offset: i64, kind: i32) -> nix::Result<()> {
    let lock = nix::libc::flock {
        l_type: kind as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: offset,
        l_len: 1,
        // OFD locks must be taken with l_pid = 0.
        l_pid: 0,
    };
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)).map(drop)
}

impl SessionLocks {
    /// Opens (creating, mode 0600) `<state_dir>/sessions.lock`. A symbolic
    /// link there is refused rather than followed.
    pub fn open(state_dir: &Path) -> Result<Arc<SessionLocks>, SessionLockError> {
        let path = state_dir.join(SESSION_LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| SessionLockError {
                path: path.clone(),
                session: "*".to_owned(),
                source,
            })?;
        Ok(Arc::new(SessionLocks { file, path }))
    }

    /// Takes `id`'s lock; `None` if another process holds it.
    pub fn try_lock(
        self: &Arc<Self>,
        id: &SessionId,
    ) -> Result<Option<SessionLock>, SessionLockError> {
        let offset = offset_of(id);
        match ofd_lock(&self.file, offset, nix::libc::F_WRLCK) {
            Ok(()) => Ok(Some(SessionLock {
                locks: Arc::clone(self),
                offset,
            })),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
            Err(e) => Err(SessionLockError {
                path: self.path.clone(),
                session: id.to_string(),
                source: e.into(),
            }),
        }
    }

    /// Two of `ids` that share a lock byte, if any: a configuration with
    /// such a pair cannot run, since one supervisor never conflicts with
    /// its own locks.
    pub fn offsets_clash<'a>(
        ids: impl IntoIterator<Item = &'a SessionId>,
    ) -> Option<(&'a SessionId, &'a SessionId)> {
        let mut seen: std::collections::HashMap<i64, &SessionId> = Default::default();
        for id in ids {
            if let Some(other) = seen.insert(offset_of(id), id) {
                return Some((other, id));
            }
        }
        None
    }

    /// The lock file's descriptor number (for diagnostics).
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // Unlocking a byte we hold cannot fail short of a closed file.
        let _ = ofd_lock(&self.locks.file, self.offset, nix::libc::F_UNLCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SessionId {
        s.parse().unwrap()
    }

    #[test]
    fn one_holder_per_session_across_open_files() {
        let tmp = tempfile::tempdir().unwrap();
        // Two opens stand for two supervisors: OFD locks conflict across
        // open files, never within one.
        let a = SessionLocks::open(tmp.path()).unwrap();
        let b = SessionLocks::open(tmp.path()).unwrap();
        let held = a.try_lock(&id("sales")).unwrap().expect("free");
        assert!(b.try_lock(&id("sales")).unwrap().is_none(), "held by a");
        let other = b.try_lock(&id("support")).unwrap();
        assert!(other.is_some(), "another session is independent");
        drop(held);
        assert!(
            b.try_lock(&id("sales")).unwrap().is_some(),
            "released on drop"
        );
    }

    #[test]
    fn offsets_are_stable_and_bounded() {
        // Fixed values: every version of wa-ctl must agree on them.
        assert_eq!(offset_of(&id("default")), offset_of(&id("default")));
        assert_ne!(offset_of(&id("a")), offset_of(&id("b")));
        for s in ["a", "default", &"z".repeat(64)] {
            let o = offset_of(&id(s));
            assert!((0..(1i64 << 62)).contains(&o));
        }
        let ids: Vec<SessionId> = (0..10_000).map(|i| id(&format!("s{i}"))).collect();
        assert_eq!(SessionLocks::offsets_clash(&ids), None);
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join(SESSION_LOCK_FILE)).unwrap();
        assert!(SessionLocks::open(tmp.path()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
