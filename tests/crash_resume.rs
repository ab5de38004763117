//! Crash and resume (issue 4): a 300-machine run is stopped at 20 or more points spread over the
//! run — after k machine writes (the engine's stop hook) and, every third stop, killed outright by
//! dropping the engine mid-await — and restarted each time on the same SQLite state file,
//! reopened. The run completes with no minute outside the declared windows, and the simulator's
//! request log shows no state-changing write repeated after it had succeeded.

mod scenario_support;

use std::sync::Arc;
use std::time::Duration;

use ama_migrator::engine::{RunEnd, StopPoint};
use ama_migrator::local::StateStore;
use scenario_support::{needless_repeats, scenario, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_machine_run_stopped_at_20_points_completes_without_needless_writes() {
    let dir = std::env::temp_dir().join(format!("crash-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.db");
    let _ = std::fs::remove_file(&path);
    let world = ama_migrator::sim::Scenario {
        outside_subscription_machines: 6,
        on_prem_computers: 3,
        deallocated_ratio: 0.03,
        disconnected_ratio: 0.03,
        multi_homed_ratio: 0.05,
        legacy_only_sources_ratio: 0.05,
        // 300x as `simulate` runs, not the scenario tests' 1500x: the simulated world goes on while
        // the engine restarts, and at 1500x each restart's real second (reopening the state,
        // discovery, re-reading abandoned writes) is 25 simulated minutes in which the machines
        // waiting for the flip send twice — 20 restarts alone would exceed the plan's 2 h overlap,
        // which no real restart (seconds) comes near.
        time_scale: 300.0,
        ..scenario(300)
    };
    let mut r = start(world, Some(path.clone())).await;
    // maxParallel above the fleet: with the default 50 the planner deadlocks once 50 machines wait
    // for the workspace flip (see the report of this test's author; src/plan/decide.rs in_progress).
    r.s.plan.spec.rollout.max_parallel = 400;
    let t = std::time::Instant::now();
    let mut hook_stops = Vec::new();
    let mut kills = Vec::new();
    let mut end = RunEnd::Stopped;
    let kills_on = std::env::var_os("CRASH_RESUME_HOOK_ONLY").is_none();
    for i in 0u64..120 {
        // Reopen the state file as a restarted process would.
        r.s.state = Arc::new(StateStore::open(&path).unwrap());
        let t_run = std::time::Instant::now();
        let sim_before = r.s.sim.now();
        eprintln!(
            "run {i} start real {:.2}s sim {sim_before}",
            t.elapsed().as_secs_f64()
        );
        let writes_before = r
            .log()
            .iter()
            .filter(|x| x.method != "GET" && x.method != "POST")
            .count();
        if kills_on && i % 2 == 1 {
            // A kill: the engine future is dropped wherever it is waiting (mid-request, mid-poll).
            let after = Duration::from_millis(150 + (i * 37) % 400);
            match tokio::time::timeout(after, r.s.run(None)).await {
                Err(_) => {
                    eprintln!("  killed after {:?}", t_run.elapsed());
                    kills.push(after.as_millis());
                    continue;
                }
                Ok(e) => {
                    end = e.unwrap();
                }
            }
        } else {
            let k = 1 + (i * 5) % 8;
            end = r.run(Some(StopPoint::AfterWrites(k))).await;
            if end == RunEnd::Stopped {
                let sent = r
                    .log()
                    .iter()
                    .filter(|x| x.method != "GET" && x.method != "POST")
                    .count()
                    - writes_before;
                hook_stops.push((k, sent));
                eprintln!("  hook stop after {:?}", t_run.elapsed());
                continue;
            }
        }
        break;
    }
    // One last restart after the final stop, so the run completes.
    if end == RunEnd::Stopped {
        r.s.state = Arc::new(StateStore::open(&path).unwrap());
        end = r.run(None).await;
    }
    let report = r.s.report();
    let log = r.log();
    let repeats = needless_repeats(&log);
    eprintln!(
        "crash-resume: {} hook stops (k, writes sent) {:?}; {} kills after ms {:?}; end {:?}; {:.1}s; completed {} failed {} blocked {}; dup {} gap {} violations {}; arm {:?}; needless repeats {}",
        hook_stops.len(),
        hook_stops,
        kills.len(),
        kills,
        end,
        t.elapsed().as_secs_f64(),
        report.completed,
        report.failed,
        report.blocked,
        report.duplicate_minutes,
        report.gap_minutes,
        report.violations,
        report.arm,
        repeats.len()
    );
    eprintln!(
        "violations e.g. {:?}\nrepeats e.g. {:#?}",
        report.violation_examples,
        &repeats[..repeats.len().min(15)]
    );
    // On a violation: the timeline of the first machine concerned, with the workspace writes.
    if let Some(first) = report.violation_examples.first() {
        let machine = first
            .split('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        for x in log.iter().filter(|x| {
            let p = x.path.to_ascii_lowercase();
            x.method != "GET" && (p.contains(&format!("/{machine}")) || p.contains("/datasources/"))
        }) {
            eprintln!("  {} {} {} {}", x.sim_time, x.method, x.status, x.path);
        }
        for e in
            r.s.state
                .read(|s| s.events(None, 100_000))
                .unwrap_or_default()
                .iter()
                .rev()
                .filter(|e| e.object.name.contains(&machine) || e.reason.contains("Legacy"))
        {
            eprintln!("  event {} {} {}", e.at, e.reason, e.message);
        }
    }
    assert!(
        hook_stops.len() + kills.len() >= 20,
        "only {} stops before the run ended",
        hook_stops.len() + kills.len()
    );
    assert_eq!(end, RunEnd::Completed, "{report:?}");
    assert_eq!(report.machines, 300);
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.completed + report.blocked, 300, "{report:?}");
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
    assert!(
        repeats.is_empty(),
        "state-changing writes repeated after success: {repeats:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
