//! Reporting a recurring failure once per interval, with how many times
//! it happened since, instead of once per occurrence: a full disk or an
//! exhausted file table must not turn into a log flood.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often one kind of failure is reported at most.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Counts occurrences and says when to report them.
pub struct Throttle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle reporting at most once per [`REPORT_INTERVAL`].
    pub const fn new() -> Throttle {
        Throttle::every(REPORT_INTERVAL)
    }

    /// A throttle reporting at most once per `interval`.
    pub const fn every(interval: Duration) -> Throttle {
        Throttle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; `Some(n)` when it should be reported now,
    /// `n` being the occurrences since the last report (this one included).
    pub fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock();
        state.1 += 1;
        let due = state.0.is_none_or(|last| last.elapsed() >= self.interval);
        if !due {
            return None;
        }
        state.0 = Some(Instant::now());
        Some(std::mem::take(&mut state.1))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_reported_once_per_interval_with_its_count() {
        let throttle = Throttle::every(Duration::from_millis(50));
        assert_eq!(throttle.hit(), Some(1));
        let reported: Vec<u64> = (0..1000).filter_map(|_| throttle.hit()).collect();
        assert!(reported.is_empty(), "{reported:?}");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(throttle.hit(), Some(1001));
    }
}
