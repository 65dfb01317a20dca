//! A token bucket: the rate limiter of one class of call of one tenant.

use std::time::Duration;

use crate::quota::Rate;

/// Tokens left and when they were last counted (monotonic time).
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: &Rate, now: Duration) -> Self {
        TokenBucket {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub(crate) fn try_take(&mut self, rate: &Rate, now: Duration) -> Result<(), Duration> {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / rate.per_second;
        // At least a millisecond, so that a client never busy-loops on 0.
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let t0 = Duration::from_secs(10);
        let mut b = TokenBucket::new(&rate, t0);
        for _ in 0..3 {
            b.try_take(&rate, t0).unwrap();
        }
        let wait = b.try_take(&rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a token after 250 ms: still 250 ms to wait.
        let wait = b
            .try_take(&rate, t0 + Duration::from_millis(250))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(250));
        b.try_take(&rate, t0 + Duration::from_millis(500)).unwrap();
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            b.try_take(&rate, later).unwrap();
        }
        assert!(b.try_take(&rate, later).is_err());
    }
}
