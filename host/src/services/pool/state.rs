//! What a pool holds: its settings, its slots and the instance each
//! holds, the counts that bound it, and what it learned about its code.
//! The behaviour is in the files beside this one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use crate::model::{HealthCheck, InstanceStatus, ServiceKey};
use crate::services::code::{Code, Handler};
use crate::services::directory::Identity;
use crate::services::parts::Parts;
use crate::services::spec::{CodeProblem, Spec};

/// The settings a pool is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Instances (slots).
    pub instances: u32,
    /// Whether instances serve more than one request.
    pub reuse: Reuse,
    /// Keep instances live (a web service's), rather than starting them on
    /// the first call (a worker's).
    pub warm: bool,
    /// CPU time one request may use.
    pub cpu_limit: Duration,
}

/// Whether a pool's instances serve more than one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Reused until a component shows it cannot be, then fresh.
    Auto,
    /// Always reused, whatever fails (`--reuse-instances`).
    Always,
    /// A fresh instance for every request (`--fresh-per-request`).
    Never,
}

/// A live instance waiting for its next request.
pub(super) struct Ready {
    pub(super) handler: Box<dyn Handler>,
    /// Requests it has served.
    pub(super) served: u32,
}

/// One slot: an instance of the service, live or not.
pub(super) struct WebSlot {
    pub(super) status: InstanceStatus,
    /// Taken by a request or a refill.
    pub(super) busy: bool,
    /// Its live instance, while it waits for a request.
    pub(super) ready: Option<Ready>,
    /// Failures in a row, for the back-off.
    pub(super) failures: u32,
    /// Skipped by requests until then, after a failure.
    pub(super) backoff_until: Option<Instant>,
    /// Whether the slot may hold an instance and take requests: a rollout
    /// turns a new pool's slots on one at a time, and the old pool's off.
    pub(super) enabled: bool,
    /// Health checks failed in a row by its live instance.
    pub(super) unhealthy: u32,
}

/// The slots and the queue, under one lock.
pub(super) struct Inner {
    pub(super) slots: Vec<WebSlot>,
    /// Requests waiting for a free slot.
    pub(super) waiting: usize,
}

/// One-off instances one pool may have for cyclic calls at once: a cycle
/// needs one per pass through the service, and a chain has at most
/// [`crate::runtime::MAX_HOPS`] services.
pub(super) const MAX_EXTRAS: usize = 16;

/// The instances of one web service.
pub struct WebPool {
    pub(super) key: ServiceKey,
    pub(super) spec: Arc<Spec>,
    pub(super) settings: PoolSettings,
    /// The service's instance numbers this pool's slots are (1-based):
    /// all of them on one machine, those placed here in a cluster.
    pub(super) numbers: Vec<u32>,
    pub(super) parts: Parts,
    /// The service's identity (log, counters); each instance gets
    /// `who.at(id)`.
    pub(super) who: Identity,
    pub(super) code: OnceCell<Result<Arc<dyn Code>, CodeProblem>>,
    pub(super) inner: Mutex<Inner>,
    /// Woken when a slot is given back.
    pub(super) freed: Notify,
    /// Requests that may wait at once.
    pub(super) max_queue: usize,
    /// Where the next search for a free slot starts, so requests spread.
    pub(super) next: AtomicUsize,
    /// Cancelled by [`WebPool::retire`]: ends refills and warm-ups.
    pub(super) stopped: CancellationToken,
    /// Cancelled by [`WebPool::stop`]: ends the requests in flight.
    pub(super) killed: CancellationToken,
    /// One-off instances for cyclic calls, bounded.
    pub(super) extras: Arc<tokio::sync::Semaphore>,
    /// Why this code is served fresh per request, once it showed it
    /// cannot be reused.
    pub(super) learned: Mutex<Option<String>>,
    /// A reused instance has answered a request: the code is reusable,
    /// and requests need no longer be kept to be sent again.
    pub(super) proven: AtomicBool,
    /// The service's health check: its instances take requests only once
    /// they pass it, and are replaced when they keep failing it.
    pub(super) health: Option<Arc<HealthCheck>>,
    /// The pool this one replaces, while a rollout hands requests over
    /// from it.
    pub(super) previous: Mutex<Option<Arc<WebPool>>>,
    /// The pool that replaced this one, once it is retired: requests still
    /// waiting here (or sent here by a route not yet updated) go there.
    pub(super) successor: Mutex<Option<Weak<WebPool>>>,
    /// The stack version its instances show.
    pub(super) version: AtomicU64,
}
