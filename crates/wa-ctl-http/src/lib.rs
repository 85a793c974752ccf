//! `wa-ctl-http`: the supervisor's surface for applications (issue #11).
//!
//! With `[http]`, the supervisor serves, on its own runtime:
//! - a JSON API under `/v1` (the sessions as `status --json` shows them,
//!   start/stop/restart/login, the QR code, Server-Sent Events), behind a
//!   bearer token;
//! - the pairing page at `/`;
//! - `/metrics` for Prometheus, `/healthz` and `/readyz`.
//!
//! With `[[webhook]]`, every change is also POSTed, signed, to each
//! webhook.
//!
//! The loop only calls [`Http::update`] (through the core's `Surface`
//! trait): a short lock, a copy of the session's record, and for a real
//! change one event pushed to a ring, a broadcast and the webhook queues.
//! Nothing here blocks the loop; every read is served from the copy.
//!
//! The files:
//! - `hub`: the copy of the records, the events and their ring;
//! - `api`: the routes, the errors and the OpenAPI document;
//! - `auth`: the token file and the bearer check;
//! - `events`: the Server-Sent Events stream;
//! - `metrics`: the Prometheus exposition;
//! - `listener`: the bound on open connections;
//! - `qr`: the QR code as SVG and PNG;
//! - `webhook`: the signed deliveries.

mod api;
mod auth;
mod events;
mod hub;
mod listener;
mod metrics;
mod qr;
mod webhook;

use std::sync::Arc;

use tracing::info;
use wa_ctl_core::config::Config;
use wa_ctl_core::config::http::Listen;
use wa_ctl_core::policy::CloseKey;
use wa_ctl_core::status::SessionRecord;
use wa_ctl_core::supervisor::{ControlHandle, Surface, SurfaceError};

pub use api::openapi;
pub use auth::{TokenError, load_or_create_token, read_token};
pub use hub::{ApiEvent, ChangeKind};

/// The surface, before and after it starts.
pub struct Http {
    config: Config,
    hub: Option<Arc<hub::Hub>>,
    /// The webhooks' queues, flushed (within a bound) at exit.
    queues: Vec<Arc<webhook::Queue>>,
}

impl Http {
    /// Whether `config` asks for the surface: `[http]` or `[[webhook]]`.
    pub fn wanted(config: &Config) -> bool {
        config.http.is_some() || !config.webhooks.is_empty()
    }

    /// The surface for `config`, if it has `[http]` or `[[webhook]]`.
    pub fn from_config(config: &Config) -> Option<Http> {
        Http::wanted(config).then(|| Http {
            config: config.clone(),
            hub: None,
            queues: Vec::new(),
        })
    }

    /// Boxed for `supervisor::Options`.
    pub fn boxed(config: &Config) -> Option<Box<dyn Surface>> {
        Http::from_config(config).map(|h| Box::new(h) as Box<dyn Surface>)
    }
}

impl Surface for Http {
    fn start(
        &mut self,
        control: ControlHandle,
        sessions: Vec<SessionRecord>,
    ) -> Result<(), SurfaceError> {
        // Everything that can fail comes before anything starts: a webhook
        // that cannot sign, a token file others can read, a port in use.
        let webhooks = self
            .config
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| webhook::Webhook::new(i, w))
            .collect::<Result<Vec<_>, _>>()?;
        let queues: Vec<_> = webhooks.iter().map(|w| Arc::clone(&w.queue)).collect();
        let hub = Arc::new(hub::Hub::new(sessions, queues.clone()));
        if let Some(http) = &self.config.http {
            let token = load_or_create_token(&http.token_file)?;
            let state = api::AppState::new(
                Arc::clone(&hub),
                control,
                token,
                self.config.clone(),
                queues.clone(),
            );
            let router = api::router(state);
            match &http.listen {
                Listen::Tcp(addr) => {
                    let listener = std::net::TcpListener::bind(addr)
                        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                    listener.set_nonblocking(true)?;
                    serve(tokio::net::TcpListener::from_std(listener)?, router);
                }
                Listen::Unix(path) => {
                    // We hold the supervisor lock: a socket here is a dead
                    // supervisor's. Anything else is not ours to remove.
                    if std::fs::symlink_metadata(path)
                        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                    {
                        let _ = std::fs::remove_file(path);
                    }
                    let listener = tokio::net::UnixListener::bind(path)
                        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
                    // The group may connect (a reverse proxy); the token
                    // still guards every /v1 route.
                    std::fs::set_permissions(
                        path,
                        std::os::unix::fs::PermissionsExt::from_mode(0o660),
                    )?;
                    serve(listener, router);
                }
            }
            info!(listen = %http.listen, "HTTP API listening");
        }
        for w in webhooks {
            w.spawn(Arc::clone(&hub));
        }
        self.hub = Some(hub);
        self.queues = queues;
        Ok(())
    }

    fn update(&mut self, idx: usize, record: SessionRecord, closed: Option<CloseKey>) {
        if let Some(hub) = &self.hub {
            hub.update(idx, record, closed);
        }
    }

    fn finish(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let queues = self.queues.clone();
        Box::pin(webhook::flush(queues, webhook::FLUSH_TIMEOUT))
    }
}

/// Serves `router` on `listener`, at most [`listener::MAX_CONNECTIONS`]
/// connections at once, until the runtime ends.
fn serve<L: axum::serve::Listener>(listener: L, router: axum::Router)
where
    L::Addr: std::fmt::Debug,
{
    let listener = listener::Limited::new(listener);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("HTTP API stopped: {e}");
        }
    });
}
