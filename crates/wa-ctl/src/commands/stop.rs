//! `wa-ctl stop [ID] [--all]`: one session through the running supervisor,
//! or the whole supervisor, then (with `--all`) the strays.

use std::time::Duration;

use anyhow::bail;
use wa_ctl_core::config::Config;
use wa_ctl_core::control::{self, ControlError, Request};
use wa_ctl_core::lock::{Probe, SupervisorLock};
use wa_ctl_core::{census, supervisor};

use super::{check_session, out, pid_text, probe, session_request, stop_timeout};
use crate::exit;

pub(super) fn stop(config: &Config, id: Option<String>, all: bool) -> anyhow::Result<u8> {
    let code = stop_supervisor(config, id)?;
    if all {
        end_strays(config)?;
    }
    Ok(code)
}

/// `stop --all`: after the supervisor, the strays.
fn end_strays(config: &Config) -> anyhow::Result<()> {
    let census = census::take(config, &census::Owned::default());
    let ended = census::end_strays(&census.strays, config.supervisor.stop_timeout)?;
    for stray in &ended {
        out(&format!(
            "ended stray process {} ({})\n",
            stray.pid, stray.cmdline
        ))?;
    }
    for stray in census.strays.iter().filter(|s| !s.same_user) {
        eprintln!(
            "wa-ctl: warning: stray process {} ({}) belongs to another user: not signalled",
            stray.pid, stray.cmdline
        );
    }
    Ok(())
}

/// How long a stop waits for a supervisor that holds its lock to open its
/// control socket (it does so moments after taking the lock).
const SOCKET_GRACE: Duration = Duration::from_secs(3);

/// Sends `Shutdown`. A supervisor that has just taken its lock may not
/// listen yet: retry the connection for a moment rather than signal it.
fn shutdown_request(config: &Config) -> anyhow::Result<Result<control::Response, ControlError>> {
    let deadline = std::time::Instant::now() + SOCKET_GRACE;
    loop {
        let result = control::request(
            &config.supervisor.runtime_dir,
            &Request::Shutdown,
            stop_timeout(config),
        );
        let retry = matches!(result, Err(ControlError::Connect { .. }))
            && std::time::Instant::now() < deadline
            && matches!(probe(config)?, Probe::Running { .. });
        if !retry {
            return Ok(result);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop_supervisor(config: &Config, id: Option<String>) -> anyhow::Result<u8> {
    if let Some(id) = &id {
        check_session(config, id)?;
    }
    let pid = match probe(config)? {
        Probe::NotRunning => {
            // Nothing runs, but a supervisor killed with SIGKILL may have
            // left workers (or their children) behind: end them.
            let ended = supervisor::end_orphans(config)?;
            for leftover in &ended {
                out(&format!(
                    "ended leftover process {} ({})\n",
                    leftover.pid, leftover.cmdline
                ))?;
            }
            out("not running\n")?;
            return Ok(exit::SUCCESS);
        }
        Probe::Running { pid } => pid,
    };
    if let Some(id) = id {
        return session_request(config, Request::Stop { session: id }, stop_timeout(config));
    }
    let runtime_dir = &config.supervisor.runtime_dir;
    match shutdown_request(config)? {
        Ok(response) if !response.ok => bail!("{}", response.message),
        // No answer, or the connection reset: the supervisor died while we
        // asked. The lock tells when it is gone.
        Ok(_) | Err(ControlError::NoAnswer) => {}
        Err(ControlError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) => {}
        // The lock is held but the socket never appeared: the supervisor is
        // stuck in its first moments. Its pid, written under the lock it
        // holds now, is safe to signal.
        Err(ControlError::Connect { .. }) => {
            if let Probe::Running { pid: Some(pid) } = probe(config)? {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    if !SupervisorLock::wait_released(runtime_dir, stop_timeout(config))? {
        bail!(
            "the supervisor (pid {}) did not exit within {}s",
            pid_text(pid),
            stop_timeout(config).as_secs()
        );
    }
    // A supervisor that was killed rather than stopped may have left
    // processes behind: end them now that the lock is free.
    for leftover in supervisor::end_orphans(config)? {
        out(&format!(
            "ended leftover process {} ({})\n",
            leftover.pid, leftover.cmdline
        ))?;
    }
    out(&format!("stopped (pid {})\n", pid_text(pid)))?;
    Ok(exit::SUCCESS)
}
