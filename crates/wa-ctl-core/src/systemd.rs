//! systemd integration: readiness, status line, watchdog and stopping
//! notifications (`sd_notify`), when the supervisor runs as a
//! `Type=notify` service. Without `NOTIFY_SOCKET` every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

/// Talks to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    last_status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            last_status: String::new(),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The watchdog timeout systemd set (`WatchdogSec=`), if any.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog.filter(|d| !d.is_zero())
    }

    /// How often to send `WATCHDOG=1`: half the configured timeout, as
    /// sd_watchdog_enabled(3) recommends.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2).filter(|d| !d.is_zero())
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            warn!("cannot notify the service manager: {e}");
        }
    }

    /// `READY=1`, with the first status line.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=...`, when it changed.
    pub fn status(&mut self, status: &str) {
        if self.last_status != status {
            self.last_status = status.to_owned();
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// `WATCHDOG=1`. Sent from the event loop, so that it proves the loop runs.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}
