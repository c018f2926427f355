//! CPU time: what a request may burn, and fair shares between tenants.
//!
//! The engine's ticker advances the epoch every [`EPOCH_TICK`] and counts
//! the ticks in [`Shares`]. A store's [`CpuUse`] charges one tick of CPU
//! each time its guest runs wasm across a tick boundary: its epoch
//! callback fires there, and a call hook restarts the stretch whenever a
//! host call that waited (an I/O wait, a sleep: one that took a
//! millisecond or more by the coarse clock) spanned a boundary, so waiting
//! is never charged. A short host call that happens to straddle a
//! boundary (a clock read in a spinning loop) is not a wait: a guest that
//! spins on host calls is charged as one that spins in wasm. That is a count of boundaries, not a clock read per
//! call: cheap, and exact to a tick over any limit worth setting. A call
//! that uses up its CPU limit is stopped.
//!
//! A guest charged [`HOT_AFTER`] ticks in one call is *hot*. Hot guests
//! share all cores but one (so there is always a core for requests that
//! are not hot): each environment with a hot guest gets an equal part,
//! split between its hot guests. A guest whose part is below a whole core
//! sleeps between ticks for as long as its part says (running one tick in
//! `1/part`) instead of going straight back to the executor's queue. Eight
//! spinning guests of one tenant thus take one core between them, and a
//! second tenant's short requests, never hot, find the other core free.
//!
//! While short requests are running (a guest that is not hot was charged a
//! tick lately: under load most tick boundaries find one running), hot
//! guests share only [`HOT_CORES_WHEN_BUSY`] of a core: a long computation
//! gets what short requests leave, so another tenant's requests keep their
//! latency (in scripts/soak.sh, p50 and p99 within 1.25 and 2 times what
//! they are alone) however many guests spin. It never gets nothing: it goes on, slowly.
//!
//! Hot guests also run their ticks through a gate of as many places as
//! they have cores (one on a two-core machine), taken when a tick begins
//! and given back when it ends, and their pauses are jittered: so they
//! never run in a burst on every executor thread at once, and a short
//! request queued behind one waits one tick at most.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::CallHook;

/// How often the epoch advances. A running guest reaches an epoch check at
/// least this often, so this bounds how long it can hold a thread before
/// yielding, how quickly it can be stopped, and how finely CPU is counted.
/// Short, so a hot guest's turn on an executor thread (one tick) delays a
/// request queued behind it by little.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Ticks of CPU one call uses before its guest counts as hot.
pub const HOT_AFTER: u32 = 5;
/// Longest a hot guest sleeps between two ticks.
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// What all hot guests together may use while short requests run.
pub const HOT_CORES_WHEN_BUSY: f64 = 0.1;
/// Ticks since a short request was last seen running before the hot
/// guests get their whole share back.
const BUSY_FOR: u64 = 3;

/// The ticks so far, and the machine's cores as hot guests share them.
pub struct Shares {
    cores: f64,
    /// Epoch ticks since the engine started.
    ticks: AtomicU64,
    hot: Mutex<Hot>,
    next_id: AtomicU64,
    /// The tick at which a guest that is not hot was last charged.
    cool_seen: AtomicU64,
    /// Places for hot guests' ticks: one a core they share.
    gate: Arc<tokio::sync::Semaphore>,
}

/// Hot guests by environment, each with the time it counts as hot until
/// (its next tick is due by then, pause included).
#[derive(Default)]
struct Hot {
    guests: HashMap<Arc<str>, HashMap<u64, Instant>>,
    swept: Option<Instant>,
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
            ticks: AtomicU64::new(0),
            hot: Mutex::new(Hot::default()),
            next_id: AtomicU64::new(1),
            cool_seen: AtomicU64::new(0),
            gate: Arc::new(tokio::sync::Semaphore::new(cores.max(1))),
        })
    }

    /// Counts one epoch tick (the engine's ticker calls it).
    pub fn tick(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// How long guest `id` of `env`, hot now, should pause before its next
    /// tick: zero while its part is a whole core or more.
    fn pause(&self, env: &Arc<str>, id: u64) -> Duration {
        let now = Instant::now();
        let mut hot = self.hot.lock();
        // Guests whose call ended leave at once (`cool`); one that stopped
        // running (blocked, or dropped without a word) leaves once its
        // deadline passed. Swept once a tick at most, not per guest.
        if hot
            .swept
            .is_none_or(|at| now.duration_since(at) >= EPOCH_TICK)
        {
            hot.swept = Some(now);
            hot.guests.retain(|_, guests| {
                guests.retain(|_, until| *until > now);
                !guests.is_empty()
            });
        }
        let guests = hot.guests.entry(env.clone()).or_default();
        guests.insert(id, now + EPOCH_TICK * 2);
        let mine = guests.len() as f64;
        let busy = self
            .now()
            .saturating_sub(self.cool_seen.load(Ordering::Relaxed))
            <= BUSY_FOR
            && self.cool_seen.load(Ordering::Relaxed) > 0;
        let cores = if busy {
            HOT_CORES_WHEN_BUSY.min(self.cores)
        } else {
            self.cores
        };
        let part = cores / hot.guests.len() as f64 / mine;
        let pause = if part >= 1.0 {
            Duration::ZERO
        } else {
            EPOCH_TICK.mul_f64(1.0 / part - 1.0).min(MAX_PAUSE)
        };
        // Asleep for its pause, it is still one of the hot.
        if let Some(until) = hot.guests.get_mut(env).and_then(|g| g.get_mut(&id)) {
            *until += pause;
        }
        pause
    }

    /// Forgets guest `id` (its call ended).
    fn cool(&self, env: &Arc<str>, id: u64) {
        let mut hot = self.hot.lock();
        if let Some(guests) = hot.guests.get_mut(env) {
            guests.remove(&id);
            if guests.is_empty() {
                hot.guests.remove(env);
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
    /// Ticks charged to the call now running.
    charged: u32,
    /// The tick the guest's current stretch of wasm began at; shared with
    /// the future it yields to, which restarts it on resuming.
    stretch: Arc<AtomicU64>,
    /// The tick its current host call began at, and the coarse clock then.
    host_since: u64,
    host_since_clock: Duration,
    /// Whether it is hot (in `shares`).
    hot: bool,
    /// Its place in the gate while a hot tick runs (taken by the future
    /// it resumes from, given back at the tick's end).
    held: Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
    /// The limit it was stopped for, once it was.
    exceeded: Option<Duration>,
    /// Where the ticks it is charged are added up for its service, in
    /// nanoseconds.
    total: Option<Arc<AtomicU64>>,
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
    pub fn new(shares: Arc<Shares>, env: Arc<str>, total: Option<Arc<AtomicU64>>) -> CpuUse {
        let id = shares.next_id.fetch_add(1, Ordering::Relaxed);
        let stretch = Arc::new(AtomicU64::new(shares.now()));
        CpuUse {
            shares,
            env,
            id,
            limit: None,
            charged: 0,
            stretch,
            host_since: 0,
            host_since_clock: Duration::ZERO,
            hot: false,
            held: Arc::new(Mutex::new(None)),
            exceeded: None,
            total,
        }
    }

    /// A new call begins (a request), with at most `limit` of CPU time.
    pub fn begin(&mut self, limit: Option<Duration>) {
        self.limit = limit;
        self.charged = 0;
        self.exceeded = None;
        self.stretch.store(self.shares.now(), Ordering::Relaxed);
    }

    /// The call ended: the guest is no longer hot.
    pub fn end(&mut self) {
        self.held.lock().take();
        if std::mem::take(&mut self.hot) {
            self.shares.cool(&self.env, self.id);
        }
    }

    /// The limit the guest was stopped for, if it was.
    pub fn exceeded(&self) -> Option<Duration> {
        self.exceeded
    }

    /// CPU charged to the call now running.
    pub fn used(&self) -> Duration {
        EPOCH_TICK * self.charged
    }

    /// At a switch between wasm and the host: a host call that spanned a
    /// tick boundary (a wait) starts a new stretch of wasm when it returns.
    pub fn switched(&mut self, hook: CallHook) {
        match hook {
            CallHook::CallingHost => {
                // A hot guest's place is for running wasm, not for waiting.
                self.held.lock().take();
                self.host_since = self.shares.now();
                self.host_since_clock = coarse_now();
            }
            CallHook::ReturningFromHost => {
                let now = self.shares.now();
                if now != self.host_since
                    && coarse_now().saturating_sub(self.host_since_clock) >= WAITED
                {
                    self.stretch.store(now, Ordering::Relaxed);
                }
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
    }

    /// At an epoch check: charges a tick if the guest ran wasm across the
    /// boundary, and says what next.
    pub fn tick(&mut self) -> Verdict {
        // A hot tick ends here: its place goes to the next.
        self.held.lock().take();
        let now = self.shares.now();
        if self.stretch.load(Ordering::Relaxed) < now {
            self.charged = self.charged.saturating_add(1);
            if let Some(total) = &self.total {
                total.fetch_add(EPOCH_TICK.as_nanos() as u64, Ordering::Relaxed);
            }
        }
        if let Some(limit) = self.limit.filter(|limit| self.used() > *limit) {
            self.exceeded = Some(limit);
            return Verdict::Stop;
        }
        if self.charged < HOT_AFTER {
            // A short request is running: hot guests make room.
            self.shares.cool_seen.store(now, Ordering::Relaxed);
            return Verdict::Yield(Duration::ZERO);
        }
        self.hot = true;
        Verdict::Yield(self.shares.pause(&self.env, self.id))
    }

    /// The future the guest yields to: a pause, then a new stretch.
    pub fn resume_after(
        &self,
        pause: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let stretch = self.stretch.clone();
        let shares = self.shares.clone();
        let (hot, held) = (self.hot, self.held.clone());
        Box::pin(async move {
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(jittered(pause)).await;
            }
            if hot {
                if let Ok(place) = shares.gate.clone().acquire_owned().await {
                    *held.lock() = Some(place);
                }
            }
            stretch.store(shares.now(), Ordering::Relaxed);
        })
    }
}

/// A host call this long or longer (by the coarse clock) waited.
const WAITED: Duration = Duration::from_millis(1);

/// The coarse monotonic clock: a few nanoseconds to read (no system call),
/// exact to the kernel's tick (1-4 ms), enough to tell a wait from a
/// quick call.
fn coarse_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(Duration::from)
        .unwrap_or_default()
}

/// `pause` give or take a half, so guests that paused alike do not wake
/// together.
fn jittered(pause: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    pause.mul_f64(0.5 + f64::from(byte[0]) / 255.0)
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
    fn hot_guests_make_room_while_short_requests_run() {
        let shares = Shares::new(1);
        let a: Arc<str> = "a".into();
        assert_eq!(shares.pause(&a, 1), Duration::ZERO);
        // Another environment's short request runs across a boundary.
        let mut short = CpuUse::new(shares.clone(), "b".into(), None);
        short.begin(None);
        shares.tick();
        assert!(matches!(short.tick(), Verdict::Yield(d) if d.is_zero()));
        // The hot guest now has a tenth of the core: one tick in ten.
        let pause = shares.pause(&a, 1);
        assert!(
            pause >= EPOCH_TICK * 8 && pause <= EPOCH_TICK * 10,
            "{pause:?}"
        );
        // Once no short request was seen for a while, the core is its own.
        for _ in 0..=BUSY_FOR {
            shares.tick();
        }
        assert_eq!(shares.pause(&a, 1), Duration::ZERO);
    }

    #[test]
    fn a_sleeping_hot_guest_still_counts() {
        // Eight guests of one environment on one core: each runs one tick
        // in eight, and a guest asleep for its pause is still one of them.
        let shares = Shares::new(1);
        let a: Arc<str> = "a".into();
        let mut pauses = Vec::new();
        for round in 0..3 {
            for id in 0..8 {
                pauses.push(shares.pause(&a, id));
            }
            if round == 0 {
                std::thread::sleep(EPOCH_TICK * 3);
            }
        }
        assert_eq!(pauses.last(), Some(&(EPOCH_TICK * 7)));
    }

    #[test]
    fn only_ticks_run_in_wasm_are_charged() {
        let shares = Shares::new(1);
        let mut cpu = CpuUse::new(shares.clone(), "a".into(), None);
        cpu.begin(Some(EPOCH_TICK * 2));
        // Spinning: each boundary crossed in wasm is a tick.
        shares.tick();
        assert!(matches!(cpu.tick(), Verdict::Yield(_)));
        shares.tick();
        assert!(matches!(cpu.tick(), Verdict::Yield(_)));
        assert_eq!(cpu.used(), EPOCH_TICK * 2);
        // A host call that spans boundaries (a wait) is not charged, and
        // the check that fires as wasm resumes charges nothing either.
        cpu.switched(CallHook::CallingHost);
        for _ in 0..50 {
            shares.tick();
        }
        // It began long before by the coarse clock: a wait.
        cpu.host_since_clock = Duration::ZERO;
        cpu.switched(CallHook::ReturningFromHost);
        assert!(matches!(cpu.tick(), Verdict::Yield(_)));
        assert_eq!(cpu.used(), EPOCH_TICK * 2);
        // A quick host call that straddles a boundary (a clock read in a
        // spinning loop) is no wait: the tick is charged, and the call is
        // over its limit.
        cpu.switched(CallHook::CallingHost);
        shares.tick();
        // No time passed by the coarse clock, however busy the machine.
        cpu.host_since_clock = coarse_now() + Duration::from_secs(3600);
        cpu.switched(CallHook::ReturningFromHost);
        assert!(matches!(cpu.tick(), Verdict::Stop));
        assert_eq!(cpu.exceeded(), Some(EPOCH_TICK * 2));
        cpu.begin(None);
        assert_eq!(cpu.exceeded(), None);
        assert_eq!(cpu.used(), Duration::ZERO);
    }
}
