//! The requests of the last minutes, in fixed windows, for the dashboard's
//! charts: how many, how many failed, and how long they took.
//!
//! Each service keeps at most [`WINDOWS`] windows of [`STEP_SECONDS`],
//! made on its first request, so a service that serves nothing costs
//! nothing, and a busy one a few kilobytes.

use std::collections::VecDeque;

/// Length of a window, in seconds.
pub const STEP_SECONDS: u64 = 10;
/// Windows kept: ten minutes.
pub const WINDOWS: usize = 60;

/// Seconds since the epoch now (0 on a clock set before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The latency bucket of a request that took `seconds`: the first of
/// `bounds` it is within, or `bounds.len()` when slower than all.
pub fn bucket_of(seconds: f64, bounds: &[f64]) -> usize {
    bounds
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(bounds.len())
}

/// A service's recent windows, oldest first, counting latency in `B`
/// buckets: one per upper bound the caller keeps, and a last one for what
/// is slower than every bound.
pub struct Recent<const B: usize> {
    windows: VecDeque<Window<B>>,
}

impl<const B: usize> Default for Recent<B> {
    fn default() -> Self {
        Recent {
            windows: VecDeque::new(),
        }
    }
}

struct Window<const B: usize> {
    /// Seconds since the epoch / [`STEP_SECONDS`].
    index: u64,
    requests: u64,
    errors: u64,
    /// Requests per latency bucket (not cumulative), the last for slower
    /// than every bound.
    buckets: [u64; B],
    /// The slowest request, in seconds: what a quantile in the last
    /// bucket reports, since that bucket has no upper bound.
    slowest: f64,
}

/// One window as shown.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    /// When the window started, in seconds since the epoch.
    pub start_secs: u64,
    /// Requests answered.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Median latency in seconds: the upper bound of its bucket (the
    /// window's slowest request when slower than every bound).
    pub p50: Option<f64>,
    /// 95th percentile latency in seconds, likewise.
    pub p95: Option<f64>,
}

impl<const B: usize> Recent<B> {
    /// Counts one request answered at `now_secs` with `status`, which took
    /// `seconds`, in latency bucket `bucket` (the caller's, which already
    /// found it for its own histogram).
    pub fn record(&mut self, now_secs: u64, status: u16, seconds: f64, bucket: usize) {
        let index = now_secs / STEP_SECONDS;
        if self.windows.back().is_none_or(|w| w.index < index) {
            self.windows.push_back(Window {
                index,
                requests: 0,
                errors: 0,
                buckets: [0; B],
                slowest: 0.0,
            });
            while self.windows.len() > WINDOWS {
                self.windows.pop_front();
            }
        }
        // A clock that stepped back counts into the newest window.
        let Some(w) = self.windows.back_mut() else {
            return;
        };
        w.requests += 1;
        if status >= 500 {
            w.errors += 1;
        }
        w.buckets[bucket.min(B - 1)] += 1;
        w.slowest = w.slowest.max(seconds);
    }

    /// The last [`WINDOWS`] windows up to the one holding `now_secs`, oldest
    /// first, empty ones included; `bounds` are the buckets' upper bounds.
    pub fn stats(&self, now_secs: u64, bounds: &[f64]) -> Vec<WindowStats> {
        let last = now_secs / STEP_SECONDS;
        let first = (last + 1).saturating_sub(WINDOWS as u64);
        (first..=last)
            .map(|index| {
                let start_secs = index * STEP_SECONDS;
                match self.windows.iter().find(|w| w.index == index) {
                    Some(w) => WindowStats {
                        start_secs,
                        requests: w.requests,
                        errors: w.errors,
                        p50: w.quantile(0.50, bounds),
                        p95: w.quantile(0.95, bounds),
                    },
                    None => WindowStats {
                        start_secs,
                        requests: 0,
                        errors: 0,
                        p50: None,
                        p95: None,
                    },
                }
            })
            .collect()
    }
}

impl<const B: usize> Window<B> {
    /// The upper bound of the bucket holding quantile `q`, or the slowest
    /// request when that is the last, unbounded bucket; `None` without
    /// requests.
    fn quantile(&self, q: f64, bounds: &[f64]) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bounds.get(i).copied().unwrap_or(self.slowest));
            }
        }
        Some(self.slowest)
    }
}

/// A service's memory and CPU use over the last minutes, in the same
/// windows as its requests, from samples taken every few seconds.
#[derive(Default)]
pub struct Usage {
    windows: VecDeque<UsageWindow>,
    /// The CPU total at the end of the newest window dropped (or 0): what
    /// the oldest kept window's use is counted from.
    cpu_before: u64,
}

struct UsageWindow {
    index: u64,
    memory_peak: u64,
    /// The service's CPU total (nanoseconds) at the window's last sample.
    cpu_at_end: u64,
}

/// One window of a service's use.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageStats {
    /// When the window started, in seconds since the epoch.
    pub start_secs: u64,
    /// The most memory its instances held at a sample in the window.
    pub memory_bytes: u64,
    /// CPU time its instances used in the window, in seconds.
    pub cpu_seconds: f64,
}

impl Usage {
    /// Whether a sample of `memory` and `cpu_total` would tell nothing new:
    /// nothing held, nothing used since the last one.
    pub fn idle(&self, memory: u64, cpu_total: u64) -> bool {
        memory == 0
            && self
                .windows
                .back()
                .map_or(self.cpu_before, |w| w.cpu_at_end)
                == cpu_total
    }

    /// Records a sample taken at `now_secs`: `memory` held now, and the
    /// service's CPU total (nanoseconds) since its counting began.
    pub fn sample(&mut self, now_secs: u64, memory: u64, cpu_total: u64) {
        let index = now_secs / STEP_SECONDS;
        match self.windows.back_mut() {
            Some(w) if w.index >= index => {
                w.memory_peak = w.memory_peak.max(memory);
                w.cpu_at_end = w.cpu_at_end.max(cpu_total);
            }
            _ => {
                self.windows.push_back(UsageWindow {
                    index,
                    memory_peak: memory,
                    cpu_at_end: cpu_total,
                });
                while self.windows.len() > WINDOWS {
                    if let Some(gone) = self.windows.pop_front() {
                        self.cpu_before = gone.cpu_at_end;
                    }
                }
            }
        }
    }

    /// The last [`WINDOWS`] windows up to the one holding `now_secs`,
    /// oldest first; a window without a sample held nothing and used
    /// nothing.
    pub fn stats(&self, now_secs: u64) -> Vec<UsageStats> {
        let last = now_secs / STEP_SECONDS;
        let first = (last + 1).saturating_sub(WINDOWS as u64);
        let mut before = self.cpu_before;
        let mut kept = self.windows.iter().peekable();
        (first..=last)
            .map(|index| {
                while kept.peek().is_some_and(|w| w.index < index) {
                    before = kept.next().map_or(before, |w| w.cpu_at_end);
                }
                let start_secs = index * STEP_SECONDS;
                match kept.peek() {
                    Some(w) if w.index == index => {
                        let used = w.cpu_at_end.saturating_sub(before);
                        UsageStats {
                            start_secs,
                            memory_bytes: w.memory_peak,
                            cpu_seconds: used as f64 / 1e9,
                        }
                    }
                    _ => UsageStats {
                        start_secs,
                        memory_bytes: 0,
                        cpu_seconds: 0.0,
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: [f64; 3] = [0.001, 0.01, 0.1];

    /// Records as the metrics do: the bucket found from [`B`].
    fn record(r: &mut Recent<4>, now_secs: u64, status: u16, seconds: f64) {
        r.record(now_secs, status, seconds, bucket_of(seconds, &B));
    }

    #[test]
    fn windows_count_and_fill_gaps() {
        let mut r = Recent::default();
        let t = 1_000_000;
        for _ in 0..19 {
            record(&mut r, t, 200, 0.0005);
        }
        record(&mut r, t + 1, 503, 0.05);
        record(&mut r, t + 25, 200, 0.5);
        record(&mut r, t + 26, 200, 30.0);
        let stats = r.stats(t + 26, &B);
        assert_eq!(stats.len(), WINDOWS);
        let last = &stats[WINDOWS - 1];
        assert_eq!((last.requests, last.errors), (2, 0));
        assert_eq!(last.p50, Some(30.0), "slower than all: the slowest");
        let first = stats
            .iter()
            .find(|w| w.start_secs == t / STEP_SECONDS * STEP_SECONDS)
            .unwrap();
        assert_eq!((first.requests, first.errors), (20, 1));
        assert_eq!(first.p50, Some(0.001));
        assert_eq!(first.p95, Some(0.001));
        // A window between them is there, empty.
        assert!(stats.iter().any(|w| w.requests == 0 && w.p50.is_none()));
    }

    #[test]
    fn keeps_only_the_last_windows() {
        let mut r = Recent::default();
        for i in 0..(WINDOWS as u64 * 3) {
            record(&mut r, i * STEP_SECONDS, 200, 0.002);
        }
        assert_eq!(r.windows.len(), WINDOWS);
        let now = (WINDOWS as u64 * 3 - 1) * STEP_SECONDS;
        let stats = r.stats(now, &B);
        assert!(stats.iter().all(|w| w.requests == 1));
        assert_eq!(stats[0].p95, Some(0.01));
        // Ten minutes later, nothing is recent.
        let later = r.stats(now + WINDOWS as u64 * STEP_SECONDS, &B);
        assert!(later.iter().all(|w| w.requests == 0));
    }

    #[test]
    fn usage_is_cpu_used_per_window_and_the_memory_peak() {
        let mut u = Usage::default();
        let t = 1_000_000 * STEP_SECONDS;
        u.sample(t, 10, 0);
        u.sample(t + 2, 30, 500_000_000);
        u.sample(t + 4, 20, 1_000_000_000);
        // Nothing sampled for a window, then a second more CPU.
        u.sample(t + 2 * STEP_SECONDS, 5, 2_000_000_000);
        let stats = u.stats(t + 2 * STEP_SECONDS);
        assert_eq!(stats.len(), WINDOWS);
        let [.., a, b, c] = &stats[..] else { panic!() };
        assert_eq!((a.memory_bytes, a.cpu_seconds), (30, 1.0));
        assert_eq!((b.memory_bytes, b.cpu_seconds), (0, 0.0));
        assert_eq!((c.memory_bytes, c.cpu_seconds), (5, 1.0));
        assert!(!u.idle(1, 2_000_000_000));
        assert!(!u.idle(0, 3_000_000_000));
        assert!(u.idle(0, 2_000_000_000));
    }

    #[test]
    fn usage_keeps_only_the_last_windows_and_counts_from_the_dropped() {
        let mut u = Usage::default();
        for i in 0..(WINDOWS as u64 * 2) {
            u.sample(i * STEP_SECONDS, 1, i * 1_000_000_000);
        }
        assert_eq!(u.windows.len(), WINDOWS);
        let stats = u.stats((WINDOWS as u64 * 2 - 1) * STEP_SECONDS);
        assert!(stats.iter().all(|w| w.cpu_seconds == 1.0), "{stats:?}");
    }
}
