//! The real worker against loopback endpoints (issue #3): every way a
//! connection can fail here ends in one `closed` event with a recoverable
//! code, a clean exit, and no socket left open. Nothing leaves this machine.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

#[expect(clippy::disallowed_methods, reason = "tests run the real binary")]
fn worker(session_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wa-worker"));
    cmd.env("WA_CTL_SESSION_ID", "test")
        .env("WA_CTL_SESSION_DIR", session_dir)
        // stdout is inherited: the events go there, where the test reads them.
        .env("WA_CTL_EVENTS_FD", "1")
        .env_remove("WA_WORKER_URL")
        .env_remove("WA_CTL_PAIR_PHONE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for the child with a deadline; kills it on timeout.
fn wait(mut child: Child) -> (std::process::ExitStatus, String, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wa-worker did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

/// The events the worker wrote, parsed.
fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Asserts the run ended in exactly one `closed` event with code 408.
fn assert_one_recoverable_close(stdout: &str, stderr: &str) {
    let events = events(stdout);
    let closed: Vec<_> = events.iter().filter(|e| e["event"] == "closed").collect();
    assert_eq!(closed.len(), 1, "one close report: {events:?}\n{stderr}");
    assert_eq!(closed[0]["code"], 408, "{events:?}");
    assert_eq!(
        events.last().unwrap()["event"],
        "closed",
        "the close is the last word"
    );
}

/// A closed port ends in one recoverable close, 408 (issue #3).
#[test]
fn closed_port_reports_408() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = worker(dir.path())
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{port}/ws/chat"))
        .spawn()
        .unwrap();
    let (status, out, err) = wait(child);
    assert!(status.success(), "{err}");
    assert_one_recoverable_close(&out, &err);
}

/// A server that accepts and closes at once ends in one 408 (issue #3).
#[test]
fn server_that_accepts_and_closes_reports_408() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server reports each step on a channel, so that the test waits for
    // it with a deadline: a worker that never connects leaves the thread
    // blocked in accept, not the test.
    let (accepted_tx, accepted) = mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        drop(conn);
        let _ = accepted_tx.send(());
    });
    let child = worker(dir.path())
        .env("WA_WORKER_URL", format!("ws://{addr}/ws/chat"))
        .spawn()
        .unwrap();
    let (status, out, err) = wait(child);
    accepted
        .recv_timeout(DEADLINE)
        .expect("the worker never connected");
    assert!(status.success(), "{err}");
    assert_one_recoverable_close(&out, &err);
}

/// A WebSocket server that completes the handshake, then closes (or stays
/// silent). Reports when the handshake is done, and whether the client
/// closed its side too (no socket left open).
fn websocket_server(close_at_once: bool) -> (String, mpsc::Receiver<()>, mpsc::Receiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let (handshake_tx, handshake_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let raw: TcpStream = conn.try_clone().unwrap();
        let mut ws = tungstenite::accept(conn).expect("websocket handshake");
        let _ = handshake_tx.send(());
        if close_at_once {
            let _ = ws.close(None);
        }
        // Read until the client is gone: EOF means its socket closed.
        let mut raw = raw;
        let mut buf = [0u8; 4096];
        let closed = loop {
            match raw.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        let _ = tx.send(closed);
    });
    (format!("ws://{addr}/ws/chat"), handshake_rx, rx)
}

/// A WebSocket closed after its handshake ends in one 408, with the socket
/// closed (issue #3).
#[test]
fn websocket_that_closes_after_the_handshake_reports_408() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _, client_closed) = websocket_server(true);
    let child = worker(dir.path()).arg("--url").arg(&url).spawn().unwrap();
    let (status, out, err) = wait(child);
    assert!(status.success(), "{err}");
    assert_one_recoverable_close(&out, &err);
    assert!(
        client_closed.recv_timeout(DEADLINE).unwrap(),
        "the worker left its socket open"
    );
}

/// SIGTERM closes the socket and exits 0 within 2 s, with no close report
/// (issue #3).
#[test]
fn sigterm_closes_the_socket_and_exits_0_within_2s() {
    let dir = tempfile::tempdir().unwrap();
    // The server completes the WebSocket handshake and then says nothing:
    // the worker waits in the middle of its protocol handshake.
    let (url, handshake, client_closed) = websocket_server(false);
    let child = worker(dir.path()).arg("--url").arg(&url).spawn().unwrap();
    // The worker is connected (at the WebSocket level) once the server has
    // completed the handshake.
    handshake
        .recv_timeout(DEADLINE)
        .expect("the worker never connected");
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, out, err) = wait(child);
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    assert!(status.success(), "{status:?} {err}");
    assert!(
        events(&out).iter().all(|e| e["event"] != "closed"),
        "a stop is not a close: {out}"
    );
    assert!(
        client_closed.recv_timeout(DEADLINE).unwrap(),
        "the worker left its socket open"
    );
}

/// The worker refuses to run outside wa-ctl (issue #3).
#[test]
fn refuses_to_run_outside_wa_ctl() {
    #[expect(clippy::disallowed_methods, reason = "tests run the real binary")]
    let child = Command::new(env!("CARGO_BIN_EXE_wa-worker"))
        .env_remove("WA_CTL_SESSION_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // With a deadline, like every other run of the worker here.
    let (status, _, err) = wait(child);
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("run by wa-ctl") && err.contains("--session-dir"),
        "{err}"
    );
}

/// The session store is private: 0700 directory, 0600 files (issue #3).
#[test]
fn store_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = worker(&session)
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{port}/ws/chat"))
        .spawn()
        .unwrap();
    let (status, _, err) = wait(child);
    assert!(status.success(), "{err}");
    assert_eq!(
        std::fs::metadata(&session).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&session).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().permissions().mode() & 0o777,
            0o600,
            "{:?}",
            entry.path()
        );
        files += 1;
    }
    assert!(files >= 1, "the SQLite store is in the session directory");
    assert!(session.join("session.db").exists());
}

/// A running worker whose events arrive on a channel as it writes them, so
/// that a test waits on the event itself, with a deadline. Dropping it kills
/// and reaps the worker, so a failed assertion leaves no process behind.
struct Running {
    child: Child,
    started: Instant,
    events: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        // stdout and stderr are read concurrently: a full pipe would stall
        // the worker.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            child,
            started,
            events,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Waits until the worker writes an event that `wanted` accepts, at most
    /// until `deadline` after the spawn; kills the worker and fails if it
    /// does not.
    fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let left = deadline.saturating_sub(self.started.elapsed());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if wanted(&event) {
                        return event;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr.take().unwrap().join().unwrap();
                    panic!(
                        "no {what} within {deadline:?} of the spawn ({e:?}); events {:?}; stderr:\n{stderr}",
                        self.seen
                    );
                }
            }
        }
    }

    /// Waits for the worker to exit: its stdout closes when it does. Returns
    /// the exit status, the events after the last waited one, and stderr.
    fn wait_exit(
        mut self,
        deadline: Duration,
    ) -> (std::process::ExitStatus, Vec<serde_json::Value>, String) {
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_sub(self.started.elapsed());
            match self.events.recv_timeout(left) {
                Ok(event) => rest.push(event),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("wa-worker did not exit within {deadline:?} of the spawn");
                }
            }
        }
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, rest, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already reaped after wait_exit: then kill fails harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

/// A WebSocket server that completes the handshake and then sends a 100-byte
/// random binary frame every `interval`, never a valid protocol message.
/// Reports when the handshake is done, and whether the client went away
/// (its socket closed, so a frame could no longer be written).
fn noisy_websocket_server(interval: Duration) -> (String, mpsc::Receiver<()>, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (handshake_tx, handshake_rx) = mpsc::channel();
    let (gone_tx, gone_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_write_timeout(Some(DEADLINE)).unwrap();
        let mut ws = tungstenite::accept(conn).expect("websocket handshake");
        let _ = handshake_tx.send(());
        // The pacing is the peer's behaviour under test, not a wait of the
        // test: the test waits on the worker's events.
        while ws
            .send(tungstenite::Message::binary(random_bytes(100)))
            .is_ok()
        {
            std::thread::sleep(interval);
        }
        let _ = gone_tx.send(());
    });
    (format!("ws://{addr}/ws/chat"), handshake_rx, gone_rx)
}

/// A peer that completes the WebSocket upgrade and then sends noise every
/// 50 ms no longer keeps the worker alive forever (issue #9, item 4): the
/// start deadline ends it with 408, it disconnects, and it exits.
#[test]
fn noisy_peer_hits_the_start_deadline_with_408() {
    let start_deadline = Duration::from_secs(2);
    let margin = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let (url, handshake, client_gone) = noisy_websocket_server(Duration::from_millis(50));
    let mut running = Running::spawn(
        worker(dir.path())
            .env("WA_WORKER_START_DEADLINE", "2s")
            .arg("--url")
            .arg(&url),
    );
    handshake
        .recv_timeout(DEADLINE)
        .expect("the worker never connected");
    let closed = running.wait_for("closed event", start_deadline + margin, |e| {
        e["event"] == "closed"
    });
    let elapsed = running.started.elapsed();
    assert_eq!(closed["code"], 408, "{closed}");
    let reason = closed["reason"].as_str().unwrap();
    assert!(
        reason.contains("start deadline") && reason.contains("2s"),
        "{reason}"
    );
    assert!(elapsed >= start_deadline, "reported after {elapsed:?}");
    assert!(
        running.seen.iter().all(|e| e["event"] == "closed"),
        "nothing but the close: {:?}",
        running.seen
    );
    let (status, rest, stderr) = running.wait_exit(start_deadline + margin);
    assert!(status.success(), "{status:?} {stderr}");
    assert!(rest.is_empty(), "the close is the last word: {rest:?}");
    client_gone
        .recv_timeout(DEADLINE)
        .expect("the worker left its socket open");
}

/// A `session.db` of random bytes is reported at once as close code 600
/// (credential store unreadable), and the file is left as it was
/// (issue #9, item 4).
#[test]
fn corrupt_store_reports_600_at_once_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("session.db");
    let garbage = random_bytes(4096);
    std::fs::write(&db, &garbage).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut running = Running::spawn(
        worker(dir.path())
            .arg("--url")
            .arg(format!("ws://127.0.0.1:{port}/ws/chat")),
    );
    let closed = running.wait_for("closed event", Duration::from_secs(5), |e| {
        e["event"] == "closed"
    });
    assert_eq!(closed["code"], 600, "{closed}");
    let reason = closed["reason"].as_str().unwrap();
    assert!(
        reason.contains(&db.display().to_string()) && reason.contains("SQLite"),
        "{reason}"
    );
    let (status, rest, stderr) = running.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(rest.is_empty(), "the close is the last word: {rest:?}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the store was modified"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["session.db"], "no -wal or -shm beside it");
}

/// The store check condemns no sound store: a store the worker wrote
/// itself (with the `-wal` and `-shm` it leaves) opens again (issue #9).
#[test]
fn a_store_the_worker_wrote_is_not_reported_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for run in 0..2 {
        let running = Running::spawn(
            worker(dir.path())
                .arg("--url")
                .arg(format!("ws://127.0.0.1:{port}/ws/chat")),
        );
        let (status, events, stderr) = running.wait_exit(DEADLINE);
        assert!(status.success(), "run {run}: {status:?} {stderr}");
        assert_eq!(events.len(), 1, "run {run}: {events:?}");
        assert_eq!(events[0]["code"], 408, "run {run}: {events:?} {stderr}");
    }
}
