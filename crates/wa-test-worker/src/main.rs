//! `wa-test-worker`: a worker that speaks the wa-ctl worker protocol and does
//! exactly what its arguments script. The integration tests use it to play
//! every kind of worker: one that connects, one that reports a close code,
//! one that crashes, one that ignores SIGTERM, one that forks, one that is
//! closed with 440 when a second connection for its credentials appears.
//!
//! It is never installed: it lives in its own unpublished crate.
//!
//! ```text
//! wa-test-worker [--log FILE] STEP...
//! ```
//!
//! Steps run in order; after the last one the worker waits for a signal.
//! SIGTERM makes it exit 0 unless `ignore-term` was run.
//!
//! | step | what it does |
//! |---|---|
//! | `connect[=JID]` | report `connected` |
//! | `qr=CODE` | report `qr` |
//! | `pair=CODE` | report `pair_code`; `pair=$PHONE` reports the last 8 digits of `$WA_CTL_PAIR_PHONE` |
//! | `close=CODE[:REASON]` | report `closed` |
//! | `conflict=PATH` | connect like WhatsApp does, one live connection per credentials: claim PATH, report `connected`, and once another worker's claim replaces ours, report `closed` 440 `conflict: replaced` and exit 0 (below) |
//! | `sleep=DURATION` | wait (humantime: `50ms`, `2s`) |
//! | `await=PATH` | block until PATH exists (below), then go on |
//! | `exit=N` | exit with status N |
//! | `crash` | die by SIGKILL |
//! | `ignore-term` | ignore SIGTERM from now on |
//! | `fork` | fork a grandchild that stays in the group and ignores SIGTERM |
//! | `daemon` | double-fork with `setsid`: a grandchild that leaves the group and ignores SIGTERM |
//! | `write-file=NAME:TEXT` | write a file into the session directory |
//! | `raw=TEXT` | write TEXT and a newline to the events fd as is |
//! | `alive` | report `alive` once |
//! | `alive=DURATION` | report `alive` now and then every DURATION, from a thread, while the script goes on |
//! | `stdout=TEXT` | write TEXT and a newline to stdout as is (it lands in the supervisor's log, control characters and all) |
//! | `junk=KIND` | write `long` (a 100 KiB line), `huge` (a 10 MB line), `binary`, `flood` (100,000 events) or `million` (1,000,000 events) |
//! | `@N:STEP` | run STEP only on the Nth spawn of this session (1-based) |
//! | `@N+:STEP` | run STEP on the Nth spawn and every later one |
//!
//! **`conflict=PATH`** plays WhatsApp's rule that a new connection with the
//! same credentials closes the old one with 440. Workers of one session
//! on several hosts share PATH (a file in a directory both reach). The
//! worker writes its claim, `<pid>:<start time in µs>`, to PATH atomically
//! (a temporary file in the same directory, renamed over PATH), reports
//! `connected`, and from then on a thread watches PATH's directory with
//! inotify. When PATH holds another claim, the worker reports `closed`
//! with code 440 and reason `conflict: replaced`, logs its end with why
//! `conflict`, and exits 0. The watch is in place before the claim is
//! written, so no replacement can slip between the two. A PATH that is
//! removed is no new connection and closes nothing.
//!
//! **`await=PATH`** lets a test decide when the script goes on, without
//! guessing a duration: the worker blocks until PATH exists (a file, a
//! directory, anything `stat` finds). It watches PATH's directory with
//! inotify and checks for PATH once the watch is in place and after each
//! batch of events, so a PATH created at any moment, before the step
//! included, is seen, and nothing polls. The directory must exist; if it is
//! removed while the worker waits, the step fails (exit 2).
//!
//! **The log.** With `--log FILE`, the worker appends one JSON object per
//! line, each in one `write` to a file opened with `O_APPEND`, so workers
//! of several supervisors can share one log:
//! - each start: `{"pid":..,"spawn":..,"t_ms":..,"t_us":..,"session_dir":..,"fencing_token":..}`,
//!   where `session_dir` is `$WA_CTL_SESSION_DIR` and `fencing_token` is
//!   `$WA_CTL_FENCING_TOKEN` as a number, null when it is not set, or the
//!   text as a string when it is not an integer (a test then sees what
//!   arrived). `spawn` is the key only start records have.
//! - each end the worker can see, once: `{"pid":..,"end_us":..,"why":..}`
//!   with why `term` (SIGTERM, unless `ignore-term` ran), `exit` (the
//!   `exit=N` step, or a script error after the start; the record then
//!   also has `"exit_us"`, equal to `end_us`, which the benchmarks time
//!   restarts with, and `"status"`) or `conflict` (above). A worker killed
//!   by SIGKILL (`crash`, or the supervisor's death signal) logs no end.
//! - each fork: `{"grandchild":..}`.
//!
//! So tests can count spawns, measure their spacing, and build every
//! worker's lifetime.
//!
//! **SIGTERM** is blocked in every thread from the first line of `main`,
//! and one thread takes it with `sigwait`: the end record is written by
//! ordinary code, never in a signal handler, and a SIGTERM that arrives
//! before the start record is logged after it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};

const USAGE_EXIT: u8 = 2;

/// The close code WhatsApp sends a connection that a newer one replaced.
const CONFLICT_CODE: u16 = 440;

/// Set by `ignore-term`: the SIGTERM thread then takes SIGTERM and drops it.
static IGNORE_TERM: AtomicBool = AtomicBool::new(false);

/// Whether an end record was written. Held while it is written and the
/// process exits, so a SIGTERM and a conflict that arrive together log one
/// end, whichever came first.
static ENDED: Mutex<bool> = Mutex::new(false);

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn append(path: &Option<PathBuf>, line: &str) {
    if let Some(path) = path {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open --log file");
        // One write call per line, so that concurrent writers do not interleave.
        f.write_all(format!("{line}\n").as_bytes())
            .expect("write --log file");
    }
}

/// Why the worker ended, as its end record says.
#[derive(Clone, Copy)]
enum Why {
    /// SIGTERM, not ignored.
    Term,
    /// The `exit=N` step, or a script error after the start, with the status.
    Exit(u8),
    /// Another worker's claim replaced ours (`conflict=PATH`).
    Conflict,
}

/// Logs the end record and ends the process with `exit`, unless another
/// thread got there first: then this one waits for the process to end
/// under it, and never returns.
///
/// The `exit` step returns from `main` instead (stdout is flushed on the
/// way), so `exit` is a closure; the other ends `_exit` at once.
fn end<T>(log: &Option<PathBuf>, why: Why, exit: impl FnOnce() -> T) -> T {
    let mut ended = ENDED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *ended {
        drop(ended);
        // The first end is exiting the process; this thread waits for it.
        loop {
            std::thread::park();
        }
    }
    *ended = true;
    let end_us = now_us();
    let pid = std::process::id();
    let line = match why {
        Why::Term => format!(r#"{{"pid":{pid},"end_us":{end_us},"why":"term"}}"#),
        Why::Conflict => format!(r#"{{"pid":{pid},"end_us":{end_us},"why":"conflict"}}"#),
        Why::Exit(status) => format!(
            r#"{{"pid":{pid},"end_us":{end_us},"why":"exit","exit_us":{end_us},"status":{status}}}"#
        ),
    };
    append(log, &line);
    // The lock stays held (leaked) until the process is gone: no other
    // thread may log a second end in between.
    std::mem::forget(ended);
    exit()
}

/// Ends the process at once with status 0, from any thread: no Rust code
/// runs after it, nor the atexit handlers, which the main thread may be
/// running into at the same moment.
fn exit_now() -> ! {
    // SAFETY: _exit takes an integer and does not return; it is sound
    // whatever the other threads are doing.
    unsafe { nix::libc::_exit(0) }
}

/// Takes every SIGTERM, which all threads block, and ends the worker with
/// an end record, unless `ignore-term` ran.
fn spawn_term_thread(log: Option<PathBuf>, term: SigSet) {
    std::thread::spawn(move || {
        loop {
            match term.wait() {
                Ok(Signal::SIGTERM) if !IGNORE_TERM.load(Ordering::SeqCst) => {
                    end(&log, Why::Term, exit_now);
                }
                // Ignored, or an interrupted wait: wait again.
                _ => {}
            }
        }
    });
}

/// Writes one line to the events fd. A closed pipe means the supervisor is
/// gone; the script goes on regardless.
fn emit_line(events: &mut File, line: &[u8]) {
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    let _ = events.write_all(&bytes);
}

/// Says what is wrong and exits 2. The message may be lost, never the exit
/// status: stderr is the supervisor's log file, which may be on a full disk,
/// where `eprintln!` would panic and turn the exit status into 101.
fn fail(msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "wa-test-worker: {msg}");
    ExitCode::from(USAGE_EXIT)
}

/// The events file for the descriptor the supervisor named, checked open.
///
/// A standard stream (`WA_CTL_EVENTS_FD=2` when a test starts the worker by
/// hand) is duplicated, never owned: the standard library goes on using it,
/// and dropping the events file would close it under `eprintln!`. Any other
/// descriptor was handed to this process for the events alone, so the file
/// owns it, and the worker holds no descriptor beyond what it inherited.
fn events_file(fd: RawFd) -> std::io::Result<File> {
    let owned = if (0..=2).contains(&fd) {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers only and touches no
        // memory of ours; for a number that is not an open descriptor it
        // fails with EBADF, which makes it the check that `fd` is open.
        unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 3) }
    } else {
        // SAFETY: as above, for F_GETFD, which only reads the descriptor's
        // flags: it succeeds exactly when `fd` is open.
        match unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } {
            -1 => -1,
            _ => fd,
        }
    };
    if owned < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `owned` is open (fcntl just succeeded on it), and nothing else
    // in this process refers to it: either fcntl just created it as a
    // duplicate, or it is the events descriptor, which the supervisor passed
    // for this use alone and which nothing else here opened.
    Ok(unsafe { File::from_raw_fd(owned) })
}

/// `$WA_CTL_FENCING_TOKEN` for the start record: a number, null when unset,
/// or the text as a JSON string when it is not an integer.
fn fencing_token_json() -> String {
    match std::env::var("WA_CTL_FENCING_TOKEN") {
        Err(_) => "null".to_owned(),
        Ok(text) => match text.parse::<i64>() {
            Ok(token) => token.to_string(),
            Err(_) => serde_json::Value::String(text).to_string(),
        },
    }
}

/// A claim on the credentials of `conflict=PATH`, and the watch that sees
/// another claim replace it.
struct Claim {
    path: PathBuf,
    file_name: std::ffi::OsString,
    ours: String,
    inotify: Inotify,
}

impl Claim {
    /// Watches PATH's directory, then writes our claim: in that order, so
    /// that a claim written after ours always wakes the watch.
    fn take(path: &Path, ours: String) -> Result<Claim, String> {
        let file_name = path
            .file_name()
            .ok_or_else(|| format!("conflict={} names no file", path.display()))?
            .to_owned();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("cannot start inotify: {e}"))?;
        inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_CREATE,
            )
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        // Atomic for every reader: a temporary file of our own in the same
        // directory, renamed over PATH. No fsync: the claim only has to
        // outlive the workers, not a crash of the machine.
        let temporary = dir.join(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            ours.replace(':', "-")
        ));
        std::fs::write(&temporary, &ours)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| format!("cannot write the claim {}: {e}", path.display()))?;
        Ok(Claim {
            path: path.to_owned(),
            file_name,
            ours,
            inotify,
        })
    }

    /// Whether another claim replaced ours. A claim being renamed into
    /// place is never seen half-written; a missing or unreadable PATH is
    /// nobody else's connection.
    fn replaced(&self) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|text| text != self.ours)
    }

    /// Blocks until another claim replaced ours. If the watch fails, it
    /// blocks for good: a worker whose watch broke keeps its connection,
    /// as it would with no rival.
    fn wait_replaced(&self) {
        // A claim renamed over ours between our write and now has its
        // event queued already; checking first costs nothing.
        if self.replaced() {
            return;
        }
        loop {
            match self.inotify.read_events() {
                Ok(events) => {
                    // Other files in the directory (our temporary file,
                    // other sessions' claims) are no reason to read PATH;
                    // an overflowed queue may have dropped one that was.
                    let maybe_ours = events.iter().any(|e| {
                        e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                            || e.name.as_deref() == Some(self.file_name.as_os_str())
                    });
                    if maybe_ours && self.replaced() {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => loop {
                    std::thread::park();
                },
            }
        }
    }
}

/// Blocks until `path` exists: see `await=PATH` in the module docs.
fn await_path(path: &Path) -> Result<(), String> {
    if path.file_name().is_none() {
        return Err(format!("await={} names no file", path.display()));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let inotify =
        Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| format!("cannot start inotify: {e}"))?;
    inotify
        .add_watch(
            dir,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    loop {
        // After the watch is in place: a PATH created before it is found
        // here, one created after it wakes the read below.
        match path.try_exists() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(format!("cannot look for {}: {e}", path.display())),
        }
        match inotify.read_events() {
            Ok(events) => {
                // Any other event (another file, an overflowed queue) only
                // means: look again.
                let gone = events.iter().any(|e| {
                    e.mask
                        .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF)
                });
                if gone && !path.try_exists().unwrap_or(false) {
                    return Err(format!(
                        "{} went away while waiting for {}",
                        dir.display(),
                        path.display()
                    ));
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot watch {}: {e}", dir.display())),
        }
    }
}

fn main() -> ExitCode {
    // Before anything else, and above all before any thread exists: every
    // thread inherits the mask, so SIGTERM reaches this process only
    // through the SIGTERM thread's sigwait.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    if term.thread_block().is_err() {
        return fail("cannot block SIGTERM");
    }

    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut log = None;
    if args.first().map(String::as_str) == Some("--log") {
        if args.len() < 2 {
            return fail("--log needs a file");
        }
        log = Some(PathBuf::from(args.remove(1)));
        args.remove(0);
    }
    let (Ok(session_dir), Ok(fd)) = (
        std::env::var("WA_CTL_SESSION_DIR"),
        std::env::var("WA_CTL_EVENTS_FD"),
    ) else {
        return fail(
            "WA_CTL_SESSION_DIR and WA_CTL_EVENTS_FD must be set: this worker is run by wa-ctl",
        );
    };
    let Ok(fd) = fd.parse::<RawFd>() else {
        return fail("WA_CTL_EVENTS_FD is not a number");
    };
    let events = match events_file(fd) {
        Ok(events) => events,
        Err(e) => {
            return fail(&format!(
                "WA_CTL_EVENTS_FD={fd} is not an open descriptor: {e}"
            ));
        }
    };

    // Count spawns in the session directory, which survives restarts.
    let counter = PathBuf::from(&session_dir).join(".test-worker-spawns");
    let spawn: u32 = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    if std::fs::write(&counter, spawn.to_string()).is_err() {
        return fail("cannot write the spawn counter in the session directory");
    }
    let start_us = now_us();
    append(
        &log,
        &format!(
            r#"{{"pid":{},"spawn":{spawn},"t_ms":{},"t_us":{start_us},"session_dir":{},"fencing_token":{}}}"#,
            std::process::id(),
            now_ms(),
            serde_json::Value::String(session_dir.clone()),
            fencing_token_json(),
        ),
    );
    spawn_term_thread(log.clone(), term);

    let status = run_script(&args, &log, &session_dir, spawn, start_us, events);
    end(&log, Why::Exit(status), || ExitCode::from(status))
}

/// Runs the steps, then waits for a signal; returns only to exit, with the
/// status to exit with.
fn run_script(
    args: &[String],
    log: &Option<PathBuf>,
    session_dir: &str,
    spawn: u32,
    start_us: u128,
    mut events: File,
) -> u8 {
    // A script error: the message, and the usage status for `main` to exit with.
    let script_error = |msg: &str| {
        let _ = fail(msg);
        USAGE_EXIT
    };
    for raw_step in args {
        let mut step = raw_step.as_str();
        if let Some(rest) = step.strip_prefix('@') {
            let Some((cond, inner)) = rest.split_once(':') else {
                return script_error(&format!("bad step {raw_step}"));
            };
            let (n, or_later) = match cond.strip_suffix('+') {
                Some(n) => (n, true),
                None => (cond, false),
            };
            let Ok(n) = n.parse::<u32>() else {
                return script_error(&format!("bad spawn number in {raw_step}"));
            };
            if !(spawn == n || (or_later && spawn > n)) {
                continue;
            }
            step = inner;
        }
        let (name, value) = step.split_once('=').unwrap_or((step, ""));
        match name {
            "connect" if value.is_empty() => emit_line(&mut events, br#"{"event":"connected"}"#),
            "connect" => emit_line(
                &mut events,
                serde_json::json!({"event": "connected", "jid": value})
                    .to_string()
                    .as_bytes(),
            ),
            "conflict" => {
                if value.is_empty() {
                    return script_error("conflict needs a path: conflict=PATH");
                }
                let claim = match Claim::take(
                    Path::new(value),
                    format!("{}:{start_us}", std::process::id()),
                ) {
                    Ok(claim) => claim,
                    Err(e) => return script_error(&e),
                };
                let Ok(mut closer) = events.try_clone() else {
                    return script_error("cannot share the events fd with the conflict thread");
                };
                emit_line(&mut events, br#"{"event":"connected"}"#);
                let log = log.clone();
                std::thread::spawn(move || {
                    claim.wait_replaced();
                    let line = serde_json::json!({
                        "event": "closed",
                        "code": CONFLICT_CODE,
                        "reason": "conflict: replaced",
                    })
                    .to_string();
                    emit_line(&mut closer, line.as_bytes());
                    end(&log, Why::Conflict, exit_now);
                });
            }
            "qr" => emit_line(
                &mut events,
                serde_json::json!({"event": "qr", "code": value})
                    .to_string()
                    .as_bytes(),
            ),
            "pair" if value == "$PHONE" => {
                // A valid pair code that shows the phone arrived: its last
                // eight digits, zero-padded.
                let phone = std::env::var("WA_CTL_PAIR_PHONE").unwrap_or_default();
                let tail = &phone[phone.len().saturating_sub(8)..];
                let line = serde_json::json!({"event": "pair_code", "code": format!("{tail:0>8}")})
                    .to_string();
                emit_line(&mut events, line.as_bytes());
            }
            "pair" => emit_line(
                &mut events,
                serde_json::json!({"event": "pair_code", "code": value})
                    .to_string()
                    .as_bytes(),
            ),
            "close" => {
                let (code, reason) = value.split_once(':').unwrap_or((value, ""));
                let Ok(code) = code.parse::<u16>() else {
                    return script_error(&format!("bad code in {step}"));
                };
                let line = serde_json::json!({"event": "closed", "code": code, "reason": reason})
                    .to_string();
                emit_line(&mut events, line.as_bytes());
            }
            "await" => {
                if value.is_empty() {
                    return script_error("await needs a path: await=PATH");
                }
                if let Err(e) = await_path(Path::new(value)) {
                    return script_error(&e);
                }
            }
            "sleep" => match humantime::parse_duration(value) {
                Ok(d) => std::thread::sleep(d),
                Err(e) => return script_error(&format!("bad duration in {step}: {e}")),
            },
            "exit" => match value.parse::<u8>() {
                Ok(n) => return n,
                Err(_) => return script_error(&format!("bad status in {step}")),
            },
            "crash" => {
                let _ = nix::sys::signal::raise(Signal::SIGKILL);
            }
            "ignore-term" => {
                // The flag first: once /proc shows SIGTERM ignored (tests
                // wait for that), the SIGTERM thread already drops it.
                IGNORE_TERM.store(true, Ordering::SeqCst);
                // SIGTERM is blocked, so the kernel still hands it to the
                // SIGTERM thread, which drops it; SIG_IGN is what /proc
                // shows, and what the forked grandchildren inherit.
                // SAFETY: SIG_IGN runs no code of ours when the signal arrives.
                unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore SIGTERM");
            }
            "fork" => {
                // SAFETY: the child of this multi-threaded process calls
                // only async-signal-safe functions (sigaction, pause) and
                // never returns from this arm.
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => ignore_term_forever(),
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        append(log, &format!(r#"{{"grandchild":{child}}}"#));
                    }
                    Err(e) => return script_error(&format!("fork failed: {e}")),
                }
            }
            "daemon" => match daemon() {
                Ok(grandchild) => append(log, &format!(r#"{{"grandchild":{grandchild}}}"#)),
                Err(e) => return script_error(&e),
            },
            "write-file" => {
                let Some((file, text)) = value.split_once(':') else {
                    return script_error(&format!("bad step {step}"));
                };
                if std::fs::write(PathBuf::from(session_dir).join(file), text).is_err() {
                    return script_error(&format!("cannot write {file}"));
                }
            }
            "raw" => emit_line(&mut events, value.as_bytes()),
            "alive" if value.is_empty() => emit_line(&mut events, br#"{"event":"alive"}"#),
            "alive" => {
                let every = match humantime::parse_duration(value) {
                    Ok(d) => d,
                    Err(e) => return script_error(&format!("bad duration in {step}: {e}")),
                };
                let Ok(mut beat) = events.try_clone() else {
                    return script_error("cannot share the events fd with the heartbeat thread");
                };
                // A thread of its own: the script goes on, and a SIGSTOP of
                // the process stops the heartbeat with it.
                std::thread::spawn(move || {
                    loop {
                        emit_line(&mut beat, br#"{"event":"alive"}"#);
                        std::thread::sleep(every);
                    }
                });
            }
            "stdout" => {
                // One write, flushed at once: the test reads the log as soon
                // as the next event shows the step ran.
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(format!("{value}\n").as_bytes());
                let _ = stdout.flush();
            }
            "junk" => match value {
                "long" => emit_line(&mut events, "x".repeat(100 * 1024).as_bytes()),
                "huge" => emit_line(&mut events, "y".repeat(10 * 1024 * 1024).as_bytes()),
                "million" => {
                    // Batched writes: as fast as the pipe takes them.
                    let chunk = r#"{"event":"connected"}
"#
                    .repeat(1000);
                    for _ in 0..1000 {
                        let _ = events.write_all(chunk.as_bytes());
                    }
                }
                "binary" => emit_line(&mut events, b"\xff\xfe\x00\x01garbage\x80"),
                "flood" => {
                    for _ in 0..100_000 {
                        emit_line(&mut events, br#"{"event":"connected"}"#);
                    }
                }
                _ => return script_error(&format!("unknown junk kind {value}")),
            },
            _ => return script_error(&format!("unknown step {step}")),
        }
    }
    // SIGTERM, blocked here, goes to the SIGTERM thread; this thread only
    // waits for the process to end.
    loop {
        std::thread::park();
    }
}

/// The grandchild of `fork` and `daemon`: it ignores SIGTERM and sleeps
/// until killed.
///
/// It runs in the child of a multi-threaded process, where only
/// async-signal-safe functions may be called: sigaction and pause are.
fn ignore_term_forever() -> ! {
    // SAFETY: SIG_IGN runs no code of ours when the signal arrives.
    let _ = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) };
    loop {
        nix::unistd::pause();
    }
}

/// Double-forks with `setsid`: a grandchild that left the process group
/// and ignores SIGTERM. Returns its pid once the middle process is reaped,
/// so the log is complete when the worker goes on.
///
/// The middle process passes the pid through a pipe rather than logging
/// it: in the child of a multi-threaded process only async-signal-safe
/// functions may run, and opening and formatting a log line is not.
fn daemon() -> Result<i32, String> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe failed: {e}"))?;
    // SAFETY: the child calls only async-signal-safe functions (setsid,
    // fork, write, _exit, and those of `ignore_term_forever`) and never
    // returns from this match.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            // SAFETY: as for the first fork; this child is the same kind
            // of process.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => ignore_term_forever(),
                Ok(nix::unistd::ForkResult::Parent { child }) => {
                    let _ = nix::unistd::write(&write_end, &child.as_raw().to_ne_bytes());
                    // SAFETY: _exit ends the process without running Rust
                    // code or the atexit handlers this forked copy shares
                    // with the worker.
                    unsafe { nix::libc::_exit(0) }
                }
                // SAFETY: as for the _exit just above.
                Err(_) => unsafe { nix::libc::_exit(1) },
            }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(write_end);
            let mut bytes = [0u8; 4];
            let n = nix::unistd::read(read_end.as_fd(), &mut bytes).unwrap_or(0);
            let _ = nix::sys::wait::waitpid(child, None);
            if n == bytes.len() {
                Ok(i32::from_ne_bytes(bytes))
            } else {
                Err("the middle process of daemon did not fork".to_owned())
            }
        }
        Err(e) => Err(format!("fork failed: {e}")),
    }
}
