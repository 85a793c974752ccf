//! The supervisor: from the lock to exit.
//!
//! [`run`] takes the directories and the supervisor lock, checks that the
//! configuration fits under the descriptor limit, sets up spawning, and
//! runs the event loop on a current-thread tokio runtime until a shutdown.
//! The files of this folder, each with one responsibility:
//!
//! - `event_loop`: the loop, and the only code that changes session state;
//! - `event`: the closed `Event` enum everything reports with;
//! - `signals`: signals turned into values;
//! - `slot`: one session's machine, resources and waiting clients;
//! - `spawn`: preparing a session (lock, leftovers) and quarantine, off the loop;
//! - `spawner`: the thread that starts workers, so the loop never waits for one;
//! - `watcher`: the per-worker task reading its events pipe;
//! - `orphans`: ending what workers detached from their groups;
//! - `ownership`: the agent that talks to etcd for the loop (issue #10);
//! - `control_server`: the control socket's connections;
//! - `status_file`: the coalesced copy of the record in `runtime_dir`;
//! - `surface`: the hook of the HTTP API, webhooks and metrics (issue #11);
//! - `timers`: the sessions' deadlines, ordered.

mod control_server;
mod event;
mod event_loop;
mod holds;
mod log_file;
mod orphans;
mod ownership;
mod signals;
mod slot;
mod spawn;
mod spawner;
mod status_file;
mod surface;
mod timers;
mod watcher;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::control::SOCKET_FILE;
use crate::fsutil::{DirError, ensure_private_dir};
use crate::leftovers::{self, Leftover};
use crate::lock::{LockError, SupervisorLock};
use crate::process::Spawner;
use crate::session_id::SessionId;
use crate::session_lock::{SessionLockError, SessionLocks};
use crate::status::STATUS_FILE;

use event_loop::{EventLoop, Readiness};
pub use surface::{ControlHandle, Surface, SurfaceError};

/// Descriptors the supervisor needs besides one per session: stdio, the
/// locks, the runtime's epoll and wake-up pipes, the listener, the control
/// connections, and what the blocking jobs open.
const BASE_DESCRIPTORS: u64 = 64 + control_server::MAX_CONNECTIONS as u64;

/// The blocking pool's threads: prepare jobs, orphan sweeps, status writes.
/// A leftover that ignores SIGTERM holds a thread for `stop_timeout`.
const BLOCKING_THREADS: usize = 8;

/// What the supervisor was asked to do at start-up.
#[derive(Default)]
pub struct Options {
    /// Start only these sessions (the rest stay `stopped`); all if `None`.
    pub only: Option<Vec<SessionId>>,
    /// Where a background supervisor reports readiness to `wa-ctl start`.
    pub ready: Option<OwnedFd>,
    /// The HTTP API, webhooks and metrics (issue #11), with `[http]` or
    /// `[[webhook]]`.
    pub surface: Option<Box<dyn Surface>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("only", &self.only)
            .field("ready", &self.ready)
            .field("surface", &self.surface.is_some())
            .finish()
    }
}

/// How a supervisor run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and stopped cleanly.
    Stopped,
    /// Another supervisor holds the lock.
    AlreadyRunning(Option<u32>),
}

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    SessionLock(#[from] SessionLockError),
    #[error(
        "{sessions} sessions need about {needed} open files, but the limit is {limit} \
         (RLIMIT_NOFILE, hard): raise it (`ulimit -Hn`, or LimitNOFILE= in the systemd unit) \
         or run fewer sessions per supervisor"
    )]
    TooFewDescriptors {
        sessions: usize,
        needed: u64,
        limit: u64,
    },
    #[error(
        "sessions `{0}` and `{1}` share a lock slot (a hash collision of their ids): rename one"
    )]
    LockSlotClash(String, String),
    #[error(
        "the systemd watchdog (WatchdogSec={watchdog:?}) must be shorter than {limit:?}, the \
         smaller of [cluster] lease_ttl minus [supervisor] stop_timeout and 2/3 of lease_ttl \
         minus 0.5s: a frozen supervisor must be killed before a standby can take its sessions \
         over; lower WatchdogSec= or raise lease_ttl"
    )]
    WatchdogTooLong { watchdog: Duration, limit: Duration },
    #[error("cannot read the descriptor limit")]
    Rlimit(#[source] std::io::Error),
    #[error("cannot set up spawning")]
    Spawner(#[source] std::io::Error),
    #[error("cannot start the event loop")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("cannot listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the HTTP API")]
    Surface(#[source] SurfaceError),
    #[error("cannot end leftovers of session {session}")]
    Leftovers {
        session: String,
        #[source]
        source: std::io::Error,
    },
}

/// The readiness channel of a background supervisor: one line, then closed.
/// The words are read by `wa-ctl start`: `ready PID`, `running PID`, `error MESSAGE`.
struct Ready(Option<File>);

impl Ready {
    fn send(&mut self, line: &str) {
        if let Some(mut f) = self.0.take() {
            // The starter may have gone away; nothing to do about it then.
            let _ = writeln!(f, "{line}");
        }
    }
}

impl Readiness for Ready {
    fn ready(&mut self) {
        self.send(&format!("ready {}", std::process::id()));
    }
}

/// Runs a supervisor for `config` in this process until it is told to stop.
pub fn run(config: Config, options: Options) -> Result<Outcome, SupervisorError> {
    let mut ready = Ready(options.ready.map(File::from));
    let result = match watchdog_fits(&config) {
        Ok(()) => run_inner(config, options.only, options.surface, &mut ready),
        Err(e) => Err(e),
    };
    match &result {
        Ok(Outcome::AlreadyRunning(pid)) => ready.send(&format!(
            "running {}",
            pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
        )),
        Ok(Outcome::Stopped) => ready.send("error supervisor stopped during start-up"),
        Err(e) => ready.send(&format!("error {}", crate::error_chain(e))),
    }
    result
}

/// Under systemd with `[cluster]`, the watchdog fences a frozen supervisor:
/// systemd kills the unit's whole cgroup (workers included) `WatchdogSec`
/// after the last keep-alive, and that must come before a standby can take
/// over. A frozen supervisor's lease can expire as early as two thirds of
/// `lease_ttl` after it froze (its last keepalive went up to `lease_ttl/3`
/// before), so `WatchdogSec` must be under both `lease_ttl - stop_timeout`
/// (the rule) and `2/3 lease_ttl - SAFETY_MARGIN`.
fn watchdog_fits(config: &Config) -> Result<(), SupervisorError> {
    let (Some(cluster), Some(watchdog)) = (
        &config.cluster,
        crate::systemd::Notifier::from_env().watchdog_timeout(),
    ) else {
        return Ok(());
    };
    let limit = watchdog_limit(cluster.lease_ttl, config.supervisor.stop_timeout);
    if watchdog >= limit {
        return Err(SupervisorError::WatchdogTooLong { watchdog, limit });
    }
    Ok(())
}

/// The longest `WatchdogSec` that fences a frozen supervisor in time.
fn watchdog_limit(lease_ttl: Duration, stop_timeout: Duration) -> Duration {
    let by_stop = lease_ttl.saturating_sub(stop_timeout);
    let by_keepalive =
        (lease_ttl.saturating_mul(2) / 3).saturating_sub(crate::config::cluster::SAFETY_MARGIN);
    by_stop.min(by_keepalive)
}

/// Raises the soft descriptor limit to the hard one, or fails if even the
/// hard limit cannot hold the configuration (`extra`: descriptors beyond
/// the base and one per session, e.g. HTTP connections). Returns the limit
/// to give back to workers.
fn raise_descriptor_limit(
    sessions: usize,
    extra: usize,
) -> Result<nix::libc::rlimit, SupervisorError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| SupervisorError::Rlimit(e.into()))?;
    let needed = (sessions + extra) as u64 + BASE_DESCRIPTORS;
    if needed > hard {
        return Err(SupervisorError::TooFewDescriptors {
            sessions,
            needed,
            limit: hard,
        });
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| SupervisorError::Rlimit(e.into()))?;
    }
    Ok(nix::libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    })
}

fn run_inner(
    config: Config,
    only: Option<Vec<SessionId>>,
    surface: Option<Box<dyn Surface>>,
    ready: &mut Ready,
) -> Result<Outcome, SupervisorError> {
    let runtime_dir = config.supervisor.runtime_dir.clone();
    ensure_private_dir(&runtime_dir)?;
    ensure_private_dir(&config.supervisor.state_dir)?;
    ensure_private_dir(&config.supervisor.state_dir.join("sessions"))?;

    let _lock = match SupervisorLock::acquire(&runtime_dir, config.source.path(), config.digest)? {
        Ok(lock) => lock,
        Err(pid) => return Ok(Outcome::AlreadyRunning(pid)),
    };
    if let Some((a, b)) = SessionLocks::offsets_clash(config.sessions.iter().map(|s| &s.id)) {
        return Err(SupervisorError::LockSlotClash(a.to_string(), b.to_string()));
    }
    // The HTTP API's connections (issue #11) come out of the same budget.
    let http_connections = if config.http.is_some() {
        crate::config::http::MAX_CONNECTIONS
    } else {
        0
    };
    let worker_nofile = raise_descriptor_limit(config.sessions.len(), http_connections)?;
    let spawner = Spawner::new(worker_nofile).map_err(SupervisorError::Spawner)?;
    let locks = SessionLocks::open(&config.supervisor.state_dir)?;

    // A worker that detaches from its process group (setsid, double fork)
    // is adopted by the supervisor instead of init, so it can be found and
    // ended with its worker.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper: {e}");
    }

    // The blocking pool's threads would each get a malloc arena of their
    // own; their jobs are short and rare, so one arena serves everyone at
    // a fraction of the resident memory.
    // SAFETY: mallopt only tunes the allocator; called before any thread.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
    // One thread runs the loop and spawns: PR_SET_PDEATHSIG is tied to the
    // thread that spawns. The blocking pool runs the jobs that may wait.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
        .map_err(SupervisorError::Runtime)?;
    let result = runtime.block_on(async {
        let socket_path = runtime_dir.join(SOCKET_FILE);
        // We hold the lock, so a socket file here is a dead supervisor's.
        let _ = std::fs::remove_file(&socket_path);
        let listener = tokio::net::UnixListener::bind(&socket_path).map_err(|source| {
            SupervisorError::Listen {
                path: socket_path.clone(),
                source,
            }
        })?;
        std::fs::set_permissions(
            &socket_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|source| SupervisorError::Listen {
            path: socket_path.clone(),
            source,
        })?;
        let signals = signals::Signals::install().map_err(SupervisorError::Signals)?;
        let mut event_loop =
            EventLoop::new(config, spawner, locks).map_err(SupervisorError::Spawner)?;
        if let Some(surface) = surface {
            event_loop
                .set_surface(surface)
                .map_err(SupervisorError::Surface)?;
        }
        event_loop.run(listener, signals, only, ready).await;
        Ok(())
    });
    // Tidy up while the lock is still held, so no other supervisor's files
    // can be removed by mistake.
    let _ = std::fs::remove_file(runtime_dir.join(SOCKET_FILE));
    let _ = std::fs::remove_file(runtime_dir.join(STATUS_FILE));
    let _ = std::fs::remove_file(crate::fsutil::next_file(&runtime_dir.join(STATUS_FILE)));
    drop(runtime);
    result.map(|()| Outcome::Stopped)
}

/// Ends what a supervisor killed with SIGKILL left behind, for every
/// configured session whose lock can be taken (a session locked by another
/// live supervisor is that supervisor's business). Used by `wa-ctl stop`
/// when no supervisor runs.
/// The hold a supervisor left in a session directory, if any (issue #9):
/// what `status` shows of a held session when no supervisor runs.
pub fn read_hold(session_dir: &Path) -> Option<crate::lifecycle::Hold> {
    holds::read(session_dir)
}

pub fn end_orphans(config: &Config) -> Result<Vec<Leftover>, SupervisorError> {
    let sessions_root = config.supervisor.state_dir.join("sessions");
    if !sessions_root.exists() {
        return Ok(vec![]);
    }
    let mut by_dir: HashMap<PathBuf, Vec<Leftover>> = HashMap::new();
    for (dir, leftover) in leftovers::find_leftovers(&sessions_root) {
        by_dir.entry(dir).or_default().push(leftover);
    }
    if by_dir.is_empty() {
        return Ok(vec![]);
    }
    let locks = SessionLocks::open(&config.supervisor.state_dir)?;
    let mut ended = Vec::new();
    for session in &config.sessions {
        let dir = config.session_dir(&session.id);
        let Some(leftovers) = by_dir.remove(&dir) else {
            continue;
        };
        let Some(_lock) = locks.try_lock(&session.id)? else {
            continue;
        };
        leftovers::end_leftovers(
            &leftovers,
            config.supervisor.stop_timeout,
            spawn::LEFTOVER_KILL_TIMEOUT,
        )
        .map_err(|source| SupervisorError::Leftovers {
            session: session.id.to_string(),
            source,
        })?;
        ended.extend(leftovers);
    }
    Ok(ended)
}
