//! Web services: the instances that answer a service's HTTP requests.
//!
//! Each web service has a [`WebPool`] with one slot per desired instance.
//! A slot holds a live instance (a store with the component's
//! `wasi:http/incoming-handler` instantiated) that serves one request at a
//! time and is reused for the next, like a process. The instance count
//! bounds concurrency: a request that finds every slot busy waits in a
//! bounded queue, and is answered `503` with `Retry-After` when the queue
//! is full or the wait too long. A request whose instance traps (or runs
//! out of memory) gets `500`; the instance is retired, counted as a
//! restart, and its slot is refilled after a back-off, so an instance that
//! keeps failing is skipped while it backs off. `--fresh-per-request`
//! serves every request from a new store, pre-instantiated while the slot
//! is idle.
//!
//! # Code that cannot be reused
//!
//! Some toolchains build components for hosts that give every request a
//! fresh instance (componentize-js answers only its first request). So a
//! request whose reused instance returns without a response is served
//! again on a fresh instance when the failed attempt read none of its
//! body; if the fresh one answers, the pool serves fresh per request from
//! then on and says why ([`WebPool::fresh_because`]). A failure that
//! repeats on a fresh instance is the request's own, and is answered as
//! such. When the body was read, the request cannot be sent again: it
//! gets a clear `502`, and the pool serves fresh from then on. A trap is
//! never retried (the guest may have acted on the request before it), and
//! `--reuse-instances` turns all of this off. Once a reused instance has
//! answered, the code has shown it can be reused, and requests are no
//! longer kept to be sent again (that copy of the head is per request).
//!
//! # Lifetimes
//!
//! The supervisor owns each pool. When the service's settings change, a
//! new pool replaces it and the old one is retired ([`WebPool::retire`]):
//! it refills nothing, its idle instances are dropped, its background
//! tasks end, and requests already holding it finish on it. When the
//! service is deleted the pool is stopped ([`WebPool::stop`]): retired,
//! and the requests its instances are serving are ended too. Every count
//! a request takes (its place in the queue, its slot) is held by a guard
//! whose `Drop` gives it back, so a request dropped at any await point (a
//! client hanging up, an intra-DNS caller stopped mid-wait) leaves the
//! queue and the slots exactly as they were.
//!
//! wasmtime-wasi-http's `ProxyHandler` is not used: it has no bound on
//! live instances, no queue, and no per-instance restarts or status, which
//! are what a PaaS user watches. This pool is built on the services layer's
//! [`Code`](crate::services::Code) and [`Handler`](crate::services::Handler),
//! so any kind of instance can fill it.
//!
//! # Pieces
//!
//! Like wasmtime-wasi-http's `handler.rs`, the pool keeps its policies
//! in small named types beside the code they steer:
//!
//! - `state`: what a pool holds: settings, slots, counts, what it learned.
//! - `admission`: queue places, leases, picking a slot; the
//!   `Admission` policy (which slot, and whether a request may wait).
//! - `attempt`: serving a request, trying it once more on a fresh
//!   instance, learning that the code must run fresh; the `Retry` policy
//!   and the typed answer for a request not sent again.
//! - `lifecycle`: making, giving back, retiring and refilling instances;
//!   retiring and stopping the pool.

mod admission;
mod attempt;
mod health;
mod lifecycle;
mod rolling;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

pub use admission::QUEUE_WAIT;
pub use attempt::REQUEST_TIMEOUT;
pub use rolling::{Handover, Step};
use state::{Inner, WebSlot, MAX_EXTRAS};
pub use state::{PoolSettings, Reuse, WebPool};

/// How a new pool starts.
#[derive(Default)]
pub struct Start {
    /// Why its code is known not to be reusable, as the pool it replaces
    /// learned.
    pub learned: Option<String>,
    /// The service's health check.
    pub health: Option<HealthCheck>,
    /// How many of its slots are on at first (all when `None`): a rollout
    /// turns the rest on one at a time.
    pub enabled: Option<usize>,
    /// The pool it takes over from, which serves meanwhile.
    pub previous: Option<Arc<WebPool>>,
}

use super::callee::{Callee, Refusal};
use super::code::BoxFuture;
use super::parts::Parts;
use super::spec::Spec;
use crate::model::{HealthCheck, InstanceStatus, ServiceKey};

// === impl WebPool ===

impl WebPool {
    /// A pool for a service, warming every slot up in the background when
    /// `settings.warm`.
    pub fn start(
        parts: Parts,
        key: ServiceKey,
        spec: Arc<Spec>,
        settings: PoolSettings,
    ) -> Arc<WebPool> {
        let numbers = (1..=settings.instances).collect();
        WebPool::start_knowing(parts, key, spec, settings, numbers, Start::default())
    }

    /// [`WebPool::start`] for the instances `numbers` of the service
    /// (`settings.instances` is their count), started as `start` says.
    pub fn start_knowing(
        parts: Parts,
        key: ServiceKey,
        spec: Arc<Spec>,
        settings: PoolSettings,
        numbers: Vec<u32>,
        start: Start,
    ) -> Arc<WebPool> {
        debug_assert_eq!(numbers.len(), settings.instances as usize);
        let enabled = start.enabled.unwrap_or(numbers.len());
        let version = spec.version;
        // A worker's request instances run beside its `run` instances, so
        // their ids differ: `worker.req1`.
        let prefix = if settings.warm { "" } else { "req" };
        let slots = numbers
            .iter()
            .enumerate()
            .map(|(i, n)| WebSlot {
                status: InstanceStatus::starting(format!("{}.{prefix}{n}", key.name), spec.version),
                busy: false,
                ready: None,
                failures: 0,
                backoff_until: None,
                enabled: i < enabled,
                unhealthy: 0,
            })
            .collect();
        let max_queue = parts.queue_per_instance * settings.instances.max(1) as usize;
        let pool = Arc::new(WebPool {
            who: parts.identity(&key, &key.name),
            key,
            spec,
            settings,
            numbers,
            parts,
            code: OnceCell::new(),
            inner: Mutex::new(Inner { slots, waiting: 0 }),
            freed: Notify::new(),
            max_queue,
            next: AtomicUsize::new(0),
            stopped: CancellationToken::new(),
            killed: CancellationToken::new(),
            extras: Arc::new(tokio::sync::Semaphore::new(MAX_EXTRAS)),
            learned: Mutex::new(start.learned),
            proven: AtomicBool::new(false),
            health: start.health.filter(|_| settings.warm).map(Arc::new),
            previous: Mutex::new(start.previous),
            successor: Mutex::new(None),
            version: AtomicU64::new(version),
        });
        if settings.warm {
            for i in 0..enabled.min(settings.instances as usize) {
                pool.spawn_refill(i, Duration::ZERO);
            }
            pool.spawn_liveness();
        }
        pool
    }

    /// Why requests get a fresh instance each, when they do: the setting,
    /// or what the code showed. `None` while instances are reused.
    pub fn fresh_because(&self) -> Option<String> {
        let code = self.code.get().and_then(|c| c.as_ref().ok());
        if let Some(why) = code.and_then(|c| c.fresh_each_request()) {
            return Some(why.to_string());
        }
        match self.settings.reuse {
            Reuse::Never => Some("--fresh-per-request is set".to_string()),
            Reuse::Always => None,
            Reuse::Auto => self.learned.lock().clone(),
        }
    }

    /// What this pool learned about its code's reuse, for the pool that
    /// replaces it when that runs the same code.
    pub fn learned_for(&self, spec: &Spec) -> Option<String> {
        let same =
            matches!((&self.spec.run.component, &spec.run.component), (Ok(a), Ok(b)) if a == b);
        same.then(|| self.learned.lock().clone()).flatten()
    }

    /// Whether the pool was made for this spec, these settings and this
    /// health check.
    pub fn matches(
        &self,
        spec: &Arc<Spec>,
        settings: PoolSettings,
        numbers: &[u32],
        health: Option<&HealthCheck>,
    ) -> bool {
        // The same run under another version (a rollback to the code it
        // runs) is the same pool, relabelled.
        self.spec.run == spec.run
            && self.settings == settings
            && self.numbers == numbers
            && self.health.as_deref() == health.filter(|_| settings.warm)
    }

    /// The spec its instances run.
    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    /// Shows its instances as on stack version `version` (the same code
    /// under a new version number).
    pub fn relabel(&self, version: u64) {
        self.version.store(version, Ordering::Relaxed);
        let mut inner = self.inner.lock();
        for s in &mut inner.slots {
            s.status.version = version;
        }
    }

    /// The stack version its instances show (its spec's, or the one it
    /// was relabelled to since).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Whether the pool keeps its instances live (a web service's), rather
    /// than starting them on the first call (a worker's).
    pub fn warm(&self) -> bool {
        self.settings.warm
    }

    /// Every slot that is on (or still serving) as an instance.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        self.inner
            .lock()
            .slots
            .iter()
            .filter(|s| s.enabled || s.busy)
            .map(|s| s.status.clone())
            .collect()
    }

    /// Requests waiting for an instance now.
    pub fn waiting(&self) -> usize {
        self.inner.lock().waiting
    }

    /// Serves one request from the ingress on a free instance, waiting in
    /// the queue for one when all are busy.
    pub async fn handle(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        self.answer_timed(request, scheme, false, false).await
    }

    /// Serves one request from another service, in-process. A `cyclic`
    /// call (this service is already up its chain) that finds no free
    /// instance gets a one-off extra instance instead of waiting on one
    /// held up the chain.
    pub async fn call(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        self.answer_timed(request, scheme, cyclic, true).await
    }
}

impl Callee for WebPool {
    fn call(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
    ) -> BoxFuture<'static, Result<http::Response<HyperOutgoingBody>, Refusal>> {
        Box::pin(async move { WebPool::call(&self, request, scheme, cyclic).await })
    }
}

#[cfg(test)]
pub(crate) mod tests;
