//! Getting a session ready for a worker, off the event loop, and moving
//! credentials into quarantine.
//!
//! Both run on tokio's blocking pool and report back with an [`Event`]:
//! - *prepare*: create the session directory, take the session lock, and
//!   end what a supervisor killed with SIGKILL left under it (found by the
//!   session directory in their environment). Ending a leftover may take
//!   `stop_timeout` (it gets SIGTERM first, as any worker would) plus a few
//!   seconds for SIGKILL.
//! - *quarantine*: rename the session directory to
//!   `quarantine/<id>-<UTC timestamp>`. Credentials are never deleted.
//!
//! The start-up scan of the whole process table runs here too, once, before
//! the first prepare.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::fsutil::ensure_private_dir;
use crate::leftovers::{self, Leftover};
use crate::session_id::SessionId;
use crate::session_lock::SessionLocks;

use super::event::{Event, PrepareFailure, SlotId};

/// How long leftovers may take to die after SIGKILL.
pub(super) const LEFTOVER_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sessions prepared by one blocking job: enough to keep the pool's threads
/// busy at start-up without a job per session.
pub(super) const PREPARE_BATCH: usize = 64;

/// One session to prepare.
#[derive(Debug)]
pub(super) struct PrepareRequest {
    pub(super) slot: SlotId,
    pub(super) id: SessionId,
    pub(super) dir: PathBuf,
    /// The leftovers the start-up scan found for this session, or `None` to
    /// scan the process table now.
    pub(super) leftovers: Option<Vec<Leftover>>,
    /// Started by the supervisor's start-up, not by an operator naming the
    /// session: a hold left by a previous supervisor keeps it as it was.
    pub(super) honour_hold: bool,
}

/// Scans the process table once for what a dead supervisor left under
/// `sessions_root`, and reports them by session directory.
pub(super) fn startup_scan(sessions_root: PathBuf, tx: mpsc::Sender<Event>) {
    tokio::task::spawn_blocking(move || {
        let mut by_dir: HashMap<PathBuf, Vec<Leftover>> = HashMap::new();
        for (dir, leftover) in leftovers::find_leftovers(&sessions_root) {
            by_dir.entry(dir).or_default().push(leftover);
        }
        let _ = tx.blocking_send(Event::StartupScan(by_dir));
    });
}

/// Prepares a batch of sessions on the blocking pool, one `Prepared` event each.
pub(super) fn prepare(
    batch: Vec<PrepareRequest>,
    locks: Arc<SessionLocks>,
    grace: Duration,
    tx: mpsc::Sender<Event>,
) {
    tokio::task::spawn_blocking(move || {
        for request in batch {
            let result = prepare_one(&request, &locks, grace);
            if tx
                .blocking_send(Event::Prepared {
                    slot: request.slot,
                    result,
                })
                .is_err()
            {
                return;
            }
        }
    });
}

fn prepare_one(
    request: &PrepareRequest,
    locks: &Arc<SessionLocks>,
    grace: Duration,
) -> Result<crate::session_lock::SessionLock, PrepareFailure> {
    let id = &request.id;
    ensure_private_dir(&request.dir).map_err(|e| {
        error!(session = %id, "{}", crate::error_chain(&e));
        PrepareFailure::Failed(crate::error_chain(&e))
    })?;
    let lock = match locks.try_lock(id) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            warn!(session = %id, "session is locked by another supervisor: not starting a worker");
            return Err(PrepareFailure::Busy);
        }
        Err(e) => {
            error!(session = %id, "{}", crate::error_chain(&e));
            return Err(PrepareFailure::Failed(crate::error_chain(&e)));
        }
    };
    // Under the lock, end what a supervisor killed before us left.
    let leftovers = match &request.leftovers {
        Some(known) => known.clone(),
        None => leftovers::find_leftovers(&request.dir)
            .into_iter()
            .map(|(_, l)| l)
            .collect(),
    };
    if !leftovers.is_empty() {
        let pids: Vec<u32> = leftovers.iter().map(|l| l.pid).collect();
        warn!(session = %id, ?pids, "ending processes left behind by a previous supervisor");
        if let Err(e) = leftovers::end_leftovers(&leftovers, grace, LEFTOVER_KILL_TIMEOUT) {
            error!(session = %id, "cannot end leftovers: {e}");
            return Err(PrepareFailure::Failed(format!("cannot end leftovers: {e}")));
        }
    }
    // After the leftovers: whatever a killed supervisor left is ended even
    // for a session that stays held.
    if request.honour_hold
        && let Some(hold) = super::holds::read(&request.dir)
    {
        info!(session = %id, state = %hold.state, "held by a previous supervisor: not started (`wa-ctl start {id}` starts it)");
        drop(lock);
        return Err(PrepareFailure::Held(hold));
    }
    Ok(lock)
}

/// Moves `dir` into `quarantine_dir` on the blocking pool; reports
/// `Quarantined` either way (a failure is logged and reported: the
/// credentials stay).
pub(super) fn quarantine(
    slot: SlotId,
    id: SessionId,
    dir: PathBuf,
    quarantine_dir: PathBuf,
    tx: mpsc::Sender<Event>,
) {
    tokio::task::spawn_blocking(move || {
        let error = quarantine_now(&id, &dir, &quarantine_dir).err();
        let _ = tx.blocking_send(Event::Quarantined { slot, error });
    });
}

fn quarantine_now(id: &SessionId, dir: &Path, quarantine_dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        warn!(session = %id, "logout: no session directory to quarantine");
        return Ok(());
    }
    if let Err(e) = ensure_private_dir(quarantine_dir) {
        let e = crate::error_chain(&e);
        error!(session = %id, "logout: cannot quarantine, credentials left in place: {e}");
        return Err(e);
    }
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut target = quarantine_dir.join(format!("{id}-{stamp}"));
    let mut n = 2;
    while target.exists() {
        target = quarantine_dir.join(format!("{id}-{stamp}-{n}"));
        n += 1;
    }
    match std::fs::rename(dir, &target) {
        Ok(()) => {
            info!(session = %id, to = %target.display(), "logout: credentials quarantined");
            Ok(())
        }
        Err(e) => {
            error!(session = %id, "logout: cannot move {} to {}: {e}", dir.display(), target.display());
            Err(format!(
                "cannot move {} to {}: {e}",
                dir.display(),
                target.display()
            ))
        }
    }
}
