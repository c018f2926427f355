//! Admission: a request takes a free instance's slot, or a place in the
//! queue until one is given back, or is refused (`503` with
//! `Retry-After`). Which slot it takes and whether it may wait is the
//! pool's [`Admission`] policy, a small value read from its settings; the
//! places and slots it holds are guards ([`Queued`], [`Lease`]) whose
//! `Drop` gives them back, so a request dropped at any await point leaves
//! the queue and the slots as they were.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{Inner, Ready, WebPool, WebSlot, MAX_EXTRAS};
use crate::model::ServiceKey;
use crate::runtime::Outcome;
use crate::services::callee::Refusal;

/// Longest a request waits in the queue for a free instance.
pub const QUEUE_WAIT: Duration = Duration::from_secs(30);

/// The pool's admission policy: which free slot a request takes, and
/// whether one that finds none may wait for one.
pub(super) struct Admission<'a> {
    /// The service, named in refusals.
    key: &'a ServiceKey,
    /// Requests that may wait at once.
    max_queue: usize,
    /// Instances are started by calls (a worker's, called by name), not
    /// kept live: when every one is backing off after a failed start, a
    /// call is told why at once instead of waiting.
    cold: bool,
    /// Instances take requests only once they passed a health check, so
    /// a request takes only a slot with a live instance.
    checked: bool,
}

impl Admission<'_> {
    /// The slot for a request: a free one (so it has the fewest requests
    /// in flight, none) that is not backing off, searching round-robin
    /// from `start` so that requests spread over the instances.
    pub(super) fn pick(&self, slots: &[WebSlot], now: Instant, start: usize) -> Option<usize> {
        let n = slots.len();
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let s = &slots[i];
            !s.busy
                && s.enabled
                && (!self.checked || s.ready.is_some())
                && s.backoff_until.is_none_or(|t| t <= now)
        })
    }

    /// Why a request that found no free slot cannot wait, if it cannot.
    fn refuse(&self, inner: &Inner, timed_out: bool, queued: bool) -> Result<(), Refusal> {
        let key = self.key;
        if self.cold {
            self.refuse_backing_off(inner)?;
        }
        if inner.slots.is_empty() {
            return Err(Refusal::unavailable(
                format!(
                    "{key} has 0 instances; scale it up with `mesh svc update {} --instances N`",
                    key.name
                ),
                5,
            ));
        }
        if timed_out {
            return Err(Refusal::unavailable(
                format!(
                    "{key} is busy: no instance was free for {}s",
                    QUEUE_WAIT.as_secs()
                ),
                1,
            ));
        }
        if !queued && inner.waiting >= self.max_queue {
            return Err(Refusal::unavailable(
                format!(
                    "{key} is busy: all {} instances are serving and {} requests are waiting",
                    inner.slots.len(),
                    inner.waiting
                ),
                1,
            ));
        }
        Ok(())
    }

    /// Every instance of a worker called by name is idle and backing off
    /// after a failed start: says why at once.
    fn refuse_backing_off(&self, inner: &Inner) -> Result<(), Refusal> {
        let now = Instant::now();
        let backing_off = |s: &WebSlot| !s.busy && s.backoff_until.is_some_and(|t| t > now);
        let soonest = inner
            .slots
            .iter()
            .filter(|s| s.backoff_until.is_some())
            .min_by_key(|s| s.backoff_until);
        let all = !inner.slots.is_empty() && inner.slots.iter().all(backing_off);
        let Some(slot) = soonest.filter(|_| all) else {
            return Ok(());
        };
        let (until, status) = (slot.backoff_until.unwrap_or(now), &slot.status);
        let why = status.message.clone().unwrap_or_else(|| "it failed".into());
        let retry = until.saturating_duration_since(now).as_secs().max(1);
        Err(Refusal::unavailable(
            format!(
                "{} cannot take calls now: {why}; trying again on a call after {retry}s",
                self.key
            ),
            retry,
        ))
    }
}

// === impl WebPool ===

impl WebPool {
    /// The pool's admission policy.
    fn admission(&self) -> Admission<'_> {
        Admission {
            key: &self.key,
            max_queue: self.max_queue,
            cold: !self.settings.warm,
            checked: self.health.is_some(),
        }
    }

    /// Takes a free, healthy slot (and its live instance, if it has one),
    /// waiting in the queue while none is free. A lease without a slot is
    /// a one-off instance for a cyclic call.
    pub(super) async fn acquire(self: &Arc<Self>, cyclic: bool) -> Result<Lease, Refusal> {
        let deadline = Instant::now() + QUEUE_WAIT;
        let admission = self.admission();
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
            if self.moved_to().is_some() {
                // The caller takes the request to the pool that replaced
                // this one.
                return Err(Refusal::unavailable(
                    format!("{} was replaced", self.key),
                    1,
                ));
            }
            let wake_for_backoff = {
                let mut inner = self.inner.lock();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = admission.pick(&inner.slots, now, start) {
                    let slot = &mut inner.slots[i];
                    slot.busy = true;
                    let ready = slot.ready.take();
                    drop(inner);
                    return Ok(Lease::new(self.clone(), Some(i), ready));
                }
                if cyclic {
                    return self.extra();
                }
                admission.refuse(&inner, now >= deadline, queued.is_some())?;
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

    /// A lease for a one-off instance, for a cyclic call that found no
    /// free slot (so it does not wait on one held up its own chain).
    fn extra(self: &Arc<Self>) -> Result<Lease, Refusal> {
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
        Ok(lease)
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
pub(super) struct Lease {
    pool: Arc<WebPool>,
    /// The slot (`None`: a one-off instance).
    pub(super) slot: Option<usize>,
    /// The slot's live instance, when it had one.
    pub(super) ready: Option<Ready>,
    finished: bool,
    /// A one-off instance's place among the pool's extras.
    extra: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Lease {
    /// A lease on `slot` of `pool`, with its live instance if it has one.
    pub(super) fn new(pool: Arc<WebPool>, slot: Option<usize>, ready: Option<Ready>) -> Lease {
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
    pub(super) fn finish(mut self, ready: Option<Ready>, failure: Option<Outcome>) {
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
