//! Leftovers: processes that outlived the supervisor that spawned them.
//!
//! A supervisor killed with SIGKILL takes its workers with it
//! (`PR_SET_PDEATHSIG`), but not what they forked. Those processes carry
//! their session's `WA_CTL_SESSION_DIR` in their environment, which is how
//! [`find_leftovers`] finds them, and [`end_leftovers`] ends them before a
//! new worker takes the session.
//!
//! The search is exhaustive on purpose: it reads the environment of every
//! process of this user, because a leftover it missed would hold the
//! session's WhatsApp connection against the new worker (440 loops). It
//! costs a few milliseconds and runs only when a supervisor starts and when
//! `wa-ctl stop` finds none running. Processes of other users are skipped
//! from the owner of their `/proc/<pid>` directory, without an attempt to
//! open their environment (which we could not read, nor signal them).
//!
//! Signals go through pidfds only, opened before anything is sent and
//! checked against the process's start time, so a pid that was recycled
//! since the search is never signalled.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::lifecycle::deadline_after;
use crate::process::pidfd_open;
use crate::protocol::ENV_SESSION_DIR;

/// A process that a previous supervisor left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub pid: u32,
    pub cmdline: String,
    /// When it started, in clock ticks after boot (`stat` field 22): with
    /// the pid, what tells this process from a later one that reuses the pid.
    pub start_time: u64,
}

/// The command line of a process for messages: its arguments joined by
/// spaces, or its kernel name in brackets when the arguments are not
/// readable as UTF-8 (or it has none, as a zombie).
fn display_cmdline(process: &procfs::process::Process, comm: &str) -> String {
    match process.cmdline() {
        Ok(argv) if !argv.is_empty() => argv.join(" "),
        _ => format!("[{comm}]"),
    }
}

/// Finds this user's processes whose `WA_CTL_SESSION_DIR` lies under
/// `under` (a session directory, or the `sessions/` folder for all of
/// them): workers, and anything they forked, that a supervisor killed with
/// SIGKILL left behind. Returns each with its session directory.
pub fn find_leftovers(under: &Path) -> Vec<(PathBuf, Leftover)> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let me = std::process::id();
    let uid = nix::unistd::geteuid().as_raw();
    let mut found = Vec::new();
    for process in processes.flatten() {
        // The owner of /proc/<pid> is the process's effective uid (root for
        // a process that made itself non-dumpable, whose environment only
        // root could read anyway): one fstat, no open of the environment.
        if process.pid as u32 == me || process.uid().ok() != Some(uid) {
            continue;
        }
        let Ok(mut environ) = process.environ() else {
            continue;
        };
        let Some(dir) = environ.remove(std::ffi::OsStr::new(ENV_SESSION_DIR)) else {
            continue;
        };
        let dir = PathBuf::from(dir);
        if !dir.starts_with(under) {
            continue;
        }
        // Read through the same /proc/<pid> descriptor: if the process is
        // gone by now, these fail rather than describe another one.
        let Ok(stat) = process.stat() else {
            continue;
        };
        found.push((
            dir,
            Leftover {
                pid: process.pid as u32,
                cmdline: display_cmdline(&process, &stat.comm),
                start_time: stat.starttime,
            },
        ));
    }
    found
}

/// The `WA_CTL_SESSION_DIR` in a process's environment, if readable.
pub fn session_dir_of(pid: u32) -> Option<PathBuf> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let mut environ = process.environ().ok()?;
    environ
        .remove(std::ffi::OsStr::new(ENV_SESSION_DIR))
        .map(PathBuf::from)
}

/// Ends leftovers: SIGTERM, up to `grace` for all of them to exit, SIGKILL
/// to those still there, and up to `kill_timeout` for those. Fails with
/// [`io::ErrorKind::TimedOut`], naming the pids, if any outlives that.
///
/// Blocking: call it from a thread that may wait, never from the event loop.
pub fn end_leftovers(
    leftovers: &[Leftover],
    grace: Duration,
    kill_timeout: Duration,
) -> io::Result<()> {
    let mut pending = Vec::new();
    for leftover in leftovers {
        let Some(pidfd) = open_pidfd(leftover)? else {
            continue;
        };
        if send_signal(&pidfd, Signal::SIGTERM)? {
            pending.push((leftover.pid, pidfd));
        }
    }
    // `grace` is a configured duration: never a panic on overflow.
    wait_exited(&mut pending, deadline_after(Instant::now(), grace))?;
    let mut killed = Vec::new();
    for (pid, pidfd) in pending {
        if send_signal(&pidfd, Signal::SIGKILL)? {
            killed.push((pid, pidfd));
        }
    }
    wait_exited(&mut killed, deadline_after(Instant::now(), kill_timeout))?;
    if killed.is_empty() {
        return Ok(());
    }
    let pids: Vec<String> = killed.iter().map(|(pid, _)| pid.to_string()).collect();
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "process {} did not exit within {}s of SIGKILL",
            pids.join(", "),
            kill_timeout.as_secs_f64()
        ),
    ))
}

/// A pidfd for `leftover`, or `None` if it is gone. The pidfd is opened
/// first and the start time read after: if the pid names a later process
/// by then, the start times differ, and that process is left alone.
fn open_pidfd(leftover: &Leftover) -> io::Result<Option<OwnedFd>> {
    let pidfd = match pidfd_open(leftover.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::ESRCH as i32) => return Ok(None),
        Err(e) => return Err(e),
    };
    let same = procfs::process::Process::new(leftover.pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|stat| stat.starttime == leftover.start_time);
    Ok(same.then_some(pidfd))
}

/// Sends `signal` through a pidfd. `Ok(false)` if the process has exited.
fn send_signal(pidfd: &OwnedFd, signal: Signal) -> io::Result<bool> {
    // SAFETY: pidfd_send_signal(2) takes a pidfd we own and keep open for
    // the call, a valid signal number, a null siginfo (the kernel fills in
    // one as for kill(2)) and flags 0; it touches no memory of ours.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as nix::libc::c_int,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0 as nix::libc::c_uint,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::ESRCH => Ok(false),
        errno => Err(errno.into()),
    }
}

/// Waits until every process in `pending` has exited or `deadline` has
/// passed; removes those that exited.
fn wait_exited(pending: &mut Vec<(u32, OwnedFd)>, deadline: Instant) -> io::Result<()> {
    while !pending.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
        // A pidfd is readable once its process has exited.
        let mut fds: Vec<PollFd<'_>> = pending
            .iter()
            .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let exited: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let mut index = 0;
        pending.retain(|_| {
            index += 1;
            !exited[index - 1]
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sleep` child; with `ignore_term`, one that only SIGKILL ends.
    /// Returns once the child is ready (its trap, if any, is installed).
    fn spawn_sleeper(ignore_term: bool) -> std::process::Child {
        use std::io::BufRead;
        // An ignored signal stays ignored across exec.
        let script = if ignore_term {
            "trap '' TERM; echo ready; exec sleep 30"
        } else {
            "echo ready; exec sleep 30"
        };
        #[expect(clippy::disallowed_methods, reason = "a test child, not a worker")]
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        child
    }

    fn leftover_of(child: &std::process::Child) -> Leftover {
        let stat = procfs::process::Process::new(child.id() as i32)
            .unwrap()
            .stat()
            .unwrap();
        Leftover {
            pid: child.id(),
            cmdline: String::new(),
            start_time: stat.starttime,
        }
    }

    #[test]
    fn sigterm_ends_a_cooperative_process_within_the_grace() {
        let mut child = spawn_sleeper(false);
        let leftover = leftover_of(&child);
        let started = Instant::now();
        end_leftovers(&[leftover], Duration::from_secs(10), Duration::from_secs(5)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(nix::libc::SIGTERM)
        );
    }

    #[test]
    fn sigkill_after_the_grace() {
        let mut child = spawn_sleeper(true);
        let leftover = leftover_of(&child);
        end_leftovers(
            &[leftover],
            Duration::from_millis(200),
            Duration::from_secs(5),
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(nix::libc::SIGKILL)
        );
    }

    #[test]
    fn a_recycled_pid_is_not_signalled() {
        let mut child = spawn_sleeper(false);
        let mut leftover = leftover_of(&child);
        // The same pid, but a start time that is not this process's.
        leftover.start_time += 1;
        end_leftovers(&[leftover], Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        assert_eq!(child.try_wait().unwrap(), None, "the process was signalled");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_process_that_is_gone_is_no_error() {
        let mut child = spawn_sleeper(false);
        let leftover = leftover_of(&child);
        child.kill().unwrap();
        child.wait().unwrap();
        end_leftovers(&[leftover], Duration::from_secs(1), Duration::from_secs(1)).unwrap();
    }
}
