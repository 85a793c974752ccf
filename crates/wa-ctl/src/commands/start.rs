//! `wa-ctl start [ID] [--foreground]`: runs the supervisor in this process,
//! or starts it in the background and waits for its one-line report.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context as _, bail};
use wa_ctl_core::config::Config;
use wa_ctl_core::fsutil::ensure_private_dir;
use wa_ctl_core::lifecycle::Hold;
use wa_ctl_core::lock::Probe;
use wa_ctl_core::process;
use wa_ctl_core::status::rfc3339;

use super::{START_TIMEOUT, check_session, check_workers, out, probe};
use crate::exit;
use crate::foreground::{self, already_running};

pub(super) fn start(config: &Config, id: Option<String>, foreground: bool) -> anyhow::Result<u8> {
    if let Some(id) = &id {
        check_session(config, id)?;
    }
    check_workers(config, id.as_deref())?;

    if foreground {
        // The supervisor binary, when installed: a smaller process to keep
        // for months. Same pid, same arguments, same `argv[0]`.
        let api = wa_ctl_http::Http::wanted(config);
        if let Some(program) = process::supervisor_program(api) {
            let error = process::exec_supervisor(&program, &supervisor_args(config, &id));
            return Err(error).with_context(|| format!("running {}", program.display()));
        }
        tracing::warn!(
            "{} is not installed beside wa-ctl: running the supervisor in this process",
            if api {
                process::SUPERVISOR_API_PROGRAM
            } else {
                process::SUPERVISOR_PROGRAM
            }
        );
        return foreground::run(config, id, wa_ctl_http::Http::boxed);
    }
    if let Probe::Running { pid } = probe(config)? {
        return already_running(config, pid, id);
    }
    start_background(config, id)
}

/// Says which sessions a start without an ID left alone: those a previous
/// supervisor's decision holds (`stopped` by the policy, `logged_out`,
/// `failed`; issue #9), and any that ended so at once.
fn report_held(config: &Config) -> anyhow::Result<()> {
    let Ok(record) = super::status::live_record(config, None) else {
        return Ok(());
    };
    for s in record.sessions.iter().filter(|s| Hold::holds(s.state)) {
        let code = s
            .last_code
            .map(|c| format!(" after {c} ({})", c.meaning()))
            .unwrap_or_default();
        let at = s
            .last_at_ms
            .map(|ms| format!(" at {}", rfc3339(ms)))
            .unwrap_or_default();
        out(&format!(
            "left alone: session {} is {}{code}{at}; `wa-ctl start {}` starts it\n",
            s.id, s.state, s.id
        ))?;
    }
    Ok(())
}

/// How long a background supervisor may take to report ready: it does so
/// once every session has a worker (or failed to get one), which takes the
/// grace of any leftover it must end first, and longer with many sessions.
fn ready_timeout(config: &Config) -> std::time::Duration {
    let per_session = std::time::Duration::from_millis(5)
        .saturating_mul(u32::try_from(config.sessions.len()).unwrap_or(u32::MAX));
    START_TIMEOUT
        .saturating_add(config.supervisor.stop_timeout)
        .saturating_add(per_session)
}

/// The arguments a supervisor gets: `[--config PATH] start --foreground
/// [ID]`, the path absolute so that the census can match it.
fn supervisor_args(config: &Config, id: &Option<String>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(path) = config.source.path() {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        args.extend([OsString::from("--config"), path.into_os_string()]);
    }
    args.extend(["start", "--foreground"].map(OsString::from));
    if let Some(id) = id {
        args.push(OsString::from(id));
    }
    args
}

/// Starts a supervisor in the background (`wa-ctl-supervisor`, or
/// `wa-ctl start --foreground` when that is not installed) and waits for its
/// one-line report.
pub(super) fn start_background(config: &Config, id: Option<String>) -> anyhow::Result<u8> {
    ensure_private_dir(&config.supervisor.runtime_dir)?;
    ensure_private_dir(&config.supervisor.state_dir)?;
    let log_path = config.log_path();
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let args = supervisor_args(config, &id);
    let exe = match process::supervisor_program(wa_ctl_http::Http::wanted(config)) {
        Some(program) => program,
        None => std::env::current_exe().context("finding the wa-ctl binary")?,
    };
    let (mut child, ready) = process::spawn_background_supervisor(&exe, &args, log)
        .with_context(|| format!("starting {} in the background", exe.display()))?;

    // One line, then the pipe closes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(File::from(ready)).read_line(&mut line);
        let _ = tx.send(line);
    });
    let timeout = ready_timeout(config);
    let line = rx.recv_timeout(timeout).unwrap_or_default();
    let line = line.trim_end();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "ready" => {
            out(&format!("started (pid {rest})\n"))?;
            if id.is_none() {
                report_held(config)?;
            }
            Ok(exit::SUCCESS)
        }
        "running" => already_running(config, rest.parse().ok(), id),
        "error" => bail!("{rest} (log: {})", log_path.display()),
        _ => {
            let how = match child.try_wait() {
                Ok(Some(status)) => format!("the supervisor exited during start-up ({status})"),
                _ => format!(
                    "the supervisor did not report ready within {}s",
                    timeout.as_secs()
                ),
            };
            bail!("{how}; see {}", log_path.display())
        }
    }
}
