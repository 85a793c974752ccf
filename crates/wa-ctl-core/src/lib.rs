//! Supervisor logic for wa-ctl: configuration, locks, spawning and watching
//! workers, the reconnect policy, and the live status.
//!
//! The `wa-ctl` binary is a thin shell over this crate. The worker side of
//! the protocol lives in [`protocol`]; a worker never links this crate.

pub mod census;
pub mod config;
pub mod control;
pub mod fsutil;
pub mod leftovers;
pub mod lifecycle;
pub mod lock;
pub mod policy;
pub mod process;
pub mod protocol;
pub mod session_id;
pub mod session_lock;
pub mod status;
pub mod supervisor;
pub mod systemd;
pub mod text;

/// An error and its sources on one line, `outer: inner: root`, for logs and
/// reports that carry no `anyhow` chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
