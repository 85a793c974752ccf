//! Webhooks: every change a `[[webhook]]` asked for, POSTed and signed.
//!
//! Each webhook has one bounded queue and one task that delivers its head,
//! so deliveries go in order (per session, and overall). A delivery that
//! fails (no answer within [`ATTEMPT_TIMEOUT`], a 5xx, a 408 or a 429) is
//! retried after a backoff that doubles from 1 s to [`MAX_BACKOFF`]; a
//! receiver that refuses the body (any other 4xx) will refuse it again, so
//! that delivery is given up and counted. When a receiver is down long
//! enough for the queue to fill, the oldest entries are dropped and
//! counted in `wa_ctl_webhook_dropped_total`: the loop only ever pushes,
//! and never waits for a receiver.
//!
//! The body is the event's JSON, exactly as the event stream sends it. The
//! headers:
//! - `X-Wa-Ctl-Signature: sha256=<hex>`: HMAC-SHA256 of the body with the
//!   webhook's secret;
//! - `X-Wa-Ctl-Delivery`: `<supervisor start ms>-<event id>`, the same on
//!   every retry, so that a receiver can drop a repeat;
//! - `X-Wa-Ctl-Event`: `state` or `qr`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tracing::{info, warn};
use wa_ctl_core::config::http::{ChangeKind, WebhookConfig};

use crate::auth::{TokenError, hex, read_private};
use crate::hub::{Change, Hub};

/// Entries a webhook's queue holds before the oldest are dropped.
pub(crate) const QUEUE: usize = 1024;

/// How long one delivery may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first pause after a failed delivery, doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long the supervisor's exit waits for the queues to empty.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A webhook's queue and its counts, shared by the hub (which pushes) and
/// the delivery task.
#[derive(Debug)]
pub(crate) struct Queue {
    /// The label of the webhook in the metrics: its index in the file.
    pub(crate) label: String,
    events: Vec<ChangeKind>,
    entries: Mutex<VecDeque<Arc<Change>>>,
    notify: Notify,
    /// Woken whenever an entry leaves the queue.
    progress: Notify,
    pub(crate) dropped: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) given_up: AtomicU64,
}

impl Queue {
    fn new(label: String, events: Vec<ChangeKind>) -> Queue {
        Queue {
            label,
            events,
            entries: Mutex::new(VecDeque::with_capacity(16)),
            notify: Notify::new(),
            progress: Notify::new(),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
        }
    }

    /// Queues a change this webhook asked for; drops the oldest entry when
    /// the queue is full. Called on the loop: never waits.
    pub(crate) fn push(&self, change: &Arc<Change>) {
        if !self.events.contains(&change.kind) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == QUEUE {
            entries.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        entries.push_back(Arc::clone(change));
        drop(entries);
        self.notify.notify_one();
    }

    fn head(&self) -> Option<Arc<Change>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
    }

    /// Removes `change` if it is still the head (an overflow may have
    /// dropped it meanwhile).
    fn done(&self, change: &Change) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.front().is_some_and(|c| c.id == change.id) {
            entries.pop_front();
        }
        drop(entries);
        self.progress.notify_waiters();
    }

    /// The entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Waits until every queue is empty, or `timeout` has passed: at exit, the
/// last changes (each session's `stopped`) get a bounded chance to go out.
pub(crate) async fn flush(queues: Vec<Arc<Queue>>, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for queue in queues {
        loop {
            let progress = queue.progress.notified();
            if queue.len() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                warn!(
                    webhook = %queue.label,
                    undelivered = queue.len(),
                    "exiting with webhook deliveries still queued"
                );
                return;
            }
        }
    }
}

/// One `[[webhook]]`, ready to deliver.
pub(crate) struct Webhook {
    url: String,
    secret: Vec<u8>,
    pub(crate) queue: Arc<Queue>,
}

impl Webhook {
    /// Reads the webhook's secret (private, like the API token).
    pub(crate) fn new(index: usize, config: &WebhookConfig) -> Result<Webhook, TokenError> {
        let secret = read_private(&config.secret_file)?;
        Ok(Webhook {
            url: config.url.clone(),
            secret: secret.into_bytes(),
            queue: Arc::new(Queue::new(index.to_string(), config.events.clone())),
        })
    }

    /// Starts the delivery task.
    pub(crate) fn spawn(self, hub: Arc<Hub>) {
        tokio::spawn(self.deliver(hub));
    }

    async fn deliver(self, hub: Arc<Hub>) {
        let client = match reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("wa-ctl/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                warn!(webhook = %self.queue.label, "cannot set up webhook deliveries: {e}");
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            let notified = self.queue.notify.notified();
            let Some(change) = self.queue.head() else {
                notified.await;
                continue;
            };
            match self.attempt(&client, &hub, &change).await {
                Outcome::Delivered => {
                    self.queue.delivered.fetch_add(1, Ordering::Relaxed);
                    self.queue.done(&change);
                    if failing {
                        info!(webhook = %self.queue.label, url = %self.url, "webhook delivers again");
                        failing = false;
                    }
                    backoff = FIRST_BACKOFF;
                }
                Outcome::Refused(status) => {
                    self.queue.given_up.fetch_add(1, Ordering::Relaxed);
                    self.queue.done(&change);
                    warn!(webhook = %self.queue.label, url = %self.url, status, event = change.id, "webhook refused a delivery: not retried");
                }
                Outcome::Retry(why) => {
                    self.queue.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        warn!(webhook = %self.queue.label, url = %self.url, "webhook delivery failed, retrying with backoff: {why}");
                        failing = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn attempt(&self, client: &reqwest::Client, hub: &Hub, change: &Change) -> Outcome {
        let signature = sign(&self.secret, change.json.as_bytes());
        let result = client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-wa-ctl-signature", format!("sha256={signature}"))
            .header("x-wa-ctl-delivery", format!("{}-{}", hub.run, change.id))
            .header("x-wa-ctl-event", change.kind.as_str())
            .body(change.json.clone())
            .send()
            .await;
        match result {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Outcome::Delivered
                } else if status.is_client_error()
                    && status != reqwest::StatusCode::REQUEST_TIMEOUT
                    && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    Outcome::Refused(status.as_u16())
                } else {
                    Outcome::Retry(format!("status {status}"))
                }
            }
            Err(e) => Outcome::Retry(wa_ctl_core::error_chain(&e)),
        }
    }
}

enum Outcome {
    Delivered,
    Refused(u16),
    Retry(String),
}

/// HMAC-SHA256 of `body` with `secret`, as hex.
pub(crate) fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let q = Queue::new("0".into(), vec![ChangeKind::State]);
        for id in 1..=(QUEUE as u64 + 3) {
            q.push(&Arc::new(Change {
                id,
                kind: ChangeKind::State,
                json: String::new(),
            }));
        }
        q.push(&Arc::new(Change {
            id: 0,
            kind: ChangeKind::Qr,
            json: String::new(),
        }));
        assert_eq!(q.len(), QUEUE, "a qr event this webhook did not ask for");
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(q.head().unwrap().id, 4);
        q.done(&Change {
            id: 5,
            kind: ChangeKind::State,
            json: String::new(),
        });
        assert_eq!(q.head().unwrap().id, 4, "only the head it delivered");
    }
}
