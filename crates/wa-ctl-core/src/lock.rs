//! The supervisor lock, held for life: one supervisor per `runtime_dir`.
//! (Session locks are in [`crate::session_lock`].)
//!
//! It is an `flock` lock taken with the standard library's `File::try_lock`.
//! The kernel drops them when the holder dies, however it dies, so a stale
//! pid file can never block a start, and nothing is ever decided by asking
//! whether some pid is alive.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lock file's name inside `runtime_dir`. It also holds the owner's pid.
pub const LOCK_FILE: &str = "wa-ctl.lock";

/// A lock that could not be taken or checked.
#[derive(Debug, thiserror::Error)]
#[error("cannot lock {path}")]
pub struct LockError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The first pause of `SupervisorLock::acquire` while a probe holds the
/// shared lock. The pause doubles on each attempt.
///
/// A probe holds the shared lock only from its `try_lock_shared` to the
/// close of its file, with a read of a few bytes in between (`probe`), or
/// for the moment after a supervisor exits (`wait_released`): a few
/// microseconds, never across anything that can block for long.
const PROBE_BACKOFF_FIRST: Duration = Duration::from_micros(50);

/// How many exclusive attempts `acquire` makes. With the pause doubling from
/// 50 µs, it waits 50 µs × (2¹⁰ − 1) ≈ 51 ms in all before it gives up.
const PROBE_BACKOFF_ATTEMPTS: u32 = 11;

/// What a look at the supervisor lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nobody holds the lock.
    NotRunning,
    /// A supervisor holds it; `pid` is what it wrote inside, if readable yet.
    Running { pid: Option<u32> },
}

/// The supervisor's lock, held for the life of the process.
#[derive(Debug)]
pub struct SupervisorLock {
    _file: File,
}

fn open_lock_file(path: &Path, create: bool) -> io::Result<File> {
    // O_NOFOLLOW (issue #9): a symlink planted as the lock file was
    // followed, and its target truncated when the pid was written.
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

fn read_text(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.seek(io::SeekFrom::Start(0)).ok()?;
    // A few lines; a planted huge file is not read whole.
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    Some(text)
}

fn read_pid(file: &mut File) -> Option<u32> {
    read_text(file)?.lines().next()?.trim().parse().ok()
}

/// What a supervisor writes into its lock file after its pid: the
/// configuration it runs (issue #9), so that a CLI with another one can tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub pid: Option<u32>,
    /// The configuration file, absolute; `None` for the embedded defaults.
    pub config: Option<PathBuf>,
    /// FNV-1a of the configuration text (see `Config::digest`).
    pub digest: Option<u64>,
}

impl Owner {
    fn parse(text: &str) -> Owner {
        let mut lines = text.lines();
        let pid = lines.next().and_then(|l| l.trim().parse().ok());
        let mut owner = Owner {
            pid,
            ..Owner::default()
        };
        for line in lines {
            match line.split_once('=') {
                Some(("config", path)) if !path.is_empty() => {
                    owner.config = Some(PathBuf::from(path))
                }
                Some(("digest", hex)) => owner.digest = u64::from_str_radix(hex, 16).ok(),
                _ => {}
            }
        }
        owner
    }

    fn render(&self) -> String {
        let config = self
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "{}\nconfig={config}\ndigest={:016x}\n",
            self.pid.unwrap_or(0),
            self.digest.unwrap_or(0)
        )
    }
}

impl SupervisorLock {
    /// Takes the lock in `runtime_dir` and writes our pid into it, or returns
    /// the pid of the supervisor that holds it.
    pub fn acquire(
        runtime_dir: &Path,
        config: Option<&Path>,
        digest: u64,
    ) -> Result<Result<SupervisorLock, Option<u32>>, LockError> {
        let path = runtime_dir.join(LOCK_FILE);
        let err = |source| LockError {
            path: path.clone(),
            source,
        };
        let mut file = open_lock_file(&path, true).map_err(err)?;
        // `wa-ctl status` and `stop` probe with a shared lock. An exclusive
        // attempt that fails only because of such a probe must not be
        // mistaken for a running supervisor, so tell the two apart: a shared
        // lock can be had beside a probe, never beside a supervisor. A probe
        // lets go within microseconds, so a short backoff outlasts it.
        let mut pause = PROBE_BACKOFF_FIRST;
        for attempt in 1..=PROBE_BACKOFF_ATTEMPTS {
            match file.try_lock() {
                Ok(()) => {
                    file.set_len(0).map_err(err)?;
                    file.seek(io::SeekFrom::Start(0)).map_err(err)?;
                    let owner = Owner {
                        pid: Some(std::process::id()),
                        config: config.map(Path::to_path_buf),
                        digest: Some(digest),
                    };
                    // One write: a reader sees the pid line whole or nothing.
                    file.write_all(owner.render().as_bytes()).map_err(err)?;
                    return Ok(Ok(SupervisorLock { _file: file }));
                }
                Err(TryLockError::Error(e)) => return Err(err(e)),
                Err(TryLockError::WouldBlock) => {}
            }
            match file.try_lock_shared() {
                Ok(()) => file.unlock().map_err(err)?,
                Err(TryLockError::WouldBlock) => return Ok(Err(read_pid(&mut file))),
                Err(TryLockError::Error(e)) => return Err(err(e)),
            }
            if attempt < PROBE_BACKOFF_ATTEMPTS {
                std::thread::sleep(pause);
                pause *= 2;
            }
        }
        // Probes that never stop (a tight loop of `wa-ctl status`) look like
        // a running supervisor; the caller reports whatever pid is inside.
        Ok(Err(read_pid(&mut file)))
    }

    /// Tells whether a supervisor holds the lock in `runtime_dir`, without
    /// creating anything.
    pub fn probe(runtime_dir: &Path) -> Result<Probe, LockError> {
        let path = runtime_dir.join(LOCK_FILE);
        let mut file = match open_lock_file(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::NotRunning),
            Err(source) => return Err(LockError { path, source }),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Probe::NotRunning),
            Err(TryLockError::WouldBlock) => Ok(Probe::Running {
                pid: read_pid(&mut file),
            }),
            Err(TryLockError::Error(source)) => Err(LockError { path, source }),
        }
    }

    /// Who holds the lock in `runtime_dir`, and with which configuration:
    /// `None` when nobody does.
    pub fn owner(runtime_dir: &Path) -> Result<Option<Owner>, LockError> {
        let path = runtime_dir.join(LOCK_FILE);
        let mut file = match open_lock_file(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LockError { path, source }),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(
                read_text(&mut file).map_or_else(Owner::default, |t| Owner::parse(&t)),
            )),
            Err(TryLockError::Error(source)) => Err(LockError { path, source }),
        }
    }

    /// Waits until no supervisor holds the lock in `runtime_dir`, up to
    /// `timeout`. Returns whether it was released. It blocks in the kernel on
    /// the lock itself: no polling.
    pub fn wait_released(runtime_dir: &Path, timeout: Duration) -> Result<bool, LockError> {
        let path = runtime_dir.join(LOCK_FILE);
        let file = match open_lock_file(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(source) => return Err(LockError { path, source }),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // On timeout this thread stays blocked until the process exits,
        // which for the CLI is moments later.
        std::thread::spawn(move || {
            let _ = tx.send(file.lock_shared());
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(source)) => Err(LockError { path, source }),
            Err(_) => Ok(false),
        }
    }
}

/// Whether process `pid` holds the supervisor lock in `runtime_dir` with an
/// exclusive `flock`: one of its descriptors is the lock file, and the
/// kernel lists a write lock on it (`/proc/<pid>/fdinfo`). What `stop
/// --force` checks before it kills a supervisor that does not answer, so
/// that a recycled pid is never signalled.
pub fn holds_lock(pid: u32, runtime_dir: &Path) -> io::Result<bool> {
    let lock_path = runtime_dir.join(LOCK_FILE);
    let lock_path = std::fs::canonicalize(&lock_path).unwrap_or(lock_path);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target != lock_path {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))?;
        if info
            .lines()
            .any(|l| l.starts_with("lock:") && l.contains("FLOCK") && l.contains("WRITE"))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            SupervisorLock::probe(tmp.path()).unwrap(),
            Probe::NotRunning
        );
        let held = SupervisorLock::acquire(tmp.path(), Some(Path::new("/etc/a.toml")), 0xab)
            .unwrap()
            .unwrap();
        assert_eq!(
            SupervisorLock::owner(tmp.path()).unwrap(),
            Some(Owner {
                pid: Some(std::process::id()),
                config: Some(PathBuf::from("/etc/a.toml")),
                digest: Some(0xab),
            })
        );
        assert_eq!(
            SupervisorLock::probe(tmp.path()).unwrap(),
            Probe::Running {
                pid: Some(std::process::id())
            }
        );
        assert_eq!(
            SupervisorLock::acquire(tmp.path(), None, 0)
                .unwrap()
                .unwrap_err(),
            Some(std::process::id())
        );
        assert!(!SupervisorLock::wait_released(tmp.path(), Duration::from_millis(50)).unwrap());
        assert!(holds_lock(std::process::id(), tmp.path()).unwrap());
        assert!(!holds_lock(std::process::id(), Path::new("/tmp")).unwrap());
        drop(held);
        assert!(!holds_lock(std::process::id(), tmp.path()).unwrap());
        assert!(SupervisorLock::wait_released(tmp.path(), Duration::from_secs(5)).unwrap());
        assert_eq!(
            SupervisorLock::probe(tmp.path()).unwrap(),
            Probe::NotRunning
        );
    }

    #[test]
    fn a_probe_that_never_lets_go_is_waited_out_briefly() {
        let tmp = tempfile::tempdir().unwrap();
        let probe = open_lock_file(&tmp.path().join(LOCK_FILE), true).unwrap();
        probe.lock_shared().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            SupervisorLock::acquire(tmp.path(), None, 0)
                .unwrap()
                .unwrap_err(),
            None
        );
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        drop(probe);
        assert!(
            SupervisorLock::acquire(tmp.path(), None, 0)
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn a_symlinked_lock_file_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join(LOCK_FILE)).unwrap();
        let err = SupervisorLock::acquire(tmp.path(), None, 0).unwrap_err();
        assert_eq!(err.source.raw_os_error(), Some(nix::libc::ELOOP), "{err:?}");
        assert!(SupervisorLock::probe(tmp.path()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn stale_pid_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(LOCK_FILE), "1\n").unwrap();
        assert_eq!(
            SupervisorLock::probe(tmp.path()).unwrap(),
            Probe::NotRunning
        );
        assert!(
            SupervisorLock::acquire(tmp.path(), None, 0)
                .unwrap()
                .is_ok()
        );
    }
}
