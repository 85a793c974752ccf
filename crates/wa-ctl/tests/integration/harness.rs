//! Test harness: a private directory per test, the real `wa-ctl` binary, the
//! scriptable `wa-test-worker`, waits on observable conditions with a
//! deadline, guards that leave no process behind, and the one way a test
//! skips.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn wa_ctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wa-ctl"))
}

/// The test worker, built by `cargo test --workspace` into the same target
/// directory as `wa-ctl` (its crate has a test of its own, which makes
/// cargo build the binary).
pub fn test_worker_bin() -> PathBuf {
    let path = wa_ctl_bin().with_file_name("wa-test-worker");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

#[expect(clippy::disallowed_methods, reason = "tests run the real binaries")]
pub fn command(program: &Path) -> Command {
    Command::new(program)
}

/// Ends a test whose setup this machine lacks (a tmpfs mount, root, a
/// system tool): call it as `return skip("...")`.
///
/// Outside CI the skip is printed, never silent. With `CI=true` it is a
/// failure: `.ci/run` provides everything the tests need, so a skip there
/// is a pass that proved nothing (issue #8, section 6).
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true, where no test may skip: {reason}");
    }
    // Written to the stream itself: the test harness captures `eprintln!`
    // and would show the line only for a failed test.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// The first `name` on `$PATH`: a system tool a test needs.
pub fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// A child process that is killed and reaped when it goes out of scope, so
/// a test that fails halfway leaves it neither running nor a zombie (the
/// idea of rust-analyzer's `JodChild`).
pub struct ChildGuard(Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(cmd.spawn().expect("spawn"))
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// Waits for the child to exit; at the deadline, kills it and fails the
    /// test with `what`.
    pub fn wait(&mut self, what: &str, timeout: Duration) -> std::process::ExitStatus {
        wait_child(&mut self.0, what, timeout)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // A child already waited for is not signalled again: the standard
        // library knows it is reaped and refuses.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command to completion, killing it if it outlives `timeout`.
pub fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let what = format!("{program} to finish");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    // Read both pipes concurrently: a full pipe would block the child.
    let stdout = read_in_background(child.stdout.take().unwrap());
    let stderr = read_in_background(child.stderr.take().unwrap());
    let status = wait_child(&mut child, &what, timeout);
    // The pipes close when the command exits, unless something it started
    // kept them: then the test fails at the deadline instead of hanging.
    let collect = |pipe: std::sync::mpsc::Receiver<Vec<u8>>| {
        pipe.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!("{program} exited, but a process it started still holds its output")
        })
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

/// Reads `pipe` to its end on a thread of its own; the bytes arrive on the
/// returned channel.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

fn wait_child(child: &mut Child, what: &str, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `check` returns `Some`, or panics with `what` at the deadline.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback port nothing listens on: bound, then released.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Whether every thread of a process has exited: a process killed by
/// SIGKILL shows as a zombie (its leader thread) while its other threads
/// still exit, and until the last one has, its files (its locks, its
/// sockets) stay open. A test that checks what a dead supervisor left
/// waits for this, not for [`alive`] to turn false.
pub fn gone(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            matches!(state, Some('Z') | Some('X') | None)
        })
    })
}

/// Every process id in /proc now.
pub fn proc_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn environ_has(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|&c| c == 0)
                .any(|s| String::from_utf8_lossy(s).contains(needle))
        })
        .unwrap_or(false)
}

/// One test's world: a private directory with a config file in it.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl TestEnv {
    /// A config with private runtime and state directories, a short stop
    /// timeout, and `extra` appended (sessions, policy, worker).
    pub fn new(extra: &str) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("wa-ctl-test-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("wa-ctl.toml");
        let text = format!(
            "[supervisor]\nruntime_dir = \"run\"\nstate_dir = \"state\"\nstop_timeout = \"2s\"\n{extra}\n"
        );
        std::fs::write(&config, text).unwrap();
        TestEnv { dir, config }
    }

    /// A `[worker]` table running the test worker with `--log` and `steps`.
    pub fn worker(&self, steps: &[&str]) -> String {
        format!("[worker]\ncommand = {}\n", self.worker_command(steps))
    }

    /// The TOML array for a test-worker command.
    pub fn worker_command(&self, steps: &[&str]) -> String {
        let mut argv = vec![
            test_worker_bin().display().to_string(),
            "--log".to_owned(),
            self.spawn_log().display().to_string(),
        ];
        argv.extend(steps.iter().map(|s| s.to_string()));
        serde_json::to_string(&argv).unwrap()
    }

    pub fn with_worker(steps: &[&str], extra: &str) -> TestEnv {
        let env = TestEnv::new("");
        let text = format!(
            "[supervisor]\nruntime_dir = \"run\"\nstate_dir = \"state\"\nstop_timeout = \"2s\"\n{}\n{extra}\n",
            env.worker(steps)
        );
        std::fs::write(&env.config, text).unwrap();
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn spawn_log(&self) -> PathBuf {
        self.path().join("spawns.log")
    }

    /// Runs `wa-ctl --config <ours> args...`.
    pub fn wa_ctl(&self, args: &[&str]) -> Output {
        let mut cmd = command(&wa_ctl_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("WA_CTL_CONFIG")
            .env_remove("WA_CTL_LOG");
        run_with_deadline(cmd, Duration::from_secs(60))
    }

    /// Runs wa-ctl and asserts it exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.wa_ctl(args);
        assert!(
            out.status.success(),
            "wa-ctl {args:?} failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `status --json`, parsed, with the exit code.
    pub fn status(&self) -> (i32, Value) {
        let out = self.wa_ctl(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    pub fn session(&self, id: &str) -> Value {
        let (_, v) = self.status();
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until session `id` is in `state`, and returns its status.
    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_until(&format!("session {id} to be {state}"), DEADLINE, || {
            let s = self.session(id);
            (s["state"] == state).then_some(s)
        })
    }

    /// The test worker's spawn log: (pid, spawn number, unix ms) per start.
    pub fn spawns(&self) -> Vec<(u32, u32, u64)> {
        let text = std::fs::read_to_string(self.spawn_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            // Start records are the ones with a spawn number: end records
            // carry a pid too.
            .filter(|v| v.get("spawn").is_some())
            .map(|v| {
                (
                    v["pid"].as_u64().unwrap() as u32,
                    v["spawn"].as_u64().unwrap() as u32,
                    v["t_ms"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Grandchildren the test worker forked.
    pub fn grandchildren(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.spawn_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("grandchild")?.as_u64())
            .map(|p| p as u32)
            .collect()
    }

    /// Live processes that carry one of our session directories: workers
    /// and whatever they forked.
    pub fn worker_processes(&self) -> Vec<u32> {
        let marker = format!("WA_CTL_SESSION_DIR={}", self.state_dir().display());
        proc_pids()
            .into_iter()
            .filter(|&p| alive(p) && environ_has(p, &marker))
            .collect()
    }

    /// Every live process that carries this test's directory in its
    /// environment: workers, their children, and strays started by hand.
    fn everything_spawned(&self) -> Vec<u32> {
        let marker = format!("WA_CTL_SESSION_DIR={}", self.path().display());
        proc_pids()
            .into_iter()
            .filter(|&p| alive(p) && environ_has(p, &marker))
            .collect()
    }

    /// Live supervisors of this configuration.
    pub fn supervisors(&self) -> Vec<u32> {
        let config = self.config.display().to_string();
        proc_pids()
            .into_iter()
            .filter(|&p| {
                let argv = cmdline(p);
                alive(p)
                    && argv.iter().any(|a| a == &config)
                    && argv.iter().any(|a| a == "--foreground")
            })
            .collect()
    }

    pub fn supervisor_pid(&self) -> u32 {
        let (_, v) = self.status();
        v["pid"].as_u64().expect("supervisor running") as u32
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Stop politely, then make sure: nothing a test spawned survives it.
        let _ = self.wa_ctl(&["stop"]);
        for pid in self
            .supervisors()
            .into_iter()
            .chain(self.everything_spawned())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
