//! `wa-ctl check`: prints the effective configuration, the policy table and
//! the worker each session would run.

use std::path::Path;

use wa_ctl_core::config::{Config, ConfigSource};
use wa_ctl_core::policy::DEFAULT_ACTION;
use wa_ctl_core::process;

use super::out;
use crate::exit;

pub(super) fn check(config: &Config) -> anyhow::Result<u8> {
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
    if let Some(cluster) = &config.cluster {
        // Validated with the configuration: the timeline holds.
        if let Ok(t) = cluster.timeline(config.supervisor.stop_timeout) {
            let show = |d: std::time::Duration| {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
            };
            text.push_str(&format!(
                "\n# cluster timeline, from the send time of the last keepalive etcd acknowledged:\n\
                 #   keepalive every            {}\n\
                 #   SIGTERM to every worker at {}  (if no later keepalive was acknowledged)\n\
                 #   SIGKILL at                 {}\n\
                 #   the lease may expire at    {}\n\
                 #   a standby takes over at    {}  (lease_ttl + takeover_grace)\n",
                show(t.keepalive_every),
                show(t.sigterm_after),
                show(t.sigkill_after),
                show(t.lease_expires_after),
                show(t.takeover_after),
            ));
        }
    }
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
