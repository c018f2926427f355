//! Health checks: a `GET` of the service's health path on one instance,
//! in-process for a component and over HTTP to `$PORT` for a container
//! (both are a [`Handler`]), answered 2xx or 3xx when healthy.
//!
//! A new instance is checked before its slot takes requests (readiness):
//! it is asked again every interval until it passes, and retired like a
//! failed one (a restart, a back-off) after the threshold in a row (a
//! check that times out or traps loses its instance, and the next is
//! asked of a fresh one). A
//! live instance is checked every interval while it is idle (liveness),
//! so a check never holds up a request: a slot being checked is busy, as
//! if serving, and a slot is checked only while no request waits. One
//! that fails the threshold in a row is taken out of rotation and
//! replaced (at once when its check timed out or trapped: the instance
//! went with it). A check runs in the slot's own instance, so it never makes
//! more instances than the service has.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::sync::oneshot;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::admission::Lease;
use super::state::{Ready, WebPool};
use crate::model::{HealthCheck, InstanceState};
use crate::runtime::http::empty_body;
use crate::runtime::{CallLimits, Ending, Outcome};
use crate::services::code::Handler;

/// Sent as the checks' `User-Agent`, so a guest can tell them apart.
pub const HEALTH_AGENT: &str = "mesh-health-check";

/// A failed check: why, and the instance when it survived the check.
struct Failed {
    why: String,
    instance: Option<Box<dyn Handler>>,
}

impl WebPool {
    /// Asks `handler` for the health path; gives it back when healthy.
    async fn probe(
        &self,
        check: &HealthCheck,
        handler: Box<dyn Handler>,
    ) -> Result<Box<dyn Handler>, Failed> {
        let request = http::Request::get(check.path.as_str())
            .header(http::header::HOST, self.check_host())
            .header(http::header::USER_AGENT, HEALTH_AGENT)
            .body(empty_body())
            .expect("a GET of a checked path is a valid request");
        let (tx, rx) = oneshot::channel();
        let limits = CallLimits {
            wall: check.timeout(),
            cpu: Some(self.settings.cpu_limit),
        };
        let serve = handler.serve(request, Scheme::Http, Vec::new(), tx, limits);
        let timed = tokio::time::timeout(check.timeout(), async {
            let (served, answer) = tokio::join!(serve, async {
                match rx.await {
                    // The body is read to its end, so the instance is done
                    // with the request before it is given back.
                    Ok(Ok(response)) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        Ok(status)
                    }
                    Ok(Err(code)) => Err(format!("{code:?}")),
                    Err(_) => Err("no answer".to_string()),
                }
            });
            (served, answer)
        })
        .await;
        let path = &check.path;
        match timed {
            Err(_) => Err(Failed {
                why: format!(
                    "failed health check: no answer from {path} in {}ms",
                    check.timeout().as_millis()
                ),
                instance: None,
            }),
            Ok((Err(outcome), _)) => Err(Failed {
                why: format!("failed health check: {} answering {path}", outcome.message),
                instance: None,
            }),
            Ok((Ok(handler), Ok(status))) if status.is_success() || status.is_redirection() => {
                Ok(handler)
            }
            Ok((Ok(handler), Ok(status))) => Err(Failed {
                why: format!("failed health check: {} from {path}", status.as_u16()),
                instance: Some(handler),
            }),
            Ok((Ok(handler), Err(error))) => Err(Failed {
                why: format!("failed health check: {error} from {path}"),
                instance: Some(handler),
            }),
        }
    }

    /// The `Host` a check names: the service's intra-DNS name.
    fn check_host(&self) -> String {
        crate::model::dns_name(&self.key.stack, &self.key.name)
    }

    /// Checks a new instance until it passes (then its slot takes
    /// requests) or fails the threshold in a row (then it is retired as a
    /// failed one). The slot is held by `lease` throughout.
    pub(super) async fn ready_check(self: &Arc<Self>, lease: Lease, handler: Box<dyn Handler>) {
        let Some(check) = self.health.clone() else {
            lease.finish(Some(Ready { handler, served: 0 }), None);
            return;
        };
        let slot = lease.slot.expect("a refill holds a slot");
        let mut handler = handler;
        let mut failed = 0;
        loop {
            match self.probe(&check, handler).await {
                Ok(passed) => {
                    let ready = self.after_check(passed).await;
                    {
                        let mut inner = self.inner.lock();
                        let s = &mut inner.slots[slot];
                        s.unhealthy = 0;
                        s.status.enter(InstanceState::Running);
                        s.status.message = None;
                        s.status.started_at = Some(chrono::Utc::now());
                    }
                    match ready {
                        Ok(ready) => lease.finish(Some(ready), None),
                        Err(outcome) => lease.finish(None, Some(outcome)),
                    }
                    return;
                }
                Err(Failed { why, instance }) => {
                    failed += 1;
                    if failed >= check.threshold() {
                        lease.finish(None, Some(unhealthy(why)));
                        return;
                    }
                    self.inner.lock().slots[slot].status.message =
                        Some(format!("{why} ({failed} of {})", check.threshold()));
                    tokio::time::sleep(check.interval()).await;
                    // A check that timed out or trapped took its instance
                    // with it: the next is asked of a fresh one.
                    handler = match instance {
                        Some(instance) => instance,
                        None => match self.fresh(slot).await {
                            Ok(fresh) => fresh,
                            Err(outcome) => {
                                lease.finish(None, Some(outcome));
                                return;
                            }
                        },
                    };
                }
            }
        }
    }

    /// A new instance for `slot`.
    async fn fresh(&self, slot: usize) -> Result<Box<dyn Handler>, Outcome> {
        let code = self
            .code()
            .await
            .map_err(|problem| Outcome::failed(problem.to_string()))?;
        self.instantiate(Some(slot), &code).await
    }

    /// An instance that passed a check, ready for requests: itself (it
    /// has served one request, so reuse is judged as for a reused one),
    /// or a fresh one when the pool serves each request fresh.
    async fn after_check(&self, passed: Box<dyn Handler>) -> Result<Ready, Outcome> {
        if !self.serves_fresh() {
            return Ok(Ready {
                handler: passed,
                served: 1,
            });
        }
        drop(passed);
        let code = self
            .code()
            .await
            .map_err(|problem| Outcome::failed(problem.to_string()))?;
        let launch =
            crate::services::parts::launch(&self.who, &self.spec.run, &self.instance_id(None));
        let handler = code.start_handler(launch).await?;
        Ok(Ready { handler, served: 0 })
    }

    /// Checks every idle live instance each interval until the pool is
    /// retired; one that fails the threshold in a row is replaced.
    pub(super) fn spawn_liveness(self: &Arc<Self>) {
        let Some(check) = self.health.clone() else {
            return;
        };
        let pool = Arc::downgrade(self);
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            let every = check.interval();
            loop {
                tokio::select! {
                    () = stopped.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(pool) = pool.upgrade() else { return };
                let slots = pool.inner.lock().slots.len();
                for slot in 0..slots {
                    if stopped.is_cancelled() {
                        return;
                    }
                    pool.live_check(&check, slot).await;
                }
            }
        });
    }

    /// Checks one slot's instance if it is idle and no request waits.
    async fn live_check(self: &Arc<Self>, check: &HealthCheck, slot: usize) {
        let (lease, ready) = {
            let mut inner = self.inner.lock();
            if inner.waiting > 0 {
                return;
            }
            let s = &mut inner.slots[slot];
            if s.busy || !s.enabled || s.ready.is_none() {
                return;
            }
            s.busy = true;
            let ready = s.ready.take().expect("checked above");
            (Lease::new(self.clone(), Some(slot), None), ready)
        };
        let served = ready.served;
        match self.probe(check, ready.handler).await {
            Ok(handler) => {
                let ready = match self.serves_fresh() {
                    // A fresh-per-request pool's instance has now served.
                    true => None,
                    false => Some(Ready {
                        handler,
                        served: served.saturating_add(1),
                    }),
                };
                {
                    let mut inner = self.inner.lock();
                    let s = &mut inner.slots[slot];
                    s.unhealthy = 0;
                    s.status.message = None;
                }
                lease.finish(ready, None);
            }
            Err(Failed { why, instance }) => {
                let failed = {
                    let mut inner = self.inner.lock();
                    let s = &mut inner.slots[slot];
                    s.unhealthy = s.unhealthy.saturating_add(1);
                    s.status.message =
                        Some(format!("{why} ({} of {})", s.unhealthy, check.threshold()));
                    s.unhealthy
                };
                match instance {
                    Some(handler) if failed < check.threshold() => {
                        lease.finish(
                            Some(Ready {
                                handler,
                                served: served.saturating_add(1),
                            }),
                            None,
                        );
                    }
                    _ => lease.finish(None, Some(unhealthy(why))),
                }
            }
        }
    }
}

/// How an instance that kept failing its check ends.
fn unhealthy(why: String) -> Outcome {
    Outcome {
        exit_code: None,
        message: why,
        ending: Ending::Unhealthy,
    }
}

/// Longest a rollout polls between looks at a slot.
pub(super) const POLL: Duration = Duration::from_millis(10);
