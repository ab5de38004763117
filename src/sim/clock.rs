//! Simulated time: `start + real elapsed × scale + manual advances`, so minute-long Azure operations run in
//! seconds and tests can step time deterministically.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

/// Milliseconds since the Unix epoch, in simulated time.
pub type SimMillis = i64;

pub const MINUTE_MS: SimMillis = 60_000;

#[derive(Debug)]
pub struct SimClock {
    start: SimMillis,
    real_start: Instant,
    scale: f64,
    manual: Mutex<SimMillis>,
}

impl SimClock {
    /// `scale` = simulated seconds per real second; 0 freezes the clock (only `advance` moves it).
    pub fn new(start: SimMillis, scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            0.0
        };
        Self {
            start,
            real_start: Instant::now(),
            scale,
            manual: Mutex::new(0),
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn now(&self) -> SimMillis {
        let real = self.real_start.elapsed().as_secs_f64() * 1000.0 * self.scale;
        let manual = *self.manual.lock().unwrap_or_else(|e| e.into_inner());
        self.start + real as SimMillis + manual
    }

    /// Move simulated time forward by `d` (simulated).
    pub fn advance(&self, d: Duration) {
        let mut m = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        *m += d.as_millis() as SimMillis;
    }

    /// Real seconds a client must wait for `sim_ms` of simulated time to pass (at least 1): the
    /// `Retry-After` value.
    pub fn retry_after_secs(&self, sim_ms: SimMillis) -> u64 {
        if self.scale <= 0.0 {
            return 1;
        }
        let real = (sim_ms.max(0) as f64 / 1000.0) / self.scale;
        (real.ceil() as u64).max(1)
    }
}

/// ISO-8601 UTC (`2025-06-01T00:00:00Z`, with fractional seconds when not whole).
pub fn iso(ms: SimMillis) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_string(),
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// Parse an ISO-8601 UTC timestamp into simulated milliseconds.
pub fn parse_iso(s: &str) -> Option<SimMillis> {
    s.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

/// Index of the first minute starting at or after `ms` (minute `k` starts at `k × 60 s`).
pub fn ceil_minute(ms: SimMillis) -> i64 {
    ms.div_euclid(MINUTE_MS) + (ms.rem_euclid(MINUTE_MS) != 0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_by_advance_and_retry_after_scales() {
        let c = SimClock::new(1_000, 0.0);
        assert_eq!(c.now(), 1_000);
        c.advance(Duration::from_secs(60));
        assert_eq!(c.now(), 61_000);
        assert_eq!(c.retry_after_secs(120_000), 1);
        let fast = SimClock::new(0, 60.0);
        assert_eq!(fast.retry_after_secs(120_000), 2);
        assert_eq!(fast.retry_after_secs(1), 1);
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_iso("1970-01-01T00:01:00Z"), Some(60_000));
    }
}
