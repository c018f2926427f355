//! CPU time: what a request may burn, and fair shares between tenants.
//!
//! Every running guest reaches an epoch check once per tick. At each, its
//! store's [`CpuUse`] counts the time it ran since it last resumed (a
//! stretch longer than two ticks means it was waiting on I/O, not
//! running, and is not counted) and stops it once a request's CPU limit
//! is used up.
//!
//! A guest that has run for [`HOT_AFTER`] ticks of one call is *hot*. Hot
//! guests share [`Shares::cores`] cores (one less than the machine has,
//! so there is always a core for requests that are not hot): each
//! environment with a hot guest gets an equal part, split between its hot
//! guests. A guest whose part is below a whole core sleeps between ticks
//! for as long as its part says (running one tick in `1/part`), instead of
//! going straight back to the executor's queue. Eight spinning guests of
//! one tenant thus take one core between them, and a second tenant's
//! short requests, never hot, find the other core free.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often the epoch advances. A running guest reaches an epoch check at
/// least this often, so this bounds how long it can hold a thread before
/// yielding and how quickly it can be stopped.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks of one call before a guest counts as hot.
pub const HOT_AFTER: u32 = 3;
/// A guest not seen at an epoch check for this long is no longer hot.
const COOL_AFTER: Duration = Duration::from_millis(50);
/// Longest a hot guest sleeps between two ticks.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The machine's cores as hot guests share them.
pub struct Shares {
    cores: f64,
    /// Hot guests by environment, with when each was last seen.
    hot: Mutex<HashMap<Arc<str>, HashMap<u64, Instant>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Shares {
    /// Shares of all cores but one (at least one).
    pub fn for_this_machine() -> Arc<Shares> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Shares::new(cores.saturating_sub(1).max(1))
    }

    /// Shares of `cores` cores.
    pub fn new(cores: usize) -> Arc<Shares> {
        Arc::new(Shares {
            cores: cores as f64,
            hot: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// How long guest `id` of `env`, hot now, should pause before its next
    /// tick: zero while its part is a whole core or more.
    fn pause(&self, env: &Arc<str>, id: u64) -> Duration {
        let now = Instant::now();
        let mut hot = self.hot.lock();
        hot.entry(env.clone()).or_default().insert(id, now);
        hot.retain(|_, guests| {
            guests.retain(|_, seen| now.duration_since(*seen) < COOL_AFTER);
            !guests.is_empty()
        });
        let envs = hot.len().max(1) as f64;
        let mine = hot.get(env).map_or(1, HashMap::len).max(1) as f64;
        let part = self.cores / envs / mine;
        if part >= 1.0 {
            return Duration::ZERO;
        }
        EPOCH_TICK.mul_f64(1.0 / part - 1.0).min(MAX_PAUSE)
    }

    /// Forgets guest `id` (its call ended).
    fn cool(&self, env: &Arc<str>, id: u64) {
        let mut hot = self.hot.lock();
        if let Some(guests) = hot.get_mut(env) {
            guests.remove(&id);
            if guests.is_empty() {
                hot.remove(env);
            }
        }
    }
}

/// One store's CPU accounting.
pub struct CpuUse {
    shares: Arc<Shares>,
    env: Arc<str>,
    id: u64,
    /// The CPU limit of the call now running, if any.
    limit: Option<Duration>,
    /// CPU used by the call now running.
    used: Duration,
    /// Ticks of the call now running.
    ticks: u32,
    /// When the guest last resumed after an epoch check.
    resumed: Arc<Mutex<Instant>>,
    /// The limit it was stopped for, once it was.
    exceeded: Option<Duration>,
}

/// What the epoch callback should do.
pub enum Verdict {
    /// Stop the guest: its CPU limit is used up.
    Stop,
    /// Go on after yielding, pausing this long first.
    Yield(Duration),
}

impl CpuUse {
    /// Accounting for a store of environment `env`.
    pub fn new(shares: Arc<Shares>, env: Arc<str>) -> CpuUse {
        let id = shares
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CpuUse {
            shares,
            env,
            id,
            limit: None,
            used: Duration::ZERO,
            ticks: 0,
            resumed: Arc::new(Mutex::new(Instant::now())),
            exceeded: None,
        }
    }

    /// A new call begins (a request), with at most `limit` of CPU time.
    pub fn begin(&mut self, limit: Option<Duration>) {
        self.limit = limit;
        self.used = Duration::ZERO;
        self.ticks = 0;
        *self.resumed.lock() = Instant::now();
    }

    /// The call ended: the guest is no longer hot.
    pub fn end(&mut self) {
        self.shares.cool(&self.env, self.id);
    }

    /// The limit the guest was stopped for, if it was.
    pub fn exceeded(&self) -> Option<Duration> {
        self.exceeded
    }

    /// At an epoch check: counts the stretch just run and says what next.
    pub fn tick(&mut self) -> Verdict {
        let ran = self.resumed.lock().elapsed();
        if ran <= EPOCH_TICK * 2 {
            self.used += ran;
        }
        self.ticks = self.ticks.saturating_add(1);
        if let Some(limit) = self.limit.filter(|limit| self.used > *limit) {
            self.exceeded = Some(limit);
            return Verdict::Stop;
        }
        if self.ticks < HOT_AFTER {
            return Verdict::Yield(Duration::ZERO);
        }
        Verdict::Yield(self.shares.pause(&self.env, self.id))
    }

    /// The future the guest yields to: a pause, then the time it resumed
    /// is noted.
    pub fn resume_after(
        &self,
        pause: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let resumed = self.resumed.clone();
        Box::pin(async move {
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
            *resumed.lock() = Instant::now();
        })
    }
}

impl Drop for CpuUse {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_guests_share_the_cores_by_environment_first() {
        let shares = Shares::new(1);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        // Alone, a guest has the whole core.
        assert_eq!(shares.pause(&a, 1), Duration::ZERO);
        // Two of one environment: half a core each.
        assert_eq!(shares.pause(&a, 2), EPOCH_TICK);
        // A second environment halves a's part again, but b's one guest
        // gets half the core for itself.
        assert_eq!(shares.pause(&b, 3), EPOCH_TICK);
        assert_eq!(shares.pause(&a, 1), EPOCH_TICK * 3);
        shares.cool(&a, 1);
        shares.cool(&a, 2);
        assert_eq!(shares.pause(&b, 3), Duration::ZERO);
    }

    #[test]
    fn a_call_over_its_cpu_limit_is_stopped() {
        let mut cpu = CpuUse::new(Shares::new(1), "a".into());
        cpu.begin(Some(Duration::from_millis(25)));
        let mut stopped = false;
        for _ in 0..10 {
            std::thread::sleep(EPOCH_TICK);
            if matches!(cpu.tick(), Verdict::Stop) {
                stopped = true;
                break;
            }
            *cpu.resumed.lock() = Instant::now();
        }
        assert!(stopped);
        assert_eq!(cpu.exceeded(), Some(Duration::from_millis(25)));
        // Time spent waiting (longer than two ticks) is not CPU.
        cpu.begin(Some(Duration::from_millis(25)));
        *cpu.resumed.lock() = Instant::now() - Duration::from_secs(5);
        assert!(matches!(cpu.tick(), Verdict::Yield(_)));
    }
}
