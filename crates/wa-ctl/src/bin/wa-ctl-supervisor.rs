//! `wa-ctl-supervisor`: the supervisor process, without the command line.
//!
//! `wa-ctl start` runs it in the background, and `wa-ctl start --foreground`
//! (what the systemd unit runs) replaces itself with it (`execve`, so the pid
//! and systemd's `NOTIFY_SOCKET` stay). It gets the same arguments and the
//! same `argv[0]`, so `ps` still shows `wa-ctl --config PATH start
//! --foreground`. It links no clap, no QR code and no completion or man page
//! generator: a supervisor's resident memory is mostly its own code
//! (docs/benchmarks.md), and it runs for months.
//!
//! It is not meant to be run by hand; it accepts exactly what `wa-ctl start`
//! gives it: `[--config PATH] start --foreground [ID]`.

#[path = "../exit.rs"]
#[expect(dead_code, reason = "shared with wa-ctl, which uses all of it")]
mod exit;
#[path = "../foreground.rs"]
mod foreground;
#[path = "../logging.rs"]
mod logging;

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

fn run() -> anyhow::Result<u8> {
    let args = parse(std::env::args_os().skip(1))?;
    let config = Config::load(args.config.as_deref(), &Environment::from_process())?;
    if let Some(id) = &args.id
        && config.session(id).is_none()
    {
        return Err(exit::UsageError(format!("no session `{id}` in the configuration")).into());
    }
    foreground::run(&config, args.id)
}

fn main() -> ExitCode {
    logging::init(true);
    match run() {
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
