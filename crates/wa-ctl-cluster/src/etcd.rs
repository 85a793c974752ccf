//! [`EtcdOwnership`]: the [`Ownership`] backend on etcd's v3 API.
//!
//! One lease per supervisor, granted at [`EtcdOwnership::connect`]: every
//! owner and state key of this node is attached to it, so the keepalive
//! traffic grows with hosts, not with sessions, and one revoke (or one
//! expiry) ends every ownership of the node at once.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions, WatchStream,
};

use crate::key::{Prefix, SessionKey, owner_key, parse_session_key, state_key};
use crate::ownership::{
    Acquisition, KeepaliveAck, OwnerChange, OwnerWatch, Ownership, OwnershipError, SessionRecord,
};

/// How long the client waits for a TCP connection to a member. A member
/// that does not answer in this time is as good as down: the next endpoint
/// is tried, and the caller's own deadline bounds the whole operation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 pings on an idle connection, so that a dead member is noticed
/// before the lease's TTL rather than after the kernel's TCP timeout.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

fn etcd(operation: &'static str) -> impl FnOnce(etcd_client::Error) -> OwnershipError {
    move |source| OwnershipError::Etcd { operation, source }
}

/// The lease TTL in etcd's unit, whole seconds.
fn ttl_seconds(lease_ttl: Duration) -> Result<i64, OwnershipError> {
    if lease_ttl.subsec_nanos() != 0 || lease_ttl.as_secs() == 0 {
        return Err(OwnershipError::BadLeaseTtl { ttl: lease_ttl });
    }
    i64::try_from(lease_ttl.as_secs()).map_err(|_| OwnershipError::BadLeaseTtl { ttl: lease_ttl })
}

/// A supervisor's ownership of sessions, on etcd.
pub struct EtcdOwnership {
    client: Client,
    prefix: Prefix,
    node: String,
    lease_id: i64,
    granted_ttl: Duration,
    /// When the grant was asked for: the lease's first "keepalive".
    granted_at: Instant,
    /// The keepalive stream, opened at the first keepalive and again after
    /// an error (the member it ran to may be the one that died).
    keepalive_stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// Send times of keepalives not answered yet, oldest first. etcd
    /// answers a stream's keepalives in order, so the oldest is the one an
    /// answer acknowledges. A keepalive cancelled after its send leaves its
    /// time here: the next answer is then paired with the older send time,
    /// which can only make the deadline earlier.
    unanswered_sends: VecDeque<Instant>,
    revoked: bool,
}

impl std::fmt::Debug for EtcdOwnership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOwnership")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("lease_id", &self.lease_id)
            .field("granted_ttl", &self.granted_ttl)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A clone shares the connection and the lease, and keeps a keepalive
/// stream of its own: the supervisor renews the lease from one clone while
/// others acquire, release and publish concurrently.
impl Clone for EtcdOwnership {
    fn clone(&self) -> Self {
        EtcdOwnership {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            node: self.node.clone(),
            lease_id: self.lease_id,
            granted_ttl: self.granted_ttl,
            granted_at: self.granted_at,
            keepalive_stream: None,
            unanswered_sends: VecDeque::new(),
            revoked: self.revoked,
        }
    }
}

impl EtcdOwnership {
    /// Connects to `endpoints` and grants this supervisor's one lease, of
    /// `lease_ttl` (whole seconds). `node` is only ever a value, so it may
    /// be any text.
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        prefix: &str,
        node: &str,
        lease_ttl: Duration,
    ) -> Result<EtcdOwnership, OwnershipError> {
        let prefix = Prefix::new(prefix)?;
        let ttl = ttl_seconds(lease_ttl)?;
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(etcd("connect"))?;
        let granted_at = Instant::now();
        let grant = client
            .lease_grant(ttl, None)
            .await
            .map_err(etcd("lease grant"))?;
        // etcd may grant more than asked (never less than its minimum);
        // the supervisor's deadline still uses its own, shorter, TTL.
        let granted_ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));
        Ok(EtcdOwnership {
            client,
            prefix,
            node: node.to_owned(),
            lease_id: grant.id(),
            granted_ttl,
            granted_at,
            keepalive_stream: None,
            unanswered_sends: VecDeque::new(),
            revoked: false,
        })
    }

    /// The grant as a first acknowledged keepalive: its send time (the
    /// lease's TTL started after it) and the TTL etcd granted.
    pub fn grant_ack(&self) -> KeepaliveAck {
        KeepaliveAck {
            sent_at: self.granted_at,
            ttl: self.granted_ttl,
        }
    }

    /// This supervisor's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The validated prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The id of this supervisor's lease.
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// The TTL etcd granted the lease.
    pub fn granted_ttl(&self) -> Duration {
        self.granted_ttl
    }

    fn ensure_live(&self) -> Result<(), OwnershipError> {
        if self.revoked {
            return Err(OwnershipError::LeaseLost {
                lease_id: self.lease_id,
            });
        }
        Ok(())
    }

    async fn txn(&self, operation: &'static str, txn: Txn) -> Result<TxnResponse, OwnershipError> {
        self.ensure_live()?;
        // Clones share one connection: a clone is a handle, not a socket.
        self.client.clone().txn(txn).await.map_err(etcd(operation))
    }

    /// [`OwnershipError::LeaseLost`] if the server says the lease is gone,
    /// else the error `source` from a keepalive.
    async fn lease_gone_or(&self, source: etcd_client::Error) -> OwnershipError {
        match self
            .client
            .clone()
            .lease_time_to_live(self.lease_id, None)
            .await
        {
            // etcd answers TTL -1 for a lease it does not have.
            Ok(answer) if answer.ttl() <= 0 => OwnershipError::LeaseLost {
                lease_id: self.lease_id,
            },
            _ => OwnershipError::Etcd {
                operation: "lease keepalive",
                source,
            },
        }
    }

    async fn keepalive_once(&mut self) -> Result<KeepaliveAck, OwnershipError> {
        self.ensure_live()?;
        if self.keepalive_stream.is_none() {
            // Opening the stream sends a first keepalive and reads its
            // answer. The client reports a lease gone at that point as the
            // same error kind as a broken channel, so ask the server which
            // it was rather than read the message.
            let stream = match self.client.lease_keep_alive(self.lease_id).await {
                Ok(stream) => stream,
                Err(source) => return Err(self.lease_gone_or(source).await),
            };
            self.unanswered_sends.clear();
            self.keepalive_stream = Some(stream);
        }
        let Some((keeper, stream)) = self.keepalive_stream.as_mut() else {
            return Err(OwnershipError::StreamClosed {
                stream: "keepalive",
            });
        };
        let sent_at = Instant::now();
        keeper.keep_alive().await.map_err(etcd("lease keepalive"))?;
        self.unanswered_sends.push_back(sent_at);
        let answer = stream
            .message()
            .await
            .map_err(etcd("lease keepalive"))?
            .ok_or(OwnershipError::StreamClosed {
                stream: "keepalive",
            })?;
        let sent_at = self.unanswered_sends.pop_front().unwrap_or(sent_at);
        // etcd answers a keepalive for a lease it no longer has with TTL 0.
        let ttl = u64::try_from(answer.ttl()).unwrap_or(0);
        if ttl == 0 {
            return Err(OwnershipError::LeaseLost {
                lease_id: self.lease_id,
            });
        }
        Ok(KeepaliveAck {
            sent_at,
            ttl: Duration::from_secs(ttl),
        })
    }
}

impl Ownership for EtcdOwnership {
    type Watch = EtcdOwnerWatch;

    async fn try_acquire(&self, session_id: &str) -> Result<Acquisition, OwnershipError> {
        let key = owner_key(&self.prefix, session_id)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.node.as_str(),
                Some(PutOptions::new().with_lease(self.lease_id)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let answer = self.txn("acquire", txn).await?;
        if answer.succeeded() {
            // The key was created by this transaction, so its
            // create_revision is the transaction's revision.
            let epoch = answer.header().map(|header| header.revision()).ok_or(
                OwnershipError::Unexpected {
                    operation: "acquire",
                },
            )?;
            return Ok(Acquisition::Acquired { epoch });
        }
        let owner = answer.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        // The compare and the get are one transaction, so the key that
        // failed the compare is there for the get.
        let owner = owner.ok_or(OwnershipError::Unexpected {
            operation: "acquire",
        })?;
        let epoch = owner.create_revision();
        if owner.lease() == self.lease_id {
            // Ours already, through this very lease: acquiring is
            // idempotent, and the epoch is the one we got the first time.
            return Ok(Acquisition::Acquired { epoch });
        }
        Ok(Acquisition::Owned {
            by: String::from_utf8_lossy(owner.value()).into_owned(),
            epoch,
        })
    }

    async fn release(&self, session_id: &str) -> Result<bool, OwnershipError> {
        let owner = owner_key(&self.prefix, session_id)?;
        let state = state_key(&self.prefix, session_id)?;
        // Owning is "the key is attached to our lease": the node name is
        // not enough, two supervisors could share one by mistake.
        let txn = Txn::new()
            .when([Compare::lease(
                owner.as_str(),
                CompareOp::Equal,
                self.lease_id,
            )])
            .and_then([TxnOp::delete(owner, None), TxnOp::delete(state, None)]);
        Ok(self.txn("release", txn).await?.succeeded())
    }

    async fn keepalive(&mut self) -> Result<KeepaliveAck, OwnershipError> {
        let result = self.keepalive_once().await;
        if matches!(
            result,
            Err(OwnershipError::Etcd { .. } | OwnershipError::StreamClosed { .. })
        ) {
            // Open a new stream next time: the old one may run to a dead
            // member, and the client picks a live one for a new stream.
            self.keepalive_stream = None;
        }
        result
    }

    async fn watch(&self) -> Result<EtcdOwnerWatch, OwnershipError> {
        self.ensure_live()?;
        let stream = self
            .client
            .clone()
            .watch(
                self.prefix.sessions_dir(),
                Some(WatchOptions::new().with_prefix()),
            )
            .await
            .map_err(etcd("watch"))?;
        Ok(EtcdOwnerWatch {
            stream,
            prefix: self.prefix.clone(),
            pending: VecDeque::new(),
        })
    }

    async fn revoke(&mut self) -> Result<(), OwnershipError> {
        self.ensure_live()?;
        self.keepalive_stream = None;
        self.client
            .lease_revoke(self.lease_id)
            .await
            .map_err(etcd("lease revoke"))?;
        self.revoked = true;
        Ok(())
    }

    async fn publish_state(&self, session_id: &str, state: &str) -> Result<bool, OwnershipError> {
        let owner = owner_key(&self.prefix, session_id)?;
        let key = state_key(&self.prefix, session_id)?;
        let txn = Txn::new()
            .when([Compare::lease(owner, CompareOp::Equal, self.lease_id)])
            .and_then([TxnOp::put(
                key,
                state,
                Some(PutOptions::new().with_lease(self.lease_id)),
            )]);
        Ok(self.txn("publish state", txn).await?.succeeded())
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, OwnershipError> {
        list_sessions(self.client.clone(), &self.prefix).await
    }
}

/// Every session under `prefix`, read without a lease (`wa-ctl status
/// --cluster`: a read changes nothing and needs no ownership).
pub async fn cluster_view<E: AsRef<str>>(
    endpoints: &[E],
    prefix: &str,
) -> Result<Vec<SessionRecord>, OwnershipError> {
    let prefix = Prefix::new(prefix)?;
    let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
    let client = Client::connect(endpoints, Some(options))
        .await
        .map_err(etcd("connect"))?;
    // etcd-client's balanced channel can pick a member that is gone
    // (etcdv3/etcd-client#39): a failed read is tried again, on whichever
    // member the channel picks next, a few times.
    let mut tries = 0;
    loop {
        match list_sessions(client.clone(), &prefix).await {
            Err(OwnershipError::Etcd { .. }) if tries < LIST_RETRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

/// How many times `cluster_view` tries a read again after a transport
/// error.
const LIST_RETRIES: u32 = 5;

async fn list_sessions(
    mut client: Client,
    prefix: &Prefix,
) -> Result<Vec<SessionRecord>, OwnershipError> {
    let answer = client
        .get(prefix.sessions_dir(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(etcd("list"))?;
    let mut sessions: BTreeMap<String, SessionRecord> = BTreeMap::new();
    for kv in answer.kvs() {
        let Ok(key) = std::str::from_utf8(kv.key()) else {
            continue;
        };
        // Keys under the prefix that are not ours are someone else's
        // business (a newer version's, say): skipped, not an error.
        let Some((id, which)) = parse_session_key(prefix, key) else {
            continue;
        };
        let record = sessions
            .entry(id.to_owned())
            .or_insert_with(|| SessionRecord {
                id: id.to_owned(),
                owner: None,
                epoch: None,
                state: None,
            });
        let value = String::from_utf8_lossy(kv.value()).into_owned();
        match which {
            SessionKey::Owner => {
                record.owner = Some(value);
                record.epoch = Some(kv.create_revision());
            }
            SessionKey::State => record.state = Some(value),
        }
    }
    Ok(sessions.into_values().collect())
}

/// The watch over every owner key under a prefix.
pub struct EtcdOwnerWatch {
    /// Holds the request side too: dropping it would cancel the watch.
    stream: WatchStream,
    prefix: Prefix,
    /// Changes from an answer not handed out yet: one answer can carry
    /// several events, and they wait here so that `next_change` stays
    /// cancel-safe.
    pending: VecDeque<OwnerChange>,
}

impl std::fmt::Debug for EtcdOwnerWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOwnerWatch")
            .field("prefix", &self.prefix)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl OwnerWatch for EtcdOwnerWatch {
    async fn next_change(&mut self) -> Result<OwnerChange, OwnershipError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(change);
            }
            let answer = self
                .stream
                .message()
                .await
                .map_err(etcd("watch"))?
                .ok_or(OwnershipError::StreamClosed { stream: "watch" })?;
            if answer.canceled() {
                return Err(OwnershipError::WatchCancelled {
                    reason: answer.cancel_reason().to_owned(),
                });
            }
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = std::str::from_utf8(kv.key()) else {
                    continue;
                };
                let Some((id, SessionKey::Owner)) = parse_session_key(&self.prefix, key) else {
                    continue;
                };
                let session_id = id.to_owned();
                self.pending.push_back(match event.event_type() {
                    EventType::Put => OwnerChange::Owned {
                        session_id,
                        by: String::from_utf8_lossy(kv.value()).into_owned(),
                        epoch: kv.create_revision(),
                    },
                    EventType::Delete => OwnerChange::Released { session_id },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttl_is_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_secs(10)).unwrap(), 10);
        for bad in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_millis(999),
            Duration::MAX,
        ] {
            assert!(
                matches!(ttl_seconds(bad), Err(OwnershipError::BadLeaseTtl { .. })),
                "{bad:?}"
            );
        }
    }
}
