//! The key-value-with-revisions interface the state store is built on.
//!
//! It has etcd's shape on purpose (a global revision bumped once per
//! transaction, per-key `mod_rev`, compare-and-swap transactions, a change
//! feed), so the multi-machine backend can be etcd without touching the
//! typed layer above it.

use thiserror::Error;

/// One stored key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, a `/`-separated path.
    pub key: String,
    /// Revision of the transaction that last wrote the key.
    pub mod_rev: u64,
    /// The value bytes (JSON for every record mesh keeps).
    pub value: Vec<u8>,
}

/// A condition a transaction checks before it writes anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last written at exactly this revision.
    ModRev(String, u64),
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set a key to a value.
    Put(String, Vec<u8>),
    /// Remove a key (no error when absent).
    Delete(String),
}

/// Compares that must all hold, then ops applied atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions; any failing one aborts the transaction.
    pub compares: Vec<Compare>,
    /// Writes, applied in order under one new revision.
    pub ops: Vec<Op>,
}

impl Txn {
    /// A transaction with no conditions.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a condition.
    pub fn when(mut self, compare: Compare) -> Txn {
        self.compares.push(compare);
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Txn {
        self.ops.push(Op::Put(key.into(), value));
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(Op::Delete(key.into()));
        self
    }
}

/// One change in the feed: a key written or deleted at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Revision of the transaction.
    pub rev: u64,
    /// Key written.
    pub key: String,
    /// New value, `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// Why a KV call failed.
#[derive(Debug, Error)]
pub enum KvError {
    /// A compare of the transaction did not hold: someone else changed the
    /// key first. Nothing was written.
    #[error("conflict on `{0}`: it changed since it was read")]
    Conflict(String),
    /// The changes asked for were compacted away.
    #[error("revision {0} was compacted; re-read the keys")]
    Compacted(u64),
    /// The disk under the store is full: nothing was written.
    #[error("the data directory's disk is full ({0})")]
    Full(String),
    /// The backend failed.
    #[error("state store: {0}")]
    Backend(String),
}

/// The interface every state-store backend implements.
///
/// Calls block (SQLite is synchronous); async callers go through
/// `spawn_blocking`, as [`crate::store::Store`] does.
pub trait Kv: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError>;
    /// Reads every key that starts with `prefix`, in key order, with the
    /// revision the read saw.
    fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), KvError>;
    /// Reads every key under each prefix, all in one read transaction,
    /// with the revision that read saw.
    fn ranges(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, u64), KvError>;
    /// Checks the compares and, if all hold, applies the ops under one new
    /// revision, durably, before returning it.
    fn txn(&self, txn: Txn) -> Result<u64, KvError>;
    /// The latest revision.
    fn revision(&self) -> Result<u64, KvError>;
    /// Changes after revision `after`, oldest first.
    fn changes_since(&self, after: u64) -> Result<Vec<Change>, KvError>;
    /// A receiver that sees the latest revision every time one is committed.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// A lease of `ttl`: keys written with it vanish when it is not kept
    /// alive. Only a store several hosts share has them.
    fn grant_lease(&self, ttl: std::time::Duration) -> Result<LeaseId, KvError> {
        let _ = ttl;
        Err(no_leases())
    }
    /// Keeps a lease alive for another `ttl`; `false` when it had expired
    /// (its keys are gone).
    fn keep_lease(&self, lease: LeaseId) -> Result<bool, KvError> {
        let _ = lease;
        Err(no_leases())
    }
    /// Ends a lease now, deleting its keys.
    fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        let _ = lease;
        Err(no_leases())
    }
    /// Writes `key` bound to `lease`; with `only_if_absent`, only when no
    /// one holds the key ([`KvError::Conflict`] otherwise).
    fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
        only_if_absent: bool,
    ) -> Result<u64, KvError> {
        let _ = (key, value, lease, only_if_absent);
        Err(no_leases())
    }
}

/// A lease's id.
pub type LeaseId = i64;

fn no_leases() -> KvError {
    KvError::Backend("leases need a shared store (mesh up --store etcd://...)".into())
}
