//! ARM-like throttling: per-subscription token buckets for reads, writes and deletes, plus the Compute
//! per-subscription "Update VM" bucket that extension writes also draw from. Buckets refill in real time
//! (clients measure their budget in real seconds).

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketConfig {
    pub size: f64,
    pub refill_per_sec: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrottleConfig {
    pub reads: BucketConfig,
    pub writes: BucketConfig,
    pub deletes: BucketConfig,
    /// Compute "Update VM" policy per subscription (extension create/update/delete, VM PATCH).
    pub compute_update: BucketConfig,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            reads: BucketConfig {
                size: 250.0,
                refill_per_sec: 25.0,
            },
            writes: BucketConfig {
                size: 200.0,
                refill_per_sec: 10.0,
            },
            deletes: BucketConfig {
                size: 200.0,
                refill_per_sec: 10.0,
            },
            compute_update: BucketConfig {
                size: 1500.0,
                refill_per_sec: 500.0 / 60.0,
            },
        }
    }
}

/// ARM's request classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum OpClass {
    Read,
    Write,
    Delete,
    ComputeUpdate,
}

impl OpClass {
    pub fn header(self) -> &'static str {
        match self {
            OpClass::Read => "x-ms-ratelimit-remaining-subscription-reads",
            OpClass::Write => "x-ms-ratelimit-remaining-subscription-writes",
            OpClass::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
            OpClass::ComputeUpdate => "x-ms-ratelimit-remaining-resource",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Result of drawing one token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Draw {
    /// Allowed; tokens left (rounded down).
    Ok(u64),
    /// Empty: retry after this many real seconds (at least 1).
    Throttled { retry_after_secs: u64 },
}

#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    buckets: HashMap<(String, OpClass), Bucket>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            buckets: HashMap::new(),
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn cfg(&self, class: OpClass) -> BucketConfig {
        match class {
            OpClass::Read => self.config.reads,
            OpClass::Write => self.config.writes,
            OpClass::Delete => self.config.deletes,
            OpClass::ComputeUpdate => self.config.compute_update,
        }
    }

    fn refill(&mut self, scope: &str, class: OpClass, now: Instant) -> &mut Bucket {
        let cfg = self.cfg(class);
        let b = self
            .buckets
            .entry((scope.to_string(), class))
            .or_insert(Bucket {
                tokens: cfg.size,
                last: now,
            });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * cfg.refill_per_sec).min(cfg.size);
        b.last = now;
        b
    }

    /// Tokens left without drawing.
    pub fn remaining(&mut self, scope: &str, class: OpClass) -> u64 {
        self.refill(scope, class, Instant::now()).tokens.max(0.0) as u64
    }

    /// Draw one token from the bucket of `scope` (a subscription) and `class`.
    pub fn draw(&mut self, scope: &str, class: OpClass) -> Draw {
        let cfg = self.cfg(class);
        let b = self.refill(scope, class, Instant::now());
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Draw::Ok(b.tokens as u64)
        } else {
            let missing = 1.0 - b.tokens;
            let secs = if cfg.refill_per_sec > 0.0 {
                (missing / cfg.refill_per_sec).ceil()
            } else {
                3600.0
            };
            Draw::Throttled {
                retry_after_secs: (secs as u64).max(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_then_throttles_per_subscription_and_class() {
        let mut t = Throttle::new(ThrottleConfig {
            writes: BucketConfig {
                size: 2.0,
                refill_per_sec: 0.001,
            },
            ..ThrottleConfig::default()
        });
        assert_eq!(t.draw("s1", OpClass::Write), Draw::Ok(1));
        assert_eq!(t.draw("s1", OpClass::Write), Draw::Ok(0));
        match t.draw("s1", OpClass::Write) {
            Draw::Throttled { retry_after_secs } => assert!(retry_after_secs >= 900),
            other => panic!("expected throttling, got {other:?}"),
        }
        assert_eq!(t.draw("s2", OpClass::Write), Draw::Ok(1));
        assert_eq!(t.draw("s1", OpClass::Read), Draw::Ok(249));
    }
}
