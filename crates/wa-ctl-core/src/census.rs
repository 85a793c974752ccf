//! The process census: what `ps aux | grep | wc -l` was for, done right.
//!
//! From one read of the process table (sysinfo) it counts the supervisors of
//! this configuration, the workers they own, and the **strays**: processes
//! that run a configured worker command (or carry one of our session
//! directories in their environment) but that no supervisor owns, such as a
//! `node index.js` started by hand. Strays cause 440 conflict loops.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::protocol::ENV_SESSION_DIR;

/// One process, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub cmdline: String,
    /// Whether it runs as this user (only those may be signalled).
    #[serde(skip)]
    pub same_user: bool,
}

/// The counts `wa-ctl status --json` reports under `"processes"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    pub supervisors: usize,
    pub workers: usize,
    pub strays: Vec<ProcessInfo>,
}

/// What the census needs to know about the running supervisor.
#[derive(Debug, Clone, Default)]
pub struct Owned {
    /// The supervisor's pid, from its lock.
    pub supervisor: Option<u32>,
    /// The pids (and process groups) of the workers it reports.
    pub workers: Vec<u32>,
}

/// Whether `argv` runs `command`, exactly: the same arguments, and the same
/// program by path or by name. A process that does not match exactly is
/// never called a stray, so it is never signalled.
pub fn matches_command(argv: &[String], command: &[String]) -> bool {
    if argv.len() != command.len() || argv.is_empty() {
        return false;
    }
    let name = |p: &str| Path::new(p).file_name().map(|n| n.to_os_string());
    let program_ok =
        argv[0] == command[0] || (name(&argv[0]).is_some() && name(&argv[0]) == name(&command[0]));
    program_ok && argv[1..] == command[1..]
}

/// The value of `--config`/`-c` in a wa-ctl command line, if any.
fn config_arg(argv: &[String]) -> Option<&str> {
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "--config" || arg == "-c" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = arg.strip_prefix("--config=") {
            return Some(v);
        }
    }
    None
}

fn is_supervisor(argv: &[String]) -> bool {
    argv.first()
        .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "wa-ctl"))
        && argv.iter().any(|a| a == "--foreground")
}

/// Counts the processes of this configuration.
pub fn take(config: &Config, owned: &Owned) -> Census {
    let system = crate::process::process_table();
    let me = std::process::id();
    let uid = nix::unistd::geteuid().as_raw();
    let config_path: Option<PathBuf> = config
        .source
        .path()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let sessions_root = config.supervisor.state_dir.join("sessions");
    let mut marker = format!("{ENV_SESSION_DIR}=").into_bytes();
    marker.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(
        sessions_root.as_os_str(),
    ));
    marker.push(b'/');
    let argv_of = |p: &sysinfo::Process| -> Vec<String> {
        p.cmd()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    // Whether some ancestor is a wa-ctl supervisor (this one or another
    // configuration's): its workers and their children are not strays.
    let supervised = |p: &sysinfo::Process| {
        let mut parent = p.parent();
        for _ in 0..64 {
            let Some(ppid) = parent else { return false };
            let Some(pp) = system.process(ppid) else {
                return false;
            };
            if Some(ppid.as_u32()) == owned.supervisor || is_supervisor(&argv_of(pp)) {
                return true;
            }
            parent = pp.parent();
        }
        false
    };

    let mut census = Census::default();
    for p in system.processes().values() {
        let pid = p.pid().as_u32();
        if p.thread_kind().is_some() || pid == me {
            continue;
        }
        let argv = argv_of(p);
        if argv.is_empty() {
            continue;
        }
        if is_supervisor(&argv) || Some(pid) == owned.supervisor {
            let theirs = config_arg(&argv)
                .map(|c| std::path::absolute(c).unwrap_or_else(|_| PathBuf::from(c)));
            // The lock holder, and any other supervisor started with this
            // configuration by this user (it cannot hold the lock, but it is
            // one more process all the same).
            let same_user = p.user_id().is_some_and(|u| **u == uid);
            if Some(pid) == owned.supervisor || (same_user && theirs == config_path) {
                census.supervisors += 1;
            }
            continue;
        }
        if owned.workers.contains(&pid) {
            census.workers += 1;
            continue;
        }
        let runs_worker_command = config
            .sessions
            .iter()
            .any(|s| matches_command(&argv, &s.command));
        let has_our_session_dir = p
            .environ()
            .iter()
            .any(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.as_os_str()).starts_with(&marker));
        if (runs_worker_command || has_our_session_dir) && !supervised(p) {
            let same_user = p.user_id().is_some_and(|u| **u == uid);
            census.strays.push(ProcessInfo {
                pid,
                cmdline: argv.join(" "),
                same_user,
            });
        }
    }
    census.strays.sort_by_key(|s| s.pid);
    census
}

/// Ends strays of this user: SIGTERM, up to `grace` for them to exit, then
/// SIGKILL. Returns those it signalled. Processes of other users are left
/// alone (and could not be signalled anyway).
pub fn end_strays(strays: &[ProcessInfo], grace: Duration) -> std::io::Result<Vec<ProcessInfo>> {
    let mine: Vec<&ProcessInfo> = strays.iter().filter(|s| s.same_user).collect();
    let mut pidfds = Vec::new();
    for stray in &mine {
        // The pidfd pins the process: the wait below cannot mistake a
        // recycled pid for it.
        let fd = crate::process::pidfd_open(stray.pid);
        match kill(Pid::from_raw(stray.pid as i32), Signal::SIGTERM) {
            Ok(()) => {}
            Err(Errno::ESRCH) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Ok(fd) = fd {
            pidfds.push((stray.pid, fd));
        }
    }
    let deadline = Instant::now() + grace;
    for (pid, fd) in &pidfds {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout =
            nix::poll::PollTimeout::try_from(remaining).unwrap_or(nix::poll::PollTimeout::MAX);
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(fd),
            nix::poll::PollFlags::POLLIN,
        )];
        if matches!(nix::poll::poll(&mut fds, timeout), Ok(0)) {
            // Still there after the grace: the pidfd guarantees it is the
            // same process.
            // SAFETY: pidfd_send_signal takes a pidfd, a signal number and
            // null info and flags.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_pidfd_send_signal,
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    nix::libc::SIGKILL,
                    std::ptr::null::<nix::libc::siginfo_t>(),
                    0,
                );
            }
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(fd),
                nix::poll::PollFlags::POLLIN,
            )];
            if matches!(
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)),
                Ok(0)
            ) {
                tracing::warn!(pid, "stray did not exit after SIGKILL");
            }
        }
    }
    Ok(mine.into_iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_command_match() {
        let cmd = v(&["node", "index.js"]);
        assert!(matches_command(&v(&["node", "index.js"]), &cmd));
        assert!(matches_command(&v(&["/usr/bin/node", "index.js"]), &cmd));
        assert!(!matches_command(&v(&["node", "index.js", "--x"]), &cmd));
        assert!(!matches_command(&v(&["node", "other.js"]), &cmd));
        assert!(!matches_command(&v(&["nodejs", "index.js"]), &cmd));
        assert!(!matches_command(&v(&["vim", "index.js"]), &cmd));
        assert!(!matches_command(&[], &cmd));
        let abs = v(&["/opt/wa/wa-worker"]);
        assert!(matches_command(&v(&["/opt/wa/wa-worker"]), &abs));
        assert!(matches_command(&v(&["wa-worker"]), &abs));
    }

    #[test]
    fn config_argument() {
        assert_eq!(
            config_arg(&v(&[
                "wa-ctl",
                "--config",
                "/x.toml",
                "start",
                "--foreground"
            ])),
            Some("/x.toml")
        );
        assert_eq!(config_arg(&v(&["wa-ctl", "-c", "y", "start"])), Some("y"));
        assert_eq!(
            config_arg(&v(&["wa-ctl", "--config=/z", "start"])),
            Some("/z")
        );
        assert_eq!(config_arg(&v(&["wa-ctl", "start"])), None);
    }
}
