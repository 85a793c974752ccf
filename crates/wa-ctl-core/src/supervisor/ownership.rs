//! The ownership agent (issue #10): the one task that talks to etcd for
//! the loop, on the loop's own runtime.
//!
//! The loop never awaits etcd. It sends [`Command`]s (acquire, release,
//! publish) and receives every answer as an [`Event::Ownership`]:
//!
//! - **the lease**: granted at connection, renewed by a task of its own
//!   (so that a slow acquire never delays a keepalive) three times in the
//!   time the loop trusts an acknowledgement, and retried within a quarter
//!   second when one fails: a member or leader lost costs one retry. Its
//!   acknowledgements go straight to the loop, never through the agent,
//!   so that nothing the agent waits for (a watch being reopened) can make
//!   one late.
//!   Each acknowledged keepalive is reported with its *send* time: the loop
//!   keeps its own deadline from it and stops its workers before the lease
//!   can expire. A lease etcd says is gone is reported at once, and a new
//!   one is granted;
//! - **the watch** over every owner key under the prefix, opened before the
//!   first acquire (so that a release between an "owned elsewhere" answer
//!   and the watch cannot be missed), and reopened after a gap, which the
//!   loop hears of as [`OwnershipEvent::Rewatched`];
//! - **operations**, at most one in flight per session and in order (a
//!   release overtaken by the next acquire of the same session would delete
//!   the new key), with at most [`MAX_IN_FLIGHT`] in flight in all, each
//!   bounded by a deadline. Acquires that arrive while etcd is unreachable
//!   fail at once: no ownership without etcd.
//!
//! Every answer names the lease generation it was obtained under; the loop
//! ignores an acquisition from a lease that is gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use wa_ctl_cluster::{
    Acquisition, EtcdOwnerWatch, EtcdOwnership, KeepaliveAck, OwnerChange, OwnerWatch, Ownership,
    OwnershipError,
};

use crate::config::cluster::ClusterConfig;

use super::event::{Event, SlotId};
use super::timers::sleep_until_or_never;

/// Operations in flight at once: enough to keep a connection busy, few
/// enough that 10,000 sessions starting do not open 10,000 streams.
pub(super) const MAX_IN_FLIGHT: usize = 64;

/// The longest wait between two connection attempts while etcd is down.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// The first wait after a failed attempt; doubled up to the maximum.
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// How long revoking the lease may take at shutdown before the supervisor
/// exits anyway (the lease then expires on its own).
const REVOKE_DEADLINE: Duration = Duration::from_secs(2);

/// A number the loop tells leases apart by: each grant gets the next one.
pub(super) type LeaseGeneration = u64;

/// What the loop asks of etcd.
#[derive(Debug)]
pub(super) enum Command {
    Acquire {
        slot: SlotId,
        id: String,
    },
    Release {
        slot: SlotId,
        id: String,
    },
    /// The session's state, for `status --cluster`. A newer one replaces a
    /// queued one.
    Publish {
        slot: SlotId,
        id: String,
        state: &'static str,
    },
}

impl Command {
    fn slot(&self) -> SlotId {
        match self {
            Command::Acquire { slot, .. }
            | Command::Release { slot, .. }
            | Command::Publish { slot, .. } => *slot,
        }
    }
}

/// What the agent reports to the loop.
#[derive(Debug)]
pub(super) enum OwnershipEvent {
    /// A new lease: its grant counts as a first acknowledged keepalive.
    LeaseGranted {
        generation: LeaseGeneration,
        ack: KeepaliveAck,
    },
    /// A keepalive was acknowledged.
    Renewed {
        generation: LeaseGeneration,
        ack: KeepaliveAck,
    },
    /// etcd says the lease is gone: nothing this node owned is owned.
    LeaseLost {
        generation: LeaseGeneration,
        reason: String,
    },
    /// etcd could not be reached; what the loop shows as the reason.
    Unreachable { reason: String },
    /// The answer to an acquire.
    Acquired {
        slot: SlotId,
        generation: LeaseGeneration,
        result: Result<Acquisition, String>,
    },
    /// An owner key changed.
    Change(OwnerChange),
    /// The watch was reopened after a gap: changes may have been missed.
    Rewatched,
}

/// The loop's end of the agent.
pub(super) struct Agent {
    commands: mpsc::UnboundedSender<Command>,
    shutdown: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

impl Agent {
    /// Starts the agent on the current runtime; it connects at once.
    pub(super) fn start(
        config: ClusterConfig,
        keepalive_every: Duration,
        events: mpsc::Sender<Event>,
    ) -> Agent {
        let (commands, rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = oneshot::channel();
        tokio::spawn(run(config, keepalive_every, events, rx, shutdown_rx));
        Agent {
            commands,
            shutdown: Some(shutdown),
        }
    }

    /// Queues a command. Unbounded, yet bounded in fact: a session has at
    /// most one acquire or release outstanding, and publishes coalesce.
    pub(super) fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Revokes the lease (every key of this node goes at once) and stops
    /// the agent; bounded by [`REVOKE_DEADLINE`].
    pub(super) async fn shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let (done, wait) = oneshot::channel();
            if shutdown.send(done).is_ok() {
                let _ =
                    tokio::time::timeout(REVOKE_DEADLINE + Duration::from_millis(500), wait).await;
            }
        }
    }
}

/// The result of one operation, for the agent's bookkeeping.
enum Done {
    Acquired {
        slot: SlotId,
        generation: LeaseGeneration,
        result: Result<Acquisition, String>,
    },
    Other {
        slot: SlotId,
    },
}

/// The connection and lease in use, and their generation.
struct Live {
    ownership: EtcdOwnership,
    generation: LeaseGeneration,
    watch: Option<EtcdOwnerWatch>,
    /// Stops the keepalive task when the lease is replaced or revoked.
    keepalive: tokio::task::AbortHandle,
}

/// The keepalive task tells the agent that a lease is gone (and why); its
/// acknowledgements go straight to the loop, so that nothing the agent
/// waits for can delay them.
type LeaseGone = (LeaseGeneration, String);

/// An error as one line. etcd's answers carry the server's own text:
/// escaped here, once, before it reaches a log or a status.
fn describe(e: &OwnershipError) -> String {
    crate::text::escape(&crate::error_chain(e)).into_owned()
}

async fn run(
    config: ClusterConfig,
    keepalive_every: Duration,
    events: mpsc::Sender<Event>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let op_deadline = config.lease_ttl / 3;
    let report = |event: OwnershipEvent| {
        let events = events.clone();
        async move {
            let _ = events.send(Event::Ownership(event)).await;
        }
    };
    let mut live: Option<Live> = None;
    let mut generation: LeaseGeneration = 0;
    let mut connecting: Option<tokio::task::JoinHandle<Result<EtcdOwnership, OwnershipError>>> =
        Some(tokio::spawn(connect(config.clone())));
    let mut reconnect_pause = FIRST_RECONNECT_PAUSE;
    let mut reconnect_at: Option<Instant> = None;
    let mut rewatch_at: Option<Instant> = None;
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel::<LeaseGone>();

    // Per-session order: one operation in flight per session, the rest
    // queued behind it; sessions with work and no operation in flight wait
    // their turn in `ready`.
    let mut queued: HashMap<SlotId, VecDeque<Command>> = HashMap::new();
    let mut busy: HashSet<SlotId> = HashSet::new();
    let mut ready: VecDeque<SlotId> = VecDeque::new();
    let mut ops: JoinSet<Done> = JoinSet::new();
    // Acquires that came before the first connection attempt ended.
    let mut last_error = String::from("connecting to etcd");

    loop {
        // Start what may start.
        if let Some(l) = &live {
            while ops.len() < MAX_IN_FLIGHT {
                let Some(slot) = ready.pop_front() else { break };
                let Some(command) = queued.get_mut(&slot).and_then(VecDeque::pop_front) else {
                    continue;
                };
                if queued.get(&slot).is_some_and(VecDeque::is_empty) {
                    queued.remove(&slot);
                }
                busy.insert(slot);
                let handle = l.ownership.clone();
                let generation = l.generation;
                ops.spawn(operate(handle, generation, command, op_deadline));
            }
        } else if connecting.is_none() {
            // No lease, and none coming right now: acquires fail at once,
            // the rest has nothing to act on.
            ready.clear();
            for (_, commands) in queued.drain() {
                for command in commands {
                    if let Command::Acquire { slot, .. } = command {
                        report(OwnershipEvent::Acquired {
                            slot,
                            generation,
                            result: Err(format!("etcd is unreachable: {last_error}")),
                        })
                        .await;
                    }
                }
            }
        }
        let next_wake = [reconnect_at, rewatch_at].into_iter().flatten().min();
        tokio::select! {
            done = &mut shutdown => {
                if let Ok(done) = done {
                    if let Some(mut l) = live.take() {
                        l.keepalive.abort();
                        match tokio::time::timeout(REVOKE_DEADLINE, l.ownership.revoke()).await {
                            Ok(Ok(())) => info!("lease revoked: every session of this node is released"),
                            Ok(Err(e)) => warn!("cannot revoke the lease (it expires on its own): {}", describe(&e)),
                            Err(_) => warn!("etcd did not answer the revoke in time (the lease expires on its own)"),
                        }
                    }
                    let _ = done.send(());
                }
                ops.abort_all();
                return;
            }
            Some(command) = commands.recv() => {
                let slot = command.slot();
                let queue = queued.entry(slot).or_default();
                if let Command::Publish { .. } = command
                    && let Some(last @ Command::Publish { .. }) = queue.back_mut()
                {
                    *last = command;
                } else {
                    queue.push_back(command);
                }
                if !busy.contains(&slot) && queue.len() == 1 {
                    ready.push_back(slot);
                }
            }
            Some(done) = ops.join_next(), if !ops.is_empty() => {
                let slot = match done {
                    Ok(Done::Acquired { slot, generation, result }) => {
                        report(OwnershipEvent::Acquired { slot, generation, result }).await;
                        slot
                    }
                    Ok(Done::Other { slot }) => slot,
                    Err(e) => {
                        // A panicked or aborted operation: nothing to report
                        // for a session we cannot name; never reached.
                        warn!("an etcd operation ended abnormally: {e}");
                        continue;
                    }
                };
                busy.remove(&slot);
                if queued.contains_key(&slot) {
                    ready.push_back(slot);
                }
            }
            Some((g, reason)) = gone_rx.recv() => {
                if live.as_ref().is_some_and(|l| l.generation == g) {
                    warn!("the lease is gone: {reason}; every session of this node stands by, and a new lease is asked for");
                    if let Some(l) = live.take() {
                        l.keepalive.abort();
                    }
                    report(OwnershipEvent::LeaseLost { generation: g, reason }).await;
                    connecting = Some(tokio::spawn(connect(config.clone())));
                }
            }
            result = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                match result {
                    Ok(Ok(ownership)) => {
                        generation += 1;
                        reconnect_pause = FIRST_RECONNECT_PAUSE;
                        info!(lease = format_args!("{:x}", ownership.lease_id()), ttl = ?ownership.granted_ttl(), "connected to etcd; lease granted");
                        // Watch before the first acquire is answered: a
                        // release between an "owned elsewhere" answer and
                        // the watch would be missed otherwise.
                        let watch = match tokio::time::timeout(op_deadline, ownership.watch()).await {
                            Ok(Ok(w)) => Some(w),
                            Ok(Err(e)) => {
                                warn!("cannot watch the owner keys: {}", describe(&e));
                                rewatch_at = Some(Instant::now() + reconnect_pause);
                                None
                            }
                            Err(_) => {
                                warn!("etcd did not open the watch in time");
                                rewatch_at = Some(Instant::now() + reconnect_pause);
                                None
                            }
                        };
                        let keepalive = tokio::spawn(keep_alive(
                            ownership.clone(),
                            generation,
                            keepalive_every,
                            events.clone(),
                            gone_tx.clone(),
                        ))
                        .abort_handle();
                        let ack = ownership.grant_ack();
                        live = Some(Live { ownership, generation, watch, keepalive });
                        report(OwnershipEvent::LeaseGranted { generation, ack }).await;
                    }
                    Ok(Err(e)) => {
                        last_error = describe(&e);
                        warn!("cannot connect to etcd: {last_error}; trying again in {}", humantime::format_duration(reconnect_pause));
                        report(OwnershipEvent::Unreachable { reason: last_error.clone() }).await;
                        reconnect_at = Some(Instant::now() + reconnect_pause);
                        reconnect_pause = (reconnect_pause * 2).min(MAX_RECONNECT_PAUSE);
                        // Acquires waiting for this attempt fail at the
                        // top of the next turn.
                    }
                    Err(e) => {
                        last_error = format!("the connection task failed: {e}");
                        reconnect_at = Some(Instant::now() + reconnect_pause);
                    }
                }
            }
            change = async {
                match live.as_mut().and_then(|l| l.watch.as_mut()) {
                    Some(watch) => watch.next_change().await,
                    None => std::future::pending().await,
                }
            } => match change {
                Ok(change) => report(OwnershipEvent::Change(change)).await,
                Err(e) => {
                    warn!("the watch on the owner keys ended: {}; watching again", describe(&e));
                    if let Some(l) = live.as_mut() {
                        l.watch = None;
                    }
                    rewatch_at = Some(Instant::now() + FIRST_RECONNECT_PAUSE);
                }
            },
            () = sleep_until_or_never(next_wake) => {
                let now = Instant::now();
                if reconnect_at.is_some_and(|t| t <= now) {
                    reconnect_at = None;
                    if live.is_none() && connecting.is_none() {
                        connecting = Some(tokio::spawn(connect(config.clone())));
                    }
                }
                if rewatch_at.is_some_and(|t| t <= now) {
                    rewatch_at = None;
                    if let Some(l) = live.as_mut() {
                        match tokio::time::timeout(op_deadline, l.ownership.watch()).await {
                            Ok(Ok(w)) => {
                                l.watch = Some(w);
                                report(OwnershipEvent::Rewatched).await;
                            }
                            Ok(Err(e)) => {
                                debug!("cannot watch again yet: {}", describe(&e));
                                rewatch_at = Some(now + MAX_RECONNECT_PAUSE.min(op_deadline));
                            }
                            Err(_) => rewatch_at = Some(now + MAX_RECONNECT_PAUSE.min(op_deadline)),
                        }
                    }
                }
            }
        }
    }
}

async fn connect(config: ClusterConfig) -> Result<EtcdOwnership, OwnershipError> {
    EtcdOwnership::connect(
        &config.endpoints,
        &config.prefix,
        &config.node,
        config.lease_ttl,
    )
    .await
}

/// The pause between two tries of an operation that failed on the way
/// (a member that is gone: etcd-client's balanced channel can still pick
/// it, etcdv3/etcd-client#39).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs `op` until it succeeds, fails for a reason a retry cannot change,
/// or `deadline` passes; `None` when the deadline passed.
async fn with_retries<T, F, Fut>(deadline: Duration, mut op: F) -> Option<Result<T, OwnershipError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OwnershipError>>,
{
    tokio::time::timeout(deadline, async {
        loop {
            match op().await {
                Err(OwnershipError::Etcd { .. } | OwnershipError::StreamClosed { .. }) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    })
    .await
    .ok()
}

/// One operation, retried on transport errors, bounded by `deadline`.
async fn operate(
    ownership: EtcdOwnership,
    generation: LeaseGeneration,
    command: Command,
    deadline: Duration,
) -> Done {
    let late = || {
        format!(
            "etcd did not answer within {}",
            humantime::format_duration(deadline)
        )
    };
    match command {
        Command::Acquire { slot, id } => {
            let result = match with_retries(deadline, || ownership.try_acquire(&id)).await {
                Some(Ok(acquisition)) => Ok(acquisition),
                Some(Err(e)) => Err(describe(&e)),
                None => Err(late()),
            };
            Done::Acquired {
                slot,
                generation,
                result,
            }
        }
        Command::Release { slot, id } => {
            match with_retries(deadline, || ownership.release(&id)).await {
                Some(Ok(true)) => debug!(session = %id, "released"),
                Some(Ok(false)) => debug!(session = %id, "release: the key was not ours any more"),
                Some(Err(e)) => {
                    warn!(session = %id, "cannot release (the key goes with the lease): {}", describe(&e))
                }
                None => warn!(session = %id, "release: {} (the key goes with the lease)", late()),
            }
            Done::Other { slot }
        }
        Command::Publish { slot, id, state } => {
            match tokio::time::timeout(deadline, ownership.publish_state(&id, state)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => debug!(session = %id, "cannot publish the state: {}", describe(&e)),
                Err(_) => debug!(session = %id, "publish: {}", late()),
            }
            Done::Other { slot }
        }
    }
}

/// The longest wait before a failed keepalive is tried again.
const KEEPALIVE_RETRY: Duration = Duration::from_millis(250);

/// Renews the lease every `interval` from the send time of the last
/// acknowledged keepalive. A keepalive that fails, or gets no answer
/// within half the interval (its stream may run to a member that is gone),
/// is tried again on a new stream within [`KEEPALIVE_RETRY`]: the loop's
/// own deadline stops the workers only if none gets through in three
/// intervals.
async fn keep_alive(
    mut ownership: EtcdOwnership,
    generation: LeaseGeneration,
    interval: Duration,
    events: mpsc::Sender<Event>,
    gone: mpsc::UnboundedSender<LeaseGone>,
) {
    let attempt = (interval / 2).max(KEEPALIVE_RETRY);
    let retry = (interval / 4).min(KEEPALIVE_RETRY);
    let mut next = ownership.grant_ack().sent_at + interval;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let news = match tokio::time::timeout(attempt, ownership.keepalive()).await {
            Ok(Ok(ack)) => {
                next = ack.sent_at + interval;
                OwnershipEvent::Renewed { generation, ack }
            }
            Ok(Err(OwnershipError::LeaseLost { lease_id })) => {
                let _ = gone.send((generation, format!("etcd no longer has lease {lease_id:x}")));
                return;
            }
            Ok(Err(e)) => {
                next = Instant::now() + retry;
                OwnershipEvent::Unreachable {
                    reason: describe(&e),
                }
            }
            Err(_) => {
                // The stream may run to a member that is gone: a clone
                // opens a new one next time.
                ownership = ownership.clone();
                next = Instant::now() + retry;
                OwnershipEvent::Unreachable {
                    reason: format!(
                        "no keepalive answer within {}",
                        humantime::format_duration(attempt)
                    ),
                }
            }
        };
        if events.send(Event::Ownership(news)).await.is_err() {
            return;
        }
    }
}
