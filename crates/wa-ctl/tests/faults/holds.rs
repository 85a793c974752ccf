//! Decisions that survive the supervisor, and a status that never invents
//! (issue #9, sections 3, 6 and 8).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{DEADLINE, TestEnv, alive, stderr, wait_until};

fn sigkill_supervisor(env: &TestEnv) {
    let pid = env.supervisor_pid();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_until("the supervisor to die", DEADLINE, || {
        (!alive(pid) && env.status().0 == 3).then_some(())
    });
}

/// Waits until the hold of session `default` is on disk. The holds thread
/// writes it (with fsyncs) a few milliseconds after the state is shown; a
/// SIGKILL inside that window loses the decision, as docs/reliability.md
/// says, so a test of what survives a SIGKILL waits for the file first.
fn wait_for_hold(env: &TestEnv) {
    let path = env.state_dir().join("sessions/default/.wa-ctl-hold.json");
    wait_until("the hold on disk", DEADLINE, || path.exists().then_some(()));
}

/// After a 440 stopped a session, a SIGKILL of the supervisor and a new
/// `start` leave it stopped: no second knock-off of the other device, and
/// the last close is still shown. `start ID` clears the hold. (Before
/// issue #9 the new start spawned it again.)
#[test]
fn a_440_stop_survives_a_killed_supervisor_until_start_id() {
    let env = TestEnv::with_worker(&["@1:close=440:conflict", "@1:exit=0", "@2+:connect"], "");
    env.ok(&["start"]);
    let before = env.wait_state("default", "stopped");
    assert_eq!(before["last_code"], 440);
    let at = before["last_at"].as_str().expect("last_at").to_owned();
    wait_for_hold(&env);
    sigkill_supervisor(&env);
    // Not running: the hold on disk is what status shows.
    let s = env.session("default");
    assert_eq!(
        (s["state"].as_str(), s["last_code"].as_u64()),
        (Some("stopped"), Some(440)),
        "{s}"
    );

    let out = env.ok(&["start"]);
    assert!(
        out.contains("left alone: session default is stopped after 440"),
        "{out}"
    );
    let s = env.session("default");
    assert_eq!(s["state"], "stopped", "{s}");
    assert_eq!(s["last_code"], 440, "{s}");
    assert_eq!(s["last_reason"], "conflict", "{s}");
    assert_eq!(s["last_at"], at.as_str(), "the time of the close, kept");
    assert_eq!(env.spawns().len(), 1, "the held session was not spawned");

    env.ok(&["start", "default"]);
    env.wait_state("default", "connected");
    assert_eq!(env.spawns().len(), 2);
    // The hold is gone: a killed supervisor's successor starts it again.
    sigkill_supervisor(&env);
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    assert_eq!(env.spawns().len(), 3);
}

/// A logout and a tripped breaker hold too (issue #9, section 6).
#[test]
fn logged_out_and_failed_survive_a_killed_supervisor() {
    for (steps, state, extra) in [
        (
            &["@1:close=401:gone", "@1:exit=0", "@2+:connect"][..],
            "logged_out",
            "",
        ),
        (
            &["@1:exit=1", "@2+:connect"][..],
            "failed",
            "[policy]\nmax_restarts = 0\n",
        ),
    ] {
        let env = TestEnv::with_worker(steps, extra);
        env.ok(&["start"]);
        env.wait_state("default", state);
        wait_for_hold(&env);
        sigkill_supervisor(&env);
        env.ok(&["start"]);
        let s = env.session("default");
        assert_eq!(s["state"], state, "{s}");
        assert_eq!(env.spawns().len(), 1, "{state}: not spawned again");
        // `start ID` spawns it. (The test worker counts its spawns in the
        // session directory, which a logout moved: its script starts over.)
        env.ok(&["start", "default"]);
        wait_until("a second spawn", DEADLINE, || {
            (env.spawns().len() == 2).then_some(())
        });
    }
}

/// A supervisor frozen by SIGSTOP: `status` says it does not answer (exit
/// 4, never a stale "connected" as live), `stop` says what to do at once,
/// and `stop --force` ends it and its worker (issue #9, section 8).
#[test]
fn a_frozen_supervisor_is_reported_and_stop_force_ends_it() {
    let env = TestEnv::with_worker(&["connect"], "");
    env.ok(&["start"]);
    let worker = env.wait_state("default", "connected")["worker_pid"]
        .as_u64()
        .unwrap() as u32;
    let supervisor = env.supervisor_pid();
    // Whatever happens below, the supervisor does not stay frozen.
    struct Thaw(u32);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
        }
    }
    let _thaw = Thaw(supervisor);
    kill(Pid::from_raw(supervisor as i32), Signal::SIGSTOP).unwrap();

    let (code, v) = env.status();
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["running"], true);
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains("does not answer"), "{v}");
    assert!(
        error.contains("not live"),
        "the file's sessions are marked: {v}"
    );

    let out = env.wa_ctl(&["stop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wa-ctl stop --force"),
        "{}",
        stderr(&out)
    );
    assert!(alive(supervisor), "a plain stop kills nothing");

    let out = env.ok(&["stop", "--force"]);
    assert!(out.contains(&format!("killed (pid {supervisor})")), "{out}");
    assert!(!alive(supervisor));
    wait_until("the worker to be gone", DEADLINE, || {
        (!alive(worker)).then_some(())
    });
    assert_eq!(env.status().0, 3);
}

/// Two configurations sharing a `runtime_dir`: the second's `start` and
/// `stop` are refused and name the first's file, its status says so, and
/// `--force` acts anyway (issue #9, section 3; before, B's `start` said
/// "already running" with exit 0 and B's `stop` stopped A).
#[test]
fn a_foreign_configuration_is_refused_unless_forced() {
    let a = TestEnv::with_worker(&["connect"], "");
    a.ok(&["start"]);
    a.wait_state("default", "connected");
    let b = TestEnv::with_worker(&["connect"], "[[session]]\nid = \"other\"\n");
    let text = std::fs::read_to_string(&b.config).unwrap().replace(
        "runtime_dir = \"run\"",
        &format!("runtime_dir = \"{}\"", a.runtime_dir().display()),
    );
    std::fs::write(&b.config, text).unwrap();

    for args in [&["start"][..], &["stop"], &["restart"], &["stop", "other"]] {
        let out = b.wa_ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("runs another configuration")
                && err.contains(&a.config.display().to_string()),
            "{args:?}: {err}"
        );
    }
    assert_eq!(a.session("default")["state"], "connected", "A untouched");

    let (code, v) = b.status();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["config"]["same_file"], false, "{v}");
    assert_eq!(v["sessions"][0]["id"], "default", "what A runs: {v}");
    let text = String::from_utf8(b.wa_ctl(&["status"]).stdout).unwrap();
    assert!(
        text.contains("NOTE: the running supervisor runs another configuration"),
        "{text}"
    );

    b.ok(&["stop", "--force"]);
    assert_eq!(a.status().0, 3, "forced: A is stopped");
}

/// A session renamed in the file while the supervisor runs: status shows
/// what the supervisor runs (the live worker is not hidden) and says the
/// file changed (issue #9, section 3).
#[test]
fn a_renamed_session_does_not_hide_the_live_worker() {
    let env = TestEnv::with_worker(&["connect"], "[[session]]\nid = \"a\"\n");
    env.ok(&["start"]);
    let pid = env.wait_state("a", "connected")["worker_pid"].clone();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("id = \"a\"", "id = \"b\"");
    std::fs::write(&env.config, text).unwrap();
    let (code, v) = env.status();
    assert_eq!(code, 0);
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{v}");
    assert_eq!(sessions[0]["id"], "a");
    assert_eq!(sessions[0]["state"], "connected");
    assert_eq!(sessions[0]["worker_pid"], pid);
    assert_eq!(v["config"]["same_file"], true, "{v}");
    assert_eq!(v["config"]["same_content"], false, "{v}");
    assert_eq!(v["processes"]["workers"], 1, "{v}");
    // The session the supervisor runs can be asked for by its id.
    let out = env.ok(&["status", "a", "--json"]);
    assert!(out.contains("\"connected\""), "{out}");
}

/// A log moved away by logrotate is written no more after SIGHUP: the
/// supervisor reopens `wa-ctl.log`, and its next lines land there (issue
/// #9, section 10; before, it kept writing into the moved file).
#[test]
fn sighup_reopens_a_rotated_log() {
    let env = TestEnv::with_worker(&["connect"], "");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let log = env.state_dir().join("wa-ctl.log");
    let rotated = env.state_dir().join("wa-ctl.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    kill(Pid::from_raw(env.supervisor_pid() as i32), Signal::SIGHUP).unwrap();
    wait_until("the log to be reopened", DEADLINE, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("log file reopened"))
    });
    env.ok(&["stop", "default"]);
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(new.contains("operator request"), "{new}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("operator request"), "{old}");
    assert!(!old.contains("log file reopened"), "{old}");
}
