//! `Surface`: what the loop tells an application surface (the HTTP API,
//! webhooks and metrics of issue #11, in `crates/wa-ctl-http`), and the
//! handle the surface sends requests back with.
//!
//! The loop calls [`Surface::update`] once per session an event touched,
//! with that session's record: constant work per event, and no call at all
//! without a surface. The surface keeps its own copy of every record, so
//! that reads (the API's GETs, the metrics) never reach the loop; it must
//! not block in `update` (no I/O, no waiting: a short lock at most).
//! Requests that change something go through [`ControlHandle`], exactly as
//! the control socket's do, so the API has the CLI's semantics.

use tokio::sync::{mpsc, oneshot};

use crate::control::{Request, Response, SessionUpdate};
use crate::policy::CloseKey;
use crate::status::SessionRecord;

use super::event::Event;

/// Why a surface could not start (a port in use, a token file others can
/// read, ...): the supervisor stops before starting any session.
pub type SurfaceError = Box<dyn std::error::Error + Send + Sync>;

/// An application surface driven by the loop.
pub trait Surface: Send {
    /// Starts serving, on the supervisor's runtime, once the supervisor
    /// lock is held and before any session starts. `sessions` are the
    /// records of every configured session, in configuration order: the
    /// `idx` of [`Surface::update`] indexes them.
    fn start(
        &mut self,
        control: ControlHandle,
        sessions: Vec<SessionRecord>,
    ) -> Result<(), SurfaceError>;

    /// Session `idx` after an event touched it: its record now, and the
    /// close of a worker that ended in this event, if one did.
    fn update(&mut self, idx: usize, record: SessionRecord, closed: Option<CloseKey>);

    /// Called once when every session has stopped, before the supervisor
    /// exits: a bounded chance to deliver what is queued (the last
    /// `stopped` of each session). The default does nothing.
    fn finish(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

/// Sends requests to the loop on its control queue, like the control
/// socket's connections.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    pub(super) tx: mpsc::Sender<Event>,
}

impl ControlHandle {
    /// Sends a request and waits for its answer (`start`, `stop` and
    /// `restart` are answered once the session has settled).
    pub async fn request(&self, request: Request) -> Response {
        let (reply_tx, reply_rx) = oneshot::channel();
        if self
            .tx
            .send(Event::Control(request, reply_tx))
            .await
            .is_err()
        {
            return Response::error("the supervisor is exiting");
        }
        reply_rx
            .await
            .unwrap_or_else(|_| Response::error("the supervisor is exiting"))
    }

    /// Starts pairing a session, like `wa-ctl login`, and returns the
    /// stream of its progress (the first update is the state after the
    /// start). Dropping the receiver ends the watch.
    pub async fn login(
        &self,
        session: String,
        phone: Option<String>,
    ) -> Option<mpsc::Receiver<SessionUpdate>> {
        let (updates, rx) = mpsc::channel(16);
        self.tx
            .send(Event::Login {
                session,
                phone,
                updates,
            })
            .await
            .ok()?;
        Some(rx)
    }
}
