//! Time, injected: token lifetimes and audit stamps read the wall clock,
//! rate limits and file checks a monotonic one, and tests drive both.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// A source of time.
pub trait Clock: Send + Sync {
    /// Wall-clock time (JWT `exp`/`nbf`/`iat`, audit lines).
    fn now(&self) -> SystemTime;
    /// Time elapsed since an arbitrary fixed origin, never going back
    /// (token buckets, reload checks).
    fn monotonic(&self) -> Duration;
}

/// The real clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to: for tests (this crate's and the
/// services'), so that a token expires or a bucket refills on cue.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(SystemTime, Duration)>,
}

impl ManualClock {
    /// A clock reading `wall`, with its monotonic time at zero.
    pub fn new(wall: SystemTime) -> Self {
        ManualClock {
            state: Mutex::new((wall, Duration::ZERO)),
        }
    }

    /// A clock reading `unix_secs` seconds after the UNIX epoch.
    pub fn at_unix(unix_secs: u64) -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs))
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += by;
        state.1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn monotonic(&self) -> Duration {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

/// Seconds since the UNIX epoch (0 for times before it).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_on_cue() {
        let c = ManualClock::at_unix(1_000);
        assert_eq!(unix_secs(c.now()), 1_000);
        assert_eq!(c.monotonic(), Duration::ZERO);
        c.advance(Duration::from_millis(1500));
        assert_eq!(unix_secs(c.now()), 1_001);
        assert_eq!(c.monotonic(), Duration::from_millis(1500));
        let s = SystemClock::default();
        assert!(unix_secs(s.now()) > 1_700_000_000);
        let a = s.monotonic();
        assert!(s.monotonic() >= a);
    }
}
