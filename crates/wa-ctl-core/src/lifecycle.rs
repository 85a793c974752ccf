//! The lifecycle of one session, as a pure state machine.
//!
//! [`Session::handle`] takes an [`Input`] (an operator command, a worker
//! event, a worker's exit, a timer) and returns the [`Effect`]s the
//! supervisor must carry out: spawn, signal, quarantine, release the lock.
//! Time and randomness come in as values, so the whole policy (backoff,
//! breaker, code to action) is tested here without a single process.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::policy::{Action, CloseKey, Policy};
use crate::protocol::WorkerEvent;

/// Where a session is in its life. The names are part of the status contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A worker is running and has not yet reported a QR code or a connection.
    Starting,
    /// A worker is waiting for a QR code or pair code to be used.
    Pairing,
    /// A worker reported that its connection is up.
    Connected,
    /// No worker runs; a new one is spawned when the backoff delay ends.
    Backoff,
    /// The worker was told to stop and has not exited yet (an extension of
    /// the documented states: it lasts at most `stop_timeout`).
    Stopping,
    /// No worker runs and none will until an operator starts the session.
    Stopped,
    /// The worker reported a logout; the credentials are in quarantine.
    LoggedOut,
    /// The crash-loop breaker tripped; an operator must start the session.
    Failed,
    /// Another supervisor holds this session's lock.
    Locked,
}

impl State {
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
        }
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

/// What the session does once its worker is gone after an operator stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    /// Stay stopped.
    Rest,
    /// Start again: `wa-ctl restart`, or a `start` that arrived mid-stop.
    Start,
}

/// The worker process a session currently owns.
#[derive(Debug, Clone)]
pub struct Worker {
    pub pid: u32,
    pub spawned_at: Instant,
    pub connected_at: Option<Instant>,
    /// The last `closed` event: it decides the action when the worker exits.
    pub close: Option<(u16, Option<String>)>,
    /// The worker reported that pairing expired.
    pub pairing_expired: bool,
    /// Set once the supervisor has asked this worker to stop.
    stopping: Option<AfterStop>,
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
    /// A worker was spawned for this session.
    Spawned { pid: u32 },
    /// Spawning failed; `reason` says why.
    SpawnFailed { reason: String, jitter: f64 },
    /// The session lock is held by another supervisor.
    LockBusy,
    /// The current worker reported an event.
    Event(WorkerEvent),
    /// The current worker exited and was reaped.
    Exited { exit: ExitKind, jitter: f64 },
    /// A deadline of this session's may have passed.
    Tick,
}

/// Something the supervisor must do for this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Take the session lock if not held, end leftovers, spawn a worker, and
    /// answer with `Spawned`, `SpawnFailed` or `LockBusy`.
    Spawn,
    /// Send SIGTERM to the worker's process group.
    Terminate,
    /// Send SIGKILL to the worker's process group: the grace period is over.
    KillGroup,
    /// Move the session directory into quarantine (under the lock).
    Quarantine,
    /// Release the session lock: the session no longer runs here.
    ReleaseLock,
}

/// The fixed facts a transition needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub stop_timeout: Duration,
    pub now: Instant,
}

/// One session's state.
#[derive(Debug, Clone)]
pub struct Session {
    pub state: State,
    pub worker: Option<Worker>,
    /// Restarts since an operator last started the session.
    pub restarts: u32,
    /// When each restart inside the breaker's window was decided.
    restart_times: VecDeque<Instant>,
    /// Consecutive reconnects: the exponent of the backoff.
    backoff_attempt: u32,
    pub last_close: Option<CloseKey>,
    pub last_reason: Option<String>,
    pub last_action: Option<Action>,
    /// When a backoff ends.
    pub next_retry: Option<Instant>,
    /// When a stopping worker gets SIGKILL.
    pub kill_at: Option<Instant>,
    /// The QR payload or pair code waiting to be used.
    pub pairing_code: Option<PairingCode>,
    pub jid: Option<String>,
}

/// A code the worker asked the user to scan or type. Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "code", rename_all = "snake_case")]
pub enum PairingCode {
    Qr(String),
    PairCode(String),
}

impl Default for Session {
    fn default() -> Self {
        Session {
            state: State::Stopped,
            worker: None,
            restarts: 0,
            restart_times: VecDeque::new(),
            backoff_attempt: 0,
            last_close: None,
            last_reason: None,
            last_action: None,
            next_retry: None,
            kill_at: None,
            pairing_code: None,
            jid: None,
        }
    }
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// The earliest deadline this session waits for, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.next_retry, self.kill_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a session lock should be held: a worker runs, or will.
    pub fn wants_lock(&self) -> bool {
        self.worker.is_some() || matches!(self.state, State::Backoff | State::Starting)
    }

    /// Applies one input and returns what to do.
    pub fn handle(&mut self, input: Input, cx: Context<'_>) -> Vec<Effect> {
        match input {
            Input::Start => self.start(cx, false),
            Input::Restart => self.start(cx, true),
            Input::Stop => self.stop(cx, AfterStop::Rest),
            Input::Spawned { pid } => {
                self.worker = Some(Worker {
                    pid,
                    spawned_at: cx.now,
                    connected_at: None,
                    close: None,
                    pairing_expired: false,
                    stopping: None,
                });
                self.state = State::Starting;
                vec![]
            }
            Input::SpawnFailed { reason, jitter } => {
                self.ended(CloseKey::Crash, Some(reason), None, cx, jitter)
            }
            Input::LockBusy => {
                self.state = State::Locked;
                self.next_retry = None;
                vec![]
            }
            Input::Event(event) => {
                self.on_event(event, cx.now);
                vec![]
            }
            Input::Exited { exit, jitter } => {
                let Some(worker) = self.worker.take() else {
                    return vec![];
                };
                self.kill_at = None;
                self.pairing_code = None;
                let (key, reason) = match (&worker.close, exit) {
                    (Some((code, reason)), _) => (CloseKey::Code(*code), reason.clone()),
                    (None, ExitKind::Code(0)) => (CloseKey::Exit, None),
                    (None, ExitKind::Code(n)) => {
                        (CloseKey::Crash, Some(format!("exited with status {n}")))
                    }
                    (None, ExitKind::Signal(s)) => {
                        (CloseKey::Crash, Some(format!("killed by signal {s}")))
                    }
                };
                // The watcher has already ended whatever the worker left in
                // its process group before reaping it, so nothing of it
                // remains when a new worker is spawned.
                self.ended(key, reason, Some(worker), cx, jitter)
            }
            Input::Tick => self.tick(cx),
        }
    }

    fn start(&mut self, cx: Context<'_>, restart: bool) -> Vec<Effect> {
        if let Some(worker) = &mut self.worker {
            return match worker.stopping {
                // Already stopping: start again once it is gone.
                Some(_) => {
                    worker.stopping = Some(AfterStop::Start);
                    vec![]
                }
                None if restart => self.stop(cx, AfterStop::Start),
                None => vec![],
            };
        }
        // An operator start is a fresh start: the breaker and the backoff
        // begin again.
        self.restarts = 0;
        self.restart_times.clear();
        self.backoff_attempt = 0;
        self.next_retry = None;
        self.state = State::Starting;
        vec![Effect::Spawn]
    }

    fn stop(&mut self, cx: Context<'_>, after: AfterStop) -> Vec<Effect> {
        self.next_retry = None;
        match &mut self.worker {
            Some(worker) => {
                let first = worker.stopping.is_none();
                worker.stopping = Some(after);
                self.state = State::Stopping;
                if first {
                    self.kill_at = Some(cx.now + cx.stop_timeout);
                    vec![Effect::Terminate]
                } else {
                    vec![]
                }
            }
            None => {
                let was_active = self.wants_lock();
                if self.state != State::LoggedOut && self.state != State::Failed {
                    self.state = State::Stopped;
                }
                if was_active {
                    vec![Effect::ReleaseLock]
                } else {
                    vec![]
                }
            }
        }
    }

    fn on_event(&mut self, event: WorkerEvent, now: Instant) {
        let Some(worker) = &mut self.worker else {
            return;
        };
        let stopping = worker.stopping.is_some();
        match event {
            WorkerEvent::Qr { code } => {
                self.pairing_code = Some(PairingCode::Qr(code));
                if !stopping {
                    self.state = State::Pairing;
                }
            }
            WorkerEvent::PairCode { code } => {
                self.pairing_code = Some(PairingCode::PairCode(code));
                if !stopping {
                    self.state = State::Pairing;
                }
            }
            WorkerEvent::Connected { jid } => {
                worker.connected_at.get_or_insert(now);
                self.pairing_code = None;
                self.jid = jid.or(self.jid.take());
                if !stopping {
                    self.state = State::Connected;
                }
            }
            WorkerEvent::Closed { code, reason } => worker.close = Some((code, reason)),
            WorkerEvent::PairingExpired => worker.pairing_expired = true,
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

        if let Some(after) = worker.as_ref().and_then(|w| w.stopping) {
            // An operator or shutdown stop: the policy does not apply.
            self.last_action = None;
            self.state = State::Stopped;
            return match after {
                AfterStop::Rest => vec![Effect::ReleaseLock],
                AfterStop::Start => self.start(cx, false),
            };
        }

        if worker.as_ref().is_some_and(|w| w.pairing_expired) {
            // Not a logout of paired credentials: there is nothing to
            // quarantine, and a new QR code loop helps nobody. `wa-ctl login`
            // starts pairing again.
            self.last_reason = Some(PAIRING_EXPIRED.to_owned());
            self.last_action = Some(Action::Stop);
            self.state = State::LoggedOut;
            return vec![Effect::ReleaseLock];
        }

        let connected_for = worker
            .as_ref()
            .and_then(|w| w.connected_at)
            .map(|t| cx.now.saturating_duration_since(t));
        if connected_for.is_some_and(|d| d >= cx.policy.reset_after) {
            self.backoff_attempt = 0;
        }

        let action = cx.policy.action_for(key);
        self.last_action = Some(action);
        match action {
            Action::Stop => {
                self.state = State::Stopped;
                vec![Effect::ReleaseLock]
            }
            Action::Logout => {
                self.state = State::LoggedOut;
                self.jid = None;
                vec![Effect::Quarantine, Effect::ReleaseLock]
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
                    return vec![Effect::ReleaseLock];
                }
                self.restart_times.push_back(cx.now);
                self.restarts = self.restarts.saturating_add(1);
                if action == Action::Restart {
                    self.state = State::Starting;
                    vec![Effect::Spawn]
                } else {
                    let delay = cx.policy.backoff_delay(self.backoff_attempt, jitter);
                    self.backoff_attempt = self.backoff_attempt.saturating_add(1);
                    if delay.is_zero() {
                        // No delay configured: no detour through the timer.
                        self.state = State::Starting;
                        return vec![Effect::Spawn];
                    }
                    self.state = State::Backoff;
                    self.next_retry = Some(cx.now + delay);
                    vec![]
                }
            }
        }
    }

    fn tick(&mut self, cx: Context<'_>) -> Vec<Effect> {
        let mut effects = vec![];
        if self.kill_at.is_some_and(|t| t <= cx.now) {
            self.kill_at = None;
            effects.push(Effect::KillGroup);
        }
        if self.state == State::Backoff && self.next_retry.is_some_and(|t| t <= cx.now) {
            self.next_retry = None;
            self.state = State::Starting;
            effects.push(Effect::Spawn);
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Harness {
        policy: Policy,
        now: Instant,
        session: Session,
        spawns: u32,
    }

    impl Harness {
        fn new(policy: Policy) -> Self {
            Harness {
                policy,
                now: Instant::now(),
                session: Session::new(),
                spawns: 0,
            }
        }

        fn feed(&mut self, input: Input) -> Vec<Effect> {
            let cx = Context {
                policy: &self.policy,
                stop_timeout: Duration::from_secs(10),
                now: self.now,
            };
            let effects = self.session.handle(input, cx);
            if effects.contains(&Effect::Spawn) {
                self.spawns += 1;
                let pid = 1000 + self.spawns;
                let cx = Context {
                    policy: &self.policy,
                    stop_timeout: Duration::from_secs(10),
                    now: self.now,
                };
                self.session.handle(Input::Spawned { pid }, cx);
            }
            effects
        }

        fn advance(&mut self, d: Duration) -> Vec<Effect> {
            self.now += d;
            self.feed(Input::Tick)
        }

        fn exit_with(&mut self, code: Option<u16>, exit: ExitKind) -> Vec<Effect> {
            if let Some(code) = code {
                self.feed(Input::Event(WorkerEvent::Closed { code, reason: None }));
            }
            self.feed(Input::Exited { exit, jitter: 0.0 })
        }
    }

    fn no_jitter() -> Policy {
        Policy {
            jitter: 0.0,
            ..Policy::default()
        }
    }

    #[test]
    fn start_spawns_and_events_move_state() {
        let mut h = Harness::new(no_jitter());
        assert_eq!(h.feed(Input::Start), vec![Effect::Spawn]);
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
        assert_eq!(e, vec![Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::Stopped);
        assert_eq!(h.session.last_close, Some(CloseKey::Code(440)));
        assert_eq!(h.session.last_action, Some(Action::Stop));
        assert_eq!(h.session.deadline(), None);
    }

    #[test]
    fn logout_quarantines() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        let e = h.exit_with(Some(401), ExitKind::Code(1));
        assert_eq!(e, vec![Effect::Quarantine, Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::LoggedOut);
    }

    #[test]
    fn restart_required_spawns_at_once() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        let e = h.exit_with(Some(515), ExitKind::Code(0));
        assert_eq!(e, vec![Effect::Spawn]);
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
            assert_eq!(h.advance(Duration::from_millis(1)), vec![Effect::Spawn]);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16]);
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
            vec![Effect::Spawn]
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
        assert_eq!(h.feed(Input::Start), vec![Effect::Spawn]);
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
    fn restart_waits_for_the_old_worker() {
        let mut h = Harness::new(no_jitter());
        h.feed(Input::Start);
        assert_eq!(h.feed(Input::Restart), vec![Effect::Terminate]);
        assert_eq!(h.spawns, 1, "never two workers at once");
        let e = h.exit_with(None, ExitKind::Code(0));
        assert_eq!(e, vec![Effect::Spawn]);
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
    fn spawn_failure_counts_as_crash() {
        let mut h = Harness::new(Policy {
            max_restarts: 1,
            ..no_jitter()
        });
        let cx = Context {
            policy: &h.policy,
            stop_timeout: Duration::from_secs(1),
            now: h.now,
        };
        assert_eq!(h.session.handle(Input::Start, cx), vec![Effect::Spawn]);
        h.session.handle(
            Input::SpawnFailed {
                reason: "ENOENT".into(),
                jitter: 0.0,
            },
            cx,
        );
        assert_eq!(h.session.state, State::Backoff);
        h.session.handle(
            Input::SpawnFailed {
                reason: "ENOENT".into(),
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
        assert_eq!(e, vec![Effect::ReleaseLock]);
        assert_eq!(h.session.state, State::LoggedOut);
        assert_eq!(h.session.last_reason.as_deref(), Some(PAIRING_EXPIRED));
        assert_eq!(h.session.pairing_code, None);
        assert_eq!(
            h.feed(Input::Start),
            vec![Effect::Spawn],
            "login pairs again"
        );
    }

    #[test]
    fn lock_busy_reports_locked() {
        let mut h = Harness::new(no_jitter());
        let cx = Context {
            policy: &h.policy,
            stop_timeout: Duration::from_secs(1),
            now: h.now,
        };
        h.session.handle(Input::Start, cx);
        h.session.handle(Input::LockBusy, cx);
        assert_eq!(h.session.state, State::Locked);
        assert!(!h.session.wants_lock());
    }
}
