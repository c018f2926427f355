//! Instance lifecycle: a slot's instance is made (up front when the pool
//! keeps instances live, else on the first call), given back after each
//! request for the next, retired when it fails (a restart, then a
//! back-off before the slot is refilled), and dropped when the pool is
//! retired or stopped. A refill runs on a task of its own that ends when
//! the pool is retired, so nothing a pool started outlives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::admission::Lease;
use super::state::{Ready, WebPool, WebSlot};
use crate::model::InstanceState;
use crate::runtime::{Ending, Outcome};
use crate::services::backoff::backoff;
use crate::services::code::{Code, Handler};
use crate::services::parts::launch;
use crate::services::spec::CodeProblem;

impl WebPool {
    /// Stops the pool of a deleted service: retired, and the requests its
    /// instances serve are ended (their stores dropped).
    pub fn stop(&self) {
        self.killed.cancel();
        self.retire();
        // Nothing it handed over from lives on through it.
        if let Some(previous) = self.previous.lock().take() {
            previous.stop();
        }
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

    /// Retires a pool `successor` replaces: requests still waiting here,
    /// or sent here by a route not yet updated, go there instead.
    pub fn retire_into(&self, successor: &Arc<WebPool>) {
        *self.successor.lock() = Some(Arc::downgrade(successor));
        self.retire();
        self.freed.notify_waiters();
    }

    /// The pool requests go to instead, once this one was retired into
    /// another.
    pub(super) fn moved_to(&self) -> Option<Arc<WebPool>> {
        if !self.stopped.is_cancelled() {
            return None;
        }
        self.successor.lock().as_ref()?.upgrade()
    }

    /// The code every instance is made from, loaded once.
    pub(super) async fn code(&self) -> Result<Arc<dyn Code>, CodeProblem> {
        self.code
            .get_or_init(|| self.spec.run.load_handler(self.parts.code.as_ref()))
            .await
            .clone()
    }

    /// A new instance for a slot (`None`: a one-off instance).
    pub(super) async fn instantiate(
        &self,
        slot: Option<usize>,
        code: &Arc<dyn Code>,
    ) -> Result<Box<dyn Handler>, Outcome> {
        let id = self.instance_id(slot);
        let launch = launch(&self.who, &self.spec.run, &id);
        let handler = code.start_handler(launch).await?;
        // A checked instance is running once it passes its check.
        if let (Some(slot), None) = (slot, &self.health) {
            let mut inner = self.inner.lock();
            let status = &mut inner.slots[slot].status;
            status.enter(InstanceState::Running);
            status.started_at = Some(Utc::now());
        }
        Ok(handler)
    }

    /// The id of a slot's instance (`None`: a one-off instance).
    pub(super) fn instance_id(&self, slot: Option<usize>) -> String {
        match slot {
            Some(slot) => self.inner.lock().slots[slot].status.id.clone(),
            None => format!("{}.extra", self.key.name),
        }
    }

    /// Gives a slot back: with its instance for reuse, or retired after a
    /// failure (a restart, then a back-off before it is refilled).
    pub(super) fn release(
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
                    let refill = ready.is_none() && s.enabled;
                    // A stopped pool, or a slot turned off, keeps no idle
                    // instance.
                    s.ready = if stopped || !s.enabled { None } else { ready };
                    refill.then_some(Duration::ZERO)
                }
                // A pool that starts instances only for requests (a
                // worker called by name) waits for the next request to
                // try again, rather than starting one in a loop.
                Some(outcome) => {
                    let delay = self.retire_instance(s, outcome);
                    (self.settings.warm && s.enabled).then_some(delay)
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
        s.unhealthy = 0;
        self.who.metrics.restart();
        tracing::info!(service = %self.key, instance = %s.status.id, %message, ?delay, "web instance retired");
        let kind = outcome.event_kind("instance.failed");
        // A failed check is no request's failure.
        let what = match outcome.ending {
            Ending::Unhealthy => format!("{message}: taken out of rotation and replaced"),
            _ => format!("{message}; the request got 500"),
        };
        self.parts
            .events
            .service(&self.key, kind, Some(&s.status.id), what.clone());
        self.who.log.note(
            &s.status.id,
            format!(
                "[mesh] {what}; restart {} in {:.1}s",
                s.status.restarts,
                delay.as_secs_f64()
            ),
        );
        delay
    }

    /// After `delay`, gives an idle slot without an instance a fresh one,
    /// so the next request finds it ready; ends at once when the pool is
    /// stopped.
    pub(super) fn spawn_refill(self: &Arc<Self>, slot: usize, delay: Duration) {
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
            if s.busy || s.ready.is_some() || !s.enabled {
                return;
            }
            s.busy = true;
            s.backoff_until = None;
            s.status.enter(InstanceState::Starting);
            Lease::new(self.clone(), Some(slot), None)
        };
        match self.instantiate(Some(slot), &code).await {
            Ok(handler) => self.ready_check(lease, handler).await,
            Err(outcome) => lease.finish(None, Some(outcome)),
        }
    }
}
