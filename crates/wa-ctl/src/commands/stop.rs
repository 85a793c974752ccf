//! `wa-ctl stop [ID] [--all] [--force]`: one session through the running
//! supervisor, or the whole supervisor, then (with `--all`) the strays.
//!
//! A supervisor that does not answer (frozen by SIGSTOP, or stuck) is not
//! waited for: `stop` says so at once, and `stop --force` kills it once it
//! is shown to hold the lock, then ends what it left (issue #9).

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use wa_ctl_core::config::Config;
use wa_ctl_core::control::{self, ControlError, Request};
use wa_ctl_core::lock::{Probe, SupervisorLock};
use wa_ctl_core::{census, supervisor};
// A command line is anyone's text: shown escaped, never raw (issue #9).
use wa_ctl_core::text::escape;

use super::{check_session, out, pid_text, probe, refuse_foreign, session_request, stop_timeout};
use crate::exit;

pub(super) fn stop(
    config: &Config,
    id: Option<String>,
    all: bool,
    force: bool,
) -> anyhow::Result<u8> {
    refuse_foreign(config, "stop", force)?;
    let code = stop_supervisor(config, id, force)?;
    if all {
        end_strays(config)?;
    }
    Ok(code)
}

/// `stop --all`: after the supervisor, the strays.
fn end_strays(config: &Config) -> anyhow::Result<()> {
    let census = census::take_exhaustive(config, &census::Owned::default());
    let ended = census::end_strays(&census.strays, config.supervisor.stop_timeout)?;
    for stray in &ended {
        out(&format!(
            "ended stray process {} ({})\n",
            stray.pid,
            escape(&stray.cmdline)
        ))?;
    }
    for stray in census.strays.iter().filter(|s| !s.same_user) {
        eprintln!(
            "wa-ctl: warning: stray process {} ({}) belongs to another user: not signalled",
            stray.pid,
            escape(&stray.cmdline)
        );
    }
    Ok(())
}

/// How long a stop waits for a supervisor that holds its lock to open its
/// control socket (it does so moments after taking the lock).
const SOCKET_GRACE: Duration = Duration::from_secs(3);

/// Sends `Shutdown`. A supervisor that has just taken its lock may not
/// listen yet: while it holds the lock, wait for its socket rather than
/// signal it.
fn shutdown_request(config: &Config) -> anyhow::Result<Result<control::Response, ControlError>> {
    let runtime_dir = &config.supervisor.runtime_dir;
    let deadline = Instant::now() + SOCKET_GRACE;
    // Watch before the first attempt, so that a socket that appears between
    // a refused connection and the wait still wakes it.
    let watch = RuntimeDirWatch::new(runtime_dir);
    loop {
        let result = control::request(runtime_dir, &Request::Shutdown, stop_timeout(config));
        let waiting = matches!(result, Err(ControlError::Connect { .. }))
            && matches!(probe(config)?, Probe::Running { .. });
        let woken = match &watch {
            Some(watch) if waiting => watch.wait_until(deadline)?,
            _ => false,
        };
        if !woken {
            return Ok(result);
        }
    }
}

/// Changes in `runtime_dir` that can mean the supervisor's state moved on:
/// it binds its socket (`IN_CREATE`, or `IN_MOVED_TO` for a socket bound
/// elsewhere and renamed), sets the socket's mode once it listens
/// (`IN_ATTRIB`; a connection between bind and listen is refused), writes
/// its status file, or dies and so closes its lock file (`IN_CLOSE_WRITE`).
/// Each wake-up is only a cue to try again.
struct RuntimeDirWatch(Inotify);

impl RuntimeDirWatch {
    /// `None` when the directory cannot be watched (it is gone, or inotify
    /// is out of instances): the caller then does not wait, and treats a
    /// supervisor without a socket as stuck.
    fn new(runtime_dir: &Path) -> Option<Self> {
        let events = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CLOSE_WRITE;
        let watch = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .and_then(|inotify| inotify.add_watch(runtime_dir, events).map(|_| inotify));
        match watch {
            Ok(inotify) => Some(RuntimeDirWatch(inotify)),
            Err(e) => {
                tracing::debug!("cannot watch {}: {e}", runtime_dir.display());
                None
            }
        }
    }

    /// Waits for the next change, up to `deadline`. Returns whether one came.
    fn wait_until(&self, deadline: Instant) -> anyhow::Result<bool> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(false);
        }
        let timeout = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => Ok(false),
            Ok(_) => {
                // Drain the queue, so that the next wait sleeps until a new change.
                match self.0.read_events() {
                    Ok(_) | Err(Errno::EAGAIN) => Ok(true),
                    Err(e) => Err(e).context("reading inotify events"),
                }
            }
            Err(Errno::EINTR) => Ok(true),
            Err(e) => Err(e).context("waiting for the control socket"),
        }
    }
}

/// How long a supervisor may take to answer a `ping` before it counts as
/// not answering. A healthy loop answers in milliseconds.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the supervisor answers: `Some(false)` when it accepted the
/// connection but said nothing in time; `None` when that cannot be told
/// (its socket is not there yet, as in its first moments).
fn answers(config: &Config) -> Option<bool> {
    match control::request(&config.supervisor.runtime_dir, &Request::Ping, PING_TIMEOUT) {
        Ok(_) => Some(true),
        Err(ControlError::Timeout(_)) => Some(false),
        Err(_) => None,
    }
}

/// `stop --force` of a supervisor that does not answer: SIGKILL, once it is
/// shown to hold the lock (so that a recycled pid is never signalled), then
/// the leftover path ends its workers and what they left.
fn kill_frozen(config: &Config, pid: Option<u32>) -> anyhow::Result<u8> {
    let runtime_dir = &config.supervisor.runtime_dir;
    let Some(pid) = pid else {
        bail!(
            "the supervisor does not answer, and {} names no pid: nothing to kill",
            runtime_dir.join(wa_ctl_core::lock::LOCK_FILE).display()
        );
    };
    if !wa_ctl_core::lock::holds_lock(pid, runtime_dir)
        .with_context(|| format!("checking that pid {pid} holds the supervisor lock"))?
    {
        bail!(
            "pid {pid} does not hold the supervisor lock of {}: not killing it",
            runtime_dir.display()
        );
    }
    tracing::warn!("the supervisor (pid {pid}) does not answer: sending SIGKILL");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("killing pid {pid}"))?;
    if !SupervisorLock::wait_released(runtime_dir, stop_timeout(config))? {
        bail!("the supervisor (pid {pid}) still holds its lock after SIGKILL");
    }
    for leftover in supervisor::end_orphans(config)? {
        out(&format!(
            "ended leftover process {} ({})\n",
            leftover.pid, leftover.cmdline
        ))?;
    }
    out(&format!("killed (pid {pid}): it did not answer\n"))?;
    Ok(exit::SUCCESS)
}

fn stop_supervisor(config: &Config, id: Option<String>, force: bool) -> anyhow::Result<u8> {
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
                    leftover.pid,
                    escape(&leftover.cmdline)
                ))?;
            }
            out("not running\n")?;
            return Ok(exit::SUCCESS);
        }
        Probe::Running { pid } => pid,
    };
    if answers(config) == Some(false) {
        if force && id.is_none() {
            return kill_frozen(config, pid);
        }
        bail!(
            "the supervisor (pid {p}) does not answer within {}s: it may be stopped (SIGSTOP; `kill -CONT {p}` resumes it) or stuck. \
             `wa-ctl stop --force` kills it and ends its workers",
            PING_TIMEOUT.as_secs(),
            p = pid_text(pid),
        );
    }
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
            leftover.pid,
            escape(&leftover.cmdline)
        ))?;
    }
    out(&format!("stopped (pid {})\n", pid_text(pid)))?;
    Ok(exit::SUCCESS)
}
