//! `wa-worker`: one WhatsApp Web connection, run by `wa-ctl`.
//!
//! It connects with the credentials in its session directory (pairing by QR
//! code or pair code when there are none), reports what happens as JSON
//! lines on `WA_CTL_EVENTS_FD` (see `docs/worker-protocol.md`), and when the
//! connection ends it reports one close code and exits. It never reconnects
//! by itself: the supervisor's policy owns that decision, so that no two
//! parties can ever race to reconnect the same credentials.

mod heartbeat;
mod mapping;
mod sink;
mod store;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use clap::Parser;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::prelude::*;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::EventHandler;

use crate::mapping::{Report, classify, code};
use crate::sink::Sink;

/// Exit status for a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit status when the worker cannot run at all (its store cannot open).
const EXIT_FAILURE: u8 = 1;

/// How long a clean close may take on SIGTERM: the supervisor's default
/// grace is longer, and the worker promises to be gone within 2 s.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The longest start deadline accepted (24h, as its error message says):
/// beyond a day it is a typo, and the bound keeps deadline arithmetic far
/// from overflowing.
const MAX_START_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// The client version announced when `--url` points the worker elsewhere
/// than WhatsApp: the real version is fetched from web.whatsapp.com, which a
/// loopback test endpoint cannot serve.
const TEST_ENDPOINT_VERSION: (u32, u32, u32) = (2, 3000, 1_000_000_000);

/// The WhatsApp Web connection worker supervised by wa-ctl.
///
/// wa-ctl starts it with WA_CTL_SESSION_ID, WA_CTL_SESSION_DIR and
/// WA_CTL_EVENTS_FD set; it is not meant to be started by hand. To debug it
/// by hand, give it a session directory: events then go to stdout.
///
/// It reports qr or pair_code while it waits for pairing, connected once
/// the connection is up, alive every 20 s while it stays up, and one closed
/// event with a close code when it ends; then it exits. The codes are listed
/// in docs/worker-protocol.md, "The outcomes of wa-worker".
#[derive(Debug, Parser)]
#[command(name = "wa-worker", version)]
struct Args {
    /// The session directory (default: $WA_CTL_SESSION_DIR). Holds the
    /// SQLite store with the credentials.
    #[arg(long, value_name = "DIR")]
    session_dir: Option<PathBuf>,
    /// Connect to this WebSocket URL instead of WhatsApp's, for tests on
    /// loopback endpoints (default: $WA_WORKER_URL, else WhatsApp)
    #[arg(long, value_name = "URL", env = "WA_WORKER_URL")]
    url: Option<String>,
    /// Link with a pair code for this phone number (digits, country code
    /// first) instead of a QR code (default: $WA_CTL_PAIR_PHONE)
    #[arg(long, value_name = "DIGITS", env = "WA_CTL_PAIR_PHONE")]
    phone: Option<String>,
    /// Give up unless a QR code, a pair code or the connection comes within
    /// this time of start-up (a duration such as 30s or 2m): the worker then
    /// reports close code 408 and exits. A peer that answers but never gets
    /// anywhere would otherwise hold the worker forever
    #[arg(
        long,
        value_name = "DURATION",
        env = "WA_WORKER_START_DEADLINE",
        default_value = "30s",
        value_parser = parse_start_deadline
    )]
    start_deadline: Duration,
}

fn parse_start_deadline(text: &str) -> Result<Duration, String> {
    let deadline = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if deadline.is_zero() || deadline > MAX_START_DEADLINE {
        return Err("must be more than 0s and at most 24h".to_owned());
    }
    Ok(deadline)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(session_dir) = args
        .session_dir
        .clone()
        .or_else(|| std::env::var_os("WA_CTL_SESSION_DIR").map(PathBuf::from))
    else {
        eprintln!(
            "wa-worker: WA_CTL_SESSION_DIR is not set: wa-worker is run by wa-ctl (`wa-ctl start`); \
             to debug it by hand, pass --session-dir DIR"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    // Credentials are secrets: whatever the store creates is the owner's only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Err(e) = private_dir(&session_dir) {
        eprintln!(
            "wa-worker: session directory {}: {e}",
            session_dir.display()
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    let sink = match Sink::from_env() {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("wa-worker: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wa-worker: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(run(args, session_dir, sink));
    // The library may leave background tasks; they must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// What the event handler has seen, for the single close report at the end.
#[derive(Debug, Default)]
struct Seen {
    /// A QR code, a pair code or the connection was reported: the start
    /// deadline no longer applies.
    started: bool,
    /// The start deadline passed first: nothing but its close is reported.
    start_deadline_passed: bool,
    /// `connected` was reported: the heartbeat runs.
    connected: bool,
    /// The first specific close (logout, conflict, ...): it decides.
    close: Option<Close>,
    /// A lost connection, used only when nothing more specific was seen.
    lost: Option<String>,
    pairing_expired: bool,
}

impl Seen {
    /// Marks the start as reached, unless the start deadline passed first;
    /// says whether the event that reached it may be reported.
    fn start(&mut self) -> bool {
        if self.start_deadline_passed {
            return false;
        }
        self.started = true;
        true
    }
}

/// The `closed` event the worker ends with.
#[derive(Debug)]
struct Close {
    code: u16,
    reason: String,
    retry_after_s: Option<u64>,
}

impl Close {
    fn event(&self) -> serde_json::Value {
        let mut event = serde_json::json!({
            "event": "closed",
            "code": self.code,
            "reason": self.reason,
        });
        if let Some(seconds) = self.retry_after_s {
            event["retry_after_s"] = seconds.into();
        }
        event
    }
}

/// Reports events as they happen, inline, in the library's order.
struct Reporter {
    sink: Sink,
    seen: Mutex<Seen>,
    client: OnceLock<Arc<Client>>,
}

impl Reporter {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The start deadline fired: says whether it ends the worker, which it
    /// does unless the start was reached. Decided under the same lock as the
    /// start itself, so that a QR code arriving at that moment is either
    /// reported and the deadline ignored, or not reported at all.
    fn pass_start_deadline(&self) -> bool {
        let mut seen = self.seen();
        if seen.started {
            return false;
        }
        seen.start_deadline_passed = true;
        true
    }

    /// One beat of the heartbeat (see the `heartbeat` module).
    fn beat(&self, client: &Client) {
        let connected = self.seen().connected;
        let due = heartbeat::due(
            connected,
            client.is_connected(),
            client.stats().last_data_received_ms,
            whatsapp_rust::wacore::protocol::keepalive::now_ms(),
        );
        if due {
            self.sink.send(&serde_json::json!({"event": "alive"}));
        }
    }
}

impl EventHandler for Reporter {
    fn handle_event(&self, event: Arc<Event>) {
        let report = classify(&event, SystemTime::now());
        if report == Report::Ignore {
            // Most events are messages and raw stanzas: no lock for them.
            return;
        }
        let mut seen = self.seen();
        match report {
            Report::Qr(code) => {
                if seen.start() {
                    self.sink
                        .send(&serde_json::json!({"event": "qr", "code": code}));
                }
            }
            Report::PairCode(code) => {
                if seen.start() {
                    self.sink
                        .send(&serde_json::json!({"event": "pair_code", "code": code}));
                }
            }
            Report::BadPairCode { length } => {
                // The code is a secret: its length is all the log gets.
                eprintln!(
                    "wa-worker: the library produced a pair code of {length} bytes that is not \
                     8 characters of its alphabet; not reported"
                );
            }
            Report::Connected => {
                if seen.start() {
                    seen.connected = true;
                    let jid = self
                        .client
                        .get()
                        .and_then(|c| c.pn())
                        .map(|j| j.to_string());
                    self.sink
                        .send(&serde_json::json!({"event": "connected", "jid": jid}));
                    // The first beat: the supervisor expects the next within
                    // its heartbeat_timeout from here on.
                    self.sink.send(&serde_json::json!({"event": "alive"}));
                }
            }
            Report::Close {
                code,
                reason,
                retry_after_s,
            } => {
                seen.close.get_or_insert(Close {
                    code,
                    reason,
                    retry_after_s,
                });
            }
            Report::Lost { reason } => {
                seen.lost.get_or_insert(reason);
            }
            Report::PairingExpired => seen.pairing_expired = true,
            Report::Ignore => {}
        }
    }
}

/// Why the worker's main loop ended.
enum Ending {
    /// The library's run ended: the connection closed or never opened.
    Closed,
    /// SIGTERM or SIGINT: an operator stop, not a close.
    Stopped,
    /// No QR code, pair code nor connection within the start deadline.
    StartDeadline,
}

async fn run(args: Args, session_dir: PathBuf, sink: Sink) -> ExitCode {
    // From start-up: opening the store and connecting count against it.
    let start_deadline = tokio::time::sleep(args.start_deadline);
    let db = session_dir.join("session.db");
    if let Err(e) = store::check(&db) {
        let close = Close {
            code: code::STORE_UNREADABLE,
            reason: format!(
                "credential store {} is not a readable SQLite database: {e}; \
                 move it aside to pair again, or restore it from a backup",
                db.display()
            ),
            retry_after_s: None,
        };
        eprintln!("wa-worker: {}", close.reason);
        sink.send(&close.event());
        return ExitCode::from(EXIT_FAILURE);
    }
    let store = match SqliteStore::new(&db.to_string_lossy()).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "wa-worker: cannot open the session store {}: {e}",
                db.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut transport = TokioWebSocketTransportFactory::new();
    if let Some(url) = &args.url {
        transport = transport.with_url(url.clone());
    }
    let reporter = Arc::new(Reporter {
        sink,
        seen: Mutex::default(),
        client: OnceLock::new(),
    });
    let mut builder = Bot::builder()
        .with_backend(store)
        .with_transport_factory(transport);
    if args.url.is_some() {
        builder = builder.with_version(TEST_ENDPOINT_VERSION);
    }
    if let Some(phone) = &args.phone {
        builder = builder.with_pair_code(PairCodeOptions {
            phone_number: phone.clone(),
            ..Default::default()
        });
    }
    let bot = match builder
        .with_event_handler(SharedReporter(reporter.clone()))
        .build()
        .await
    {
        Ok(bot) => bot,
        Err(e) => {
            eprintln!("wa-worker: cannot set up the client: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let client = bot.client();
    let _ = reporter.client.set(client.clone());
    // The supervisor alone decides about reconnects.
    client.enable_auto_reconnect.store(false, Ordering::Relaxed);

    let (mut sigterm, mut sigint) = match (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("wa-worker: cannot install signal handlers");
            return ExitCode::from(EXIT_FAILURE);
        }
    };

    // Stream errors 503, 429 and 515 reach the worker only as raw stanzas
    // (see mapping::raw_stream_error).
    let _raw_nodes = client.acquire_raw_node_forwarding();

    let handle = bot.spawn();
    tokio::pin!(handle);
    tokio::pin!(start_deadline);
    let mut start_deadline_armed = true;
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat::INTERVAL,
        heartbeat::INTERVAL,
    );
    // After a stall, one beat, not a burst: a burst would hide the stall.
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ending = loop {
        tokio::select! {
            () = &mut handle => break Ending::Closed,
            _ = sigterm.recv() => break Ending::Stopped,
            _ = sigint.recv() => break Ending::Stopped,
            () = &mut start_deadline, if start_deadline_armed => {
                if reporter.pass_start_deadline() {
                    break Ending::StartDeadline;
                }
                start_deadline_armed = false;
            }
            _ = heartbeat.tick() => reporter.beat(&client),
        }
    };
    // Close the socket cleanly and flush the store, in every case: the old
    // socket must be gone before the supervisor starts a new worker.
    if tokio::time::timeout(CLOSE_TIMEOUT, client.disconnect())
        .await
        .is_err()
    {
        eprintln!(
            "wa-worker: the connection did not close within {}ms",
            CLOSE_TIMEOUT.as_millis()
        );
    }
    if let Ending::Stopped = ending {
        return ExitCode::SUCCESS;
    }

    let seen = std::mem::take(&mut *reporter.seen());
    if seen.pairing_expired && seen.close.is_none() {
        eprintln!("wa-worker: pairing expired: no QR code was scanned");
        reporter
            .sink
            .send(&serde_json::json!({"event": "pairing_expired"}));
        return ExitCode::SUCCESS;
    }
    let close = seen.close.unwrap_or_else(|| Close {
        code: code::TIMED_OUT,
        reason: match ending {
            Ending::StartDeadline => format!(
                "no qr, pair code or connection within {} (start deadline)",
                humantime::format_duration(args.start_deadline)
            ),
            // No event at all: the transport could not connect (DNS, TCP,
            // TLS, WebSocket handshake), or the connection was lost.
            Ending::Closed | Ending::Stopped => {
                seen.lost.unwrap_or_else(|| "could not connect".to_owned())
            }
        },
        retry_after_s: None,
    });
    eprintln!(
        "wa-worker: connection closed: {} ({})",
        close.code, close.reason
    );
    reporter.sink.send(&close.event());
    ExitCode::SUCCESS
}

/// The builder wants an owned handler; the worker keeps a second reference.
struct SharedReporter(Arc<Reporter>);

impl EventHandler for SharedReporter {
    fn handle_event(&self, event: Arc<Event>) {
        self.0.handle_event(event);
    }
}
