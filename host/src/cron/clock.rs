//! The clock cron firings wait on: one thread that sleeps to the next
//! firing and wakes the job whose time it is.
//!
//! tokio's timer rounds every deadline up to its next millisecond and is
//! looked at only when a worker thread has nothing else to do, so under
//! load a firing woke several milliseconds late. This thread sleeps to the
//! deadline itself (a futex wait, tens of microseconds late) and hands the
//! firing to the job's task, which any free worker then runs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

/// Waits held before the ones nobody waits on any more are first dropped
/// (a job that woke for another reason leaves its wait behind); after
/// each pruning, the next comes at twice what is left, so pruning stays
/// cheap however many jobs there are.
const PRUNE_AT: usize = 4096;

struct Wait {
    at: Instant,
    /// Orders waits with the same deadline.
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Wait {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Wait {}

impl PartialOrd for Wait {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Wait {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Waits {
    heap: BinaryHeap<Reverse<Wait>>,
    seq: u64,
    /// Size at which the heap is pruned next.
    prune_at: usize,
}

struct Clock {
    waits: Mutex<Waits>,
    changed: Condvar,
}

/// The process's one cron clock, started on first use.
fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock: &'static Clock = Box::leak(Box::new(Clock {
            waits: Mutex::new(Waits {
                heap: BinaryHeap::new(),
                seq: 0,
                prune_at: PRUNE_AT,
            }),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("mesh-cron-clock".to_string())
            .spawn(move || clock.run())
            .expect("starting the cron clock thread");
        clock
    })
}

impl Clock {
    fn run(&self) {
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            while waits.heap.peek().is_some_and(|w| w.0.at <= now) {
                if let Some(Reverse(wait)) = waits.heap.pop() {
                    let _ = wait.wake.send(());
                }
            }
            waits = match waits.heap.peek().map(|w| w.0.at) {
                Some(at) => {
                    self.changed
                        .wait_timeout(waits, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(waits).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// Resolves at `at` (at once if it has passed). Dropping it cancels the
/// wait.
pub async fn sleep_until(at: Instant) {
    if at <= Instant::now() {
        return;
    }
    let (wake, woken) = oneshot::channel();
    let clock = clock();
    let earliest = {
        let mut waits = clock.waits.lock().unwrap_or_else(|e| e.into_inner());
        if waits.heap.len() >= waits.prune_at {
            waits.heap.retain(|w| !w.0.wake.is_closed());
            waits.prune_at = PRUNE_AT.max(2 * waits.heap.len());
        }
        waits.seq += 1;
        let seq = waits.seq;
        let earliest = waits.heap.peek().is_none_or(|w| at < w.0.at);
        waits.heap.push(Reverse(Wait { at, seq, wake }));
        earliest
    };
    // The clock sleeps to its earliest deadline: only an earlier one
    // needs it awake.
    if earliest {
        clock.changed.notify_one();
    }
    let _ = woken.await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waits_end_at_their_deadline_in_order_and_dropped_ones_go() {
        let start = Instant::now();
        let late = tokio::spawn(sleep_until(start + Duration::from_millis(60)));
        sleep_until(start + Duration::from_millis(20)).await;
        let woke = start.elapsed();
        assert!(woke >= Duration::from_millis(20), "{woke:?}");
        assert!(!late.is_finished());
        late.await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(60));
        // Waits nobody awaits any more are pruned, not kept forever.
        for _ in 0..PRUNE_AT + 10 {
            let wait = Box::pin(sleep_until(Instant::now() + Duration::from_secs(3600)));
            futures::FutureExt::now_or_never(wait);
        }
        assert!(clock().waits.lock().unwrap().heap.len() <= PRUNE_AT + 1);
        // A deadline already passed returns at once.
        sleep_until(start).await;
    }
}
