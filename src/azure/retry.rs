//! Retry policy: bounded attempts with jittered exponential backoff, and `Retry-After` parsing.
//! Pure functions; the client supplies the randomness and the clock.

use std::time::Duration;

/// Bounds for every retry loop of the client.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts for transient failures (5xx, network), including the first.
    pub max_attempts: u32,
    /// Waits for `Retry-After` after a 429 before giving up.
    pub max_throttle_waits: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry is started once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    /// Used when a 429 carries no usable `Retry-After`.
    pub default_retry_after: Duration,
    /// Longest `Retry-After` honoured as is (longer values are clamped).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            max_throttle_waits: 40,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(10 * 60),
            default_retry_after: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based) with "equal jitter": half fixed, half random,
    /// so concurrent clients spread out but never retry immediately. `jitter` is in `[0, 1)`.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let raw = self.base_delay.saturating_mul(1u32 << exp.min(20));
        let capped = raw.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The wait a 429 demands: its `Retry-After`, or the default, clamped to the maximum.
    pub fn throttle_wait(&self, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or(self.default_retry_after)
            .min(self.max_retry_after)
    }
}

/// Parses `Retry-After` as delta-seconds. ARM sends integers; fractional seconds are accepted so a
/// time-scaled simulator can ask for sub-second waits. HTTP-dates are not used by ARM: `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(300));
        // capped at max_delay, never below half of it
        assert_eq!(p.backoff(50, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(50, 1.0), Duration::from_secs(1));
        for r in 1..10 {
            assert!(p.backoff(r + 1, 0.0) >= p.backoff(r, 0.0));
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("17"), Some(Duration::from_secs(17)));
        assert_eq!(
            parse_retry_after(" 0.25 "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        let p = RetryPolicy::default();
        assert_eq!(p.throttle_wait(None), p.default_retry_after);
        assert_eq!(
            p.throttle_wait(Some(Duration::from_secs(9999))),
            p.max_retry_after
        );
    }
}
