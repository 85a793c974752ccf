//! `wa-ctl status [ID] [--json]`: the supervisor's status record, trusted
//! only while its lock is held, plus a census of the process table.

use std::time::SystemTime;

use wa_ctl_core::census;
use wa_ctl_core::config::Config;
use wa_ctl_core::lock::Probe;
use wa_ctl_core::status::{StatusRecord, StatusReport};

use super::{check_session, out, probe};
use crate::exit;

pub(super) fn status(config: &Config, id: Option<String>, json: bool) -> anyhow::Result<u8> {
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
