//! `wa-ctl status [ID] [--json]`: what the running supervisor runs, asked
//! over its control socket, plus a census of the process table.
//!
//! It never invents a state (issue #9). The supervisor's answer is the
//! truth. When it does not answer, the status file it keeps is shown only if
//! it is whole and was written by the supervisor that holds the lock now,
//! marked as not live, and the exit code is 4 ("unknown", as LSB says);
//! with nothing trustworthy to show, no session is listed.

use std::time::{Duration, SystemTime};

use wa_ctl_core::census;
use wa_ctl_core::config::Config;
use wa_ctl_core::control::{self, ControlError, Request};
use wa_ctl_core::lock::Probe;
use wa_ctl_core::status::{Answer, ConfigMatch, StatusRecord, StatusReport};

use super::{Running, check_session, out, probe, running_config};
use crate::exit;

/// How long `status` waits for the supervisor's answer. The loop answers at
/// once when it is healthy.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The running supervisor's record, asked over the control socket; or, when
/// it does not answer, why not, with the status file it keeps.
pub(super) fn live_record(
    config: &Config,
    session: Option<&str>,
) -> Result<StatusRecord, (String, Option<StatusRecord>)> {
    let request = Request::Status {
        session: session.map(str::to_owned),
    };
    let why = match control::request(&config.supervisor.runtime_dir, &request, STATUS_TIMEOUT) {
        Ok(response) if response.ok => match response.status {
            Some(record) => return Ok(record),
            None => "the supervisor answered without a status".to_owned(),
        },
        Ok(response) => response.message,
        Err(ControlError::Timeout(t)) => format!(
            "the supervisor does not answer within {}s: it may be stopped (SIGSTOP) or stuck; \
             `wa-ctl stop --force` ends it",
            t.as_secs()
        ),
        Err(e) => wa_ctl_core::error_chain(&e),
    };
    Err((why, StatusRecord::read(&config.supervisor.runtime_dir)))
}

pub(super) fn status(config: &Config, id: Option<String>, json: bool) -> anyhow::Result<u8> {
    let probe = probe(config)?;
    let (record, answer) = match probe {
        Probe::Running { .. } => match live_record(config, id.as_deref()) {
            Ok(record) => (Some(record), Answer::Live),
            Err((why, file)) => (file, Answer::NoAnswer(why)),
        },
        Probe::NotRunning => (None, Answer::Live),
    };
    // A session named on the command line may be one the running supervisor
    // runs and this file no longer lists (renamed meanwhile): the
    // supervisor's answer decides, and only without one is the file asked.
    if let Some(id) = &id
        && record.is_none()
    {
        check_session(config, id)?;
    }
    let mut report = StatusReport::build(config, probe, record, answer, SystemTime::now());
    if let Some((owner, running)) = running_config(config)? {
        report.config = Some(match running {
            Running::Same => ConfigMatch::same(owner.config),
            Running::Changed => ConfigMatch::changed(owner.config),
            Running::Foreign(path) => ConfigMatch::foreign(path),
            Running::Unknown => ConfigMatch::unknown(),
        });
    }
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
        if report.running
            && let Some(url) = page_url(config)
        {
            out(&format!("Page: {url}\n"))?;
        }
    }
    Ok(match (report.running, &report.error) {
        (true, None) => exit::SUCCESS,
        (true, Some(_)) => exit::UNKNOWN,
        (false, _) => exit::NOT_RUNNING,
    })
}

/// How long `status --cluster` waits for etcd.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(5);

/// `status --cluster --json`: a public contract (issue #10).
#[derive(Debug, serde::Serialize)]
struct ClusterReport {
    node: String,
    prefix: String,
    sessions: Vec<ClusterSession>,
}

#[derive(Debug, serde::Serialize)]
struct ClusterSession {
    id: String,
    owner: Option<String>,
    epoch: Option<i64>,
    /// What the owner last published under the prefix, or null.
    state: Option<String>,
}

/// `wa-ctl status --cluster`: every session under the prefix, read from
/// etcd without a lease. It needs no running supervisor.
pub(super) fn cluster_status(
    config: &Config,
    id: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let Some(cluster) = &config.cluster else {
        return Err(crate::exit::UsageError(format!(
            "--cluster needs a [cluster] table in the configuration ({})",
            config.source
        ))
        .into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let records = runtime
        .block_on(async {
            tokio::time::timeout(
                CLUSTER_TIMEOUT,
                wa_ctl_cluster::cluster_view(&cluster.endpoints, &cluster.prefix),
            )
            .await
        })
        .map_err(|_| {
            anyhow::anyhow!(
                "etcd at {} did not answer within {}s",
                cluster.endpoints.join(", "),
                CLUSTER_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| {
            anyhow::anyhow!(
                "reading the sessions from etcd at {}: {}",
                cluster.endpoints.join(", "),
                wa_ctl_core::error_chain(&e)
            )
        })?;
    let sessions: Vec<ClusterSession> = records
        .into_iter()
        .filter(|r| id.as_ref().is_none_or(|id| &r.id == id))
        .map(|r| ClusterSession {
            id: r.id,
            owner: r.owner,
            epoch: r.epoch,
            state: r.state,
        })
        .collect();
    let report = ClusterReport {
        node: cluster.node.clone(),
        prefix: cluster.prefix.clone(),
        sessions,
    };
    if json {
        out(&format!("{}\n", serde_json::to_string(&report)?))?;
        return Ok(exit::SUCCESS);
    }
    let mut text = format!(
        "cluster {} (this node: {})\n",
        wa_ctl_core::text::Quoted(&report.prefix),
        wa_ctl_core::text::Quoted(&report.node)
    );
    let mut rows = vec![[
        "SESSION".to_owned(),
        "OWNER".to_owned(),
        "EPOCH".to_owned(),
        "STATE".to_owned(),
    ]];
    for s in &report.sessions {
        // Node names and states come from etcd: any other node wrote them.
        let shown = |v: &Option<String>| {
            v.as_deref().map_or_else(
                || "-".to_owned(),
                |v| wa_ctl_core::text::escape(v).into_owned(),
            )
        };
        rows.push([
            s.id.clone(),
            shown(&s.owner),
            s.epoch.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            shown(&s.state),
        ]);
    }
    text.push_str(&wa_ctl_core::status::render_table(&rows));
    if report.sessions.is_empty() {
        text.push_str("(no session is owned or published under this prefix)\n");
    }
    out(&text)?;
    Ok(exit::SUCCESS)
}

/// The pairing page's address with the token (issue #11), when `[http]`
/// listens on TCP and this user can read the token file.
pub(super) fn page_url(config: &Config) -> Option<String> {
    let http = config.http.as_ref()?;
    http.page_url(&wa_ctl_http::read_token(&http.token_file)?)
}
