//! The supervisor: one event loop over a closed `Event` enum.
//!
//! Signals, worker events, worker exits, control requests and timers all
//! become `Event` values, on one channel or one `select!`. Only the loop
//! touches session state; the tasks it spawns (one watcher per worker, one
//! per control connection) only send events. Each session's decisions come
//! from the pure [`Session`] machine; this module carries out its effects.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::{Config, SessionConfig};
use crate::control::{MAX_REQUEST, Request, Response, SOCKET_FILE, SessionUpdate};
use crate::fsutil::{DirError, ensure_private_dir, write_atomic};
use crate::leftovers::{self, Leftover};
use crate::lifecycle::{Context, Effect, ExitKind, Input, PairingCode, Session, State};
use crate::lock::{LockError, SessionLock, SupervisorLock};
use crate::process::{self, WorkerSpec};
use crate::protocol::{LineSplitter, WorkerEvent, parse_line};
use crate::session_id::SessionId;
use crate::status::{STATUS_FILE, SessionRecord, StatusRecord, unix_ms};
use crate::systemd::Notifier;

/// How long leftovers of a dead supervisor may take to die after SIGKILL.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How much a watcher reads from the events pipe after its worker exited.
/// What the worker wrote fits in the pipe buffer (64 KiB by default).
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Events queued from watcher tasks. Bounded, so that a worker flooding its
/// events pipe is slowed down by backpressure instead of growing memory.
const EVENT_QUEUE: usize = 1024;

/// Everything the loop reacts to.
#[derive(Debug)]
enum Event {
    /// SIGTERM or SIGINT: stop every worker and exit.
    Shutdown,
    /// A second SIGTERM or SIGINT during shutdown: do not wait for the grace period.
    ShutdownNow,
    /// An event line from a worker.
    Worker {
        slot: usize,
        generation: u64,
        event: WorkerEvent,
    },
    /// A worker was reaped.
    Exited {
        slot: usize,
        generation: u64,
        exit: ExitKind,
    },
    /// A request on the control socket, with where to send the answer.
    Control(Request, oneshot::Sender<Response>),
    /// `wa-ctl login`: start pairing a session and stream its progress.
    Login {
        session: String,
        phone: Option<String>,
        updates: mpsc::Sender<SessionUpdate>,
    },
    /// A session deadline (backoff end, stop grace) may have passed.
    Timer,
}

/// What the supervisor was asked to do at start-up.
#[derive(Debug, Default)]
pub struct Options {
    /// Start only these sessions (the rest stay `stopped`); all if `None`.
    pub only: Option<Vec<SessionId>>,
    /// Where a background supervisor reports readiness to `wa-ctl start`.
    pub ready: Option<OwnedFd>,
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
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
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

/// Runs a supervisor for `config` in this process until it is told to stop.
pub fn run(config: Config, options: Options) -> Result<Outcome, SupervisorError> {
    let mut ready = Ready(options.ready.map(File::from));
    let result = run_inner(config, options.only, &mut ready);
    match &result {
        Ok(Outcome::AlreadyRunning(pid)) => ready.send(&format!(
            "running {}",
            pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
        )),
        Ok(Outcome::Stopped) => ready.send("error supervisor stopped during start-up"),
        Err(e) => ready.send(&format!("error {e}")),
    }
    result
}

fn run_inner(
    config: Config,
    only: Option<Vec<SessionId>>,
    ready: &mut Ready,
) -> Result<Outcome, SupervisorError> {
    let runtime_dir = config.supervisor.runtime_dir.clone();
    ensure_private_dir(&runtime_dir)?;
    ensure_private_dir(&config.supervisor.state_dir)?;
    ensure_private_dir(&config.supervisor.state_dir.join("sessions"))?;

    let _lock = match SupervisorLock::acquire(&runtime_dir)? {
        Ok(lock) => lock,
        Err(pid) => return Ok(Outcome::AlreadyRunning(pid)),
    };

    // A worker that detaches from its process group (setsid, double fork)
    // is adopted by the supervisor instead of init, so it can be found and
    // ended with its worker.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper: {e}");
    }

    // One thread: PR_SET_PDEATHSIG is tied to the thread that forks, and a
    // supervisor of connection workers has no use for more.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SupervisorError::Io {
            what: "start the event loop".into(),
            source,
        })?;
    let result = runtime.block_on(async {
        let mut supervisor = Supervisor::new(config, only)?;
        supervisor.run(ready).await
    });
    // Tidy up while the lock is still held, so no other supervisor's files
    // can be removed by mistake.
    let _ = std::fs::remove_file(runtime_dir.join(SOCKET_FILE));
    let _ = std::fs::remove_file(runtime_dir.join(STATUS_FILE));
    drop(runtime);
    result.map(|()| Outcome::Stopped)
}

struct Slot {
    config: SessionConfig,
    session: Session,
    lock: Option<SessionLock>,
    /// Counts spawns, so that late events of an old worker are ignored.
    generation: u64,
    /// The running worker's process group, while it is not yet reaped.
    pgid: Option<u32>,
    /// Control requests that are answered once the session is not stopping.
    waiters: Vec<oneshot::Sender<Response>>,
    /// `wa-ctl login` streams following this session.
    watchers: Vec<mpsc::Sender<SessionUpdate>>,
    /// The last update sent to the watchers.
    last_update: Option<SessionUpdate>,
    /// The phone number for the pair-code flow, until the session connects.
    pair_phone: Option<String>,
}

impl Slot {
    fn update(&self) -> SessionUpdate {
        let session = &self.session;
        let (qr, pair_code) = match &session.pairing_code {
            Some(PairingCode::Qr(code)) => (Some(code.clone()), None),
            Some(PairingCode::PairCode(code)) => (None, Some(code.clone())),
            None => (None, None),
        };
        SessionUpdate {
            state: session.state.as_str().to_owned(),
            qr,
            pair_code,
            jid: session.jid.clone(),
            last_code: session.last_close.map(|c| c.to_string()),
            last_reason: session.last_reason.clone(),
            done: matches!(
                session.state,
                State::Connected
                    | State::Stopped
                    | State::LoggedOut
                    | State::Failed
                    | State::Locked
            ),
            error: None,
        }
    }
}

struct Supervisor {
    config: Config,
    slots: Vec<Slot>,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    rng: u64,
    shutting_down: bool,
    shutdown_waiters: Vec<oneshot::Sender<Response>>,
    started_at: SystemTime,
    last_status: Vec<u8>,
    /// Leftovers found by the one process-table scan done at start-up.
    startup_leftovers: Option<HashMap<PathBuf, Vec<Leftover>>>,
    /// The sessions to start at start-up; all if `None`.
    only: Option<Vec<SessionId>>,
    notifier: Notifier,
}

impl Supervisor {
    fn new(config: Config, only: Option<Vec<SessionId>>) -> Result<Self, SupervisorError> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let slots: Vec<Slot> = config
            .sessions
            .iter()
            .map(|c| Slot {
                config: c.clone(),
                session: Session::new(),
                lock: None,
                generation: 0,
                pgid: None,
                waiters: vec![],
                watchers: vec![],
                last_update: None,
                pair_phone: None,
            })
            .collect();
        let seed = unix_ms(SystemTime::now()) ^ (u64::from(std::process::id()) << 32);
        let sessions_root = config.supervisor.state_dir.join("sessions");
        let leftovers = leftovers::find_leftovers(&sessions_root);
        let mut by_dir: HashMap<PathBuf, Vec<Leftover>> = HashMap::new();
        for (dir, leftover) in leftovers {
            by_dir.entry(dir).or_default().push(leftover);
        }
        Ok(Supervisor {
            config,
            slots,
            tx,
            rx,
            rng: seed | 1,
            shutting_down: false,
            shutdown_waiters: vec![],
            started_at: SystemTime::now(),
            last_status: vec![],
            startup_leftovers: Some(by_dir),
            only,
            notifier: Notifier::from_env(),
        })
    }

    async fn run(&mut self, ready: &mut Ready) -> Result<(), SupervisorError> {
        let runtime_dir = self.config.supervisor.runtime_dir.clone();
        let socket_path = runtime_dir.join(SOCKET_FILE);
        // We hold the lock, so a socket file here is a dead supervisor's.
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path).map_err(|source| SupervisorError::Io {
            what: format!("listen on {}", socket_path.display()),
            source,
        })?;
        std::fs::set_permissions(
            &socket_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|source| SupervisorError::Io {
            what: format!("set the mode of {}", socket_path.display()),
            source,
        })?;
        let io_err = |source| SupervisorError::Io {
            what: "install signal handlers".into(),
            source,
        };
        let mut sigterm = signal(SignalKind::terminate()).map_err(io_err)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(io_err)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(io_err)?;
        let mut sigchld = signal(SignalKind::child()).map_err(io_err)?;

        info!(
            pid = std::process::id(),
            sessions = self.slots.len(),
            "supervisor started"
        );
        for idx in 0..self.slots.len() {
            let wanted = self
                .only
                .as_ref()
                .is_none_or(|only| only.contains(&self.slots[idx].config.id));
            if wanted {
                self.apply(idx, Input::Start);
            }
        }
        self.startup_leftovers = None;
        // The start-up scan of the process table is the largest allocation
        // the supervisor ever makes: give it back to the system.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            nix::libc::malloc_trim(0);
        }
        self.write_status();
        ready.send(&format!("ready {}", std::process::id()));
        let summary = self.summary();
        self.notifier.ready(&summary);
        let watchdog_interval = self.notifier.watchdog_interval();
        let mut watchdog_at = watchdog_interval.map(|i| Instant::now() + i);

        loop {
            let deadline = self.slots.iter().filter_map(|s| s.session.deadline()).min();
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                Some(event) = self.rx.recv() => event,
                _ = sigterm.recv() => if self.shutting_down { Event::ShutdownNow } else { Event::Shutdown },
                _ = sigint.recv() => if self.shutting_down { Event::ShutdownNow } else { Event::Shutdown },
                _ = sigchld.recv() => {
                    // Reap adopted orphans that exited on their own.
                    self.reap_adopted();
                    continue;
                }
                _ = sighup.recv() => {
                    info!("SIGHUP ignored: restart the supervisor to apply a changed config (`wa-ctl restart`)");
                    continue;
                }
                accepted = listener.accept() => {
                    match accepted {
                        Ok((stream, _)) => { tokio::spawn(serve_control(stream, self.tx.clone())); }
                        Err(e) => warn!("control socket accept failed: {e}"),
                    }
                    continue;
                }
                () = timer => Event::Timer,
                () = async {
                    match watchdog_at {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Reached only when the loop is free to run: a stuck loop
                    // misses its keep-alive and systemd restarts it.
                    self.notifier.watchdog();
                    watchdog_at = watchdog_interval.map(|i| Instant::now() + i);
                    continue;
                }
            };
            self.handle(event);
            self.answer_waiters();
            self.notify_watchers();
            self.write_status();
            let summary = self.summary();
            self.notifier.status(&summary);
            if self.shutting_down && self.slots.iter().all(|s| s.session.worker.is_none()) {
                break;
            }
        }
        // Nothing the workers detached from their groups outlives us.
        self.end_adopted(None);
        info!("supervisor stopped");
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(Response::ok("stopped"));
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Shutdown => self.begin_shutdown(),
            Event::ShutdownNow => {
                warn!("second stop signal: killing workers without waiting");
                for slot in &mut self.slots {
                    if let Some(pgid) = slot.pgid {
                        let _ = process::signal_group(pgid, Signal::SIGKILL);
                    }
                }
            }
            Event::Worker {
                slot,
                generation,
                event,
            } => {
                if self.slots[slot].generation == generation && self.slots[slot].pgid.is_some() {
                    // One line per lifecycle change: a worker repeating an
                    // event must not flood the log.
                    let before = (
                        self.slots[slot].session.state,
                        self.slots[slot].session.pairing_code.is_some(),
                    );
                    let closed = match &event {
                        WorkerEvent::Closed { code, reason } => Some((*code, reason.clone())),
                        _ => None,
                    };
                    let what = match &event {
                        WorkerEvent::Qr { .. } => "worker reported a QR code",
                        WorkerEvent::PairCode { .. } => "worker reported a pair code",
                        WorkerEvent::Connected { .. } => "worker connected",
                        WorkerEvent::Closed { .. } => "worker reported close",
                        WorkerEvent::PairingExpired => "worker reported that pairing expired",
                    };
                    self.apply(slot, Input::Event(event));
                    if self.slots[slot].session.state == State::Connected {
                        self.slots[slot].pair_phone = None;
                    }
                    let s = &self.slots[slot];
                    let id = &s.config.id;
                    if let Some((code, reason)) = closed {
                        info!(session = %id, code, reason = reason.as_deref().unwrap_or("-"), "{what}");
                    } else if before != (s.session.state, s.session.pairing_code.is_some()) {
                        info!(session = %id, state = %s.session.state, jid = %s.session.jid.as_deref().unwrap_or("-"), "{what}");
                    } else {
                        debug!(session = %id, "{what}");
                    }
                }
            }
            Event::Exited {
                slot,
                generation,
                exit,
            } => {
                if self.slots[slot].generation != generation {
                    return;
                }
                self.slots[slot].pgid = None;
                // Whatever the worker detached from its group (setsid, a
                // double fork) was adopted by us, the subreaper: end it before
                // anything new is spawned for this session.
                self.end_adopted(Some(slot));
                let jitter = self.jitter();
                self.apply(slot, Input::Exited { exit, jitter });
                let s = &self.slots[slot];
                let exit_text = match exit {
                    ExitKind::Code(c) => format!("status {c}"),
                    ExitKind::Signal(sig) => format!("signal {sig}"),
                };
                let retry = s.session.next_retry.map(|t| {
                    humantime::format_duration(round_ms(
                        t.saturating_duration_since(Instant::now()),
                    ))
                    .to_string()
                });
                info!(
                    session = %s.config.id,
                    exit = %exit_text,
                    code = %s.session.last_close.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    action = %s.session.last_action.map_or("-", |a| a.as_str()),
                    state = %s.session.state,
                    retry_in = %retry.as_deref().unwrap_or("-"),
                    "worker exited"
                );
            }
            Event::Control(request, reply) => self.control(request, reply),
            Event::Login {
                session,
                phone,
                updates,
            } => self.login(session, phone, updates),
            Event::Timer => {
                let now = Instant::now();
                for idx in 0..self.slots.len() {
                    if self.slots[idx].session.deadline().is_some_and(|d| d <= now) {
                        self.apply(idx, Input::Tick);
                    }
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        info!("stopping every session");
        self.shutting_down = true;
        self.notifier.stopping();
        for idx in 0..self.slots.len() {
            self.apply(idx, Input::Stop);
        }
    }

    fn control(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        if self.shutting_down {
            let _ = reply.send(Response::error("the supervisor is shutting down"));
            return;
        }
        let (session, input) = match request {
            Request::Shutdown => {
                self.shutdown_waiters.push(reply);
                self.begin_shutdown();
                return;
            }
            Request::Start { session } => (session, Input::Start),
            Request::Stop { session } => (session, Input::Stop),
            Request::Restart { session } => (session, Input::Restart),
            // Streams are served by `serve_control` as `Event::Login`.
            Request::Login { .. } => {
                let _ = reply.send(Response::error("login is a streaming request"));
                return;
            }
        };
        let Some(idx) = self
            .slots
            .iter()
            .position(|s| s.config.id.as_str() == session)
        else {
            let known: Vec<&str> = self.slots.iter().map(|s| s.config.id.as_str()).collect();
            let _ = reply.send(Response::error(format!(
                "no session `{session}` in the configuration (configured: {})",
                known.join(", ")
            )));
            return;
        };
        info!(session = %session, request = ?input, "operator request");
        self.apply(idx, input);
        self.slots[idx].waiters.push(reply);
    }

    fn login(
        &mut self,
        session: String,
        phone: Option<String>,
        updates: mpsc::Sender<SessionUpdate>,
    ) {
        let fail = |message: String| {
            let _ = updates.try_send(SessionUpdate {
                state: String::new(),
                qr: None,
                pair_code: None,
                jid: None,
                last_code: None,
                last_reason: None,
                done: true,
                error: Some(message),
            });
        };
        if self.shutting_down {
            return fail("the supervisor is shutting down".to_owned());
        }
        let Some(idx) = self
            .slots
            .iter()
            .position(|s| s.config.id.as_str() == session)
        else {
            return fail(format!("no session `{session}` in the configuration"));
        };
        let slot = &mut self.slots[idx];
        info!(session = %session, pair_code = phone.is_some(), "operator request: login");
        let input = if slot.session.state == State::Connected {
            None
        } else if let Some(phone) = phone {
            // A running worker was started without this phone number: it
            // must start again to use the pair-code flow.
            let restart =
                slot.session.worker.is_some() && slot.pair_phone.as_deref() != Some(phone.as_str());
            slot.pair_phone = Some(phone);
            Some(if restart {
                Input::Restart
            } else {
                Input::Start
            })
        } else {
            Some(Input::Start)
        };
        slot.watchers.push(updates);
        // Everyone watching gets the current state first.
        slot.last_update = None;
        if let Some(input) = input {
            self.apply(idx, input);
        }
    }

    /// Sends each `wa-ctl login` stream the session's state when it changed,
    /// and ends the streams of sessions that are done.
    fn notify_watchers(&mut self) {
        for slot in &mut self.slots {
            if slot.watchers.is_empty() {
                continue;
            }
            let update = slot.update();
            if slot.last_update.as_ref() == Some(&update) {
                continue;
            }
            // A watcher that does not keep up, or went away, is dropped
            // rather than allowed to hold up the loop.
            slot.watchers.retain(|w| w.try_send(update.clone()).is_ok());
            if update.done {
                slot.watchers.clear();
            }
            slot.last_update = Some(update);
        }
    }

    /// Answers the control requests of sessions that are no longer stopping.
    fn answer_waiters(&mut self) {
        for slot in &mut self.slots {
            if slot.waiters.is_empty() || slot.session.state == State::Stopping {
                continue;
            }
            let response = match slot.session.state {
                State::Locked => Response::error(format!(
                    "session {} is locked: another supervisor runs its worker",
                    slot.config.id
                )),
                state => Response::ok(format!("session {}: {state}", slot.config.id)),
            };
            for waiter in slot.waiters.drain(..) {
                let _ = waiter.send(response.clone());
            }
        }
    }

    /// Feeds one input to a session and carries out the effects, feeding
    /// their results back until the session is quiet.
    fn apply(&mut self, idx: usize, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let cx = Context {
                policy: &self.config.policy,
                stop_timeout: self.config.supervisor.stop_timeout,
                now: Instant::now(),
            };
            let effects = self.slots[idx].session.handle(input, cx);
            for effect in effects {
                if let Some(next) = self.execute(idx, effect) {
                    queue.push_back(next);
                }
            }
        }
    }

    fn execute(&mut self, idx: usize, effect: Effect) -> Option<Input> {
        let slot = &mut self.slots[idx];
        match effect {
            Effect::Spawn => return Some(self.spawn(idx)),
            Effect::Terminate => {
                if let Some(pgid) = slot.pgid {
                    info!(session = %slot.config.id, pgid, "sending SIGTERM to the worker's process group");
                    if let Err(e) = process::signal_group(pgid, Signal::SIGTERM) {
                        error!(session = %slot.config.id, "SIGTERM failed: {e}");
                    }
                }
            }
            Effect::KillGroup => {
                if let Some(pgid) = slot.pgid {
                    warn!(session = %slot.config.id, pgid, "stop_timeout passed: sending SIGKILL to the worker's process group");
                    if let Err(e) = process::signal_group(pgid, Signal::SIGKILL) {
                        error!(session = %slot.config.id, "SIGKILL failed: {e}");
                    }
                }
            }
            Effect::Quarantine => self.quarantine(idx),
            Effect::ReleaseLock => slot.lock = None,
        }
        None
    }

    fn spawn(&mut self, idx: usize) -> Input {
        let jitter = self.jitter();
        let dir = self.config.session_dir(&self.slots[idx].config.id);
        let failed = |reason: String| Input::SpawnFailed { reason, jitter };
        let slot = &mut self.slots[idx];
        let id = slot.config.id.clone();
        if let Err(e) = ensure_private_dir(&dir) {
            error!(session = %id, "{e}");
            return failed(e.to_string());
        }
        if slot.lock.is_none() {
            match SessionLock::try_acquire(&dir) {
                Ok(Some(lock)) => slot.lock = Some(lock),
                Ok(None) => {
                    warn!(session = %id, "session is locked by another supervisor: not starting a worker");
                    return Input::LockBusy;
                }
                Err(e) => {
                    error!(session = %id, "{e}");
                    return failed(e.to_string());
                }
            }
            // Under the lock, end what a supervisor killed before us left.
            let leftovers = match &mut self.startup_leftovers {
                Some(map) => map.remove(&dir).unwrap_or_default(),
                None => leftovers::find_leftovers(&dir)
                    .into_iter()
                    .map(|(_, l)| l)
                    .collect(),
            };
            if !leftovers.is_empty() {
                let pids: Vec<u32> = leftovers.iter().map(|l| l.pid).collect();
                warn!(session = %id, ?pids, "ending processes left behind by a previous supervisor");
                if let Err(e) = leftovers::end_leftovers(
                    &leftovers,
                    self.config.supervisor.stop_timeout,
                    LEFTOVER_TIMEOUT,
                ) {
                    error!(session = %id, "cannot end leftovers: {e}");
                    return failed(format!("cannot end leftovers: {e}"));
                }
            }
        }
        let slot = &mut self.slots[idx];
        let base_dir = self.config.source.path().and_then(Path::parent);
        let program = match process::resolve_program(&slot.config.command[0], base_dir) {
            Ok(p) => p,
            Err(e) => {
                error!(session = %id, "{e}");
                return failed(e.to_string());
            }
        };
        let spec = WorkerSpec {
            program: &program,
            args: &slot.config.command[1..],
            session_id: id.as_str(),
            session_dir: &dir,
            env: &slot.config.env,
            pair_phone: slot.pair_phone.as_deref(),
            cwd: base_dir.unwrap_or(Path::new("/")),
        };
        match process::spawn_worker(&spec) {
            Ok(worker) => {
                slot.generation += 1;
                slot.pgid = Some(worker.pid);
                info!(session = %id, pid = worker.pid, program = %program.display(), "worker spawned");
                let pid = worker.pid;
                tokio::spawn(watch_worker(worker, idx, slot.generation, self.tx.clone()));
                Input::Spawned { pid }
            }
            Err(e) => {
                error!(session = %id, program = %program.display(), "spawn failed: {e}");
                failed(format!("spawn failed: {e}"))
            }
        }
    }

    /// Moves the session directory to `quarantine/<id>-<UTC timestamp>/`.
    /// Credentials are never deleted.
    fn quarantine(&mut self, idx: usize) {
        let id = self.slots[idx].config.id.clone();
        let dir = self.config.session_dir(&id);
        if !dir.exists() {
            warn!(session = %id, "logout: no session directory to quarantine");
            return;
        }
        let qdir = self.config.quarantine_dir();
        if let Err(e) = ensure_private_dir(&qdir) {
            error!(session = %id, "logout: cannot quarantine, credentials left in place: {e}");
            return;
        }
        let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        let mut target = qdir.join(format!("{id}-{stamp}"));
        let mut n = 2;
        while target.exists() {
            target = qdir.join(format!("{id}-{stamp}-{n}"));
            n += 1;
        }
        match std::fs::rename(&dir, &target) {
            Ok(()) => {
                info!(session = %id, to = %target.display(), "logout: credentials quarantined")
            }
            Err(e) => {
                error!(session = %id, "logout: cannot move {} to {}: {e}", dir.display(), target.display())
            }
        }
    }

    /// The worker pids this supervisor spawned and has not yet seen reaped:
    /// tokio reaps those; every other child of ours is an adopted orphan.
    fn known_children(&self) -> std::collections::HashSet<u32> {
        self.slots.iter().filter_map(|s| s.pgid).collect()
    }

    /// Ends adopted orphans that belong to a session (`slot`), or to any
    /// session (`None`): SIGKILL, then reap.
    fn end_adopted(&mut self, slot: Option<usize>) {
        let known = self.known_children();
        for pid in process::adopted_children(&known) {
            let session_dir = leftovers::session_dir_of(pid);
            let ours = match (slot, &session_dir) {
                (Some(idx), Some(dir)) => {
                    *dir == self.config.session_dir(&self.slots[idx].config.id)
                }
                (None, _) => true,
                (Some(_), None) => false,
            };
            if ours {
                warn!(pid, session_dir = ?session_dir, "ending a process a worker left outside its process group");
                process::kill_and_reap(pid);
            }
        }
    }

    /// Reaps adopted orphans that have exited (zombies), without waiting.
    fn reap_adopted(&mut self) {
        let known = self.known_children();
        for pid in process::adopted_children(&known) {
            process::reap_if_exited(pid);
        }
    }

    /// The one-line summary for systemd's `STATUS=`, e.g.
    /// `default: connected; sales: backoff 8s (408)`.
    fn summary(&self) -> String {
        let now = Instant::now();
        let parts: Vec<String> = self
            .slots
            .iter()
            .map(|s| {
                let session = &s.session;
                let mut part = format!("{}: {}", s.config.id, session.state);
                if let Some(retry) = session.next_retry {
                    part.push_str(&format!(
                        " {}s",
                        retry.saturating_duration_since(now).as_secs_f64().ceil() as u64
                    ));
                }
                if let (Some(code), false) = (session.last_close, session.state == State::Connected)
                {
                    part.push_str(&format!(" ({code})"));
                }
                part
            })
            .collect();
        parts.join("; ")
    }

    /// A uniform sample from [-1, 1] (xorshift64*: jitter needs no crypto).
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn write_status(&mut self) {
        let now_sys = SystemTime::now();
        let now = Instant::now();
        let wall = |t: Instant| -> u64 {
            if t >= now {
                unix_ms(now_sys + (t - now))
            } else {
                unix_ms(now_sys - (now - t))
            }
        };
        let record = StatusRecord {
            pid: std::process::id(),
            started_at_ms: unix_ms(self.started_at),
            journal: std::env::var_os("JOURNAL_STREAM").is_some(),
            sessions: self
                .slots
                .iter()
                .map(|s| {
                    let session = &s.session;
                    SessionRecord {
                        id: s.config.id.to_string(),
                        state: session.state.as_str().to_owned(),
                        worker_pid: session.worker.as_ref().map(|w| w.pid),
                        restarts: session.restarts,
                        last_code: session.last_close.map(|c| c.to_string()),
                        last_reason: session.last_reason.clone(),
                        last_action: session.last_action.map(|a| a.as_str().to_owned()),
                        next_retry_at_ms: session.next_retry.map(wall),
                        worker_started_at_ms: session.worker.as_ref().map(|w| wall(w.spawned_at)),
                        connected_at_ms: session
                            .worker
                            .as_ref()
                            .and_then(|w| w.connected_at)
                            .map(wall),
                        jid: session.jid.clone(),
                        pairing: session.pairing_code.clone(),
                    }
                })
                .collect(),
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        if bytes == self.last_status {
            return;
        }
        let path = self.config.supervisor.runtime_dir.join(STATUS_FILE);
        match write_atomic(&path, &bytes, 0o600) {
            Ok(()) => self.last_status = bytes,
            Err(e) => error!("cannot write {}: {e}", path.display()),
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Watches one worker: forwards its event lines, notices its exit, ends what
/// it left in its process group, reaps it, and reports the exit last.
async fn watch_worker(
    worker: process::SpawnedWorker,
    slot: usize,
    generation: u64,
    tx: mpsc::Sender<Event>,
) {
    let process::SpawnedWorker {
        mut child,
        pid,
        events,
    } = worker;
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(events) {
        Ok(p) => Some(p),
        Err(e) => {
            error!(pid, "cannot watch the events pipe: {e}");
            None
        }
    };
    // A pidfd tells us the worker exited without reaping it, so that its
    // process group can be emptied while the number is still pinned. Without
    // pidfd (Linux < 5.3) we reap first and empty the group right after.
    let exit_fd = process::pidfd_open(pid).ok().and_then(|fd| {
        // SAFETY: an OwnedFd keeps its descriptor open and unchanged for as
        // long as the AsyncFd owns it.
        unsafe { tokio::io::unix::AsyncFd::register(fd) }.ok()
    });
    let reaped;
    let mut splitter = LineSplitter::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pipe_open = pipe.is_some();

    let forward = |line: crate::protocol::Line, out: &mut Vec<WorkerEvent>| match line
        .and_then(|l| parse_line(&l))
    {
        Ok(event) => out.push(event),
        Err(e) => warn!(pid, "ignoring a line from the worker: {e}"),
    };

    loop {
        let mut batch = Vec::new();
        tokio::select! {
            read = async { pipe.as_ref().expect("guarded by pipe_open").readable().await }, if pipe_open => {
                if let Err(e) = read {
                    debug!(pid, "events pipe: {e}");
                    pipe_open = false;
                    continue;
                }
                let p = pipe.as_ref().expect("guarded by pipe_open");
                match p.try_read(&mut buf) {
                    Ok(0) => {
                        pipe_open = false;
                        splitter.finish(|l| forward(l, &mut batch));
                    }
                    Ok(n) => splitter.push(&buf[..n], |l| forward(l, &mut batch)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        debug!(pid, "events pipe: {e}");
                        pipe_open = false;
                    }
                }
            }
            status = async {
                match &exit_fd {
                    Some(fd) => {
                        let _ = fd.readable().await;
                        None
                    }
                    None => Some(child.wait().await),
                }
            } => {
                reaped = status;
                break;
            }
        }
        if !forward_events(&tx, slot, generation, batch).await {
            return;
        }
    }

    // The leader is a zombie now, so its pgid cannot name anyone else: end
    // whatever it left in its group before reaping it.
    let status = match reaped {
        Some(status) => {
            let _ = process::signal_group(pid, Signal::SIGKILL);
            status
        }
        None => {
            let _ = process::signal_group(pid, Signal::SIGKILL);
            child.wait().await
        }
    };

    // Everything the worker wrote before it exited is in the pipe: read it
    // all, so that its last `closed` event decides, not the exit status.
    let mut batch = Vec::new();
    if let Some(p) = &pipe {
        // Bounded: a process that escaped the group (setsid) could hold the
        // write end and keep writing forever.
        let mut budget = DRAIN_LIMIT;
        while pipe_open && budget > 0 {
            match p.try_read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    splitter.push(&buf[..n], |l| forward(l, &mut batch));
                }
            }
        }
        splitter.finish(|l| forward(l, &mut batch));
    }
    if !forward_events(&tx, slot, generation, batch).await {
        return;
    }
    let exit = match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => ExitKind::Code(code),
                (None, Some(sig)) => ExitKind::Signal(sig),
                (None, None) => ExitKind::Code(-1),
            }
        }
        Err(e) => {
            error!(pid, "cannot reap the worker: {e}");
            ExitKind::Code(-1)
        }
    };
    let _ = tx
        .send(Event::Exited {
            slot,
            generation,
            exit,
        })
        .await;
}

/// Sends a worker's events to the loop, in order. False once the loop is gone.
async fn forward_events(
    tx: &mpsc::Sender<Event>,
    slot: usize,
    generation: u64,
    batch: Vec<WorkerEvent>,
) -> bool {
    for event in batch {
        if tx
            .send(Event::Worker {
                slot,
                generation,
                event,
            })
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// Serves one control connection: check the peer, read one request, pass it
/// to the loop, write the answer.
async fn serve_control(stream: UnixStream, tx: mpsc::Sender<Event>) {
    let uid = nix::unistd::geteuid().as_raw();
    let (read, mut write) = stream.into_split();
    let peer_ok = read
        .as_ref()
        .peer_cred()
        .map(|c| c.uid() == uid || c.uid() == 0)
        .unwrap_or(false);
    let response = if !peer_ok {
        Response::error("permission denied: the control socket serves its owner only")
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
        match reader.read_line(&mut line).await {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(Request::Login { session, phone }) => {
                    let (updates_tx, mut updates_rx) = mpsc::channel(16);
                    if tx
                        .send(Event::Login {
                            session,
                            phone,
                            updates: updates_tx,
                        })
                        .await
                        .is_err()
                    {
                        Response::error("the supervisor is exiting")
                    } else {
                        while let Some(update) = updates_rx.recv().await {
                            let Ok(mut bytes) = serde_json::to_vec(&update) else {
                                return;
                            };
                            bytes.push(b'\n');
                            if write.write_all(&bytes).await.is_err() || update.done {
                                return;
                            }
                        }
                        return;
                    }
                }
                Ok(request) => {
                    let (reply_tx, reply_rx) = oneshot::channel();
                    if tx.send(Event::Control(request, reply_tx)).await.is_err() {
                        Response::error("the supervisor is exiting")
                    } else {
                        reply_rx
                            .await
                            .unwrap_or_else(|_| Response::error("the supervisor is exiting"))
                    }
                }
                Err(e) => Response::error(format!("bad request: {e}")),
            },
            Err(e) => Response::error(format!("bad request: {e}")),
        }
    };
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

/// Ends what a supervisor killed with SIGKILL left behind, for every
/// configured session whose lock can be taken (a session locked by another
/// live supervisor is that supervisor's business). Used by `wa-ctl stop`
/// when no supervisor runs.
pub fn end_orphans(config: &Config) -> Result<Vec<Leftover>, SupervisorError> {
    let sessions_root = config.supervisor.state_dir.join("sessions");
    if !sessions_root.exists() {
        return Ok(vec![]);
    }
    let mut by_dir: HashMap<PathBuf, Vec<Leftover>> = HashMap::new();
    for (dir, leftover) in leftovers::find_leftovers(&sessions_root) {
        by_dir.entry(dir).or_default().push(leftover);
    }
    let mut ended = Vec::new();
    for session in &config.sessions {
        let dir = config.session_dir(&session.id);
        let Some(leftovers) = by_dir.remove(&dir) else {
            continue;
        };
        let Some(_lock) = SessionLock::try_acquire(&dir)? else {
            continue;
        };
        leftovers::end_leftovers(&leftovers, config.supervisor.stop_timeout, LEFTOVER_TIMEOUT)
            .map_err(|source| SupervisorError::Io {
                what: format!("end leftovers of session {}", session.id),
                source,
            })?;
        ended.extend(leftovers);
    }
    Ok(ended)
}
