//! The reconnect policy, end to end: what the supervisor does after each
//! kind of worker end (issue #2, section 3).

use std::time::Duration;

use crate::harness::{DEADLINE, TestEnv, wait_until};

/// A 440 conflict stops the session, never retried, and keeps the
/// credentials (issue #2, section 3).
#[test]
fn conflict_440_stops_and_keeps_credentials() {
    let env = TestEnv::with_worker(
        &[
            "write-file=creds.json:secret",
            "connect",
            "close=440:conflict",
            "exit=0",
        ],
        "",
    );
    env.ok(&["start"]);
    let s = env.wait_state("default", "stopped");
    assert_eq!(s["last_code"], 440);
    assert_eq!(s["last_action"], "stop");
    assert_eq!(s["restarts"], 0);
    assert_eq!(s["worker_pid"], serde_json::Value::Null);
    assert_eq!(env.spawns().len(), 1, "a 440 is never retried");
    assert!(
        env.state_dir().join("sessions/default/creds.json").exists(),
        "stop keeps the credentials"
    );
    // The supervisor itself keeps running.
    assert_eq!(env.status().0, 0);
}

/// A 401 logout moves the credentials to quarantine, never deleting them
/// (issue #2, section 3).
#[test]
fn logout_401_quarantines_credentials() {
    let env = TestEnv::with_worker(
        &[
            "write-file=creds.json:secret",
            "close=401:logged out",
            "exit=0",
        ],
        "",
    );
    env.ok(&["start"]);
    let s = env.wait_state("default", "logged_out");
    assert_eq!(s["last_code"], 401);
    assert_eq!(s["last_action"], "logout");
    // The session directory moved. A new one holds only the hold that
    // keeps the session logged out across supervisors (issue #9).
    let hold = env.state_dir().join("sessions/default/.wa-ctl-hold.json");
    wait_until("the hold to be written", DEADLINE, || {
        hold.exists().then_some(())
    });
    let left: Vec<_> = std::fs::read_dir(env.state_dir().join("sessions/default"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [".wa-ctl-hold.json"], "the session directory moved");
    let quarantined: Vec<_> = std::fs::read_dir(env.state_dir().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(quarantined.len(), 1);
    let name = quarantined[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("default-") && name.ends_with('Z'),
        "{name}"
    );
    assert_eq!(
        std::fs::read_to_string(quarantined[0].join("creds.json")).unwrap(),
        "secret",
        "never deleted"
    );
    assert_eq!(env.spawns().len(), 1);
}

/// A 408 reconnects with a backoff that grows by the multiplier (issue #2,
/// section 3).
#[test]
fn reconnect_408_backs_off_with_growing_spacing() {
    let env = TestEnv::with_worker(
        &["close=408:lost", "exit=0"],
        "[policy]\ninitial_backoff = \"200ms\"\nbackoff_multiplier = 2.0\njitter = 0.0\nmax_restarts = 100\n",
    );
    env.ok(&["start"]);
    let spawns = wait_until("4 spawns", DEADLINE, || {
        let s = env.spawns();
        (s.len() >= 4).then_some(s)
    });
    let s = env.session("default");
    assert_eq!(s["last_code"], 408);
    assert_eq!(s["last_action"], "reconnect");
    let gaps: Vec<u64> = spawns.windows(2).map(|w| w[1].2 - w[0].2).collect();
    for (gap, delay) in gaps.iter().zip([200u64, 400, 800]) {
        // The gap is the delay plus the worker's own short life.
        assert!(
            *gap >= delay,
            "gap {gap}ms shorter than the backoff {delay}ms: {gaps:?}"
        );
        assert!(
            *gap < delay + 500,
            "gap {gap}ms far over the backoff {delay}ms: {gaps:?}"
        );
    }
}

/// A 515 restarts at once, without the backoff (issue #2, section 3).
#[test]
fn restart_515_is_immediate() {
    let env = TestEnv::with_worker(
        &["@1:close=515:restart required", "@1:exit=0", "@2+:connect"],
        "[policy]\ninitial_backoff = \"5s\"\n",
    );
    env.ok(&["start"]);
    let s = env.wait_state("default", "connected");
    assert_eq!(s["last_code"], 515);
    assert_eq!(s["last_action"], "restart");
    assert_eq!(s["restarts"], 1);
    let spawns = env.spawns();
    assert_eq!(spawns.len(), 2);
    assert!(
        spawns[1].2 - spawns[0].2 < 2000,
        "515 must not wait for the 5s backoff: {spawns:?}"
    );
}

/// A crash loop fails the session after `max_restarts`, and an operator
/// start begins again (issue #2, section 3).
#[test]
fn crash_loop_breaker_fails_after_max_restarts() {
    let env = TestEnv::with_worker(
        &["crash"],
        "[policy]\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\nmax_restarts = 3\n",
    );
    env.ok(&["start"]);
    let s = env.wait_state("default", "failed");
    assert_eq!(s["last_code"], "crash");
    assert_eq!(s["restarts"], 3);
    assert_eq!(env.spawns().len(), 4, "1 start and 3 restarts");
    // An operator start begins again.
    env.ok(&["start", "default"]);
    wait_until("a fifth spawn", DEADLINE, || {
        (env.spawns().len() >= 5).then_some(())
    });
}

/// An exit 0 without a close code stops; a nonzero exit is a crash that
/// reconnects (issue #2, section 3).
#[test]
fn exit_without_code_stops_and_nonzero_reconnects() {
    let env = TestEnv::with_worker(
        &["@1:exit=0", "@2:exit=3", "@3+:connect"],
        "[policy]\ninitial_backoff = \"10ms\"\n",
    );
    env.ok(&["start"]);
    let s = env.wait_state("default", "stopped");
    assert_eq!(s["last_code"], "exit");
    env.ok(&["start", "default"]);
    let s = env.wait_state("default", "connected");
    assert_eq!(s["last_code"], "crash");
    assert_eq!(s["last_action"], "reconnect");
}

/// A session waiting on a QR code is `pairing`, and `status` never prints
/// the payload (issue #2, section 3).
#[test]
fn pairing_state_while_a_qr_code_waits() {
    let env = TestEnv::with_worker(&["qr=2@secret-payload"], "");
    env.ok(&["start"]);
    env.wait_state("default", "pairing");
    let text = env.ok(&["status"]);
    assert!(
        !text.contains("secret-payload"),
        "status never prints the QR payload: {text}"
    );
}

/// Garbage on the events fd is logged and skipped; the supervisor stays up
/// (issue #2, section 3).
#[test]
fn garbage_on_the_events_fd_is_ignored() {
    let env = TestEnv::with_worker(
        &[
            "raw={not json",
            "junk=long",
            "junk=binary",
            "raw={\"event\":\"dance\"}",
            "junk=flood",
            "connect=1@s.whatsapp.net",
        ],
        "",
    );
    env.ok(&["start"]);
    // The flood reports `connected` 100,000 times; the last event names the jid.
    wait_until("the event after the garbage", DEADLINE, || {
        (env.session("default")["jid"] == "1@s.whatsapp.net").then_some(())
    });
    assert_eq!(env.status().0, 0, "the supervisor is still up");
    let log = std::fs::read_to_string(env.state_dir().join("wa-ctl.log")).unwrap();
    assert!(log.contains("ignoring a line from the worker"), "{log}");
}

/// SIGKILL comes no earlier than `stop_timeout` (issue #2, section 3).
#[test]
fn stop_timeout_is_respected_before_sigkill() {
    let env = TestEnv::with_worker(&["ignore-term", "connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let started = std::time::Instant::now();
    env.ok(&["stop"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "SIGKILL came before stop_timeout: {took:?}"
    );
    assert!(env.worker_processes().is_empty());
}
