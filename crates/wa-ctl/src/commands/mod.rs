//! The commands, one module each. Each loads the configuration, does its
//! work through `wa-ctl-core`, prints for a human (or JSON), and returns an
//! exit code. This module dispatches, and holds what several commands share.

mod check;
mod completions;
mod login;
mod logs;
mod restart;
mod start;
mod status;
mod stop;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use wa_ctl_core::config::{Config, Environment};
use wa_ctl_core::lock::{Probe, SupervisorLock};
use wa_ctl_core::process;

use crate::cli::{Cli, Command};
use crate::exit::UsageError;
use crate::foreground::{
    Running, START_TIMEOUT, out, pid_text, refuse_foreign, running_config, session_request,
};

/// Extra time a stop may take beyond `stop_timeout` before the CLI gives up.
const STOP_MARGIN: Duration = Duration::from_secs(10);

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    // These two describe the command line itself: no configuration needed.
    match &cli.command {
        Command::Completions { shell } => return completions::completions(*shell),
        Command::Man => return completions::man(),
        _ => {}
    }
    let config = Config::load(cli.config.as_deref(), &Environment::from_process())?;
    match cli.command {
        Command::Start { id, foreground } => start::start(&config, id, foreground),
        Command::Stop { id, all, force } => stop::stop(&config, id, all, force),
        Command::Restart { id, force } => restart::restart(&config, id, force),
        Command::Status {
            id,
            json,
            cluster: true,
        } => status::cluster_status(&config, id, json),
        Command::Status { id, json, .. } => status::status(&config, id, json),
        Command::Logs { follow, lines } => logs::logs(&config, follow, lines),
        Command::Login { id, phone, browser } => login::login(&config, id, phone, browser),
        Command::Check => check::check(&config),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
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

fn stop_timeout(config: &Config) -> Duration {
    config.supervisor.stop_timeout.saturating_add(STOP_MARGIN)
}
