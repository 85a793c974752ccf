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
pub mod status;
pub mod supervisor;
pub mod systemd;
