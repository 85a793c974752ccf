//! The lifecycle of one session, as a pure state machine.
//!
//! [`Session::handle`] takes an [`Input`] (an operator command, the result
//! of a job, a worker event, a worker's reaping, a timer) and returns the
//! [`Effect`]s the supervisor must carry out. Time and randomness come in as
//! values, so the whole policy (backoff, breaker, code to action) and the
//! one-worker invariant are tested here without a single process.
//!
//! A session has two layers:
//! - [`State`], the public state `wa-ctl status` shows (a contract);
//! - [`Phase`], what holds the session's one worker place. Work that may
//!   wait (taking the lock and ending leftovers, reading a dead worker's
//!   last events and ending what it left behind, quarantining credentials)
//!   runs off the event loop. While it runs, the phase says so, and no
//!   second worker can be spawned: [`Effect::Spawn`] is only ever emitted
//!   from [`Phase::Preparing`], in answer to [`Input::Prepared`].

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::policy::{Action, CloseKey, Policy};
use crate::protocol::WorkerEvent;

/// Where a session is in its life. The names are part of the status contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A worker is being started, or runs and has not yet reported a QR code
    /// or a connection.
    Starting,
    /// A worker is waiting for a QR code or pair code to be used.
    Pairing,
    /// A worker reported that its connection is up.
    Connected,
    /// No worker runs; a new one is spawned when the backoff delay ends.
    Backoff,
    /// A worker, or what it left behind, is being ended (an extension of the
    /// documented states: it lasts at most `stop_timeout` plus a few seconds).
    Stopping,
    /// No worker runs and none will until an operator starts the session.
    Stopped,
    /// The worker reported a logout; the credentials are in quarantine.
    LoggedOut,
    /// The crash-loop breaker tripped; an operator must start the session.
    Failed,
    /// Another supervisor holds this session's lock.
    Locked,
    /// Another node owns the session (issue #10, `[cluster]`): no worker
    /// runs here; the owner's key is watched, and taken over once it is gone
    /// and `takeover_grace` has passed.
    Standby,
}

impl State {
    /// Every state, in the order `status` summaries list them.
    pub const ALL: [State; 10] = [
        State::Starting,
        State::Pairing,
        State::Connected,
        State::Backoff,
        State::Stopping,
        State::Stopped,
        State::LoggedOut,
        State::Failed,
        State::Locked,
        State::Standby,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Pairing => "pairing",
            State::Connected => "connected",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::LoggedOut => "logged_out",
            State::Failed => "failed",
            State::Locked => "locked",
            State::Standby => "standby",
        }
    }

    /// A dense index, for per-state counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a `wa-ctl login` stream of a session in this state is over:
    /// it is connected, or will not get further without an operator.
    pub fn ends_login(self) -> bool {
        matches!(
            self,
            State::Connected
                | State::Stopped
                | State::LoggedOut
                | State::Failed
                | State::Locked
                | State::Standby
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason shown when a worker reported `pairing_expired`.
pub const PAIRING_EXPIRED: &str = "pairing expired";

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "status {c}"),
            ExitKind::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// What the session does once its worker is gone after an operator stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    /// Stay stopped.
    Rest,
    /// Start again: `wa-ctl restart`, or a `start` that arrived mid-stop.
    Start,
    /// Ownership was lost (issue #10): stand by for the session.
    Standby,
}

/// Who owns a session across hosts (issue #10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    /// The owner key's create_revision: the fencing token.
    pub epoch: i64,
    /// This node.
    pub ours: bool,
}

/// The longest `retry_after_s` honoured: a worker's wish cannot park a
/// session for longer than this (30 days). Every duration is bounded.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// A worker's `closed` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: Option<String>,
    /// Not to be retried before this long after the worker ended.
    pub retry_after: Option<Duration>,
}

/// Why the supervisor ended a worker that did not end by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hang {
    /// No `qr`, `pair_code` or `connected` within `start_timeout`.
    Start,
    /// No `alive` within `heartbeat_timeout` of the last one.
    Heartbeat,
}

/// The worker process a session owns, from spawn until it is collected.
#[derive(Debug, Clone)]
pub struct Worker {
    pub pid: u32,
    pub spawned_at: Instant,
    pub connected_at: Option<Instant>,
    /// The last `closed` event: it decides the action when the worker exits.
    pub close: Option<Close>,
    /// The worker reported that pairing expired.
    pub pairing_expired: bool,
    /// It reported `qr`, `pair_code` or `connected`: `start_timeout` is over.
    pub started: bool,
    /// When it last sent `alive`; `None` if it never did (no heartbeat is
    /// then expected of it).
    pub last_alive: Option<Instant>,
    /// The supervisor is ending it because it hung.
    pub hung: Option<Hang>,
    /// Set once an operator or the shutdown has asked this worker to stop.
    stopping: Option<AfterStop>,
}

impl Worker {
    fn new(pid: u32, now: Instant) -> Worker {
        Worker {
            pid,
            spawned_at: now,
            connected_at: None,
            close: None,
            pairing_expired: false,
            started: false,
            last_alive: None,
            hung: None,
            stopping: None,
        }
    }

    /// When this worker counts as hung, and why: the earlier of the end of
    /// `start_timeout` (until it started) and of `heartbeat_timeout` after
    /// its last `alive` (once it sent one). A zero timeout is off.
    fn hang_deadline(&self, policy: &Policy) -> Option<(Instant, Hang)> {
        if self.stopping.is_some() || self.hung.is_some() {
            return None;
        }
        let start = (!self.started && !policy.start_timeout.is_zero()).then(|| {
            (
                deadline_after(self.spawned_at, policy.start_timeout),
                Hang::Start,
            )
        });
        let beat = self
            .last_alive
            .filter(|_| !policy.heartbeat_timeout.is_zero())
            .map(|t| (deadline_after(t, policy.heartbeat_timeout), Hang::Heartbeat));
        match (start, beat) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// What holds the session's one worker place.
#[derive(Debug, Clone)]
pub enum Phase {
    /// No worker and no job: the session rests, or waits for its backoff.
    Idle,
    /// Ownership across hosts is being acquired (issue #10): the owner key
    /// is being created in etcd, off the loop. Nothing is prepared before it
    /// is ours.
    Acquiring {
        /// An operator stopped the session meanwhile.
        cancelled: bool,
    },
    /// The session lock is being taken and what a dead supervisor left is
    /// being ended, off the event loop. No worker exists yet.
    Preparing {
        /// An operator stopped the session meanwhile: spawn nothing.
        cancelled: bool,
    },
    /// A worker process runs (or has exited and is not yet reaped).
    Running(Worker),
    /// The worker was reaped and its process group emptied; its last events
    /// are being read and what it left outside its group is being ended.
    Ending { worker: Worker, exit: ExitKind },
    /// The credentials are being moved to quarantine, under the lock.
    Quarantining {
        /// An operator started the session meanwhile.
        then_start: bool,
    },
}

impl Phase {
    /// A short name for logs and the `status` phase counters.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Acquiring { .. } => "acquiring",
            Phase::Preparing { .. } => "preparing",
            Phase::Running(_) => "running",
            Phase::Ending { .. } => "ending",
            Phase::Quarantining { .. } => "quarantining",
        }
    }
}

/// An input to the state machine.
#[derive(Debug, Clone)]
pub enum Input {
    /// `wa-ctl start <id>`, or the supervisor starting up.
    Start,
    /// `wa-ctl stop <id>`, or the supervisor shutting down.
    Stop,
    /// `wa-ctl restart <id>`.
    Restart,
    /// The session lock is held and no leftover of a dead supervisor remains.
    Prepared,
    /// The session lock is held by another supervisor.
    LockBusy,
    /// Preparing failed (the directory cannot be created, a leftover would
    /// not die); `reason` says why.
    PrepareFailed { reason: String, jitter: f64 },
    /// A worker was spawned for this session.
    Spawned { pid: u32 },
    /// Spawning failed; `reason` says why.
    SpawnFailed { reason: String, jitter: f64 },
    /// The current worker reported an event.
    Event(WorkerEvent),
    /// The current worker exited; its process group was emptied and it was
    /// reaped. Its pid names nobody any more.
    Reaped { exit: ExitKind },
    /// The reaped worker's last events were read and what it left outside
    /// its process group was ended: the policy may decide now.
    Ended { jitter: f64 },
    /// The credentials were moved to quarantine, or could not be (`error`
    /// says why; they stay where they were).
    Quarantined { error: Option<String> },
    /// Preparing found a hold a previous supervisor left (issue #9): the
    /// session stays as it was, until an operator starts it.
    Held(Hold),
    /// A deadline of this session's may have passed.
    Tick,
    /// The owner key is ours (issue #10), with this epoch.
    Acquired { epoch: i64 },
    /// Another node owns the session.
    OwnedElsewhere { node: String, epoch: i64 },
    /// Ownership could not be asked for (etcd unreachable): no ownership,
    /// so no worker; tried again after `takeover_grace`.
    AcquireFailed { reason: String },
    /// The owner key of a session we stand by for (or are acquiring) is
    /// gone, or changes may have been missed: try again after the grace.
    OwnerGone,
    /// The watch saw the owner key written: by another node, or by us.
    OwnerChanged { node: String, epoch: i64 },
    /// A standby asks again after its grace, keeping the owner it knows:
    /// the watch had a gap, so a release may have been missed.
    Recheck,
    /// Our ownership is gone (the lease expired, or our own deadline
    /// passed): end the worker and stand by.
    OwnershipLost { new_owner: Option<String> },
}

/// Something the supervisor must do for this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Take the session lock if not held and end leftovers under it, off the
    /// loop; answer with `Prepared`, `LockBusy` or `PrepareFailed`.
    Prepare,
    /// Spawn a worker; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Send SIGTERM to the worker's process group.
    Terminate,
    /// Send SIGKILL to the worker's process group: the grace period is over.
    KillGroup,
    /// Read the reaped worker's last events and end what it left outside its
    /// group; answer with `Ended`.
    Collect,
    /// Move the session directory into quarantine, under the lock; answer
    /// with `Quarantined`.
    Quarantine,
    /// Release the session lock: the session no longer runs here.
    ReleaseLock,
    /// Persist this session's state, last close and time as a hold: it
    /// ended in a state an operator must clear (`stopped` by the policy,
    /// `logged_out`, `failed`), and a new supervisor must not undo that.
    Hold,
    /// Create the owner key if nobody has it (issue #10); answer with
    /// `Acquired`, `OwnedElsewhere` or `AcquireFailed`.
    Acquire,
    /// Delete our owner key: an operator stopped the session, and a standby
    /// may take it over at once.
    Release,
}

/// A state an operator must clear, as persisted across supervisors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub state: State,
    #[serde(with = "crate::policy::close_key_json", default)]
    pub last_code: Option<CloseKey>,
    #[serde(default)]
    pub last_reason: Option<String>,
    #[serde(default)]
    pub last_action: Option<Action>,
    /// When the session ended, in Unix milliseconds.
    #[serde(default)]
    pub at_ms: Option<u64>,
}

impl Hold {
    /// Whether a session in `state` is held: only the states an operator
    /// must clear.
    pub fn holds(state: State) -> bool {
        matches!(state, State::Stopped | State::LoggedOut | State::Failed)
    }
}

/// The fixed facts a transition needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub stop_timeout: Duration,
    pub now: Instant,
    /// The wall clock at `now`, for the times status shows.
    pub wall: SystemTime,
    /// `[cluster] takeover_grace` when sessions are owned across hosts
    /// (issue #10); `None` on a host alone.
    pub takeover_grace: Option<Duration>,
}

/// `now + delay`, or a point so far away that it never comes: a deadline
/// computed from an absurd configured duration must not panic.
pub fn deadline_after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// The reason shown for a worker ended as hung.
fn hang_reason(hang: Hang, policy: &Policy) -> String {
    match hang {
        Hang::Start => format!(
            "no qr, pair_code or connected within start_timeout ({})",
            humantime::format_duration(policy.start_timeout)
        ),
        Hang::Heartbeat => format!(
            "no alive within heartbeat_timeout ({}) of the last one",
            humantime::format_duration(policy.heartbeat_timeout)
        ),
    }
}

/// One session's state.
#[derive(Debug, Clone)]
pub struct Session {
    pub state: State,
    pub phase: Phase,
    /// Restarts since an operator last started the session.
    pub restarts: u32,
    /// When each restart inside the breaker's window was decided.
    restart_times: VecDeque<Instant>,
    /// Consecutive reconnects: the exponent of the backoff.
    backoff_attempt: u32,
    pub last_close: Option<CloseKey>,
    pub last_reason: Option<String>,
    pub last_action: Option<Action>,
    /// When the last worker ended (wall clock: it is shown, and kept across
    /// supervisors by a hold).
    pub last_at: Option<SystemTime>,
    /// When a backoff ends.
    pub next_retry: Option<Instant>,
    /// When a stopping worker gets SIGKILL.
    pub kill_at: Option<Instant>,
    /// When the running worker counts as hung (see [`Hang`]).
    pub hang_at: Option<(Instant, Hang)>,
    /// The QR payload or pair code waiting to be used.
    pub pairing_code: Option<PairingCode>,
    pub jid: Option<String>,
    /// Who owns the session across hosts (issue #10), when known.
    pub owner: Option<Owner>,
    /// Ownership was lost while a job ran: the session stands by once the
    /// job is done.
    standby_pending: bool,
    /// The owner key was seen gone while an acquire was in flight: an
    /// "owned elsewhere" answer may be older than that, so try again.
    owner_gone_while_acquiring: bool,
}

/// A code the worker asked the user to scan or type. Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "code", rename_all = "snake_case")]
pub enum PairingCode {
    Qr(String),
    PairCode(String),
}

impl Default for Session {
    fn default() -> Self {
        Session {
            state: State::Stopped,
            phase: Phase::Idle,
            restarts: 0,
            restart_times: VecDeque::new(),
            backoff_attempt: 0,
            last_close: None,
            last_reason: None,
            last_action: None,
            last_at: None,
            next_retry: None,
            kill_at: None,
            hang_at: None,
            pairing_code: None,
            jid: None,
            owner: None,
            standby_pending: false,
            owner_gone_while_acquiring: false,
        }
    }
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// The earliest deadline this session waits for, if any.
    pub fn deadline(&self) -> Option<Instant> {
        [self.next_retry, self.kill_at, self.hang_at.map(|(t, _)| t)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Recomputes when the running worker counts as hung.
    fn update_hang(&mut self, policy: &Policy) {
        self.hang_at = self.running().and_then(|w| w.hang_deadline(policy));
    }

    /// The running worker, while its process exists (not once it is reaped).
    pub fn running(&self) -> Option<&Worker> {
        match &self.phase {
            Phase::Running(worker) => Some(worker),
            _ => None,
        }
    }

    /// The worker the session is busy with: running, or being collected.
    pub fn worker(&self) -> Option<&Worker> {
        match &self.phase {
            Phase::Running(worker) | Phase::Ending { worker, .. } => Some(worker),
            _ => None,
        }
    }

    /// Applies one input and returns what to do.
    pub fn handle(&mut self, input: Input, cx: Context<'_>) -> Vec<Effect> {
        match input {
            Input::Start => self.start(cx, false),
            Input::Restart => self.start(cx, true),
            Input::Stop => self.stop(cx),
            Input::Prepared => match &self.phase {
                Phase::Preparing { cancelled: true } => {
                    self.phase = Phase::Idle;
                    self.state = self.rest_state();
                    let mut effects = vec![Effect::ReleaseLock];
                    effects.extend(self.release_if_stopped());
                    effects
                }
                Phase::Preparing { cancelled: false } => vec![Effect::Spawn],
                _ => vec![],
            },
            Input::LockBusy => match &self.phase {
                Phase::Preparing { cancelled } => {
                    self.state = if *cancelled {
                        self.rest_state()
                    } else {
                        State::Locked
                    };
                    self.phase = Phase::Idle;
                    self.next_retry = None;
                    vec![]
                }
                _ => vec![],
            },
            Input::PrepareFailed { reason, jitter } | Input::SpawnFailed { reason, jitter } => {
                match &self.phase {
                    Phase::Preparing { cancelled } => {
                        let cancelled = *cancelled;
                        self.phase = Phase::Idle;
                        if cancelled {
                            self.last_close = Some(CloseKey::Crash);
                            self.last_reason = Some(reason);
                            self.last_action = None;
                            self.state = State::Stopped;
                            vec![Effect::ReleaseLock]
                        } else {
                            self.ended(CloseKey::Crash, Some(reason), None, cx, jitter)
                        }
                    }
                    _ => vec![],
                }
            }
            Input::Spawned { pid } => match &self.phase {
                Phase::Preparing { cancelled } => {
                    let cancelled = *cancelled;
                    self.phase = Phase::Running(Worker::new(pid, cx.now));
                    self.state = State::Starting;
                    self.update_hang(cx.policy);
                    if cancelled {
                        // Not reached through `Prepared`, which never spawns
                        // a cancelled session; kept total for safety.
                        self.stop(cx)
                    } else {
                        vec![]
                    }
                }
                _ => vec![],
            },
            Input::Event(event) => {
                self.on_event(event, cx.now);
                self.update_hang(cx.policy);
                vec![]
            }
            Input::Reaped { exit } => {
                let Phase::Running(worker) = std::mem::replace(&mut self.phase, Phase::Idle) else {
                    return vec![];
                };
                self.kill_at = None;
                self.hang_at = None;
                self.pairing_code = None;
                self.state = State::Stopping;
                self.phase = Phase::Ending { worker, exit };
                vec![Effect::Collect]
            }
            Input::Ended { jitter } => {
                let Phase::Ending { worker, exit } =
                    std::mem::replace(&mut self.phase, Phase::Idle)
                else {
                    return vec![];
                };
                let (key, reason) = match (&worker.close, worker.hung, exit) {
                    // What the worker said comes first: a worker that
                    // reported 440 and then hung must not be reconnected.
                    (Some(close), _, _) => (CloseKey::Code(close.code), close.reason.clone()),
                    (None, Some(hang), _) => (CloseKey::Hang, Some(hang_reason(hang, cx.policy))),
                    (None, None, ExitKind::Code(0)) => (CloseKey::Exit, None),
                    (None, None, ExitKind::Code(n)) => {
                        (CloseKey::Crash, Some(format!("exited with status {n}")))
                    }
                    (None, None, ExitKind::Signal(s)) => {
                        (CloseKey::Crash, Some(format!("killed by signal {s}")))
                    }
                };
                self.ended(key, reason, Some(worker), cx, jitter)
            }
            Input::Quarantined { error } => {
                let Phase::Quarantining { then_start } = self.phase else {
                    return vec![];
                };
                self.phase = Phase::Idle;
                // A logout decides over a lost ownership: logged out here.
                self.standby_pending = false;
                if let Some(error) = error {
                    // Shown, not only logged: the credentials are still live.
                    let reason = self.last_reason.take();
                    self.last_reason = Some(format!(
                        "{}{}quarantine failed, credentials left in place: {error}",
                        reason.as_deref().unwrap_or(""),
                        if reason.is_some() { "; " } else { "" },
                    ));
                }
                // The lock was on the directory now in quarantine's place;
                // a new start takes it afresh.
                let mut effects = vec![Effect::ReleaseLock];
                if then_start {
                    effects.extend(self.start(cx, false));
                } else {
                    effects.push(Effect::Hold);
                }
                effects
            }
            Input::Held(hold) => match &self.phase {
                Phase::Preparing { .. } => {
                    self.phase = Phase::Idle;
                    self.state = if Hold::holds(hold.state) {
                        hold.state
                    } else {
                        State::Stopped
                    };
                    self.last_close = hold.last_code;
                    self.last_reason = hold.last_reason;
                    self.last_action = hold.last_action;
                    self.last_at = hold
                        .at_ms
                        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
                    vec![Effect::ReleaseLock]
                }
                _ => vec![],
            },
            Input::Tick => self.tick(cx),
            Input::Acquired { epoch } => match self.phase {
                Phase::Acquiring { cancelled } => {
                    self.owner = Some(Owner {
                        node: String::new(),
                        epoch,
                        ours: true,
                    });
                    if cancelled {
                        self.phase = Phase::Idle;
                        self.state = self.rest_state();
                        self.release_if_stopped()
                    } else {
                        self.prepare()
                    }
                }
                _ => vec![],
            },
            Input::OwnedElsewhere { node, epoch } => match self.phase {
                Phase::Acquiring { cancelled } => {
                    self.phase = Phase::Idle;
                    // A session that lost its ownership keeps saying so,
                    // now with the name of the node that has it.
                    let lost = self
                        .last_reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("ownership lost"));
                    self.last_reason = Some(if lost {
                        format!("ownership lost to {node} (epoch {epoch})")
                    } else {
                        format!("owned by {node} (epoch {epoch})")
                    });
                    self.owner = Some(Owner {
                        node,
                        epoch,
                        ours: false,
                    });
                    let gone = std::mem::take(&mut self.owner_gone_while_acquiring);
                    if cancelled {
                        self.state = self.rest_state();
                    } else {
                        self.standby_pending = false;
                        self.state = State::Standby;
                        if gone {
                            // The owner left while we asked: this answer
                            // may predate it.
                            self.owner = None;
                            self.next_retry =
                                cx.takeover_grace.map(|grace| deadline_after(cx.now, grace));
                        }
                    }
                    vec![]
                }
                _ => vec![],
            },
            Input::AcquireFailed { reason } => match self.phase {
                Phase::Acquiring { cancelled } => {
                    self.phase = Phase::Idle;
                    self.last_reason = Some(reason);
                    self.owner_gone_while_acquiring = false;
                    if cancelled {
                        self.state = self.rest_state();
                    } else {
                        self.standby_pending = false;
                        self.state = State::Standby;
                    }
                    if self.state == State::Standby {
                        // No ownership without etcd: safety over
                        // availability. Tried again after the grace.
                        self.next_retry =
                            cx.takeover_grace.map(|grace| deadline_after(cx.now, grace));
                    }
                    vec![]
                }
                _ => vec![],
            },
            Input::OwnerGone => {
                match self.phase {
                    Phase::Idle if self.state == State::Standby => {
                        self.owner = None;
                        self.next_retry =
                            cx.takeover_grace.map(|grace| deadline_after(cx.now, grace));
                    }
                    Phase::Acquiring { .. } => self.owner_gone_while_acquiring = true,
                    _ => {}
                }
                vec![]
            }
            Input::Recheck => {
                if matches!(self.phase, Phase::Idle) && self.state == State::Standby {
                    self.next_retry = cx.takeover_grace.map(|grace| deadline_after(cx.now, grace));
                }
                vec![]
            }
            Input::OwnerChanged { node, epoch } => match &self.owner {
                Some(o) if o.ours && o.epoch == epoch => vec![],
                Some(o) if o.ours => {
                    // Our key was replaced: someone else owns the session.
                    let effects = self.ownership_lost(Some(node), cx);
                    if let Some(o) = self.owner.as_mut() {
                        o.epoch = epoch;
                    }
                    effects
                }
                _ => {
                    if matches!(self.phase, Phase::Idle) && self.state == State::Standby {
                        if self
                            .last_reason
                            .as_deref()
                            .is_some_and(|r| r == "ownership lost")
                        {
                            self.last_reason = Some(format!("ownership lost to {node}"));
                        }
                        self.owner = Some(Owner {
                            node,
                            epoch,
                            ours: false,
                        });
                        self.next_retry = None;
                    }
                    vec![]
                }
            },
            Input::OwnershipLost { new_owner } => self.ownership_lost(new_owner, cx),
        }
    }

    /// The state a session rests in once a job it waited for is done: it
    /// stands by if its ownership was lost meanwhile, else it is stopped.
    fn rest_state(&mut self) -> State {
        if std::mem::take(&mut self.standby_pending) {
            State::Standby
        } else {
            State::Stopped
        }
    }

    /// An operator stop of a session this node owns gives the session up,
    /// so that a standby takes it over at once (issue #10).
    fn release_if_stopped(&mut self) -> Vec<Effect> {
        if self.state == State::Stopped && self.owner.as_ref().is_some_and(|o| o.ours) {
            self.owner = None;
            vec![Effect::Release]
        } else {
            vec![]
        }
    }

    /// Our ownership is gone: whatever the session was doing, it ends and
    /// stands by. Nothing is released (the key is not ours any more).
    fn ownership_lost(&mut self, new_owner: Option<String>, cx: Context<'_>) -> Vec<Effect> {
        self.owner = new_owner.clone().map(|node| Owner {
            node,
            epoch: 0,
            ours: false,
        });
        self.last_reason = Some(match &new_owner {
            Some(node) => format!("ownership lost to {node}"),
            None => "ownership lost".to_owned(),
        });
        match &mut self.phase {
            Phase::Idle => {
                self.next_retry = None;
                if !matches!(
                    self.state,
                    State::LoggedOut | State::Failed | State::Stopped
                ) {
                    self.state = State::Standby;
                }
                vec![Effect::ReleaseLock]
            }
            Phase::Acquiring { cancelled } | Phase::Preparing { cancelled } => {
                *cancelled = true;
                self.standby_pending = true;
                vec![]
            }
            Phase::Quarantining { then_start } => {
                *then_start = false;
                self.standby_pending = true;
                vec![]
            }
            Phase::Running(_) | Phase::Ending { .. } => self.stop_with(cx, AfterStop::Standby),
        }
    }

    /// Leaves `Idle` for `Acquiring` (issue #10): ownership first.
    fn acquire(&mut self) -> Vec<Effect> {
        self.next_retry = None;
        self.owner_gone_while_acquiring = false;
        // A standby asking again stays `standby` until it owns the session.
        if self.state != State::Standby {
            self.state = State::Starting;
        }
        self.phase = Phase::Acquiring { cancelled: false };
        vec![Effect::Acquire]
    }

    fn start(&mut self, cx: Context<'_>, restart: bool) -> Vec<Effect> {
        match &mut self.phase {
            Phase::Running(worker) => match worker.stopping {
                // Already stopping: start again once it is gone.
                Some(_) => {
                    worker.stopping = Some(AfterStop::Start);
                    vec![]
                }
                None if restart => self.stop_with(cx, AfterStop::Start),
                None => vec![],
            },
            Phase::Ending { worker, .. } => {
                // The worker is gone already; an operator's start or restart
                // overrides what the policy would decide for its exit.
                if worker.stopping.is_some() || restart {
                    worker.stopping = Some(AfterStop::Start);
                }
                vec![]
            }
            // Ownership was lost while the job ran: the job's result is not
            // ours to use (a spawn now would run beside the new owner's
            // worker). The session stands by; a later start acquires anew.
            Phase::Preparing { .. } | Phase::Acquiring { .. } if self.standby_pending => vec![],
            Phase::Preparing { cancelled } => {
                *cancelled = false;
                self.state = State::Starting;
                vec![]
            }
            Phase::Quarantining { then_start } => {
                *then_start = true;
                vec![]
            }
            Phase::Acquiring { cancelled } => {
                *cancelled = false;
                self.state = State::Starting;
                vec![]
            }
            Phase::Idle => {
                // An operator start is a fresh start: the breaker and the
                // backoff begin again.
                self.restarts = 0;
                self.restart_times.clear();
                self.backoff_attempt = 0;
                if cx.takeover_grace.is_some() && !self.owner.as_ref().is_some_and(|o| o.ours) {
                    self.acquire()
                } else {
                    self.prepare()
                }
            }
        }
    }

    /// Leaves `Idle` for `Preparing`: the one road to a new worker.
    fn prepare(&mut self) -> Vec<Effect> {
        self.next_retry = None;
        self.state = State::Starting;
        self.phase = Phase::Preparing { cancelled: false };
        vec![Effect::Prepare]
    }

    fn stop(&mut self, cx: Context<'_>) -> Vec<Effect> {
        self.stop_with(cx, AfterStop::Rest)
    }

    fn stop_with(&mut self, cx: Context<'_>, after: AfterStop) -> Vec<Effect> {
        self.next_retry = None;
        match &mut self.phase {
            Phase::Running(worker) => {
                // A worker already being ended as hung has had its SIGTERM.
                let first = worker.stopping.is_none() && worker.hung.is_none();
                worker.stopping = Some(after);
                self.state = State::Stopping;
                self.hang_at = None;
                if first {
                    self.kill_at = Some(deadline_after(cx.now, cx.stop_timeout));
                    vec![Effect::Terminate]
                } else {
                    vec![]
                }
            }
            Phase::Ending { worker, .. } => {
                worker.stopping = Some(after);
                self.state = State::Stopping;
                vec![]
            }
            Phase::Preparing { cancelled } | Phase::Acquiring { cancelled } => {
                *cancelled = after != AfterStop::Start;
                self.standby_pending |= after == AfterStop::Standby;
                if after == AfterStop::Rest {
                    self.state = State::Stopping;
                }
                vec![]
            }
            Phase::Quarantining { then_start } => {
                *then_start = false;
                vec![]
            }
            Phase::Idle => {
                if self.state != State::LoggedOut && self.state != State::Failed {
                    self.state = State::Stopped;
                }
                // Held during a backoff; releasing a lock not held is a no-op.
                let mut effects = vec![Effect::ReleaseLock];
                effects.extend(self.release_if_stopped());
                effects
            }
        }
    }

    fn on_event(&mut self, event: WorkerEvent, now: Instant) {
        let (worker, reaped) = match &mut self.phase {
            Phase::Running(worker) => (worker, false),
            Phase::Ending { worker, .. } => (worker, true),
            _ => return,
        };
        // Late lines of a reaped worker still count for its outcome (its
        // last `closed` decides), but cannot bring a dead worker "up".
        let shown = worker.stopping.is_none() && !reaped;
        match event {
            WorkerEvent::Qr { code } => {
                worker.started = true;
                if !reaped {
                    self.pairing_code = Some(PairingCode::Qr(code));
                }
                if shown {
                    self.state = State::Pairing;
                }
            }
            WorkerEvent::PairCode { code } => {
                worker.started = true;
                if !reaped {
                    self.pairing_code = Some(PairingCode::PairCode(code));
                }
                if shown {
                    self.state = State::Pairing;
                }
            }
            WorkerEvent::Connected { jid } => {
                worker.started = true;
                worker.connected_at.get_or_insert(now);
                self.pairing_code = None;
                self.jid = jid.or(self.jid.take());
                if shown {
                    self.state = State::Connected;
                }
            }
            WorkerEvent::Closed {
                code,
                reason,
                retry_after_s,
            } => {
                worker.close = Some(Close {
                    code,
                    reason,
                    retry_after: retry_after_s.map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER)),
                })
            }
            WorkerEvent::PairingExpired => worker.pairing_expired = true,
            WorkerEvent::Alive => {
                if !reaped {
                    worker.last_alive = Some(now);
                }
            }
        }
    }

    /// A worker ended (or could not be spawned): apply the policy.
    fn ended(
        &mut self,
        key: CloseKey,
        reason: Option<String>,
        worker: Option<Worker>,
        cx: Context<'_>,
        jitter: f64,
    ) -> Vec<Effect> {
        self.last_close = Some(key);
        self.last_reason = reason;
        self.last_at = Some(cx.wall);
        self.pairing_code = None;

        if let Some(after) = worker.as_ref().and_then(|w| w.stopping) {
            // An operator or shutdown stop: the policy does not apply.
            self.last_action = None;
            self.state = State::Stopped;
            return match after {
                AfterStop::Rest => {
                    let mut effects = vec![Effect::ReleaseLock];
                    effects.extend(self.release_if_stopped());
                    effects
                }
                AfterStop::Start => self.start(cx, false),
                AfterStop::Standby => {
                    // The policy does not apply: the worker was ended
                    // because another node may own the session now.
                    self.state = State::Standby;
                    self.last_reason = match &self.owner {
                        Some(o) if !o.ours => Some(format!("ownership lost to {}", o.node)),
                        _ => Some("ownership lost".to_owned()),
                    };
                    vec![Effect::ReleaseLock]
                }
            };
        }

        let action = cx.policy.action_for(key);
        // `pairing_expired` and a `closed` code together (docs/worker-
        // protocol.md, "Which close code counts"): a code whose action is
        // `stop` or `logout` says more and wins (a 401 is quarantined, a 440
        // stays visible); otherwise pairing expired wins, because a
        // reconnect would only start a new QR loop nobody is watching.
        let code_wins =
            matches!(key, CloseKey::Code(_)) && matches!(action, Action::Stop | Action::Logout);
        if worker.as_ref().is_some_and(|w| w.pairing_expired) && !code_wins {
            // Not a logout of paired credentials: there is nothing to
            // quarantine, and a new QR code loop helps nobody. `wa-ctl login`
            // starts pairing again.
            self.last_reason = Some(PAIRING_EXPIRED.to_owned());
            self.last_action = Some(Action::Stop);
            self.state = State::LoggedOut;
            return vec![Effect::Hold, Effect::ReleaseLock];
        }

        let connected_for = worker
            .as_ref()
            .and_then(|w| w.connected_at)
            .map(|t| cx.now.saturating_duration_since(t));
        if connected_for.is_some_and(|d| d >= cx.policy.reset_after) {
            self.backoff_attempt = 0;
        }

        let retry_after = worker
            .as_ref()
            .and_then(|w| w.close.as_ref())
            .and_then(|c| c.retry_after)
            .filter(|d| !d.is_zero());
        self.last_action = Some(action);
        match action {
            Action::Stop => {
                self.state = State::Stopped;
                vec![Effect::Hold, Effect::ReleaseLock]
            }
            Action::Logout => {
                self.state = State::LoggedOut;
                self.jid = None;
                self.phase = Phase::Quarantining { then_start: false };
                vec![Effect::Quarantine]
            }
            Action::Restart | Action::Reconnect => {
                let window = cx.policy.restart_window;
                while self
                    .restart_times
                    .front()
                    .is_some_and(|&t| cx.now.saturating_duration_since(t) >= window)
                {
                    self.restart_times.pop_front();
                }
                if self.restart_times.len() >= cx.policy.max_restarts as usize {
                    self.state = State::Failed;
                    return vec![Effect::Hold, Effect::ReleaseLock];
                }
                self.restart_times.push_back(cx.now);
                self.restarts = self.restarts.saturating_add(1);
                let delay = if action == Action::Restart {
                    Duration::ZERO
                } else {
                    let delay = cx.policy.backoff_delay(self.backoff_attempt, jitter);
                    self.backoff_attempt = self.backoff_attempt.saturating_add(1);
                    delay
                };
                // The server said when: never sooner (a retry during a ban
                // extends it).
                let delay = match retry_after {
                    Some(wait) => {
                        let reason = self.last_reason.take();
                        self.last_reason = Some(format!(
                            "{}{}not retried for {} (retry_after_s)",
                            reason.as_deref().unwrap_or(""),
                            if reason.is_some() { "; " } else { "" },
                            humantime::format_duration(wait)
                        ));
                        delay.max(wait)
                    }
                    None => delay,
                };
                if delay.is_zero() {
                    // No delay configured: no detour through the timer.
                    return self.prepare();
                }
                self.state = State::Backoff;
                self.next_retry = Some(deadline_after(cx.now, delay));
                vec![]
            }
        }
    }

    fn tick(&mut self, cx: Context<'_>) -> Vec<Effect> {
        let mut effects = vec![];
        if let Some((at, hang)) = self.hang_at
            && at <= cx.now
        {
            self.hang_at = None;
            if let Phase::Running(worker) = &mut self.phase
                && worker.stopping.is_none()
                && worker.hung.is_none()
            {
                // Ended like a stop, but the policy decides afterwards.
                worker.hung = Some(hang);
                self.state = State::Stopping;
                self.kill_at = Some(deadline_after(cx.now, cx.stop_timeout));
                effects.push(Effect::Terminate);
            }
        }
        if self.kill_at.is_some_and(|t| t <= cx.now) {
            self.kill_at = None;
            if matches!(self.phase, Phase::Running(_)) {
                effects.push(Effect::KillGroup);
            }
        }
        if self.state == State::Backoff
            && matches!(self.phase, Phase::Idle)
            && self.next_retry.is_some_and(|t| t <= cx.now)
        {
            effects.extend(self.prepare());
        }
        // A standby's takeover_grace passed: try to own the session.
        if self.state == State::Standby
            && matches!(self.phase, Phase::Idle)
            && self.next_retry.is_some_and(|t| t <= cx.now)
        {
            effects.extend(self.acquire());
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a session the way the supervisor does: `Prepare` answers
    /// `Prepared`, `Spawn` answers `Spawned`, `Quarantine` answers
    /// `Quarantined`; `Collect` is answered by the test (`exit_with`).
    struct Harness {
        policy: &'static Policy,
        now: Instant,
        session: Session,
        spawns: u32,
        all_effects: Vec<Effect>,
        /// `Some` for a session owned across hosts (issue #10).
        takeover_grace: Option<Duration>,
    }

    impl Harness {
        fn new(policy: Policy) -> Self {
            Harness {
                // Leaked so that a context borrows nothing of the harness.
                policy: Box::leak(Box::new(policy)),
                now: Instant::now(),
                session: Session::new(),
                spawns: 0,
                all_effects: vec![],
                takeover_grace: None,
            }
        }

        fn cx(&self) -> Context<'static> {
            Context {
                policy: self.policy,
                stop_timeout: Duration::from_secs(10),
                now: self.now,
                wall: SystemTime::UNIX_EPOCH,
                takeover_grace: self.takeover_grace,
            }
        }

        /// Feeds one input and answers the jobs at once; returns every
        /// effect emitted on the way.
        fn feed(&mut self, input: Input) -> Vec<Effect> {
            let mut out = vec![];
            let mut queue = VecDeque::from([input]);
            while let Some(input) = queue.pop_front() {
                let effects = self.session.handle(input, self.cx());
                for e in &effects {
                    match e {
                        Effect::Prepare => queue.push_back(Input::Prepared),
                        Effect::Spawn => {
                            self.spawns += 1;
                            queue.push_back(Input::Spawned {
                                pid: 1000 + self.spawns,
                            });
                        }
                        Effect::Quarantine => queue.push_back(Input::Quarantined { error: None }),
                        _ => {}
                    }
                }
                out.extend(effects);
            }
            self.all_effects.extend(&out);
            out
        }

        fn advance(&mut self, d: Duration) -> Vec<Effect> {
            self.now += d;
            self.feed(Input::Tick)
        }

        fn exit_with(&mut self, code: Option<u16>, exit: ExitKind) -> Vec<Effect> {
            if let Some(code) = code {
                self.feed(Input::Event(WorkerEvent::Closed {
                    code,
                    reason: None,
                    retry_after_s: None,
                }));
            }
            assert_eq!(self.feed(Input::Reaped { exit }), vec![Effect::Collect]);
            self.feed(Input::Ended { jitter: 0.0 })
        }
    }

    fn no_jitter() -> Policy {
        Policy {
            jitter: 0.0,
            ..Policy::default()
        }
    }

    #[test]
    fn start_prepares_then_spawns_and_events_move_state() {
        let mut h = Harness::new(no_jitter());
        assert_eq!(h.feed(Input::Start), vec![Effect::Prepare, Effect::Spawn]);
        assert_eq!(h.session.state, State::Starting);
        h.feed(Input::Event(WorkerEvent::Qr { code: "q".into() }));
        assert_eq!(h.session.state, State::Pairing);
        assert_eq!(h.session.pairing_code, Some(PairingCode::Qr("q".into())));
        h.feed(Input::Event(WorkerEvent::Connected {
            jid: Some("j".into()),
        }));
        assert_eq!(h.session.state, State::Connected);
        assert_eq!(h.session.pairing_code, None);
        // A second start while running is a no-op.
        assert_eq!(h.feed(Input::Start), vec![]);
        assert_eq!(h.spawns, 1);
    }

    #[test]
    fn conflict_stops() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        let e = h.exit_with(Some(440), ExitKind::Code(0));
        assert_eq!(e, vec![Effect::Hold, Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::Stopped);
        assert_eq!(h.session.last_close, Some(CloseKey::Code(440)));
        assert_eq!(h.session.last_action, Some(Action::Stop));
        assert_eq!(h.session.deadline(), None);
    }

    #[test]
    fn logout_quarantines_then_releases_the_lock() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        let e = h.exit_with(Some(401), ExitKind::Code(1));
        assert_eq!(
            e,
            vec![Effect::Quarantine, Effect::ReleaseLock, Effect::Hold],
            "held once the credentials are in quarantine"
        );
        assert_eq!(h.session.state, State::LoggedOut);
        assert!(matches!(h.session.phase, Phase::Idle));
    }

    #[test]
    fn start_during_quarantine_waits_for_it() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(Input::Event(WorkerEvent::Closed {
            code: 401,
            reason: None,
            retry_after_s: None,
        }));
        h.feed(Input::Reaped {
            exit: ExitKind::Code(0),
        });
        // Answer Collect, but hold the quarantine job back.
        let effects = h.session.handle(Input::Ended { jitter: 0.0 }, h.cx());
        assert_eq!(effects, vec![Effect::Quarantine]);
        assert_eq!(
            h.session.handle(Input::Start, h.cx()),
            vec![],
            "no spawn while the credentials move"
        );
        assert_eq!(
            h.feed(Input::Quarantined { error: None }),
            vec![Effect::ReleaseLock, Effect::Prepare, Effect::Spawn],
            "the lock of the old directory goes first, then a fresh start"
        );
        assert_eq!(h.spawns, 2);
    }

    #[test]
    fn restart_required_spawns_at_once() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        let e = h.exit_with(Some(515), ExitKind::Code(0));
        assert_eq!(e, vec![Effect::Prepare, Effect::Spawn]);
        assert_eq!(h.session.state, State::Starting);
        assert_eq!(h.session.restarts, 1);
        assert_eq!(h.spawns, 2);
    }

    #[test]
    fn reconnect_backs_off_exponentially() {
        let mut h = Harness::new(Policy {
            max_restarts: 100,
            ..no_jitter()
        });
        h.feed(Input::Start);
        let mut delays = vec![];
        for _ in 0..5 {
            h.exit_with(Some(408), ExitKind::Code(0));
            assert_eq!(h.session.state, State::Backoff);
            let delay = h.session.next_retry.unwrap() - h.now;
            delays.push(delay.as_secs());
            // Nothing happens a moment before the deadline.
            assert_eq!(h.advance(delay - Duration::from_millis(1)), vec![]);
            assert_eq!(
                h.advance(Duration::from_millis(1)),
                vec![Effect::Prepare, Effect::Spawn]
            );
        }
        assert_eq!(delays, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn absurd_durations_do_not_panic() {
        let mut h = Harness::new(Policy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..no_jitter()
        });
        h.feed(Input::Start);
        h.exit_with(Some(408), ExitKind::Code(0));
        assert_eq!(h.session.state, State::Backoff);
        assert!(h.session.next_retry.unwrap() > h.now);
        let cx = Context {
            policy: h.policy,
            stop_timeout: Duration::MAX,
            now: h.now,
            wall: SystemTime::UNIX_EPOCH,
            takeover_grace: None,
        };
        let mut s = Session::new();
        s.handle(Input::Start, cx);
        s.handle(Input::Prepared, cx);
        s.handle(Input::Spawned { pid: 7 }, cx);
        assert_eq!(s.handle(Input::Stop, cx), vec![Effect::Terminate]);
    }

    #[test]
    fn zero_backoff_spawns_without_the_timer() {
        let mut h = Harness::new(Policy {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..no_jitter()
        });
        h.feed(Input::Start);
        assert_eq!(
            h.exit_with(Some(408), ExitKind::Code(0)),
            vec![Effect::Prepare, Effect::Spawn]
        );
        assert_eq!(h.session.state, State::Starting);
        assert_eq!(h.session.restarts, 1);
    }

    #[test]
    fn long_connection_resets_backoff() {
        let mut h = Harness::new(Policy {
            max_restarts: 100,
            ..no_jitter()
        });
        h.feed(Input::Start);
        for _ in 0..3 {
            h.exit_with(Some(408), ExitKind::Code(0));
            let d = h.session.next_retry.unwrap() - h.now;
            h.advance(d);
        }
        h.feed(Input::Event(WorkerEvent::Connected { jid: None }));
        h.now += h.policy.reset_after;
        h.exit_with(Some(408), ExitKind::Code(0));
        assert_eq!(
            h.session.next_retry.unwrap() - h.now,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn breaker_trips_after_max_restarts() {
        let mut h = Harness::new(Policy {
            max_restarts: 3,
            initial_backoff: Duration::from_millis(10),
            ..no_jitter()
        });
        h.feed(Input::Start);
        loop {
            h.exit_with(None, ExitKind::Signal(9));
            if h.session.state == State::Failed {
                break;
            }
            let d = h.session.next_retry.unwrap() - h.now;
            h.advance(d);
        }
        assert_eq!(h.spawns, 4, "1 start and 3 restarts");
        assert_eq!(h.session.restarts, 3);
        assert_eq!(h.session.last_close, Some(CloseKey::Crash));
        // Nothing restarts a failed session but an operator.
        assert_eq!(h.advance(Duration::from_secs(3600)), vec![]);
        assert_eq!(h.feed(Input::Start), vec![Effect::Prepare, Effect::Spawn]);
        assert_eq!(h.session.restarts, 0);
    }

    #[test]
    fn breaker_window_forgets_old_restarts() {
        let mut h = Harness::new(Policy {
            max_restarts: 2,
            restart_window: Duration::from_secs(60),
            initial_backoff: Duration::from_secs(1),
            ..no_jitter()
        });
        h.feed(Input::Start);
        for _ in 0..10 {
            h.exit_with(Some(515), ExitKind::Code(0));
            h.now += Duration::from_secs(31);
        }
        assert_eq!(h.session.state, State::Starting);
        assert_eq!(h.spawns, 11);
    }

    #[test]
    fn exit_codes_without_close() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.exit_with(None, ExitKind::Code(0));
        assert_eq!(
            (h.session.state, h.session.last_close),
            (State::Stopped, Some(CloseKey::Exit))
        );
        h.feed(Input::Start);
        h.exit_with(None, ExitKind::Code(3));
        assert_eq!(
            (h.session.state, h.session.last_close),
            (State::Backoff, Some(CloseKey::Crash))
        );
    }

    #[test]
    fn operator_stop_terminates_then_kills() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        assert_eq!(h.feed(Input::Stop), vec![Effect::Terminate]);
        assert_eq!(h.session.state, State::Stopping);
        assert_eq!(
            h.feed(Input::Stop),
            vec![],
            "a second stop does not signal twice"
        );
        assert_eq!(h.advance(Duration::from_secs(9)), vec![]);
        assert_eq!(h.advance(Duration::from_secs(1)), vec![Effect::KillGroup]);
        // The policy does not apply to an operator stop, even with a code.
        let e = h.exit_with(Some(515), ExitKind::Signal(9));
        assert_eq!(e, vec![Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::Stopped);
        assert_eq!(h.spawns, 1);
    }

    #[test]
    fn a_reaped_worker_is_never_signalled() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(Input::Reaped {
            exit: ExitKind::Code(1),
        });
        assert_eq!(h.session.state, State::Stopping);
        assert_eq!(h.feed(Input::Stop), vec![], "its pid names nobody now");
        assert_eq!(h.advance(Duration::from_secs(3600)), vec![]);
        assert_eq!(
            h.feed(Input::Ended { jitter: 0.0 }),
            vec![Effect::ReleaseLock]
        );
        assert_eq!(h.session.state, State::Stopped);
    }

    #[test]
    fn restart_waits_for_the_old_worker() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        assert_eq!(h.feed(Input::Restart), vec![Effect::Terminate]);
        assert_eq!(h.spawns, 1, "never two workers at once");
        let e = h.exit_with(None, ExitKind::Code(0));
        assert_eq!(e, vec![Effect::Prepare, Effect::Spawn]);
        assert_eq!(h.spawns, 2);
    }

    #[test]
    fn stop_during_backoff_cancels_the_retry() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.exit_with(Some(408), ExitKind::Code(0));
        assert_eq!(h.feed(Input::Stop), vec![Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::Stopped);
        assert_eq!(h.advance(Duration::from_secs(3600)), vec![]);
    }

    #[test]
    fn stop_while_preparing_spawns_nothing() {
        let mut h = Harness::new(no_jitter());
        let cx = h.cx();
        assert_eq!(h.session.handle(Input::Start, cx), vec![Effect::Prepare]);
        assert_eq!(h.session.handle(Input::Stop, cx), vec![]);
        assert_eq!(h.session.state, State::Stopping);
        // A start while the job still runs does not start a second job.
        assert_eq!(h.session.handle(Input::Start, cx), vec![]);
        assert_eq!(h.session.handle(Input::Stop, cx), vec![]);
        assert_eq!(
            h.session.handle(Input::Prepared, cx),
            vec![Effect::ReleaseLock]
        );
        assert_eq!(h.session.state, State::Stopped);
        assert!(matches!(h.session.phase, Phase::Idle));
    }

    #[test]
    fn spawn_failure_counts_as_crash() {
        let mut h = Harness::new(Policy {
            max_restarts: 1,
            ..no_jitter()
        });
        let cx = h.cx();
        assert_eq!(h.session.handle(Input::Start, cx), vec![Effect::Prepare]);
        assert_eq!(h.session.handle(Input::Prepared, cx), vec![Effect::Spawn]);
        h.session.handle(
            Input::SpawnFailed {
                reason: "ENOENT".into(),
                jitter: 0.0,
            },
            cx,
        );
        assert_eq!(h.session.state, State::Backoff);
        h.session.handle(
            Input::Tick,
            Context {
                now: h.session.next_retry.unwrap(),
                ..cx
            },
        );
        h.session.handle(
            Input::PrepareFailed {
                reason: "leftover".into(),
                jitter: 0.0,
            },
            cx,
        );
        assert_eq!(h.session.state, State::Failed);
    }

    #[test]
    fn pairing_expired_is_logged_out_without_quarantine() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(Input::Event(WorkerEvent::Qr { code: "q".into() }));
        h.feed(Input::Event(WorkerEvent::PairingExpired));
        let e = h.exit_with(None, ExitKind::Code(0));
        assert_eq!(e, vec![Effect::Hold, Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::LoggedOut);
        assert_eq!(h.session.last_reason.as_deref(), Some(PAIRING_EXPIRED));
        assert_eq!(h.session.pairing_code, None);
        assert_eq!(
            h.feed(Input::Start),
            vec![Effect::Prepare, Effect::Spawn],
            "login pairs again"
        );
    }

    #[test]
    fn late_events_of_a_reaped_worker_decide_but_do_not_show() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(Input::Reaped {
            exit: ExitKind::Code(0),
        });
        h.feed(Input::Event(WorkerEvent::Connected { jid: None }));
        assert_eq!(h.session.state, State::Stopping, "a dead worker is not up");
        h.feed(Input::Event(WorkerEvent::Closed {
            code: 440,
            reason: None,
            retry_after_s: None,
        }));
        assert_eq!(
            h.feed(Input::Ended { jitter: 0.0 }),
            vec![Effect::Hold, Effect::ReleaseLock]
        );
        assert_eq!(h.session.last_close, Some(CloseKey::Code(440)));
    }

    #[test]
    fn lock_busy_reports_locked() {
        let mut h = Harness::new(no_jitter());
        let cx = h.cx();
        h.session.handle(Input::Start, cx);
        h.session.handle(Input::LockBusy, cx);
        assert_eq!(h.session.state, State::Locked);
        assert!(matches!(h.session.phase, Phase::Idle));
        assert_eq!(h.session.handle(Input::Start, cx), vec![Effect::Prepare]);
    }

    fn closed(code: u16, retry_after_s: Option<u64>) -> Input {
        Input::Event(WorkerEvent::Closed {
            code,
            reason: Some("r".into()),
            retry_after_s,
        })
    }

    /// Ends the running worker as the supervisor would after a SIGTERM.
    fn reap_and_end(h: &mut Harness) -> Vec<Effect> {
        assert_eq!(
            h.feed(Input::Reaped {
                exit: ExitKind::Signal(15)
            }),
            vec![Effect::Collect]
        );
        h.feed(Input::Ended { jitter: 0.0 })
    }

    #[test]
    fn a_silent_worker_is_ended_as_hung_after_start_timeout() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        let start_timeout = h.policy.start_timeout;
        assert_eq!(h.advance(start_timeout - Duration::from_millis(1)), vec![]);
        assert_eq!(h.session.state, State::Starting);
        assert_eq!(h.advance(Duration::from_millis(1)), vec![Effect::Terminate]);
        assert_eq!(h.session.state, State::Stopping);
        // The grace period of a stop applies, then SIGKILL.
        assert_eq!(h.advance(Duration::from_secs(10)), vec![Effect::KillGroup]);
        assert_eq!(reap_and_end(&mut h), vec![]);
        assert_eq!(h.session.last_close, Some(CloseKey::Hang));
        assert_eq!(h.session.last_action, Some(Action::Reconnect));
        assert_eq!(h.session.state, State::Backoff);
        assert!(
            h.session
                .last_reason
                .as_deref()
                .is_some_and(|r| r.contains("start_timeout")),
            "{:?}",
            h.session.last_reason
        );
    }

    #[test]
    fn a_qr_code_or_a_connection_ends_the_start_timeout() {
        for event in [
            WorkerEvent::Qr { code: "q".into() },
            WorkerEvent::PairCode {
                code: "ABCD-EFGH".into(),
            },
            WorkerEvent::Connected { jid: None },
        ] {
            let mut h = Harness::new(no_jitter());
            h.feed(Input::Start);
            h.feed(Input::Event(event));
            assert_eq!(h.session.hang_at, None);
            assert_eq!(h.advance(Duration::from_secs(3600)), vec![]);
        }
    }

    #[test]
    fn zero_timeouts_turn_the_hang_checks_off() {
        let mut h = Harness::new(Policy {
            start_timeout: Duration::ZERO,
            heartbeat_timeout: Duration::ZERO,
            ..no_jitter()
        });
        h.feed(Input::Start);
        h.feed(Input::Event(WorkerEvent::Alive));
        assert_eq!(h.session.deadline(), None);
        assert_eq!(h.advance(Duration::from_secs(86_400)), vec![]);
        assert_eq!(h.session.state, State::Starting);
    }

    #[test]
    fn a_heartbeat_once_sent_must_go_on() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(Input::Event(WorkerEvent::Connected { jid: None }));
        let beat = h.policy.heartbeat_timeout;
        // Without a first `alive`, no heartbeat is expected.
        assert_eq!(h.advance(beat * 3), vec![]);
        h.feed(Input::Event(WorkerEvent::Alive));
        for _ in 0..5 {
            assert_eq!(h.advance(beat - Duration::from_secs(1)), vec![]);
            h.feed(Input::Event(WorkerEvent::Alive));
        }
        assert_eq!(h.session.state, State::Connected);
        assert_eq!(h.advance(beat), vec![Effect::Terminate]);
        reap_and_end(&mut h);
        assert_eq!(h.session.last_close, Some(CloseKey::Hang));
        assert!(
            h.session
                .last_reason
                .as_deref()
                .is_some_and(|r| r.contains("heartbeat_timeout"))
        );
    }

    #[test]
    fn a_close_code_reported_before_hanging_decides() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(closed(440, None));
        assert_eq!(h.advance(h.policy.start_timeout), vec![Effect::Terminate]);
        assert_eq!(
            reap_and_end(&mut h),
            vec![Effect::Hold, Effect::ReleaseLock]
        );
        assert_eq!(h.session.last_close, Some(CloseKey::Code(440)));
        assert_eq!(h.session.state, State::Stopped);
    }

    #[test]
    fn an_operator_stop_of_a_hung_worker_is_a_stop() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        assert_eq!(h.advance(h.policy.start_timeout), vec![Effect::Terminate]);
        // Already terminated: no second SIGTERM, and the stop wins.
        assert_eq!(h.feed(Input::Stop), vec![]);
        assert_eq!(reap_and_end(&mut h), vec![Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::Stopped);
        assert_eq!(h.session.last_action, None);
    }

    #[test]
    fn retry_after_is_never_undercut() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(closed(503, Some(3600)));
        reap_and_end(&mut h);
        assert_eq!(h.session.state, State::Backoff);
        assert_eq!(
            h.session.next_retry,
            Some(h.now + Duration::from_secs(3600))
        );
        let reason = h.session.last_reason.clone().unwrap();
        assert!(reason.starts_with("r; not retried for 1h"), "{reason}");
        assert_eq!(h.advance(Duration::from_secs(3599)), vec![]);
        assert_eq!(
            h.advance(Duration::from_secs(1)),
            vec![Effect::Prepare, Effect::Spawn]
        );
        // A backoff longer than the wish wins.
        h.feed(closed(503, Some(0)));
        reap_and_end(&mut h);
        assert_eq!(h.session.next_retry, Some(h.now + Duration::from_secs(2)));
    }

    #[test]
    fn retry_after_delays_a_restart_and_is_bounded() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(closed(515, Some(u64::MAX)));
        assert_eq!(reap_and_end(&mut h), vec![]);
        assert_eq!(h.session.state, State::Backoff);
        assert_eq!(h.session.next_retry, Some(h.now + MAX_RETRY_AFTER));
        // A stop action stays a stop.
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        h.feed(closed(402, Some(60)));
        assert_eq!(
            reap_and_end(&mut h),
            vec![Effect::Hold, Effect::ReleaseLock]
        );
        assert_eq!(h.session.state, State::Stopped);
        assert_eq!(h.session.next_retry, None);
    }

    #[test]
    fn pairing_expired_precedence() {
        // (close code, state, action, quarantined)
        let cases = [
            (None, State::LoggedOut, Action::Stop, false),
            (Some(408), State::LoggedOut, Action::Stop, false),
            (Some(515), State::LoggedOut, Action::Stop, false),
            (Some(401), State::LoggedOut, Action::Logout, true),
            (Some(440), State::Stopped, Action::Stop, false),
        ];
        for (code, state, action, quarantined) in cases {
            let mut h = Harness::new(no_jitter());
            h.feed(Input::Start);
            h.feed(Input::Event(WorkerEvent::PairingExpired));
            let effects = h.exit_with(code, ExitKind::Code(0));
            assert_eq!(h.session.state, state, "{code:?}");
            assert_eq!(h.session.last_action, Some(action), "{code:?}");
            assert_eq!(
                effects.contains(&Effect::Quarantine),
                quarantined,
                "{code:?}"
            );
            assert_eq!(h.spawns, 1, "{code:?}: never retried");
        }
    }

    #[test]
    fn a_hold_found_at_start_up_keeps_the_session_as_it_was() {
        let mut h = Harness::new(no_jitter());
        let cx = h.cx();
        assert_eq!(h.session.handle(Input::Start, cx), vec![Effect::Prepare]);
        let hold = Hold {
            state: State::Stopped,
            last_code: Some(CloseKey::Code(440)),
            last_reason: Some("conflict".into()),
            last_action: Some(Action::Stop),
            at_ms: Some(1_000),
        };
        assert_eq!(
            h.session.handle(Input::Held(hold), cx),
            vec![Effect::ReleaseLock]
        );
        assert_eq!(h.session.state, State::Stopped);
        assert_eq!(h.session.last_close, Some(CloseKey::Code(440)));
        assert_eq!(
            h.session.last_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        );
        assert!(matches!(h.session.phase, Phase::Idle));
        // An operator's start is a start.
        assert_eq!(h.feed(Input::Start), vec![Effect::Prepare, Effect::Spawn]);
    }

    #[test]
    fn a_failed_quarantine_is_shown() {
        let mut h = Harness::new(no_jitter());
        let cx = h.cx();
        h.session.handle(Input::Start, cx);
        h.session.handle(Input::Prepared, cx);
        h.session.handle(Input::Spawned { pid: 7 }, cx);
        h.session.handle(closed(401, None), cx);
        h.session.handle(
            Input::Reaped {
                exit: ExitKind::Code(0),
            },
            cx,
        );
        assert_eq!(
            h.session.handle(Input::Ended { jitter: 0.0 }, cx),
            vec![Effect::Quarantine]
        );
        h.session.handle(
            Input::Quarantined {
                error: Some("No space left on device".into()),
            },
            cx,
        );
        assert_eq!(h.session.state, State::LoggedOut);
        let reason = h.session.last_reason.clone().unwrap();
        assert_eq!(
            reason,
            "r; quarantine failed, credentials left in place: No space left on device"
        );
    }

    fn clustered() -> Harness {
        let mut h = Harness::new(no_jitter());
        h.takeover_grace = Some(Duration::from_secs(2));
        h
    }

    #[test]
    fn with_a_cluster_ownership_comes_before_the_worker() {
        let mut h = clustered();
        assert_eq!(h.feed(Input::Start), vec![Effect::Acquire]);
        assert!(matches!(h.session.phase, Phase::Acquiring { .. }));
        assert_eq!(h.spawns, 0);
        assert_eq!(
            h.feed(Input::Acquired { epoch: 42 }),
            vec![Effect::Prepare, Effect::Spawn]
        );
        assert_eq!(
            h.session.owner.as_ref().map(|o| (o.epoch, o.ours)),
            Some((42, true))
        );
        // A reconnect keeps the ownership: no second acquire.
        h.exit_with(Some(408), ExitKind::Code(0));
        assert_eq!(
            h.advance(Duration::from_secs(1)),
            vec![Effect::Prepare, Effect::Spawn]
        );
    }

    #[test]
    fn a_session_owned_elsewhere_stands_by_and_takes_over_after_the_grace() {
        let mut h = clustered();
        h.feed(Input::Start);
        h.feed(Input::OwnedElsewhere {
            node: "host-a".into(),
            epoch: 7,
        });
        assert_eq!(h.session.state, State::Standby);
        assert_eq!(
            h.session.last_reason.as_deref(),
            Some("owned by host-a (epoch 7)")
        );
        assert_eq!(
            h.advance(Duration::from_secs(3600)),
            vec![],
            "waits for the key to go"
        );
        h.feed(Input::OwnerGone);
        assert_eq!(h.advance(Duration::from_millis(1999)), vec![]);
        assert_eq!(h.advance(Duration::from_millis(1)), vec![Effect::Acquire]);
        h.feed(Input::Acquired { epoch: 9 });
        assert_eq!(h.spawns, 1);
    }

    #[test]
    fn without_etcd_there_is_no_ownership_and_no_worker() {
        let mut h = clustered();
        h.feed(Input::Start);
        h.feed(Input::AcquireFailed {
            reason: "etcd unreachable".into(),
        });
        assert_eq!(h.session.state, State::Standby);
        assert_eq!(h.spawns, 0);
        assert_eq!(
            h.advance(Duration::from_secs(2)),
            vec![Effect::Acquire],
            "tried again"
        );
    }

    #[test]
    fn a_lost_ownership_ends_the_worker_and_stands_by_without_a_release() {
        let mut h = clustered();
        h.feed(Input::Start);
        h.feed(Input::Acquired { epoch: 1 });
        h.feed(Input::Event(WorkerEvent::Connected { jid: None }));
        assert_eq!(
            h.feed(Input::OwnershipLost {
                new_owner: Some("host-b".into())
            }),
            vec![Effect::Terminate]
        );
        // The worker's 440 (the new owner connected) is not the policy's.
        let effects = h.exit_with(Some(440), ExitKind::Code(0));
        assert_eq!(
            effects,
            vec![Effect::ReleaseLock],
            "no Release: the key is not ours"
        );
        assert_eq!(h.session.state, State::Standby);
        assert_eq!(
            h.session.last_reason.as_deref(),
            Some("ownership lost to host-b")
        );
        assert_eq!(h.session.last_action, None);
        assert_eq!(h.spawns, 1);
    }

    #[test]
    fn an_operator_stop_gives_the_session_up() {
        let mut h = clustered();
        h.feed(Input::Start);
        h.feed(Input::Acquired { epoch: 1 });
        assert_eq!(h.feed(Input::Stop), vec![Effect::Terminate]);
        let effects = h.exit_with(None, ExitKind::Signal(15));
        assert_eq!(effects, vec![Effect::ReleaseLock, Effect::Release]);
        assert_eq!(h.session.state, State::Stopped);
        // A stop while acquiring releases what the acquire got.
        let mut h = clustered();
        h.feed(Input::Start);
        h.feed(Input::Stop);
        assert_eq!(h.feed(Input::Acquired { epoch: 2 }), vec![Effect::Release]);
        assert_eq!(h.spawns, 0);
    }
    #[test]
    fn the_watch_seeing_another_owner_ends_ours_and_names_it() {
        let mut h = clustered();
        h.feed(Input::Start);
        h.feed(Input::Acquired { epoch: 5 });
        // Our own key, seen by the watch: nothing happens.
        assert_eq!(
            h.feed(Input::OwnerChanged {
                node: "host-a".into(),
                epoch: 5
            }),
            vec![]
        );
        // A newer key: someone else owns the session now.
        assert_eq!(
            h.feed(Input::OwnerChanged {
                node: "host-b".into(),
                epoch: 9
            }),
            vec![Effect::Terminate]
        );
        h.exit_with(None, ExitKind::Signal(15));
        assert_eq!(h.session.state, State::Standby);
        assert_eq!(
            h.session
                .owner
                .as_ref()
                .map(|o| (o.node.as_str(), o.epoch, o.ours)),
            Some(("host-b", 9, false))
        );
        assert_eq!(
            h.session.last_reason.as_deref(),
            Some("ownership lost to host-b")
        );
    }

    #[test]
    fn a_fenced_session_learns_its_new_owner_from_the_watch() {
        let mut h = clustered();
        h.feed(Input::Start);
        h.feed(Input::Acquired { epoch: 5 });
        h.feed(Input::OwnershipLost { new_owner: None });
        h.exit_with(None, ExitKind::Signal(15));
        assert_eq!(h.session.last_reason.as_deref(), Some("ownership lost"));
        h.feed(Input::OwnerChanged {
            node: "host-b".into(),
            epoch: 11,
        });
        assert_eq!(
            h.session.last_reason.as_deref(),
            Some("ownership lost to host-b")
        );
        assert_eq!(h.session.owner.as_ref().map(|o| o.epoch), Some(11));
        assert_eq!(
            h.advance(Duration::from_secs(3600)),
            vec![],
            "waits for the key"
        );
    }

    #[test]
    fn a_release_seen_during_the_acquire_is_not_lost() {
        let mut h = clustered();
        h.feed(Input::Start);
        // The owner's key goes while our acquire is in flight, and the
        // answer says "owned": it predates the release.
        h.feed(Input::OwnerGone);
        h.feed(Input::OwnedElsewhere {
            node: "host-a".into(),
            epoch: 3,
        });
        assert_eq!(h.session.state, State::Standby);
        assert_eq!(h.advance(Duration::from_secs(2)), vec![Effect::Acquire]);
    }

    #[test]
    fn a_lost_ownership_during_the_acquire_stands_by_whatever_the_answer() {
        for answer in [
            Input::AcquireFailed {
                reason: "acquired under a lease that is not trusted any more".into(),
            },
            Input::OwnedElsewhere {
                node: "host-b".into(),
                epoch: 4,
            },
        ] {
            let mut h = clustered();
            h.feed(Input::Start);
            h.feed(Input::OwnershipLost { new_owner: None });
            assert_eq!(h.feed(answer), vec![]);
            assert_eq!(h.session.state, State::Standby, "not stopped: nobody asked");
            assert_eq!(h.spawns, 0);
        }
    }
}
