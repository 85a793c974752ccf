//! `[cluster]` (issue #10, first slice): read, checked, shown by `check`,
//! and refused by `start` until ownership across hosts is wired in, so that
//! a configuration that asks for it never runs as if it were alone.

use crate::harness::{TestEnv, stderr};

#[test]
fn check_shows_the_failover_timeline() {
    let env = TestEnv::new("[cluster]\nnode = \"host-a\"\nlease_ttl = \"30s\"\n");
    let out = env.ok(&["check"]);
    assert!(out.contains("[cluster]"), "{out}");
    assert!(out.contains("keepalive every            10s"), "{out}");
    assert!(out.contains("a standby takes over at    32s"), "{out}");
}

#[test]
fn a_timeline_that_cannot_hold_is_a_configuration_error() {
    // stop_timeout is 2s in the test config: a 2s lease cannot stop in time.
    let env = TestEnv::new("[cluster]\nlease_ttl = \"2s\"\n");
    let out = env.wa_ctl(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("key `cluster.lease_ttl`"), "{err}");
    assert!(
        err.contains("too short for [supervisor] stop_timeout"),
        "{err}"
    );
}

#[test]
fn start_refuses_until_ownership_is_wired() {
    let env = TestEnv::new("[cluster]\nnode = \"host-a\"\nlease_ttl = \"30s\"\n");
    let out = env.wa_ctl(&["start"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("issue #10 is in progress"),
        "{}",
        stderr(&out)
    );
    assert!(env.supervisors().is_empty());
}
