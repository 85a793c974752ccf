//! The process guarantees (issue #2, section 5): one supervisor, one worker
//! per session, clean stops, no orphans.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{
    ChildGuard, DEADLINE, TestEnv, alive, command, run_with_deadline, wa_ctl_bin, wait_until,
};

fn two_sessions(env: &TestEnv) -> String {
    format!(
        "[[session]]\nid = \"a\"\ncommand = {}\n[[session]]\nid = \"b\"\ncommand = {}\n",
        env.worker_command(&["connect"]),
        env.worker_command(&["connect"])
    )
}

/// Fifty concurrent starts leave one supervisor and one worker per session
/// (issue #2, section 5).
#[test]
fn fifty_concurrent_starts_leave_one_supervisor() {
    let env = TestEnv::new("");
    std::fs::write(
        &env.config,
        format!(
            "{}\n{}",
            std::fs::read_to_string(&env.config).unwrap(),
            two_sessions(&env)
        ),
    )
    .unwrap();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let mut cmd = command(&wa_ctl_bin());
            cmd.arg("--config").arg(&env.config).arg("start");
            std::thread::spawn(move || run_with_deadline(cmd, Duration::from_secs(60)))
        })
        .collect();
    let outputs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let started = outputs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).starts_with("started"))
        .count();
    assert_eq!(started, 1, "exactly one start wins");
    env.wait_state("a", "connected");
    env.wait_state("b", "connected");
    assert_eq!(env.supervisors().len(), 1);
    assert_eq!(env.worker_processes().len(), 2);
    assert_eq!(
        env.spawns().len(),
        2,
        "one worker per session, spawned once"
    );
    env.ok(&["stop"]);
    assert!(env.supervisors().is_empty());
    assert!(env.worker_processes().is_empty());
}

/// A second `start` says `already running` with the pid (issue #2,
/// section 5).
#[test]
fn already_running_prints_pid() {
    let env = TestEnv::with_worker(&["connect"], "");
    env.ok(&["start"]);
    let pid = env.supervisor_pid();
    let out = env.ok(&["start"]);
    assert_eq!(out.trim(), format!("already running (pid {pid})"));
}

/// A killed supervisor leaves no worker, and `status` says so (issue #2,
/// section 5).
#[test]
fn sigkill_of_the_supervisor_leaves_no_worker() {
    let env = TestEnv::with_worker(&["ignore-term", "connect"], "");
    env.ok(&["start"]);
    let worker = env.wait_state("default", "connected")["worker_pid"]
        .as_u64()
        .unwrap() as u32;
    let supervisor = env.supervisor_pid();
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
    wait_until(
        "the worker to die with its supervisor",
        Duration::from_secs(2),
        || (!alive(worker)).then_some(()),
    );
    // The status tells the truth: the record's owner no longer holds the lock.
    let (code, v) = env.status();
    assert_eq!(code, 3);
    assert_eq!(v["running"], false);
    assert_eq!(v["sessions"][0]["worker_pid"], serde_json::Value::Null);
}

/// The next `start` ends what a killed supervisor's worker forked before it
/// spawns (issue #2, section 5).
#[test]
fn next_start_ends_what_a_killed_supervisor_left() {
    let env = TestEnv::with_worker(&["@1:fork", "connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let grandchild = wait_until("the grandchild", DEADLINE, || {
        env.grandchildren().first().copied()
    });
    let supervisor = env.supervisor_pid();
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
    // The kernel releases the lock once the process is gone, not at the
    // signal: a start before that would find it "already running".
    wait_until("the killed supervisor to be gone", DEADLINE, || {
        crate::harness::gone(supervisor).then_some(())
    });
    // PR_SET_PDEATHSIG reaches the worker, not what it forked.
    assert!(alive(grandchild));
    env.ok(&["start"]);
    assert!(!alive(grandchild), "start ends leftovers before it spawns");
    env.wait_state("default", "connected");
    assert_eq!(env.worker_processes().len(), 1);
}

/// `stop` with no supervisor ends the leftovers of a killed one (issue #2,
/// section 5).
#[test]
fn stop_without_supervisor_ends_leftovers() {
    let env = TestEnv::with_worker(&["fork", "connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let grandchild = wait_until("the grandchild", DEADLINE, || {
        env.grandchildren().first().copied()
    });
    kill(Pid::from_raw(env.supervisor_pid() as i32), Signal::SIGKILL).unwrap();
    let out = env.ok(&["stop"]);
    assert!(out.contains("ended leftover process"), "{out}");
    assert!(!alive(grandchild));
    assert!(env.worker_processes().is_empty());
}

/// A worker that ignores SIGTERM is killed after the grace (issue #2,
/// section 5).
#[test]
fn worker_that_ignores_sigterm_is_killed_after_the_grace() {
    let env = TestEnv::with_worker(&["ignore-term", "connect"], "");
    env.ok(&["start"]);
    let worker = env.wait_state("default", "connected")["worker_pid"]
        .as_u64()
        .unwrap() as u32;
    env.ok(&["stop"]);
    assert!(!alive(worker));
    assert!(env.supervisors().is_empty());
}

/// A worker's grandchildren do not survive a stop (issue #2, section 5).
#[test]
fn grandchildren_do_not_survive_a_stop() {
    let env = TestEnv::with_worker(&["fork", "fork", "connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let grandchildren = wait_until("two grandchildren", DEADLINE, || {
        let g = env.grandchildren();
        (g.len() == 2).then_some(g)
    });
    env.ok(&["stop"]);
    for g in grandchildren {
        assert!(!alive(g), "grandchild {g} survived");
    }
    assert!(env.worker_processes().is_empty());
}

/// A worker's grandchildren end with it, before its restart (issue #2,
/// section 5).
#[test]
fn grandchildren_end_with_their_worker_before_a_restart() {
    let env = TestEnv::with_worker(&["@1:fork", "@1:close=515", "@1:exit=0", "@2+:connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let grandchild = env.grandchildren()[0];
    assert!(
        !alive(grandchild),
        "the old worker's group is emptied before the new worker"
    );
    assert_eq!(env.worker_processes().len(), 1);
}

/// Each worker leads a process group of its own (issue #2, section 5).
#[test]
fn workers_run_in_their_own_process_group() {
    let env = TestEnv::with_worker(&["connect"], "");
    env.ok(&["start"]);
    let worker = env.wait_state("default", "connected")["worker_pid"]
        .as_u64()
        .unwrap() as i32;
    let pgid = nix::unistd::getpgid(Some(Pid::from_raw(worker))).unwrap();
    assert_eq!(pgid.as_raw(), worker);
    assert_ne!(
        nix::unistd::getpgid(Some(Pid::from_raw(env.supervisor_pid() as i32))).unwrap(),
        pgid
    );
}

/// Two supervisors sharing a `state_dir` run one worker per session
/// (issue #2, section 5).
#[test]
fn two_supervisors_sharing_a_state_dir_run_one_worker() {
    let env = TestEnv::with_worker(&["connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    // A second configuration: another runtime_dir, the same state_dir.
    let other = TestEnv::new("");
    std::fs::write(
        &other.config,
        format!(
            "[supervisor]\nruntime_dir = \"run\"\nstate_dir = \"{}\"\n{}",
            env.state_dir().display(),
            env.worker(&["connect"])
        ),
    )
    .unwrap();
    let out = other.ok(&["start"]);
    assert!(out.starts_with("started"), "{out}");
    other.wait_state("default", "locked");
    assert_eq!(
        env.worker_processes().len(),
        1,
        "only one worker for the session"
    );
    assert_eq!(env.spawns().len(), 1);
    // Once the first lets go, an operator start on the second takes over.
    env.ok(&["stop", "default"]);
    other.ok(&["start", "default"]);
    other.wait_state("default", "connected");
    assert_eq!(env.worker_processes().len(), 1);
}

/// A stale lock file naming a live, unrelated pid is ignored, and that
/// process is never signalled (issue #2, section 5).
#[test]
fn stale_lock_file_with_a_live_foreign_pid_is_ignored_and_never_signalled() {
    let env = TestEnv::with_worker(&["connect"], "");
    // An unrelated live process, named in a leftover pid file. The guard
    // kills it at the end, or when the test fails halfway.
    let bystander = ChildGuard::spawn(command(std::path::Path::new("sleep")).arg("300"));
    std::fs::create_dir_all(env.runtime_dir()).unwrap();
    std::fs::set_permissions(
        env.runtime_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(
        env.runtime_dir().join("wa-ctl.lock"),
        format!("{}\n", bystander.id()),
    )
    .unwrap();
    std::fs::write(env.runtime_dir().join("status.json"), "{garbage").unwrap();
    let (code, _) = env.status();
    assert_eq!(
        code, 3,
        "a pid file without its lock is not a running supervisor"
    );
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    env.ok(&["stop"]);
    assert!(alive(bystander.id()), "the bystander was never signalled");
}

/// Stopping, starting and restarting one session leaves the others alone
/// (issue #2, section 5).
#[test]
fn per_session_stop_and_start() {
    let env = TestEnv::new("");
    std::fs::write(
        &env.config,
        format!(
            "{}\n{}",
            std::fs::read_to_string(&env.config).unwrap(),
            two_sessions(&env)
        ),
    )
    .unwrap();
    env.ok(&["start"]);
    let b_pid = env.wait_state("b", "connected")["worker_pid"].clone();
    let a_pid = env.wait_state("a", "connected")["worker_pid"]
        .as_u64()
        .unwrap() as u32;
    let out = env.ok(&["stop", "a"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(a_pid), "stop returns only when the worker is gone");
    assert_eq!(env.session("a")["state"], "stopped");
    assert_eq!(
        env.session("b")["worker_pid"],
        b_pid,
        "the other session is untouched"
    );
    env.ok(&["start", "a"]);
    env.wait_state("a", "connected");
    let a2 = env.session("a")["worker_pid"].as_u64().unwrap() as u32;
    env.ok(&["restart", "a"]);
    let a3 = env.wait_state("a", "connected")["worker_pid"]
        .as_u64()
        .unwrap() as u32;
    assert_ne!(a2, a3);
    assert!(!alive(a2));
    assert_eq!(env.session("b")["worker_pid"], b_pid);
    assert_eq!(env.worker_processes().len(), 2);
}

/// The runtime, state and session directories are 0700 and `status.json`
/// is 0600 (issue #2, section 5).
#[test]
fn runtime_and_state_dirs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::with_worker(&["connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    for dir in [
        env.runtime_dir(),
        env.state_dir(),
        env.state_dir().join("sessions/default"),
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let mode = std::fs::metadata(env.runtime_dir().join("status.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
