//! `wa-ctl restart [ID]`: one session through the running supervisor, or the
//! whole supervisor as a stop followed by a start.

use wa_ctl_core::config::Config;
use wa_ctl_core::control::Request;
use wa_ctl_core::lock::Probe;

use super::start::start;
use super::stop::stop;
use super::{START_TIMEOUT, check_session, probe, refuse_foreign, session_request, stop_timeout};

pub(super) fn restart(config: &Config, id: Option<String>, force: bool) -> anyhow::Result<u8> {
    refuse_foreign(config, "restart", force)?;
    match id {
        Some(id) => {
            check_session(config, &id)?;
            match probe(config)? {
                Probe::Running { .. } => {
                    let timeout = stop_timeout(config).saturating_add(START_TIMEOUT);
                    session_request(config, Request::Restart { session: id }, timeout)
                }
                Probe::NotRunning => start(config, Some(id), false),
            }
        }
        None => {
            stop(config, None, false, force)?;
            start(config, None, false)
        }
    }
}
