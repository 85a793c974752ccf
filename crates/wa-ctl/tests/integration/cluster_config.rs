//! `[cluster]` (issue #10): read, checked and shown by `check`; without a
//! reachable etcd nothing runs; `status --cluster` reads etcd directly.
//! The failover cases with two supervisors are in `cluster_failover`.

use crate::etcd_support;
use crate::harness::{TestEnv, closed_port, command, run_with_deadline, stderr, wa_ctl_bin};

#[test]
fn check_shows_the_failover_timeline() {
    let env = TestEnv::new("[cluster]\nnode = \"host-a\"\nlease_ttl = \"30s\"\n");
    let out = env.ok(&["check"]);
    assert!(out.contains("[cluster]"), "{out}");
    // stop_timeout is 2s in the test config: three keepalives in the 27.5s
    // before the fence.
    assert!(out.contains("keepalive every            9s 166ms"), "{out}");
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

/// etcd unreachable means no ownership: the supervisor starts, but every
/// session stands by, with a reason that names the problem, and no worker
/// runs (safety over availability).
#[test]
fn without_etcd_nothing_runs_and_every_session_stands_by() {
    let port = closed_port();
    let env = TestEnv::with_worker(
        &["connect"],
        &format!(
            "[cluster]\nendpoints = [\"http://127.0.0.1:{port}\"]\nnode = \"host-a\"\nlease_ttl = \"30s\"\n"
        ),
    );
    env.ok(&["start"]);
    let session = env.wait_state("default", "standby");
    let reason = session["last_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("etcd is unreachable"), "{session}");
    assert_eq!(session["worker_pid"], serde_json::Value::Null);
    assert_eq!(session["owner"], serde_json::Value::Null);
    assert!(env.spawns().is_empty(), "no worker without ownership");
    assert!(env.worker_processes().is_empty());
    env.ok(&["stop"]);
}

/// Under systemd the watchdog fences a frozen supervisor; a WatchdogSec=
/// too long for the lease is refused before anything runs (exit 2, with
/// the limit), whatever starts the supervisor.
#[test]
fn a_watchdog_too_long_for_the_lease_is_refused() {
    let env = TestEnv::with_worker(
        &["connect"],
        &format!(
            "[cluster]\nendpoints = [\"http://127.0.0.1:{}\"]\nnode = \"host-a\"\nlease_ttl = \"10s\"\n",
            closed_port()
        ),
    );
    let run = |watchdog_usec: &str| {
        let mut cmd = command(&wa_ctl_bin());
        cmd.arg("--config")
            .arg(env.path().join("wa-ctl.toml"))
            .args(["start", "--foreground"])
            .env("WATCHDOG_USEC", watchdog_usec)
            .env_remove("WATCHDOG_PID")
            .env_remove("NOTIFY_SOCKET");
        run_with_deadline(cmd, std::time::Duration::from_secs(30))
    };
    // stop_timeout is 2s here: the limit is min(10s - 2s, 2/3 * 10s - 0.5s).
    let out = run("30000000");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("WatchdogSec=30s"), "{err}");
    assert!(err.contains("shorter than 6.166"), "{err}");
    assert!(env.spawns().is_empty());
    assert!(env.supervisors().is_empty());
}

/// `status --cluster` reads every session under the prefix from a real
/// etcd: owner node, epoch and published state, with the exact JSON shape of
/// issue #10, and exit 0 though this node runs nothing.
#[test]
fn status_cluster_lists_the_owners_from_etcd() {
    use wa_ctl_cluster::{Acquisition, EtcdOwnership, Ownership};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(cluster) = rt.block_on(etcd_support::Cluster::one()) else {
        return; // skipped with a printed reason (a failure under CI=true)
    };
    let endpoints = cluster.endpoints();
    let owner = rt
        .block_on(EtcdOwnership::connect(
            &endpoints,
            "/wa-test",
            "host-a",
            std::time::Duration::from_secs(30),
        ))
        .unwrap();
    let Acquisition::Acquired { epoch } = rt.block_on(owner.try_acquire("default")).unwrap() else {
        panic!("a fresh etcd has no owner");
    };
    assert!(
        rt.block_on(owner.publish_state("default", "connected"))
            .unwrap()
    );

    let env = TestEnv::new(&format!(
        "[cluster]\nendpoints = {}\nprefix = \"/wa-test/\"\nnode = \"host-b\"\nlease_ttl = \"30s\"\n",
        serde_json::to_string(&endpoints).unwrap()
    ));
    let out = env.ok(&["status", "--cluster", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "node": "host-b",
            "prefix": "/wa-test",
            "sessions": [{"id": "default", "owner": "host-a", "epoch": epoch, "state": "connected"}]
        })
    );
    let text = env.ok(&["status", "--cluster"]);
    assert!(text.contains("default  host-a"), "{text}");
    assert!(env.supervisors().is_empty(), "no supervisor needed");
    drop(owner);
    drop(cluster);
}

/// An etcd that cannot be reached is an error that names it, within the
/// timeout; a configuration without [cluster] is a usage error.
#[test]
fn status_cluster_says_what_is_wrong() {
    let port = closed_port();
    let env = TestEnv::new(&format!(
        "[cluster]\nendpoints = [\"http://127.0.0.1:{port}\"]\nlease_ttl = \"30s\"\n"
    ));
    let out = env.wa_ctl(&["status", "--cluster"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );

    let env = TestEnv::new("");
    let out = env.wa_ctl(&["status", "--cluster"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("needs a [cluster] table"),
        "{}",
        stderr(&out)
    );
}
