//! Issue #8: leftover handling runs off the event loop, and the one-worker
//! invariant holds exactly as before.
//!
//! The slow leftover: a worker's grandchild that ignores SIGTERM, left
//! behind by a supervisor killed with SIGKILL. The next supervisor ends it
//! under the session lock, politely first (SIGTERM, `stop_timeout`, then
//! SIGKILL), so preparing the session takes the whole grace period. Meanwhile
//! the loop must keep answering, the session must say it is starting with no
//! worker, and no worker may be spawned until the leftover is gone.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{
    DEADLINE, TestEnv, alive, command, run_with_deadline, wa_ctl_bin, wait_until,
};

/// The grace a leftover gets: long enough to look at the session while it runs.
const GRACE: &str = "3s";

/// `start` (with `start_args`) runs a worker that forks a grandchild which
/// ignores SIGTERM; then the supervisor is killed with SIGKILL. Returns the
/// grandchild's pid, once the killed supervisor is gone.
fn leave_a_slow_leftover(env: &TestEnv, start_args: &[&str]) -> u32 {
    let known = env.grandchildren().len();
    env.ok(start_args);
    env.wait_state("default", "connected");
    let grandchild = wait_until("the grandchild", DEADLINE, || {
        env.grandchildren().get(known).copied()
    });
    let supervisor = env.supervisor_pid();
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
    wait_until("the killed supervisor to be gone", DEADLINE, || {
        (!alive(supervisor) && env.supervisors().is_empty()).then_some(())
    });
    assert!(
        alive(grandchild),
        "PR_SET_PDEATHSIG reaches the worker only"
    );
    grandchild
}

fn env_with_slow_leftover() -> TestEnv {
    let env = TestEnv::with_worker(&["fork", "connect"], "");
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "stop_timeout = \"2s\"",
        &format!("stop_timeout = \"{GRACE}\""),
    );
    std::fs::write(&env.config, text).unwrap();
    env
}

/// Live workers of this test, without the grandchildren they forked.
fn workers(env: &TestEnv) -> Vec<u32> {
    let grandchildren = env.grandchildren();
    env.worker_processes()
        .into_iter()
        .filter(|p| !grandchildren.contains(p))
        .collect()
}

/// `wa-ctl start` in a thread: it returns only once the leftover is gone.
fn start_in_background(env: &TestEnv) -> std::thread::JoinHandle<std::process::Output> {
    let mut cmd = command(&wa_ctl_bin());
    cmd.arg("--config").arg(&env.config).arg("start");
    std::thread::spawn(move || run_with_deadline(cmd, Duration::from_secs(60)))
}

/// Waits until the new supervisor answers with the session still being
/// prepared (starting, no worker) and the leftover alive.
fn wait_while_preparing(env: &TestEnv, leftover: u32) {
    wait_until(
        "the new supervisor to prepare the session",
        DEADLINE,
        || {
            let (code, v) = env.status();
            let s = &v["sessions"][0];
            (code == 0 && s["state"] == "starting" && alive(leftover)).then_some(())
        },
    );
}

#[test]
fn a_slow_leftover_does_not_stall_the_loop_or_let_a_worker_in() {
    let env = env_with_slow_leftover();
    let leftover = leave_a_slow_leftover(&env, &["start"]);
    let spawns_before = env.spawns().len();
    let started = Instant::now();
    let start = start_in_background(&env);
    wait_while_preparing(&env, leftover);

    // While the leftover has its grace, the loop answers at once, and the
    // status does not invent a worker.
    let mut answered = 0;
    while alive(leftover) && started.elapsed() < Duration::from_secs(30) {
        let asked = Instant::now();
        let (code, v) = env.status();
        let took = asked.elapsed();
        assert_eq!(code, 0, "{v}");
        let s = &v["sessions"][0];
        if !alive(leftover) {
            break;
        }
        assert_eq!(s["state"], "starting", "{v}");
        assert_eq!(s["worker_pid"], serde_json::Value::Null, "{v}");
        assert_eq!(
            env.spawns().len(),
            spawns_before,
            "a worker was spawned while a leftover lived"
        );
        // Generous for a debug build on a busy machine; a blocked loop
        // would take the whole grace period.
        assert!(took < Duration::from_secs(2), "status took {took:?}");
        answered += 1;
    }
    assert!(
        answered >= 2,
        "the loop answered {answered} times during the grace"
    );

    let out = start.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(leftover), "start returns once the leftover is gone");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the leftover had its SIGTERM grace"
    );
    env.wait_state("default", "connected");
    assert_eq!(
        env.spawns().len(),
        spawns_before + 1,
        "exactly one new worker"
    );
    assert_eq!(workers(&env).len(), 1);
}

#[test]
fn a_stop_during_the_leftover_scan_spawns_nothing() {
    let env = env_with_slow_leftover();
    let leftover = leave_a_slow_leftover(&env, &["start"]);
    let spawns_before = env.spawns().len();
    let start = start_in_background(&env);
    wait_while_preparing(&env, leftover);

    // Stop the session while its leftover is being ended: the stop waits
    // for the job, and no worker follows it.
    let out = env.ok(&["stop", "default"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(leftover));
    assert_eq!(env.session("default")["state"], "stopped");
    let out = start.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.spawns().len(),
        spawns_before,
        "no worker after the stop"
    );
    assert!(workers(&env).is_empty());

    // A whole-supervisor stop during another scan ends as cleanly.
    let grandchild = leave_a_slow_leftover(&env, &["start", "default"]);
    let spawns_before = env.spawns().len();
    let start = start_in_background(&env);
    wait_while_preparing(&env, grandchild);
    env.ok(&["stop"]);
    let out = start.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(grandchild));
    assert!(env.supervisors().is_empty());
    assert_eq!(
        env.spawns().len(),
        spawns_before,
        "no worker after the stop"
    );
    assert!(env.worker_processes().is_empty());
}
