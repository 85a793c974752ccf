//! The control socket's server side: accepts connections, checks the peer,
//! reads one request, passes it to the loop as an [`Event`], and writes the
//! answer (or, for `login`, every update).
//!
//! Hostile or broken clients cannot hurt the loop:
//! - at most [`MAX_CONNECTIONS`] are served at once; more wait in the
//!   kernel's backlog;
//! - a client has [`REQUEST_TIMEOUT`] to send its request;
//! - when `accept` fails for lack of descriptors (EMFILE, ENFILE) the
//!   accept task backs off, doubling up to a second, and logs once per
//!   episode instead of spinning. An episode lasts until [`QUIET`] passes
//!   without a failure: out of descriptors, each one freed lets one accept
//!   through before the next failure, and ending the episode there logged
//!   two lines per connection (issue #9).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{info, warn};

use crate::control::{MAX_REQUEST, Request, Response};

use super::event::Event;

/// Connections served at once.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest pause of the accept loop after a failed `accept`.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long `accept` must go without failing before a new failure counts
/// as a new episode, and is logged.
const QUIET: Duration = Duration::from_secs(10);

/// A run of failed accepts, none more than [`QUIET`] after the last.
struct FailureEpisode {
    last_failure: Instant,
    failures: u64,
    /// Whether an accept has succeeded since the episode began (and that
    /// was logged).
    recovered: bool,
}

/// Serves the socket until the loop is gone. Requests go to `tx`.
pub(super) fn spawn(listener: UnixListener, tx: mpsc::Sender<Event>) {
    tokio::spawn(accept_loop(listener, tx));
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Event>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::ZERO;
    let mut episode: Option<FailureEpisode> = None;
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                if let Some(episode) = episode.as_mut().filter(|e| !e.recovered) {
                    info!(
                        failures = episode.failures,
                        "control socket: accepting again"
                    );
                    episode.recovered = true;
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    serve(stream, tx).await;
                    drop(permit);
                });
            }
            Err(e) => {
                if tx.is_closed() {
                    return;
                }
                // Out of descriptors (or any other failure): pause rather
                // than spin, and say so once per episode.
                let now = Instant::now();
                match episode.as_mut() {
                    Some(episode) if now.duration_since(episode.last_failure) < QUIET => {
                        episode.last_failure = now;
                        episode.failures += 1;
                    }
                    _ => {
                        warn!(
                            "control socket: accept failed, pausing: {e} \
                             (further failures within {}s of each other are not logged)",
                            QUIET.as_secs()
                        );
                        episode = Some(FailureEpisode {
                            last_failure: now,
                            failures: 1,
                            recovered: false,
                        });
                    }
                }
                backoff = if backoff.is_zero() {
                    Duration::from_millis(5)
                } else {
                    backoff.saturating_mul(2).min(MAX_ACCEPT_BACKOFF)
                };
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Serves one connection: check the peer, read one request, pass it to the
/// loop, write the answer.
async fn serve(stream: UnixStream, tx: mpsc::Sender<Event>) {
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
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
            Err(_) => Response::error("no request within 5s"),
            Ok(Err(e)) => Response::error(format!("bad request: {e}")),
            Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                Ok(Request::Login { session, phone }) => {
                    return stream_login(session, phone, tx, write).await;
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
        }
    };
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

/// `login`: register as a watcher of the session, then write each update
/// until the session is done or the client goes away.
async fn stream_login(
    session: String,
    phone: Option<String>,
    tx: mpsc::Sender<Event>,
    mut write: tokio::net::unix::OwnedWriteHalf,
) {
    let (updates_tx, mut updates_rx) = mpsc::channel(16);
    let registered = tx
        .send(Event::Login {
            session,
            phone,
            updates: updates_tx,
        })
        .await;
    if registered.is_err() {
        let mut bytes =
            serde_json::to_vec(&Response::error("the supervisor is exiting")).unwrap_or_default();
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
        return;
    }
    while let Some(update) = updates_rx.recv().await {
        let Ok(mut bytes) = serde_json::to_vec(&update) else {
            return;
        };
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() || update.done {
            return;
        }
    }
}
