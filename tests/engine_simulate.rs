//! The engine end to end against the in-process simulator, judged by the simulator's ledger.

use std::time::Duration;

use ama_migrator::engine::simulate::{Simulation, count_requests};
use ama_migrator::engine::{RunEnd, SimulateOptions, StopPoint, run_simulation};
use ama_migrator::sim::Scenario;

fn options(machines: usize) -> SimulateOptions {
    SimulateOptions {
        scenario: Scenario {
            machines,
            time_scale: 300.0,
            ..Scenario::default()
        },
        tick: Duration::from_millis(10),
        ..SimulateOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_plan_migrates_a_mixed_fleet_with_no_violation() {
    let report = tokio::time::timeout(Duration::from_secs(240), run_simulation(options(60)))
        .await
        .expect("the simulation ends within its time bound")
        .expect("the simulation runs");
    assert_eq!(report.end, RunEnd::Completed, "{report:#?}");
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
    assert!(report.success());
    assert_eq!(report.machines, 60);
    assert_eq!(report.failed, 0);
    assert_eq!(report.completed + report.blocked, 60, "{report:#?}");
    assert!(report.blocked < 10, "only off/disconnected machines block");
    // Every in-scope wanted pair of a moved source ends with exactly one sender.
    for (t, s) in &report.agent_states {
        assert_eq!(s.both, 0, "{t}: duplicated at the end: {s:?}");
    }
    assert!(report.agent_states.values().any(|s| s.ama_only > 0));
    // The plan switched the workspace's legacy Security Events off once every sender was covered.
    assert!(report.flipped.iter().any(|f| f == "WindowsSecurityEvents"));
    // Machines moved through ARM writes and the budget kept the simulator from throttling.
    assert!(report.arm.writes > 0 && report.arm.deletes > 0);
    assert_eq!(report.arm.throttled, 0);
    assert_eq!(
        report.arm.resource_graph, 1,
        "discovery is one inventory query"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_resumes_on_the_same_state_without_repeating_finished_writes() {
    let dir = std::env::temp_dir().join(format!("ama-engine-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.db");
    let _ = std::fs::remove_file(&state);
    let mut opts = options(30);
    opts.state = Some(state.clone());
    let mut sim = Simulation::start(opts).await.unwrap();
    let first = tokio::time::timeout(
        Duration::from_secs(60),
        sim.run(Some(StopPoint::AfterWrites(15))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first, RunEnd::Stopped);
    let before = count_requests(&sim.request_log());
    assert!(before.writes + before.deletes >= 15);
    let second = tokio::time::timeout(Duration::from_secs(240), sim.run(None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second, RunEnd::Completed);
    let report = sim.report();
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
    // No extension install was sent twice for one machine.
    let log = sim.request_log();
    let mut installs = std::collections::HashMap::new();
    for r in log
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/extensions/AzureMonitor"))
    {
        *installs.entry(r.path.to_ascii_lowercase()).or_insert(0) += 1;
    }
    assert!(!installs.is_empty());
    for (path, n) in installs {
        assert_eq!(n, 1, "{path} installed {n} times");
    }
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
