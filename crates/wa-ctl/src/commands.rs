//! The commands. Each loads the configuration, does its work through
//! `wa-ctl-core`, prints for a human (or JSON), and returns an exit code.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use wa_ctl_core::config::{Config, ConfigSource, Environment};
use wa_ctl_core::control::{self, ControlError, Request};
use wa_ctl_core::fsutil::ensure_private_dir;
use wa_ctl_core::lock::{Probe, SupervisorLock};
use wa_ctl_core::policy::DEFAULT_ACTION;
use wa_ctl_core::status::{StatusRecord, StatusReport};
use wa_ctl_core::{census, process, supervisor};

use crate::cli::{Cli, Command};
use crate::exit::{self, UsageError};

/// How long `wa-ctl start` waits for a background supervisor to report.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a stop may take beyond `stop_timeout` before the CLI gives up.
const STOP_MARGIN: Duration = Duration::from_secs(10);

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    // These two describe the command line itself: no configuration needed.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut command, "wa-ctl", &mut buf);
            out(&String::from_utf8_lossy(&buf))?;
            return Ok(exit::SUCCESS);
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut buf)?;
            out(&String::from_utf8_lossy(&buf))?;
            return Ok(exit::SUCCESS);
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref(), &Environment::from_process())?;
    match cli.command {
        Command::Start { id, foreground } => start(&config, id, foreground),
        Command::Stop { id, all } => stop(&config, id, all),
        Command::Restart { id } => restart(&config, id),
        Command::Status { id, json } => status(&config, id, json),
        Command::Logs { follow, lines } => logs(&config, follow, lines),
        Command::Login { id, phone } => login(&config, id, phone),
        Command::Check => check(&config),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}

/// Writes to stdout, treating a closed pipe (`wa-ctl status | head`) as done.
fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn check_session(config: &Config, id: &str) -> anyhow::Result<()> {
    if config.session(id).is_none() {
        let known: Vec<&str> = config.sessions.iter().map(|s| s.id.as_str()).collect();
        return Err(UsageError(format!(
            "no session `{id}` in the configuration ({}); configured: {}",
            config.source,
            known.join(", ")
        ))
        .into());
    }
    Ok(())
}

fn probe(config: &Config) -> anyhow::Result<Probe> {
    Ok(SupervisorLock::probe(&config.supervisor.runtime_dir)?)
}

/// Fails early, with the command it looked for, if a worker cannot be found.
fn check_workers(config: &Config, only: Option<&str>) -> anyhow::Result<()> {
    let base = config.source.path().and_then(Path::parent);
    for session in config
        .sessions
        .iter()
        .filter(|s| only.is_none_or(|id| s.id.as_str() == id))
    {
        process::resolve_program(&session.command[0], base)
            .with_context(|| format!("session {}", session.id))?;
    }
    Ok(())
}

fn start(config: &Config, id: Option<String>, foreground: bool) -> anyhow::Result<u8> {
    if let Some(id) = &id {
        check_session(config, id)?;
    }
    check_workers(config, id.as_deref())?;

    let only = id
        .as_ref()
        .map(|id| vec![id.parse().expect("checked against the configuration")]);
    if foreground {
        // SAFETY: called once, at start-up, before anything else owns descriptors.
        let ready = unsafe { process::take_ready_fd() };
        // The lock decides, not a probe: a probe could be stale by the time
        // we act on it.
        return match supervisor::run(config.clone(), supervisor::Options { only, ready })? {
            supervisor::Outcome::Stopped => Ok(exit::SUCCESS),
            supervisor::Outcome::AlreadyRunning(pid) => already_running(config, pid, id),
        };
    }
    if let Probe::Running { pid } = probe(config)? {
        return already_running(config, pid, id);
    }
    start_background(config, id)
}

/// A supervisor runs already: say so, or start the one session asked for.
fn already_running(config: &Config, pid: Option<u32>, id: Option<String>) -> anyhow::Result<u8> {
    match id {
        Some(id) => session_request(config, Request::Start { session: id }, START_TIMEOUT),
        None => {
            out(&format!("already running (pid {})\n", pid_text(pid)))?;
            Ok(exit::SUCCESS)
        }
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

/// Starts a fresh `wa-ctl start --foreground` in the background and waits
/// for its one-line report.
fn start_background(config: &Config, id: Option<String>) -> anyhow::Result<u8> {
    ensure_private_dir(&config.supervisor.runtime_dir)?;
    ensure_private_dir(&config.supervisor.state_dir)?;
    let log_path = config.log_path();
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut args: Vec<OsString> = Vec::new();
    if let Some(path) = config.source.path() {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        args.extend([OsString::from("--config"), path.into_os_string()]);
    }
    args.extend(["start", "--foreground"].map(OsString::from));
    if let Some(id) = &id {
        args.push(OsString::from(id));
    }
    let exe = std::env::current_exe().context("finding the wa-ctl binary")?;
    let (mut child, ready) = process::spawn_background_supervisor(&exe, &args, log)
        .with_context(|| format!("starting {} in the background", exe.display()))?;

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(File::from(ready)).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    let (word, rest) = line
        .trim_end()
        .split_once(' ')
        .unwrap_or((line.trim_end(), ""));
    match word {
        "ready" => {
            out(&format!("started (pid {rest})\n"))?;
            Ok(exit::SUCCESS)
        }
        "running" => already_running(config, rest.parse().ok(), id),
        "error" => bail!("{rest} (log: {})", log_path.display()),
        _ => {
            let how = match child.try_wait() {
                Ok(Some(status)) => format!("the supervisor exited during start-up ({status})"),
                _ => format!(
                    "the supervisor did not report ready within {}s",
                    START_TIMEOUT.as_secs()
                ),
            };
            bail!("{how}; see {}", log_path.display())
        }
    }
}

fn stop_timeout(config: &Config) -> Duration {
    config.supervisor.stop_timeout + STOP_MARGIN
}

/// Sends a per-session request and prints the answer.
fn session_request(config: &Config, request: Request, timeout: Duration) -> anyhow::Result<u8> {
    let response = control::request(&config.supervisor.runtime_dir, &request, timeout)?;
    if response.ok {
        out(&format!("{}\n", response.message))?;
        Ok(exit::SUCCESS)
    } else {
        bail!("{}", response.message)
    }
}

fn stop(config: &Config, id: Option<String>, all: bool) -> anyhow::Result<u8> {
    let code = stop_supervisor(config, id)?;
    if all {
        end_strays(config)?;
    }
    Ok(code)
}

/// `stop --all`: after the supervisor, the strays.
fn end_strays(config: &Config) -> anyhow::Result<()> {
    let census = census::take_exhaustive(config, &census::Owned::default());
    let ended = census::end_strays(&census.strays, config.supervisor.stop_timeout)?;
    for stray in &ended {
        out(&format!(
            "ended stray process {} ({})\n",
            stray.pid, stray.cmdline
        ))?;
    }
    for stray in census.strays.iter().filter(|s| !s.same_user) {
        eprintln!(
            "wa-ctl: warning: stray process {} ({}) belongs to another user: not signalled",
            stray.pid, stray.cmdline
        );
    }
    Ok(())
}

/// How long a stop waits for a supervisor that holds its lock to open its
/// control socket (it does so moments after taking the lock).
const SOCKET_GRACE: Duration = Duration::from_secs(3);

/// Sends `Shutdown`. A supervisor that has just taken its lock may not
/// listen yet: retry the connection for a moment rather than signal it.
fn shutdown_request(config: &Config) -> anyhow::Result<Result<control::Response, ControlError>> {
    let deadline = std::time::Instant::now() + SOCKET_GRACE;
    loop {
        let result = control::request(
            &config.supervisor.runtime_dir,
            &Request::Shutdown,
            stop_timeout(config),
        );
        let retry = matches!(result, Err(ControlError::Connect { .. }))
            && std::time::Instant::now() < deadline
            && matches!(probe(config)?, Probe::Running { .. });
        if !retry {
            return Ok(result);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop_supervisor(config: &Config, id: Option<String>) -> anyhow::Result<u8> {
    if let Some(id) = &id {
        check_session(config, id)?;
    }
    let pid = match probe(config)? {
        Probe::NotRunning => {
            // Nothing runs, but a supervisor killed with SIGKILL may have
            // left workers (or their children) behind: end them.
            let ended = supervisor::end_orphans(config)?;
            for leftover in &ended {
                out(&format!(
                    "ended leftover process {} ({})\n",
                    leftover.pid, leftover.cmdline
                ))?;
            }
            out("not running\n")?;
            return Ok(exit::SUCCESS);
        }
        Probe::Running { pid } => pid,
    };
    if let Some(id) = id {
        return session_request(config, Request::Stop { session: id }, stop_timeout(config));
    }
    let runtime_dir = &config.supervisor.runtime_dir;
    match shutdown_request(config)? {
        Ok(response) if !response.ok => bail!("{}", response.message),
        // No answer, or the connection reset: the supervisor died while we
        // asked. The lock tells when it is gone.
        Ok(_) | Err(ControlError::NoAnswer) => {}
        Err(ControlError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) => {}
        // The lock is held but the socket never appeared: the supervisor is
        // stuck in its first moments. Its pid, written under the lock it
        // holds now, is safe to signal.
        Err(ControlError::Connect { .. }) => {
            if let Probe::Running { pid: Some(pid) } = probe(config)? {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    if !SupervisorLock::wait_released(runtime_dir, stop_timeout(config))? {
        bail!(
            "the supervisor (pid {}) did not exit within {}s",
            pid_text(pid),
            stop_timeout(config).as_secs()
        );
    }
    // A supervisor that was killed rather than stopped may have left
    // processes behind: end them now that the lock is free.
    for leftover in supervisor::end_orphans(config)? {
        out(&format!(
            "ended leftover process {} ({})\n",
            leftover.pid, leftover.cmdline
        ))?;
    }
    out(&format!("stopped (pid {})\n", pid_text(pid)))?;
    Ok(exit::SUCCESS)
}

fn restart(config: &Config, id: Option<String>) -> anyhow::Result<u8> {
    match id {
        Some(id) => {
            check_session(config, &id)?;
            match probe(config)? {
                Probe::Running { .. } => {
                    let timeout = stop_timeout(config) + START_TIMEOUT;
                    session_request(config, Request::Restart { session: id }, timeout)
                }
                Probe::NotRunning => start(config, Some(id), false),
            }
        }
        None => {
            stop(config, None, false)?;
            start(config, None, false)
        }
    }
}

fn status(config: &Config, id: Option<String>, json: bool) -> anyhow::Result<u8> {
    if let Some(id) = &id {
        check_session(config, id)?;
    }
    let probe = probe(config)?;
    let record = match probe {
        Probe::Running { .. } => StatusRecord::read(&config.supervisor.runtime_dir),
        Probe::NotRunning => None,
    };
    let mut report = StatusReport::build(config, probe, record, SystemTime::now());
    let owned = census::Owned {
        supervisor: report.pid,
        workers: report
            .sessions
            .iter()
            .filter_map(|s| s.worker_pid)
            .collect(),
    };
    report.processes = census::take(config, &owned);
    if let Some(id) = &id {
        report.sessions.retain(|s| &s.id == id);
    }
    if json {
        out(&format!("{}\n", serde_json::to_string(&report)?))?;
    } else {
        out(&report.render_text())?;
    }
    Ok(if report.running {
        exit::SUCCESS
    } else {
        exit::NOT_RUNNING
    })
}

/// Checks an E.164 number and returns its digits.
fn phone_digits(phone: &str) -> anyhow::Result<String> {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    let digits: String = digits.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(7..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(UsageError(format!(
            "`{phone}` is not a phone number in international (E.164) format, e.g. +15551234567"
        ))
        .into());
    }
    Ok(digits)
}

/// Renders a QR payload for a terminal, two modules per character cell.
pub fn render_qr(payload: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(payload.as_bytes()).context("encoding the QR code")?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

fn login(config: &Config, id: Option<String>, phone: Option<String>) -> anyhow::Result<u8> {
    let id = match id {
        Some(id) => {
            check_session(config, &id)?;
            id
        }
        None if config.sessions.len() == 1 => config.sessions[0].id.to_string(),
        None => {
            let known: Vec<&str> = config.sessions.iter().map(|s| s.id.as_str()).collect();
            return Err(
                UsageError(format!("which session? name one of: {}", known.join(", "))).into(),
            );
        }
    };
    let phone = phone.as_deref().map(phone_digits).transpose()?;
    if probe(config)? == Probe::NotRunning {
        check_workers(config, None)?;
        start_background(config, None)?;
    }
    let mut shown_qr: Option<String> = None;
    let mut shown_code: Option<String> = None;
    let mut shown_state = String::new();
    let last = control::login(
        &config.supervisor.runtime_dir,
        &id,
        phone.as_deref(),
        |update| {
            let mut text = String::new();
            if let Some(qr) = update
                .qr
                .as_ref()
                .filter(|qr| shown_qr.as_ref() != Some(*qr))
            {
                let art = render_qr(qr).map_err(std::io::Error::other)?;
                text.push_str(&format!(
                "\n{art}\nScan with WhatsApp on your phone: Settings > Linked devices > Link a device.\n(session {id}; a new code replaces this one every few seconds)\n"
            ));
                shown_qr = Some(qr.clone());
            }
            if let Some(code) = update
                .pair_code
                .as_ref()
                .filter(|c| shown_code.as_ref() != Some(*c))
            {
                text.push_str(&format!(
                "\nPair code for session {id}: {code}\nOn your phone: Settings > Linked devices > Link a device > Link with phone number instead.\n"
            ));
                shown_code = Some(code.clone());
            }
            // Progress: every state change but the last one (the outcome is
            // printed below) goes to stderr, with the why of a close.
            if !update.done && update.state != shown_state && update.state != "pairing" {
                let why = match (&update.last_code, &update.last_reason) {
                    (Some(code), Some(reason)) => format!(" (last close {code}: {reason})"),
                    (Some(code), None) => format!(" (last close {code})"),
                    _ => String::new(),
                };
                eprintln!("wa-ctl: session {id}: {}{why}", update.state);
            }
            shown_state.clone_from(&update.state);
            out(&text).map_err(std::io::Error::other)
        },
    )?;
    let Some(last) = last else {
        bail!("the supervisor closed the login stream")
    };
    if let Some(error) = last.error {
        bail!("{error}");
    }
    match last.state.as_str() {
        "connected" => {
            out(&format!(
                "session {id}: connected{}\n",
                last.jid.map(|j| format!(" as {j}")).unwrap_or_default()
            ))?;
            Ok(exit::SUCCESS)
        }
        state => {
            let why = last.last_reason.or(last.last_code).unwrap_or_default();
            let hint = match state {
                "logged_out" => "; run `wa-ctl login` again to pair",
                "locked" => "; another supervisor runs this session",
                _ => "; see `wa-ctl status` and `wa-ctl logs`",
            };
            bail!(
                "session {id}: {state}{}{hint}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                }
            )
        }
    }
}

fn logs(config: &Config, follow: bool, lines: usize) -> anyhow::Result<u8> {
    let under_journal = matches!(probe(config)?, Probe::Running { .. })
        && StatusRecord::read(&config.supervisor.runtime_dir).is_some_and(|r| r.journal);
    if under_journal {
        out(
            "wa-ctl runs under systemd and logs to the journal: use `journalctl -u wa-ctl` (add -f to follow)\n",
        )?;
        return Ok(exit::SUCCESS);
    }
    let path = config.log_path();
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "no log at {}: the supervisor has not run in the background with this configuration",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    // Watch before reading, so that no line written in between is missed.
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = if follow {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).context("starting inotify")?;
        inotify
            .add_watch(&path, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ATTRIB)
            .with_context(|| format!("watching {}", path.display()))?;
        Some(inotify)
    } else {
        None
    };
    let start = tail_offset(&mut file, lines)?;
    file.seek(SeekFrom::Start(start))?;
    let mut position = start + copy_out(&mut file)?;
    // Follow with inotify: woken by the kernel when the file changes.
    let Some(inotify) = inotify else {
        return Ok(exit::SUCCESS);
    };
    loop {
        inotify.read_events().context("reading inotify events")?;
        let len = file.metadata()?.len();
        if len < position {
            // Truncated: start over from the top.
            file.seek(SeekFrom::Start(0))?;
            position = 0;
        }
        position += copy_out(&mut file)?;
    }
}

/// Copies the rest of `file` to stdout; returns how many bytes.
fn copy_out(file: &mut File) -> anyhow::Result<u64> {
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    out(&String::from_utf8_lossy(&buf))?;
    Ok(buf.len() as u64)
}

/// The offset where the last `lines` lines of `file` begin.
fn tail_offset(file: &mut File, lines: usize) -> anyhow::Result<u64> {
    let len = file.metadata()?.len();
    if lines == 0 || len == 0 {
        return Ok(if lines == 0 { len } else { 0 });
    }
    // A final newline ends the last line; it does not start a new one.
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let mut end = if last[0] == b'\n' { len - 1 } else { len };
    let mut seen = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let chunk = (end as usize).min(buf.len());
        let start = end - chunk as u64;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..chunk])?;
        for i in (0..chunk).rev() {
            if buf[i] == b'\n' {
                seen += 1;
                if seen == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

fn check(config: &Config) -> anyhow::Result<u8> {
    let mut text = format!("# configuration: {}\n", config.source);
    if config.source == ConfigSource::Embedded {
        text.push_str("# (no config file found; these are the embedded defaults)\n");
    }
    text.push('\n');
    text.push_str(&config.to_toml());
    text.push_str("\n# policy: close code -> action\n");
    for (key, action) in &config.policy.codes {
        text.push_str(&format!(
            "#   {:<6} {:<10} {}\n",
            key.to_string(),
            action.as_str(),
            key.meaning()
        ));
    }
    text.push_str(&format!(
        "#   {:<6} {:<10} every other code\n",
        "other",
        DEFAULT_ACTION.as_str()
    ));
    out(&text)?;
    let base = config.source.path().and_then(Path::parent);
    // A missing worker is not a configuration error (the file is valid), but
    // `start` would fail on it, so say so loudly.
    for session in &config.sessions {
        match process::resolve_program(&session.command[0], base) {
            Ok(path) => out(&format!(
                "# session {}: worker {}\n",
                session.id,
                path.display()
            ))?,
            Err(e) => eprintln!("wa-ctl: warning: session {}: {e}", session.id),
        }
    }
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(text: &str, n: usize) -> usize {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), text).unwrap();
        let mut f = File::open(tmp.path()).unwrap();
        tail_offset(&mut f, n).unwrap() as usize
    }

    #[test]
    fn phones() {
        assert_eq!(phone_digits("+15551234567").unwrap(), "15551234567");
        assert_eq!(phone_digits("44 20 7946-0958").unwrap(), "442079460958");
        for bad in ["", "+", "abc", "+0123456789", "+1234", "+1234567890123456"] {
            assert!(phone_digits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qr_renders() {
        let art = render_qr("2@abc,def,ghi").unwrap();
        assert!(art.lines().count() > 10);
        assert!(art.contains('█') || art.contains('▀') || art.contains('▄'));
    }

    #[test]
    fn tail() {
        assert_eq!(offset("a\nb\nc\n", 2), 2);
        assert_eq!(offset("a\nb\nc\n", 1), 4);
        assert_eq!(offset("a\nb\nc\n", 5), 0);
        assert_eq!(offset("a\nb\nc", 1), 4);
        assert_eq!(offset("a\nb\nc\n", 0), 6);
        assert_eq!(offset("", 3), 0);
    }
}
