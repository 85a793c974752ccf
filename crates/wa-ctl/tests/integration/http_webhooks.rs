//! Webhooks (issue #11, sections 4 and 5) against the real supervisor and
//! the test worker, delivered to a receiver of our own on loopback: the
//! signatures, the delivery ids, the body, the order, one `connected` per
//! real connection, a receiver that is down slowing nothing, the bounded
//! queue, and the configuration's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::harness::{TestEnv, closed_port, stderr, wait_until};
use crate::http_metrics::{sample, scrape};

const DEADLINE: Duration = Duration::from_secs(20);

/// The receiver's status when it is told never to answer.
const NEVER: u16 = 0;

/// One request the receiver read.
#[derive(Debug, Clone)]
struct Delivery {
    method: String,
    path: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a delivery that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body's `id`: the event's.
    fn event_id(&self) -> u64 {
        self.json()["id"].as_u64().expect("an event id")
    }

    fn is_state(&self, state: &str) -> bool {
        let v = self.json();
        v["event"] == "state" && v["session"]["state"] == state
    }
}

/// An HTTP/1.1 receiver on a loopback port: it reads each request (head
/// and `Content-Length` body, several per connection), records it, and
/// answers with the current status, or never (`NEVER`). Dropping it closes
/// every connection and joins every thread.
struct Receiver {
    port: u16,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    /// A clone of every accepted connection, shut down on drop so that no
    /// thread stays blocked in a read.
    connections: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (deliveries, status, stop, connections, threads) = (
                Arc::clone(&deliveries),
                Arc::clone(&status),
                Arc::clone(&stop),
                Arc::clone(&connections),
                Arc::clone(&threads),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    connections
                        .lock()
                        .unwrap()
                        .push(stream.try_clone().unwrap());
                    let (deliveries, status) = (Arc::clone(&deliveries), Arc::clone(&status));
                    let handle = std::thread::spawn(move || serve(stream, &deliveries, &status));
                    threads.lock().unwrap().push(handle);
                }
            })
        };
        Receiver {
            port,
            deliveries,
            status,
            stop,
            connections,
            threads,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// Waits until the deliveries satisfy `check`, and returns them.
    fn wait_for(&self, what: &str, check: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let start = Instant::now();
        loop {
            let deliveries = self.deliveries();
            if check(&deliveries) {
                return deliveries;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for {what}; received {:#?}",
                deliveries.iter().map(Delivery::json).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for handle in self.threads.lock().unwrap().drain(..) {
            let _ = handle.join();
        }
    }
}

/// Serves one connection until the peer closes it (or the receiver is
/// dropped).
fn serve(stream: TcpStream, deliveries: &Mutex<Vec<Delivery>>, status: &AtomicU16) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_owned(), path.to_owned());
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().expect("a Content-Length"));
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        deliveries.lock().unwrap().push(Delivery {
            method,
            path,
            headers,
            body,
        });
        let status = status.load(Ordering::SeqCst);
        if status == NEVER {
            // Hold the connection, unanswered, until the client gives up
            // (its attempt timeout) or the receiver is dropped.
            let _ = reader.read_to_end(&mut Vec::new());
            return;
        }
        let answer = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// HMAC-SHA256 of `body` with `secret`, as lower-case hex.
fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a webhook secret file (0600) in the test's directory; its name
/// for the configuration.
fn secret_file(env: &TestEnv, name: &str, secret: &str, mode: u32) -> PathBuf {
    let path = env.path().join(name);
    // With a final newline, as `openssl rand -hex 32 > file` writes it: the
    // secret is the file's text without it.
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A `[[webhook]]` table.
fn webhook(url: &str, secret_file: &std::path::Path, events: &[&str]) -> String {
    format!(
        "[[webhook]]\nurl = \"{url}\"\nsecret_file = {}\nevents = {}\n",
        serde_json::to_string(&secret_file.display().to_string()).unwrap(),
        serde_json::to_string(events).unwrap()
    )
}

/// Writes the configuration: the test worker with `steps`, `[http]` on a
/// free port when `http` is set, and `extra` (sessions, policy, webhooks).
/// The port, if any.
fn configure(env: &TestEnv, steps: &[&str], http: bool, extra: &str) -> Option<u16> {
    let port = http.then(closed_port);
    let http_table = port.map_or(String::new(), |p| {
        format!("[http]\nlisten = \"127.0.0.1:{p}\"\n")
    });
    std::fs::write(
        &env.config,
        format!(
            "[supervisor]\nruntime_dir = \"run\"\nstate_dir = \"state\"\nstop_timeout = \"2s\"\n{}\n{http_table}{extra}\n",
            env.worker(steps)
        ),
    )
    .unwrap();
    port
}

/// Checks what every delivery must be, whatever its event: a signed POST
/// of the documented object, with headers that agree with the body.
fn assert_well_formed(d: &Delivery, secret: &str) {
    assert_eq!(d.method, "POST");
    assert_eq!(d.path, "/hook");
    assert_eq!(d.header("content-type"), Some("application/json"));
    let signature = d.header("x-wa-ctl-signature").expect("X-Wa-Ctl-Signature");
    assert_eq!(
        signature,
        format!("sha256={}", hmac_hex(secret.as_bytes(), &d.body)),
        "the signature is HMAC-SHA256(secret, body), for {}",
        String::from_utf8_lossy(&d.body)
    );
    let v = d.json();
    assert_eq!(
        d.header("x-wa-ctl-event"),
        v["event"].as_str(),
        "X-Wa-Ctl-Event names the body's event"
    );
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = vec!["at", "event", "id", "previous_state", "session"];
    if v["event"] == "qr" {
        // The extension: the code to show, on qr events only.
        want.push("qr");
        want.sort_unstable();
    } else {
        assert_eq!(v["event"], "state");
    }
    assert_eq!(keys, want, "the documented object: {v}");
    assert!(v["id"].as_u64().is_some_and(|id| id > 0));
    assert!(
        humantime::parse_rfc3339(v["at"].as_str().unwrap()).is_ok(),
        "at is RFC 3339: {v}"
    );
    assert!(v["previous_state"].is_string());
    assert!(v["session"]["id"].is_string() && v["session"]["state"].is_string());
}

/// Per session, the state deliveries as (previous_state, state).
fn state_changes(deliveries: &[Delivery]) -> BTreeMap<String, Vec<(String, String)>> {
    let mut by_session: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for v in deliveries.iter().map(Delivery::json) {
        if v["event"] == "state" {
            by_session
                .entry(v["session"]["id"].as_str().unwrap().to_owned())
                .or_default()
                .push((
                    v["previous_state"].as_str().unwrap().to_owned(),
                    v["session"]["state"].as_str().unwrap().to_owned(),
                ));
        }
    }
    by_session
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A webhook's counter or gauge in a scrape, 0 when absent.
fn webhook_metric(text: &str, name: &str, webhook: &str) -> f64 {
    sample(text, name, &[("webhook", webhook)]).unwrap_or(0.0)
}

/// Waits until every event made so far has left webhook `index`'s queue
/// and the session's are settled: then the receiver has all it will get.
fn wait_delivered(port: u16, webhook: &str) -> String {
    wait_until(
        &format!("webhook {webhook}'s queue to empty"),
        DEADLINE,
        || {
            let text = scrape(port);
            (webhook_metric(&text, "wa_ctl_webhook_queued", webhook) == 0.0).then_some(text)
        },
    )
}

#[test]
fn deliveries_are_signed_ordered_and_the_documented_object() {
    let env = TestEnv::new("");
    let all = Receiver::start(200);
    let states_only = Receiver::start(200);
    let secret_all = "0123456789abcdef-all-events";
    let secret_states = "fedcba9876543210-states-only";
    let file_all = secret_file(&env, "all.secret", secret_all, 0o600);
    let file_states = secret_file(&env, "states.secret", secret_states, 0o600);
    let port = configure(
        &env,
        &["qr=CODE-1", "qr=CODE-2", "connect=1@s.whatsapp.net"],
        true,
        &format!(
            "[[session]]\nid = \"a\"\n[[session]]\nid = \"b\"\n{}{}",
            webhook(&all.url(), &file_all, &["state", "qr"]),
            webhook(&states_only.url(), &file_states, &["state"]),
        ),
    )
    .unwrap();
    env.ok(&["start"]);
    env.wait_state("a", "connected");
    env.wait_state("b", "connected");
    env.ok(&["stop", "a"]);
    let stopped_a = |ds: &[Delivery]| {
        ds.iter()
            .any(|d| d.is_state("stopped") && d.json()["session"]["id"] == "a")
    };
    let connected_b = |ds: &[Delivery]| {
        ds.iter()
            .any(|d| d.is_state("connected") && d.json()["session"]["id"] == "b")
    };
    all.wait_for("a stopped and b connected", |ds| {
        stopped_a(ds) && connected_b(ds)
    });
    states_only.wait_for("a stopped and b connected, states only", |ds| {
        stopped_a(ds) && connected_b(ds)
    });
    let text = wait_delivered(port, "0");
    wait_delivered(port, "1");
    let deliveries = all.deliveries();
    let states = states_only.deliveries();

    for d in &deliveries {
        assert_well_formed(d, secret_all);
    }
    for d in &states {
        assert_well_formed(d, secret_states);
    }
    // A signature made with the other webhook's secret does not verify:
    // each receiver checks its own.
    assert_ne!(
        deliveries[0].header("x-wa-ctl-signature").unwrap(),
        format!(
            "sha256={}",
            hmac_hex(secret_states.as_bytes(), &deliveries[0].body)
        )
    );

    // One delivery per event, each with its own delivery id, in the order
    // the events were made (one queue per webhook, head first).
    let ids: Vec<u64> = deliveries.iter().map(Delivery::event_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids increase in delivery order: {ids:?}"
    );
    let delivery_ids: BTreeSet<&str> = deliveries
        .iter()
        .map(|d| d.header("x-wa-ctl-delivery").expect("X-Wa-Ctl-Delivery"))
        .collect();
    assert_eq!(delivery_ids.len(), deliveries.len(), "unique delivery ids");
    // Every event the supervisor made went to the webhook that takes both
    // kinds, once.
    let made = sample(&text, "wa_ctl_http_events_total", &[]).unwrap();
    assert_eq!(ids.len() as f64, made, "{ids:?}");
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_delivered_total", "0"),
        made
    );

    // What each session went through, per session in order.
    let expected_a = pairs(&[
        ("stopped", "starting"),
        ("starting", "pairing"),
        ("pairing", "connected"),
        ("connected", "stopping"),
        ("stopping", "stopped"),
    ]);
    let expected_b = pairs(&[
        ("stopped", "starting"),
        ("starting", "pairing"),
        ("pairing", "connected"),
    ]);
    let changes = state_changes(&deliveries);
    assert_eq!(changes["a"], expected_a);
    assert_eq!(changes["b"], expected_b);
    for session in ["a", "b"] {
        let qrs: Vec<Value> = deliveries
            .iter()
            .map(Delivery::json)
            .filter(|v| v["event"] == "qr" && v["session"]["id"] == session)
            .map(|v| {
                assert_eq!(v["previous_state"], "pairing");
                assert_eq!(v["session"]["state"], "pairing");
                v["qr"].clone()
            })
            .collect();
        assert_eq!(qrs, ["CODE-1", "CODE-2"], "session {session}'s codes");
    }
    let connected = deliveries
        .iter()
        .find(|d| d.is_state("connected") && d.json()["session"]["id"] == "b")
        .unwrap()
        .json();
    assert_eq!(connected["session"]["jid"], "1@s.whatsapp.net");
    assert!(connected["session"]["worker_pid"].as_u64().is_some());
    // The session object is the one of `status --json`: the same fields.
    let (_, status) = env.status();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&connected["session"]), keys(&status["sessions"][1]));

    // The webhook that asked for states only got exactly those, signed
    // with its own secret, in the same order.
    assert!(states.iter().all(|d| d.json()["event"] == "state"));
    let state_ids: Vec<u64> = deliveries
        .iter()
        .filter(|d| d.json()["event"] == "state")
        .map(Delivery::event_id)
        .collect();
    assert_eq!(
        states.iter().map(Delivery::event_id).collect::<Vec<_>>(),
        state_ids
    );

    // The next supervisor counts its events from 1 again, and its
    // delivery ids still differ from every earlier one: a receiver that
    // drops repeats by delivery id drops nothing new. Its exit delivered
    // b's last states first.
    env.ok(&["stop"]);
    let stopped_b = |ds: &[Delivery]| {
        ds.iter()
            .any(|d| d.is_state("stopped") && d.json()["session"]["id"] == "b")
    };
    assert!(
        stopped_b(&all.deliveries()),
        "the queue is flushed at exit: {:#?}",
        all.deliveries()
            .iter()
            .map(Delivery::json)
            .collect::<Vec<_>>()
    );
    let first_run = all.deliveries().len();
    env.ok(&["start"]);
    let both_runs = all.wait_for("b connected in the second run", |ds| {
        ds.len() > first_run && connected_b(&ds[first_run..])
    });
    assert_eq!(both_runs[first_run].event_id(), 1, "ids start again");
    let delivery_ids: BTreeSet<&str> = both_runs
        .iter()
        .map(|d| d.header("x-wa-ctl-delivery").unwrap())
        .collect();
    assert_eq!(delivery_ids.len(), both_runs.len(), "unique across runs");
}

#[test]
fn failed_deliveries_are_retried_in_order_and_refused_ones_are_not() {
    let env = TestEnv::new("");
    // One receiver fails (503, retried), one refuses (410, given up).
    let failing = Receiver::start(503);
    let refusing = Receiver::start(410);
    let secret = "a-secret-of-sixteen-or-more";
    let file = secret_file(&env, "hook.secret", secret, 0o600);
    let port = configure(
        &env,
        &["connect"],
        true,
        &format!(
            "[[session]]\nid = \"a\"\n{}{}",
            webhook(&failing.url(), &file, &["state"]),
            webhook(&refusing.url(), &file, &["state"]),
        ),
    )
    .unwrap();
    env.ok(&["start"]);
    env.wait_state("a", "connected");
    // The first event (`starting`) is tried again after a backoff; the
    // ones behind it wait.
    let tried = failing.wait_for("the first event tried twice", |ds| ds.len() >= 2);
    assert!(
        tried.iter().all(|d| d.event_id() == tried[0].event_id()),
        "nothing overtakes the head: {:?}",
        tried.iter().map(Delivery::event_id).collect::<Vec<_>>()
    );
    assert_eq!(
        tried[0].header("x-wa-ctl-delivery"),
        tried[1].header("x-wa-ctl-delivery"),
        "a retry carries the same delivery id, so a receiver can drop a repeat"
    );
    assert_eq!(tried[0].body, tried[1].body);
    let text = scrape(port);
    assert!(webhook_metric(&text, "wa_ctl_webhook_failed_attempts_total", "0") >= 1.0);
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_delivered_total", "0"),
        0.0
    );
    failing.set_status(200);
    env.ok(&["stop", "a"]);
    failing.wait_for("every state up to stopped", |ds| {
        ds.iter().any(|d| d.is_state("stopped"))
    });
    let text = wait_delivered(port, "0");
    let deliveries = failing.deliveries();
    for d in &deliveries {
        assert_well_formed(d, secret);
    }
    // Each event once it was accepted, in order, with nothing lost.
    let mut ids: Vec<u64> = deliveries.iter().map(Delivery::event_id).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "in order: {ids:?}");
    ids.dedup();
    assert_eq!(
        state_changes(&deliveries)["a"]
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["starting", "connected", "stopping", "stopped"])
    );
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_delivered_total", "0"),
        ids.len() as f64
    );
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_failed_attempts_total", "0"),
        (deliveries.len() - ids.len()) as f64,
        "every repeat was a failed attempt"
    );

    // The refusing receiver saw each event once: a 4xx is not retried.
    wait_delivered(port, "1");
    let refused = refusing.deliveries();
    let refused_ids: Vec<u64> = refused.iter().map(Delivery::event_id).collect();
    assert_eq!(refused_ids, ids, "each event once, in order");
    let text = scrape(port);
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_refused_total", "1"),
        ids.len() as f64
    );
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_failed_attempts_total", "1"),
        0.0
    );
}

/// Twenty reconnects of one worker give twenty `connected` deliveries, one
/// per real connection, and no duplicates (issue #11, sections 4 and 5:
/// the seed's repeated "WhatsApp Connected Successfully!" toast).
#[test]
fn twenty_reconnects_give_twenty_connected_deliveries() {
    const CONNECTIONS: usize = 20;
    let env = TestEnv::new("");
    let receiver = Receiver::start(200);
    let secret = "twenty-reconnects-secret";
    let file = secret_file(&env, "hook.secret", secret, 0o600);
    // Spawn 1 pairs and closes with 515 (restart required), as a real
    // pairing ends. Every later spawn connects the way WhatsApp does, one
    // live connection per credentials (`conflict=PATH`), and says
    // `connected` twice, which must change nothing. The test plays the
    // other device: once the receiver has a connection's `connected`, it
    // replaces the claim, and the worker closes with 440. The test maps
    // 440 to `restart` (the default stops) so that the loop goes on, and
    // the breaker must not trip: 21 spawns fit in `max_restarts`. So every
    // connection lasts until its delivery is seen, and nothing waits on a
    // fixed delay: a worker that reported `connected` and exited at once
    // would not be shown connected at all (its late lines cannot bring a
    // dead worker up, crates/wa-ctl-core/src/lifecycle.rs).
    let claim = env.path().join("claim");
    let conflict = format!("@2+:conflict={}", claim.display());
    let port = configure(
        &env,
        &[
            "@1:qr=PAIR-ME",
            "@1:close=515",
            "@1:exit=0",
            &conflict,
            "connect=1@s.whatsapp.net",
        ],
        true,
        &format!(
            "[policy]\nmax_restarts = 1000\n[policy.codes]\n440 = \"restart\"\n\
             [[session]]\nid = \"a\"\n{}",
            webhook(&receiver.url(), &file, &["state"]),
        ),
    )
    .unwrap();
    env.ok(&["start"]);
    for n in 1..=CONNECTIONS {
        receiver.wait_for(&format!("connected delivery {n}"), |ds| {
            ds.iter().filter(|d| d.is_state("connected")).count() >= n
        });
        if n < CONNECTIONS {
            // Another device's claim, written atomically as a worker
            // writes its own.
            let other = env.path().join("claim.other");
            std::fs::write(&other, format!("other-device:{n}")).unwrap();
            std::fs::rename(&other, &claim).unwrap();
        }
    }
    let last = CONNECTIONS + 1;
    let session = env.wait_state("a", "connected");
    // Everything made is delivered; the session is settled, so nothing
    // more comes.
    let text = wait_delivered(port, "0");
    let deliveries = receiver.deliveries();
    for d in &deliveries {
        assert_well_formed(d, secret);
    }
    let spawns = env.spawns();
    assert_eq!(spawns.len(), last, "no spawn after the last: {spawns:?}");
    assert_eq!(session["restarts"], CONNECTIONS as u64);
    assert_eq!(session["last_code"], 440);
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_delivered_total", "0"),
        deliveries.len() as f64,
        "each delivery once"
    );
    let delivery_ids: BTreeSet<&str> = deliveries
        .iter()
        .map(|d| d.header("x-wa-ctl-delivery").unwrap())
        .collect();
    assert_eq!(delivery_ids.len(), deliveries.len(), "no duplicates");

    let connected: Vec<Value> = deliveries
        .iter()
        .filter(|d| d.is_state("connected"))
        .map(Delivery::json)
        .collect();
    // The spawns that connected are 2 to 21, and each connection is one
    // delivery that names its worker.
    let connecting_pids: Vec<u64> = spawns
        .iter()
        .filter(|(_, n, _)| *n >= 2)
        .map(|(pid, _, _)| u64::from(*pid))
        .collect();
    assert_eq!(connecting_pids.len(), CONNECTIONS);
    assert_eq!(connected.len(), CONNECTIONS);
    assert_eq!(
        connected
            .iter()
            .map(|v| v["session"]["worker_pid"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        connecting_pids,
        "one connected per spawn that connected, in spawn order"
    );

    // Each state delivery follows from the one before: the chain of
    // previous states has no hole and no repeat, so between two
    // `connected` there is always a state that is not.
    let changes = &state_changes(&deliveries)["a"];
    assert_eq!(changes[0], ("stopped".to_owned(), "starting".to_owned()));
    for pair in changes.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "a chain of states: {changes:?}");
    }
    assert!(changes.iter().all(|(before, now)| before != now));
    let states: Vec<&str> = changes.iter().map(|(_, s)| s.as_str()).collect();
    let positions: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == "connected")
        .map(|(i, _)| i)
        .collect();
    for w in positions.windows(2) {
        assert!(w[1] > w[0] + 1, "a state between two connected: {states:?}");
    }
}

/// `wa-ctl status --json` `runs` times: the slowest wall time and the
/// total.
fn time_status(env: &TestEnv, runs: usize) -> (Duration, Duration) {
    let mut slowest = Duration::ZERO;
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let start = Instant::now();
        let out = env.wa_ctl(&["status", "--json"]);
        let took = start.elapsed();
        assert!(out.status.success(), "{}", stderr(&out));
        slowest = slowest.max(took);
        total += took;
    }
    (slowest, total)
}

/// A receiver that is down, one that refuses connections and one that
/// accepts them and never answers, slows neither `wa-ctl status` nor
/// another session (issue #11, section 5).
#[test]
fn a_receiver_that_is_down_slows_nothing() {
    const RUNS: usize = 5;
    let sessions = "[[session]]\nid = \"a\"\n[[session]]\nid = \"b\"\n";

    // The same supervisor without webhooks, for comparison.
    let plain = TestEnv::new("");
    configure(&plain, &["connect"], false, sessions);
    plain.ok(&["start"]);
    plain.wait_state("a", "connected");
    plain.wait_state("b", "connected");
    let (_, plain_total) = time_status(&plain, RUNS);
    drop(plain);

    let env = TestEnv::new("");
    let silent = Receiver::start(NEVER);
    let file = secret_file(&env, "hook.secret", "down-receivers-secret", 0o600);
    let refused_url = format!("http://127.0.0.1:{}/hook", closed_port());
    let port = configure(
        &env,
        &["connect"],
        true,
        &format!(
            "{sessions}{}{}",
            webhook(&refused_url, &file, &["state", "qr"]),
            webhook(&silent.url(), &file, &["state", "qr"]),
        ),
    )
    .unwrap();
    env.ok(&["start"]);
    env.wait_state("a", "connected");
    env.wait_state("b", "connected");
    // More changes for the queues while nobody takes them.
    for _ in 0..3 {
        env.ok(&["restart", "a"]);
        env.wait_state("a", "connected");
    }
    silent.wait_for("the first delivery, never answered", |ds| !ds.is_empty());

    let (slowest, total) = time_status(&env, RUNS);
    assert!(
        slowest < Duration::from_secs(2),
        "status took {slowest:?} with its webhooks down"
    );
    assert!(
        total < plain_total * 3 + Duration::from_secs(1),
        "{RUNS} status runs took {total:?} with the webhooks down, {plain_total:?} without"
    );

    // The other session: stopped and started while the queues are stuck,
    // each change shown at once.
    let start = Instant::now();
    env.ok(&["stop", "b"]);
    assert_eq!(env.session("b")["state"], "stopped");
    env.ok(&["start", "b"]);
    env.wait_state("b", "connected");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "b stopped and connected again in {:?}",
        start.elapsed()
    );
    // The API answers too.
    let started = Instant::now();
    let reply = crate::http_client::Req::get(port, "/healthz").send();
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));

    // The refused connection fails at once and is retried with backoff;
    // the silent one fails at its attempt timeout (10 s).
    let text = wait_until(
        "failed attempts counted for both webhooks",
        Duration::from_secs(30),
        || {
            let text = scrape(port);
            (webhook_metric(&text, "wa_ctl_webhook_failed_attempts_total", "0") > 0.0
                && webhook_metric(&text, "wa_ctl_webhook_failed_attempts_total", "1") > 0.0)
                .then_some(text)
        },
    );
    for webhook in ["0", "1"] {
        assert_eq!(
            webhook_metric(&text, "wa_ctl_webhook_delivered_total", webhook),
            0.0
        );
        assert!(webhook_metric(&text, "wa_ctl_webhook_queued", webhook) > 0.0);
    }
    assert_eq!(
        silent.deliveries()[0].event_id(),
        1,
        "the first event is the head it keeps trying"
    );
}

/// More changes than a queue holds while the receiver does not answer:
/// the oldest are dropped and counted, the loop never waits, and once the
/// receiver answers the newest 1024 arrive in order (issue #11, section 4).
#[test]
fn a_full_queue_drops_the_oldest_and_counts_them() {
    /// The queue's bound (crates/wa-ctl-http/src/webhook.rs).
    const QUEUE: u64 = 1024;
    const CODES: usize = 1100;
    let env = TestEnv::new("");
    let receiver = Receiver::start(NEVER);
    let secret = "overflow-secret-0123456789";
    let file = secret_file(&env, "hook.secret", secret, 0o600);
    // One worker that sends 1100 QR codes: 1102 events (starting, pairing
    // and a qr event per new code) in well under a second.
    let codes: Vec<String> = (0..CODES).map(|i| format!("qr=CODE-{i:04}")).collect();
    let steps: Vec<&str> = codes.iter().map(String::as_str).collect();
    let port = configure(
        &env,
        &steps,
        true,
        &format!(
            "[[session]]\nid = \"a\"\n{}",
            webhook(&receiver.url(), &file, &["state", "qr"]),
        ),
    )
    .unwrap();
    env.ok(&["start"]);
    let made = (CODES + 2) as f64;
    let text = wait_until("every event made", DEADLINE, || {
        let text = scrape(port);
        (sample(&text, "wa_ctl_http_events_total", &[]) == Some(made)).then_some(text)
    });
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_dropped_total", "0"),
        made - QUEUE as f64,
        "the queue holds {QUEUE}; the rest were dropped"
    );
    assert_eq!(
        webhook_metric(&text, "wa_ctl_webhook_queued", "0"),
        QUEUE as f64
    );
    let session = env.session("a");
    assert_eq!(session["state"], "pairing");
    // The first attempt hangs, unanswered, until its timeout.
    receiver.wait_for("the first delivery", |ds| !ds.is_empty());

    // Once the receiver answers (after the attempt in flight times out and
    // a backoff), the newest 1024 arrive, in order; the oldest are gone.
    receiver.set_status(200);
    let newest = made as u64;
    let all = wait_until("the queue delivered", Duration::from_secs(40), || {
        let text = scrape(port);
        (webhook_metric(&text, "wa_ctl_webhook_delivered_total", "0") == QUEUE as f64)
            .then(|| receiver.deliveries())
    });
    // Before them, only the attempts that were never answered: of the
    // first event the task took (dropped since, or retried and then
    // delivered).
    let answered = &all[all.len() - QUEUE as usize..];
    let unanswered: Vec<u64> = all[..all.len() - QUEUE as usize]
        .iter()
        .map(Delivery::event_id)
        .collect();
    assert!(
        !unanswered.is_empty() && unanswered.iter().all(|id| *id == unanswered[0]),
        "{unanswered:?}"
    );
    assert_eq!(
        answered.iter().map(Delivery::event_id).collect::<Vec<_>>(),
        (newest - QUEUE + 1..=newest).collect::<Vec<_>>()
    );
    for d in answered {
        assert_well_formed(d, secret);
    }
    assert_eq!(
        answered.last().unwrap().json()["qr"],
        format!("CODE-{:04}", CODES - 1)
    );
    let text = scrape(port);
    assert_eq!(webhook_metric(&text, "wa_ctl_webhook_queued", "0"), 0.0);
    assert!(webhook_metric(&text, "wa_ctl_webhook_failed_attempts_total", "0") >= 1.0);
}

/// Errors in `[[webhook]]` name their key and stop `check` and `start`
/// (exit 2); a secret others can read stops `start` (exit 1) with the fix.
#[test]
fn webhook_configuration_errors() {
    let cases = [
        (
            "[[webhook]]\nurl = \"http://127.0.0.1:1/hook\"\n",
            "webhook.secret_file",
        ),
        (
            "[[webhook]]\nurl = \"ftp://127.0.0.1/hook\"\nsecret_file = \"hook.secret\"\n",
            "webhook.url",
        ),
        (
            "[[webhook]]\nsecret_file = \"hook.secret\"\n",
            "webhook.url",
        ),
        (
            "[[webhook]]\nurl = \"http://127.0.0.1:1/hook\"\nsecret_file = \"hook.secret\"\nevents = [\"nope\"]\n",
            "webhook.events",
        ),
        (
            "[[webhook]]\nurl = \"http://127.0.0.1:1/hook\"\nsecret_file = \"hook.secret\"\nevents = []\n",
            "webhook.events",
        ),
    ];
    for (table, key) in cases {
        let env = TestEnv::with_worker(&["connect"], &format!("[[session]]\nid = \"a\"\n{table}"));
        secret_file(&env, "hook.secret", "a-good-secret-0123456789", 0o600);
        for args in [&["check"][..], &["start"][..]] {
            let out = env.wa_ctl(args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} with {table}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(key),
                "{args:?} names {key}: {}",
                stderr(&out)
            );
            assert!(!stderr(&out).contains("panicked"));
        }
        assert!(env.supervisors().is_empty());
    }

    // A secret others can read: `check` reads no secret, `start` refuses
    // it with the command that fixes it, and nothing runs.
    let table = "[[webhook]]\nurl = \"http://127.0.0.1:1/hook\"\nsecret_file = \"hook.secret\"\n";
    let env = TestEnv::with_worker(&["connect"], &format!("[[session]]\nid = \"a\"\n{table}"));
    let file = secret_file(&env, "hook.secret", "a-good-secret-0123456789", 0o644);
    let out = env.wa_ctl(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&file.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(env.supervisors().is_empty() && env.worker_processes().is_empty());
    // A secret too short to be one, and a missing one: refused too.
    secret_file(&env, "hook.secret", "short", 0o600);
    let out = env.wa_ctl(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("at least 16"), "{}", stderr(&out));
    std::fs::remove_file(&file).unwrap();
    let out = env.wa_ctl(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&file.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(env.supervisors().is_empty() && env.worker_processes().is_empty());
    // Once private and long enough, the supervisor starts, without [http].
    secret_file(&env, "hook.secret", "a-good-secret-0123456789", 0o600);
    env.ok(&["start"]);
    env.wait_state("a", "connected");
}
