//! `wa-ctl status [ID] [--json]`: the running supervisor's live record,
//! asked over its control socket (or read from the file it keeps, when it
//! does not answer), trusted only while its lock is held, plus a census of
//! the process table.

use std::time::{Duration, SystemTime};

use wa_ctl_core::census;
use wa_ctl_core::config::Config;
use wa_ctl_core::control::{self, Request};
use wa_ctl_core::lock::Probe;
use wa_ctl_core::status::{StatusRecord, StatusReport};

use super::{check_session, out, probe};
use crate::exit;

/// How long `status` waits for the supervisor's answer before it falls
/// back to the status file. The loop answers at once when it is healthy.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The running supervisor's record: asked over the control socket, or read
/// from the status file it keeps when it does not answer.
pub(super) fn live_record(config: &Config, session: Option<&str>) -> Option<StatusRecord> {
    let request = Request::Status {
        session: session.map(str::to_owned),
    };
    match control::request(&config.supervisor.runtime_dir, &request, STATUS_TIMEOUT) {
        Ok(response) if response.ok => response.status,
        _ => StatusRecord::read(&config.supervisor.runtime_dir),
    }
}

pub(super) fn status(config: &Config, id: Option<String>, json: bool) -> anyhow::Result<u8> {
    if let Some(id) = &id {
        check_session(config, id)?;
    }
    let probe = probe(config)?;
    let record = match probe {
        Probe::Running { .. } => live_record(config, id.as_deref()),
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
