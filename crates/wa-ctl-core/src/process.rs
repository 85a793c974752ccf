//! The one place that creates processes and signals them.
//!
//! - Workers run in their own process group, die with the supervisor
//!   (`PR_SET_PDEATHSIG`), and inherit exactly one extra descriptor: the
//!   write end of their events pipe. [`Spawner`] starts them in O(1),
//!   whatever the supervisor's memory and descriptor count.
//! - Exited children are found without being reaped ([`next_exited_child`])
//!   so that a worker's process group can be emptied while its zombie pins
//!   the number; then [`reap`].
//! - The background supervisor is a fresh process in its own session, never
//!   a `fork()` of a running tokio runtime.
//!
//! Processes we did not spawn (leftovers of a dead supervisor, strays) are
//! signalled only through pidfds, in [`crate::leftovers`].
//!
//! `clippy.toml` forbids `Command::new` everywhere else.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::protocol::{
    ENV_EVENTS_FD, ENV_FENCING_TOKEN, ENV_PAIR_PHONE, ENV_SESSION_DIR, ENV_SESSION_ID,
};

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

/// A worker program that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum NotFound {
    #[error(
        "worker not found: `{program}` (looked in {looked_in}); install it there or set [worker] command in the config"
    )]
    Missing { program: String, looked_in: String },
    /// The file is there, but this user may not execute it (issue #9: this
    /// was once reported as "not found").
    #[error(
        "worker not executable: {} exists but this user cannot execute it; `chmod +x` it, or set [worker] command in the config",
        path.display()
    )]
    NotExecutable { path: PathBuf },
}

/// What is at a candidate path for a program.
enum Candidate {
    Executable,
    NotExecutable,
    Missing,
}

fn candidate(path: &Path) -> Candidate {
    if !path.is_file() {
        Candidate::Missing
    } else if nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() {
        Candidate::Executable
    } else {
        Candidate::NotExecutable
    }
}

/// Finds the program of a worker command.
///
/// - A path with a `/` is used as is (relative to `base_dir` if relative).
/// - A bare name is looked up beside the running `wa-ctl` binary, then in
///   `PATH`, so that `cargo install` and `target/release` need no PATH setup.
///   A file of that name that is not executable is skipped, as a shell
///   does, and reported if nothing executable is found.
pub fn resolve_program(program: &str, base_dir: Option<&Path>) -> Result<PathBuf, NotFound> {
    if program.contains('/') {
        let path = match base_dir {
            Some(base) if Path::new(program).is_relative() => base.join(program),
            _ => PathBuf::from(program),
        };
        return match candidate(&path) {
            Candidate::Executable => Ok(path),
            Candidate::NotExecutable => Err(NotFound::NotExecutable { path }),
            Candidate::Missing => Err(NotFound::Missing {
                program: program.to_owned(),
                looked_in: path.display().to_string(),
            }),
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
    let mut not_executable = None;
    for dir in exe_dir.iter().chain(&path_dirs) {
        let path = dir.join(program);
        match candidate(&path) {
            Candidate::Executable => return Ok(path),
            Candidate::NotExecutable => {
                not_executable.get_or_insert(path);
            }
            Candidate::Missing => {}
        }
    }
    if let Some(path) = not_executable {
        return Err(NotFound::NotExecutable { path });
    }
    let beside = exe_dir.map_or_else(|| "beside wa-ctl".to_owned(), |d| d.display().to_string());
    Err(NotFound::Missing {
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
    /// Set when the session is owned across hosts (issue #10): becomes
    /// `WA_CTL_FENCING_TOKEN`, the owner key's epoch.
    pub fencing_token: Option<i64>,
    /// The working directory: the config file's directory, so that relative
    /// paths in the command mean what they mean in the config file.
    pub cwd: &'a Path,
}

/// A spawned worker and the read end of its events pipe (non-blocking).
#[derive(Debug)]
pub struct SpawnedWorker {
    pub pid: u32,
    pub events: OwnedFd,
}

/// A worker that could not be spawned, with the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot prepare the spawn: {what}")]
    Prepare {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the worker could not {step}")]
    Child {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The steps the child runs between `clone` and `execve`, by number, for
/// [`SpawnError::Child`].
const CHILD_STEPS: [&str; 6] = [
    "get a descriptor table of its own",
    "keep its events descriptor",
    "join a process group of its own",
    "die with the supervisor (the supervisor exited during the spawn)",
    "enter its working directory",
    "be executed",
];

/// The size of the stack the child runs on until `execve`. It calls a
/// handful of system calls through libc and nothing else.
const CHILD_STACK: usize = 64 * 1024;

/// Spawns workers, in O(1) whatever the supervisor's size.
///
/// A worker is started with `clone(CLONE_VM | CLONE_VFORK | CLONE_FILES)`,
/// the way glibc's `posix_spawn` starts a process, plus the one thing
/// `posix_spawn` cannot do: `PR_SET_PDEATHSIG`. The supervisor's page tables
/// and descriptor table are not copied, so a spawn costs the same with 10 or
/// 10,000 sessions (a `fork` of a 50 MB process costs over a millisecond of
/// CPU, and copying 10,000 descriptors as much again). The child then takes
/// a descriptor table of its own holding only what the worker inherits:
/// `close_range(placeholder + 1, ~0, CLOSE_RANGE_UNSHARE)` copies only the
/// descriptors below that number. The events pipe is therefore always put
/// at the same low number, the *placeholder*, which `/dev/null` holds
/// between spawns so that nothing else can take it.
///
/// Must be used from the thread that lives as long as the supervisor:
/// `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits.
/// The supervisor runs a current-thread runtime on its main thread for this
/// reason.
pub struct Spawner {
    stack: Vec<u8>,
    /// `/dev/null`, open at the placeholder number between spawns.
    placeholder: OwnedFd,
    /// `/dev/null`, to put back at the placeholder after a spawn.
    null: OwnedFd,
    /// The supervisor's environment minus what a worker must not see.
    base_env: Vec<(OsString, OsString)>,
    /// The descriptor limit the supervisor started with, restored in workers:
    /// a raised soft limit breaks programs that use `select(2)`.
    nofile: nix::libc::rlimit,
    supervisor_pid: nix::libc::pid_t,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("placeholder", &self.placeholder)
            .finish_non_exhaustive()
    }
}

impl Spawner {
    /// Sets up spawning: marks every inherited descriptor close-on-exec,
    /// points stdin at `/dev/null` (the supervisor reads nothing; workers
    /// inherit it), and reserves the placeholder. Call early, before the
    /// supervisor opens descriptors it would rather keep low.
    ///
    /// `nofile` is the `RLIMIT_NOFILE` that workers get.
    pub fn new(nofile: nix::libc::rlimit) -> io::Result<Spawner> {
        mark_inherited_cloexec();
        let open_null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .open("/dev/null")
                .map(OwnedFd::from)
        };
        let stdin = open_null()?;
        nix::unistd::dup2_stdin(&stdin)?;
        drop(stdin);
        // The lowest free number: the events pipe goes there at each spawn.
        let placeholder = open_null()?;
        let null = open_null()?;
        let mut remove: Vec<&str> = SCRUBBED_ENV.to_vec();
        remove.extend([
            ENV_SESSION_ID,
            ENV_SESSION_DIR,
            ENV_EVENTS_FD,
            ENV_PAIR_PHONE,
            ENV_FENCING_TOKEN,
        ]);
        let base_env = std::env::vars_os()
            .filter(|(k, _)| !remove.iter().any(|r| k == r))
            .collect();
        Ok(Spawner {
            stack: vec![0; CHILD_STACK],
            placeholder,
            null,
            base_env,
            nofile,
            supervisor_pid: nix::unistd::getpid().as_raw(),
        })
    }

    /// The descriptor number workers find their events pipe at.
    pub fn events_fd(&self) -> RawFd {
        self.placeholder.as_raw_fd()
    }

    /// Spawns a worker in its own process group. The worker is reaped by
    /// the caller (see [`next_exited_child`]); if the child fails before
    /// `execve`, it exits 127 and is reaped the same way, as a child the
    /// caller does not know.
    pub fn spawn(&mut self, spec: &WorkerSpec<'_>) -> Result<SpawnedWorker, SpawnError> {
        let prepare = |what| move |source| SpawnError::Prepare { what, source };
        let cstring = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let program = cstring(spec.program.as_os_str().as_bytes().to_vec())
            .map_err(prepare("encode the program path"))?;
        let mut argv = vec![program.clone()];
        for arg in spec.args {
            argv.push(cstring(arg.clone().into_bytes()).map_err(prepare("encode an argument"))?);
        }
        let cwd = cstring(spec.cwd.as_os_str().as_bytes().to_vec())
            .map_err(prepare("encode the working directory"))?;
        let events_fd = self.events_fd();
        let mut envp = Vec::with_capacity(self.base_env.len() + spec.env.len() + 4);
        let pair = |k: &[u8], v: &[u8]| {
            let mut entry = Vec::with_capacity(k.len() + v.len() + 1);
            entry.extend_from_slice(k);
            entry.push(b'=');
            entry.extend_from_slice(v);
            cstring(entry)
        };
        for (k, v) in &self.base_env {
            if spec.env.contains_key(k.to_str().unwrap_or("\0")) {
                continue;
            }
            envp.push(pair(k.as_bytes(), v.as_bytes()).map_err(prepare("encode the environment"))?);
        }
        let ours = [
            (ENV_SESSION_ID, spec.session_id.as_bytes()),
            (ENV_SESSION_DIR, spec.session_dir.as_os_str().as_bytes()),
        ];
        for (k, v) in spec
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .chain(ours)
        {
            envp.push(pair(k.as_bytes(), v).map_err(prepare("encode the environment"))?);
        }
        envp.push(
            pair(ENV_EVENTS_FD.as_bytes(), events_fd.to_string().as_bytes())
                .map_err(prepare("encode the environment"))?,
        );
        if let Some(phone) = spec.pair_phone {
            envp.push(
                pair(ENV_PAIR_PHONE.as_bytes(), phone.as_bytes())
                    .map_err(prepare("encode the environment"))?,
            );
        }
        if let Some(token) = spec.fencing_token {
            envp.push(
                pair(ENV_FENCING_TOKEN.as_bytes(), token.to_string().as_bytes())
                    .map_err(prepare("encode the environment"))?,
            );
        }
        let argv_ptrs: Vec<*const nix::libc::c_char> = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs: Vec<*const nix::libc::c_char> = envp
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();

        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Prepare {
                what: "create the events pipe",
                source: e.into(),
            })?;
        // The write end takes the placeholder's number (closing the
        // `/dev/null` there); `/dev/null` goes back once the child has its
        // own table.
        nix::unistd::dup3(
            &write_end,
            &mut self.placeholder,
            nix::fcntl::OFlag::O_CLOEXEC,
        )
        .map_err(|e| SpawnError::Prepare {
            what: "move the events pipe into place",
            source: e.into(),
        })?;
        drop(write_end);

        // What the child reports if it fails: step number and errno.
        let failure = AtomicU64::new(0);
        let nofile = self.nofile;
        let supervisor_pid = self.supervisor_pid;
        let child = || -> isize {
            // SAFETY: this runs in the child of a CLONE_VM | CLONE_VFORK
            // clone, on its own stack, while the parent thread is suspended
            // until `execve` or `_exit`. It only reads the prepared data and
            // makes async-signal-safe libc calls: no allocation, no lock, no
            // unwinding. Signal handlers are reset before signals are
            // unblocked, so no handler of the parent runs in the child.
            unsafe {
                child_after_clone(
                    &failure,
                    events_fd,
                    nofile,
                    supervisor_pid,
                    &cwd,
                    &program,
                    &argv_ptrs,
                    &envp_ptrs,
                )
            }
        };

        // Block every signal across the clone: the child must not run a
        // handler of the parent's before it has reset them.
        let mut all = nix::sys::signal::SigSet::all();
        let mut old = nix::sys::signal::SigSet::empty();
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&all),
            Some(&mut old),
        );
        // SAFETY: see `child` above; the stack is ours and unused by anyone
        // else, the callback borrows data that outlives the call, because
        // CLONE_VFORK returns only once the child has exec'd or exited.
        let cloned = unsafe {
            nix::sched::clone(
                Box::new(child),
                &mut self.stack,
                nix::sched::CloneFlags::CLONE_VM
                    | nix::sched::CloneFlags::CLONE_VFORK
                    | nix::sched::CloneFlags::CLONE_FILES,
                Some(nix::libc::SIGCHLD),
            )
        };
        all = old;
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&all),
            None,
        );
        // Put `/dev/null` back at the placeholder; this closes our copy of
        // the write end, so the worker holds the only one.
        let restored = nix::unistd::dup3(
            &self.null,
            &mut self.placeholder,
            nix::fcntl::OFlag::O_CLOEXEC,
        );
        let pid = cloned.map_err(|e| SpawnError::Prepare {
            what: "clone",
            source: e.into(),
        })?;
        if let Err(e) = restored {
            // The placeholder number now holds nothing of ours; refuse to go
            // on rather than hand a worker some other descriptor later.
            return Err(SpawnError::Prepare {
                what: "restore the descriptor placeholder",
                source: e.into(),
            });
        }
        let failed = failure.load(Ordering::Acquire);
        if failed != 0 {
            let step = CHILD_STEPS
                .get((failed >> 32) as usize)
                .copied()
                .unwrap_or("start");
            return Err(SpawnError::Child {
                step,
                source: io::Error::from_raw_os_error(failed as u32 as i32),
            });
        }
        // The supervisor's end never blocks. (The worker's end does: the
        // flag belongs to each open file description, and the two ends are
        // two descriptions.)
        nix::fcntl::fcntl(
            &read_end,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| SpawnError::Prepare {
            what: "make the events pipe non-blocking",
            source: e.into(),
        })?;
        Ok(SpawnedWorker {
            pid: pid.as_raw() as u32,
            events: read_end,
        })
    }
}

/// The child's side of a spawn, from `clone` to `execve`.
///
/// # Safety
/// Must run only as the callback of [`Spawner::spawn`]'s clone: it assumes
/// it shares the parent's memory, that the parent is suspended, and that
/// every pointer array is NUL-terminated.
#[expect(
    clippy::too_many_arguments,
    reason = "the child borrows each prepared piece as is"
)]
unsafe fn child_after_clone(
    failure: &AtomicU64,
    events_fd: RawFd,
    nofile: nix::libc::rlimit,
    supervisor_pid: nix::libc::pid_t,
    cwd: &CString,
    program: &CString,
    argv: &[*const nix::libc::c_char],
    envp: &[*const nix::libc::c_char],
) -> isize {
    use nix::libc;
    let fail = |step: u64| -> isize {
        // SAFETY: errno is the thread's (the parent's, which is suspended).
        let errno = unsafe { *libc::__errno_location() };
        failure.store((step << 32) | errno as u32 as u64, Ordering::Release);
        // SAFETY: _exit is async-signal-safe and runs no destructors.
        unsafe { libc::_exit(127) }
    };
    // SAFETY (the whole block): each call is an async-signal-safe libc
    // wrapper of a system call, given valid pointers or null.
    unsafe {
        // Reset every handled signal (and SIGPIPE, which the Rust runtime
        // ignores) to its default, then unblock everything, as std does.
        let mut query: libc::sigaction = std::mem::zeroed();
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for sig in 1..libc::SIGRTMAX() {
            if libc::sigaction(sig, std::ptr::null(), &mut query) == 0
                && (sig == libc::SIGPIPE
                    || (query.sa_sigaction != libc::SIG_DFL && query.sa_sigaction != libc::SIG_IGN))
            {
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        // A table of our own with descriptors 0..=events_fd only.
        const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;
        if libc::syscall(
            libc::SYS_close_range,
            (events_fd + 1) as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_UNSHARE,
        ) != 0
            && libc::unshare(libc::CLONE_FILES) != 0
        {
            // Before Linux 5.9: a full copy; close-on-exec does the rest.
            return fail(0);
        }
        if libc::fcntl(events_fd, libc::F_SETFD, 0) != 0 {
            return fail(1);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(2);
        }
        libc::setrlimit(libc::RLIMIT_NOFILE, &nofile);
        // The parent may have died before prctl took effect.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
            || libc::getppid() != supervisor_pid
        {
            *libc::__errno_location() = libc::ESRCH;
            return fail(3);
        }
        if libc::chdir(cwd.as_ptr()) != 0 {
            return fail(4);
        }
        libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(5)
    }
}

/// Marks every descriptor above stderr close-on-exec. Descriptors that
/// `wa-ctl` itself inherited without close-on-exec (from a shell, a test
/// harness, a service manager) must not leak into workers.
fn mark_inherited_cloexec() {
    const CLOSE_RANGE_CLOEXEC: nix::libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor
    // flags. Before Linux 5.11 it fails with ENOSYS or EINVAL; every
    // descriptor the supervisor opens itself is close-on-exec anyway.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3 as nix::libc::c_uint,
            nix::libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Marks every descriptor above stderr close-on-exec, except `keep`.
/// Runs between fork and exec of a background supervisor: one system call
/// per range, nothing else.
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
    use std::os::unix::process::CommandExt;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let ready_fd = write_end.as_raw_fd();
    let log_err = log.try_clone()?;
    #[expect(
        clippy::disallowed_methods,
        reason = "this module is the one place that spawns"
    )]
    let mut cmd = std::process::Command::new(exe);
    // `wa-ctl`, whichever binary runs: `ps` and the census know the
    // supervisor as `wa-ctl ... start --foreground`.
    cmd.arg0(SUPERVISOR_ARGV0)
        .args(args)
        .env(READY_FD_ENV, ready_fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
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

/// The file name of the supervisor binary, installed beside `wa-ctl`.
pub const SUPERVISOR_PROGRAM: &str = "wa-ctl-supervisor";

/// The supervisor binary with the HTTP API, webhooks and metrics (issue
/// #11), for a configuration with `[http]` or `[[webhook]]`. A binary of
/// its own so that the one without them carries none of their code: a
/// supervisor's memory is mostly its code (docs/benchmarks.md). Its
/// kernel name is the same 15 bytes, `wa-ctl-supervis`.
pub const SUPERVISOR_API_PROGRAM: &str = "wa-ctl-supervisor-api";

/// The `argv[0]` a supervisor runs with, whichever binary it is.
pub const SUPERVISOR_ARGV0: &str = "wa-ctl";

/// The supervisor binary beside the running one, if it is installed there:
/// the one with the HTTP API when `api` (the configuration has `[http]` or
/// `[[webhook]]`).
pub fn supervisor_program(api: bool) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = if api {
        SUPERVISOR_API_PROGRAM
    } else {
        SUPERVISOR_PROGRAM
    };
    let path = exe.parent()?.join(name);
    matches!(candidate(&path), Candidate::Executable).then_some(path)
}

/// Replaces this process with the supervisor binary, keeping the pid, the
/// environment and the open descriptors (the readiness pipe among them).
/// Returns only if `execve` failed.
pub fn exec_supervisor(program: &Path, args: &[OsString]) -> io::Error {
    use std::os::unix::process::CommandExt;
    #[expect(
        clippy::disallowed_methods,
        reason = "this module is the one place that spawns"
    )]
    std::process::Command::new(program)
        .arg0(SUPERVISOR_ARGV0)
        .args(args)
        .exec()
}

/// Takes the readiness descriptor a background supervisor was given, if any.
///
/// # Safety
/// Must be called at most once, before anything else could own that fd.
pub unsafe fn take_ready_fd() -> Option<OwnedFd> {
    use nix::libc;
    let fd: RawFd = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    // stdio is never ours; anything else must be an open descriptor before
    // it is borrowed or owned.
    // SAFETY: F_GETFD on a raw number reads flags and has no effect, open or not.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // Keep it out of the workers.
    // SAFETY: F_SETFD on a descriptor just checked to be open changes only its flags.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: it is open, and the caller guarantees nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Drops this process's page mappings of its own executable's read-only,
/// never-written segments (code, read-only data, relocation and unwind
/// tables), so that only what runs afterwards is mapped again. Returns how
/// many KiB were unmapped.
///
/// Start-up touches much that a long-running supervisor never runs again
/// (the dynamic loader's relocation tables, configuration parsing, the
/// first scans), and the kernel maps 64 KiB around every page it faults in.
/// `MADV_DONTNEED` on a clean file-backed mapping only removes page table
/// entries: the pages stay in the page cache and the next access maps them
/// back with a minor fault. A mapping holding any anonymous (copy-on-write)
/// page, such as the relocated RELRO segment, is left alone: there it would
/// discard data.
pub fn unmap_startup_pages() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    let mut current: Option<(usize, usize)> = None;
    let mut anonymous = 0usize;
    let mut flush = |range: Option<(usize, usize)>, anonymous: usize| {
        if let (Some((start, end)), 0) = (range, anonymous) {
            // SAFETY: the range is a whole mapping of our executable,
            // read-only and without anonymous pages: its contents come back
            // from the file, unchanged, on the next access.
            let rc = unsafe {
                nix::libc::madvise(
                    start as *mut nix::libc::c_void,
                    end - start,
                    nix::libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                released += (end - start) / 1024;
            }
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        }) {
            flush(current.take(), anonymous);
            anonymous = 0;
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            if Path::new(path) == exe && (perms == "r--p" || perms == "r-xp") {
                current = Some((start, end));
            }
        } else if first == "Anonymous:" {
            anonymous = fields.next().and_then(|v| v.parse().ok()).unwrap_or(1);
        }
    }
    flush(current.take(), anonymous);
    released
}

/// How a child ended, found by [`next_exited_child`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildExit {
    pub pid: u32,
    /// The exit status, or the signal that killed it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// The next child of ours that has exited, without reaping it: the zombie
/// keeps its pid and process group number pinned until [`reap`], so the
/// group can be emptied safely first. `None` when no child has exited.
/// Never blocks.
///
/// The kernel looks at every child to answer: O(children). Prefer
/// [`exited_child`] when the pid is known.
pub fn next_exited_child() -> io::Result<Option<ChildExit>> {
    exited(nix::sys::wait::Id::All)
}

/// Whether the child `pid` has exited, without reaping it, as
/// [`next_exited_child`] but in O(1). Never blocks.
pub fn exited_child(pid: u32) -> io::Result<Option<ChildExit>> {
    exited(nix::sys::wait::Id::Pid(Pid::from_raw(pid as i32)))
}

fn exited(id: nix::sys::wait::Id<'_>) -> io::Result<Option<ChildExit>> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(id, flags) {
        Ok(WaitStatus::Exited(pid, code)) => Ok(Some(ChildExit {
            pid: pid.as_raw() as u32,
            code: Some(code),
            signal: None,
        })),
        Ok(WaitStatus::Signaled(pid, signal, _)) => Ok(Some(ChildExit {
            pid: pid.as_raw() as u32,
            code: None,
            signal: Some(signal as i32),
        })),
        Ok(_) | Err(Errno::ECHILD) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reaps a child that [`next_exited_child`] found. Never blocks.
pub fn reap(pid: u32) -> io::Result<()> {
    match nix::sys::wait::waitpid(
        Pid::from_raw(pid as i32),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    ) {
        Ok(_) | Err(Errno::ECHILD) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every child of this process: the workers, and the orphans it adopted as
/// a child subreaper. Orphans are handed to the first live thread of the
/// subreaper, the main thread, which is also the one that spawns workers.
///
/// The kernel builds this list in time linear in the number of children
/// (about 8 ms for 10,000 here): call it off the event loop, and rarely.
pub fn children() -> io::Result<Vec<u32>> {
    let me = std::process::id();
    let list = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))?;
    Ok(list
        .split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Sends a signal through a pidfd: it reaches the process the pidfd was
/// opened for, or nobody, never a recycled pid. `Ok(false)` if the process
/// has exited.
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> io::Result<bool> {
    // SAFETY: pidfd_send_signal takes a pidfd, a signal number, a null info
    // pointer and zero flags, and touches no memory of ours.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as nix::libc::c_int,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::ESRCH => Ok(false),
        e => Err(e.into()),
    }
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
