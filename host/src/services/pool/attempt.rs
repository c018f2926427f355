//! Attempts: serving one request on the instance its lease holds, and,
//! when that instance was reused and returned without answering, once
//! more on a fresh one, which is how the pool learns that its code must
//! run fresh per request (see the pool's module comment).
//!
//! Whether a request is kept so it can be sent again, and whether it may
//! be, is the pool's retry policy ([`Retry`]); a request that may not be
//! sent again is answered by the platform with a typed outcome
//! ([`NotSentAgain`], a `502`), never by the guest.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

use super::admission::Lease;
use super::state::{Ready, Reuse, WebPool};
use crate::runtime::http::{describe, NO_RESPONSE};
use crate::runtime::{Answered, CallLimits, Outcome, Respond};
use crate::services::callee::Refusal;
use crate::services::code::{BoxFuture, Code, Handler};
use crate::services::directory::CHAIN_HEADER;
use crate::services::replay::Replay;

/// Most times one request follows a retired pool to the one that
/// replaced it.
const MAX_MOVES: usize = 4;

/// Longest one request may run in an instance before it is stopped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// === impl WebPool ===

impl WebPool {
    /// Serves one request, counting it (its status and time) in the
    /// service's metrics.
    pub(super) async fn answer_timed(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
        in_process: bool,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        let started = Instant::now();
        // While a rollout hands requests over, the old pool may serve it.
        let result = self
            .pick_pool()
            .answer(request, scheme, cyclic, in_process, MAX_MOVES)
            .await;
        let status = match &result {
            Ok(response) => response.status().as_u16(),
            Err(refused) => refused.status.as_u16(),
        };
        self.who.metrics.request(status, started.elapsed());
        result
    }

    /// Serves a request here, or in the pool that replaced this one when
    /// it was retired (at most `moves` times over).
    async fn answer(
        self: &Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
        in_process: bool,
        moves: usize,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        if let (Some(next), 1..) = (self.moved_to(), moves) {
            let next = next.pick_pool();
            return Box::pin(next.answer(request, scheme, cyclic, in_process, moves - 1)).await;
        }
        let code = self.code().await.map_err(|problem| {
            Refusal::unavailable(format!("{} cannot serve requests: {problem}", self.key), 30)
        })?;
        let mut lease = match self.acquire(cyclic).await {
            Ok(lease) => lease,
            Err(refused) => match (self.moved_to(), moves) {
                (Some(next), 1..) => {
                    let next = next.pick_pool();
                    let again = next.answer(request, scheme, cyclic, in_process, moves - 1);
                    return Box::pin(again).await;
                }
                _ => return Err(refused),
            },
        };
        let ready = match lease.ready.take() {
            Some(ready) => ready,
            None => match self.instantiate(lease.slot, &code).await {
                Ok(handler) => Ready { handler, served: 0 },
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
        let call = Call::new(&request, scheme, self.settings.cpu_limit);
        let (tx, rx) = oneshot::channel();
        // A reused instance may turn out not to be reusable: keep what is
        // needed to serve the request again on a fresh one.
        let proven = self.proven.load(Ordering::Relaxed);
        let (retry, unsent, request) = if Retry::wanted(self.settings.reuse, proven, &ready) {
            let (retry, unsent, request) = Retry::keep(request);
            (Some(retry), Some(unsent), request)
        } else {
            (None, None, request)
        };
        let killed = self.killed.clone();
        let pool = self.clone();
        // The guest gives its slot back when it is done (or when its
        // service is deleted, by dropping the lease).
        let serving = Serving(Some(Box::pin(async move {
            tokio::select! {
                biased;
                () = killed.cancelled() => {}
                () = pool.serve(lease, ready, request, call, tx, retry, code) => {}
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
            Ok(Err(code)) => Err(Refusal::failed(describe(&code))),
            // No guest answered: the platform may have, for a request it
            // could not send again.
            Err(_) => Err(match unsent.and_then(|mut unsent| unsent.try_recv().ok()) {
                Some(unsent) => unsent.refusal(),
                None => Refusal::failed("the instance ended without answering".to_string()),
            }),
        }
    }

    /// Serves a request on the lease's instance and gives the slot back.
    /// With a `retry`, a failure that shows the code cannot be reused
    /// sends the request to a fresh instance instead of to the client.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        self: Arc<Self>,
        lease: Lease,
        ready: Ready,
        request: http::Request<WasiBody>,
        call: Call,
        respond: Respond,
        retry: Option<Retry>,
        code: Arc<dyn Code>,
    ) {
        let Some(retry) = retry else {
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
        let Some(request) = retry.again(called_out, &why) else {
            self.learn(&why, &instance);
            // The caller hears the platform's answer once this is gone.
            drop(respond);
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

    /// Whether each request gets a fresh instance now: by the setting, or
    /// because the code showed it cannot be reused.
    pub(super) fn serves_fresh(&self) -> bool {
        match self.settings.reuse {
            Reuse::Never => true,
            Reuse::Always => false,
            Reuse::Auto => self.learned.lock().is_some(),
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
}

// === impl Serving, Call ===

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

impl Call {
    /// The call for `request`: the chain of services it came through, and
    /// the time and CPU one request may take.
    fn new(request: &http::Request<WasiBody>, scheme: Scheme, cpu: Duration) -> Call {
        let chain: Vec<String> = request
            .headers()
            .get(CHAIN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        Call {
            scheme,
            chain,
            limits: CallLimits {
                wall: REQUEST_TIMEOUT,
                cpu: Some(cpu),
            },
        }
    }
}

// === impl Retry, NotSentAgain ===

/// The pool's retry policy: when a request is kept so that it can be
/// sent to a fresh instance, and whether it may be. Holds the request
/// kept, and where its caller hears why it was not sent again.
struct Retry {
    replay: Replay,
    unsent: oneshot::Sender<NotSentAgain>,
}

impl Retry {
    /// Whether a request is kept to be sent again: only when reuse is
    /// automatic, its instance is a reused one, and the code has not yet
    /// shown (`proven`) that it can be reused.
    fn wanted(reuse: Reuse, proven: bool, ready: &Ready) -> bool {
        let reused = ready.served > 0 && !ready.handler.fresh_each_request();
        reused && !proven && reuse == Reuse::Auto
    }

    /// Keeps what is needed to send `request` again, and gives the
    /// request to serve first (its body lent) and where its caller hears
    /// that it was not sent again.
    fn keep(
        request: http::Request<WasiBody>,
    ) -> (
        Retry,
        oneshot::Receiver<NotSentAgain>,
        http::Request<WasiBody>,
    ) {
        let (replay, request) = Replay::keep(request);
        let (unsent, heard) = oneshot::channel();
        (Retry { replay, unsent }, heard, request)
    }

    /// The request again, to send to a fresh instance; or `None`, and the
    /// caller is told why (`why` the first instance failed, and why it
    /// was not sent again) when it may not be: its method is not
    /// idempotent, its instance called out, or its body was read.
    fn again(self, called_out: bool, why: &str) -> Option<http::Request<WasiBody>> {
        let because = if !self.replay.idempotent() {
            NotSent::NotIdempotent
        } else if called_out {
            NotSent::CalledOut
        } else {
            match self.replay.again() {
                Some(request) => return Some(request),
                None => NotSent::BodyRead,
            }
        };
        let _ = self.unsent.send(NotSentAgain {
            why: why.to_string(),
            because,
        });
        None
    }
}

/// Why a request whose reused instance did not answer was not sent to a
/// fresh one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NotSent {
    /// Its method is not idempotent: it may have done its work already.
    NotIdempotent,
    /// Its instance called out: the callee may have done the work.
    CalledOut,
    /// Its instance read its body, which cannot be read again.
    BodyRead,
}

/// The platform's answer for a request it could not send again: a `502`,
/// not the guest's failure (a `500`).
#[derive(Debug, PartialEq, Eq)]
struct NotSentAgain {
    /// What the first instance did.
    why: String,
    because: NotSent,
}

impl NotSentAgain {
    /// The caller's answer.
    fn refusal(self) -> Refusal {
        let after = match self.because {
            NotSent::NotIdempotent => {
                "serving a request that is not safe to repeat (not an idempotent method)"
            }
            NotSent::CalledOut => "after calling out",
            NotSent::BodyRead => "after reading the request body",
        };
        Refusal::bad_gateway(format!(
            "{}, {after}, so it was not sent again; the service is served fresh per request from now on",
            self.why
        ))
    }
}

// === impl Attempt ===

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
