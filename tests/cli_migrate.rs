//! `ama-migrator migrate` as people without Kubernetes run it: the real binary, the real clock,
//! HTTP to an Azure endpoint (here the simulator, as `ama-migrator simulator` serves it), state in
//! one SQLite file. The process is killed (SIGKILL) in the middle of the migration and started
//! again on the same state file; the second run completes, the ledger shows no gap and no
//! duplicate beyond the plan's overlap, and no state-changing write was sent twice.

mod scenario_support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use ama_migrator::engine::simulate::default_plan;
use ama_migrator::sim::{Scenario, SimHandle, Simulator};
use scenario_support::{migrate_command as migrate, needless_repeats, scenario, workdir};

fn writes(sim: &SimHandle) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "PATCH" | "DELETE"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_killed_mid_run_resumes_on_its_state_file_and_completes() {
    // 600x: a 5-minute first-data delay is half a real second; the engine's own clock is real.
    let sim = Simulator::start(
        Scenario {
            time_scale: 600.0,
            ..scenario(16)
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let mut plan = default_plan(&sim).unwrap();
    // One wave without soak or manual gate: real-clock soaks would make the test last hours.
    plan.spec.rollout.waves = serde_json::from_value(serde_json::json!(
        [{"name": "all", "maxRisk": "High", "gates": {"minSuccessRatio": 0.9}}]
    ))
    .unwrap();
    let baseline: HashMap<_, _> = sim
        .ledger_pairs(None, None)
        .into_iter()
        .map(|p| ((p.machine.clone(), p.data_source), p))
        .collect();

    let (dir, plan_path, state) = workdir("ama-cli-migrate", &plan);

    // First run: killed once it has sent some machine writes (installs under way).
    let mut first = migrate(&sim, &plan_path, &state).spawn().unwrap();
    let t = Instant::now();
    while writes(&sim) < 12 && t.elapsed() < Duration::from_secs(60) {
        if first.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended before it could be killed"
    );
    first.kill().unwrap();
    let _ = first.wait();
    let at_kill = writes(&sim);
    assert!(at_kill >= 12, "only {at_kill} writes before the kill");

    // Second run on the same state file: completes (exit 0).
    let mut second = migrate(&sim, &plan_path, &state).spawn().unwrap();
    let t2 = Instant::now();
    while second.try_wait().unwrap().is_none() {
        if t2.elapsed() > Duration::from_secs(180) {
            second.kill().unwrap();
            let status = Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
                .args(["status", "--state"])
                .arg(&state)
                .output()
                .unwrap();
            panic!(
                "the resumed run did not end within 180 s:\n{}",
                String::from_utf8_lossy(&status.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = second.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "second run: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let end: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(end["end"], "completed", "{stdout}");
    assert!(writes(&sim) > at_kill, "the second run did the rest");

    // The ledger: every in-scope pair the plan covers ends with one sender and lost no minute.
    // Duplicate minutes are not judged here: this engine runs on the real clock against a world
    // running 600x faster, so its overlap windows (engine time) say nothing about simulated
    // minutes; `simulate` and `crash_resume` judge them with the engine on the simulator's clock.
    let mut moved = 0;
    for p in sim.ledger_pairs(None, None) {
        if p.out_of_scope || !p.wanted {
            continue;
        }
        let base = baseline.get(&(p.machine.clone(), p.data_source));
        let gap = p.counts.gap_minutes - base.map_or(0, |b| b.counts.gap_minutes);
        assert_eq!(gap, 0, "{}/{}: {gap} gap minutes", p.machine, p.data_source);
        assert_eq!(
            p.senders.len(),
            1,
            "{}/{}: {:?}",
            p.machine,
            p.data_source,
            p.senders
        );
        moved += usize::from(p.senders == [ama_migrator::sim::Agent::Ama]);
    }
    assert!(moved > 16, "sources moved to AMA: {moved}");
    eprintln!(
        "migrate: killed after {at_kill} writes, {} in all; {moved} (machine, source) pairs moved to AMA; {:.1}s",
        writes(&sim),
        t.elapsed().as_secs_f64()
    );
    let repeats = needless_repeats(&sim.request_log());
    assert!(repeats.is_empty(), "{repeats:#?}");

    // `status` reads the same state file.
    let status = Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .args(["status", "--output", "json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let text = s.to_string();
    assert!(text.contains("\"Completed\""), "{text}");
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_state_file_is_refused_before_it_reads_azure() {
    let sim = Simulator::start(
        Scenario {
            time_scale: 600.0,
            ..scenario(8)
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    // The refused runs talk to a simulator of their own: what it receives is what they sent.
    let other = Simulator::start(scenario(8), "127.0.0.1:0").await.unwrap();
    let plan = default_plan(&sim).unwrap();
    let (dir, plan_path, state) = workdir("ama-cli-two-writers", &plan);

    let mut first = migrate(&sim, &plan_path, &state).spawn().unwrap();
    let t = Instant::now();
    while writes(&sim) == 0 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended early"
    );

    let mut rollback = Command::new(env!("CARGO_BIN_EXE_ama-migrator"));
    rollback
        .args(["rollback", "--all", "--plan-name"])
        .arg(plan.metadata.name.as_deref().unwrap_or_default())
        .arg("--state")
        .arg(&state)
        .args(["--credential", "none", "--arm-endpoint", &other.base_url()]);
    for (what, mut second) in [
        ("migrate", migrate(&other, &plan_path, &state)),
        ("rollback", rollback),
    ] {
        let started = Instant::now();
        let out = second.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "second {what}: {:?}", out.status);
        assert!(
            stderr.contains("is in use by `ama-migrator migrate`")
                && stderr.contains(&format!("pid {}", first.id()))
                && stderr.contains(&state.display().to_string()),
            "second {what} names the state file and its holder: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "second {what} refused at once"
        );
        assert!(
            other.request_log().is_empty(),
            "second {what} sent requests to Azure before it was refused: {:?}",
            other.request_log().first().map(|r| (&r.method, &r.path))
        );
    }
    first.kill().unwrap();
    let _ = first.wait();

    // The kill released the lock: the next run takes the file.
    let mut next = migrate(&sim, &plan_path, &state).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        next.try_wait().unwrap().is_none(),
        "a run after the holder's death is admitted"
    );
    next.kill().unwrap();
    let _ = next.wait();
    sim.shutdown().await;
    other.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A machine whose AMA install fails is Failed (one attempt: `--max-attempts 1`); once the cause
/// is fixed, `migrate --retry-failed` on the same state file clears the failure and the machine
/// completes. A `--retry` naming no machine of the plan is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_machine_completes_after_its_fault_is_fixed_and_retry_failed() {
    let sim = Simulator::start(
        Scenario {
            time_scale: 600.0,
            ..scenario(8)
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let mut plan = default_plan(&sim).unwrap();
    plan.spec.rollout.waves = serde_json::from_value(serde_json::json!(
        [{"name": "all", "maxRisk": "High", "gates": {"minSuccessRatio": 0.5}}]
    ))
    .unwrap();
    plan.spec.rollout.failure_budget =
        serde_json::from_value(serde_json::json!({"maxFailed": 3})).unwrap();
    // The machine to fail: one the plan moves to AMA.
    let victim = sim
        .ledger_pairs(None, None)
        .into_iter()
        .find(|p| p.wanted && !p.out_of_scope && p.senders == [ama_migrator::sim::Agent::Legacy])
        .map(|p| p.machine)
        .expect("a machine the plan migrates");
    let victim_name = victim.rsplit('/').next().unwrap().to_string();
    sim.inject(ama_migrator::sim::Fault::ExtensionFailure {
        machine: Some(victim.clone()),
        code: "VMAgentStatusCommunicationError".into(),
        probability: 1.0,
    })
    .unwrap();
    let (dir, plan_path, state) = workdir("ama-cli-retry", &plan);
    let step_of = |name: &str| {
        let store = ama_migrator::local::StateStore::open_existing(&state).unwrap();
        store
            .list::<ama_migrator::api::MachineMigration>(None)
            .unwrap()
            .into_iter()
            .find(|m| m.spec.machine_id.rsplit('/').next() == Some(name))
            .and_then(|m| m.status.and_then(|s| s.step))
    };

    // The first run: the victim fails at once and the plan cannot switch its streams off while
    // it still sends through the legacy agent alone; it stalls, saying how to retry.
    let first = migrate(&sim, &plan_path, &state)
        .args(["--max-attempts", "1", "--stall-after", "5s"])
        .output()
        .unwrap();
    let first_out = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(1), "{first_out}");
    assert!(first_out.contains("--retry-failed"), "{first_out}");
    assert_eq!(
        step_of(&victim_name),
        Some(ama_migrator::api::machine::MachineStep::Failed),
        "{first_out}"
    );

    // A retry naming no machine of the plan: refused, nothing sent.
    let sent = sim.request_log().len();
    let wrong = migrate(&sim, &plan_path, &state)
        .args(["--retry", "no-such-vm"])
        .output()
        .unwrap();
    let wrong_err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{wrong_err}");
    assert!(
        wrong_err.contains("--retry \"no-such-vm\"") && wrong_err.contains("status --state"),
        "{wrong_err}"
    );
    assert_eq!(
        sim.request_log().len(),
        sent,
        "nothing sent for a wrong --retry"
    );

    // The cause is fixed; the failed machine is retried and completes.
    sim.clear_faults();
    let second = migrate(&sim, &plan_path, &state)
        .arg("--retry-failed")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        stderr.contains(&format!("retrying 1 machine(s): {victim_name}")),
        "{stderr}"
    );
    assert!(
        second.status.success(),
        "{:?}\nstdout: {stdout}\nstderr: {stderr}",
        second.status
    );
    assert_eq!(
        step_of(&victim_name),
        Some(ama_migrator::api::machine::MachineStep::Done)
    );
    let moved = sim
        .ledger_pairs(Some(&victim), None)
        .into_iter()
        .filter(|p| p.wanted && p.senders == [ama_migrator::sim::Agent::Ama])
        .count();
    assert!(moved > 0, "{victim_name} sends through AMA after the retry");
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
