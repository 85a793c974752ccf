//! Exit codes: part of the public contract, named here and nowhere else.

use wa_ctl_core::config::ConfigError;
use wa_ctl_core::session_id::InvalidSessionId;

/// Success; also `stop` when nothing was running.
pub const SUCCESS: u8 = 0;
/// A runtime failure: the supervisor could not start, a stop timed out, ...
pub const FAILURE: u8 = 1;
/// A usage or configuration error (clap uses 2 for usage errors too).
pub const USAGE: u8 = 2;
/// `status`: the supervisor is not running (LSB).
pub const NOT_RUNNING: u8 = 3;

/// A usage error found after parsing, such as an unknown session id.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error: 2 for configuration and usage, else 1.
pub fn code_for(err: &anyhow::Error) -> u8 {
    let usage = err.chain().any(|cause| {
        cause.is::<ConfigError>() || cause.is::<InvalidSessionId>() || cause.is::<UsageError>()
    });
    if usage { USAGE } else { FAILURE }
}

/// One line: every cause, outermost first.
pub fn describe(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // thiserror messages often embed their source already.
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
