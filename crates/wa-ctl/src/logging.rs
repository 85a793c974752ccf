//! Log set-up. The supervisor logs one line per lifecycle event at INFO;
//! client commands only show warnings. `WA_CTL_LOG` (a tracing filter such as
//! `debug` or `wa_ctl_core=trace`) overrides the level.
//!
//! A background supervisor's stderr is `<state_dir>/wa-ctl.log`; under
//! systemd (`JOURNAL_STREAM` is set) lines carry no timestamp, because the
//! journal adds its own.

use tracing_subscriber::EnvFilter;

use crate::cli::Cli;

/// The environment variable that overrides the log filter.
pub const LOG_ENV: &str = "WA_CTL_LOG";

pub fn init(cli: &Cli) {
    let default = if cli.command.runs_supervisor() {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_target(false)
        .with_ansi(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// stderr that drops what it cannot write. A background supervisor's stderr
/// is a file in `state_dir`: when that disk is full, losing log lines is
/// better than the supervisor dying (tracing-subscriber panics on a failed
/// write to plain stderr).
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
