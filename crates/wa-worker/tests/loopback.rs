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
