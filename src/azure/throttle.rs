//! Client-side request budget shaped like ARM's token buckets (per subscription, region and
//! operation class) plus Compute's per-subscription "Update VM" bucket. Requests wait for a
//! token instead of provoking 429s; server headers and 429s only ever lower what we may send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Size and refill rate of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketShape {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

impl BucketShape {
    pub const fn new(capacity: f64, refill_per_sec: f64) -> Self {
        Self {
            capacity,
            refill_per_sec,
        }
    }
}

/// Bucket shapes; defaults are ARM's documented subscription limits.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetConfig {
    pub reads: BucketShape,
    pub writes: BucketShape,
    pub deletes: BucketShape,
    /// Compute "Update VM" aggregate: 1,500 per subscription, 500/min.
    pub compute_update_vm: BucketShape,
    /// Resource Graph per-user quota: 15 queries per 5 s.
    pub resource_graph: BucketShape,
    /// Log Analytics query API: 200 queries per 30 s.
    pub log_query: BucketShape,
    /// Share of a bucket's refill rate the client uses once the service has throttled that bucket
    /// (0..=1); until then it uses the full rate. Equal shapes on both sides cannot produce a 429
    /// by themselves (a request reaches the service after the client took its token, so the
    /// service's bucket has refilled at least as long), so a 429 means the quota is shared with
    /// someone else or the process restarted on a drained bucket; from then on the service's
    /// bucket slowly gains spare tokens that absorb it. A headroom from the start would leave
    /// that share of the quota unused for the whole run.
    pub refill_headroom: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            reads: BucketShape::new(250.0, 25.0),
            writes: BucketShape::new(200.0, 10.0),
            deletes: BucketShape::new(200.0, 10.0),
            compute_update_vm: BucketShape::new(1500.0, 500.0 / 60.0),
            resource_graph: BucketShape::new(15.0, 3.0),
            log_query: BucketShape::new(200.0, 200.0 / 30.0),
            refill_headroom: 0.95,
        }
    }
}

/// What a bucket counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BucketClass {
    Read,
    Write,
    Delete,
    ComputeUpdateVm,
    ResourceGraph,
    LogQuery,
}

impl BucketClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::ComputeUpdateVm => "compute-update-vm",
            Self::ResourceGraph => "resource-graph",
            Self::LogQuery => "log-query",
        }
    }
}

/// One bucket: `scope` is a subscription id (or "tenant" / a workspace), `region` the ARM region
/// or "global".
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    pub scope: String,
    pub region: String,
    pub class: BucketClass,
}

impl BucketKey {
    pub fn new(scope: &str, region: &str, class: BucketClass) -> Self {
        Self {
            scope: scope.to_ascii_lowercase(),
            region: region.to_ascii_lowercase(),
            class,
        }
    }
}

/// A token bucket on an explicit clock (pure; tests pass their own instants).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    shape: BucketShape,
    tokens: f64,
    updated: Instant,
    blocked_until: Option<Instant>,
    /// Share of the refill rate used (1 until the service throttled this bucket).
    headroom: f64,
}

impl TokenBucket {
    pub fn new(shape: BucketShape, now: Instant) -> Self {
        Self {
            shape,
            tokens: shape.capacity,
            updated: now,
            blocked_until: None,
            headroom: 1.0,
        }
    }

    fn rate(&self) -> f64 {
        self.shape.refill_per_sec * self.headroom
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.updated {
            return;
        }
        let dt = now.duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate()).min(self.shape.capacity);
        self.updated = now;
    }

    /// Use only `share` of the refill rate from now on (after the service throttled us).
    pub fn slow_down(&mut self, share: f64, now: Instant) {
        self.refill(now);
        self.headroom = self.headroom.min(share.clamp(0.01, 1.0));
    }

    /// How long until a token is available (zero: take one now).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        if let Some(until) = self.blocked_until {
            if now < until {
                return until - now;
            }
            self.blocked_until = None;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else if self.rate() <= 0.0 {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate())
        }
    }

    /// Consumes a token; call only after `wait_time` returned zero.
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    /// The server says only `remaining` requests are left: never hold more than that.
    pub fn observe_remaining(&mut self, remaining: f64, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(remaining.max(0.0));
    }

    /// A 429: nobody sends on this bucket before `until`; then exactly one request may probe and
    /// the rest follow at the refill rate.
    pub fn block_until(&mut self, until: Instant) {
        let until = self.blocked_until.map_or(until, |b| b.max(until));
        self.blocked_until = Some(until);
        self.tokens = 1.0_f64.min(self.shape.capacity);
        self.updated = until;
    }

    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// The shared budget of one client (all tasks using the client share it).
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    buckets: Mutex<HashMap<BucketKey, TokenBucket>>,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn shape(&self, class: BucketClass) -> BucketShape {
        match class {
            BucketClass::Read => self.config.reads,
            BucketClass::Write => self.config.writes,
            BucketClass::Delete => self.config.deletes,
            BucketClass::ComputeUpdateVm => self.config.compute_update_vm,
            BucketClass::ResourceGraph => self.config.resource_graph,
            BucketClass::LogQuery => self.config.log_query,
        }
    }

    fn with_buckets<R>(&self, f: impl FnOnce(&mut HashMap<BucketKey, TokenBucket>) -> R) -> R {
        // A poisoned lock only means another task panicked mid-update; the counts stay usable.
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Takes one token from every bucket in `keys` atomically, or says how long to wait.
    pub fn try_acquire(&self, keys: &[BucketKey], now: Instant) -> Duration {
        self.with_buckets(|buckets| {
            let mut wait = Duration::ZERO;
            for k in keys {
                let shape = self.shape(k.class);
                let b = buckets
                    .entry(k.clone())
                    .or_insert_with(|| TokenBucket::new(shape, now));
                wait = wait.max(b.wait_time(now));
            }
            if wait.is_zero() {
                for k in keys {
                    if let Some(b) = buckets.get_mut(k) {
                        b.take(now);
                    }
                }
            }
            wait
        })
    }

    /// Waits (asynchronously) until every bucket in `keys` has a token and takes them. Never
    /// fails: buckets always refill and blocks always end. Returns the time spent waiting.
    pub async fn acquire(&self, keys: &[BucketKey]) -> Duration {
        // tokio's clock, so tests with paused time advance it instead of spinning.
        let now = || tokio::time::Instant::now().into_std();
        let start = now();
        loop {
            let wait = self.try_acquire(keys, now());
            if wait.is_zero() {
                return now() - start;
            }
            tokio::time::sleep(wait).await;
        }
    }

    pub fn observe_remaining(&self, key: &BucketKey, remaining: f64, now: Instant) {
        let shape = self.shape(key.class);
        self.with_buckets(|b| {
            b.entry(key.clone())
                .or_insert_with(|| TokenBucket::new(shape, now))
                .observe_remaining(remaining, now)
        })
    }

    /// A 429 on `key`: hold it until `until`, and from then on refill it at the configured
    /// headroom ([`BudgetConfig::refill_headroom`]).
    pub fn block(&self, key: &BucketKey, until: Instant, now: Instant) {
        let shape = self.shape(key.class);
        let share = self.config.refill_headroom;
        self.with_buckets(|b| {
            let bucket = b
                .entry(key.clone())
                .or_insert_with(|| TokenBucket::new(shape, now));
            bucket.slow_down(share, now);
            bucket.block_until(until);
        })
    }

    /// Tokens currently in a bucket (full capacity for a bucket never used).
    pub fn tokens(&self, key: &BucketKey, now: Instant) -> f64 {
        let shape = self.shape(key.class);
        self.with_buckets(|b| b.get_mut(key).map_or(shape.capacity, |b| b.tokens(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_drains_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(BucketShape::new(3.0, 10.0), t0);
        for _ in 0..3 {
            assert_eq!(b.wait_time(t0), Duration::ZERO);
            b.take(t0);
        }
        assert_eq!(b.wait_time(t0), ms(100));
        assert_eq!(b.wait_time(t0 + ms(100)), Duration::ZERO);
        // refill is capped at capacity
        assert!((b.tokens(t0 + Duration::from_secs(60)) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn server_remaining_lowers_local_tokens_only() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(BucketShape::new(200.0, 10.0), t0);
        b.observe_remaining(5.0, t0);
        assert!((b.tokens(t0) - 5.0).abs() < 1e-9);
        b.observe_remaining(150.0, t0);
        assert!(
            (b.tokens(t0) - 5.0).abs() < 1e-9,
            "never raised by the server"
        );
        b.observe_remaining(0.0, t0);
        assert_eq!(b.wait_time(t0), ms(100));
    }

    #[test]
    fn block_holds_everyone_until_retry_after_then_one_probe() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(BucketShape::new(200.0, 10.0), t0);
        b.block_until(t0 + Duration::from_secs(2));
        assert_eq!(b.wait_time(t0), Duration::from_secs(2));
        assert_eq!(b.wait_time(t0 + ms(1999)), ms(1));
        let t = t0 + Duration::from_secs(2);
        assert_eq!(b.wait_time(t), Duration::ZERO);
        b.take(t);
        assert_eq!(b.wait_time(t), ms(100), "after the probe, refill pace");
        // a shorter block never shortens a longer one
        b.block_until(t + Duration::from_secs(5));
        b.block_until(t + Duration::from_secs(1));
        assert_eq!(b.wait_time(t), Duration::from_secs(5));
    }

    #[test]
    fn budget_takes_all_keys_or_none() {
        let cfg = BudgetConfig {
            writes: BucketShape::new(5.0, 1.0),
            compute_update_vm: BucketShape::new(2.0, 1.0),
            refill_headroom: 1.0,
            ..Default::default()
        };
        let budget = Budget::new(cfg);
        let t0 = Instant::now();
        let write = BucketKey::new("SUB", "global", BucketClass::Write);
        let vm = BucketKey::new("sub", "global", BucketClass::ComputeUpdateVm);
        let keys = [write.clone(), vm.clone()];
        assert_eq!(budget.try_acquire(&keys, t0), Duration::ZERO);
        assert_eq!(budget.try_acquire(&keys, t0), Duration::ZERO);
        // update-VM bucket empty: nothing is taken from the write bucket
        assert_eq!(budget.try_acquire(&keys, t0), Duration::from_secs(1));
        assert!((budget.tokens(&write, t0) - 3.0).abs() < 1e-9);
        // another subscription has its own buckets
        let other = [BucketKey::new("other", "global", BucketClass::Write)];
        assert_eq!(budget.try_acquire(&other, t0), Duration::ZERO);
    }

    #[test]
    fn steady_rate_never_exceeds_shape() {
        // Simulated 10 s of greedy acquisition against a 4-token, 2/s bucket: at most 4 + 2*10.
        let budget = Budget::new(BudgetConfig {
            writes: BucketShape::new(4.0, 2.0),
            refill_headroom: 1.0,
            ..Default::default()
        });
        let key = [BucketKey::new("s", "global", BucketClass::Write)];
        let t0 = Instant::now();
        let mut now = t0;
        let mut taken = 0;
        for _ in 0..10_000 {
            let w = budget.try_acquire(&key, now);
            if w.is_zero() {
                taken += 1;
            } else {
                now += w;
            }
            if now > t0 + Duration::from_secs(10) {
                break;
            }
        }
        assert!((23..=24).contains(&taken), "taken {taken}");
    }

    #[test]
    fn headroom_slows_refill_only_after_a_429() {
        let budget = Budget::new(BudgetConfig {
            writes: BucketShape::new(1.0, 10.0),
            refill_headroom: 0.5,
            ..Default::default()
        });
        let key = [BucketKey::new("s", "global", BucketClass::Write)];
        let other = [BucketKey::new("s2", "global", BucketClass::Write)];
        let t0 = Instant::now();
        assert_eq!(budget.try_acquire(&key, t0), Duration::ZERO, "full burst");
        assert_eq!(
            budget.try_acquire(&key, t0),
            ms(100),
            "the full rate (10/s) while the service never throttled"
        );
        // A 429 holds the bucket until Retry-After, then one probe, then half the rate.
        budget.block(&key[0], t0 + ms(1000), t0);
        assert_eq!(budget.try_acquire(&key, t0 + ms(1000)), Duration::ZERO);
        assert_eq!(
            budget.try_acquire(&key, t0 + ms(1000)),
            ms(200),
            "refill at 5/s, not 10/s"
        );
        // Other buckets keep the full rate.
        assert_eq!(budget.try_acquire(&other, t0), Duration::ZERO);
        assert_eq!(budget.try_acquire(&other, t0), ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_instead_of_failing() {
        let budget = Budget::new(BudgetConfig {
            deletes: BucketShape::new(1.0, 2.0),
            ..Default::default()
        });
        let key = [BucketKey::new("s", "global", BucketClass::Delete)];
        assert_eq!(budget.acquire(&key).await, Duration::ZERO);
        let waited = budget.acquire(&key).await;
        assert!(waited >= ms(400), "waited {waited:?}");
    }
}
