//! Running the supervisor in this process, and what the two binaries share
//! to do it: `wa-ctl start --foreground` (when `wa-ctl-supervisor` is not
//! installed beside it) and `wa-ctl-supervisor` itself.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use wa_ctl_core::config::Config;
use wa_ctl_core::control::{self, Request};
use wa_ctl_core::{process, supervisor};

use crate::exit;

/// How long `wa-ctl start` waits for a running supervisor to start a session.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes to stdout, treating a closed pipe (`wa-ctl status | head`) as done.
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

/// Sends a per-session request and prints the answer.
pub fn session_request(config: &Config, request: Request, timeout: Duration) -> anyhow::Result<u8> {
    let response = control::request(&config.supervisor.runtime_dir, &request, timeout)?;
    if response.ok {
        out(&format!("{}\n", response.message))?;
        Ok(exit::SUCCESS)
    } else {
        bail!("{}", response.message)
    }
}

/// A supervisor runs already: say so, or start the one session asked for.
pub fn already_running(
    config: &Config,
    pid: Option<u32>,
    id: Option<String>,
) -> anyhow::Result<u8> {
    match id {
        Some(id) => session_request(config, Request::Start { session: id }, START_TIMEOUT),
        None => {
            out(&format!("already running (pid {})\n", pid_text(pid)))?;
            Ok(exit::SUCCESS)
        }
    }
}

/// Runs the supervisor here until it is stopped. `id`, if any, has been
/// checked against the configuration.
pub fn run(config: &Config, id: Option<String>) -> anyhow::Result<u8> {
    let only = match &id {
        Some(id) => Some(vec![id.parse()?]),
        None => None,
    };
    // SAFETY: called once, at start-up, before anything else owns descriptors.
    let ready = unsafe { process::take_ready_fd() };
    // The lock decides, not a probe: a probe could be stale by the time we
    // act on it. A failure is reported on `ready` with every cause.
    match supervisor::run(config.clone(), supervisor::Options { only, ready })? {
        supervisor::Outcome::Stopped => Ok(exit::SUCCESS),
        supervisor::Outcome::AlreadyRunning(pid) => already_running(config, pid, id),
    }
}
