//! What both supervisor binaries share (`wa-ctl-supervisor` and
//! `wa-ctl-supervisor-api`): the arguments `wa-ctl start` passes, and the
//! run. Included by each with `#[path]`, beside the `exit`, `foreground`
//! and `logging` modules of the `wa-ctl` binary.

use super::{exit, foreground, logging};

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use wa_ctl_core::config::{Config, Environment};

/// What `wa-ctl start` passes.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    config: Option<PathBuf>,
    id: Option<String>,
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, exit::UsageError> {
    let usage = || {
        exit::UsageError(
            "wa-ctl-supervisor is started by `wa-ctl start`; run `wa-ctl start --foreground` instead"
                .to_owned(),
        )
    };
    let mut args = args.into_iter();
    let mut config = None;
    let mut next = args.next();
    if next.as_deref() == Some("--config".as_ref()) {
        config = Some(PathBuf::from(args.next().ok_or_else(usage)?));
        next = args.next();
    }
    if next.as_deref() != Some("start".as_ref())
        || args.next().as_deref() != Some("--foreground".as_ref())
    {
        return Err(usage());
    }
    let id = match args.next() {
        Some(id) => Some(id.into_string().map_err(|_| usage())?),
        None => None,
    };
    if args.next().is_some() {
        return Err(usage());
    }
    Ok(Args { config, id })
}

fn run(surface: Option<foreground::SurfaceFactory>) -> anyhow::Result<u8> {
    let args = parse(std::env::args_os().skip(1))?;
    let config = Config::load(args.config.as_deref(), &Environment::from_process())?;
    if let Some(id) = &args.id
        && config.session(id).is_none()
    {
        return Err(exit::UsageError(format!("no session `{id}` in the configuration")).into());
    }
    let surface = match surface {
        Some(surface) => surface,
        None if config.http.is_some() || !config.webhooks.is_empty() => {
            return Err(exit::UsageError(format!(
                "this configuration has [http] or [[webhook]]: it runs under {}, which `wa-ctl \
                 start` picks (this binary has no HTTP API)",
                wa_ctl_core::process::SUPERVISOR_API_PROGRAM
            ))
            .into());
        }
        None => |_: &Config| None,
    };
    foreground::run(&config, args.id, surface)
}

/// The binary's `main`: with the surface factory of the HTTP API, or
/// without one.
pub fn main(surface: Option<foreground::SurfaceFactory>) -> ExitCode {
    logging::init(true);
    match run(surface) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("wa-ctl: {}", exit::describe(&err));
            ExitCode::from(exit::code_for(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, exit::UsageError> {
        parse(list.iter().map(OsString::from))
    }

    #[test]
    fn what_wa_ctl_start_passes() {
        assert_eq!(
            args(&["--config", "/c.toml", "start", "--foreground", "sales"]).unwrap(),
            Args {
                config: Some("/c.toml".into()),
                id: Some("sales".into())
            }
        );
        assert_eq!(
            args(&["start", "--foreground"]).unwrap(),
            Args {
                config: None,
                id: None
            }
        );
        for bad in [
            &[][..],
            &["start"],
            &["stop", "--foreground"],
            &["--config"],
            &["start", "--foreground", "a", "b"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
