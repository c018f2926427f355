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
//! and the requests its instances are serving are ended too. Every count a request
//! takes (its place in the queue, its slot) is held by a guard whose
//! `Drop` gives it back, so a request dropped at any await point (a client
//! hanging up, an intra-DNS caller stopped mid-wait) leaves the queue and
//! the slots exactly as they were.
//!
//! wasmtime-wasi-http's `ProxyHandler` is not used: it has no bound on
//! live instances, no queue, and no per-instance restarts or status, which
//! are what a PaaS user watches. This pool is built on the services layer's [`Code`]
//! and [`Handler`], so any kind of instance can fill it.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

use super::backoff::backoff;
use super::callee::{Callee, Refusal};
use super::code::{BoxFuture, Code, Handler};
use super::directory::{Identity, CHAIN_HEADER};
use super::parts::{launch, Parts};
use super::replay::Replay;
use super::spec::{CodeProblem, Spec};
use crate::model::{InstanceState, InstanceStatus, ServiceKey};
use crate::runtime::http::{describe, NO_RESPONSE};
use crate::runtime::CallLimits;
use crate::runtime::{Answered, Outcome, Respond};

/// Longest a request waits in the queue for a free instance.
pub const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Longest one request may run in an instance before it is stopped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

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
struct Ready {
    handler: Box<dyn Handler>,
    /// Requests it has served.
    served: u32,
}

struct WebSlot {
    status: InstanceStatus,
    busy: bool,
    ready: Option<Ready>,
    failures: u32,
    backoff_until: Option<Instant>,
}

struct Inner {
    slots: Vec<WebSlot>,
    waiting: usize,
}

/// The instances of one web service.
pub struct WebPool {
    key: ServiceKey,
    spec: Arc<Spec>,
    settings: PoolSettings,
    /// The service's instance numbers this pool's slots are (1-based):
    /// all of them on one machine, those placed here in a cluster.
    numbers: Vec<u32>,
    parts: Parts,
    /// The service's identity (log, counters); each instance gets
    /// `who.at(id)`.
    who: Identity,
    code: OnceCell<Result<Arc<dyn Code>, CodeProblem>>,
    inner: Mutex<Inner>,
    freed: Notify,
    max_queue: usize,
    /// Where the next search for a free slot starts, so requests spread.
    next: AtomicUsize,
    /// Cancelled by [`WebPool::retire`]: ends refills and warm-ups.
    stopped: CancellationToken,
    /// Cancelled by [`WebPool::stop`]: ends the requests in flight.
    killed: CancellationToken,
    /// One-off instances for cyclic calls, bounded.
    extras: Arc<tokio::sync::Semaphore>,
    /// Why this code is served fresh per request, once it showed it
    /// cannot be reused.
    learned: Mutex<Option<String>>,
    /// A reused instance has answered a request: the code is reusable,
    /// and requests need no longer be kept to be sent again.
    proven: std::sync::atomic::AtomicBool,
}

/// One-off instances one pool may have for cyclic calls at once: a cycle
/// needs one per pass through the service, and a chain has at most
/// [`crate::runtime::MAX_HOPS`] services.
const MAX_EXTRAS: usize = 16;

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
        WebPool::start_knowing(parts, key, spec, settings, numbers, None)
    }

    /// [`WebPool::start`] for the instances `numbers` of the service
    /// (`settings.instances` is their count), and for code already known
    /// not to be reusable, and why (what the pool this one replaces
    /// learned).
    pub fn start_knowing(
        parts: Parts,
        key: ServiceKey,
        spec: Arc<Spec>,
        settings: PoolSettings,
        numbers: Vec<u32>,
        learned: Option<String>,
    ) -> Arc<WebPool> {
        debug_assert_eq!(numbers.len(), settings.instances as usize);
        // A worker's request instances run beside its `run` instances, so
        // their ids differ: `worker.req1`.
        let prefix = if settings.warm { "" } else { "req" };
        let slots = numbers
            .iter()
            .map(|n| WebSlot {
                status: InstanceStatus::starting(format!("{}.{prefix}{n}", key.name), spec.version),
                busy: false,
                ready: None,
                failures: 0,
                backoff_until: None,
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
            learned: Mutex::new(learned),
            proven: std::sync::atomic::AtomicBool::new(false),
        });
        if settings.warm {
            for i in 0..settings.instances as usize {
                pool.spawn_refill(i, Duration::ZERO);
            }
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

    fn serves_fresh(&self) -> bool {
        match self.settings.reuse {
            Reuse::Never => true,
            Reuse::Always => false,
            Reuse::Auto => self.learned.lock().is_some(),
        }
    }

    /// Whether the pool was made for this spec and these settings.
    pub fn matches(&self, spec: &Arc<Spec>, settings: PoolSettings, numbers: &[u32]) -> bool {
        self.spec.id == spec.id && self.settings == settings && self.numbers == numbers
    }

    /// Whether the pool keeps its instances live (a web service's), rather
    /// than starting them on the first call (a worker's).
    pub fn warm(&self) -> bool {
        self.settings.warm
    }

    /// Stops the pool of a deleted service: retired, and the requests its
    /// instances serve are ended (their stores dropped).
    pub fn stop(&self) {
        self.killed.cancel();
        self.retire();
        // Waiters wake to find the service gone.
        self.freed.notify_waiters();
    }

    /// Retires a pool another replaces: no more refills or warm-ups, idle
    /// instances dropped. Requests that hold it still finish on it.
    pub fn retire(&self) {
        self.stopped.cancel();
        let idle: Vec<Ready> = self
            .inner
            .lock()
            .slots
            .iter_mut()
            .filter_map(|s| s.ready.take())
            .collect();
        drop(idle);
    }

    /// Every slot as an instance.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        self.inner
            .lock()
            .slots
            .iter()
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

    async fn answer_timed(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
        in_process: bool,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        let started = Instant::now();
        let result = self.answer(request, scheme, cyclic, in_process).await;
        let status = match &result {
            Ok(response) => response.status().as_u16(),
            Err(refused) => refused.status.as_u16(),
        };
        self.who.metrics.request(status, started.elapsed());
        result
    }

    async fn answer(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
        in_process: bool,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        let code = self.code().await.map_err(|problem| {
            Refusal::unavailable(format!("{} cannot serve requests: {problem}", self.key), 30)
        })?;
        let mut lease = self.acquire(cyclic).await?;
        let (handler, served) = match lease.ready.take() {
            Some(ready) => (ready.handler, ready.served),
            None => match self.instantiate(lease.slot, &code).await {
                Ok(handler) => (handler, 0),
                Err(outcome) => {
                    let message = outcome.message.clone();
                    lease.finish(None, Some(outcome));
                    // A worker called by name that cannot take calls is a
                    // bad gateway to its caller, not its own failure.
                    return Err(if self.settings.warm {
                        Refusal::failed(message)
                    } else {
                        Refusal::bad_gateway(format!("{}: {message}", self.key))
                    });
                }
            },
        };
        let chain: Vec<String> = request
            .headers()
            .get(CHAIN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        // A reused instance may turn out not to be reusable: keep what is
        // needed to serve the request again on a fresh one.
        let reused = served > 0 && !handler.fresh_each_request();
        let unproven = !self.proven.load(Ordering::Relaxed);
        let (replay, request) = if reused && unproven && self.settings.reuse == Reuse::Auto {
            let (replay, request) = Replay::keep(request);
            (Some(replay), request)
        } else {
            (None, request)
        };
        let call = Call {
            scheme,
            chain,
            limits: CallLimits {
                wall: REQUEST_TIMEOUT,
                cpu: Some(self.settings.cpu_limit),
            },
        };
        let killed = self.killed.clone();
        let pool = self.clone();
        // The guest gives its slot back when it is done (or when its
        // service is deleted, by dropping the lease).
        let serving = Serving(Some(Box::pin(async move {
            tokio::select! {
                biased;
                () = killed.cancelled() => {}
                () = pool.serve(lease, Ready { handler, served }, request, call, tx, replay, code) => {}
            }
        })));
        let answered = if in_process {
            serving.until_answered(rx).await
        } else {
            // For a socket the guest runs ahead on its own task: by the
            // time the connection looks, the whole body is there and goes
            // out in one write instead of a write per part.
            drop(serving);
            rx.await
        };
        match answered {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => {
                let message = describe(&code);
                Err(match message.strip_prefix(BAD_GATEWAY_MARK) {
                    Some(message) => Refusal::bad_gateway(message.to_string()),
                    None => Refusal::failed(message),
                })
            }
            Err(_) => Err(Refusal::failed(
                "the instance ended without answering".to_string(),
            )),
        }
    }

    /// Serves a request on the lease's instance and gives the slot back.
    /// With a `replay`, a failure that shows the code cannot be reused
    /// sends the request to a fresh instance instead of to the client.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        self: Arc<Self>,
        lease: Lease,
        ready: Ready,
        request: http::Request<WasiBody>,
        call: Call,
        respond: Respond,
        replay: Option<Replay>,
        code: Arc<dyn Code>,
    ) {
        let Some(replay) = replay else {
            let result = ready
                .handler
                .serve(request, call.scheme, call.chain, respond, call.limits)
                .await;
            self.finish(lease, result, ready.served);
            return;
        };
        let mut respond = Some(respond);
        let first = Attempt::watch(ready.handler, request, &call, &mut respond).await;
        if first.answered {
            self.proven.store(true, Ordering::Relaxed);
        }
        let Some(what) = first.not_reusable() else {
            let result = first.hand_on(respond);
            self.finish(lease, result, ready.served);
            return;
        };
        // The reused instance returned without answering.
        let component = self.spec.run.command.first().cloned().unwrap_or_default();
        let why = format!("{component} {what} on a reused instance");
        let instance = self.instance_id(lease.slot);
        // A guest that called out may have done what the request asked
        // (the callee counted it): sending it again would do it twice.
        let called_out = first.result.as_ref().is_ok_and(|h| h.called_out());
        let idempotent = replay.idempotent();
        let again = if called_out { None } else { replay.again() };
        let Some(request) = again else {
            let after = if !idempotent {
                "serving a request that is not safe to repeat (not an idempotent method)"
            } else if called_out {
                "after calling out"
            } else {
                "after reading the request body"
            };
            self.learn(&why, &instance);
            if let Some(respond) = respond {
                let _ = respond.send(Err(ErrorCode::InternalError(Some(format!(
                    "{BAD_GATEWAY_MARK}{why}, {after}, so it was not sent again; the service is served fresh per request from now on"
                )))));
            }
            self.finish(lease, first.result, ready.served);
            return;
        };
        drop(first);
        if respond.as_ref().is_none_or(|r| r.is_closed()) {
            // The client is gone: nothing to answer.
            lease.finish(None, None);
            return;
        }
        let handler = match self.instantiate(lease.slot, &code).await {
            Ok(handler) => handler,
            Err(outcome) => {
                if let Some(respond) = respond {
                    let _ =
                        respond.send(Err(ErrorCode::InternalError(Some(outcome.message.clone()))));
                }
                lease.finish(None, Some(outcome));
                return;
            }
        };
        let second = Attempt::watch(handler, request, &call, &mut respond).await;
        if second.answered {
            self.learn(&why, &instance);
        }
        let result = second.hand_on(respond);
        self.finish(lease, result, 0);
    }

    /// Gives the slot back after a request: with its instance to serve the
    /// next one when instances are reused, else without (it is refilled).
    fn finish(&self, lease: Lease, served: Result<Box<dyn Handler>, Outcome>, before: u32) {
        match served {
            Ok(handler) if !self.serves_fresh() => lease.finish(
                Some(Ready {
                    handler,
                    served: before.saturating_add(1),
                }),
                None,
            ),
            Ok(_) => lease.finish(None, None),
            Err(outcome) => lease.finish(None, Some(outcome)),
        }
    }

    /// Serves this code fresh per request from now on, for `why`, and
    /// says so once.
    fn learn(self: &Arc<Self>, why: &str, instance: &str) {
        {
            let mut learned = self.learned.lock();
            if learned.is_some() {
                return;
            }
            *learned = Some(why.to_string());
        }
        // Idle instances that already served a request go; the slots are
        // refilled with fresh ones.
        let stale: Vec<usize> = {
            let mut inner = self.inner.lock();
            inner
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| s.ready.as_ref().is_some_and(|r| r.served > 0))
                .map(|(i, s)| {
                    s.ready = None;
                    i
                })
                .collect()
        };
        tracing::info!(service = %self.key, %why, "serving fresh per request");
        let message = format!("{why}: serving each request from a fresh instance from now on");
        self.parts.events.service(
            &self.key,
            "service.fresh_per_request",
            Some(instance),
            message.clone(),
        );
        self.who.log.note(instance, format!("[mesh] {message}"));
        for slot in stale {
            self.spawn_refill(slot, Duration::ZERO);
        }
    }

    async fn code(&self) -> Result<Arc<dyn Code>, CodeProblem> {
        self.code
            .get_or_init(|| self.spec.run.load_handler(self.parts.code.as_ref()))
            .await
            .clone()
    }

    /// Takes a free, healthy slot (and its live instance, if it has one),
    /// waiting in the queue while none is free. A lease without a slot is
    /// a one-off instance for a cyclic call.
    async fn acquire(self: &Arc<Self>, cyclic: bool) -> Result<Lease, Refusal> {
        let deadline = Instant::now() + QUEUE_WAIT;
        // Our place in the queue, given back however this future ends.
        let mut queued: Option<Queued<'_>> = None;
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            if self.killed.is_cancelled() {
                return Err(Refusal::unavailable(format!("{} was deleted", self.key), 1));
            }
            let wake_for_backoff = {
                let mut inner = self.inner.lock();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = pick(&inner.slots, now, start) {
                    let slot = &mut inner.slots[i];
                    slot.busy = true;
                    let ready = slot.ready.take();
                    drop(inner);
                    return Ok(Lease::new(self.clone(), Some(i), ready));
                }
                if cyclic {
                    let extra = self.extras.clone().try_acquire_owned().map_err(|_| {
                        Refusal::unavailable(
                            format!(
                                "{} is busy: {MAX_EXTRAS} one-off instances already serve calls in a cycle",
                                self.key
                            ),
                            1,
                        )
                    })?;
                    let mut lease = Lease::new(self.clone(), None, None);
                    lease.extra = Some(extra);
                    return Ok(lease);
                }
                self.refuse(&inner, now >= deadline, queued.is_some())?;
                if queued.is_none() {
                    inner.waiting += 1;
                    self.who.metrics.waiting_changed(1);
                    queued = Some(Queued(self));
                }
                inner
                    .slots
                    .iter()
                    .filter(|s| !s.busy)
                    .filter_map(|s| s.backoff_until)
                    .min()
            };
            let mut wait = deadline.saturating_duration_since(now);
            if let Some(until) = wake_for_backoff {
                wait = wait.min(until.saturating_duration_since(now));
            }
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// Why a request that found no free slot cannot wait, if it cannot.
    fn refuse(&self, inner: &Inner, timed_out: bool, queued: bool) -> Result<(), Refusal> {
        if !self.settings.warm {
            // Every instance of a worker called by name is idle and
            // backing off after a failed start: say why at once.
            let now = Instant::now();
            let backing_off = |s: &WebSlot| !s.busy && s.backoff_until.is_some_and(|t| t > now);
            let soonest = inner
                .slots
                .iter()
                .filter(|s| s.backoff_until.is_some())
                .min_by_key(|s| s.backoff_until);
            let all = !inner.slots.is_empty() && inner.slots.iter().all(backing_off);
            if let Some(slot) = soonest.filter(|_| all) {
                let (until, status) = (slot.backoff_until.unwrap_or(now), &slot.status);
                let why = status.message.clone().unwrap_or_else(|| "it failed".into());
                let retry = until.saturating_duration_since(now).as_secs().max(1);
                return Err(Refusal::unavailable(
                    format!(
                        "{} cannot take calls now: {why}; trying again on a call after {retry}s",
                        self.key
                    ),
                    retry,
                ));
            }
        }
        if inner.slots.is_empty() {
            return Err(Refusal::unavailable(
                format!(
                    "{} has 0 instances; scale it up with `mesh svc update {} --instances N`",
                    self.key, self.key.name
                ),
                5,
            ));
        }
        if timed_out {
            return Err(Refusal::unavailable(
                format!(
                    "{} is busy: no instance was free for {}s",
                    self.key,
                    QUEUE_WAIT.as_secs()
                ),
                1,
            ));
        }
        if !queued && inner.waiting >= self.max_queue {
            return Err(Refusal::unavailable(
                format!(
                    "{} is busy: all {} instances are serving and {} requests are waiting",
                    self.key,
                    inner.slots.len(),
                    inner.waiting
                ),
                1,
            ));
        }
        Ok(())
    }

    /// A new instance for a slot (`None`: a one-off instance).
    async fn instantiate(
        &self,
        slot: Option<usize>,
        code: &Arc<dyn Code>,
    ) -> Result<Box<dyn Handler>, Outcome> {
        let id = self.instance_id(slot);
        let launch = launch(&self.who, &self.spec.run, &id);
        let handler = code.start_handler(launch).await?;
        if let Some(slot) = slot {
            let mut inner = self.inner.lock();
            let status = &mut inner.slots[slot].status;
            status.enter(InstanceState::Running);
            status.started_at = Some(Utc::now());
        }
        Ok(handler)
    }

    fn instance_id(&self, slot: Option<usize>) -> String {
        match slot {
            Some(slot) => self.inner.lock().slots[slot].status.id.clone(),
            None => format!("{}.extra", self.key.name),
        }
    }

    /// Gives a slot back: with its instance for reuse, or retired after a
    /// failure (a restart, then a back-off before it is refilled).
    fn release(
        self: &Arc<Self>,
        slot: Option<usize>,
        ready: Option<Ready>,
        failure: Option<Outcome>,
    ) {
        let Some(slot) = slot else {
            if let Some(outcome) = failure {
                let id = format!("{}.extra", self.key.name);
                self.who.log.note(
                    &id,
                    format!("[mesh] {}; the request got 500", outcome.message),
                );
            }
            return;
        };
        let refill_after = {
            let mut inner = self.inner.lock();
            // Read under the lock `retire` empties the slots under.
            let stopped = self.stopped.is_cancelled();
            let s = &mut inner.slots[slot];
            s.busy = false;
            match failure {
                None => {
                    s.failures = 0;
                    let refill = ready.is_none();
                    // A stopped pool keeps no idle instance.
                    s.ready = if stopped { None } else { ready };
                    refill.then_some(Duration::ZERO)
                }
                // A pool that starts instances only for requests (a
                // worker called by name) waits for the next request to
                // try again, rather than starting one in a loop.
                Some(outcome) => {
                    let delay = self.retire_instance(s, outcome);
                    self.settings.warm.then_some(delay)
                }
            }
        };
        self.freed.notify_one();
        if let Some(delay) = refill_after {
            self.spawn_refill(slot, delay);
        }
    }

    /// Records a slot's failed instance: a restart, an event, a log line,
    /// and the back-off before the slot is refilled.
    fn retire_instance(&self, s: &mut WebSlot, outcome: Outcome) -> Duration {
        let delay = backoff(s.failures);
        s.failures = s.failures.saturating_add(1);
        s.backoff_until = Some(Instant::now() + delay);
        s.ready = None;
        let message = &outcome.message;
        s.status.back_off(None, message.clone(), delay);
        self.who.metrics.restart();
        tracing::info!(service = %self.key, instance = %s.status.id, %message, ?delay, "web instance retired");
        let kind = outcome.event_kind("instance.failed");
        self.parts.events.service(
            &self.key,
            kind,
            Some(&s.status.id),
            format!("{message}; the request got 500"),
        );
        self.who.log.note(
            &s.status.id,
            format!(
                "[mesh] {message}; the request got 500; restart {} in {:.1}s",
                s.status.restarts,
                delay.as_secs_f64()
            ),
        );
        delay
    }

    /// After `delay`, gives an idle slot without an instance a fresh one,
    /// so the next request finds it ready; ends at once when the pool is
    /// stopped.
    fn spawn_refill(self: &Arc<Self>, slot: usize, delay: Duration) {
        if self.stopped.is_cancelled() {
            return;
        }
        let pool = self.clone();
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped.cancelled() => {}
                () = pool.refill(slot, delay) => {}
            }
        });
    }

    async fn refill(self: Arc<Self>, slot: usize, delay: Duration) {
        tokio::time::sleep(delay).await;
        let code = match self.code().await {
            Ok(code) => code,
            Err(problem) => {
                let mut inner = self.inner.lock();
                for s in &mut inner.slots {
                    s.status.enter(InstanceState::Crashed);
                    s.status.message = Some(problem.to_string());
                }
                return;
            }
        };
        let lease = {
            let mut inner = self.inner.lock();
            let s = &mut inner.slots[slot];
            if s.busy || s.ready.is_some() {
                return;
            }
            s.busy = true;
            s.backoff_until = None;
            s.status.enter(InstanceState::Starting);
            Lease::new(self.clone(), Some(slot), None)
        };
        match self.instantiate(Some(slot), &code).await {
            Ok(handler) => lease.finish(Some(Ready { handler, served: 0 }), None),
            Err(outcome) => lease.finish(None, Some(outcome)),
        }
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

/// A guest serving one request. The request's own task runs it until it
/// sets its response (no hand-over between tasks on the way in, which is
/// most of an in-process call's cost); the rest (a body still being
/// written, the slot given back) goes on on a task of its own, started
/// when this is dropped, and so does all of it if the caller goes away
/// first: a guest always runs to its end.
struct Serving(Option<BoxFuture<'static, ()>>);

impl Serving {
    /// Runs the guest until `answer` resolves, and hands the rest on.
    async fn until_answered(
        mut self,
        mut answer: oneshot::Receiver<Answered>,
    ) -> Result<Answered, oneshot::error::RecvError> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(answered) = Pin::new(&mut answer).poll(cx) {
                return Poll::Ready(answered);
            }
            if let Some(serving) = &mut self.0 {
                if serving.as_mut().poll(cx).is_ready() {
                    self.0 = None;
                    // Done: it answered or dropped its sender.
                    return Pin::new(&mut answer).poll(cx);
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(rest) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(rest);
            }
        }
    }
}

/// What every attempt at one request is given.
struct Call {
    scheme: Scheme,
    chain: Vec<String>,
    limits: CallLimits,
}

/// Marks an error that is the platform's answer for a request it could
/// not send again (`502`), not the guest's failure (`500`).
const BAD_GATEWAY_MARK: &str = "bad gateway: ";

/// One attempt at a request: a response is passed on to the client as
/// soon as the guest sets it; an error in its place is held back, so the
/// request can still be tried again.
struct Attempt {
    result: Result<Box<dyn Handler>, Outcome>,
    /// The error the instance gave instead of a response.
    refused: Option<ErrorCode>,
    /// Whether a response went to the client.
    answered: bool,
}

impl Attempt {
    async fn watch(
        handler: Box<dyn Handler>,
        request: http::Request<WasiBody>,
        call: &Call,
        respond: &mut Option<Respond>,
    ) -> Attempt {
        let (tx, rx) = oneshot::channel();
        let serve = handler.serve(
            request,
            call.scheme.clone(),
            call.chain.clone(),
            tx,
            call.limits,
        );
        let mut answered = false;
        let forward = async {
            match rx.await {
                Ok(Ok(response)) => {
                    if let Some(respond) = respond.take() {
                        answered = respond.send(Ok(response)).is_ok();
                    }
                    None
                }
                // Only "no response" is held back, to try again; an error
                // the guest gave goes on at once.
                Ok(Err(code)) if describe(&code) != NO_RESPONSE => {
                    if let Some(respond) = respond.take() {
                        let _ = respond.send(Err(code));
                    }
                    None
                }
                Ok(Err(code)) => Some(code),
                Err(_) => None,
            }
        };
        let (result, refused) = tokio::join!(serve, forward);
        Attempt {
            result,
            refused,
            answered,
        }
    }

    /// What the instance did that shows its code may not serve a second
    /// request, if it did: it returned without a response.
    fn not_reusable(&self) -> Option<String> {
        self.no_response()
            .then(|| "returned without a response".to_string())
    }

    /// Whether the guest returned normally without setting a response.
    fn no_response(&self) -> bool {
        self.result.is_ok()
            && self
                .refused
                .as_ref()
                .is_some_and(|code| describe(code) == NO_RESPONSE)
    }

    /// Sends the held-back error on, and gives the instance (or how it
    /// failed).
    fn hand_on(self, respond: Option<Respond>) -> Result<Box<dyn Handler>, Outcome> {
        if let (Some(code), Some(respond)) = (self.refused, respond) {
            let _ = respond.send(Err(code));
        }
        self.result
    }
}

// === impl Queued, Lease ===

/// A request's place in the queue; `Drop` gives it back.
struct Queued<'a>(&'a WebPool);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.inner.lock();
        inner.waiting -= 1;
        self.0.who.metrics.waiting_changed(-1);
    }
}

/// A slot taken for one request or refill; `Drop` gives it back (without
/// an instance, so it is refilled) unless [`Lease::finish`] did.
struct Lease {
    pool: Arc<WebPool>,
    slot: Option<usize>,
    ready: Option<Ready>,
    finished: bool,
    /// A one-off instance's place among the pool's extras.
    extra: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Lease {
    fn new(pool: Arc<WebPool>, slot: Option<usize>, ready: Option<Ready>) -> Lease {
        Lease {
            pool,
            slot,
            ready,
            finished: false,
            extra: None,
        }
    }

    /// Gives the slot back with its instance to reuse, or with how it
    /// failed.
    fn finish(mut self, ready: Option<Ready>, failure: Option<Outcome>) {
        self.finished = true;
        self.pool.release(self.slot, ready, failure);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.finished {
            self.pool.release(self.slot, None, None);
        }
    }
}

/// The slot for a request: a free one (so it has the fewest requests in
/// flight, none) that is not backing off, searching round-robin from
/// `start` so that requests spread over the instances.
fn pick(slots: &[WebSlot], now: Instant, start: usize) -> Option<usize> {
    let n = slots.len();
    (0..n).map(|k| (start + k) % n).find(|&i| {
        let s = &slots[i];
        !s.busy && s.backoff_until.is_none_or(|t| t <= now)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    //! The pool without a daemon: fake code whose instances wait on gates
    //! the test opens, so requests can be held, queued and dropped at will.

    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Empty, Full};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::model::Digest;
    use crate::runtime::{Interrupt, Launch};
    use crate::services::code::CodeSource;
    use crate::services::directory::Directory;
    use crate::services::spec::RunSpec;
    use crate::telemetry::{DiskWriter, Events, Logs, Metrics};

    /// Code whose instances start once `starts` lets them, and answer each
    /// request once `answers` does. Starting fails while `fail` is set.
    pub(crate) struct Fake {
        digest: Digest,
        pub(crate) starts: Arc<Semaphore>,
        pub(crate) answers: Arc<Semaphore>,
        pub(crate) started: AtomicUsize,
        pub(crate) fail: std::sync::atomic::AtomicBool,
        /// Each instance answers only its first request, like a
        /// componentize-js component.
        pub(crate) answers_once: std::sync::atomic::AtomicBool,
        /// Its instances call out while serving.
        pub(crate) calls_out: std::sync::atomic::AtomicBool,
    }

    impl Fake {
        pub(crate) fn new() -> Arc<Fake> {
            Arc::new(Fake {
                digest: Digest::of(b"fake"),
                starts: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
                answers: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
                started: AtomicUsize::new(0),
                fail: std::sync::atomic::AtomicBool::new(false),
                answers_once: std::sync::atomic::AtomicBool::new(false),
                calls_out: std::sync::atomic::AtomicBool::new(false),
            })
        }
    }

    struct FakeSource(Arc<Fake>);

    struct FakeCode(Arc<Fake>);

    struct FakeHandler(Arc<Fake>, u32);

    impl CodeSource for FakeSource {
        fn loaded(&self, _digest: &Digest) -> Option<Arc<dyn Code>> {
            Some(Arc::new(FakeCode(self.0.clone())))
        }

        fn load(&self, digest: &Digest) -> BoxFuture<'static, Result<Arc<dyn Code>, String>> {
            let code = self.loaded(digest);
            Box::pin(async move { code.ok_or_else(|| "no such code".to_string()) })
        }
    }

    impl Code for FakeCode {
        fn digest(&self) -> &Digest {
            &self.0.digest
        }
        fn runs_command(&self) -> bool {
            false
        }
        fn serves_http(&self) -> bool {
            true
        }
        fn exports(&self) -> Vec<String> {
            vec!["wasi:http/incoming-handler@0.2.0".into()]
        }
        fn run(
            &self,
            _: Launch,
            _: Interrupt,
            _: Box<dyn FnOnce() + Send>,
        ) -> BoxFuture<'static, Outcome> {
            Box::pin(async { Outcome::failed("fake code runs no command".into()) })
        }
        fn start_handler(
            &self,
            _launch: Launch,
        ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
            let fake = self.0.clone();
            Box::pin(async move {
                let permit = fake
                    .starts
                    .acquire()
                    .await
                    .map_err(|_| Outcome::stopped())?;
                permit.forget();
                fake.started.fetch_add(1, Ordering::SeqCst);
                if fake.fail.load(Ordering::SeqCst) {
                    return Err(Outcome::failed("fake start failure".into()));
                }
                Ok(Box::new(FakeHandler(fake, 0)) as Box<dyn Handler>)
            })
        }
    }

    impl Handler for FakeHandler {
        fn serve(
            mut self: Box<Self>,
            _request: http::Request<WasiBody>,
            _scheme: Scheme,
            _chain: Vec<String>,
            respond: crate::runtime::Respond,
            _limits: CallLimits,
        ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
            Box::pin(async move {
                let permit = self
                    .0
                    .answers
                    .acquire()
                    .await
                    .map_err(|_| Outcome::stopped())?;
                permit.forget();
                self.1 += 1;
                if self.1 > 1 && self.0.answers_once.load(Ordering::SeqCst) {
                    let _ =
                        respond.send(Err(ErrorCode::InternalError(Some(NO_RESPONSE.to_string()))));
                    return Ok(self as Box<dyn Handler>);
                }
                let body = Full::new(Bytes::from_static(b"ok"))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let _ = respond.send(Ok(http::Response::new(body)));
                Ok(self as Box<dyn Handler>)
            })
        }

        fn called_out(&self) -> bool {
            self.0.calls_out.load(Ordering::SeqCst)
        }
    }

    /// A pool of `instances` over fake code, and the parts behind it.
    pub(crate) fn pool(
        fake: &Arc<Fake>,
        instances: u32,
        warm: bool,
    ) -> (Arc<WebPool>, Parts, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskWriter::start();
        let metrics = Arc::new(Metrics::default());
        let parts = Parts {
            code: Arc::new(FakeSource(fake.clone())),
            logs: Arc::new(Logs::new(dir.path(), 1 << 20, writer.clone())),
            queue_per_instance: 64,
            directory: Arc::new(Directory::new(metrics.clone())),
            metrics,
            events: Arc::new(Events::open(dir.path(), writer)),
        };
        let key = ServiceKey {
            env: "default".into(),
            stack: "app".into(),
            name: "web".into(),
        };
        let run = RunSpec {
            command: vec!["fake".into()],
            env: Vec::new(),
            memory_bytes: 1 << 20,
            component: Ok(fake.digest.clone()),
            files: None,
            scratch_bytes: None,
            stop_grace: Duration::from_secs(1),
            restarted_at: None,
        };
        let settings = PoolSettings {
            instances,
            reuse: Reuse::Auto,
            warm,
            cpu_limit: Duration::from_secs(10),
        };
        let pool = WebPool::start(parts.clone(), key, Spec::new(run, 1), settings);
        (pool, parts, dir)
    }

    pub(crate) fn request() -> http::Request<WasiBody> {
        let body = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::builder()
            .uri("http://web/")
            .body(body)
            .unwrap()
    }

    async fn status(pool: &Arc<WebPool>) -> u16 {
        match pool.handle(request(), Scheme::Http).await {
            Ok(response) => response.status().as_u16(),
            Err(refused) => refused.status.as_u16(),
        }
    }

    async fn until(what: &str, mut ok: impl FnMut() -> bool) {
        for _ in 0..500 {
            if ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    #[tokio::test]
    async fn dropped_waiters_give_their_places_back() {
        let fake = Fake::new();
        let (pool, _parts, _dir) = pool(&fake, 1, true);
        // Hold the one instance with a request it cannot answer yet.
        fake.answers.forget_permits(Semaphore::MAX_PERMITS);
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move { status(&pool).await }
        });
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { status(&pool).await })
            })
            .collect();
        until("50 requests wait", || pool.waiting() == 50).await;
        for waiter in &waiters {
            waiter.abort();
        }
        for waiter in waiters {
            assert!(waiter.await.unwrap_err().is_cancelled());
        }
        assert_eq!(
            pool.waiting(),
            0,
            "aborted waiters left their places counted"
        );
        fake.answers.add_permits(1000);
        assert_eq!(busy.await.unwrap(), 200);
        // The whole queue is free again: 64 requests at once all wait and
        // are served (with leaked places, they would get 503 at once).
        let burst: Vec<_> = (0..64)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { status(&pool).await })
            })
            .collect();
        for request in burst {
            assert_eq!(request.await.unwrap(), 200);
        }
        assert_eq!(pool.waiting(), 0);
    }

    #[tokio::test]
    async fn a_request_dropped_while_its_instance_starts_frees_the_slot() {
        let fake = Fake::new();
        // A cold pool: the first request starts the instance itself.
        let (pool, _parts, _dir) = pool(&fake, 1, false);
        fake.starts.forget_permits(Semaphore::MAX_PERMITS);
        let starting = tokio::spawn({
            let pool = pool.clone();
            async move { status(&pool).await }
        });
        until("the slot is taken", || pool.inner.lock().slots[0].busy).await;
        starting.abort();
        let _ = starting.await;
        assert!(
            !pool.inner.lock().slots[0].busy,
            "the dropped request kept its slot"
        );
        fake.starts.add_permits(1000);
        for _ in 0..10 {
            assert_eq!(status(&pool).await, 200);
        }
    }

    #[tokio::test]
    async fn a_request_whose_instance_called_out_is_not_sent_again() {
        let fake = Fake::new();
        fake.answers_once.store(true, Ordering::SeqCst);
        fake.calls_out.store(true, Ordering::SeqCst);
        let (pool, _parts, _dir) = pool(&fake, 1, true);
        until("the instance is up", || {
            pool.inner.lock().slots.iter().all(|s| s.ready.is_some())
        })
        .await;
        assert_eq!(status(&pool).await, 200);
        let started = fake.started.load(Ordering::SeqCst);
        // Reused, it fails to answer after calling out: 502, not replayed.
        assert_eq!(status(&pool).await, 502);
        assert_eq!(
            fake.started.load(Ordering::SeqCst),
            started,
            "it was replayed"
        );
        assert!(pool.fresh_because().is_some(), "the pool learned");
    }

    #[tokio::test]
    async fn code_that_answers_once_is_served_fresh_without_a_failed_request() {
        let fake = Fake::new();
        fake.answers_once.store(true, Ordering::SeqCst);
        let (pool, parts, _dir) = pool(&fake, 2, true);
        until("both instances are up", || {
            pool.inner.lock().slots.iter().all(|s| s.ready.is_some())
        })
        .await;
        assert_eq!(pool.fresh_because(), None);
        for i in 0..20 {
            assert_eq!(status(&pool).await, 200, "request {i} failed");
        }
        let why = pool.fresh_because().expect("the pool learned");
        assert_eq!(why, "fake returned without a response on a reused instance");
        assert!(parts
            .events
            .list(None)
            .iter()
            .any(|e| e.kind == "service.fresh_per_request"));
        // No instance was counted as failed: the code is not broken.
        assert!(pool.instances().iter().all(|i| i.restarts == 0));
        // A pool replacing it for the same code knows at once.
        let spec = pool.spec.clone();
        assert_eq!(pool.learned_for(&spec).as_deref(), Some(why.as_str()));
    }

    #[tokio::test]
    async fn forced_reuse_keeps_instances_and_answers_the_failure() {
        let fake = Fake::new();
        fake.answers_once.store(true, Ordering::SeqCst);
        let (plain, parts, dir) = pool(&fake, 1, true);
        plain.stop();
        let settings = PoolSettings {
            reuse: Reuse::Always,
            ..plain.settings
        };
        let pool = WebPool::start(parts, plain.key.clone(), plain.spec.clone(), settings);
        assert_eq!(status(&pool).await, 200);
        assert_eq!(status(&pool).await, 500);
        assert_eq!(pool.fresh_because(), None);
        drop(dir);
    }

    #[tokio::test]
    async fn a_stopped_pool_refills_nothing_and_reports_nothing() {
        let fake = Fake::new();
        fake.fail.store(true, Ordering::SeqCst);
        let (pool, parts, _dir) = pool(&fake, 1, true);
        // The failing instance is retired and refilled after back-offs.
        until("two failed starts", || {
            fake.started.load(Ordering::SeqCst) >= 2
        })
        .await;
        pool.stop();
        let started = fake.started.load(Ordering::SeqCst);
        let events = parts.events.list(None).len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            fake.started.load(Ordering::SeqCst),
            started,
            "a stopped pool started an instance"
        );
        assert_eq!(
            parts.events.list(None).len(),
            events,
            "a stopped pool reported a failure"
        );
        // The pool's tasks hold it no longer: only ours is left.
        until("the pool's tasks end", || Arc::strong_count(&pool) == 1).await;
    }
}
