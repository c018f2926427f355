//! The pool without a daemon: fake code whose instances wait on gates
//! the test opens, so requests can be held, queued and dropped at will.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use tokio::sync::Semaphore;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

use super::*;
use crate::model::Digest;
use crate::runtime::http::NO_RESPONSE;
use crate::runtime::{CallLimits, Interrupt, Launch, Outcome};
use crate::services::code::{Code, CodeSource, Handler};
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
                let _ = respond.send(Err(ErrorCode::InternalError(Some(NO_RESPONSE.to_string()))));
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
