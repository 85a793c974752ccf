//! `EtcdOwnership` against a real etcd on loopback (issue #10). Each test
//! starts its own members; every wait has a deadline, and every member is
//! killed and reaped when its test ends, passed or not.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use support::Cluster;
use tokio::task::JoinSet;
use wa_ctl_cluster::{
    Acquisition, EtcdOwnership, KeyError, OwnerChange, OwnerWatch, Ownership, OwnershipError,
    SessionRecord,
};

const PREFIX: &str = "/wa-ctl-test";
const TTL: Duration = Duration::from_secs(2);

/// Fails the test if `future` is not done within `limit`.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

async fn node(cluster: &Cluster, name: &str) -> EtcdOwnership {
    within(
        Duration::from_secs(10),
        "connect",
        EtcdOwnership::connect(&cluster.endpoints(), PREFIX, name, TTL),
    )
    .await
    .expect("connect and grant a lease")
}

/// Every key in the whole etcd, to check that nothing landed outside the
/// prefix.
async fn all_keys(cluster: &Cluster) -> Vec<String> {
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
    let answer = client
        .get(vec![0u8], Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    answer
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

#[tokio::test]
async fn one_of_two_nodes_acquires_and_the_other_sees_the_owner() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let a = node(&cluster, "host-a").await;
    let b = node(&cluster, "host-b").await;
    let second = Duration::from_secs(5);

    let Acquisition::Acquired { epoch } = within(second, "a acquires", a.try_acquire("default"))
        .await
        .unwrap()
    else {
        panic!("the first node must acquire a free session");
    };
    assert!(epoch > 0);
    assert_eq!(
        within(second, "b acquires", b.try_acquire("default"))
            .await
            .unwrap(),
        Acquisition::Owned {
            by: "host-a".into(),
            epoch
        }
    );
    // Acquiring again through the same lease is idempotent.
    assert_eq!(
        within(second, "a again", a.try_acquire("default"))
            .await
            .unwrap(),
        Acquisition::Acquired { epoch }
    );
    // Releasing what another node owns does nothing.
    assert!(
        !within(second, "b release", b.release("default"))
            .await
            .unwrap()
    );
    assert_eq!(
        within(second, "b again", b.try_acquire("default"))
            .await
            .unwrap(),
        Acquisition::Owned {
            by: "host-a".into(),
            epoch
        }
    );
}

#[tokio::test]
async fn twenty_concurrent_races_have_one_winner_each() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let mut nodes = Vec::new();
    for name in ["host-a", "host-b", "host-c"] {
        nodes.push(Arc::new(node(&cluster, name).await));
    }
    let mut races = JoinSet::new();
    for race in 0..20 {
        for contender in &nodes {
            let contender = Arc::clone(contender);
            races.spawn(async move {
                let session = format!("race-{race}");
                let result = contender.try_acquire(&session).await.unwrap();
                (race, contender.node().to_owned(), result)
            });
        }
    }
    let results = within(Duration::from_secs(20), "the races", races.join_all()).await;
    assert_eq!(results.len(), 60);
    for race in 0..20 {
        let of_race: Vec<_> = results.iter().filter(|(r, _, _)| *r == race).collect();
        let winners: Vec<_> = of_race
            .iter()
            .filter_map(|(_, name, result)| match result {
                Acquisition::Acquired { epoch } => Some((name.clone(), *epoch)),
                Acquisition::Owned { .. } => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "race {race}: {of_race:?}");
        let (winner, epoch) = &winners[0];
        for (_, _, result) in &of_race {
            if let Acquisition::Owned { by, epoch: seen } = result {
                assert_eq!((by, seen), (winner, epoch), "race {race}");
            }
        }
    }
}

#[tokio::test]
async fn release_lets_the_other_acquire_and_the_epoch_grows() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let a = node(&cluster, "host-a").await;
    let b = node(&cluster, "host-b").await;
    let limit = Duration::from_secs(5);

    let Acquisition::Acquired { epoch: first } = within(limit, "a acquires", a.try_acquire("s1"))
        .await
        .unwrap()
    else {
        panic!("a must acquire");
    };
    assert!(
        within(limit, "a publishes", a.publish_state("s1", "connected"))
            .await
            .unwrap()
    );
    assert!(within(limit, "a releases", a.release("s1")).await.unwrap());
    // The state went with the owner key.
    assert_eq!(within(limit, "list", b.list()).await.unwrap(), vec![]);
    let Acquisition::Acquired { epoch: second } = within(limit, "b acquires", b.try_acquire("s1"))
        .await
        .unwrap()
    else {
        panic!("b must acquire a released session");
    };
    assert!(second > first, "epoch {second} after {first}");
    assert!(
        !within(limit, "a releases again", a.release("s1"))
            .await
            .unwrap()
    );
    assert_eq!(
        within(limit, "a acquires again", a.try_acquire("s1"))
            .await
            .unwrap(),
        Acquisition::Owned {
            by: "host-b".into(),
            epoch: second
        }
    );
}

#[tokio::test]
async fn a_lease_not_kept_alive_expires_and_the_watch_sees_the_deletion() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let mut silent = node(&cluster, "host-a").await;
    let mut standby = node(&cluster, "host-b").await;
    let limit = Duration::from_secs(5);

    let mut watch = within(limit, "watch", standby.watch()).await.unwrap();
    let acquired_at = Instant::now();
    let Acquisition::Acquired { epoch } = within(limit, "acquire", silent.try_acquire("s1"))
        .await
        .unwrap()
    else {
        panic!("must acquire");
    };
    assert_eq!(
        within(limit, "the put", watch.next_change()).await.unwrap(),
        OwnerChange::Owned {
            session_id: "s1".into(),
            by: "host-a".into(),
            epoch
        }
    );
    // The standby keeps its own lease alive while it waits; the owner
    // sends nothing, so its lease runs out after the TTL.
    let deletion = async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                change = watch.next_change() => return change,
                _ = tick.tick() => {
                    standby.keepalive().await.expect("the standby's keepalive");
                }
            }
        }
    };
    let change = within(TTL * 5, "the expiry", deletion).await.unwrap();
    let expired_after = acquired_at.elapsed();
    assert_eq!(
        change,
        OwnerChange::Released {
            session_id: "s1".into()
        }
    );
    assert!(
        expired_after >= TTL - Duration::from_millis(100),
        "expired after {expired_after:?}, before the TTL of {TTL:?}"
    );
    eprintln!("lease of {TTL:?} expired after {expired_after:?}");
    assert!(matches!(
        within(limit, "acquire", standby.try_acquire("s1")).await.unwrap(),
        Acquisition::Acquired { epoch: later } if later > epoch
    ));
    // The silent owner, back, learns that its lease is gone: a loss, not
    // a transient error.
    assert!(matches!(
        within(limit, "late keepalive", silent.keepalive()).await,
        Err(OwnershipError::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn revoke_deletes_every_key_of_the_node_at_once() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let mut a = node(&cluster, "host-a").await;
    let b = node(&cluster, "host-b").await;
    let limit = Duration::from_secs(5);

    let sessions = ["s1", "s2", "s3"];
    for id in sessions {
        assert!(matches!(
            within(limit, "acquire", a.try_acquire(id)).await.unwrap(),
            Acquisition::Acquired { .. }
        ));
        assert!(
            within(limit, "publish", a.publish_state(id, "connected"))
                .await
                .unwrap()
        );
    }
    assert!(matches!(
        within(limit, "b acquires", b.try_acquire("b-own"))
            .await
            .unwrap(),
        Acquisition::Acquired { .. }
    ));
    let mut watch = within(limit, "watch", b.watch()).await.unwrap();
    within(limit, "revoke", a.revoke()).await.unwrap();
    // Gone by the time revoke returns: nothing of a's is left to list.
    let left = within(limit, "list", b.list()).await.unwrap();
    assert_eq!(
        left.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["b-own"]
    );
    let mut released = Vec::new();
    for _ in sessions {
        match within(limit, "the deletions", watch.next_change())
            .await
            .unwrap()
        {
            OwnerChange::Released { session_id } => released.push(session_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    released.sort();
    assert_eq!(released, sessions);
    // A revoked ownership refuses to act instead of acting on a dead lease.
    assert!(matches!(
        a.try_acquire("s1").await,
        Err(OwnershipError::LeaseLost { .. })
    ));
    assert!(matches!(
        a.keepalive().await,
        Err(OwnershipError::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn keepalive_reports_the_send_time_and_the_ttl() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let mut a = node(&cluster, "host-a").await;
    let mut previous = None;
    for _ in 0..3 {
        let before = Instant::now();
        let ack = within(Duration::from_secs(5), "keepalive", a.keepalive())
            .await
            .unwrap();
        let after = Instant::now();
        assert!(before <= ack.sent_at && ack.sent_at <= after, "{ack:?}");
        assert!(ack.ttl >= TTL && ack.ttl <= a.granted_ttl(), "{ack:?}");
        if let Some(previous) = previous {
            assert!(ack.sent_at > previous);
        }
        previous = Some(ack.sent_at);
        let deadline =
            wa_ctl_cluster::ownership_deadline(ack.sent_at, TTL, Duration::from_millis(500))
                .unwrap();
        assert_eq!(deadline, ack.sent_at + Duration::from_millis(1500));
    }
}

#[tokio::test]
async fn list_shows_owner_epoch_and_published_state() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let a = node(&cluster, "host-a").await;
    let b = node(&cluster, "host-b").await;
    let limit = Duration::from_secs(5);

    let Acquisition::Acquired { epoch: e1 } = within(limit, "acquire", a.try_acquire("alpha"))
        .await
        .unwrap()
    else {
        panic!("must acquire");
    };
    let Acquisition::Acquired { epoch: e2 } = within(limit, "acquire", b.try_acquire("beta"))
        .await
        .unwrap()
    else {
        panic!("must acquire");
    };
    assert!(
        within(limit, "publish", a.publish_state("alpha", "connected"))
            .await
            .unwrap()
    );
    assert!(
        within(limit, "publish", a.publish_state("alpha", "qr"))
            .await
            .unwrap()
    );
    // Only the owner publishes.
    assert!(
        !within(limit, "publish", b.publish_state("alpha", "stolen"))
            .await
            .unwrap()
    );
    assert!(
        !within(limit, "publish", a.publish_state("gamma", "none"))
            .await
            .unwrap()
    );
    assert_eq!(
        within(limit, "list", b.list()).await.unwrap(),
        vec![
            SessionRecord {
                id: "alpha".into(),
                owner: Some("host-a".into()),
                epoch: Some(e1),
                state: Some("qr".into()),
            },
            SessionRecord {
                id: "beta".into(),
                owner: Some("host-b".into()),
                epoch: Some(e2),
                state: None,
            },
        ]
    );
}

#[tokio::test]
async fn odd_ids_prefixes_and_node_names_cannot_escape_the_prefix() {
    let Some(cluster) = Cluster::one().await else {
        return;
    };
    let limit = Duration::from_secs(5);
    for prefix in ["", "wa-ctl", "/", "/wa-ctl/", "/a/../b", "/a//b", "/a\0b"] {
        assert!(
            matches!(
                EtcdOwnership::connect(&cluster.endpoints(), prefix, "n", TTL).await,
                Err(OwnershipError::Key(_))
            ),
            "{prefix:?}"
        );
    }
    let odd_node = "host/../../x\0%2F名前";
    let a = within(
        limit,
        "connect",
        EtcdOwnership::connect(&cluster.endpoints(), PREFIX, odd_node, TTL),
    )
    .await
    .unwrap();
    for id in ["../x", "a/b", "..", "", "a\0b", "%2e%2e", "名前", "/"] {
        assert!(
            matches!(
                a.try_acquire(id).await,
                Err(OwnershipError::Key(KeyError::BadSessionId { .. }))
            ),
            "{id:?}"
        );
        assert!(a.release(id).await.is_err(), "{id:?}");
        assert!(a.publish_state(id, "x").await.is_err(), "{id:?}");
    }
    assert!(matches!(
        within(limit, "acquire", a.try_acquire("ok")).await.unwrap(),
        Acquisition::Acquired { .. }
    ));
    assert!(
        within(limit, "publish", a.publish_state("ok", "../../\0"))
            .await
            .unwrap()
    );
    let list = within(limit, "list", a.list()).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].owner.as_deref(), Some(odd_node));
    assert_eq!(list[0].state.as_deref(), Some("../../\0"));
    let keys = within(limit, "every key", all_keys(&cluster)).await;
    assert_eq!(
        keys,
        [
            "/wa-ctl-test/sessions/ok/owner",
            "/wa-ctl-test/sessions/ok/state"
        ]
    );
}

#[tokio::test]
async fn three_members_lose_their_leader_and_keep_the_lease_and_the_key() {
    let Some(mut cluster) = Cluster::three().await else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let mut a = within(
        Duration::from_secs(10),
        "connect",
        EtcdOwnership::connect(&cluster.endpoints(), PREFIX, "host-a", ttl),
    )
    .await
    .unwrap();
    let Acquisition::Acquired { epoch } =
        within(ttl, "acquire", a.try_acquire("s1")).await.unwrap()
    else {
        panic!("must acquire");
    };
    within(ttl, "first keepalive", a.keepalive()).await.unwrap();

    let killed = within(
        Duration::from_secs(10),
        "find the leader",
        cluster.kill_leader(),
    )
    .await;
    let killed_at = Instant::now();
    // Keep the lease alive as the supervisor will, every ttl/3, through
    // the election; a keepalive may fail while the client moves to a live
    // member, but one must succeed within every TTL.
    let mut last_ack = killed_at;
    let mut n_failures = 0;
    while killed_at.elapsed() < ttl * 3 {
        match tokio::time::timeout(Duration::from_secs(1), a.keepalive()).await {
            Ok(Ok(ack)) => {
                assert!(
                    ack.sent_at.duration_since(last_ack) < ttl,
                    "no keepalive acknowledged for {:?}",
                    ack.sent_at.duration_since(last_ack)
                );
                last_ack = ack.sent_at;
            }
            Ok(Err(OwnershipError::LeaseLost { .. })) => panic!("the lease was lost"),
            Ok(Err(_)) | Err(_) => n_failures += 1,
        }
        assert!(
            last_ack.elapsed() < ttl,
            "no keepalive acknowledged for {:?} after killing member {killed}",
            last_ack.elapsed()
        );
        // The supervisor's keepalive cadence (lease_ttl / 3), not a
        // synchronisation: each round asserts on the answer it got.
        tokio::time::sleep(ttl / 3).await;
    }
    eprintln!("leader m{killed} killed; {n_failures} keepalives failed meanwhile");
    let survivors: Vec<String> = cluster
        .endpoints()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != killed)
        .map(|(_, url)| url)
        .collect();
    let observer = within(
        Duration::from_secs(10),
        "connect to the survivors",
        EtcdOwnership::connect(&survivors, PREFIX, "host-b", ttl),
    )
    .await
    .unwrap();
    assert_eq!(
        within(ttl, "list", observer.list()).await.unwrap(),
        vec![SessionRecord {
            id: "s1".into(),
            owner: Some("host-a".into()),
            epoch: Some(epoch),
            state: None,
        }]
    );
    assert_eq!(
        within(ttl, "acquire", observer.try_acquire("s1"))
            .await
            .unwrap(),
        Acquisition::Owned {
            by: "host-a".into(),
            epoch
        }
    );
}
