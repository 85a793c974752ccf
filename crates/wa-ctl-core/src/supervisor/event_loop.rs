//! The event loop: one `select!` over signals, control requests, timers and
//! the events of workers and jobs, each turned into an [`Event`].
//!
//! Only the loop touches session state: it feeds inputs to each session's
//! pure [`Session`] machine and carries out the effects. It never waits:
//! whatever can take time (taking a lock and ending leftovers, listing
//! orphans, quarantining, writing the status file) is a job on tokio's
//! blocking pool or a task, and comes back as an event. The work done per
//! event is constant: deadlines sit in an ordered set, per-state counts are
//! kept as states change, and only the sessions an event touched are looked
//! at afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::config::cluster::SAFETY_MARGIN;
use crate::control::{Request, Response, SessionUpdate};
use crate::leftovers::Leftover;
use crate::lifecycle::{Context, Effect, Hold, Input, Phase, State};
use crate::policy::Jitter;
use crate::process::{self, Spawner};
use crate::protocol::WorkerEvent;
use crate::session_id::SessionId;
use crate::session_lock::SessionLocks;
use crate::status::{SessionRecord, StatusRecord, unix_ms};
use crate::systemd::Notifier;
use crate::text::Quoted;

use super::control_server;
use super::event::{Event, Generation, PrepareFailure, SlotId};
use super::holds::HoldWriter;
use super::log_file::LogFile;
use super::orphans::Sweeper;
use super::ownership::{Agent, Command, LeaseGeneration, OwnershipEvent};
use super::signals::{SignalEvent, Signals};
use super::slot::Slot;
use super::spawn::{self, PREPARE_BATCH, PrepareRequest};
use super::spawner::{SpawnRequest, SpawnResult, SpawnerThread};
use super::status_file::StatusFile;
use super::surface::{ControlHandle, Surface, SurfaceError};
use super::timers::{Deadlines, sleep_until_or_never};
use super::watcher;

/// Events queued from watchers and jobs. Bounded, so that a worker flooding
/// its events pipe is slowed down by backpressure instead of growing memory.
const EVENT_QUEUE: usize = 1024;

/// Control requests queued from connections.
const CONTROL_QUEUE: usize = 64;

/// Children reaped per turn of the loop: a burst of exits is served in
/// slices, with control requests answered in between.
const REAP_BATCH: usize = 128;

/// The pause after a full scan for exited children, as a multiple of what
/// it cost: the kernel looks at every child to answer, so a scan is paced to
/// stay about 1% of the loop's time.
const FULL_SCAN_PAUSE_FACTOR: u32 = 100;

/// The longest a full scan waits after a SIGCHLD that no pipe explained.
const FULL_SCAN_MAX_PAUSE: Duration = Duration::from_secs(1);

/// When a closed pipe explained a SIGCHLD, a full scan still follows this
/// late: a coalesced SIGCHLD may have hidden another exit (a worker whose
/// pipe a grandchild holds, an orphan), and it must be found eventually.
const FULL_SCAN_SAFETY_DELAY: Duration = Duration::from_secs(1);

/// Deadlines handled per turn of the loop, for the same reason.
const TIMER_BATCH: usize = 128;

/// Sessions listed one by one in systemd's `STATUS=` line; more are counted.
const SUMMARY_DETAIL: usize = 4;

/// A session's worker arguments (after the program) and environment.
type WorkerArgs = (
    Arc<[String]>,
    Arc<std::collections::BTreeMap<String, String>>,
);

/// The number of [`Phase`] kinds, for the per-phase counts.
const PHASES: usize = 6;

/// This process's CPU time, user and system, in microseconds.
fn own_cpu_us() -> u64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let us = |t: nix::sys::time::TimeVal| {
                (t.tv_sec() as u64).saturating_mul(1_000_000) + t.tv_usec() as u64
            };
            us(usage.user_time()) + us(usage.system_time())
        }
        Err(_) => 0,
    }
}

fn phase_index(phase: &Phase) -> usize {
    match phase {
        Phase::Idle => 0,
        Phase::Preparing { .. } => 1,
        Phase::Running(_) => 2,
        Phase::Ending { .. } => 3,
        Phase::Quarantining { .. } => 4,
        Phase::Acquiring { .. } => 5,
    }
}

/// The longest node name kept from etcd: a host name's limit. Another
/// node's name is untrusted text; it is escaped wherever it is shown, and
/// bounded here so that a huge value cannot grow every session's record.
const MAX_NODE_NAME: usize = 253;

fn node_name(raw: &str) -> String {
    match raw.char_indices().nth(MAX_NODE_NAME) {
        Some((end, _)) => format!("{}…", &raw[..end]),
        None => raw.to_owned(),
    }
}

/// The loop's view of its ownership across hosts (issue #10).
struct Cluster {
    agent: Agent,
    node: String,
    lease: Lease,
}

/// Whether this supervisor may own sessions right now.
enum Lease {
    /// Connecting for the first time: acquires wait in the agent.
    Connecting,
    /// A live lease, trusted until `fence_at`: the send time of the last
    /// acknowledged keepalive, plus the TTL, minus the safety margin and
    /// `stop_timeout`, so that the last worker is killed before the lease
    /// can expire.
    Live {
        generation: LeaseGeneration,
        fence_at: Instant,
    },
    /// No ownership: the lease is gone (`generation` is `None`), or no
    /// keepalive came through in time (a late one can still revive it).
    Fenced {
        generation: Option<LeaseGeneration>,
        reason: String,
    },
}

/// What the loop tells `wa-ctl start` (or systemd) once every session it
/// was started with has a worker, or has failed to get one.
pub(super) trait Readiness {
    fn ready(&mut self);
}

/// The loop's state. One per supervisor.
pub(super) struct EventLoop {
    config: Config,
    slots: Vec<Slot>,
    ids: HashMap<String, SlotId>,
    tx: mpsc::Sender<Event>,
    // Dropped before the spawner thread is joined: a result it is still
    // sending then fails instead of waiting for a loop that is gone.
    rx: mpsc::Receiver<Event>,
    control_tx: mpsc::Sender<Event>,
    control_rx: mpsc::Receiver<Event>,
    jitter: Jitter,
    /// Each session's worker arguments and environment, shared with the
    /// spawner thread without a copy per spawn.
    spawn_args: Vec<WorkerArgs>,
    spawner: SpawnerThread,
    /// Spawns handed to the spawner thread and not yet answered.
    spawns_in_flight: usize,
    /// Spawns held back while a full scan waits for the in-flight ones.
    held_spawns: std::collections::VecDeque<SpawnRequest>,
    /// A full scan is due but must wait until no spawn is in flight: it
    /// would reap a new worker the loop has not heard of yet.
    scan_waits_for_spawns: bool,
    locks: Arc<SessionLocks>,
    deadlines: Deadlines,
    sweeper: Sweeper,
    status_file: StatusFile,
    /// Live (unreaped) workers: pid to session and spawn.
    workers: HashMap<u32, (SlotId, Generation)>,
    by_state: [usize; State::ALL.len()],
    by_phase: [usize; PHASES],
    /// What the start-up scan found, until the first prepares have used it.
    startup_leftovers: Option<HashMap<PathBuf, Vec<Leftover>>>,
    scanning: bool,
    /// Sessions started at start-up that have not yet been through their
    /// first prepare (and spawn). Readiness is reported when none is left;
    /// restarts of flapping sessions meanwhile do not hold it back.
    starting_up: usize,
    ready_sent: bool,
    prepare_queue: Vec<SlotId>,
    touched: Vec<SlotId>,
    /// Workers whose events pipe closed: their exit is looked for by pid.
    exit_candidates: Vec<u32>,
    /// When the next full scan for exited children runs, if one is due.
    full_scan_at: Option<Instant>,
    /// When the pause after the last full scan ends.
    full_scan_allowed: Instant,
    /// A full scan stopped at its batch limit: go on at the next turn.
    reap_more: bool,
    shutting_down: bool,
    final_sweep_requested: bool,
    shutdown_waiters: Vec<oneshot::Sender<Response>>,
    started_at: SystemTime,
    holds: HoldWriter,
    log_file: LogFile,
    notifier: Notifier,
    journal: bool,
    /// Ownership across hosts, with `[cluster]` (issue #10).
    cluster: Option<Cluster>,
    /// The HTTP API, webhooks and metrics (issue #11): told of every
    /// session an event touched.
    surface: Option<Box<dyn Surface>>,
}

impl EventLoop {
    pub(super) fn new(
        config: Config,
        spawner: Spawner,
        locks: Arc<SessionLocks>,
    ) -> std::io::Result<EventLoop> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let spawner = SpawnerThread::start(spawner, tx.clone())?;
        let holds = HoldWriter::start()?;
        let config_log_path = config.log_path();
        let spawn_args = config
            .sessions
            .iter()
            .map(|s| (Arc::from(&s.command[1..]), Arc::new(s.env.clone())))
            .collect();
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let n = config.sessions.len();
        let slots = (0..n).map(|_| Slot::default()).collect();
        let ids = config
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.to_string(), i))
            .collect();
        let seed = unix_ms(SystemTime::now()) ^ (u64::from(std::process::id()) << 32);
        let mut by_state = [0; State::ALL.len()];
        by_state[State::Stopped.index()] = n;
        let mut by_phase = [0; PHASES];
        by_phase[0] = n;
        let status_file = StatusFile::new(&config.supervisor.runtime_dir);
        Ok(EventLoop {
            deadlines: Deadlines::new(n),
            config,
            slots,
            ids,
            tx,
            rx,
            control_tx,
            control_rx,
            jitter: Jitter::seeded(seed),
            spawn_args,
            spawner,
            spawns_in_flight: 0,
            held_spawns: std::collections::VecDeque::new(),
            scan_waits_for_spawns: false,
            locks,
            sweeper: Sweeper::default(),
            status_file,
            workers: HashMap::new(),
            by_state,
            by_phase,
            startup_leftovers: None,
            scanning: false,
            starting_up: 0,
            ready_sent: false,
            prepare_queue: Vec::new(),
            touched: Vec::new(),
            exit_candidates: Vec::new(),
            full_scan_at: None,
            full_scan_allowed: Instant::now(),
            reap_more: false,
            shutting_down: false,
            final_sweep_requested: false,
            shutdown_waiters: Vec::new(),
            started_at: SystemTime::now(),
            holds,
            log_file: LogFile::detect(config_log_path),
            notifier: Notifier::from_env(),
            journal: std::env::var_os("JOURNAL_STREAM").is_some(),
            cluster: None,
            surface: None,
        })
    }

    /// Starts the application surface (issue #11), before the loop runs.
    pub(super) fn set_surface(
        &mut self,
        mut surface: Box<dyn Surface>,
    ) -> Result<(), SurfaceError> {
        let now_sys = SystemTime::now();
        let now = Instant::now();
        let records = (0..self.slots.len())
            .map(|idx| self.session_record(idx, now_sys, now))
            .collect();
        surface.start(
            ControlHandle {
                tx: self.control_tx.clone(),
            },
            records,
        )?;
        self.surface = Some(surface);
        Ok(())
    }

    /// Runs until every session is stopped after a shutdown.
    pub(super) async fn run(
        &mut self,
        listener: UnixListener,
        mut signals: Signals,
        only: Option<Vec<SessionId>>,
        readiness: &mut dyn Readiness,
    ) {
        info!(
            pid = std::process::id(),
            sessions = self.slots.len(),
            "supervisor started"
        );
        control_server::spawn(listener, self.control_tx.clone());
        if let Some(config) = self.config.cluster.clone() {
            // Checked when the configuration was read; the fallback is
            // never used.
            let keepalive_every = config
                .timeline(self.config.supervisor.stop_timeout)
                .map_or(config.lease_ttl / 9, |t| t.keepalive_every);
            info!(node = %Quoted(&config.node), endpoints = ?config.endpoints, prefix = %config.prefix, keepalive_every = ?keepalive_every, "sessions are owned across hosts through etcd");
            self.cluster = Some(Cluster {
                node: config.node.clone(),
                agent: Agent::start(config, keepalive_every, self.tx.clone()),
                lease: Lease::Connecting,
            });
        }
        self.scanning = true;
        spawn::startup_scan(
            self.config.supervisor.state_dir.join("sessions"),
            self.tx.clone(),
        );
        for idx in 0..self.slots.len() {
            let wanted = only
                .as_ref()
                .is_none_or(|only| only.contains(&self.config.sessions[idx].id));
            if wanted {
                // Named on the command line (`wa-ctl start ID`): the
                // operator's start clears a hold; otherwise it is honoured.
                match &only {
                    None => self.slots[idx].honour_hold = true,
                    Some(_) => self.clear_hold(idx, true),
                }
                self.slots[idx].starting_up = true;
                self.starting_up += 1;
                self.apply(idx, Input::Start);
            }
        }
        let watchdog_interval = self.notifier.watchdog_interval();
        let mut watchdog_at = watchdog_interval.map(|i| Instant::now() + i);

        loop {
            self.flush_prepares();
            if !self.ready_sent && !self.scanning && self.starting_up == 0 {
                self.ready_sent = true;
                readiness.ready();
                // Start-up (parsing, the process-table scan, the prepare
                // jobs) is the supervisor's peak of allocation; give what is
                // free back to the system before settling in for months.
                // SAFETY: malloc_trim only releases free heap memory.
                unsafe {
                    nix::libc::malloc_trim(0);
                }
                let released = process::unmap_startup_pages();
                debug!(kib = released, "start-up pages of the executable unmapped");
                let summary = self.summary();
                self.notifier.ready(&summary);
                self.write_status(Instant::now());
            }
            if self.shutting_down && self.by_phase[0] == self.slots.len() {
                if !self.final_sweep_requested {
                    // Nothing the workers detached from their groups
                    // outlives the supervisor.
                    self.final_sweep_requested = true;
                    self.sweeper.request_everything();
                    self.sweep_if_due();
                }
                // A cheap sweep is done at once: exit now, not at the next
                // event (a timer up to a second, or a keepalive, away).
                if !self.sweeper.busy() {
                    break;
                }
            }
            let next_timer = [
                self.deadlines.next(),
                self.sweeper.due(),
                self.full_scan_at,
                self.status_file.due().filter(|_| self.ready_sent),
                watchdog_at,
                self.fence_at(),
            ]
            .into_iter()
            .flatten()
            .min();
            let event = tokio::select! {
                // Signals and control requests first: a worker's flood of
                // events or a burst of exits cannot delay a `ping`, a
                // `status` or a stop.
                biased;
                signal = signals.recv() => Event::Signal(signal),
                Some(event) = self.control_rx.recv() => event,
                () = std::future::ready(()), if self.reap_more => {
                    self.full_scan();
                    self.answer_touched();
                    continue;
                }
                () = sleep_until_or_never(next_timer) => {
                    let now = Instant::now();
                    if watchdog_at.is_some_and(|t| t <= now) {
                        // Reached only when the loop is free to run: a stuck
                        // loop misses its keep-alive and systemd restarts it.
                        // Not before READY=1: systemd arms the watchdog once
                        // start-up is complete, and a keep-alive first would
                        // read as a protocol out of order.
                        if self.ready_sent {
                            self.notifier.watchdog();
                        }
                        watchdog_at = watchdog_interval.map(|i| now + i);
                    }
                    self.timers(now);
                    self.answer_touched();
                    continue;
                }
                Some(event) = self.rx.recv() => event,
            };
            self.handle(event);
            self.answer_touched();
        }
        // Holds decided during the shutdown are on disk before the
        // supervisor says it stopped.
        self.holds.finish();
        if let Some(cluster) = self.cluster.as_mut() {
            // The workers are gone: revoking the lease releases every
            // session at once, and a standby takes over without waiting
            // for the TTL.
            cluster.agent.shutdown().await;
        }
        info!("supervisor stopped");
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(Response::ok("stopped"));
        }
        if let Some(surface) = self.surface.as_mut() {
            // After the answer: a receiver that is down cannot delay
            // `wa-ctl stop`, only the exit, and that by a bounded time.
            surface.finish().await;
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(SignalEvent::Shutdown) if self.shutting_down => {
                warn!("second stop signal: killing workers without waiting");
                for slot in &self.slots {
                    if let Some(worker) = slot.session.running() {
                        let _ = process::signal_group(worker.pid, Signal::SIGKILL);
                    }
                }
            }
            Event::Signal(SignalEvent::Shutdown) => self.begin_shutdown(),
            // logrotate's convention (issue #9): a log moved away is written
            // no more. Opening a file may wait on its file system: off the
            // loop. The configuration is not reloaded.
            Event::Signal(SignalEvent::Hangup) => self.log_file.reopen_off_loop(),
            Event::Signal(SignalEvent::Child) => {
                let explained = self.reap_candidates() > 0;
                self.schedule_full_scan(explained);
            }
            Event::PipeClosed { slot, generation } => {
                if self.slots[slot].generation == generation
                    && let Some(worker) = self.slots[slot].session.running()
                {
                    self.exit_candidates.push(worker.pid);
                    self.reap_candidates();
                }
            }
            Event::Worker {
                slot,
                generation,
                event,
            } => self.worker_event(slot, generation, event),
            Event::Drained { slot, generation } => {
                if self.slots[slot].generation == generation
                    && matches!(self.slots[slot].session.phase, Phase::Ending { .. })
                {
                    self.sweeper.request(slot);
                    self.sweep_if_due();
                }
            }
            Event::Control(request, reply) => self.control(request, reply),
            Event::Login {
                session,
                phone,
                updates,
            } => self.login(session, phone, updates),
            Event::StartupScan(found) => {
                self.scanning = false;
                self.startup_leftovers = Some(found);
            }
            Event::Prepared { slot, result } => {
                let input = match result {
                    Ok(lock) => {
                        self.slots[slot].lock = Some(lock);
                        Input::Prepared
                    }
                    Err(PrepareFailure::Busy) => Input::LockBusy,
                    Err(PrepareFailure::Held(hold)) => {
                        self.slots[slot].held = true;
                        if std::mem::take(&mut self.slots[slot].start_overrides_hold) {
                            // An operator started the session while its
                            // start-up prepare read the hold: the operator
                            // wins. Shown held for a moment, then started.
                            self.apply(slot, Input::Held(hold));
                            self.clear_hold(slot, false);
                            self.apply(slot, Input::Start);
                            return;
                        }
                        Input::Held(hold)
                    }
                    Err(PrepareFailure::Failed(reason)) => Input::PrepareFailed {
                        reason,
                        jitter: self.jitter.sample(),
                    },
                };
                self.apply(slot, input);
            }
            Event::Spawned(result) => self.spawned(result),
            Event::Quarantined { slot, error } => self.apply(slot, Input::Quarantined { error }),
            Event::OrphansListed {
                sweep,
                children,
                cost,
            } => {
                let workers = &self.workers;
                let done = self.sweeper.listed(
                    sweep,
                    children,
                    cost,
                    |pid| workers.contains_key(&pid),
                    &self.tx,
                );
                self.swept(done);
            }
            Event::OrphansIdentified { sweep, found } => {
                let config = &self.config;
                let done = self.sweeper.identified(
                    sweep,
                    found,
                    |slot| config.session_dir(&config.sessions[slot].id),
                    &self.tx,
                );
                self.swept(done);
            }
            Event::OrphansEnded { sweep, pids } => {
                debug!(?pids, "orphans ended");
                let done = self.sweeper.ended(sweep);
                self.swept(done);
            }
            Event::StatusWritten(result) => self.status_file.written(result),
            Event::Ownership(event) => self.ownership_event(event),
        }
    }

    /// A session in `standby` with no owner known and no retry planned,
    /// while the lease is live: nothing would ever wake it.
    fn orphaned_standby(&self, idx: SlotId) -> bool {
        let session = &self.slots[idx].session;
        self.cluster
            .as_ref()
            .is_some_and(|c| matches!(c.lease, Lease::Live { .. }))
            && session.state == State::Standby
            && matches!(session.phase, Phase::Idle)
            && session.owner.is_none()
            && session.next_retry.is_none()
    }

    /// When this supervisor must stop trusting its lease, if it trusts it.
    fn fence_at(&self) -> Option<Instant> {
        match self.cluster.as_ref()?.lease {
            Lease::Live { fence_at, .. } => Some(fence_at),
            _ => None,
        }
    }

    /// The agent's news (issue #10).
    fn ownership_event(&mut self, event: OwnershipEvent) {
        let Some(cluster) = self.cluster.as_ref() else {
            return;
        };
        let current = match &cluster.lease {
            Lease::Live { generation, .. } => Some(*generation),
            Lease::Fenced { generation, .. } => *generation,
            Lease::Connecting => None,
        };
        match event {
            OwnershipEvent::LeaseGranted { generation, ack } => {
                self.renewed(generation, ack);
            }
            OwnershipEvent::Renewed { generation, ack } => {
                if current == Some(generation) {
                    self.renewed(generation, ack);
                }
            }
            OwnershipEvent::LeaseLost { generation, reason } => {
                if current == Some(generation) {
                    self.fence(true, format!("the lease is gone ({reason})"));
                }
            }
            OwnershipEvent::Unreachable { reason } => debug!("etcd: {reason}"),
            OwnershipEvent::Acquired {
                slot,
                generation,
                result,
            } => {
                let live =
                    matches!(cluster.lease, Lease::Live { generation: g, .. } if g == generation);
                let input = match result {
                    Ok(wa_ctl_cluster::Acquisition::Acquired { epoch }) if live => {
                        Input::Acquired { epoch }
                    }
                    // Taken under a lease that is gone or not renewed in
                    // time: not an ownership to spawn on.
                    Ok(wa_ctl_cluster::Acquisition::Acquired { .. }) => Input::AcquireFailed {
                        reason: "acquired under a lease that is not trusted any more".to_owned(),
                    },
                    Ok(wa_ctl_cluster::Acquisition::Owned { by, epoch }) => Input::OwnedElsewhere {
                        node: node_name(&by),
                        epoch,
                    },
                    Err(reason) => Input::AcquireFailed { reason },
                };
                let id = &self.config.sessions[slot].id;
                match &input {
                    Input::Acquired { epoch } => info!(session = %id, epoch, "owner: this node"),
                    Input::OwnedElsewhere { node, epoch } => {
                        info!(session = %id, owner = %Quoted(node), epoch, "standby: owned by another node")
                    }
                    Input::AcquireFailed { reason } => {
                        warn!(session = %id, "cannot acquire ownership: {reason}")
                    }
                    _ => {}
                }
                self.apply(slot, input);
            }
            OwnershipEvent::Change(change) => match change {
                wa_ctl_cluster::OwnerChange::Owned {
                    session_id,
                    by,
                    epoch,
                } => {
                    if let Some(&slot) = self.ids.get(&session_id) {
                        let node = node_name(&by);
                        let was_ours = self.slots[slot]
                            .session
                            .owner
                            .as_ref()
                            .is_some_and(|o| o.ours && o.epoch != epoch);
                        if was_ours {
                            warn!(session = %session_id, owner = %Quoted(&node), epoch, "ownership lost: another node owns the session now");
                        }
                        self.apply(slot, Input::OwnerChanged { node, epoch });
                    }
                }
                wa_ctl_cluster::OwnerChange::Released { session_id } => {
                    if let Some(&slot) = self.ids.get(&session_id) {
                        self.apply(slot, Input::OwnerGone);
                    }
                }
            },
            OwnershipEvent::Rewatched => self.retry_standbys(true),
        }
    }

    /// A keepalive (or the grant) was acknowledged: the lease is trusted
    /// until its new deadline.
    fn renewed(&mut self, generation: LeaseGeneration, ack: wa_ctl_cluster::KeepaliveAck) {
        let lease_ttl = self
            .config
            .cluster
            .as_ref()
            .map_or(ack.ttl, |c| c.lease_ttl);
        let margin = SAFETY_MARGIN + self.config.supervisor.stop_timeout;
        let fence_at =
            wa_ctl_cluster::ownership_deadline(ack.sent_at, ack.ttl.min(lease_ttl), margin);
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let was_live = matches!(cluster.lease, Lease::Live { .. });
        match fence_at {
            Some(fence_at) if fence_at > Instant::now() => {
                cluster.lease = Lease::Live {
                    generation,
                    fence_at,
                };
                if !was_live {
                    info!("lease live: sessions may be owned by this node");
                    self.retry_standbys(false);
                }
            }
            _ => self.fence(
                false,
                "a keepalive was acknowledged too late to trust".to_owned(),
            ),
        }
    }

    /// This node owns nothing from now on: every session it owned or was
    /// acquiring ends its worker (SIGTERM, then SIGKILL after
    /// `stop_timeout`, which still comes before the lease can expire) and
    /// stands by. A lease that is only late (`lease_gone` false) can be
    /// trusted again by a later acknowledged keepalive; a lease etcd says is
    /// gone cannot.
    fn fence(&mut self, lease_gone: bool, reason: String) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        warn!("ownership suspended: {reason}; every owned worker is stopped");
        let generation = match &cluster.lease {
            Lease::Live { generation, .. } if !lease_gone => Some(*generation),
            Lease::Fenced { generation, .. } if !lease_gone => *generation,
            _ => None,
        };
        cluster.lease = Lease::Fenced { generation, reason };
        for idx in 0..self.slots.len() {
            let session = &self.slots[idx].session;
            if session.owner.as_ref().is_some_and(|o| o.ours)
                || matches!(session.phase, Phase::Acquiring { .. })
            {
                self.apply(idx, Input::OwnershipLost { new_owner: None });
            }
        }
    }

    /// Standbys try again after their grace: the lease is back, or the
    /// watch had a gap (`all`), so a release may have been missed.
    fn retry_standbys(&mut self, all: bool) {
        for idx in 0..self.slots.len() {
            let session = &self.slots[idx].session;
            if session.state == State::Standby && matches!(session.phase, Phase::Idle) {
                if session.owner.as_ref().is_none_or(|o| o.ours) {
                    self.apply(idx, Input::OwnerGone);
                } else if all {
                    self.apply(idx, Input::Recheck);
                }
            }
        }
    }

    /// Starts an orphan sweep if one is due; a cheap listing is handled at once.
    fn sweep_if_due(&mut self) {
        if let Some((sweep, children, cost)) = self.sweeper.start_if_due(Instant::now(), &self.tx) {
            self.orphans_listed(sweep, children, cost);
        }
    }

    fn orphans_listed(&mut self, sweep: u64, children: std::io::Result<Vec<u32>>, cost: Duration) {
        let workers = &self.workers;
        let done = self.sweeper.listed(
            sweep,
            children,
            cost,
            |pid| workers.contains_key(&pid),
            &self.tx,
        );
        self.swept(done);
    }

    /// Sessions whose orphans are gone: the policy decides for each.
    fn swept(&mut self, done: Option<Vec<SlotId>>) {
        for slot in done.into_iter().flatten() {
            if let Phase::Ending { exit, .. } = self.slots[slot].session.phase {
                let jitter = self.jitter.sample();
                self.apply(slot, Input::Ended { jitter });
                self.log_exited(slot, exit);
            }
        }
        self.sweep_if_due();
    }

    /// One line per worker that is gone, once the policy has decided (and
    /// the close, for the surface's count of closes by code).
    fn log_exited(&mut self, idx: SlotId, exit: crate::lifecycle::ExitKind) {
        if self.surface.is_some() {
            self.slots[idx].closed = self.slots[idx].session.last_close;
        }
        let s = &self.slots[idx].session;
        let retry = s.next_retry.map(|t| {
            let ms = t.saturating_duration_since(Instant::now()).as_millis() as u64;
            humantime::format_duration(Duration::from_millis(ms)).to_string()
        });
        info!(
            session = %self.config.sessions[idx].id,
            exit = %exit,
            code = %s.last_close.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            action = %s.last_action.map_or("-", |a| a.as_str()),
            state = %s.state,
            retry_in = %retry.as_deref().unwrap_or("-"),
            "worker exited"
        );
    }

    fn worker_event(&mut self, idx: SlotId, generation: Generation, event: WorkerEvent) {
        if self.slots[idx].generation != generation || self.slots[idx].session.worker().is_none() {
            return;
        }
        // One line per lifecycle change: a worker repeating an event must
        // not flood the log.
        let session = &self.slots[idx].session;
        let before = (session.state, session.pairing_code.is_some());
        let closed = match &event {
            WorkerEvent::Closed {
                code,
                reason,
                retry_after_s,
            } => Some((*code, reason.clone(), *retry_after_s)),
            _ => None,
        };
        let what = match &event {
            WorkerEvent::Qr { .. } => "worker reported a QR code",
            WorkerEvent::PairCode { .. } => "worker reported a pair code",
            WorkerEvent::Connected { .. } => "worker connected",
            WorkerEvent::Closed { .. } => "worker reported close",
            WorkerEvent::PairingExpired => "worker reported that pairing expired",
            WorkerEvent::Alive => "worker is alive",
        };
        self.apply(idx, Input::Event(event));
        let slot = &mut self.slots[idx];
        if slot.session.state == State::Connected {
            slot.pair_phone = None;
        }
        let s = &slot.session;
        let id = &self.config.sessions[idx].id;
        if let Some((code, reason, retry_after_s)) = closed {
            info!(session = %id, code, reason = %Quoted(reason.as_deref().unwrap_or("-")), retry_after_s = ?retry_after_s, "{what}");
        } else if before != (s.state, s.pairing_code.is_some()) {
            info!(session = %id, state = %s.state, jid = %Quoted(s.jid.as_deref().unwrap_or("-")), "{what}");
        } else {
            debug!(session = %id, "{what}");
        }
    }

    /// Looks for the exit of the workers whose events pipe closed, by pid:
    /// O(1) each. The common way a worker's exit is found. Returns how many
    /// were collected.
    fn reap_candidates(&mut self) -> usize {
        let mut collected = 0;
        let mut i = 0;
        while i < self.exit_candidates.len() {
            let pid = self.exit_candidates[i];
            match process::exited_child(pid) {
                Ok(Some(child)) => {
                    self.exit_candidates.swap_remove(i);
                    self.collect_exit(child);
                    collected += 1;
                }
                Ok(None) => i += 1,
                Err(_) => {
                    // Not our child any more: already reaped by a full scan.
                    self.exit_candidates.swap_remove(i);
                }
            }
        }
        collected
    }

    /// A SIGCHLD arrived: a full scan catches what no closed pipe announced
    /// (a worker whose pipe a grandchild still holds, an adopted orphan). It
    /// looks at every child, so it is paced by its own cost; and when a
    /// closed pipe explained the signal it only runs a second later, as a
    /// safety net for an exit the coalesced signal may have hidden.
    fn schedule_full_scan(&mut self, explained: bool) {
        let now = Instant::now();
        let at = if explained {
            (now + FULL_SCAN_SAFETY_DELAY).max(self.full_scan_allowed)
        } else {
            self.full_scan_allowed.max(now)
        };
        if self.full_scan_at.is_none_or(|t| at < t) {
            self.full_scan_at = Some(at);
        }
    }

    /// Finds exited children without waiting, in slices of `REAP_BATCH`.
    fn full_scan(&mut self) {
        self.full_scan_at = None;
        if self.spawns_in_flight > 0 {
            // A worker whose spawn is not answered yet would look like an
            // orphan, and be reaped unseen. Hold new spawns; the scan runs
            // when the last answer is in.
            self.scan_waits_for_spawns = true;
            self.reap_more = false;
            return;
        }
        let started = Instant::now();
        let mut more = true;
        for _ in 0..REAP_BATCH {
            match process::next_exited_child() {
                Ok(Some(child)) => {
                    self.exit_candidates.retain(|&p| p != child.pid);
                    self.collect_exit(child);
                }
                Ok(None) => {
                    more = false;
                    break;
                }
                Err(e) => {
                    error!("cannot look for exited children: {e}");
                    more = false;
                    break;
                }
            }
        }
        self.reap_more = more;
        let pause = (started.elapsed() * FULL_SCAN_PAUSE_FACTOR).min(FULL_SCAN_MAX_PAUSE);
        self.full_scan_allowed = Instant::now() + pause;
    }

    /// A child exited: a worker's group is emptied while its zombie still
    /// pins the number, then it is reaped; an adopted orphan is just reaped.
    fn collect_exit(&mut self, child: process::ChildExit) {
        let worker = self.workers.remove(&child.pid);
        if worker.is_some() {
            // The leader is a zombie, so its pgid cannot name anyone else:
            // end whatever it left in its group before reaping it.
            let _ = process::signal_group(child.pid, Signal::SIGKILL);
        }
        if let Err(e) = process::reap(child.pid) {
            error!(pid = child.pid, "cannot reap: {e}");
        }
        self.sweeper.reaped(child.pid);
        let exit = match (child.code, child.signal) {
            (Some(code), _) => crate::lifecycle::ExitKind::Code(code),
            (None, Some(sig)) => crate::lifecycle::ExitKind::Signal(sig),
            (None, None) => crate::lifecycle::ExitKind::Code(-1),
        };
        match worker {
            Some((slot, generation)) if self.slots[slot].generation == generation => {
                debug!(session = %self.config.sessions[slot].id, pid = child.pid, exit = %exit, "worker reaped");
                self.apply(slot, Input::Reaped { exit });
            }
            Some(_) => {}
            None => debug!(pid = child.pid, exit = %exit, "reaped an adopted orphan"),
        }
    }

    fn timers(&mut self, now: Instant) {
        // An exit not yet collected must not be taken for a worker that
        // outlived its grace period.
        self.reap_candidates();
        if self.full_scan_at.is_some_and(|t| t <= now) {
            self.full_scan();
        }
        if self.fence_at().is_some_and(|t| t <= now) {
            self.fence(
                false,
                "no keepalive was acknowledged in time (etcd unreachable, or this process was stopped)"
                    .to_owned(),
            );
        }
        for idx in self.deadlines.pop_due(now, TIMER_BATCH) {
            self.apply(idx, Input::Tick);
        }
        // Workers a grace timer found already exited.
        self.reap_candidates();
        self.sweep_if_due();
        if self.ready_sent {
            self.write_status(now);
            if self.notifier.enabled() {
                let summary = self.summary();
                self.notifier.status(&summary);
            }
        }
    }

    /// Writes the status file if a write is due (at most once a second).
    fn write_status(&mut self, now: Instant) {
        if self.status_file.begin(now) {
            let record = self.record(None);
            self.status_file.write(record, &self.tx);
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

    fn slot_of(&self, session: &str) -> Result<SlotId, Response> {
        self.ids.get(session).copied().ok_or_else(|| {
            let known: Vec<&str> = self
                .config
                .sessions
                .iter()
                .take(10)
                .map(|s| s.id.as_str())
                .collect();
            let more = if self.config.sessions.len() > known.len() {
                ", ..."
            } else {
                ""
            };
            Response::error(format!(
                "no session `{session}` in the configuration (configured: {}{more})",
                known.join(", ")
            ))
        })
    }

    fn control(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        let (session, input) = match request {
            Request::Ping => {
                let _ = reply.send(Response::ok("pong"));
                return;
            }
            Request::Status { session } => {
                let response = match session {
                    None => Response::status(self.record(None)),
                    Some(id) => match self.slot_of(&id) {
                        Ok(idx) => Response::status(self.record(Some(idx))),
                        Err(e) => e,
                    },
                };
                let _ = reply.send(response);
                return;
            }
            _ if self.shutting_down => {
                let _ = reply.send(Response::error("the supervisor is shutting down"));
                return;
            }
            Request::Shutdown => {
                self.shutdown_waiters.push(reply);
                self.begin_shutdown();
                return;
            }
            Request::Start { session } => (session, Input::Start),
            Request::Stop { session } => (session, Input::Stop),
            Request::Restart { session } => (session, Input::Restart),
            // Streams are served by the control server as `Event::Login`.
            Request::Login { .. } => {
                let _ = reply.send(Response::error("login is a streaming request"));
                return;
            }
        };
        let idx = match self.slot_of(&session) {
            Ok(idx) => idx,
            Err(e) => {
                let _ = reply.send(e);
                return;
            }
        };
        info!(session = %session, request = ?input, "operator request");
        if !matches!(input, Input::Stop) {
            self.clear_hold(idx, false);
        }
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
                state: None,
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
        let Some(&idx) = self.ids.get(&session) else {
            return fail(format!("no session `{session}` in the configuration"));
        };
        let slot = &mut self.slots[idx];
        info!(session = %session, pair_code = phone.is_some(), "operator request: login");
        let input = if slot.session.state == State::Connected {
            None
        } else if let Some(phone) = phone {
            // A running worker was started without this phone number: it
            // must start again to use the pair-code flow.
            let restart = slot.session.running().is_some()
                && slot.pair_phone.as_deref() != Some(phone.as_str());
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
        if input.is_some() {
            self.clear_hold(idx, false);
        }
        self.touch(idx);
        if let Some(input) = input {
            self.apply(idx, input);
        }
    }

    /// An operator started the session: the hold, if any, is gone
    /// (`always`: whether one is known or not, at start-up).
    fn clear_hold(&mut self, idx: SlotId, always: bool) {
        let slot = &mut self.slots[idx];
        slot.honour_hold = false;
        // A start-up prepare in flight may still find a hold on disk.
        slot.start_overrides_hold =
            !always && matches!(slot.session.phase, Phase::Preparing { .. });
        if slot.held || always {
            slot.held = false;
            self.holds
                .clear(self.config.session_dir(&self.config.sessions[idx].id));
        }
    }

    fn touch(&mut self, idx: SlotId) {
        let slot = &mut self.slots[idx];
        if !slot.touched {
            slot.touched = true;
            self.touched.push(idx);
        }
    }

    /// Answers the clients of the sessions the last event touched, and
    /// tells the surface, if any, what they look like now.
    fn answer_touched(&mut self) {
        let mut surface = self.surface.take();
        // The clocks are read only for a surface: without one, nothing
        // here costs more than before issue #11.
        let clocks = surface
            .is_some()
            .then(|| (SystemTime::now(), Instant::now()));
        for idx in std::mem::take(&mut self.touched) {
            let slot = &mut self.slots[idx];
            slot.touched = false;
            // The surface first: an API request answered below finds the
            // session as the answer says it is.
            if let (Some(surface), Some((now_sys, now))) = (surface.as_mut(), clocks) {
                let closed = slot.closed.take();
                surface.update(idx, self.session_record(idx, now_sys, now), closed);
            }
            self.slots[idx].answer(self.config.sessions[idx].id.as_str());
        }
        self.surface = surface;
    }

    /// Feeds one input to a session and carries out the effects, feeding
    /// their results back until the session is quiet.
    fn apply(&mut self, idx: SlotId, input: Input) {
        let before = (
            self.slots[idx].session.state,
            phase_index(&self.slots[idx].session.phase),
        );
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let cx = Context {
                policy: &self.config.policy,
                stop_timeout: self.config.supervisor.stop_timeout,
                now: Instant::now(),
                wall: SystemTime::now(),
                takeover_grace: self.config.cluster.as_ref().map(|c| c.takeover_grace),
            };
            let effects = self.slots[idx].session.handle(input, cx);
            for effect in effects {
                if let Some(next) = self.execute(idx, effect) {
                    queue.push_back(next);
                }
            }
            if queue.is_empty() && self.orphaned_standby(idx) {
                // A session that came to rest in `standby` knowing no owner
                // while the lease is live (its worker ended after the lease
                // came back) asks etcd again: no watch event would come for
                // a key that is still ours.
                queue.push_back(Input::OwnerGone);
            }
        }
        let slot = &mut self.slots[idx];
        if slot.starting_up
            && !matches!(
                slot.session.phase,
                Phase::Preparing { .. } | Phase::Acquiring { .. }
            )
        {
            slot.starting_up = false;
            self.starting_up -= 1;
        }
        let session = &self.slots[idx].session;
        let after = (session.state, phase_index(&session.phase));
        if before.0 != after.0
            && let Some(cluster) = &self.cluster
            && session.owner.as_ref().is_some_and(|o| o.ours)
        {
            // What `status --cluster` shows, from any node.
            cluster.agent.send(Command::Publish {
                slot: idx,
                id: self.config.sessions[idx].id.to_string(),
                state: after.0.as_str(),
            });
        }
        if before != after {
            self.by_state[before.0.index()] -= 1;
            self.by_state[after.0.index()] += 1;
            self.by_phase[before.1] -= 1;
            self.by_phase[after.1] += 1;
        }
        self.deadlines.set(idx, session.deadline());
        self.status_file.touch();
        self.touch(idx);
    }

    fn execute(&mut self, idx: SlotId, effect: Effect) -> Option<Input> {
        let id = &self.config.sessions[idx].id;
        let slot = &mut self.slots[idx];
        match effect {
            Effect::Prepare => {
                // The lock is still held (a restart, the end of a backoff):
                // nobody else can have spawned for the session meanwhile.
                if slot.lock.is_some() {
                    return Some(Input::Prepared);
                }
                self.prepare_queue.push(idx);
            }
            Effect::Spawn => return self.request_spawn(idx),
            Effect::Terminate => {
                if let Some(worker) = slot.session.running() {
                    info!(session = %id, pgid = worker.pid, "sending SIGTERM to the worker's process group");
                    if let Err(e) = process::signal_group(worker.pid, Signal::SIGTERM) {
                        error!(session = %id, "SIGTERM failed: {e}");
                    }
                }
            }
            Effect::KillGroup => {
                if let Some(pid) = slot.session.running().map(|w| w.pid) {
                    if matches!(process::exited_child(pid), Ok(Some(_))) {
                        // It exited within the grace period; only the news
                        // (its pipe's close) is still queued behind this
                        // timer. Not a timeout: no warning, and its exit is
                        // collected after the timers (issue #9: 2,000
                        // sessions stopping logged 1,451 such false alarms).
                        debug!(session = %id, pid, "stop_timeout passed, but the worker has exited");
                        self.exit_candidates.push(pid);
                    } else {
                        warn!(session = %id, pgid = pid, "stop_timeout passed: sending SIGKILL to the worker's process group");
                        if let Err(e) = process::signal_group(pid, Signal::SIGKILL) {
                            error!(session = %id, "SIGKILL failed: {e}");
                        }
                    }
                }
            }
            Effect::Collect => match slot.reaped_tx.take() {
                Some(reaped) => {
                    let _ = reaped.send(());
                }
                None => {
                    // No watcher (its pipe could not be registered): nothing
                    // to read, go straight to the orphans. The sweep starts
                    // after this effect, from the loop's next turn.
                    self.sweeper.request(idx);
                }
            },
            Effect::Quarantine => spawn::quarantine(
                idx,
                id.clone(),
                self.config.session_dir(id),
                self.config.quarantine_dir(),
                self.tx.clone(),
            ),
            Effect::ReleaseLock => slot.lock = None,
            Effect::Acquire => match &self.cluster {
                Some(Cluster {
                    lease: Lease::Fenced { reason, .. },
                    ..
                }) => {
                    return Some(Input::AcquireFailed {
                        reason: format!("no ownership: {reason}"),
                    });
                }
                Some(cluster) => cluster.agent.send(Command::Acquire {
                    slot: idx,
                    id: id.to_string(),
                }),
                None => {
                    return Some(Input::AcquireFailed {
                        reason: "no [cluster] table".to_owned(),
                    });
                }
            },
            Effect::Release => {
                // At shutdown one revoke releases every session at once.
                if let Some(cluster) = &self.cluster
                    && !self.shutting_down
                {
                    cluster.agent.send(Command::Release {
                        slot: idx,
                        id: id.to_string(),
                    });
                }
            }
            Effect::Hold => {
                let s = &slot.session;
                let hold = Hold {
                    state: s.state,
                    last_code: s.last_close,
                    last_reason: s.last_reason.clone(),
                    last_action: s.last_action,
                    at_ms: s.last_at.map(unix_ms),
                };
                info!(session = %id, state = %s.state, "held: a restarted supervisor leaves the session as it is until `wa-ctl start {id}`");
                slot.held = true;
                self.holds.write(self.config.session_dir(id), hold);
            }
        }
        None
    }

    /// Starts prepare jobs for the sessions queued since the last turn, in
    /// batches; at start-up, once the scan of the process table is in.
    fn flush_prepares(&mut self) {
        if self.prepare_queue.is_empty() || self.scanning {
            return;
        }
        let queue = std::mem::take(&mut self.prepare_queue);
        let mut leftovers = self.startup_leftovers.take();
        let mut requests: Vec<PrepareRequest> = Vec::with_capacity(queue.len());
        for idx in queue {
            let slot = &mut self.slots[idx];
            if !matches!(slot.session.phase, Phase::Preparing { .. }) {
                continue;
            }
            let id = self.config.sessions[idx].id.clone();
            let dir = self.config.session_dir(&id);
            let known = leftovers
                .as_mut()
                .map(|map| map.remove(&dir).unwrap_or_default());
            requests.push(PrepareRequest {
                slot: idx,
                id,
                dir,
                leftovers: known,
                honour_hold: std::mem::take(&mut slot.honour_hold),
            });
        }
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let batch: Vec<PrepareRequest> = requests.by_ref().take(PREPARE_BATCH).collect();
            spawn::prepare(
                batch,
                Arc::clone(&self.locks),
                self.config.supervisor.stop_timeout,
                self.tx.clone(),
            );
        }
    }

    /// Asks the spawner thread for a worker; the answer comes back as
    /// `Event::Spawned`. Returns an input only when the program cannot be
    /// found.
    fn request_spawn(&mut self, idx: SlotId) -> Option<Input> {
        let session = &self.config.sessions[idx];
        let base_dir = self.config.source.path().and_then(Path::parent);
        let slot = &mut self.slots[idx];
        let program = match slot.program.take() {
            Some(p) => p,
            None => match process::resolve_program(&session.command[0], base_dir) {
                Ok(p) => p,
                Err(e) => {
                    error!(session = %session.id, "{e}");
                    return Some(Input::SpawnFailed {
                        reason: e.to_string(),
                        jitter: self.jitter.sample(),
                    });
                }
            },
        };
        slot.generation += 1;
        let (args, env) = &self.spawn_args[idx];
        let request = SpawnRequest {
            slot: idx,
            generation: slot.generation,
            program,
            args: Arc::clone(args),
            session_id: session.id.to_string(),
            session_dir: self.config.session_dir(&session.id),
            env: Arc::clone(env),
            pair_phone: slot.pair_phone.clone(),
            fencing_token: slot
                .session
                .owner
                .as_ref()
                .filter(|o| o.ours)
                .map(|o| o.epoch),
            cwd: base_dir.unwrap_or(Path::new("/")).to_path_buf(),
        };
        if self.scan_waits_for_spawns {
            self.held_spawns.push_back(request);
        } else if self.spawner.spawn(request) {
            self.spawns_in_flight += 1;
        } else {
            return Some(Input::SpawnFailed {
                reason: "the spawner thread is gone".to_owned(),
                jitter: self.jitter.sample(),
            });
        }
        None
    }

    /// The spawner thread's answer.
    fn spawned(&mut self, result: SpawnResult) {
        self.spawns_in_flight -= 1;
        let SpawnResult {
            slot: idx,
            generation,
            program,
            worker,
        } = result;
        let id = self.config.sessions[idx].id.clone();
        let current = self.slots[idx].generation == generation
            && matches!(self.slots[idx].session.phase, Phase::Preparing { .. });
        match worker {
            Ok(worker) => {
                let pid = worker.pid;
                // Known from now on, whatever happens next: the reaper
                // finds it by pid.
                self.workers.insert(pid, (idx, generation));
                if !current {
                    // Cannot happen: a session waits in `Preparing` for
                    // its spawn. Never leave a worker nobody owns.
                    error!(session = %id, pid, "a worker nobody waits for: ending it");
                    let _ = process::signal_group(pid, Signal::SIGKILL);
                } else {
                    let slot = &mut self.slots[idx];
                    let (reaped_tx, reaped_rx) = oneshot::channel();
                    slot.reaped_tx = Some(reaped_tx);
                    info!(session = %id, pid, program = %program.display(), "worker spawned");
                    slot.program = Some(program);
                    watcher::spawn(worker.events, idx, generation, self.tx.clone(), reaped_rx);
                    self.apply(idx, Input::Spawned { pid });
                }
            }
            Err(reason) => {
                error!(session = %id, program = %program.display(), "spawn failed: {reason}");
                if current {
                    let jitter = self.jitter.sample();
                    self.apply(
                        idx,
                        Input::SpawnFailed {
                            reason: format!("spawn failed: {reason}"),
                            jitter,
                        },
                    );
                }
            }
        }
        if self.spawns_in_flight == 0 && self.scan_waits_for_spawns {
            self.scan_waits_for_spawns = false;
            self.full_scan();
            while let Some(request) = self.held_spawns.pop_front() {
                if self.spawner.spawn(request) {
                    self.spawns_in_flight += 1;
                } else {
                    error!("the spawner thread is gone");
                }
            }
        }
    }

    /// One session's record. `now_sys` and `now` are the same moment on
    /// the two clocks: the session's instants become wall-clock times.
    fn session_record(&self, idx: SlotId, now_sys: SystemTime, now: Instant) -> SessionRecord {
        let wall = |t: Instant| -> u64 {
            if t >= now {
                unix_ms(now_sys + (t - now))
            } else {
                unix_ms(now_sys - (now - t))
            }
        };
        let session = &self.slots[idx].session;
        let running = session.running();
        SessionRecord {
            id: self.config.sessions[idx].id.to_string(),
            state: session.state,
            worker_pid: running.map(|w| w.pid),
            restarts: session.restarts,
            last_code: session.last_close,
            last_reason: session.last_reason.clone(),
            last_action: session.last_action,
            last_at_ms: session.last_at.map(unix_ms),
            next_retry_at_ms: session.next_retry.map(wall),
            worker_started_at_ms: running.map(|w| wall(w.spawned_at)),
            connected_at_ms: running.and_then(|w| w.connected_at).map(wall),
            jid: session.jid.clone(),
            pairing: session.pairing_code.clone(),
            owner: session
                .owner
                .as_ref()
                .map(|o| match (&self.cluster, o.ours) {
                    (Some(cluster), true) => cluster.node.clone(),
                    _ => o.node.clone(),
                }),
            epoch: session.owner.as_ref().map(|o| o.epoch).filter(|&e| e > 0),
        }
    }

    /// The live record: every session, or one.
    pub(super) fn record(&self, only: Option<SlotId>) -> StatusRecord {
        let now_sys = SystemTime::now();
        let now = Instant::now();
        let sessions = match only {
            Some(idx) => vec![self.session_record(idx, now_sys, now)],
            None => (0..self.slots.len())
                .map(|idx| self.session_record(idx, now_sys, now))
                .collect(),
        };
        StatusRecord {
            pid: std::process::id(),
            started_at_ms: unix_ms(self.started_at),
            made_at_ms: unix_ms(now_sys),
            cpu_us: own_cpu_us(),
            journal: self.journal,
            sessions,
        }
    }

    /// The one-line summary for systemd's `STATUS=`: each session for a
    /// few, e.g. `default: connected; sales: backoff 8s (408)`, and counts
    /// by state for more, e.g. `1000 sessions: 990 connected, 10 backoff`.
    fn summary(&self) -> String {
        if self.slots.len() > SUMMARY_DETAIL {
            let counts: Vec<String> = State::ALL
                .iter()
                .filter(|s| self.by_state[s.index()] > 0)
                .map(|s| format!("{} {s}", self.by_state[s.index()]))
                .collect();
            return format!("{} sessions: {}", self.slots.len(), counts.join(", "));
        }
        let now = Instant::now();
        let parts: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .map(|(idx, s)| {
                let session = &s.session;
                let mut part = format!("{}: {}", self.config.sessions[idx].id, session.state);
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
}
