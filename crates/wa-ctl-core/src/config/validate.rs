//! From the file as written to the effective values: defaults applied,
//! sessions merged over `[worker]`, and every check that serde cannot make
//! alone (ranges, cross-key rules, commands, environment, unique ids).
//!
//! A failed check returns the span of the offending value and its key; the
//! caller turns that into a file:line:key error.

use std::collections::BTreeMap;
use std::time::Duration;

use super::SessionConfig;
use super::cluster::{self, Backend, ClusterConfig};
use super::error::SpannedError;
use super::http::{self as http_cfg, ChangeKind, HttpConfig, Listen, WebhookConfig};
use super::limits::{self, DurationLimit};
use super::raw::{
    HumanDuration, RawCluster, RawHttp, RawPolicy, RawSession, RawWebhook, RawWorker,
};
use crate::policy::Policy;
use crate::session_id::SessionId;

/// A duration key's value, checked against its range (see `limits`), or
/// `default` when the file does not set it.
pub(super) fn duration(
    raw: Option<&toml::Spanned<HumanDuration>>,
    limit: &DurationLimit,
    default: Duration,
) -> Result<Duration, SpannedError> {
    match raw {
        None => Ok(default),
        Some(d) => limit
            .check(d.get_ref().0)
            .map_err(|message| (d.span(), limit.key, message)),
    }
}

/// The effective policy: the defaults with the file's values over them.
pub(super) fn policy(raw: RawPolicy) -> Result<Policy, SpannedError> {
    let mut p = Policy::default();
    p.initial_backoff = duration(
        raw.initial_backoff.as_ref(),
        &limits::INITIAL_BACKOFF,
        p.initial_backoff,
    )?;
    p.max_backoff = duration(
        raw.max_backoff.as_ref(),
        &limits::MAX_BACKOFF,
        p.max_backoff,
    )?;
    if p.initial_backoff > p.max_backoff {
        let span = raw
            .initial_backoff
            .as_ref()
            .or(raw.max_backoff.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err((
            span,
            "policy.initial_backoff",
            format!(
                "initial_backoff ({}) is larger than max_backoff ({})",
                humantime::format_duration(p.initial_backoff),
                humantime::format_duration(p.max_backoff)
            ),
        ));
    }
    if let Some(m) = raw.backoff_multiplier {
        let v = *m.get_ref();
        if !(v.is_finite() && (1.0..=1000.0).contains(&v)) {
            return Err((
                m.span(),
                "policy.backoff_multiplier",
                format!("{v} is out of range: use a number from 1.0 to 1000.0"),
            ));
        }
        p.backoff_multiplier = v;
    }
    if let Some(j) = raw.jitter {
        let v = *j.get_ref();
        if !(v.is_finite() && (0.0..1.0).contains(&v)) {
            return Err((
                j.span(),
                "policy.jitter",
                format!("{v} is out of range: use a fraction from 0.0 up to (not including) 1.0"),
            ));
        }
        p.jitter = v;
    }
    p.reset_after = duration(
        raw.reset_after.as_ref(),
        &limits::RESET_AFTER,
        p.reset_after,
    )?;
    if let Some(n) = raw.max_restarts {
        p.max_restarts = n;
    }
    p.restart_window = duration(
        raw.restart_window.as_ref(),
        &limits::RESTART_WINDOW,
        p.restart_window,
    )?;
    p.start_timeout = duration(
        raw.start_timeout.as_ref(),
        &limits::START_TIMEOUT,
        p.start_timeout,
    )?;
    p.heartbeat_timeout = duration(
        raw.heartbeat_timeout.as_ref(),
        &limits::HEARTBEAT_TIMEOUT,
        p.heartbeat_timeout,
    )?;
    if let Some(codes) = raw.codes {
        p.codes.extend(codes);
    }
    Ok(p)
}

/// The effective sessions: each `[[session]]` (or the one default session)
/// with its command and environment merged over `[worker]`.
pub(super) fn sessions(
    worker: RawWorker,
    raw_sessions: Option<Vec<RawSession>>,
) -> Result<Vec<SessionConfig>, SpannedError> {
    let worker_command = match worker.command {
        Some(c) => {
            check_command(c.get_ref()).map_err(|m| (c.span(), "worker.command", m))?;
            c.into_inner()
        }
        None => vec!["wa-worker".to_owned()],
    };
    let worker_env = match worker.env {
        Some(env) => {
            check_env(env.get_ref()).map_err(|m| (env.span(), "worker.env", m))?;
            env.into_inner()
        }
        None => BTreeMap::new(),
    };

    let raw_sessions = raw_sessions.unwrap_or_else(|| vec![RawSession::default()]);
    let mut sessions: Vec<SessionConfig> = Vec::with_capacity(raw_sessions.len());
    // Ids seen so far: a set, so that 10,000 sessions are checked in O(n).
    let mut seen: std::collections::HashSet<SessionId> =
        std::collections::HashSet::with_capacity(raw_sessions.len());
    for s in raw_sessions {
        let id = match s.id {
            Some(id) => {
                if !seen.insert(id.get_ref().clone()) {
                    return Err((
                        id.span(),
                        "session.id",
                        format!("session id `{}` is used twice", id.get_ref()),
                    ));
                }
                id.into_inner()
            }
            None => {
                let default = SessionId::default_id();
                if !seen.insert(default.clone()) {
                    // No id was written, so there is no span to point at:
                    // the top of the file.
                    return Err((
                        0..0,
                        "session.id",
                        "more than one [[session]] has no id (the default id is `default`)"
                            .to_owned(),
                    ));
                }
                default
            }
        };
        let command = match s.command {
            Some(c) => {
                check_command(c.get_ref()).map_err(|m| (c.span(), "session.command", m))?;
                c.into_inner()
            }
            None => worker_command.clone(),
        };
        let mut env = worker_env.clone();
        if let Some(session_env) = s.env {
            check_env(session_env.get_ref()).map_err(|m| (session_env.span(), "session.env", m))?;
            env.extend(session_env.into_inner());
        }
        sessions.push(SessionConfig { id, command, env });
    }
    Ok(sessions)
}

/// The stop timeout, 10 seconds unless the file says otherwise.
pub(super) fn stop_timeout(
    raw: Option<&toml::Spanned<HumanDuration>>,
) -> Result<Duration, SpannedError> {
    duration(raw, &limits::STOP_TIMEOUT, DEFAULT_STOP_TIMEOUT)
}

/// `[supervisor] stop_timeout` when unset (and no `[cluster]` asks for less).
pub(super) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn check_command(command: &[String]) -> Result<(), String> {
    match command.first() {
        None => {
            Err("the command is empty: give at least the program, e.g. [\"wa-worker\"]".to_owned())
        }
        Some(p) if p.is_empty() => Err("the program name is empty".to_owned()),
        Some(_) if command.iter().any(|a| a.contains('\0')) => {
            Err("an argument contains a NUL byte".to_owned())
        }
        Some(_) => Ok(()),
    }
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("invalid environment variable name `{k}`"));
        }
        if v.contains('\0') {
            return Err(format!("the value of `{k}` contains a NUL byte"));
        }
        if k.starts_with("WA_CTL_") {
            return Err(format!(
                "`{k}` is reserved: wa-ctl sets the WA_CTL_* variables itself"
            ));
        }
    }
    Ok(())
}

/// The effective `[cluster]`, if the file has one: defaults applied, every
/// value checked, and the timeline's relation to `stop_timeout` (see
/// `config::cluster`).
/// `[cluster]`, and the `stop_timeout` to use with it: an unset
/// `stop_timeout` (`None`) defaults to what fits the lease
/// ([`cluster::fitting_stop_timeout`]); a set one must fit.
pub(super) fn cluster(
    raw: Option<toml::Spanned<RawCluster>>,
    stop_timeout: Option<Duration>,
) -> Result<Option<(ClusterConfig, Duration)>, SpannedError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let table_span = raw.span();
    let raw = raw.into_inner();
    let backend = match &raw.backend {
        None => Backend::Etcd,
        Some(b) if b.get_ref() == "etcd" => Backend::Etcd,
        Some(b) => {
            return Err((
                b.span(),
                "cluster.backend",
                format!(
                    "unknown backend `{}`: the one backend is \"etcd\"",
                    b.get_ref()
                ),
            ));
        }
    };
    let endpoints = match raw.endpoints {
        None => vec!["http://127.0.0.1:2379".to_owned()],
        Some(e) => {
            let span = e.span();
            let list = e.into_inner();
            if list.is_empty() {
                return Err((
                    span,
                    "cluster.endpoints",
                    "name at least one endpoint".to_owned(),
                ));
            }
            for endpoint in &list {
                cluster::check_endpoint(endpoint)
                    .map_err(|m| (span.clone(), "cluster.endpoints", m))?;
            }
            list
        }
    };
    let prefix = match &raw.prefix {
        None => "/wa-ctl".to_owned(),
        Some(p) => {
            cluster::check_prefix(p.get_ref()).map_err(|m| (p.span(), "cluster.prefix", m))?
        }
    };
    let node = match &raw.node {
        None => cluster::default_node().map_err(|m| (table_span.clone(), "cluster.node", m))?,
        Some(n) => {
            cluster::check_node(n.get_ref()).map_err(|m| (n.span(), "cluster.node", m))?;
            n.get_ref().clone()
        }
    };
    let lease_ttl = duration(
        raw.lease_ttl.as_ref(),
        &limits::LEASE_TTL,
        Duration::from_secs(10),
    )?;
    if lease_ttl.subsec_nanos() != 0 {
        let span = raw
            .lease_ttl
            .as_ref()
            .map_or(table_span.clone(), |d| d.span());
        return Err((
            span,
            "cluster.lease_ttl",
            "etcd leases are whole seconds: write e.g. \"10s\"".to_owned(),
        ));
    }
    let takeover_grace = duration(
        raw.takeover_grace.as_ref(),
        &limits::TAKEOVER_GRACE,
        Duration::from_secs(2),
    )?;
    let config = ClusterConfig {
        backend,
        endpoints,
        prefix,
        node,
        lease_ttl,
        takeover_grace,
    };
    let stop_timeout = stop_timeout
        .unwrap_or_else(|| cluster::fitting_stop_timeout(lease_ttl, DEFAULT_STOP_TIMEOUT));
    config.timeline(stop_timeout).map_err(|m| {
        let span = raw.lease_ttl.as_ref().map_or(table_span, |d| d.span());
        (span, "cluster.lease_ttl", m)
    })?;
    Ok(Some((config, stop_timeout)))
}

/// The effective `[http]`, if the file has one. Relative paths are
/// resolved by `resolve`; the token file defaults to
/// `<state_dir>/http.token`.
pub(super) fn http(
    raw: Option<toml::Spanned<RawHttp>>,
    state_dir: &std::path::Path,
    base: Option<&std::path::Path>,
    resolve: impl Fn(std::path::PathBuf) -> std::path::PathBuf,
) -> Result<Option<HttpConfig>, SpannedError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let table_span = raw.span();
    let raw = raw.into_inner();
    let allow_remote = raw.allow_remote.unwrap_or(false);
    let (listen, span) = match &raw.listen {
        None => (
            Listen::parse(http_cfg::DEFAULT_LISTEN, None).expect("the default parses"),
            table_span,
        ),
        Some(l) => (
            Listen::parse(l.get_ref(), base).map_err(|m| (l.span(), "http.listen", m))?,
            l.span(),
        ),
    };
    if !listen.is_local() && !allow_remote {
        return Err((
            span,
            "http.listen",
            format!(
                "{listen} can be reached from other hosts: the API starts and stops sessions \
                 and shows their QR codes, so say so with `allow_remote = true` (and put TLS \
                 in front of it), or listen on 127.0.0.1 or a unix socket"
            ),
        ));
    }
    let token_file = raw
        .token_file
        .map(resolve)
        .unwrap_or_else(|| state_dir.join(http_cfg::DEFAULT_TOKEN_FILE));
    Ok(Some(HttpConfig {
        listen,
        allow_remote,
        token_file,
    }))
}

/// The effective `[[webhook]]` tables.
pub(super) fn webhooks(
    raw: Option<Vec<toml::Spanned<RawWebhook>>>,
    resolve: impl Fn(std::path::PathBuf) -> std::path::PathBuf,
) -> Result<Vec<WebhookConfig>, SpannedError> {
    let mut out = Vec::new();
    for raw in raw.unwrap_or_default() {
        let span = raw.span();
        let raw: RawWebhook = raw.into_inner();
        let url = raw.url.ok_or_else(|| {
            (
                span.clone(),
                "webhook.url",
                "a [[webhook]] needs a url".to_owned(),
            )
        })?;
        http_cfg::check_url(url.get_ref()).map_err(|m| (url.span(), "webhook.url", m))?;
        let secret_file = raw.secret_file.map(&resolve).ok_or_else(|| {
            (
                span.clone(),
                "webhook.secret_file",
                "a [[webhook]] needs a secret_file: its deliveries are signed with it \
                 (HMAC-SHA256), and the receiver checks them with the same secret"
                    .to_owned(),
            )
        })?;
        let events = match raw.events {
            None => vec![ChangeKind::State],
            Some(e) => {
                let e_span = e.span();
                let mut kinds = Vec::new();
                for name in e.into_inner() {
                    let kind = ChangeKind::parse(&name).ok_or_else(|| {
                        (
                            e_span.clone(),
                            "webhook.events",
                            format!(
                                "unknown event {}: use \"state\" and/or \"qr\"",
                                crate::text::Quoted(&name)
                            ),
                        )
                    })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                if kinds.is_empty() {
                    return Err((
                        e_span,
                        "webhook.events",
                        "name at least one event: \"state\" and/or \"qr\"".to_owned(),
                    ));
                }
                kinds
            }
        };
        out.push(WebhookConfig {
            url: url.into_inner(),
            secret_file,
            events,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::error::line_column;
    use super::super::raw::RawConfig;
    use super::*;

    /// Validates `text` as `Config::parse` does, and returns the line and
    /// key of the first failed check.
    fn check(text: &str) -> Result<(), (usize, &'static str, String)> {
        let raw: RawConfig = toml::from_str(text).expect("the text deserializes");
        let result = policy(raw.policy).and_then(|_| sessions(raw.worker, raw.session));
        result
            .map(drop)
            .map_err(|(span, key, message)| (line_column(text, span.start).0, key, message))
    }

    #[test]
    fn bad_values() {
        for (text, line, key) in [
            ("[policy]\njitter = 1.5\n", 2, "policy.jitter"),
            (
                "[policy]\nbackoff_multiplier = 0.5\n",
                2,
                "policy.backoff_multiplier",
            ),
            (
                "[policy]\ninitial_backoff = \"10m\"\n",
                2,
                "policy.initial_backoff",
            ),
            ("[worker]\ncommand = []\n", 2, "worker.command"),
            (
                "[worker]\nenv = { WA_CTL_SESSION_ID = \"x\" }\n",
                2,
                "worker.env",
            ),
            ("[[session]]\ncommand = [\"\"]\n", 2, "session.command"),
            ("[[session]]\nenv = { \"A=B\" = \"x\" }\n", 2, "session.env"),
            (
                "[policy]\n\ninitial_backoff = \"500000000000y\"\n",
                3,
                "policy.initial_backoff",
            ),
            (
                "[policy]\nmax_backoff = \"2days\"\n",
                2,
                "policy.max_backoff",
            ),
            (
                "[policy]\nreset_after = \"31days\"\n",
                2,
                "policy.reset_after",
            ),
            (
                "[policy]\nrestart_window = \"1year\"\n",
                2,
                "policy.restart_window",
            ),
        ] {
            let (l, k, _) = check(text).expect_err(text);
            assert_eq!((l, k), (line, key), "{text}");
        }
    }

    #[test]
    fn durations_at_their_maximum_pass() {
        check(
            "[policy]\ninitial_backoff = \"1day\"\nmax_backoff = \"1day\"\n\
             reset_after = \"30days\"\nrestart_window = \"30days\"\n",
        )
        .unwrap();
        let (_, _, message) = check("[policy]\nmax_backoff = \"500000000000y\"\n").unwrap_err();
        assert!(message.contains("maximum of 1day"), "{message}");
    }

    #[test]
    fn session_ids_are_unique() {
        let (line, key, msg) =
            check("[[session]]\nid = \"a\"\n[[session]]\nid = \"a\"\n").unwrap_err();
        assert_eq!((line, key), (4, "session.id"));
        assert!(msg.contains("twice"), "{msg}");
        let (line, _, msg) = check("[[session]]\n[[session]]\n").unwrap_err();
        assert_eq!(line, 1);
        assert!(msg.contains("default"), "{msg}");
    }

    #[test]
    fn sessions_merge_over_worker() {
        let raw: RawConfig = toml::from_str(
            "[worker]\nenv = { A = \"1\", B = \"2\" }\n[[session]]\nid = \"x\"\nenv = { B = \"3\" }\n",
        )
        .unwrap();
        let sessions = sessions(raw.worker, raw.session).unwrap();
        assert_eq!(sessions[0].command, vec!["wa-worker"]);
        assert_eq!(sessions[0].env["A"], "1");
        assert_eq!(sessions[0].env["B"], "3");
    }
}
