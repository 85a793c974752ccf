//! The background supervisor's log file, reopened on SIGHUP (issue #9).
//!
//! `wa-ctl start` gives a background supervisor `<state_dir>/wa-ctl.log` as
//! its stdout and stderr, and every worker inherits them. logrotate's
//! convention is `mv` and then SIGHUP: the supervisor opens the path anew
//! and puts the new file on descriptors 1 and 2, so its own lines and every
//! worker spawned afterwards write there. (Workers already running keep the
//! old file until they are next spawned; `copytruncate` avoids that.)
//!
//! Only a supervisor whose stderr *is* that file at start-up reopens it: one
//! in the foreground logs to a terminal or the journal, which SIGHUP leaves
//! alone.

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// The log file to reopen on SIGHUP, if the supervisor logs to one.
#[derive(Debug)]
pub(super) struct LogFile {
    path: Option<PathBuf>,
}

impl LogFile {
    /// `path` is the log file if descriptor 2 is that very file now.
    pub(super) fn detect(path: PathBuf) -> LogFile {
        let same = (|| {
            let fd2 = std::fs::metadata("/proc/self/fd/2").ok()?;
            let file = std::fs::metadata(&path).ok()?;
            Some(fd2.dev() == file.dev() && fd2.ino() == file.ino())
        })();
        LogFile {
            path: same.unwrap_or(false).then_some(path),
        }
    }

    /// Reopens the log file onto stdout and stderr. `Ok(false)` when the
    /// supervisor does not log to a file.
    pub(super) fn reopen(&self) -> std::io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        // O_NOFOLLOW: the state directory is private, but a symlink planted
        // in the log's place is not followed all the same.
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        nix::unistd::dup2_stdout(&file)?;
        nix::unistd::dup2_stderr(&file)?;
        Ok(true)
    }

    /// Reopens on tokio's blocking pool and logs the outcome there.
    pub(super) fn reopen_off_loop(&self) {
        let file = LogFile {
            path: self.path.clone(),
        };
        tokio::task::spawn_blocking(move || match file.reopen() {
            Ok(true) => tracing::info!(
                path = %file.path.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                "SIGHUP: log file reopened (the configuration is not reloaded: `wa-ctl restart` applies a change)"
            ),
            Ok(false) => tracing::info!(
                "SIGHUP: no log file to reopen; the configuration is not reloaded (`wa-ctl restart` applies a change)"
            ),
            Err(e) => tracing::error!(
                "SIGHUP: cannot reopen the log file: {e}; still writing to the old one"
            ),
        });
    }
}
