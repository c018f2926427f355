//! Rolling from one pool to the pool that replaces it: the new pool's
//! slots are turned on one at a time, and each is up (running, and past
//! its health check when the service has one) before one of the old
//! pool's slots is turned off, so the service never has more than one
//! instance beyond those asked for and never fewer live ones. Requests go
//! to whichever pool has a free live instance, the new one first; a
//! request that must wait waits in the new pool once it has a live
//! instance, else in the old. A slot turned off finishes the request it
//! serves; requests still waiting in the old pool when its last slot goes
//! off are handed to the new one as the old is retired into it, so none
//! waits for a slot that will never come back.
//!
//! The same hand-over run the other way restores the old pool when the
//! new one does not come up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::POLL;
use super::state::WebPool;
use crate::model::InstanceState;

/// How a rollout step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every slot of the new pool is up and the old pool is off.
    Done,
    /// A new instance did not come up in time: why.
    Failed(String),
}

/// Requests handed over from `from` to `to`, which replaces it.
pub struct Handover {
    /// The pool going.
    pub from: Arc<WebPool>,
    /// The pool coming.
    pub to: Arc<WebPool>,
}

impl Handover {
    /// Rolls: `to`'s slots turned on one at a time, each up (within
    /// `limit`) before one of `from`'s goes off. Ends with `from` retired,
    /// or, when a new instance did not come up, with both as they are and
    /// why.
    pub async fn run(&self, limit: Duration) -> Step {
        *self.to.previous.lock() = Some(self.from.clone());
        let slots = self.to.inner.lock().slots.len();
        for slot in 0..slots {
            self.to.enable(slot);
            if let Err((why, timed_out)) = self.to.wait_up(slot, limit).await {
                let down = slots - self.to.live();
                let within = match timed_out {
                    true => format!(" in {}s", limit.as_secs()),
                    false => String::new(),
                };
                return Step::Failed(format!(
                    "{down} of {slots} new instances did not come up{within}: {why}"
                ));
            }
            self.from.disable_one();
        }
        while self.from.disable_one() {}
        self.finish();
        Step::Done
    }

    /// Turns every slot of `to` on at once and `from`'s off as `to`'s come
    /// up (or at once, when none does within `limit`): how the previous
    /// pool is restored after a failed rollout, when speed matters more
    /// than the surge.
    pub async fn restore(&self, limit: Duration) {
        // Until it is retired, what still reaches `from` may be served by
        // `to`, and `to` may borrow `from`'s live instances meanwhile.
        *self.to.previous.lock() = Some(self.from.clone());
        *self.from.previous.lock() = Some(self.to.clone());
        let slots = self.to.inner.lock().slots.len();
        for slot in 0..slots {
            self.to.enable(slot);
        }
        let deadline = Instant::now() + limit;
        while self.to.live() < slots && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        while self.from.disable_one() {}
        self.finish();
    }

    /// Ends the hand-over: `from` retired into `to`.
    fn finish(&self) {
        *self.to.previous.lock() = None;
        *self.from.previous.lock() = None;
        self.from.retire_into(&self.to);
    }
}

// === impl WebPool ===

impl WebPool {
    /// Turns a slot on and fills it.
    fn enable(self: &Arc<Self>, slot: usize) {
        {
            let mut inner = self.inner.lock();
            let Some(s) = inner.slots.get_mut(slot) else {
                return;
            };
            if s.enabled {
                return;
            }
            s.enabled = true;
        }
        if self.settings.warm {
            self.spawn_refill(slot, Duration::ZERO);
        }
    }

    /// Turns the last slot that is on off: its idle instance is dropped,
    /// a busy one finishes its request and is not refilled. Requests
    /// still waiting here when the last goes are handed to the pool that
    /// replaces this one when it is retired into it. False when none was
    /// on.
    fn disable_one(&self) -> bool {
        let idle = {
            let mut inner = self.inner.lock();
            let Some(s) = inner.slots.iter_mut().rev().find(|s| s.enabled) else {
                return false;
            };
            s.enabled = false;
            s.ready.take()
        };
        drop(idle);
        // A waiter may have been counting on it: it looks again.
        self.freed.notify_waiters();
        true
    }

    /// Waits (at most `limit`) until `slot`'s instance is up: running,
    /// past its check; else why not, as its status says, and whether the
    /// time ran out (rather than its code being unable to run at all).
    async fn wait_up(&self, slot: usize, limit: Duration) -> Result<(), (String, bool)> {
        let deadline = Instant::now() + limit;
        loop {
            let why = {
                let inner = self.inner.lock();
                let s = &inner.slots[slot];
                match s.status.state {
                    InstanceState::Running => return Ok(()),
                    // Its code cannot run: waiting will not help.
                    InstanceState::Crashed => {
                        let why = s.status.message.clone();
                        return Err((why.unwrap_or_else(|| "its code cannot run".into()), false));
                    }
                    _ => s.status.message.clone(),
                }
            };
            if self.stopped.is_cancelled() {
                return Err(("the rollout was replaced".to_string(), false));
            }
            if Instant::now() >= deadline {
                return Err((why.unwrap_or_else(|| "still starting".to_string()), true));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Slots that are on and have a running instance.
    pub fn live(&self) -> usize {
        self.inner
            .lock()
            .slots
            .iter()
            .filter(|s| s.enabled && s.status.state == InstanceState::Running)
            .count()
    }

    /// Turns every slot on (a pool restored after it was half turned off).
    pub fn enable_all(self: &Arc<Self>) {
        let slots = self.inner.lock().slots.len();
        for slot in 0..slots {
            self.enable(slot);
        }
    }

    /// Ends this pool's hand-over from another: the one it took over
    /// from, if any.
    pub fn take_previous(&self) -> Option<Arc<WebPool>> {
        self.previous.lock().take()
    }

    /// Whether a request would find a free live instance now.
    fn has_free(&self) -> bool {
        let now = Instant::now();
        self.inner.lock().slots.iter().any(|s| {
            s.enabled && !s.busy && s.ready.is_some() && s.backoff_until.is_none_or(|t| t <= now)
        })
    }

    /// The pool a request should go to while this one takes over from
    /// another: this one when it has a free live instance, else the old
    /// one when it has, else whichever has live instances to wait for.
    pub(super) fn pick_pool(self: &Arc<Self>) -> Arc<WebPool> {
        let Some(old) = self.previous.lock().clone() else {
            return self.clone();
        };
        if self.has_free() {
            return self.clone();
        }
        if old.has_free() || self.live() == 0 {
            return old;
        }
        self.clone()
    }
}
