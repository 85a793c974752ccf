//! `wa-test-worker`: a worker that speaks the wa-ctl worker protocol and does
//! exactly what its arguments script. The integration tests use it to play
//! every kind of worker: one that connects, one that reports a close code,
//! one that crashes, one that ignores SIGTERM, one that forks.
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
//! | `sleep=DURATION` | wait (humantime: `50ms`, `2s`) |
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
//! With `--log FILE`, each start appends `{"pid":..,"spawn":..,"t_ms":..,"t_us":..}`,
//! each `exit` step `{"exit_us":..}` (the benchmarks time restarts with them), and each
//! fork appends `{"grandchild":..}`, so tests can count spawns and measure
//! their spacing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigHandler, Signal, signal};

const USAGE_EXIT: u8 = 2;

extern "C" fn exit_on_term(_: nix::libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends the process without
    // running any Rust code, so it may interrupt anything.
    unsafe { nix::libc::_exit(0) }
}

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

fn main() -> ExitCode {
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
    let mut events = match events_file(fd) {
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
    append(
        &log,
        &format!(
            r#"{{"pid":{},"spawn":{spawn},"t_ms":{},"t_us":{}}}"#,
            std::process::id(),
            now_ms(),
            now_us()
        ),
    );

    // SAFETY: the handler only calls _exit, which is async-signal-safe, so
    // it is sound whatever code the signal interrupts.
    unsafe { signal(Signal::SIGTERM, SigHandler::Handler(exit_on_term)) }
        .expect("install SIGTERM handler");

    for raw_step in &args {
        let mut step = raw_step.as_str();
        if let Some(rest) = step.strip_prefix('@') {
            let Some((cond, inner)) = rest.split_once(':') else {
                return fail(&format!("bad step {raw_step}"));
            };
            let (n, or_later) = match cond.strip_suffix('+') {
                Some(n) => (n, true),
                None => (cond, false),
            };
            let Ok(n) = n.parse::<u32>() else {
                return fail(&format!("bad spawn number in {raw_step}"));
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
                    return fail(&format!("bad code in {step}"));
                };
                let line = serde_json::json!({"event": "closed", "code": code, "reason": reason})
                    .to_string();
                emit_line(&mut events, line.as_bytes());
            }
            "sleep" => match humantime::parse_duration(value) {
                Ok(d) => std::thread::sleep(d),
                Err(e) => return fail(&format!("bad duration in {step}: {e}")),
            },
            "exit" => match value.parse::<u8>() {
                Ok(n) => {
                    append(&log, &format!(r#"{{"exit_us":{}}}"#, now_us()));
                    return ExitCode::from(n);
                }
                Err(_) => return fail(&format!("bad status in {step}")),
            },
            "crash" => {
                let _ = nix::sys::signal::raise(Signal::SIGKILL);
            }
            "ignore-term" => {
                // SAFETY: SIG_IGN runs no code of ours when the signal arrives.
                unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore SIGTERM");
            }
            "fork" => {
                // SAFETY: this process never starts a thread, so no lock can
                // be held by a thread that the child would not have.
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => {
                        // SAFETY: SIG_IGN runs no code of ours when the signal arrives.
                        let _ = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) };
                        loop {
                            nix::unistd::pause();
                        }
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        append(&log, &format!(r#"{{"grandchild":{child}}}"#));
                    }
                    Err(e) => return fail(&format!("fork failed: {e}")),
                }
            }
            "daemon" => {
                // SAFETY: this process never starts a thread, so no lock can
                // be held by a thread that the child would not have.
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => {
                        let _ = nix::unistd::setsid();
                        // SAFETY: the child of a single-threaded process has one
                        // thread too, so the same holds for its own fork.
                        match unsafe { nix::unistd::fork() } {
                            Ok(nix::unistd::ForkResult::Child) => {
                                // SAFETY: SIG_IGN runs no code of ours when the signal arrives.
                                let _ = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) };
                                loop {
                                    nix::unistd::pause();
                                }
                            }
                            // The middle process logs the escapee before it
                            // exits, so the log is complete when the worker
                            // goes on.
                            Ok(nix::unistd::ForkResult::Parent { child }) => {
                                append(&log, &format!(r#"{{"grandchild":{child}}}"#));
                                // SAFETY: _exit ends the process without running
                                // Rust code or the atexit handlers this forked
                                // copy shares with the worker.
                                unsafe { nix::libc::_exit(0) }
                            }
                            // SAFETY: as for the _exit just above.
                            Err(_) => unsafe { nix::libc::_exit(1) },
                        }
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        let _ = nix::sys::wait::waitpid(child, None);
                    }
                    Err(e) => return fail(&format!("fork failed: {e}")),
                }
            }
            "write-file" => {
                let Some((file, text)) = value.split_once(':') else {
                    return fail(&format!("bad step {step}"));
                };
                if std::fs::write(PathBuf::from(&session_dir).join(file), text).is_err() {
                    return fail(&format!("cannot write {file}"));
                }
            }
            "raw" => emit_line(&mut events, value.as_bytes()),
            "alive" if value.is_empty() => emit_line(&mut events, br#"{"event":"alive"}"#),
            "alive" => {
                let every = match humantime::parse_duration(value) {
                    Ok(d) => d,
                    Err(e) => return fail(&format!("bad duration in {step}: {e}")),
                };
                let Ok(mut beat) = events.try_clone() else {
                    return fail("cannot share the events fd with the heartbeat thread");
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
                _ => return fail(&format!("unknown junk kind {value}")),
            },
            _ => return fail(&format!("unknown step {step}")),
        }
    }
    loop {
        nix::unistd::pause();
    }
}
