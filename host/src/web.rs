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
//! wasmtime-wasi-http's `ProxyHandler` is not used: it has no bound on
//! live instances, no queue, and no per-instance restarts or status, which
//! are what a PaaS user watches. This pool is built on its p2 `ProxyPre`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use http::StatusCode;
use tokio::sync::{oneshot, Notify, OnceCell};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpView as _};

use crate::dns::{Identity, CHAIN_HEADER};
use crate::engine::Loaded;
use crate::instance::{explain_failure, new_store, HostState, Interrupt, Launch, Outcome};
use crate::logs::{LogLine, LogStream, Stream};
use crate::model::{InstanceState, InstanceStatus, ServiceKey};
use crate::supervisor::{backoff, Parts, Spec};

/// Longest a request waits in the queue for a free instance.
pub const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Longest one request may run in an instance before it is stopped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no instance: answered with `status` and a short body.
#[derive(Debug)]
pub struct Refusal {
    /// 503 (busy, starting, failing) or 500 (the instance failed).
    pub status: StatusCode,
    /// One line for the body.
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Refusal {
    fn unavailable(message: String, retry_after: u64) -> Refusal {
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            retry_after: Some(retry_after),
        }
    }

    fn failed(message: String) -> Refusal {
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
            retry_after: None,
        }
    }
}

/// A live instance ready for a request.
struct Ready {
    store: Store<HostState>,
    proxy: Proxy,
    interrupt: Interrupt,
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
    fresh_per_request: bool,
    parts: Parts,
    /// The service's identity (log, counters); each instance gets
    /// `who.at(id)`.
    who: Identity,
    code: OnceCell<Result<Arc<Loaded>, String>>,
    inner: Mutex<Inner>,
    freed: Notify,
    max_queue: usize,
    /// Where the next search for a free slot starts, so requests spread.
    next: AtomicUsize,
    warm: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain slot data; a panic mid-update leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WebPool {
    /// A pool of `instances` slots for a service, warming every slot up in
    /// the background.
    pub(crate) fn start(
        parts: Parts,
        key: ServiceKey,
        spec: Arc<Spec>,
        instances: u32,
        fresh_per_request: bool,
        warm: bool,
    ) -> Arc<WebPool> {
        // A worker's request instances run beside its `run` instances, so
        // their ids differ: `worker.req1`.
        let prefix = if warm { "" } else { "req" };
        let slots = (0..instances)
            .map(|i| WebSlot {
                status: InstanceStatus::starting(
                    format!("{}.{prefix}{}", key.name, i + 1),
                    spec.version,
                ),
                busy: false,
                ready: None,
                failures: 0,
                backoff_until: None,
            })
            .collect();
        let max_queue = parts.queue_per_instance * instances.max(1) as usize;
        let pool = Arc::new(WebPool {
            who: parts.identity(&key, &key.name),
            key,
            spec,
            fresh_per_request,
            parts,
            code: OnceCell::new(),
            inner: Mutex::new(Inner { slots, waiting: 0 }),
            freed: Notify::new(),
            max_queue,
            next: AtomicUsize::new(0),
            warm,
        });
        if warm {
            for i in 0..instances as usize {
                tokio::spawn(pool.clone().refill(i, Duration::ZERO));
            }
        }
        pool
    }

    /// Whether the pool was made for these settings.
    pub(crate) fn matches(
        &self,
        spec: &Arc<Spec>,
        instances: u32,
        fresh: bool,
        warm: bool,
    ) -> bool {
        self.spec.id == spec.id
            && lock(&self.inner).slots.len() == instances as usize
            && self.fresh_per_request == fresh
            && self.warm == warm
    }

    /// Whether the pool keeps its instances live (a web service's), rather
    /// than starting them on the first call (a worker's).
    pub fn warm(&self) -> bool {
        self.warm
    }

    /// Every slot as an instance.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        lock(&self.inner)
            .slots
            .iter()
            .map(|s| s.status.clone())
            .collect()
    }

    /// Serves one request from the ingress on a free instance, waiting in
    /// the queue for one when all are busy.
    pub async fn handle(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        self.call(request, scheme, false).await
    }

    /// Serves one request, from the ingress or another service. A `cyclic`
    /// call (this service is already up its chain) that finds no free
    /// instance gets a one-off extra instance instead of waiting on one
    /// held up the chain.
    pub async fn call(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        let started = Instant::now();
        let result = self.answer(request, scheme, cyclic).await;
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
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        let code = self.code().await.map_err(|message| {
            Refusal::unavailable(format!("{} cannot serve requests: {message}", self.key), 30)
        })?;
        let (slot, ready) = self.acquire(cyclic).await?;
        let ready = match ready {
            Some(ready) => ready,
            None => match self.instantiate(slot, &code).await {
                Ok(ready) => ready,
                Err(message) => {
                    self.release(slot, None, Some(message.clone()));
                    return Err(Refusal::failed(message));
                }
            },
        };
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        tokio::spawn(self.clone().serve(slot, ready, request, scheme, tx));
        match rx.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(Refusal::failed(describe(&code))),
            Err(_) => Err(Refusal::failed(
                "the instance ended without answering".to_string(),
            )),
        }
    }

    async fn code(&self) -> Result<Arc<Loaded>, String> {
        self.code
            .get_or_init(|| async {
                let code = crate::supervisor::load_any(&self.parts, &self.spec.run).await?;
                if code.proxy.is_none() {
                    return Err(format!(
                        "component '{}' does not export `wasi:http/incoming-handler`, so it cannot serve requests (it exports {})",
                        self.spec.run.command.first().map(String::as_str).unwrap_or(""),
                        code.exports.join(", ")
                    ));
                }
                Ok(code)
            })
            .await
            .clone()
    }

    /// Takes a free, healthy slot (and its live instance, if it has one),
    /// waiting in the queue while none is free. `None` is a one-off
    /// instance for a cyclic call.
    async fn acquire(&self, cyclic: bool) -> Result<(Option<usize>, Option<Ready>), Refusal> {
        let deadline = Instant::now() + QUEUE_WAIT;
        let mut queued = false;
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let wake_for_backoff = {
                let mut inner = lock(&self.inner);
                if queued {
                    inner.waiting -= 1;
                }
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = pick(&inner.slots, now, start) {
                    let slot = &mut inner.slots[i];
                    slot.busy = true;
                    return Ok((Some(i), slot.ready.take()));
                }
                if cyclic {
                    return Ok((None, None));
                }
                if inner.slots.is_empty() {
                    return Err(Refusal::unavailable(
                        format!("{} has 0 instances; scale it up with `mesh svc update {} --instances N`", self.key, self.key.name),
                        5,
                    ));
                }
                if now >= deadline {
                    return Err(Refusal::unavailable(
                        format!(
                            "{} is busy: no instance was free for {}s",
                            self.key,
                            QUEUE_WAIT.as_secs()
                        ),
                        1,
                    ));
                }
                if inner.waiting >= self.max_queue {
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
                inner.waiting += 1;
                queued = true;
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

    /// A new instance for a slot (`None`: a one-off instance).
    async fn instantiate(&self, slot: Option<usize>, code: &Loaded) -> Result<Ready, String> {
        let proxy_pre = code
            .proxy
            .as_ref()
            .ok_or_else(|| "the component does not serve HTTP".to_string())?;
        let id = match slot {
            Some(slot) => lock(&self.inner).slots[slot].status.id.clone(),
            None => format!("{}.extra", self.key.name),
        };
        let interrupt = Interrupt::default();
        let launch = Launch {
            args: self.spec.run.command.clone(),
            env: self.spec.run.env_for(&id),
            memory_bytes: self.spec.run.memory_bytes,
            stdout: LogStream::new(self.who.log.clone(), &id, Stream::Stdout),
            stderr: LogStream::new(self.who.log.clone(), &id, Stream::Stderr),
            who: Some(self.who.at(&id)),
            stdin: None,
        };
        let mut store = new_store(&self.parts.engine, launch, interrupt.clone());
        match proxy_pre.instantiate_async(&mut store).await {
            Ok(proxy) => {
                if let Some(slot) = slot {
                    let mut inner = lock(&self.inner);
                    let status = &mut inner.slots[slot].status;
                    status.enter(InstanceState::Running);
                    status.started_at = Some(Utc::now());
                }
                Ok(Ready {
                    store,
                    proxy,
                    interrupt,
                })
            }
            Err(e) => Err(explain_failure(&store, &e, &interrupt)),
        }
    }

    /// Runs the guest's handler for one request, then gives the slot back.
    async fn serve(
        self: Arc<Self>,
        slot: Option<usize>,
        ready: Ready,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        tx: ResponseSender,
    ) {
        let Ready {
            mut store,
            proxy,
            interrupt,
        } = ready;
        let sender = tx.clone();
        let chain = request
            .headers()
            .get(CHAIN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        store.data_mut().set_chain(chain);
        let call = async {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(scheme, request)?;
            let out = http.new_response_outparam_from_callback(move |value| {
                if let Some(tx) = lock(&sender).take() {
                    let _ = tx.send(value);
                }
            })?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        };
        let failure = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(explain_failure(&store, &e, &interrupt)),
            Err(_) => Some(format!(
                "request took longer than {}s and was stopped",
                REQUEST_TIMEOUT.as_secs()
            )),
        };
        if let Some(tx) = lock(&tx).take() {
            // The guest returned (or failed) without answering.
            let why = failure
                .clone()
                .unwrap_or_else(|| "the handler returned without setting a response".into());
            let _ = tx.send(Err(ErrorCode::InternalError(Some(why))));
        }
        let keep = failure.is_none() && !self.fresh_per_request && slot.is_some();
        let ready = keep.then_some(Ready {
            store,
            proxy,
            interrupt,
        });
        self.release(slot, ready, failure);
    }

    /// Gives a slot back: with its instance for reuse, or retired after a
    /// failure (a restart, then a back-off before it is refilled).
    fn release(
        self: &Arc<Self>,
        slot: Option<usize>,
        ready: Option<Ready>,
        failure: Option<String>,
    ) {
        let Some(slot) = slot else {
            if let Some(message) = failure {
                self.note(
                    &format!("{}.extra", self.key.name),
                    &format!("[mesh] {message}; the request got 500"),
                );
            }
            return;
        };
        let refill_after = {
            let mut inner = lock(&self.inner);
            let s = &mut inner.slots[slot];
            s.busy = false;
            match failure {
                None => {
                    s.failures = 0;
                    let refill = ready.is_none();
                    s.ready = ready;
                    refill.then_some(Duration::ZERO)
                }
                Some(message) => {
                    let delay = backoff(s.failures);
                    s.failures = s.failures.saturating_add(1);
                    s.backoff_until = Some(Instant::now() + delay);
                    s.ready = None;
                    s.status.back_off(None, message.clone(), delay);
                    self.who.metrics.restart();
                    tracing::info!(service = %self.key, instance = %s.status.id, %message, ?delay, "web instance retired");
                    let kind = Outcome::event_kind(&message, "instance.failed");
                    self.parts.events.service(
                        &self.key,
                        kind,
                        Some(&s.status.id),
                        format!("{message}; the request got 500"),
                    );
                    self.note(
                        &s.status.id,
                        &format!(
                            "[mesh] {message}; the request got 500; restart {} in {:.1}s",
                            s.status.restarts,
                            delay.as_secs_f64()
                        ),
                    );
                    Some(delay)
                }
            }
        };
        self.freed.notify_one();
        if let Some(delay) = refill_after {
            tokio::spawn(self.clone().refill(slot, delay));
        }
    }

    fn note(&self, instance: &str, text: &str) {
        self.who.log.write(LogLine {
            time: Utc::now(),
            instance: instance.to_string(),
            stream: Stream::Stderr,
            text: text.to_string(),
        });
    }

    /// After `delay`, gives an idle slot without an instance a fresh one,
    /// so the next request finds it ready.
    async fn refill(self: Arc<Self>, slot: usize, delay: Duration) {
        tokio::time::sleep(delay).await;
        let Ok(code) = self.code().await else {
            let message = self.code().await.err();
            let mut inner = lock(&self.inner);
            for s in &mut inner.slots {
                s.status.enter(InstanceState::Crashed);
                s.status.message = message.clone();
            }
            return;
        };
        {
            let mut inner = lock(&self.inner);
            let s = &mut inner.slots[slot];
            if s.busy || s.ready.is_some() {
                return;
            }
            s.busy = true;
            s.backoff_until = None;
            s.status.enter(InstanceState::Starting);
        }
        let ready = self.instantiate(Some(slot), &code).await;
        match ready {
            Ok(ready) => {
                let mut inner = lock(&self.inner);
                let s = &mut inner.slots[slot];
                s.busy = false;
                s.ready = Some(ready);
                drop(inner);
                self.freed.notify_one();
            }
            Err(message) => self.release(Some(slot), None, Some(message)),
        }
    }
}

type ResponseSender =
    Arc<Mutex<Option<oneshot::Sender<Result<http::Response<HyperOutgoingBody>, ErrorCode>>>>>;

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

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}
