//! The process census and strays (issue #4, section 2).

use std::process::Stdio;

use crate::harness::{ChildGuard, DEADLINE, TestEnv, alive, command, test_worker_bin, wait_until};

/// Starts the configured worker command by hand, outside the supervisor,
/// as an operator would with `node index.js &`. It is killed when the guard
/// goes, should the test fail before it ends.
fn start_by_hand(env: &TestEnv, args: &[&str]) -> ChildGuard {
    let dir = env.path().join("by-hand");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = command(&test_worker_bin());
    cmd.args(args)
        .env("WA_CTL_SESSION_DIR", &dir)
        .env("WA_CTL_EVENTS_FD", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn(&mut cmd)
}

fn steps(env: &TestEnv) -> Vec<String> {
    vec![
        "--log".to_owned(),
        env.spawn_log().display().to_string(),
        "connect".to_owned(),
    ]
}

/// The census in `status` counts the supervisor and the workers as the
/// process table does (issue #4, section 2).
#[test]
fn census_counts_supervisor_and_workers() {
    let env = TestEnv::with_worker(
        &["connect"],
        "[[session]]\nid = \"a\"\n[[session]]\nid = \"b\"\n",
    );
    env.ok(&["start"]);
    env.wait_state("a", "connected");
    env.wait_state("b", "connected");
    let (_, v) = env.status();
    assert_eq!(v["processes"]["supervisors"], 1, "{v}");
    assert_eq!(v["processes"]["workers"], 2, "{v}");
    assert_eq!(v["processes"]["strays"], serde_json::json!([]), "{v}");
    // The census agrees with the process table.
    assert_eq!(env.supervisors().len(), 1);
    assert_eq!(env.worker_processes().len(), 2);
    let text = env.ok(&["status"]);
    assert!(
        text.contains("processes: 1 supervisor, 2 workers, 0 strays"),
        "{text}"
    );
}

/// A worker started by hand is a stray: reported, and ended by `stop --all`
/// (issue #4, section 2). Waits for it have a deadline (issue #8, section 6).
#[test]
fn stray_started_by_hand_is_reported_and_stop_all_ends_it() {
    let env = TestEnv::with_worker(&["connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let args = steps(&env);
    let mut stray = start_by_hand(&env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    // Same program, other arguments: not an exact match, never touched.
    let bystander = start_by_hand(&env, &["sleep=300s"]);

    let (_, v) = env.status();
    let strays = v["processes"]["strays"].as_array().unwrap();
    assert_eq!(strays.len(), 1, "{v}");
    assert_eq!(strays[0]["pid"], stray.id());
    assert!(
        strays[0]["cmdline"]
            .as_str()
            .unwrap()
            .contains("wa-test-worker")
    );
    assert_eq!(v["processes"]["workers"], 1);
    let text = env.ok(&["status"]);
    assert!(
        text.contains("WARNING") && text.contains(&format!("stray pid {}", stray.id())),
        "{text}"
    );

    let out = env.ok(&["stop", "--all"]);
    assert!(
        out.contains(&format!("ended stray process {}", stray.id())),
        "{out}"
    );
    stray.wait("the stray to end", DEADLINE);
    assert!(env.supervisors().is_empty() && env.worker_processes().is_empty());
    assert!(
        alive(bystander.id()),
        "a process that does not match exactly is never signalled"
    );
}

/// `stop --all` ends strays with no supervisor running (issue #4, section 2).
#[test]
fn stop_all_without_a_supervisor_ends_strays() {
    let env = TestEnv::with_worker(&["connect"], "");
    let args = steps(&env);
    let mut stray = start_by_hand(&env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, v) = env.status();
    assert_eq!(code, 3);
    assert_eq!(v["processes"]["strays"].as_array().unwrap().len(), 1, "{v}");
    let out = env.ok(&["stop", "--all"]);
    assert!(out.contains("ended stray process"), "{out}");
    stray.wait("the stray to end", DEADLINE);
}

/// A stray that ignores SIGTERM gets SIGKILL after the grace (issue #4,
/// section 2).
#[test]
fn stop_all_escalates_to_sigkill_for_a_stray_that_ignores_sigterm() {
    let env = TestEnv::with_worker(&["ignore-term", "connect"], "");
    let mut args = steps(&env);
    args.insert(2, "ignore-term".to_owned());
    let mut stray = start_by_hand(&env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    // Its `ignore-term` step must have run before the SIGTERM: under load it
    // once had not, and the stray died of SIGTERM at once. The kernel shows
    // the ignored signals (SIGTERM is bit 14 of SigIgn).
    let pid = stray.id();
    wait_until("the stray to ignore SIGTERM", DEADLINE, || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
        let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
        (mask & (1 << 14) != 0).then_some(())
    });
    let started = std::time::Instant::now();
    env.ok(&["stop", "--all"]);
    let status = stray.wait("the stray to end", DEADLINE);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1900),
        "the grace was not honoured"
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}
