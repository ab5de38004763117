//! Throughput benchmark (issue 4): the engine migrates a fleet against the simulator whose ARM
//! quotas have ARM's shape (per-subscription token buckets for reads, writes, deletes and
//! Compute's "Update VM" policy) but are scaled down so the quotas, not LRO latency or gates,
//! bind. Everything below is computed from the simulator's request log (method, path, status and
//! simulated time of every request); nothing is asserted.
//!
//! Printed:
//! - **whole run**: machines migrated against the quota bound for the elapsed time — for each
//!   class, all subscriptions' full buckets plus their refill over the run, divided by the
//!   measured requests of that class per migrated machine; the smallest is the bound (target
//!   ≥ 90 %). This includes the fixed tail no quota governs (the last verification rounds, the
//!   workspace flips, the last installs and legacy removals).
//! - **steady state**: the phase from the first request until 90 % of the run's requests of the
//!   binding class had been sent (the last tenth belongs to the tail: the last machines'
//!   associations after their installs, the flip stage). Binding-class requests sent in it
//!   against what the buckets offered (full buckets + refill over the phase): the share of the
//!   quota the engine used while it had that work ahead of it. At the measured requests per
//!   machine that is also machines/h against the quota-bound machines/h.
//! - where the time goes: idle tokens (the bucket full, its refill thrown away) while machines
//!   were still waiting for their first write and after the last one started, the tail after the
//!   quota-bound phase, and a timeline.
//! - reads and writes per migrated machine (targets ≤ 6 and ≤ 4).
//!
//! `cargo bench --bench throughput [-- MACHINES]` (default 600 machines, ~11 min on 2 cores). The
//! tail after the steady state takes about a minute whatever the fleet size (the last installs,
//! two verification rounds 18 s apart, the flips, onboarding the flip stage defers, legacy
//! removals), so the whole-run ratio grows with the fleet: measured 62.5 % at 100 machines,
//! 89.9 % at 500, with the steady state at 99 % in both.

#[path = "../tests/scenario_support/mod.rs"]
mod scenario_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use ama_migrator::sim::{BucketConfig, RequestRecord, Scenario, ThrottleConfig};
use k8s_openapi::jiff::Timestamp;
use scenario_support::{lpath, scenario, start};

/// Simulated seconds per real second. Quotas refill in real time; LRO durations and the engine's
/// verification cadence are simulated time.
const TIME_SCALE: f64 = 10.0;

/// Buckets a tenth of ARM's (writes 200 + 10/s → 20 + 1/s per subscription; Compute's Update VM
/// policy 1500 + 500/min → 15 + 1/s; reads 250 + 25/s → 25 + 2.5/s; deletes like writes).
fn scaled_quota() -> ThrottleConfig {
    let b = |size: f64, refill_per_sec: f64| BucketConfig {
        size,
        refill_per_sec,
    };
    ThrottleConfig {
        reads: b(25.0, 2.5),
        writes: b(20.0, 1.0),
        deletes: b(20.0, 1.0),
        compute_update: b(15.0, 1.0),
    }
}

fn machine_of(path: &str) -> Option<String> {
    let p = path.to_ascii_lowercase();
    for kind in [
        "/providers/microsoft.compute/virtualmachines/",
        "/providers/microsoft.hybridcompute/machines/",
    ] {
        if let Some(i) = p.find(kind) {
            let rest = &p[i + kind.len()..];
            return Some(format!(
                "{}{}",
                &p[..i + kind.len()],
                rest.split('/').next().unwrap_or("")
            ));
        }
    }
    None
}

fn is_query(r: &RequestRecord) -> bool {
    let p = lpath(r);
    p.starts_with("/v1/workspaces/") || p.contains("/microsoft.resourcegraph/")
}

fn subscription_of(r: &RequestRecord) -> String {
    lpath(r)
        .strip_prefix("/subscriptions/")
        .and_then(|s| s.split('/').next())
        .unwrap_or("tenant")
        .to_string()
}

/// The simulator's request classes (src/sim/http: GET reads, DELETE deletes, other methods
/// writes; Compute PUT/PATCH/DELETE also draw from the Update VM bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Reads,
    Writes,
    Deletes,
    ComputeUpdate,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Reads => "reads",
            Self::Writes => "writes",
            Self::Deletes => "deletes",
            Self::ComputeUpdate => "compute update-VM",
        }
    }

    fn bucket(self, q: &ThrottleConfig) -> BucketConfig {
        match self {
            Self::Reads => q.reads,
            Self::Writes => q.writes,
            Self::Deletes => q.deletes,
            Self::ComputeUpdate => q.compute_update,
        }
    }

    fn counts(self, r: &RequestRecord) -> bool {
        match self {
            Self::Reads => r.method == "GET",
            Self::Writes => matches!(r.method.as_str(), "PUT" | "PATCH"),
            Self::Deletes => r.method == "DELETE",
            Self::ComputeUpdate => {
                matches!(r.method.as_str(), "PUT" | "PATCH" | "DELETE")
                    && lpath(r).contains("/providers/microsoft.compute/")
            }
        }
    }
}

/// A request of the log on the real-time axis of the run.
struct Req<'a> {
    at: f64,
    r: &'a RequestRecord,
}

/// Refill one subscription's bucket threw away because it was full, replayed over the requests
/// of its class: (from, to) in run seconds.
fn idle_spans(times: &[f64], b: BucketConfig, end: f64) -> Vec<(f64, f64)> {
    let mut tokens = b.size;
    let mut last = 0.0_f64;
    let mut idle = Vec::new();
    let advance = |tokens: &mut f64, last: &mut f64, to: f64, idle: &mut Vec<(f64, f64)>| {
        let dt = (to - *last).max(0.0);
        let room = (b.size - *tokens).max(0.0);
        let full_after = if b.refill_per_sec > 0.0 {
            room / b.refill_per_sec
        } else {
            f64::INFINITY
        };
        if full_after < dt {
            idle.push((*last + full_after, to));
        }
        *tokens = (*tokens + dt * b.refill_per_sec).min(b.size);
        *last = to;
    };
    for t in times {
        advance(&mut tokens, &mut last, *t, &mut idle);
        tokens -= 1.0;
    }
    advance(&mut tokens, &mut last, end, &mut idle);
    idle
}

/// Seconds of `spans` inside [from, to).
fn overlap(spans: &[(f64, f64)], from: f64, to: f64) -> f64 {
    spans
        .iter()
        .map(|(a, b)| (b.min(to) - a.max(from)).max(0.0))
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run then, so
    // the test suite checks the bench still works without spending its 11 minutes.
    let bench = std::env::args().any(|a| a == "--bench");
    let machines: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 600 } else { 30 });
    if !bench {
        println!(
            "smoke run under cargo test ({machines} machines); `cargo bench --bench throughput` prints the figures"
        );
    }
    let quota = scaled_quota();
    let world = Scenario {
        subscriptions: 2,
        throttle: quota.clone(),
        time_scale: TIME_SCALE,
        ..scenario(machines)
    };
    let subs = world.subscriptions as f64;
    let mut r = start(world, None).await;
    // One wave, no soak, gate or canary: the rollout policy must not be what binds.
    // maxParallel above the fleet: with fewer slots than legacy machines waiting for the flip the
    // planner stalls (reported with this bench).
    let spec = &mut r.s.plan.spec;
    spec.rollout.waves = serde_json::from_value(
        serde_json::json!([{"name": "all", "maxRisk": "High", "gates": {"minSuccessRatio": 0.9}}]),
    )
    .expect("wave parses");
    spec.rollout.max_parallel = (machines as u32).max(50);
    spec.test_workspace = None;

    let t = Instant::now();
    let end = r.s.run(None).await;
    let elapsed = t.elapsed().as_secs_f64();
    let report = r.s.report();
    let log = r.log();
    if let Ok(path) = std::env::var("THROUGHPUT_LOG") {
        let _ = std::fs::write(&path, ama_migrator::engine::simulate::request_lines(&log));
    }

    // Real seconds since the first request, from the simulated time of each request.
    let ms = |r: &RequestRecord| {
        r.sim_time
            .parse::<Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    };
    let t0 = log.iter().filter_map(ms).min().unwrap_or(0);
    let reqs: Vec<Req> = log
        .iter()
        .filter(|x| !is_query(x))
        .filter_map(|x| {
            ms(x).map(|m| Req {
                at: (m - t0) as f64 / 1000.0 / TIME_SCALE,
                r: x,
            })
        })
        .collect();
    let span = log
        .iter()
        .filter_map(ms)
        .max()
        .map_or(elapsed, |m| (m - t0) as f64 / 1000.0 / TIME_SCALE);

    let count = |c: Class| reqs.iter().filter(|x| c.counts(x.r)).count() as f64;
    let reads = count(Class::Reads);
    let writes = count(Class::Writes);
    let deletes = count(Class::Deletes);
    let compute_updates = count(Class::ComputeUpdate);
    let polls = reqs
        .iter()
        .filter(|x| x.r.method == "GET" && lpath(x.r).contains("/operations/"))
        .count() as f64;
    let throttled = log.iter().filter(|x| x.status == 429).count();
    // Migrated: machines the engine wrote to (installs, associations, removals); the first write
    // to each is when it started.
    let mut started: BTreeMap<String, f64> = BTreeMap::new();
    for x in reqs.iter().filter(|x| x.r.method != "GET") {
        if let Some(m) = machine_of(&x.r.path) {
            started.entry(m).or_insert(x.at);
        }
    }
    let n = started.len().max(1) as f64;
    let last_start = started.values().copied().fold(0.0, f64::max);

    // ---- whole run: the binding class at the measured requests per machine
    let classes = [
        Class::Reads,
        Class::Writes,
        Class::Deletes,
        Class::ComputeUpdate,
    ];
    let mut binding = (Class::Writes, f64::INFINITY, f64::INFINITY, 0.0);
    for c in classes {
        let per = count(c) / n;
        if per <= 0.0 {
            continue;
        }
        let b = c.bucket(&quota);
        let in_run = subs * (b.size + b.refill_per_sec * elapsed) / per;
        let per_hour = subs * b.refill_per_sec * 3600.0 / per;
        if in_run < binding.1 {
            binding = (c, in_run, per_hour, per);
        }
    }
    let (class, bound_in_run, bound_per_hour, per_machine) = binding;
    let bucket = class.bucket(&quota);
    let achieved_per_hour = n * 3600.0 / elapsed;

    // ---- steady state: replay the binding bucket of each subscription
    let mut by_sub: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for x in reqs.iter().filter(|x| class.counts(x.r)) {
        by_sub.entry(subscription_of(x.r)).or_default().push(x.at);
    }
    let replays: BTreeMap<String, Vec<(f64, f64)>> = by_sub
        .iter()
        .map(|(s, ts)| (s.clone(), idle_spans(ts, bucket, span)))
        .collect();
    let mut sent: Vec<f64> = by_sub.values().flatten().copied().collect();
    sent.sort_by(f64::total_cmp);
    let phase_end = sent
        .get(((sent.len() as f64 * 0.9).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    let used = sent.iter().filter(|t| **t <= phase_end).count() as f64;
    let offered = subs * (bucket.size + bucket.refill_per_sec * phase_end);
    let steady = if offered > 0.0 { used / offered } else { 0.0 };
    let idle_in = |a: f64, b: f64| {
        replays.values().map(|sp| overlap(sp, a, b)).sum::<f64>() * bucket.refill_per_sec
    };
    let idle_before = idle_in(0.0, last_start);
    let idle_after = idle_in(last_start, span);

    println!("throughput: {machines} machines in scope, {subs} subscriptions, end {end:?}");
    println!(
        "  quotas per subscription: reads {}+{}/s, writes {}+{}/s, deletes {}+{}/s, compute update-VM {}+{}/s (simulated time x{TIME_SCALE})",
        quota.reads.size,
        quota.reads.refill_per_sec,
        quota.writes.size,
        quota.writes.refill_per_sec,
        quota.deletes.size,
        quota.deletes.refill_per_sec,
        quota.compute_update.size,
        quota.compute_update.refill_per_sec
    );
    println!(
        "  migrated (machines written to): {} | completed {} failed {} blocked {} | violations {}",
        started.len(),
        report.completed,
        report.failed,
        report.blocked,
        report.violations
    );
    println!(
        "  binding class: {} at {per_machine:.2} per machine ({:.0} machines/h at steady refill)",
        class.name(),
        bound_per_hour
    );
    println!(
        "  whole run: {elapsed:.1} s, {achieved_per_hour:.0} machines/h | quota bound {bound_in_run:.0} machines in {elapsed:.1} s (buckets + refill) | ratio {:.1} % (target >= 90 %)",
        n / bound_in_run * 100.0
    );
    println!(
        "  steady state (0-{phase_end:.1} s, until 90 % of the {} requests were sent): {used:.0} of {offered:.0} {} tokens used = {:.1} % of the quota bound ({:.0} of {:.0} machines/h)",
        class.name(),
        class.name(),
        steady * 100.0,
        steady * bound_per_hour,
        bound_per_hour
    );
    println!(
        "  after the steady state: {:.1} s of {span:.1} s (the last machines' installs, verification rounds, workspace flips, onboarding deferred to the flip stage, legacy removals)",
        (span - phase_end).max(0.0)
    );
    println!(
        "  idle {} tokens (bucket full, refill lost): {idle_before:.0} while machines were still waiting for their first write (last started at {last_start:.1} s), {idle_after:.0} after",
        class.name()
    );
    println!(
        "  per migrated machine: {:.2} reads (target <= 6; {:.2} of them operation polls), {:.2} writes incl. deletes (target <= 4) [{:.2} PUT/PATCH, {:.2} DELETE, {:.2} compute update-VM]",
        reads / n,
        polls / n,
        (writes + deletes) / n,
        writes / n,
        deletes / n,
        compute_updates / n
    );
    println!(
        "  429 answers: {throttled} | log queries {} | resource graph {}",
        report.arm.log_queries, report.arm.resource_graph
    );

    // ---- timeline: ten slices of the run
    println!(
        "  timeline (s: {} sent | idle {} tokens | machines not started | operation polls | other reads):",
        class.name(),
        class.name()
    );
    let slices = 10;
    let width = (span / slices as f64).max(1e-9);
    let starts: BTreeSet<(u64, String)> = started
        .iter()
        .map(|(m, t)| ((t * 1000.0) as u64, m.clone()))
        .collect();
    for i in 0..slices {
        let (a, b) = (i as f64 * width, (i + 1) as f64 * width);
        let inside = |x: &&Req| x.at >= a && (x.at < b || (i + 1 == slices && x.at <= b));
        let sent = reqs
            .iter()
            .filter(inside)
            .filter(|x| class.counts(x.r))
            .count();
        let idle = idle_in(a, b);
        let waiting = starts
            .iter()
            .filter(|(t, _)| *t as f64 / 1000.0 >= b)
            .count();
        let (p, o) = reqs
            .iter()
            .filter(inside)
            .filter(|x| x.r.method == "GET")
            .fold((0, 0), |(p, o), x| {
                if lpath(x.r).contains("/operations/") {
                    (p + 1, o)
                } else {
                    (p, o + 1)
                }
            });
        println!("    {a:6.1}-{b:6.1}: {sent:4} | {idle:5.1} | {waiting:4} | {p:4} | {o:4}");
    }
    r.s.shutdown().await;
}
