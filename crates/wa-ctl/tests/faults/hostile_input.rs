//! Issue #9, items 2, 5 and 10: a hostile configuration file and a hostile
//! worker. Durations that would overflow a deadline, a configuration file
//! that never ends, a worker program that is not executable, and worker
//! text that carries terminal escapes or forges log lines.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{
    DEADLINE, TestEnv, command, run_with_deadline, skip, stderr, wa_ctl_bin, which,
};

/// Writes `text` as the whole configuration file of `env`, with the test's
/// private directories.
fn write_config(env: &TestEnv, supervisor_extra: &str, rest: &str) {
    let text = format!(
        "[supervisor]\nruntime_dir = \"run\"\nstate_dir = \"state\"\n{supervisor_extra}\n{rest}\n"
    );
    std::fs::write(&env.config, text).unwrap();
}

/// `check` on the configuration of `env`: its exit code and stderr.
fn check(env: &TestEnv) -> (Option<i32>, String) {
    let out = env.wa_ctl(&["check"]);
    (out.status.code(), stderr(&out))
}

/// Issue #9, item 2: `initial_backoff = "500000000000y"` passed `check` and
/// then panicked the supervisor ("overflow when adding duration to
/// instant"); `stop_timeout` the same on `stop`. Every duration key now has
/// a maximum, and `check` names the file, the line, the key and the
/// maximum, with exit 2.
#[test]
fn durations_beyond_their_maximum_are_refused_by_check() {
    for (table, key) in [
        ("supervisor", "stop_timeout"),
        ("policy", "initial_backoff"),
        ("policy", "max_backoff"),
        ("policy", "reset_after"),
        ("policy", "restart_window"),
    ] {
        let env = TestEnv::new("");
        let line = format!("{key} = \"500000000000y\"");
        if table == "supervisor" {
            write_config(&env, &line, "");
        } else {
            write_config(&env, "", &format!("[policy]\n{line}\n"));
        }
        let (code, err) = check(&env);
        assert_eq!(code, Some(2), "{key}: {err}");
        let place = format!("{}:", env.config.display());
        assert!(err.contains(&place), "{key}: the file is named: {err}");
        assert!(
            err.contains(&format!("key `{table}.{key}`")),
            "{key}: the key is named: {err}"
        );
        assert!(
            err.contains("maximum"),
            "{key}: the maximum is named: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

/// Issue #9, item 2: a `stop_timeout` under 100 ms gives a worker no time to
/// save its credentials before SIGKILL; it is an error naming the minimum.
#[test]
fn stop_timeout_below_the_minimum_is_refused() {
    for value in ["0s", "50ms"] {
        let env = TestEnv::new("");
        write_config(&env, &format!("stop_timeout = \"{value}\""), "");
        let (code, err) = check(&env);
        assert_eq!(code, Some(2), "{value}: {err}");
        assert!(err.contains("key `supervisor.stop_timeout`"), "{err}");
        assert!(err.contains("100ms"), "the minimum is named: {err}");
        assert!(err.contains("save its credentials"), "{err}");
    }
    let env = TestEnv::new("");
    write_config(&env, "stop_timeout = \"100ms\"", "");
    assert_eq!(check(&env).0, Some(0), "the minimum itself is allowed");
}

/// `wa-ctl` with its address space capped, so that a regression that reads
/// an endless file fails the test instead of eating the machine's memory.
fn wa_ctl_capped(args: &[&str]) -> Option<std::process::Output> {
    let Ok(prlimit) = which("prlimit") else {
        skip("prlimit (util-linux) is not installed");
        return None;
    };
    let mut cmd = command(&prlimit);
    cmd.arg("--as=1073741824")
        .arg("--")
        .arg(wa_ctl_bin())
        .args(args)
        .env_remove("WA_CTL_CONFIG")
        .env_remove("WA_CTL_LOG");
    Some(run_with_deadline(cmd, DEADLINE))
}

/// Issue #9, item 2: `--config /dev/zero` read until memory ran out. The
/// file is read up to 1 MiB; beyond that it is an error naming the file and
/// the cap, exit 2.
#[test]
fn an_endless_config_file_is_refused_at_one_mebibyte() {
    let Some(out) = wa_ctl_capped(&["--config", "/dev/zero", "check"]) else {
        return;
    };
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/dev/zero"), "{err}");
    assert!(err.contains("1 MiB"), "{err}");

    let env = TestEnv::new("");
    let big = env.path().join("big.toml");
    std::fs::write(&big, "# padding\n".repeat(2 * 1024 * 1024 / 10)).unwrap();
    let big = big.display().to_string();
    let Some(out) = wa_ctl_capped(&["--config", &big, "check"]) else {
        return;
    };
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&big) && err.contains("1 MiB"), "{err}");
}

/// Issue #9, item 10: `check` said "not found" for a worker program that
/// exists but cannot be executed.
#[test]
fn check_tells_a_program_that_is_not_executable_from_a_missing_one() {
    let env = TestEnv::new("");
    let program = env.path().join("worker.sh");
    std::fs::write(&program, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_config(&env, "", "[worker]\ncommand = [\"./worker.sh\"]\n");
    let (code, err) = check(&env);
    assert_eq!(code, Some(0), "the file itself is valid: {err}");
    assert!(err.contains("not executable"), "{err}");
    assert!(err.contains("chmod"), "says what to do: {err}");
    assert!(!err.contains("not found"), "{err}");

    write_config(&env, "", "[worker]\ncommand = [\"./missing.sh\"]\n");
    let (code, err) = check(&env);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("not found"), "{err}");
}

/// The supervisor's log of `env`.
fn log(env: &TestEnv) -> String {
    String::from_utf8_lossy(&std::fs::read(env.state_dir().join("wa-ctl.log")).unwrap_or_default())
        .into_owned()
}

/// Issue #9, item 5: a `connected` event whose `jid` carries terminal
/// escapes and a CR LF forged a separate line in `wa-ctl.log`. Such a jid is
/// a protocol error: logged (escaped) and skipped.
#[test]
fn a_jid_with_escapes_is_rejected_and_forges_no_log_line() {
    let env = TestEnv::with_worker(
        &[
            r#"raw={"event":"connected","jid":"j\u001b]0;PWNED\u0007\u001b[31mRED\u001b[0m\r\nFAKE LINE"}"#,
            "connect=15551234567:12@s.whatsapp.net",
        ],
        "",
    );
    env.ok(&["start"]);
    let session = env.wait_state("default", "connected");
    assert_eq!(session["jid"], "15551234567:12@s.whatsapp.net");
    let log = log(&env);
    assert!(
        !log.lines().any(|l| l.starts_with("FAKE LINE")),
        "a forged line: {log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw ESC in the log: {log:?}");
    assert!(!log.contains('\r'), "a raw CR in the log: {log:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("ignoring a line from the worker") && l.contains("jid")),
        "the bad jid is reported: {log}"
    );
}

/// Issue #9, item 5: a `pair_code` of `\u001b[2J` cleared the terminal in
/// `login`. A pair code is 8 characters from A-Z and 0-9; anything else is
/// a protocol error, and `login` shows only the valid one.
#[test]
fn a_pair_code_with_escapes_is_rejected() {
    let env = TestEnv::with_worker(
        &[
            r#"raw={"event":"pair_code","code":"\u001b[2J"}"#,
            "pair=ABCD-EFGH",
            "sleep=300ms",
            "connect=15551234567@s.whatsapp.net",
        ],
        "",
    );
    let out = env.wa_ctl(&["login"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr(&out));
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    assert!(
        stdout.contains("Pair code for session default: ABCD-EFGH"),
        "{stdout}"
    );
    let log = log(&env);
    assert!(
        log.lines()
            .any(|l| l.contains("ignoring a line from the worker") && l.contains("pair_code")),
        "the bad pair code is reported: {log}"
    );
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

/// Issue #9, item 5: a worker's stdout goes to the supervisor's log, raw
/// escapes and all; `wa-ctl logs` shows them escaped, keeping the lines.
#[test]
fn logs_escape_what_a_worker_wrote_to_stdout() {
    let env = TestEnv::with_worker(
        &[
            "stdout=before\u{1b}]0;PWNED\u{7}\u{1b}[31mRED\u{1b}[0m\rafter\u{9b}2J\u{202e}",
            "connect=15551234567@s.whatsapp.net",
        ],
        "",
    );
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    assert!(
        log(&env).contains('\u{1b}'),
        "the raw bytes are in the file"
    );
    let shown = env.ok(&["logs"]);
    assert!(
        !shown
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{shown:?}"
    );
    assert!(
        shown.contains(r"before\x1b]0;PWNED\x07\x1b[31mRED\x1b[0m\rafter\u{9b}2J\u{202e}"),
        "{shown}"
    );
    assert!(shown.lines().count() > 1, "newlines are kept: {shown}");
}

/// Issue #9, item 5: a QR payload too long to draw was reported as
/// "talking to the supervisor: encoding the QR code: data too long". It is
/// reported as what it is, with what to do.
#[test]
fn a_qr_code_too_long_to_draw_says_what_to_do() {
    // Lowercase letters are binary data to a QR code (its alphanumeric
    // mode has capitals only), so 3,002 bytes exceed the 2,953 it holds.
    let payload = format!("qr=2@{}", "a".repeat(3000));
    let env = TestEnv::with_worker(&[&payload], "");
    let out = env.wa_ctl(&["login"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("3002 bytes"), "{err}");
    assert!(err.contains("too long to draw"), "{err}");
    assert!(err.contains("wa-ctl logs"), "{err}");
    assert!(!err.contains("talking to the supervisor"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("aaaaaaaa"),
        "the payload is never printed"
    );
}
