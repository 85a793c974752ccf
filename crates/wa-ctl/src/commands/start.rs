//! `wa-ctl start [ID] [--foreground]`: runs the supervisor in this process,
//! or starts it in the background and waits for its one-line report.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context as _, bail};
use wa_ctl_core::config::Config;
use wa_ctl_core::control::Request;
use wa_ctl_core::fsutil::ensure_private_dir;
use wa_ctl_core::lock::Probe;
use wa_ctl_core::{process, supervisor};

use super::{START_TIMEOUT, check_session, check_workers, out, pid_text, probe, session_request};
use crate::exit;

pub(super) fn start(config: &Config, id: Option<String>, foreground: bool) -> anyhow::Result<u8> {
    if let Some(id) = &id {
        check_session(config, id)?;
    }
    check_workers(config, id.as_deref())?;

    let only = id
        .as_ref()
        .map(|id| vec![id.parse().expect("checked against the configuration")]);
    if foreground {
        // SAFETY: called once, at start-up, before anything else owns descriptors.
        let ready = unsafe { process::take_ready_fd() };
        // The lock decides, not a probe: a probe could be stale by the time
        // we act on it. A failure is reported on `ready` with every cause.
        let outcome = supervisor::run(config.clone(), supervisor::Options { only, ready })?;
        return match outcome {
            supervisor::Outcome::Stopped => Ok(exit::SUCCESS),
            supervisor::Outcome::AlreadyRunning(pid) => already_running(config, pid, id),
        };
    }
    if let Probe::Running { pid } = probe(config)? {
        return already_running(config, pid, id);
    }
    start_background(config, id)
}

/// How long a background supervisor may take to report ready: it does so
/// once every session has a worker (or failed to get one), which takes the
/// grace of any leftover it must end first, and longer with many sessions.
fn ready_timeout(config: &Config) -> std::time::Duration {
    START_TIMEOUT
        + config.supervisor.stop_timeout
        + std::time::Duration::from_millis(5) * config.sessions.len() as u32
}

/// A supervisor runs already: say so, or start the one session asked for.
fn already_running(config: &Config, pid: Option<u32>, id: Option<String>) -> anyhow::Result<u8> {
    match id {
        Some(id) => session_request(config, Request::Start { session: id }, START_TIMEOUT),
        None => {
            out(&format!("already running (pid {})\n", pid_text(pid)))?;
            Ok(exit::SUCCESS)
        }
    }
}

/// Starts a fresh `wa-ctl start --foreground` in the background and waits
/// for its one-line report.
pub(super) fn start_background(config: &Config, id: Option<String>) -> anyhow::Result<u8> {
    ensure_private_dir(&config.supervisor.runtime_dir)?;
    ensure_private_dir(&config.supervisor.state_dir)?;
    let log_path = config.log_path();
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut args: Vec<OsString> = Vec::new();
    if let Some(path) = config.source.path() {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        args.extend([OsString::from("--config"), path.into_os_string()]);
    }
    args.extend(["start", "--foreground"].map(OsString::from));
    if let Some(id) = &id {
        args.push(OsString::from(id));
    }
    let exe = std::env::current_exe().context("finding the wa-ctl binary")?;
    let (mut child, ready) = process::spawn_background_supervisor(&exe, &args, log)
        .with_context(|| format!("starting {} in the background", exe.display()))?;

    // One line, then the pipe closes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(File::from(ready)).read_line(&mut line);
        let _ = tx.send(line);
    });
    let timeout = ready_timeout(config);
    let line = rx.recv_timeout(timeout).unwrap_or_default();
    let line = line.trim_end();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "ready" => {
            out(&format!("started (pid {rest})\n"))?;
            Ok(exit::SUCCESS)
        }
        "running" => already_running(config, rest.parse().ok(), id),
        "error" => bail!("{rest} (log: {})", log_path.display()),
        _ => {
            let how = match child.try_wait() {
                Ok(Some(status)) => format!("the supervisor exited during start-up ({status})"),
                _ => format!(
                    "the supervisor did not report ready within {}s",
                    timeout.as_secs()
                ),
            };
            bail!("{how}; see {}", log_path.display())
        }
    }
}
