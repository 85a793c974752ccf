//! `wa-worker`: one WhatsApp Web connection, run by `wa-ctl`.
//!
//! It connects with the credentials in its session directory (pairing by QR
//! code or pair code when there are none), reports what happens as JSON
//! lines on `WA_CTL_EVENTS_FD` (see `docs/worker-protocol.md`), and when the
//! connection ends it reports one close code and exits. It never reconnects
//! by itself: the supervisor's policy owns that decision, so that no two
//! parties can ever race to reconnect the same credentials.

mod mapping;
mod sink;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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

/// The client version announced when `--url` points the worker elsewhere
/// than WhatsApp: the real version is fetched from web.whatsapp.com, which a
/// loopback test endpoint cannot serve.
const TEST_ENDPOINT_VERSION: (u32, u32, u32) = (2, 3000, 1_000_000_000);

/// The WhatsApp Web connection worker supervised by wa-ctl.
///
/// wa-ctl starts it with WA_CTL_SESSION_ID, WA_CTL_SESSION_DIR and
/// WA_CTL_EVENTS_FD set; it is not meant to be started by hand. To debug it
/// by hand, give it a session directory: events then go to stdout.
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
    /// The first specific close (logout, conflict, ...): it decides.
    close: Option<(u16, String)>,
    /// A lost connection, used only when nothing more specific was seen.
    lost: Option<String>,
    pairing_expired: bool,
}

/// Reports events as they happen, inline, in the library's order.
struct Reporter {
    sink: Sink,
    seen: Mutex<Seen>,
    client: OnceLock<Arc<Client>>,
}

impl EventHandler for Reporter {
    fn handle_event(&self, event: Arc<Event>) {
        let report = classify(&event);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match report {
            Report::Qr(code) => self
                .sink
                .send(&serde_json::json!({"event": "qr", "code": code})),
            Report::PairCode(code) => self
                .sink
                .send(&serde_json::json!({"event": "pair_code", "code": code})),
            Report::Connected => {
                let jid = self
                    .client
                    .get()
                    .and_then(|c| c.pn())
                    .map(|j| j.to_string());
                self.sink
                    .send(&serde_json::json!({"event": "connected", "jid": jid}));
            }
            Report::Close { code, reason } => {
                seen.close.get_or_insert((code, reason));
            }
            Report::Lost { reason } => {
                seen.lost.get_or_insert(reason);
            }
            Report::PairingExpired => seen.pairing_expired = true,
            Report::Ignore => {}
        }
    }
}

async fn run(args: Args, session_dir: PathBuf, sink: Sink) -> ExitCode {
    let db = session_dir.join("session.db");
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

    let handle = bot.spawn();
    tokio::pin!(handle);
    let stopped_by_signal = tokio::select! {
        () = &mut handle => false,
        _ = sigterm.recv() => true,
        _ = sigint.recv() => true,
    };
    // Close the socket cleanly and flush the store, in both cases: the old
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
    if stopped_by_signal {
        return ExitCode::SUCCESS;
    }

    let seen = std::mem::take(&mut *reporter.seen.lock().unwrap_or_else(|p| p.into_inner()));
    if seen.pairing_expired && seen.close.is_none() {
        eprintln!("wa-worker: pairing expired: no QR code was scanned");
        reporter
            .sink
            .send(&serde_json::json!({"event": "pairing_expired"}));
        return ExitCode::SUCCESS;
    }
    let (code, reason) = seen.close.unwrap_or_else(|| {
        // No event at all: the transport could not connect (DNS, TCP, TLS,
        // WebSocket handshake), or the connection was lost.
        (
            code::TIMED_OUT,
            seen.lost.unwrap_or_else(|| "could not connect".to_owned()),
        )
    });
    eprintln!("wa-worker: connection closed: {code} ({reason})");
    reporter
        .sink
        .send(&serde_json::json!({"event": "closed", "code": code, "reason": reason}));
    ExitCode::SUCCESS
}

/// The builder wants an owned handler; the worker keeps a second reference.
struct SharedReporter(Arc<Reporter>);

impl EventHandler for SharedReporter {
    fn handle_event(&self, event: Arc<Event>) {
        self.0.handle_event(event);
    }
}
