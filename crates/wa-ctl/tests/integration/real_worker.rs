//! The real `wa-worker` under the supervisor (issue #3), against a dead
//! loopback endpoint: nothing here reaches WhatsApp.

use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, TestEnv, closed_port, wait_until};

/// The real worker against a dead endpoint: restarts climb at the
/// configured spacing until the breaker trips (issue #3).
#[test]
fn restarts_climb_at_the_configured_spacing_until_the_breaker_trips() {
    let port = closed_port();
    // A bare `wa-worker` is found beside wa-ctl, as after `cargo install`.
    let env = TestEnv::new(&format!(
        "[worker]\ncommand = [\"wa-worker\", \"--url\", \"ws://127.0.0.1:{port}/ws/chat\"]\n\
         [policy]\ninitial_backoff = \"300ms\"\nbackoff_multiplier = 2.0\njitter = 0.0\nmax_restarts = 3\n"
    ));
    env.ok(&["start"]);
    // Record when the restart count changes, as seen through `status`.
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let start = Instant::now();
    let last = loop {
        let s = env.session("default");
        let restarts = s["restarts"].as_u64().unwrap();
        if seen.last().is_none_or(|(r, _)| *r != restarts) {
            seen.push((restarts, Instant::now()));
        }
        if s["state"] == "failed" {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "never failed: {s}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(last["last_code"], 408, "{last}");
    assert_eq!(last["last_action"], "reconnect");
    assert_eq!(last["restarts"], 3);
    let counts: Vec<u64> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(counts.last(), Some(&3), "{counts:?}");
    // Between restart k and k+1 lies the backoff delay, 300ms then 600ms,
    // plus the worker's start-up and failed connect.
    let at = |n: u64| seen.iter().find(|(r, _)| *r == n).map(|(_, t)| *t).unwrap();
    for (n, delay) in [(1u64, 300u64), (2, 600)] {
        let gap = at(n + 1).duration_since(at(n)).as_millis() as u64;
        assert!(
            gap >= delay - 20,
            "restart {n}->{}: {gap}ms < {delay}ms",
            n + 1
        );
        assert!(gap < delay + 3000, "restart {n}->{}: {gap}ms", n + 1);
    }
    assert!(env.worker_processes().is_empty(), "nothing left running");
}

/// A stopped real worker exits on SIGTERM and closes its socket (issue #3).
/// Its accept once had no deadline (issue #8, section 6).
#[test]
fn real_worker_stops_cleanly() {
    // A WebSocket endpoint that accepts connections and never answers: the
    // worker stays up, mid-handshake, until it is stopped.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let env = TestEnv::new(&format!(
        "[worker]\ncommand = [\"wa-worker\", \"--url\", \"ws://127.0.0.1:{port}/ws/chat\"]\n"
    ));
    // Accept with a deadline: a worker that never connects fails the test,
    // and the TestEnv guard then ends what was started.
    listener.set_nonblocking(true).unwrap();
    env.ok(&["start"]);
    let conn = wait_until("the worker to connect", DEADLINE, || {
        listener.accept().ok().map(|(conn, _)| conn)
    });
    conn.set_nonblocking(false).unwrap();
    let pid = wait_until("a worker pid", DEADLINE, || {
        env.session("default")["worker_pid"].as_u64()
    });
    let started = Instant::now();
    env.ok(&["stop"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "SIGTERM was enough: {:?}",
        started.elapsed()
    );
    assert!(!crate::harness::alive(pid as u32));
    // The worker closed its socket: the server reads EOF.
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 1024];
    let mut conn = conn;
    loop {
        match std::io::Read::read(&mut conn, &mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("socket left open: {e}"),
        }
    }
}
