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

/// A worker started by hand with its events on stdout, read line by line
/// on a thread of its own; killed and reaped when dropped.
struct Running {
    child: std::process::Child,
    events: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(dir: &std::path::Path, log: &std::path::Path, steps: &[&str]) -> Running {
        use std::io::BufRead;
        let mut cmd = worker();
        cmd.arg("--log")
            .arg(log)
            .args(steps)
            .env("WA_CTL_SESSION_DIR", dir)
            .env("WA_CTL_EVENTS_FD", "1")
            .env("WA_CTL_FENCING_TOKEN", "42")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, events }
    }

    fn next_event(&self) -> serde_json::Value {
        let line = self
            .events
            .recv_timeout(DEADLINE)
            .expect("an event within the deadline");
        serde_json::from_str(&line).unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit; at the deadline, kills and fails.
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "wa-test-worker did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The records of `log`, parsed.
fn read_records(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The start record carries the session directory and the fencing token;
/// SIGTERM ends the worker with exit 0 and an end record, written by a
/// thread, not a signal handler (issue #10, section 4: the tests build
/// each worker's lifetime from the log).
#[test]
fn start_and_end_records() {
    let dir = session_dir("start_and_end_records");
    let log = dir.join("log");
    let mut w = Running::start(&dir, &log, &["connect"]);
    assert_eq!(w.next_event()["event"], "connected");
    w.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(w.wait().code(), Some(0));
    let records = read_records(&log);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["pid"], w.pid());
    assert_eq!(records[0]["spawn"], 1);
    assert_eq!(records[0]["session_dir"], dir.display().to_string());
    assert_eq!(records[0]["fencing_token"], 42);
    assert!(records[0]["t_us"].is_u64() && records[0]["t_ms"].is_u64());
    assert_eq!(records[1]["pid"], w.pid());
    assert_eq!(records[1]["why"], "term");
    assert!(records[1]["end_us"].as_u64() >= records[0]["t_us"].as_u64());

    // The exit step: one end record that still has the exit_us of the
    // benchmarks.
    let mut w = Running::start(&dir, &log, &["exit=3"]);
    assert_eq!(w.wait().code(), Some(3));
    let end = read_records(&log).pop().unwrap();
    assert_eq!(end["pid"], w.pid());
    assert_eq!(end["why"], "exit");
    assert_eq!(end["status"], 3);
    assert_eq!(end["exit_us"], end["end_us"]);
}

/// `conflict=PATH` is WhatsApp's one live connection per credentials: the
/// second worker's claim closes the first with one 440, and the first
/// exits 0 with a `conflict` end record; the second stays connected.
#[test]
fn a_newer_claim_closes_the_older_worker_with_440() {
    let dir = session_dir("a_newer_claim_closes_the_older_worker_with_440");
    let log = dir.join("log");
    let claim = dir.join("creds.claim");
    let conflict = format!("conflict={}", claim.display());
    let mut older = Running::start(&dir, &log, &[&conflict]);
    assert_eq!(older.next_event()["event"], "connected");
    let mut newer = Running::start(&dir, &log, &[&conflict]);
    assert_eq!(newer.next_event()["event"], "connected");

    let closed = older.next_event();
    assert_eq!(closed["event"], "closed");
    assert_eq!(closed["code"], 440);
    assert_eq!(closed["reason"], "conflict: replaced");
    assert_eq!(older.wait().code(), Some(0));
    let ends: Vec<_> = read_records(&log)
        .into_iter()
        .filter(|r| r.get("end_us").is_some())
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["pid"], older.pid());
    assert_eq!(ends[0]["why"], "conflict");

    // The newer worker holds the claim, and ends by SIGTERM as usual.
    let held = std::fs::read_to_string(&claim).unwrap();
    assert!(held.starts_with(&format!("{}:", newer.pid())), "{held}");
    newer.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(newer.wait().code(), Some(0));
    let last = read_records(&log).pop().unwrap();
    assert_eq!(last["pid"], newer.pid());
    assert_eq!(last["why"], "term");
}

/// `await=PATH` holds the script until PATH appears, whichever way it
/// appears (here a rename, as atomic writers do; another file in the
/// directory does not release it), and does not wait for a PATH that is
/// already there. The pairing-page test (issue #11) uses it to say when
/// the worker connects.
#[test]
fn await_holds_the_script_until_the_path_exists() {
    let dir = session_dir("await_holds_the_script_until_the_path_exists");
    let log = dir.join("log");
    let go = dir.join("go");
    let await_go = format!("await={}", go.display());
    let w = Running::start(&dir, &log, &["qr=before", &await_go, "connect=1@s"]);
    assert_eq!(w.next_event()["event"], "qr");
    std::fs::write(dir.join("unrelated"), "x").unwrap();
    std::fs::write(dir.join("go.tmp"), "x").unwrap();
    assert!(
        w.events.try_recv().is_err(),
        "nothing passes the await before PATH exists"
    );
    std::fs::rename(dir.join("go.tmp"), &go).unwrap();
    let connected = w.next_event();
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["jid"], "1@s");

    // PATH exists already: no wait at all.
    let w = Running::start(&dir, &log, &[&await_go, "connect=2@s"]);
    assert_eq!(w.next_event()["jid"], "2@s");

    // A directory that does not exist is a script error.
    let missing = format!("await={}", dir.join("no-such-dir/go").display());
    let mut w = Running::start(&dir, &log, &[&missing, "connect"]);
    assert_eq!(w.wait().code(), Some(2));
}
