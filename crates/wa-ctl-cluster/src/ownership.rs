//! The ownership backend as a trait, so that a second backend can follow
//! etcd, and the values every backend speaks in.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::key::KeyError;

/// The result of trying to take a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    /// This node owns the session now (or already did, through its lease).
    Acquired {
        /// The owner key's `create_revision`: the fencing token. It grows
        /// with every new owner, because a key created later has a higher
        /// revision.
        epoch: i64,
    },
    /// Another owner holds the session.
    Owned {
        /// The owner's node name, as it wrote it (not validated: a value).
        by: String,
        /// The owner's epoch.
        epoch: i64,
    },
}

/// A keepalive that the backend acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveAck {
    /// When the acknowledged keepalive was sent. The supervisor's deadline
    /// starts here (see [`crate::ownership_deadline`]).
    pub sent_at: Instant,
    /// The TTL the server acknowledged.
    pub ttl: Duration,
}

/// A change of a session's owner key, as a watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerChange {
    /// The owner key was written: a new owner (or the same one again).
    Owned {
        /// The session.
        session_id: String,
        /// The owner's node name.
        by: String,
        /// The owner's epoch.
        epoch: i64,
    },
    /// The owner key is gone: released, revoked or expired. A standby may
    /// try to take the session (after its grace).
    Released {
        /// The session.
        session_id: String,
    },
}

/// One session as the cluster view shows it (`status --cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session id.
    pub id: String,
    /// The owner's node name, or `None` when nobody owns it (a state key
    /// outlived by a moment its owner key).
    pub owner: Option<String>,
    /// The owner's epoch, with `owner`.
    pub epoch: Option<i64>,
    /// What the owner last published, if anything.
    pub state: Option<String>,
}

/// What went wrong talking to the ownership backend.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// A prefix or session id that cannot be a key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The lease TTL is not a whole number of seconds between 1 s and what
    /// etcd accepts.
    #[error("lease ttl {ttl:?} must be a whole number of seconds, at least 1 s")]
    BadLeaseTtl {
        /// The TTL asked for.
        ttl: Duration,
    },
    /// The backend refused or failed an operation.
    #[error("etcd {operation} failed")]
    Etcd {
        /// What was being done, such as `"lease grant"`.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// The lease is gone: expired or revoked. Nothing this node owned is
    /// owned any more.
    #[error("lease {lease_id:x} is gone (expired or revoked)")]
    LeaseLost {
        /// The lease id.
        lease_id: i64,
    },
    /// A stream from the backend ended.
    #[error("etcd closed the {stream} stream")]
    StreamClosed {
        /// Which stream: `"keepalive"` or `"watch"`.
        stream: &'static str,
    },
    /// The backend cancelled a watch, for example because its start
    /// revision was compacted. The caller re-reads and watches again.
    #[error("etcd cancelled the watch: {reason}")]
    WatchCancelled {
        /// The reason etcd gave.
        reason: String,
    },
    /// An answer that the protocol does not allow, such as a transaction
    /// without its header.
    #[error("unexpected answer from etcd to {operation}")]
    Unexpected {
        /// What was being done.
        operation: &'static str,
    },
}

/// A stream of changes to owner keys. Cancel-safe: dropping a pending
/// [`OwnerWatch::next_change`] loses nothing, so it can sit in a
/// `tokio::select!`.
pub trait OwnerWatch {
    /// The next change, or an error; after an error, watch again.
    fn next_change(&mut self) -> impl Future<Output = Result<OwnerChange, OwnershipError>> + Send;
}

/// Session ownership across hosts: one lease per supervisor, and one owner
/// key per session attached to it.
///
/// Every method is async and never blocks a thread. The supervisor starts
/// its watch before it first tries to acquire, so that a release between
/// an [`Acquisition::Owned`] answer and the watch cannot be missed.
pub trait Ownership {
    /// The stream [`Ownership::watch`] returns.
    type Watch: OwnerWatch + Send;

    /// Takes `session_id` if nobody owns it, atomically.
    fn try_acquire(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<Acquisition, OwnershipError>> + Send;

    /// Gives `session_id` up, if this node owns it; returns whether it did.
    fn release(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<bool, OwnershipError>> + Send;

    /// Renews the lease once and reports what the server acknowledged.
    fn keepalive(&mut self) -> impl Future<Output = Result<KeepaliveAck, OwnershipError>> + Send;

    /// Watches every owner key under the prefix, from now on.
    fn watch(&self) -> impl Future<Output = Result<Self::Watch, OwnershipError>> + Send;

    /// Revokes the lease: every key of this node goes at once. The value
    /// cannot be used for ownership afterwards.
    fn revoke(&mut self) -> impl Future<Output = Result<(), OwnershipError>> + Send;

    /// Publishes a session's state for the cluster view, only while this
    /// node owns the session; returns whether it did.
    fn publish_state(
        &self,
        session_id: &str,
        state: &str,
    ) -> impl Future<Output = Result<bool, OwnershipError>> + Send;

    /// Every session under the prefix, sorted by id.
    fn list(&self) -> impl Future<Output = Result<Vec<SessionRecord>, OwnershipError>> + Send;
}
