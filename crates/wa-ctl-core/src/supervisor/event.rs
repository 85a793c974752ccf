//! `Event`: the closed set of everything the event loop reacts to.
//!
//! Every task and job the loop starts reports back with one of these; none
//! of them touches session state. This file is a leaf: the tasks that send
//! events depend on it, and it depends on none of them.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::control::{Request, Response, SessionUpdate};
use crate::leftovers::Leftover;
use crate::protocol::WorkerEvent;
use crate::session_lock::SessionLock;

use super::signals::SignalEvent;
use super::spawner::SpawnResult;

/// A session's index in the supervisor's table.
pub(super) type SlotId = usize;

/// Which spawn of a session a worker is: late lines of an old worker are
/// told from the current one's by it.
pub(super) type Generation = u64;

/// Everything the loop reacts to.
#[derive(Debug)]
pub(super) enum Event {
    /// A signal, already turned into what it asks for.
    Signal(SignalEvent),
    /// An event line from a worker.
    Worker {
        slot: SlotId,
        generation: Generation,
        event: WorkerEvent,
    },
    /// A worker's events pipe reached end of file: the worker has most
    /// likely exited (or is exiting), so its exit can be looked for by pid.
    PipeClosed {
        slot: SlotId,
        generation: Generation,
    },
    /// A reaped worker's events pipe has been read to the end: its last
    /// events came before this.
    Drained {
        slot: SlotId,
        generation: Generation,
    },
    /// A request on the control socket, with where to send the answer.
    Control(Request, oneshot::Sender<Response>),
    /// `wa-ctl login`: start pairing a session and stream its progress.
    Login {
        session: String,
        phone: Option<String>,
        updates: mpsc::Sender<SessionUpdate>,
    },
    /// The start-up scan of the process table: what a dead supervisor left,
    /// by session directory.
    StartupScan(HashMap<PathBuf, Vec<Leftover>>),
    /// A session's lock is held and its leftovers are gone (or not).
    Prepared {
        slot: SlotId,
        result: Result<SessionLock, PrepareFailure>,
    },
    /// The spawner thread started a worker (or could not).
    Spawned(SpawnResult),
    /// A session's credentials were moved to quarantine (or could not be).
    Quarantined { slot: SlotId, error: Option<String> },
    /// The first step of an orphan sweep: this process's children.
    OrphansListed {
        sweep: u64,
        children: std::io::Result<Vec<u32>>,
        cost: Duration,
    },
    /// The second step: each unknown child, with a pidfd and the session
    /// directory in its environment, if readable.
    OrphansIdentified {
        sweep: u64,
        found: Vec<(u32, OwnedFd, Option<PathBuf>)>,
    },
    /// The last step: the orphans that were signalled have exited (or the
    /// wait timed out).
    OrphansEnded { sweep: u64, pids: Vec<u32> },
    /// The status file was written (or could not be).
    StatusWritten(std::io::Result<()>),
    /// The ownership agent's news (issue #10): the lease, the watch, and
    /// the answers to acquires.
    Ownership(super::ownership::OwnershipEvent),
}

/// Why a session could not be prepared.
#[derive(Debug)]
pub(super) enum PrepareFailure {
    /// Another supervisor holds the session's lock.
    Busy,
    /// Anything else, said in a sentence fragment.
    Failed(String),
    /// A previous supervisor left the session held (issue #9): it is not
    /// started until an operator starts it. The lock was released.
    Held(crate::lifecycle::Hold),
}
