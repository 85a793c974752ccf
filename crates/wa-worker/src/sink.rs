//! Where events go: the pipe named by `WA_CTL_EVENTS_FD`, or stdout when a
//! person runs the worker by hand.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

/// A writer of JSON lines, one `write` call per line so that a line is never
/// interleaved with another (lines stay under PIPE_BUF in practice).
pub struct Sink(Mutex<Box<dyn Write + Send>>);

impl Sink {
    pub fn from_env() -> Result<Sink, String> {
        let Some(value) = std::env::var_os("WA_CTL_EVENTS_FD") else {
            return Ok(Sink(Mutex::new(Box::new(std::io::stdout()))));
        };
        let fd: i32 = value
            .to_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("WA_CTL_EVENTS_FD is not a descriptor number: {value:?}"))?;
        // SAFETY: F_GETFD on a raw number reads flags and has no effect,
        // open or not; no descriptor is borrowed before it is known open.
        if fd < 0 || unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } == -1 {
            return Err(format!("WA_CTL_EVENTS_FD={fd} is not an open descriptor"));
        }
        let owned = if fd <= 2 {
            // stdio stays stdio: write to a duplicate rather than own it.
            // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one.
            let copy = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 3) };
            if copy == -1 {
                return Err(format!(
                    "cannot duplicate WA_CTL_EVENTS_FD={fd}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: a fresh descriptor, ours alone.
            unsafe { OwnedFd::from_raw_fd(copy) }
        } else {
            // SAFETY: open, checked above, and the supervisor handed this
            // descriptor to us alone.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        Ok(Sink(Mutex::new(Box::new(File::from(owned)))))
    }

    /// Writes one event. A broken pipe means the supervisor is gone, and the
    /// worker is about to die with it (PR_SET_PDEATHSIG); nothing to do.
    pub fn send(&self, event: &serde_json::Value) {
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(&line).and_then(|()| out.flush());
    }
}
