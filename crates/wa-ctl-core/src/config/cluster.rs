//! `[cluster]` (issue #10): one owner per session across hosts, through
//! leases in etcd. Optional: without the table nothing changes.
//!
//! This module only reads and checks the table, and derives the timeline
//! that the relations between its durations must respect. The ownership
//! itself lives in `crates/wa-ctl-cluster` and the supervisor's loop.
//!
//! The timeline, from the send time `t` of the last keepalive that etcd
//! acknowledged:
//!
//! - a keepalive is sent every third of the time to the fence below, so
//!   that two keepalives in a row can fail (an etcd leader election, a
//!   member gone) before anything is stopped;
//! - at `t + lease_ttl - SAFETY_MARGIN - stop_timeout` the supervisor
//!   SIGTERMs every worker it owns (it may be cut off from etcd);
//! - at `t + lease_ttl - SAFETY_MARGIN` the last of them gets SIGKILL;
//! - at `t + lease_ttl` etcd may expire the lease, and a standby may take
//!   over after `takeover_grace`.
//!
//! The time to the fence must be more than a third of the lease:
//! `lease_ttl / 3 < lease_ttl - SAFETY_MARGIN - stop_timeout`, so that
//! keepalives go at least every `lease_ttl / 9` and the fence leaves room
//! for an etcd election. A configuration that breaks it is an error that
//! names both keys.

use std::time::Duration;

use serde::Serialize;

/// The slack kept between the last SIGKILL and the lease's expiry: clock
/// rate differences and the keepalive's network time.
pub const SAFETY_MARGIN: Duration = Duration::from_millis(500);

/// The ownership backend. One for now; the code has a trait so that a
/// second can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Etcd,
}

/// `[cluster]` with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    pub backend: Backend,
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub node: String,
    #[serde(serialize_with = "super::ser_duration")]
    pub lease_ttl: Duration,
    #[serde(serialize_with = "super::ser_duration")]
    pub takeover_grace: Duration,
}

/// The derived timeline (see the module doc), for `wa-ctl check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub keepalive_every: Duration,
    /// After the last acknowledged keepalive's send time.
    pub sigterm_after: Duration,
    pub sigkill_after: Duration,
    pub lease_expires_after: Duration,
    /// After the lease expired (or the owner's key was deleted).
    pub takeover_after: Duration,
}

impl ClusterConfig {
    /// The timeline for this table and `stop_timeout`, or why it cannot hold.
    pub fn timeline(&self, stop_timeout: Duration) -> Result<Timeline, String> {
        timeline(self.lease_ttl, self.takeover_grace, stop_timeout)
    }
}

/// The `stop_timeout` an unset `[supervisor] stop_timeout` gets with
/// `[cluster]`: `default`, or less if the lease needs it, namely the
/// largest multiple of 500 ms under `2/3 lease_ttl - SAFETY_MARGIN` (6 s
/// for a 10 s lease, 1 s for 3 s, 500 ms for 2 s), so that the example
/// table works without touching `[supervisor]`.
pub fn fitting_stop_timeout(lease_ttl: Duration, default: Duration) -> Duration {
    const STEP_MS: u128 = 500;
    let limit = (lease_ttl.saturating_mul(2) / 3).saturating_sub(SAFETY_MARGIN);
    let below = limit.as_millis().saturating_sub(1) / STEP_MS * STEP_MS;
    let fitted = Duration::from_millis(u64::try_from(below).unwrap_or(u64::MAX));
    default.min(fitted.max(Duration::from_millis(STEP_MS as u64)))
}

/// See the module doc.
pub fn timeline(
    lease_ttl: Duration,
    takeover_grace: Duration,
    stop_timeout: Duration,
) -> Result<Timeline, String> {
    // Whole milliseconds: what a person reads, and what a timer needs.
    let ms = |d: Duration| Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let show = |d: Duration| humantime::format_duration(ms(d)).to_string();
    let sigkill_after = lease_ttl.checked_sub(SAFETY_MARGIN);
    let sigterm_after = sigkill_after.and_then(|k| k.checked_sub(stop_timeout));
    match sigterm_after {
        Some(sigterm_after) if sigterm_after > lease_ttl / 3 => Ok(Timeline {
            keepalive_every: ms(sigterm_after / 3),
            sigterm_after,
            sigkill_after: sigkill_after.unwrap_or_default(),
            lease_expires_after: lease_ttl,
            takeover_after: lease_ttl.saturating_add(takeover_grace),
        }),
        _ => Err(format!(
            "lease_ttl ({}) is too short for [supervisor] stop_timeout ({}): workers are stopped \
             stop_timeout + {} before the lease can expire, and that must leave more than a third of \
             the lease ({}) for keepalives to fail and be retried, \
             so stop_timeout must be under {}; raise lease_ttl (to more than {}) or lower stop_timeout",
            show(lease_ttl),
            show(stop_timeout),
            show(SAFETY_MARGIN),
            show(lease_ttl / 3),
            show(
                (lease_ttl.saturating_mul(2) / 3)
                    .checked_sub(SAFETY_MARGIN)
                    .unwrap_or_default()
            ),
            show(stop_timeout.saturating_add(SAFETY_MARGIN).saturating_mul(3) / 2),
        )),
    }
}

/// Checks an etcd endpoint: `http://host:port` or `https://host:port`.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("`{endpoint}` is not an http:// or https:// URL"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("`{endpoint}` has no port (etcd's client port is usually 2379)"))?;
    if host.is_empty() || host.contains(['/', '@', ' ']) || host.chars().any(char::is_control) {
        return Err(format!("`{endpoint}`: `{host}` is not a host name"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{endpoint}`: `{port}` is not a port")),
    }
}

/// Checks a key prefix: absolute, no empty, `.` or `..` segment, no control
/// character, at most 256 bytes; a trailing `/` is dropped. Every key lives
/// under it, so it must not be able to name something else.
pub fn check_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err(format!(
            "`{prefix}` must start with `/` and name something, e.g. \"/wa-ctl\""
        ));
    }
    if trimmed.len() > 256 {
        return Err("a prefix is at most 256 bytes".to_owned());
    }
    if trimmed.chars().any(char::is_control) {
        return Err("a prefix has no control characters".to_owned());
    }
    if trimmed[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!("`{prefix}` has an empty, `.` or `..` segment"));
    }
    Ok(trimmed.to_owned())
}

/// Checks a node name: 1 to 253 printable characters. It is only ever a
/// value in etcd, never part of a key.
pub fn check_node(node: &str) -> Result<(), String> {
    if node.is_empty() || node.len() > 253 {
        return Err("a node name has 1 to 253 bytes".to_owned());
    }
    if node.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("a node name has no spaces or control characters".to_owned());
    }
    Ok(())
}

/// This machine's host name, the default node name.
pub fn default_node() -> Result<String, String> {
    let name = nix::unistd::gethostname()
        .map_err(|e| format!("cannot read the host name ({e}): set `node`"))?;
    let name = name
        .into_string()
        .map_err(|_| "the host name is not UTF-8: set `node`".to_owned())?;
    check_node(&name).map_err(|e| format!("the host name `{name}`: {e}; set `node`"))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_timeline_of_a_sound_configuration() {
        let t = timeline(S(30), S(2), S(10)).unwrap();
        assert_eq!(t.keepalive_every, Duration::from_millis(6_500));
        assert_eq!(t.sigkill_after, Duration::from_millis(29_500));
        assert_eq!(t.sigterm_after, Duration::from_millis(19_500));
        assert_eq!(t.lease_expires_after, S(30));
        assert_eq!(t.takeover_after, S(32));
    }

    #[test]
    fn an_unset_stop_timeout_fits_the_lease() {
        let fit = |ttl| fitting_stop_timeout(S(ttl), S(10));
        assert_eq!(fit(10), S(6));
        assert_eq!(fit(3), S(1));
        assert_eq!(fit(2), Duration::from_millis(500));
        assert_eq!(fit(60), S(10), "the default when it fits");
        for ttl in 2..=300 {
            assert!(timeline(S(ttl), S(2), fit(ttl)).is_ok(), "lease_ttl {ttl}s");
        }
    }

    #[test]
    fn a_ttl_too_short_for_the_stop_names_both_keys() {
        // The example values with the default stop_timeout.
        let e = timeline(S(10), S(2), S(10)).unwrap_err();
        assert!(
            e.contains("lease_ttl (10s)") && e.contains("stop_timeout (10s)"),
            "{e}"
        );
        assert!(e.contains("more than 15s 750ms"), "{e}");
        // Just enough, and just not.
        assert!(timeline(S(10), S(2), S(6)).is_ok());
        assert!(timeline(S(10), Duration::ZERO, Duration::from_millis(6_200)).is_err());
        // No underflow at the extremes.
        assert!(timeline(Duration::ZERO, Duration::ZERO, Duration::MAX).is_err());
        assert!(timeline(Duration::from_millis(100), Duration::MAX, S(1)).is_err());
    }

    #[test]
    fn endpoints() {
        for ok in [
            "http://127.0.0.1:2379",
            "https://etcd-0.etcd:2379",
            "http://[::1]:2379",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1:2379",
            "http://host",
            "http://:2379",
            "http://h:0",
            "http://h:x",
            "ftp://h:1",
            "http://u@h:1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_cannot_escape() {
        assert_eq!(check_prefix("/wa-ctl/").unwrap(), "/wa-ctl");
        assert_eq!(check_prefix("/a/b").unwrap(), "/a/b");
        for bad in [
            "", "/", "wa-ctl", "/a/../b", "/a//b", "/./a", "/a\0", "/a\n",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nodes() {
        assert!(check_node("host-a").is_ok());
        assert!(check_node("ホスト/../x").is_ok(), "a value, never a key");
        for bad in ["", "a b", "a\u{7}", &"x".repeat(254)] {
            assert!(check_node(bad).is_err(), "{bad:?}");
        }
        assert!(default_node().is_ok());
    }
}
