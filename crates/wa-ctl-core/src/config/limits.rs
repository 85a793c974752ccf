//! The range of every duration key (issue #9, item 2).
//!
//! A duration without a maximum once passed `check` and then panicked the
//! supervisor ("overflow when adding duration to instant"). Each key now
//! has a maximum far beyond any sensible value and far below any overflow,
//! and the one key whose small values do harm, `stop_timeout`, a minimum.
//! `docs/policy.md` ("Limits") gives the table and the why of each row;
//! keep the two in step.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The values one duration key accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationLimit {
    /// The key as errors name it: `table.key`.
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
    /// Why a value under `min` is refused; empty when `min` is zero.
    pub too_short: &'static str,
}

impl DurationLimit {
    const fn up_to(key: &'static str, max_secs: u64) -> DurationLimit {
        DurationLimit {
            key,
            min: Duration::ZERO,
            max: Duration::from_secs(max_secs),
            too_short: "",
        }
    }

    /// `value` if it is in range, else the message for the error.
    pub fn check(&self, value: Duration) -> Result<Duration, String> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if value > self.max {
            return Err(format!(
                "{} is more than the maximum of {}",
                show(value),
                show(self.max)
            ));
        }
        if value < self.min {
            return Err(format!(
                "{} is less than the minimum of {}: {}",
                show(value),
                show(self.min),
                self.too_short
            ));
        }
        Ok(value)
    }
}

/// `[supervisor] stop_timeout`: SIGTERM to SIGKILL. Under 100 ms a worker
/// cannot flush its credentials; over an hour, a stop (and systemd's
/// `TimeoutStopSec=`) would wait for a worker that has long stopped
/// answering.
pub const STOP_TIMEOUT: DurationLimit = DurationLimit {
    key: "supervisor.stop_timeout",
    min: Duration::from_millis(100),
    max: Duration::from_secs(HOUR),
    too_short: "it gives the worker no time to save its credentials before SIGKILL",
};

/// `[policy] initial_backoff`: a first delay of a day is already a stop.
pub const INITIAL_BACKOFF: DurationLimit = DurationLimit::up_to("policy.initial_backoff", DAY);

/// `[policy] max_backoff`: retrying less than once a day is a stop; use
/// `stop` in `[policy.codes]` for that.
pub const MAX_BACKOFF: DurationLimit = DurationLimit::up_to("policy.max_backoff", DAY);

/// `[policy] reset_after`: a connection that lasted 30 days was a good one.
pub const RESET_AFTER: DurationLimit = DurationLimit::up_to("policy.reset_after", 30 * DAY);

/// `[policy] restart_window`: the breaker remembers at most 30 days.
pub const RESTART_WINDOW: DurationLimit = DurationLimit::up_to("policy.restart_window", 30 * DAY);

/// `[policy] start_timeout`: the time a worker has to report `qr`,
/// `pair_code` or `connected`. An hour covers the slowest start.
pub const START_TIMEOUT: DurationLimit = DurationLimit::up_to("policy.start_timeout", HOUR);

/// `[policy] heartbeat_timeout`: the silence after which a worker that
/// sends `alive` counts as hung. An hour covers any keep-alive period.
pub const HEARTBEAT_TIMEOUT: DurationLimit = DurationLimit::up_to("policy.heartbeat_timeout", HOUR);

/// `[cluster] lease_ttl` (issue #10): how long ownership outlives a silent
/// owner. Under 2 s a keepalive every third of it leaves no room for a
/// stop; over 5 minutes a dead owner's sessions wait too long.
pub const LEASE_TTL: DurationLimit = DurationLimit {
    key: "cluster.lease_ttl",
    min: Duration::from_secs(2),
    max: Duration::from_secs(5 * MINUTE),
    too_short: "a keepalive every third of it leaves no time to stop the workers",
};

/// `[cluster] takeover_grace`: how long a standby waits after the owner's
/// key is gone.
pub const TAKEOVER_GRACE: DurationLimit =
    DurationLimit::up_to("cluster.takeover_grace", 5 * MINUTE);

/// Every duration key, in the order of `docs/policy.md`.
pub const DURATION_LIMITS: &[DurationLimit] = &[
    STOP_TIMEOUT,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    RESET_AFTER,
    RESTART_WINDOW,
    START_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    LEASE_TTL,
    TAKEOVER_GRACE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            STOP_TIMEOUT.check(Duration::from_millis(100)),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(
            STOP_TIMEOUT.check(Duration::from_secs(3600)),
            Ok(Duration::from_secs(3600))
        );
        let short = STOP_TIMEOUT.check(Duration::ZERO).unwrap_err();
        assert!(short.contains("minimum of 100ms"), "{short}");
        assert!(short.contains("save its credentials"), "{short}");
        let long = INITIAL_BACKOFF.check(Duration::MAX).unwrap_err();
        assert!(long.contains("maximum of 1day"), "{long}");
        assert_eq!(INITIAL_BACKOFF.check(Duration::ZERO), Ok(Duration::ZERO));
    }

    #[test]
    fn every_maximum_leaves_room_for_deadlines() {
        // A deadline is `now + value` with `now` a monotonic clock reading:
        // a maximum must leave centuries of headroom.
        for limit in DURATION_LIMITS {
            assert!(limit.max <= Duration::from_secs(31 * DAY), "{}", limit.key);
            assert!(limit.min <= limit.max, "{}", limit.key);
        }
    }
}
