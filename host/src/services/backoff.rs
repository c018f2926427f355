//! Restart back-off: how long an instance that ended waits before it
//! starts again.

use std::time::Duration;

/// First back-off after an instance ends.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that ran this long resets its back-off.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The back-off before restart number `failures + 1`: doubling from
/// [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`].
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .checked_mul(1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(9), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
