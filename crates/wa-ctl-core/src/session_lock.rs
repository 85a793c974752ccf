//! Session locks: while a supervisor holds a session's lock, it is the only
//! process that may run a worker for that session.
//!
//! All the sessions of one `state_dir` share a few lock files,
//! `<state_dir>/locks/NN.lock`, and each session locks one byte of one of
//! them, chosen and placed by a hash of its id, with an open-file-description
//! lock (`F_OFD_SETLK`). A handful of descriptors therefore serve every
//! session: 10,000 sessions must fit under a descriptor limit that also has
//! to hold their 10,000 events pipes, and a lock per session directory would
//! need 10,000 more. Like `flock`, an OFD lock belongs to the open file, not
//! to a thread, and the kernel drops it when its holder dies, however it
//! dies.
//!
//! Why several files: the kernel keeps one unsorted list of record locks per
//! file and walks all of it to set or clear one, so 10,000 locks on one
//! file cost O(n²) to take (measured: 40% of the supervisor's start-up CPU
//! with 10,000 sessions). [`SHARDS`] files divide the walk by as much.
//!
//! Two ids could in principle hash to the same byte. Within one
//! configuration that is refused at start-up ([`SessionLocks::offsets_clash`]);
//! across supervisors sharing a `state_dir` it would only make a session
//! show `locked`, never run twice.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::session_id::SessionId;

/// The folder of the lock files inside `state_dir`.
pub const SESSION_LOCK_DIR: &str = "locks";

/// How many lock files the sessions are spread over.
pub const SHARDS: usize = 16;

/// A session lock that could not be taken or checked.
#[derive(Debug, thiserror::Error)]
#[error("cannot lock session `{session}` in {path}")]
pub struct SessionLockError {
    pub path: PathBuf,
    pub session: String,
    #[source]
    pub source: io::Error,
}

/// The lock files of one `state_dir`, open once.
#[derive(Debug)]
pub struct SessionLocks {
    files: Vec<File>,
    dir: PathBuf,
}

/// A held session lock; dropping it releases the lock.
#[derive(Debug)]
pub struct SessionLock {
    locks: Arc<SessionLocks>,
    slot: LockSlot,
}

/// Where a session's lock lives: a file and a byte in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockSlot {
    pub shard: usize,
    pub offset: i64,
}

/// The lock byte that stands for `id`, from FNV-1a of the id: a fixed
/// function, so every supervisor and every version agrees on it.
pub fn slot_of(id: &SessionId) -> LockSlot {
    let hash = crate::fsutil::fnv1a(id.as_str().as_bytes());
    LockSlot {
        shard: (hash % SHARDS as u64) as usize,
        // Below 2^58, so that offset + 1 never overflows an off_t.
        offset: (hash >> 6) as i64,
    }
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
    /// Opens (creating, mode 0600, in a 0700 folder) the lock files of
    /// `<state_dir>/locks/`. A symbolic link there is refused rather than
    /// followed.
    pub fn open(state_dir: &Path) -> Result<Arc<SessionLocks>, SessionLockError> {
        let dir = state_dir.join(SESSION_LOCK_DIR);
        let err = |path: &Path, source| SessionLockError {
            path: path.to_path_buf(),
            session: "*".to_owned(),
            source,
        };
        crate::fsutil::ensure_private_dir(&dir)
            .map_err(|e| err(&dir, std::io::Error::other(crate::error_chain(&e))))?;
        let mut files = Vec::with_capacity(SHARDS);
        for shard in 0..SHARDS {
            let path = dir.join(format!("{shard:02}.lock"));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|source| err(&path, source))?;
            files.push(file);
        }
        Ok(Arc::new(SessionLocks { files, dir }))
    }

    /// Takes `id`'s lock; `None` if another process holds it.
    pub fn try_lock(
        self: &Arc<Self>,
        id: &SessionId,
    ) -> Result<Option<SessionLock>, SessionLockError> {
        let slot = slot_of(id);
        match ofd_lock(&self.files[slot.shard], slot.offset, nix::libc::F_WRLCK) {
            Ok(()) => Ok(Some(SessionLock {
                locks: Arc::clone(self),
                slot,
            })),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
            Err(e) => Err(SessionLockError {
                path: self.dir.join(format!("{:02}.lock", slot.shard)),
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
        let mut seen: std::collections::HashMap<LockSlot, &SessionId> = Default::default();
        for id in ids {
            if let Some(other) = seen.insert(slot_of(id), id) {
                return Some((other, id));
            }
        }
        None
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // Unlocking a byte we hold cannot fail short of a closed file.
        let file = &self.locks.files[self.slot.shard];
        let _ = ofd_lock(file, self.slot.offset, nix::libc::F_UNLCK);
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
    fn slots_are_stable_spread_and_bounded() {
        // A fixed value: every version of wa-ctl must agree on it.
        assert_eq!(
            slot_of(&id("default")),
            LockSlot {
                shard: 0xebad_a516_8620_c5fe_u64 as usize % SHARDS,
                offset: (0xebad_a516_8620_c5fe_u64 >> 6) as i64
            },
            "FNV-1a of `default`"
        );
        assert_ne!(slot_of(&id("a")), slot_of(&id("b")));
        for s in ["a", "default", &"z".repeat(64)] {
            let slot = slot_of(&id(s));
            assert!((0..(1i64 << 58)).contains(&slot.offset));
            assert!(slot.shard < SHARDS);
        }
        let mut per_shard = [0usize; SHARDS];
        for i in 0..1600 {
            per_shard[slot_of(&id(&format!("s{i}"))).shard] += 1;
        }
        assert!(
            per_shard.iter().all(|&n| (50..150).contains(&n)),
            "{per_shard:?}"
        );
        let ids: Vec<SessionId> = (0..10_000).map(|i| id(&format!("s{i}"))).collect();
        assert_eq!(SessionLocks::offsets_clash(&ids), None);
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::fs::create_dir(tmp.path().join(SESSION_LOCK_DIR)).unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join(SESSION_LOCK_DIR).join("00.lock"))
            .unwrap();
        assert!(SessionLocks::open(tmp.path()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
