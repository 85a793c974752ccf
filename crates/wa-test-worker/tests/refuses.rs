//! The test worker's contract with whoever runs it: it refuses to run
//! outside wa-ctl, and it writes events to the descriptor it was named
//! without taking that descriptor from anyone. These tests also make
//! `cargo test --workspace` build the binary that the wa-ctl integration
//! tests drive.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the worker may take for a script of a few steps.
const DEADLINE: Duration = Duration::from_secs(20);

#[expect(clippy::disallowed_methods, reason = "tests run the real binary")]
fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wa-test-worker"))
}

/// A session directory of the test's own under cargo's scratch directory for
/// integration tests.
fn session_dir(test: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the worker to completion, killing it if it outlives the deadline.
/// Its output is a few lines, which fit in the pipes while it runs.
fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wa-test-worker did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The test worker refuses to run without the supervisor's environment.
#[test]
fn refuses_without_the_supervisor_environment() {
    let mut cmd = worker();
    cmd.arg("connect")
        .env_remove("WA_CTL_SESSION_DIR")
        .env_remove("WA_CTL_EVENTS_FD");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run by wa-ctl"));
}

/// `WA_CTL_EVENTS_FD=2`, as the census tests start a worker by hand: the
/// events reach stderr, and the worker's own messages follow them there
/// (issue #8, section 6: the worker wrote its events through a `File` that
/// owned fd 2).
#[test]
fn events_on_stderr_leave_stderr_usable() {
    let dir = session_dir("events_on_stderr_leave_stderr_usable");
    let mut cmd = worker();
    cmd.args(["connect=1@s", "no-such-step"])
        .env("WA_CTL_SESSION_DIR", &dir)
        .env("WA_CTL_EVENTS_FD", "2");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"event":"connected","jid":"1@s"}"#,
            "wa-test-worker: unknown step no-such-step"
        ],
        "{stderr}"
    );
}

/// A descriptor that is not open is refused before it is used (issue #8,
/// section 6). No process has descriptor `i32::MAX` open: it is above any
/// limit on open files.
#[test]
fn events_fd_that_is_not_open_is_refused() {
    let dir = session_dir("events_fd_that_is_not_open_is_refused");
    let mut cmd = worker();
    cmd.arg("connect")
        .env("WA_CTL_SESSION_DIR", &dir)
        .env("WA_CTL_EVENTS_FD", i32::MAX.to_string());
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not an open descriptor"), "{stderr}");
    assert!(out.stdout.is_empty());
}
