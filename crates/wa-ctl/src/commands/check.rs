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
