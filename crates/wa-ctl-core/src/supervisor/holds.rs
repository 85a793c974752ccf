//! Holds: the decisions that survive the supervisor (issue #9, section 6).
//!
//! A session that the policy stopped (a 440, a 600, any `stop` action),
//! that was logged out, or whose breaker tripped must stay that way until an
//! operator says otherwise, even across a SIGKILL of the supervisor, a
//! reboot or systemd's restart: spawning it again would, after a 440, knock
//! the other device off once more. Such a session's state, last close code,
//! reason and time are written to `<session dir>/.wa-ctl-hold.json`.
//!
//! - A supervisor starting up reads the file in each session's prepare job
//!   (off the loop, under the session lock) and leaves a held session as it
//!   was, with its last close shown.
//! - `wa-ctl start ID`, `restart ID` and `login ID` clear it.
//!
//! Writes and clears run in order on one thread of their own: a clear must
//! never overtake the write it undoes, and an fsync must never stall the
//! loop. Each write is atomic and durable (temporary file, fsync, rename,
//! fsync of the directory): a hold exists to survive a crash.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tracing::{error, warn};

use crate::fsutil::{ensure_private_dir, write_atomic};
use crate::lifecycle::{Hold, State};

/// The hold's file name in the session directory. Workers must not use it.
pub const HOLD_FILE: &str = ".wa-ctl-hold.json";

/// The largest hold file read: a hold is a few hundred bytes.
const MAX_HOLD: u64 = 64 * 1024;

/// Reads the hold in `session_dir`, if there is one.
///
/// A hold that cannot be read is still a hold, shown as `stopped` with the
/// reason: starting a session that a previous supervisor meant to keep
/// stopped is the one mistake a hold exists to prevent.
pub(super) fn read(session_dir: &Path) -> Option<Hold> {
    let path = session_dir.join(HOLD_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path);
    let unreadable = |why: String| {
        warn!(path = %path.display(), "hold file unreadable: {why}; keeping the session stopped");
        Some(Hold {
            state: State::Stopped,
            last_code: None,
            last_reason: Some(format!(
                "hold file {} unreadable ({why}): `wa-ctl start` the session to clear it",
                path.display()
            )),
            last_action: None,
            at_ms: None,
        })
    };
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return unreadable(e.to_string()),
    };
    let mut text = Vec::new();
    if let Err(e) = file.by_ref().take(MAX_HOLD + 1).read_to_end(&mut text) {
        return unreadable(e.to_string());
    }
    if text.len() as u64 > MAX_HOLD {
        return unreadable(format!("larger than {MAX_HOLD} bytes"));
    }
    match serde_json::from_slice::<Hold>(&text) {
        Ok(hold) if Hold::holds(hold.state) => Some(hold),
        Ok(hold) => unreadable(format!("`{}` is not a state that holds", hold.state)),
        Err(e) => unreadable(e.to_string()),
    }
}

enum Job {
    Write { dir: PathBuf, hold: Hold },
    Clear { dir: PathBuf },
}

/// The thread that writes and clears holds, in the order asked.
pub(super) struct HoldWriter {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl HoldWriter {
    pub(super) fn start() -> std::io::Result<HoldWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("wa-ctl-holds".to_owned())
            .spawn(move || {
                for job in rx {
                    run(job);
                }
            })?;
        Ok(HoldWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(super) fn write(&self, dir: PathBuf, hold: Hold) {
        self.send(Job::Write { dir, hold });
    }

    pub(super) fn clear(&self, dir: PathBuf) {
        self.send(Job::Clear { dir });
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.tx
            && tx.send(job).is_err()
        {
            error!("the hold writer thread is gone: a hold was not persisted");
        }
    }

    /// Waits for every write asked for: the supervisor is about to exit.
    pub(super) fn finish(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HoldWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(job: Job) {
    match job {
        Job::Write { dir, hold } => {
            // After a logout the directory is in quarantine: the hold goes
            // into a new, empty one, which the next start would create anyway.
            let result = ensure_private_dir(&dir)
                .map_err(|e| crate::error_chain(&e))
                .and_then(|()| {
                    let json = serde_json::to_vec(&hold).map_err(|e| e.to_string())?;
                    write_atomic(&dir.join(HOLD_FILE), &json, 0o600).map_err(|e| e.to_string())
                });
            if let Err(e) = result {
                error!(dir = %dir.display(), state = %hold.state, "cannot persist the hold: {e}; a restarted supervisor would start this session");
            }
        }
        Job::Clear { dir } => match std::fs::remove_file(dir.join(HOLD_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => error!(dir = %dir.display(), "cannot clear the hold: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Action, CloseKey};

    #[test]
    fn a_hold_survives_a_round_trip_and_garbage_still_holds() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s");
        assert_eq!(read(&session), None);
        let hold = Hold {
            state: State::Stopped,
            last_code: Some(CloseKey::Code(440)),
            last_reason: Some("conflict".into()),
            last_action: Some(Action::Stop),
            at_ms: Some(1_700_000_000_000),
        };
        let mut writer = HoldWriter::start().unwrap();
        writer.write(session.clone(), hold.clone());
        writer.finish();
        assert_eq!(read(&session), Some(hold.clone()));
        let mut writer = HoldWriter::start().unwrap();
        writer.write(session.clone(), hold);
        writer.clear(session.clone());
        writer.finish();
        assert_eq!(read(&session), None, "a clear never overtakes its write");

        for garbage in [&b"{"[..], b"\xff", br#"{"state":"connected"}"#] {
            std::fs::write(session.join(HOLD_FILE), garbage).unwrap();
            let held = read(&session).unwrap();
            assert_eq!(held.state, State::Stopped);
            assert!(held.last_reason.unwrap().contains("unreadable"));
        }
        std::fs::remove_file(session.join(HOLD_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", session.join(HOLD_FILE)).unwrap();
        assert!(
            read(&session)
                .unwrap()
                .last_reason
                .unwrap()
                .contains("unreadable"),
            "a symlink is not followed"
        );
    }
}
