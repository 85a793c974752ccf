//! `runtime_dir/status.json`: a copy of the live record, for the moments
//! the supervisor cannot answer on its socket.
//!
//! Written at most once per [`INTERVAL`] while something changed, by a job
//! on the blocking pool (the record of 10,000 sessions is megabytes), so a
//! state change costs the loop a flag, not a write. The file is replaced
//! atomically (a reader sees the old record or the new one; two inodes take
//! turns, see [`crate::fsutil::replace_file`]) but not fsync'd: `runtime_dir`
//! is a tmpfs under systemd, and the record is only trusted while its
//! writer holds the supervisor lock, so it never needs to survive a crash.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;

use crate::status::{STATUS_FILE, StatusRecord};

use super::event::Event;

/// The shortest time between two writes.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct StatusFile {
    path: PathBuf,
    dirty: bool,
    writing: bool,
    next_write: Instant,
    /// The last write failed: say so once, until one succeeds.
    failing: bool,
}

impl StatusFile {
    pub(super) fn new(runtime_dir: &std::path::Path) -> StatusFile {
        StatusFile {
            path: runtime_dir.join(STATUS_FILE),
            dirty: true,
            writing: false,
            next_write: Instant::now(),
            failing: false,
        }
    }

    /// Something the record shows changed.
    pub(super) fn touch(&mut self) {
        self.dirty = true;
    }

    /// When the next write is due, if one is.
    pub(super) fn due(&self) -> Option<Instant> {
        (self.dirty && !self.writing).then_some(self.next_write)
    }

    /// Whether a write is due now; if so, the caller makes the record and
    /// hands it to [`StatusFile::write`].
    pub(super) fn begin(&mut self, now: Instant) -> bool {
        if self.due().is_none_or(|t| t > now) {
            return false;
        }
        self.dirty = false;
        self.writing = true;
        self.next_write = now + INTERVAL;
        true
    }

    /// Writes `record` off the loop.
    pub(super) fn write(&self, record: StatusRecord, tx: &mpsc::Sender<Event>) {
        let path = self.path.clone();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = serde_json::to_vec(&record)
                .map_err(std::io::Error::other)
                .and_then(|bytes| crate::fsutil::replace_file(&path, &bytes, 0o600));
            let _ = tx.blocking_send(Event::StatusWritten(result));
        });
    }

    pub(super) fn written(&mut self, result: std::io::Result<()>) {
        self.writing = false;
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    warn!("cannot write {}: {e}", self.path.display());
                }
                self.failing = true;
                // Try again at the next interval.
                self.dirty = true;
            }
        }
    }
}
