//! Log set-up. The supervisor logs one line per lifecycle event at INFO;
//! client commands only show warnings. `WA_CTL_LOG` (a tracing filter such as
//! `debug` or `wa_ctl_core=trace`) overrides the level.
//!
//! A background supervisor's stderr is `<state_dir>/wa-ctl.log`; under
//! systemd (`JOURNAL_STREAM` is set) lines carry no timestamp, because the
//! journal adds its own.

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable that overrides the log filter.
pub const LOG_ENV: &str = "WA_CTL_LOG";

/// The filter: `WA_CTL_LOG` if it is set and parses, else `default`.
///
/// `Targets` rather than `EnvFilter`: it reads the same `level` and
/// `target=level` lists (`debug`, `wa_ctl_core=trace,info`) without
/// EnvFilter's regular-expression engine, which was a fifth of the binary's
/// code, most of it kept resident by the supervisor (bench/supervisor-memory).
/// Span and field filters (`[span{f=v}]=level`) are not understood; such a
/// filter falls back to the default, as any filter that does not parse
/// always has.
fn filter(default: Level) -> Targets {
    std::env::var(LOG_ENV)
        .ok()
        .filter(|spec| !spec.trim().is_empty())
        .and_then(|spec| spec.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(default))
}

/// Installs the subscriber: INFO for a supervisor, WARN for a client command.
pub fn init(supervisor: bool) {
    let default = if supervisor { Level::INFO } else { Level::WARN };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| LossyStderr)
        .with_target(false)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter(default));
    // Nothing else installs a subscriber: this cannot fail.
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        registry.with(layer.without_time()).try_init()
    } else {
        registry.with(layer).try_init()
    };
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
