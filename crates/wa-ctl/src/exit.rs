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
/// `status`: the state is unknown: a supervisor holds the lock but does not
/// answer (LSB's "program or service status is unknown").
pub const UNKNOWN: u8 = 4;

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

/// One line: every cause, outermost first, joined with ": ".
///
/// No error type repeats its source in its `Display`: each says only its
/// own part and leaves the cause to `source()`. So every cause appears once:
/// `cannot create /x/run: Read-only file system (os error 30)`.
pub fn describe(err: &anyhow::Error) -> String {
    err.chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use anyhow::Context as _;
    use wa_ctl_core::lock::LockError;

    use super::*;

    #[test]
    fn every_cause_once() {
        let err = Err::<(), _>(LockError {
            path: PathBuf::from("/x/run/wa-ctl.lock"),
            source: io::Error::from_raw_os_error(nix::libc::EROFS),
        })
        .context("starting the supervisor")
        .unwrap_err();
        assert_eq!(
            describe(&err),
            "starting the supervisor: cannot lock /x/run/wa-ctl.lock: \
             Read-only file system (os error 30)"
        );
        assert_eq!(code_for(&err), FAILURE);
    }
}
