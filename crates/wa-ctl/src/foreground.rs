//! Running the supervisor in this process, and what the two binaries share
//! to do it: `wa-ctl start --foreground` (when `wa-ctl-supervisor` is not
//! installed beside it) and `wa-ctl-supervisor` itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use wa_ctl_core::config::Config;
use wa_ctl_core::control::{self, Request};
use wa_ctl_core::lock::{Owner, SupervisorLock};
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
    refuse_foreign(config, "start", false)?;
    match id {
        Some(id) => session_request(config, Request::Start { session: id }, START_TIMEOUT),
        None => {
            out(&format!("already running (pid {})\n", pid_text(pid)))?;
            if let Ok(Some((_, Running::Changed))) = running_config(config) {
                out(&format!(
                    "note: {} changed since the supervisor read it: `wa-ctl restart` applies the change\n",
                    config.source
                ))?;
            }
            Ok(exit::SUCCESS)
        }
    }
}

/// How the running supervisor's configuration compares with this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Running {
    /// The same file (or both the embedded defaults), with the same text.
    Same,
    /// The same file, edited since the supervisor read it.
    Changed,
    /// Another file: a second configuration shares this `runtime_dir`.
    Foreign(Option<PathBuf>),
    /// The lock file does not say (a supervisor from before issue #9).
    Unknown,
}

/// Compares the running supervisor's configuration with `config`; `None`
/// when no supervisor runs.
pub fn running_config(config: &Config) -> anyhow::Result<Option<(Owner, Running)>> {
    let Some(owner) = SupervisorLock::owner(&config.supervisor.runtime_dir)? else {
        return Ok(None);
    };
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let ours = config.source.path().map(canonical);
    let theirs = owner.config.as_deref().map(canonical);
    let running = match owner.digest {
        None => Running::Unknown,
        Some(_) if ours != theirs => Running::Foreign(owner.config.clone()),
        Some(digest) if digest == config.digest => Running::Same,
        Some(_) => Running::Changed,
    };
    Ok(Some((owner, running)))
}

/// Refuses to act on a supervisor of another configuration (issue #9: a
/// second configuration sharing a `runtime_dir` once stopped the first's
/// supervisor and workers), unless `force`.
pub fn refuse_foreign(config: &Config, what: &str, force: bool) -> anyhow::Result<()> {
    if let Some((owner, Running::Foreign(path))) = running_config(config)?
        && !force
    {
        anyhow::bail!(
            "the supervisor on {} (pid {}) runs another configuration, {}, not {}: refusing to {what} it. \
             Give each configuration its own runtime_dir{}",
            config.supervisor.runtime_dir.display(),
            pid_text(owner.pid),
            path.map_or_else(
                || "the embedded defaults".to_owned(),
                |p| p.display().to_string()
            ),
            config.source,
            if matches!(what, "stop" | "restart") {
                ", or pass --force to act on it anyway"
            } else {
                ""
            },
        );
    }
    Ok(())
}

/// What makes the HTTP API, webhooks and metrics for a configuration
/// (issue #11): `wa_ctl_http::Http::boxed` where they are linked in.
pub type SurfaceFactory = fn(&Config) -> Option<Box<dyn supervisor::Surface>>;

/// Runs the supervisor here until it is stopped. `id`, if any, has been
/// checked against the configuration.
pub fn run(config: &Config, id: Option<String>, surface: SurfaceFactory) -> anyhow::Result<u8> {
    let only = match &id {
        Some(id) => Some(vec![id.parse()?]),
        None => None,
    };
    // SAFETY: called once, at start-up, before anything else owns descriptors.
    let ready = unsafe { process::take_ready_fd() };
    // The lock decides, not a probe: a probe could be stale by the time we
    // act on it. A failure is reported on `ready` with every cause.
    // The HTTP API, webhooks and metrics (issue #11), if configured.
    let surface = surface(config);
    let options = supervisor::Options {
        only,
        ready,
        surface,
    };
    let outcome = match supervisor::run(config.clone(), options) {
        // A relation between the unit's WatchdogSec= and [cluster]: a
        // configuration error (exit 2), which Restart= must not retry.
        Err(e @ supervisor::SupervisorError::WatchdogTooLong { .. }) => {
            return Err(crate::exit::UsageError(e.to_string()).into());
        }
        other => other?,
    };
    match outcome {
        supervisor::Outcome::Stopped => Ok(exit::SUCCESS),
        supervisor::Outcome::AlreadyRunning(pid) => already_running(config, pid, id),
    }
}
