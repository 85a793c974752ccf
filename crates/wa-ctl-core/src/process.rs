//! The one place that creates processes and signals them.
//!
//! - Workers run in their own process group, die with the supervisor
//!   (`PR_SET_PDEATHSIG`), and inherit exactly one extra descriptor: the
//!   write end of their events pipe.
//! - The background supervisor is a fresh process in its own session, never
//!   a `fork()` of a running tokio runtime.
//!
//! Processes we did not spawn (leftovers of a dead supervisor, strays) are
//! signalled only through pidfds, in [`crate::leftovers`].
//!
//! `clippy.toml` forbids `Command::new` everywhere else.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::protocol::{ENV_EVENTS_FD, ENV_PAIR_PHONE, ENV_SESSION_DIR, ENV_SESSION_ID};

/// Environment variables of the supervisor that a worker must not see.
const SCRUBBED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_FDS",
    "LISTEN_PID",
    READY_FD_ENV,
];

/// The internal variable that tells a background supervisor where to report
/// readiness. Not a public contract.
pub const READY_FD_ENV: &str = "WA_CTL_READY_FD";

/// A worker program that cannot be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "worker not found: `{program}` (looked in {looked_in}); install it there or set [worker] command in the config"
)]
pub struct NotFound {
    pub program: String,
    pub looked_in: String,
}

fn is_executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() && path.is_file()
}

/// Finds the program of a worker command.
///
/// - A path with a `/` is used as is (relative to `base_dir` if relative).
/// - A bare name is looked up beside the running `wa-ctl` binary, then in
///   `PATH`, so that `cargo install` and `target/release` need no PATH setup.
pub fn resolve_program(program: &str, base_dir: Option<&Path>) -> Result<PathBuf, NotFound> {
    if program.contains('/') {
        let path = match base_dir {
            Some(base) if Path::new(program).is_relative() => base.join(program),
            _ => PathBuf::from(program),
        };
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(NotFound {
                program: program.to_owned(),
                looked_in: path.display().to_string(),
            })
        };
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .filter(|d| d.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    for dir in exe_dir.iter().chain(&path_dirs) {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let beside = exe_dir.map_or_else(|| "beside wa-ctl".to_owned(), |d| d.display().to_string());
    Err(NotFound {
        program: program.to_owned(),
        looked_in: format!("{beside} and $PATH"),
    })
}

/// What a worker is spawned with.
#[derive(Debug)]
pub struct WorkerSpec<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub session_id: &'a str,
    pub session_dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    /// Set for the pair-code flow: becomes `WA_CTL_PAIR_PHONE`.
    pub pair_phone: Option<&'a str>,
    /// The working directory: the config file's directory, so that relative
    /// paths in the command mean what they mean in the config file.
    pub cwd: &'a Path,
}

/// A spawned worker and the read end of its events pipe.
#[derive(Debug)]
pub struct SpawnedWorker {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub events: OwnedFd,
}

/// Spawns a worker in its own process group.
///
/// Must be called from the thread that lives as long as the supervisor:
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits.
/// The supervisor runs a current-thread runtime on its main thread for this
/// reason.
pub fn spawn_worker(spec: &WorkerSpec<'_>) -> io::Result<SpawnedWorker> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let events_fd: RawFd = write_end.as_raw_fd();
    let supervisor_pid = nix::unistd::getpid();

    #[expect(
        clippy::disallowed_methods,
        reason = "this module is the one place that spawns"
    )]
    let mut cmd = tokio::process::Command::new(spec.program);
    cmd.args(spec.args)
        .envs(spec.env)
        .env(ENV_SESSION_ID, spec.session_id)
        .env(ENV_SESSION_DIR, spec.session_dir)
        .env(ENV_EVENTS_FD, events_fd.to_string())
        .stdin(std::process::Stdio::null())
        .current_dir(spec.cwd)
        .process_group(0)
        .kill_on_drop(false);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    match spec.pair_phone {
        Some(phone) => cmd.env(ENV_PAIR_PHONE, phone),
        None => cmd.env_remove(ENV_PAIR_PHONE),
    };
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe system calls (prctl, getppid, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The supervisor may have died before prctl took effect.
            if nix::unistd::getppid() != supervisor_pid {
                return Err(io::Error::other("supervisor exited during spawn"));
            }
            // Let exactly this descriptor survive exec.
            cloexec_all_but(events_fd);
            if nix::libc::fcntl(events_fd, nix::libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(write_end);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("worker exited before its pid was read"))?;
    Ok(SpawnedWorker {
        child,
        pid,
        events: read_end,
    })
}

/// Marks every descriptor above stderr close-on-exec, except `keep`.
/// Descriptors that `wa-ctl` itself inherited without close-on-exec (from a
/// shell, a test harness, a service manager) must not leak into workers.
/// Runs between fork and exec: one system call per range, nothing else.
fn cloexec_all_but(keep: RawFd) {
    const CLOSE_RANGE_CLOEXEC: nix::libc::c_uint = 1 << 2;
    let ranges = [(3, keep - 1), (keep + 1, nix::libc::c_int::MAX)];
    for (first, last) in ranges {
        if first <= last {
            // SAFETY: close_range only changes descriptor flags. On kernels
            // without it (before 5.11) it fails with ENOSYS, and the
            // inherited descriptors stay as they were.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_close_range,
                    first as nix::libc::c_uint,
                    last as nix::libc::c_uint,
                    CLOSE_RANGE_CLOEXEC,
                );
            }
        }
    }
}

/// Sends `signal` to a process group. `Ok(false)` if the group is empty.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<bool> {
    match killpg(Pid::from_raw(pgid as i32), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Starts `wa-ctl` again as a background supervisor: a fresh process in a
/// new session, detached from the terminal, with its output going to `log`.
/// Returns the read end of the pipe on which it reports readiness.
pub fn spawn_background_supervisor(
    exe: &Path,
    args: &[OsString],
    log: std::fs::File,
) -> io::Result<(std::process::Child, OwnedFd)> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let ready_fd = write_end.as_raw_fd();
    let log_err = log.try_clone()?;
    #[expect(
        clippy::disallowed_methods,
        reason = "this module is the one place that spawns"
    )]
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(READY_FD_ENV, ready_fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
    use std::os::unix::process::CommandExt;
    // SAFETY: async-signal-safe calls only (setsid, fcntl), between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            cloexec_all_but(ready_fd);
            if nix::libc::fcntl(ready_fd, nix::libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(write_end);
    Ok((child, read_end))
}

/// Takes the readiness descriptor a background supervisor was given, if any.
///
/// # Safety
/// Must be called at most once, before anything else could own that fd.
pub unsafe fn take_ready_fd() -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    // Reject anything that is not an open descriptor; stdio is never ours.
    if fd < 3
        || nix::fcntl::fcntl(
            // SAFETY: borrowed for this one fcntl(F_GETFD) call, which fails
            // with EBADF rather than misbehave if `fd` is not open.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
    {
        return None;
    }
    // Keep it out of the workers.
    let _ = nix::fcntl::fcntl(
        // SAFETY: `fd` was just seen open, and the caller guarantees nothing
        // else owns it; borrowed for this one call.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // SAFETY: the caller guarantees single ownership of this inherited fd.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Our children that are not in `known`: orphans adopted as subreaper.
pub fn adopted_children(known: &std::collections::HashSet<u32>) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids.retain(|p| !known.contains(p));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILL to a child of ours, then reap it. It is our child, so the pid
/// cannot be reused before the reap.
pub fn kill_and_reap(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    let _ = kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Reaps a child of ours if it has exited; never blocks.
pub fn reap_if_exited(pid: u32) {
    let _ = nix::sys::wait::waitpid(
        Pid::from_raw(pid as i32),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// Opens a pidfd: a descriptor that becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags (0) by value and touches
    // no memory of ours; it returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
