//! Throughput benchmark (issue 4): the engine migrates a fleet against the simulator whose ARM
//! quotas have ARM's shape (per-subscription token buckets for reads, writes, deletes and
//! Compute's "Update VM" policy) but are scaled down so the quotas, not LRO latency or gates,
//! bind. Prints machines migrated, elapsed time, achieved machines/hour against the quota-bound
//! machines/hour (from the bucket sizes and refill rates and the measured requests per machine),
//! their ratio (target ≥ 90 %), and reads and writes per migrated machine from the simulator's
//! request log (targets ≤ 6 reads and ≤ 4 writes). Nothing is asserted.
//!
//! `cargo bench --bench throughput [-- MACHINES]` (default 100 machines, ~1-2 min).

#[path = "../tests/scenario_support/mod.rs"]
mod scenario_support;

use std::collections::BTreeSet;
use std::time::Instant;

use ama_migrator::sim::{BucketConfig, RequestRecord, Scenario, ThrottleConfig};
use scenario_support::{lpath, scenario, start};

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let machines: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let quota = scaled_quota();
    let world = Scenario {
        subscriptions: 2,
        throttle: quota.clone(),
        // Quotas are a tenth of ARM's, so simulated time runs at 10x: the run's simulated
        // duration (soak-free wave, overlap before the flip) is what it would be against ARM.
        time_scale: 10.0,
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

    let arm: Vec<&RequestRecord> = log.iter().filter(|x| !is_query(x)).collect();
    let reads = arm.iter().filter(|x| x.method == "GET").count() as f64;
    let writes = arm
        .iter()
        .filter(|x| matches!(x.method.as_str(), "PUT" | "PATCH"))
        .count() as f64;
    let deletes = arm.iter().filter(|x| x.method == "DELETE").count() as f64;
    let compute_updates = arm
        .iter()
        .filter(|x| {
            matches!(x.method.as_str(), "PUT" | "PATCH" | "DELETE")
                && lpath(x).contains("/providers/microsoft.compute/")
        })
        .count() as f64;
    let throttled = log.iter().filter(|x| x.status == 429).count();
    // Migrated: machines the engine wrote to (installs, associations, removals).
    let migrated: BTreeSet<String> = arm
        .iter()
        .filter(|x| x.method != "GET")
        .filter_map(|x| machine_of(&x.path))
        .collect();
    let n = migrated.len().max(1) as f64;

    // The quota bound: for each class, the machines its buckets admit in the elapsed time
    // (all subscriptions' full buckets plus their refill), at the measured requests per machine.
    let classes = [
        ("reads", quota.reads, reads / n),
        ("writes", quota.writes, writes / n),
        ("deletes", quota.deletes, deletes / n),
        (
            "compute update-VM",
            quota.compute_update,
            compute_updates / n,
        ),
    ];
    let mut binding = ("none", f64::INFINITY, f64::INFINITY);
    for (name, b, per) in classes {
        if per <= 0.0 {
            continue;
        }
        let in_run = subs * (b.size + b.refill_per_sec * elapsed) / per;
        let per_hour = subs * b.refill_per_sec * 3600.0 / per;
        if in_run < binding.1 {
            binding = (name, in_run, per_hour);
        }
    }
    let achieved_per_hour = n * 3600.0 / elapsed;
    let ratio = n / binding.1;
    println!("throughput: {machines} machines in scope, {subs} subscriptions, end {end:?}");
    println!(
        "  quotas per subscription: reads {}+{}/s, writes {}+{}/s, deletes {}+{}/s, compute update-VM {}+{}/s",
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
        migrated.len(),
        report.completed,
        report.failed,
        report.blocked,
        report.violations
    );
    println!("  elapsed: {elapsed:.1} s");
    println!(
        "  achieved: {achieved_per_hour:.0} machines/h | quota bound ({}): {:.0} machines in {elapsed:.1} s (bucket + refill), {:.0} machines/h at steady refill",
        binding.0, binding.1, binding.2
    );
    println!(
        "  ratio achieved / quota bound: {:.1} % (target >= 90 %)",
        ratio * 100.0
    );
    println!(
        "  per migrated machine: {:.2} reads (target <= 6), {:.2} writes incl. deletes (target <= 4) [{:.2} PUT/PATCH, {:.2} DELETE, {:.2} compute update-VM]",
        reads / n,
        (writes + deletes) / n,
        writes / n,
        deletes / n,
        compute_updates / n
    );
    println!(
        "  429 answers: {throttled} | log queries {} | resource graph {}",
        report.arm.log_queries, report.arm.resource_graph
    );
    r.s.shutdown().await;
}
