//! `Slot`: one session as the loop holds it: the pure [`Session`] machine,
//! plus the resources that carry out its effects (the lock, the channel to
//! the current worker's watcher) and the clients waiting on it.
//!
//! The worker's pid lives in one place, the session's phase: the slot never
//! copies it.

use tokio::sync::{mpsc, oneshot};

use crate::control::{Response, SessionUpdate};
use crate::lifecycle::{PairingCode, Session, State};
use crate::session_lock::SessionLock;

use super::event::Generation;

#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) session: Session,
    /// The session lock, while held.
    pub(super) lock: Option<SessionLock>,
    /// Counts spawns, so that late events of an old worker are ignored.
    pub(super) generation: Generation,
    /// Tells the current worker's watcher that the worker was reaped.
    pub(super) reaped_tx: Option<oneshot::Sender<()>>,
    /// Control requests answered once the session is not stopping.
    pub(super) waiters: Vec<oneshot::Sender<Response>>,
    /// `wa-ctl login` streams following this session.
    pub(super) watchers: Vec<mpsc::Sender<SessionUpdate>>,
    /// The last update sent to the watchers.
    pub(super) last_update: Option<SessionUpdate>,
    /// The phone number for the pair-code flow, until the session connects.
    pub(super) pair_phone: Option<String>,
    /// Whether the slot is queued for `answer` after the current event.
    pub(super) touched: bool,
    /// The worker program, found once and kept until a spawn fails (it may
    /// have been moved or reinstalled).
    pub(super) program: Option<std::path::PathBuf>,
    /// Started at start-up and not yet through its first prepare: readiness
    /// waits for it.
    pub(super) starting_up: bool,
    /// The next prepare honours a hold on disk (the supervisor's start-up).
    pub(super) honour_hold: bool,
    /// A hold is (or is being) persisted for the session: an operator's
    /// start clears it.
    pub(super) held: bool,
    /// An operator started the session while a prepare that honours holds
    /// was in flight: a hold it finds is cleared, and the session started.
    pub(super) start_overrides_hold: bool,
    /// The close of a worker that ended in the current event, until the
    /// surface (issue #11) has been told.
    pub(super) closed: Option<crate::policy::CloseKey>,
}

impl Slot {
    /// What a `login` stream shows of the session now.
    pub(super) fn update(&self) -> SessionUpdate {
        let session = &self.session;
        let (qr, pair_code) = match &session.pairing_code {
            Some(PairingCode::Qr(code)) => (Some(code.clone()), None),
            Some(PairingCode::PairCode(code)) => (None, Some(code.clone())),
            None => (None, None),
        };
        SessionUpdate {
            state: Some(session.state),
            qr,
            pair_code,
            jid: session.jid.clone(),
            last_code: session.last_close,
            last_reason: session.last_reason.clone(),
            done: session.state.ends_login(),
            error: None,
        }
    }

    /// Answers the waiting control requests once the session is not
    /// stopping, and sends the `login` streams the state when it changed.
    pub(super) fn answer(&mut self, id: &str) {
        // Not while ownership is being asked for (issue #10): the answer
        // is `starting` or `standby` once etcd has said which.
        let settled = self.session.state != State::Stopping
            && !matches!(
                self.session.phase,
                crate::lifecycle::Phase::Acquiring { .. }
            );
        if !self.waiters.is_empty() && settled {
            let response = match self.session.state {
                State::Locked => Response::error(format!(
                    "session {id} is locked: another supervisor runs its worker"
                )),
                state => Response::ok(format!("session {id}: {state}")),
            };
            for waiter in self.waiters.drain(..) {
                let _ = waiter.send(response.clone());
            }
        }
        if self.watchers.is_empty() {
            return;
        }
        let update = self.update();
        if self.last_update.as_ref() == Some(&update) {
            return;
        }
        // A watcher that does not keep up, or went away, is dropped rather
        // than allowed to hold up the loop.
        self.watchers.retain(|w| w.try_send(update.clone()).is_ok());
        if update.done {
            self.watchers.clear();
        }
        self.last_update = Some(update);
    }
}
