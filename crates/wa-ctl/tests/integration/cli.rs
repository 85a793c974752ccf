//! The CLI contract (issue #2, section 6): exit codes, errors, status shape.

use crate::harness::{TestEnv, command, run_with_deadline, stderr, wa_ctl_bin};

#[test]
fn status_exit_codes_and_json_shape() {
    let env = TestEnv::with_worker(&["connect"], "");
    let (code, v) = env.status();
    assert_eq!(code, 3, "LSB: 3 when not running");
    assert_eq!(v["running"], false);
    assert_eq!(v["pid"], serde_json::Value::Null);
    assert_eq!(
        env.ok(&["stop"]).trim(),
        "not running",
        "stop exits 0 when nothing runs"
    );
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let (code, v) = env.status();
    assert_eq!(code, 0);
    assert_eq!(v["running"], true);
    assert!(v["pid"].is_u64());
    let s = &v["sessions"][0];
    for key in [
        "id",
        "state",
        "worker_pid",
        "restarts",
        "last_code",
        "last_action",
        "next_retry_s",
        "uptime_s",
    ] {
        assert!(s.get(key).is_some(), "missing {key} in {s}");
    }
    assert!(s["uptime_s"].as_f64().unwrap() >= 0.0);
    let text = env.ok(&["status", "default"]);
    assert!(text.contains("connected"), "{text}");
    env.ok(&["stop"]);
    assert_eq!(env.status().0, 3);
}

#[test]
fn bad_config_names_file_line_and_key() {
    let env = TestEnv::new("[policy]\ninitial_backof = \"1s\"\n");
    let out = env.wa_ctl(&["start"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&env.config.display().to_string()), "{err}");
    assert!(err.contains(":6:"), "line number: {err}");
    assert!(err.contains("initial_backof"), "key: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"));

    let env = TestEnv::new("[policy]\nmax_backoff = \"forever\"\n");
    let out = env.wa_ctl(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("max_backoff"), "{}", stderr(&out));
}

#[test]
fn bad_session_id_is_a_usage_error() {
    let env = TestEnv::new("[[session]]\nid = \"../escape\"\n");
    let out = env.wa_ctl(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid session id"),
        "{}",
        stderr(&out)
    );

    let env = TestEnv::with_worker(&["connect"], "");
    for bad in ["../x", "nope"] {
        let out = env.wa_ctl(&["stop", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(stderr(&out).contains("no session"), "{}", stderr(&out));
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let mut cmd = command(&wa_ctl_bin());
    cmd.args(["--config", "/nonexistent/wa-ctl.toml", "status"]);
    let out = run_with_deadline(cmd, std::time::Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/wa-ctl.toml"));
}

#[test]
fn default_worker_not_found_is_a_clear_error() {
    // Only the directories are configured: the worker is the default `wa-worker`.
    let env = TestEnv::new("");
    let mut cmd = command(&wa_ctl_bin());
    cmd.arg("--config")
        .arg(&env.config)
        .arg("start")
        .env("PATH", env.path());
    let out = run_with_deadline(cmd, std::time::Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("worker not found") && err.contains("`wa-worker`"),
        "{err}"
    );
    assert!(env.supervisors().is_empty());
}

#[test]
fn check_prints_effective_config_and_policy() {
    let env = TestEnv::with_worker(&["connect"], "[policy.codes]\n408 = \"stop\"\n");
    let out = env.ok(&["check"]);
    assert!(out.contains("stop_timeout = \"2s\""), "{out}");
    assert!(out.contains("408") && out.contains("440"), "{out}");
    assert!(out.contains("[[session]]"), "{out}");
}

#[test]
fn logs_show_lifecycle_lines() {
    let env = TestEnv::with_worker(&["close=440", "exit=0"], "");
    env.ok(&["start"]);
    env.wait_state("default", "stopped");
    let out = env.ok(&["logs", "-n", "100"]);
    assert!(
        out.contains("worker exited")
            && out.contains("session=default")
            && out.contains("code=440")
            && out.contains("action=\"stop\"")
            || out.contains("action=stop"),
        "{out}"
    );
    let last = env.ok(&["logs", "-n", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
}

#[test]
fn help_teaches() {
    let env = TestEnv::new("");
    let out = env.ok(&["--help"]);
    for word in [
        "start",
        "stop",
        "restart",
        "status",
        "logs",
        "check",
        "Exit codes",
    ] {
        assert!(out.contains(word), "{word} missing from --help");
    }
}
