//! The live status: the record the supervisor serves over its control
//! socket (and writes to `runtime_dir/status.json`), and the report
//! `wa-ctl status` makes of it.
//!
//! `wa-ctl status` asks the running supervisor, which answers from memory.
//! The file is a copy the supervisor writes at most once a second, off its
//! event loop, and once more before it exits; it is read only when the
//! supervisor does not answer. Either is trusted only while the supervisor
//! lock is held: after a crash the record is stale and the report says
//! "not running".

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::census::Census;
use crate::config::Config;
use crate::lifecycle::{Hold, PairingCode, State};
use crate::lock::Probe;
use crate::policy::{Action, CloseKey, close_key_json};

/// The status file's name inside `runtime_dir`.
pub const STATUS_FILE: &str = "status.json";

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the supervisor writes to `status.json` (mode 0600: it may hold a
/// QR payload). Internal: the public shape is [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub pid: u32,
    pub started_at_ms: u64,
    /// When the supervisor made this record.
    #[serde(default)]
    pub made_at_ms: u64,
    /// The supervisor's CPU time so far (user and system, all threads), in
    /// microseconds: what the benchmarks divide by the restarts.
    #[serde(default)]
    pub cpu_us: u64,
    /// The supervisor logs to the journal (it runs under systemd).
    #[serde(default)]
    pub journal: bool,
    pub sessions: Vec<SessionRecord>,
}

/// One session in the status file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub state: State,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    #[serde(with = "close_key_json")]
    pub last_code: Option<CloseKey>,
    pub last_reason: Option<String>,
    pub last_action: Option<Action>,
    /// When the last worker ended.
    #[serde(default)]
    pub last_at_ms: Option<u64>,
    pub next_retry_at_ms: Option<u64>,
    pub worker_started_at_ms: Option<u64>,
    pub connected_at_ms: Option<u64>,
    pub jid: Option<String>,
    pub pairing: Option<PairingCode>,
    /// The owner's node across hosts (issue #10), when known.
    #[serde(default)]
    pub owner: Option<String>,
    /// The owner key's create_revision: the fencing token.
    #[serde(default)]
    pub epoch: Option<i64>,
}

impl SessionRecord {
    /// A session in `state` with nothing else known: no worker, no close,
    /// no owner (what a surface starts from, and what tests build on).
    pub fn new(id: impl Into<String>, state: State) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            state,
            worker_pid: None,
            restarts: 0,
            last_code: None,
            last_reason: None,
            last_action: None,
            last_at_ms: None,
            next_retry_at_ms: None,
            worker_started_at_ms: None,
            connected_at_ms: None,
            jid: None,
            pairing: None,
            owner: None,
            epoch: None,
        }
    }
}

impl StatusRecord {
    /// Reads the status file; `None` if it is missing or unreadable, which a
    /// reader treats like a supervisor that has not written it yet.
    pub fn read(runtime_dir: &Path) -> Option<StatusRecord> {
        let text = std::fs::read(runtime_dir.join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// `wa-ctl status --json`: a public contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub running: bool,
    pub pid: Option<u32>,
    pub sessions: Vec<SessionReport>,
    /// The process census: supervisors, workers and strays, counted from
    /// the process table.
    #[serde(default)]
    pub processes: Census,
    /// Extension (issue #9): set when the state cannot be known (the
    /// supervisor holds the lock and does not answer); `status` exits 4.
    #[serde(default)]
    pub error: Option<String>,
    /// Extension (issue #9): the running supervisor's configuration,
    /// compared with this CLI's; `null` when none runs.
    #[serde(default)]
    pub config: Option<ConfigMatch>,
}

/// One session of `wa-ctl status --json`. The first eight fields are the
/// documented contract; the rest are documented extensions. The HTTP API
/// (issue #11) serves the same objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionReport {
    pub id: String,
    pub state: State,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    /// The last close code: a number, or `"crash"` / `"exit"`.
    #[serde(with = "close_key_json")]
    #[schema(schema_with = close_key_json::schema)]
    pub last_code: Option<CloseKey>,
    pub last_action: Option<Action>,
    pub next_retry_s: Option<f64>,
    pub uptime_s: Option<f64>,
    /// Extension: what `last_code` means.
    pub last_meaning: Option<String>,
    /// Extension: the worker's free-text reason for its last close.
    pub last_reason: Option<String>,
    /// Extension: the account, once connected.
    pub jid: Option<String>,
    /// Extension (issue #9): when the last worker ended, RFC 3339 in UTC.
    /// Kept across supervisors for a held session.
    #[serde(default)]
    pub last_at: Option<String>,
    /// Extension (issue #10): the node that owns the session across hosts
    /// (this one, or the one a `standby` session waits for); `null` without
    /// `[cluster]` or when unknown.
    #[serde(default)]
    pub owner: Option<String>,
    /// Extension (issue #10): the owner's epoch, the fencing token its
    /// worker got as `WA_CTL_FENCING_TOKEN`; `null` when unknown.
    #[serde(default)]
    pub epoch: Option<i64>,
}

/// A Unix time in milliseconds as RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl SessionReport {
    /// The public view of one session of a trusted record, at `now_ms`.
    pub fn from_record(r: SessionRecord, now_ms: u64) -> SessionReport {
        SessionReport {
            id: r.id,
            state: r.state,
            worker_pid: r.worker_pid,
            restarts: r.restarts,
            last_code: r.last_code,
            last_action: r.last_action,
            next_retry_s: r
                .next_retry_at_ms
                .map(|t| seconds(t.saturating_sub(now_ms))),
            uptime_s: r
                .worker_started_at_ms
                .map(|t| seconds(now_ms.saturating_sub(t))),
            last_meaning: r.last_code.map(|k| k.meaning().to_owned()),
            last_reason: r.last_reason,
            jid: r.jid,
            last_at: r.last_at_ms.map(rfc3339),
            owner: r.owner,
            epoch: r.epoch,
        }
    }

    /// A configured session when no supervisor runs: `stopped`, or the
    /// state a hold on disk keeps it in, with its last close.
    fn not_running(id: String, hold: Option<Hold>) -> SessionReport {
        let hold = hold.unwrap_or(Hold {
            state: State::Stopped,
            last_code: None,
            last_reason: None,
            last_action: None,
            at_ms: None,
        });
        SessionReport {
            id,
            state: hold.state,
            worker_pid: None,
            restarts: 0,
            last_code: hold.last_code,
            last_action: hold.last_action,
            next_retry_s: None,
            uptime_s: None,
            last_meaning: hold.last_code.map(|k| k.meaning().to_owned()),
            last_reason: hold.last_reason,
            jid: None,
            last_at: hold.at_ms.map(rfc3339),
            owner: None,
            epoch: None,
        }
    }
}

/// Whether the running supervisor answered the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It answered (or none runs).
    Live,
    /// It holds the lock but did not answer; why.
    NoAnswer(String),
}

/// `status --json`'s `"config"` (an extension, issue #9): the configuration
/// the running supervisor runs, compared with the one this CLI read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMatch {
    /// The supervisor's configuration file; `null` for the embedded
    /// defaults, or when it does not say.
    pub path: Option<PathBuf>,
    /// It is the same file as this CLI's.
    pub same_file: bool,
    /// Its text is the same as this CLI's (false when it does not say).
    pub same_content: bool,
}

impl ConfigMatch {
    pub fn same(path: Option<PathBuf>) -> Self {
        ConfigMatch {
            path,
            same_file: true,
            same_content: true,
        }
    }
    pub fn changed(path: Option<PathBuf>) -> Self {
        ConfigMatch {
            path,
            same_file: true,
            same_content: false,
        }
    }
    pub fn foreign(path: Option<PathBuf>) -> Self {
        ConfigMatch {
            path,
            same_file: false,
            same_content: false,
        }
    }
    pub fn unknown() -> Self {
        ConfigMatch {
            path: None,
            same_file: false,
            same_content: false,
        }
    }
}

impl StatusReport {
    /// Builds the report from what the lock, the supervisor's answer and
    /// the record say. It never invents a state (issue #9):
    ///
    /// - a supervisor that answered: the sessions it runs, in its order;
    /// - none running: the configured sessions, `stopped`, or as a hold
    ///   left on disk keeps them;
    /// - one that holds the lock and did not answer: `error` says so, and
    ///   the sessions are those of its status file if that is whole and its
    ///   own, or none.
    pub fn build(
        config: &Config,
        probe: Probe,
        record: Option<StatusRecord>,
        answer: Answer,
        now: SystemTime,
    ) -> StatusReport {
        let now_ms = unix_ms(now);
        let pid = match probe {
            Probe::Running { pid } => pid.or(record.as_ref().map(|r| r.pid)),
            Probe::NotRunning => None,
        };
        // The record tells the truth only if its writer holds the lock now.
        let record = record.filter(|r| probe != Probe::NotRunning && pid == Some(r.pid));
        let mut error = None;
        let sessions = match (probe, record) {
            (Probe::NotRunning, _) => config
                .sessions
                .iter()
                .map(|s| {
                    let hold = crate::supervisor::read_hold(&config.session_dir(&s.id));
                    SessionReport::not_running(s.id.to_string(), hold)
                })
                .collect(),
            (Probe::Running { .. }, Some(record)) => {
                if let Answer::NoAnswer(why) = &answer {
                    error = Some(format!(
                        "{why}; the sessions shown are from {} written {:.1}s ago, not live",
                        config.supervisor.runtime_dir.join(STATUS_FILE).display(),
                        seconds(now_ms.saturating_sub(record.made_at_ms))
                    ));
                }
                record
                    .sessions
                    .into_iter()
                    .map(|r| SessionReport::from_record(r, now_ms))
                    .collect()
            }
            (Probe::Running { .. }, None) => {
                let why = match &answer {
                    Answer::NoAnswer(why) => why.clone(),
                    Answer::Live => "the supervisor gave no status".to_owned(),
                };
                error = Some(format!(
                    "{why}; its status file {} is missing, unreadable or not its own: no session can be shown",
                    config.supervisor.runtime_dir.join(STATUS_FILE).display()
                ));
                Vec::new()
            }
        };
        StatusReport {
            running: probe != Probe::NotRunning,
            pid,
            sessions,
            processes: Census::default(),
            error,
            config: None,
        }
    }

    /// The report for the human reader.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        match (self.running, self.pid) {
            (true, Some(pid)) => out.push_str(&format!("wa-ctl: running (pid {pid})\n")),
            (true, None) => out.push_str("wa-ctl: running\n"),
            (false, _) => out.push_str("wa-ctl: not running\n"),
        }
        if let Some(error) = &self.error {
            out.push_str(&format!("UNKNOWN: {error}\n"));
        }
        match &self.config {
            Some(c) if !c.same_file => out.push_str(&format!(
                "NOTE: the running supervisor runs another configuration ({}): \
                 this file's sessions are not what it runs\n",
                c.path
                    .as_ref()
                    .map_or_else(|| "not said".to_owned(), |p| p.display().to_string())
            )),
            Some(c) if !c.same_content => out.push_str(
                "NOTE: the configuration file changed since the supervisor read it: \
                 `wa-ctl restart` applies the change\n",
            ),
            _ => {}
        }
        // OWNER only with `[cluster]` (issue #10): the node that runs the
        // session, this one or the one a standby waits for.
        let header = [
            "SESSION",
            "STATE",
            "OWNER",
            "PID",
            "UPTIME",
            "RESTARTS",
            "LAST CLOSE",
            "ACTION",
            "NEXT RETRY",
        ];
        let mut rows: Vec<[String; 9]> = vec![header.map(str::to_owned)];
        let dash = || "-".to_owned();
        for s in &self.sessions {
            let last = match (&s.last_code, &s.last_meaning) {
                (Some(c), Some(m)) => format!("{c} ({m})"),
                (Some(c), None) => c.to_string(),
                _ => dash(),
            };
            rows.push([
                s.id.clone(),
                s.state.to_string(),
                // Another node's name is its own text: escaped.
                s.owner
                    .as_deref()
                    .map_or_else(dash, |o| crate::text::escape(o).into_owned()),
                s.worker_pid.map_or_else(dash, |p| p.to_string()),
                s.uptime_s.map_or_else(dash, human_seconds),
                s.restarts.to_string(),
                last,
                s.last_action.map_or_else(dash, |a| a.to_string()),
                s.next_retry_s.map_or_else(dash, human_seconds),
            ]);
        }
        let table = if self.sessions.iter().any(|s| s.owner.is_some()) {
            render_table(&rows)
        } else {
            let without_owner: Vec<[String; 8]> = rows
                .iter()
                .map(|r| std::array::from_fn(|i| r[if i < 2 { i } else { i + 1 }].clone()))
                .collect();
            render_table(&without_owner)
        };
        let p = &self.processes;
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let census_line = format!(
            "processes: {}, {}, {}\n",
            plural(p.supervisors, "supervisor", "supervisors"),
            plural(p.workers, "worker", "workers"),
            plural(p.strays.len(), "stray", "strays"),
        );
        out.push_str(&table);
        out.push_str(&census_line);
        if !p.strays.is_empty() {
            out.push_str(&format!(
                "\nWARNING: {} running the worker command outside this supervisor.\n\
                 Two connections with the same credentials knock each other off (440 conflict loop).\n",
                plural(p.strays.len(), "process is", "processes are"),
            ));
            for stray in &p.strays {
                // A command line is anyone's text: never raw to a terminal.
                out.push_str(&format!(
                    "  stray pid {}: {}\n",
                    stray.pid,
                    crate::text::escape(&stray.cmdline)
                ));
            }
            out.push_str(
                "End them with `wa-ctl stop --all` (this user's only), then `wa-ctl start`.\n",
            );
        }
        out
    }
}

/// Rows as left-aligned columns, two spaces apart, one line each: the
/// tables of `wa-ctl status` and `status --cluster`.
pub fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn human_seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Environment};

    fn config() -> Config {
        let env = Environment::new(false, []);
        Config::parse(
            "[supervisor]\nruntime_dir=\"/r\"\nstate_dir=\"/s\"\n[[session]]\nid=\"a\"\n[[session]]\nid=\"b\"\n",
            ConfigSource::Embedded,
            &env,
        )
        .unwrap()
    }

    fn record(pid: u32) -> StatusRecord {
        StatusRecord {
            pid,
            started_at_ms: 1_000,
            made_at_ms: 9_000,
            cpu_us: 0,
            journal: false,
            sessions: vec![SessionRecord {
                restarts: 2,
                last_code: Some(CloseKey::Code(408)),
                last_action: Some(Action::Reconnect),
                next_retry_at_ms: Some(12_500),
                ..SessionRecord::new("a", State::Backoff)
            }],
        }
    }

    #[test]
    fn live_record() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000);
        let r = StatusReport::build(
            &config(),
            Probe::Running { pid: Some(7) },
            Some(record(7)),
            Answer::Live,
            now,
        );
        assert!(r.running);
        assert_eq!(r.pid, Some(7));
        assert_eq!(r.sessions[0].state, State::Backoff);
        assert_eq!(r.sessions[0].last_code, Some(CloseKey::Code(408)));
        assert_eq!(r.sessions[0].next_retry_s, Some(2.5));
        assert_eq!(
            r.sessions.len(),
            1,
            "what the supervisor runs, not what the file on disk says now"
        );
        let text = r.render_text();
        assert!(text.contains("408 (timed out / connection lost)"), "{text}");
    }

    #[test]
    fn stale_record_is_not_trusted() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000);
        let r = StatusReport::build(
            &config(),
            Probe::NotRunning,
            Some(record(7)),
            Answer::Live,
            now,
        );
        assert!(!r.running);
        assert_eq!(r.pid, None);
        assert!(
            r.sessions
                .iter()
                .all(|s| s.state == State::Stopped && s.worker_pid.is_none())
        );
        // A record written by another pid than the lock holder is stale too.
        let r = StatusReport::build(
            &config(),
            Probe::Running { pid: Some(8) },
            Some(record(7)),
            Answer::Live,
            now,
        );
        // Issue #9: never a made-up `starting`; the state is unknown.
        assert!(r.sessions.is_empty(), "{:?}", r.sessions);
        assert!(r.error.is_some());
    }

    #[test]
    fn a_supervisor_that_does_not_answer_is_unknown() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000);
        // Its own whole file is shown, marked as not live.
        let r = StatusReport::build(
            &config(),
            Probe::Running { pid: Some(7) },
            Some(record(7)),
            Answer::NoAnswer("no answer".into()),
            now,
        );
        let error = r.error.clone().unwrap();
        assert!(
            error.starts_with("no answer; the sessions shown are from"),
            "{error}"
        );
        assert!(error.contains("written 1.0s ago"), "{error}");
        assert_eq!(r.sessions.len(), 1);
        assert!(r.render_text().contains("UNKNOWN: no answer"));
        // Without a file, nothing is shown.
        let r = StatusReport::build(
            &config(),
            Probe::Running { pid: Some(7) },
            None,
            Answer::NoAnswer("no answer".into()),
            now,
        );
        assert!(r.sessions.is_empty());
        assert!(r.error.unwrap().contains("no session can be shown"));
    }

    #[test]
    fn json_shape() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000);
        let r = StatusReport::build(
            &config(),
            Probe::Running { pid: Some(7) },
            Some(record(7)),
            Answer::Live,
            now,
        );
        let v = serde_json::to_value(&r).unwrap();
        for key in ["running", "pid", "sessions"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        // The JSON strings of the contract, exactly.
        assert_eq!(v["sessions"][0]["state"], "backoff");
        assert_eq!(v["sessions"][0]["last_code"], 408);
        assert_eq!(v["sessions"][0]["last_action"], "reconnect");
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
            assert!(v["sessions"][0].get(key).is_some(), "{key}");
        }
    }
}
