//! Scenario tests (issue 4, "rollback of a wave"): the engine migrates part of a simulated fleet,
//! then rolls a wave (or the whole plan) back. Asserted from the simulator: what is left on each
//! machine (associations, AMA), the ledger (no gap, duplicates within the plan's window), the
//! request log (a second rollback sends no write; a stopped rollback repeats none), and the
//! machines' and plan's status.

mod scenario_support;

use std::collections::BTreeSet;

use ama_migrator::api::conditions::{status as cstatus, types as ctypes};
use ama_migrator::api::machine::MachineStep;
use ama_migrator::api::plan::{PlanPhase, TestWorkspace, UninstallPolicy, WavePhase};
use ama_migrator::api::{MachineMigration, MigrationPlan};
use ama_migrator::azure::{ArmClient, ResourceId};
use ama_migrator::engine::rollback::{REASON_ROLLED_BACK, RollbackScope};
use ama_migrator::engine::{RunEnd, StopPoint};
use ama_migrator::inventory::AgentKind;
use ama_migrator::machine::reasons as mreasons;
use ama_migrator::sim::scenario::AgentMix;
use ama_migrator::sim::{Agent, RequestRecord, Scenario};
use scenario_support::*;

const PREFIX: &str = "ama-migrator-";

fn legacy_only_start() -> AgentMix {
    AgentMix {
        legacy_only: 1.0,
        ama_only: 0.0,
        both: 0.0,
        none: 0.0,
    }
}

fn waves(plan: &mut MigrationPlan, waves: serde_json::Value) {
    plan.spec.rollout.waves = serde_json::from_value(waves).expect("waves parse");
}

/// What the simulator holds for one machine: the migrator's associations and the AMA extension.
async fn on_machine(c: &ArmClient, m: &MachineMigration) -> (Vec<String>, bool) {
    let rid = ResourceId::parse(&m.spec.machine_id).unwrap();
    let ours = c
        .list_associations(&rid)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|a| a.name)
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    let ama = c
        .agent_extensions(&rid)
        .await
        .unwrap()
        .iter()
        .any(|(k, _)| *k == AgentKind::Ama);
    (ours, ama)
}

fn writes(log: &[RequestRecord]) -> Vec<String> {
    log.iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "PATCH" | "DELETE" | "POST"))
        .filter(|r| {
            !lpath(r).contains("/microsoft.resourcegraph/") && !lpath(r).starts_with("/v1/")
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn wave_phase(r: &Run, wave: &str) -> Option<WavePhase> {
    r.plan()
        .status
        .and_then(|s| s.waves.into_iter().find(|w| w.name == wave))
        .map(|w| w.phase)
}

fn max_overlap_minutes(r: &Run) -> i64 {
    r.s.plan
        .spec
        .rollout
        .cutover
        .max_overlap
        .as_deref()
        .and_then(|d| ama_migrator::api::duration::parse_duration(d).ok())
        .map_or(0, |d| (d.as_secs() / 60) as i64)
}

/// Before the flip: the canary wave runs both agents (AMA into the test workspace) and waits for
/// approval; rolling it back removes the migrator's associations and AMA, keeps the legacy agent,
/// and leaves no gap. A second rollback sends no write; `run` refuses to re-migrate the wave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_back_the_canary_wave_before_the_flip_leaves_no_gap_and_no_trace() {
    let world = Scenario {
        agents: legacy_only_start(),
        in_guest_legacy_ratio: 0.0,
        ..scenario(16)
    };
    let mut r = start(world, None).await;
    r.s.auto_approve = false;
    r.s.plan.spec.test_workspace = Some(TestWorkspace {
        resource_id: r.s.sim.test_workspace_resource_id(),
        location: r.s.plan.spec.location.clone(),
    });
    waves(
        &mut r.s.plan,
        serde_json::json!([
            {"name": "canary", "maxRisk": "High", "count": 4, "canary": true, "soak": "30m",
             "gates": {"manualApproval": true}},
            {"name": "rest", "maxRisk": "High"}
        ]),
    );
    let end = r.run(None).await;
    assert!(matches!(end, RunEnd::Stalled { .. }), "{end:?}");
    // The plan says what it waits for and how to give it.
    let ready = r.plan_condition(ctypes::READY).expect("Ready");
    assert_eq!(ready.reason, "AwaitingManualApproval", "{ready:?}");
    assert!(
        ready
            .message
            .starts_with("wave canary finished and waits for approval")
            && ready.message.contains("amamigrator.io/approve-wave=canary"),
        "{}",
        ready.message
    );
    let canary: Vec<MachineMigration> = r
        .machines()
        .into_iter()
        .filter(|m| m.spec.wave == "canary")
        .collect();
    assert_eq!(canary.len(), 4);
    let c = r.s.client.clone();
    for m in &canary {
        let (ours, ama) = on_machine(&c, m).await;
        assert!(
            ama && !ours.is_empty(),
            "{}: canary migrated: {ours:?} ama={ama}",
            name_of(m)
        );
    }
    let others_before: Vec<(String, Option<MachineStep>)> = r
        .machines()
        .iter()
        .filter(|m| m.spec.wave != "canary")
        .map(|m| (name_of(m), step(m)))
        .collect();

    // Roll back, stopping after the first write; then again to the end.
    let stopped =
        r.s.rollback(
            RollbackScope::Wave("canary".into()),
            Some(StopPoint::AfterWrites(1)),
        )
        .await
        .unwrap();
    assert!(stopped.stopped, "{stopped:?}");
    let end =
        r.s.rollback(RollbackScope::Wave("canary".into()), None)
            .await
            .unwrap();
    assert!(end.complete(), "{end:?}");
    assert_eq!((end.machines, end.rolled_back), (4, 4), "{end:?}");
    assert!(
        end.restored_streams.is_empty(),
        "nothing was flipped: {end:?}"
    );

    for m in r.machines().iter().filter(|m| m.spec.wave == "canary") {
        let (ours, ama) = on_machine(&c, m).await;
        assert!(
            ours.is_empty(),
            "{}: migrator associations left: {ours:?}",
            name_of(m)
        );
        assert!(
            !ama,
            "{}: the AMA extension we installed is removed",
            name_of(m)
        );
        assert_eq!(step(m), Some(MachineStep::RolledBack), "{}", name_of(m));
        let ready = condition(m, ctypes::READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            (cstatus::FALSE, mreasons::ROLLED_BACK),
            "{ready:?}"
        );
        for p in r.pairs_of(&name_of(m)).iter().filter(|p| p.wanted) {
            assert_eq!(p.gap, 0, "no gap: {}", show(p));
            assert!(p.dup <= max_overlap_minutes(&r), "{}", show(p));
            assert_eq!(
                p.senders,
                vec![Agent::Legacy],
                "legacy path kept: {}",
                show(p)
            );
        }
    }
    let others_after: Vec<(String, Option<MachineStep>)> = r
        .machines()
        .iter()
        .filter(|m| m.spec.wave != "canary")
        .map(|m| (name_of(m), step(m)))
        .collect();
    assert_eq!(others_before, others_after, "other waves untouched");
    assert_eq!(
        r.s.report().violations,
        0,
        "{:?}",
        r.s.report().violation_examples
    );
    assert!(
        needless_repeats(&r.log()).is_empty(),
        "{:?}",
        needless_repeats(&r.log())
    );
    assert_eq!(wave_phase(&r, "canary"), Some(WavePhase::RolledBack));
    let plan = r.plan();
    assert_eq!(
        plan.status.as_ref().and_then(|s| s.phase),
        Some(PlanPhase::Paused)
    );
    let p = r.plan_condition(ctypes::PROGRESSING).expect("Progressing");
    assert_eq!(p.reason, REASON_ROLLED_BACK, "{p:?}");

    // Idempotent: a second rollback and a migrate run send no state-changing write.
    let before = r.log().len();
    let again =
        r.s.rollback(RollbackScope::Wave("canary".into()), None)
            .await
            .unwrap();
    assert!(again.complete() && again.writes == 0, "{again:?}");
    let end = r.run(None).await;
    match &end {
        RunEnd::Stalled { reason } => assert!(reason.contains("rolled back"), "{reason}"),
        other => panic!("a rolled-back plan must not run: {other:?}"),
    }
    let log = r.log();
    assert_eq!(writes(&log[before..]), Vec::<String>::new());

    // Cleared: the plan resumes and migrates the canary machines again, to the end.
    assert_eq!(r.s.clear_rollback().unwrap(), 4);
    r.s.auto_approve = true;
    let end = r.run(None).await;
    assert_eq!(
        end,
        RunEnd::Completed,
        "{:?}",
        r.s.report().violation_examples
    );
    for m in r.machines().iter().filter(|m| m.spec.wave == "canary") {
        assert_eq!(step(m), Some(MachineStep::Done), "{}", name_of(m));
    }
    let report = r.s.report();
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
    eprintln!(
        "canary rollback: {} machines, duplicates {} gaps {} violations {}",
        report.machines, report.duplicate_minutes, report.gap_minutes, report.violations
    );
}

/// A machine whose legacy agent the migrator removed cannot go back without a gap: the rollback
/// keeps its AMA path and blocks it with `RollbackWouldLeaveNoSender`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_legacy_agent_we_removed_is_blocked_and_keeps_its_ama_path() {
    // Linux: every plan source moves to AMA, so the legacy agent is removed once AMA delivers.
    let world = Scenario {
        windows_ratio: 0.0,
        agents: legacy_only_start(),
        in_guest_legacy_ratio: 0.0,
        ..scenario(12)
    };
    let mut r = start(world, None).await;
    r.s.auto_approve = false;
    waves(
        &mut r.s.plan,
        serde_json::json!([
            {"name": "first", "maxRisk": "High", "count": 4, "gates": {"manualApproval": true}},
            {"name": "rest", "maxRisk": "High"}
        ]),
    );
    let end = r.run(None).await;
    assert!(matches!(end, RunEnd::Stalled { .. }), "{end:?}");
    let first: Vec<MachineMigration> = r
        .machines()
        .into_iter()
        .filter(|m| m.spec.wave == "first")
        .collect();
    assert_eq!(first.len(), 4);
    let c = r.s.client.clone();
    // Machines that moved to AMA had their legacy agent removed; the others of the wave keep
    // their legacy agent until the workspace flip and were not touched yet.
    let mut migrated = Vec::new();
    let mut untouched = Vec::new();
    for m in &first {
        let (ours, ama) = on_machine(&c, m).await;
        let legacy = r
            .pairs_of(&name_of(m))
            .iter()
            .any(|p| p.senders.contains(&Agent::Legacy));
        if ama && !ours.is_empty() {
            assert!(!legacy, "{}: its legacy agent was removed", name_of(m));
            migrated.push((name_of(m), ours));
        } else {
            assert!(
                !ama && ours.is_empty() && legacy,
                "{}: untouched",
                name_of(m)
            );
            untouched.push(name_of(m));
        }
    }
    assert!(!migrated.is_empty(), "some machine of the wave migrated");
    let log_before = r.log().len();
    let end =
        r.s.rollback(RollbackScope::Wave("first".into()), None)
            .await
            .unwrap();
    assert_eq!(
        (end.machines, end.rolled_back, end.not_rolled_back.len()),
        (first.len(), untouched.len(), migrated.len()),
        "{end:?}"
    );
    assert!(!end.complete());
    for (name, ours_before) in &migrated {
        let m = r.machine(name);
        assert_eq!(step(&m), Some(MachineStep::Blocked), "{name}");
        let b = condition(&m, ctypes::BLOCKED).expect("Blocked");
        assert_eq!(
            (b.status.as_str(), b.reason.as_str()),
            (cstatus::TRUE, mreasons::ROLLBACK_BLOCKED_NO_LEGACY),
            "{b:?}"
        );
        assert!(b.message.contains("reinstall"), "actionable: {}", b.message);
        let (ours, ama) = on_machine(&c, &m).await;
        assert!(ama, "{name}: AMA kept");
        assert_eq!(&ours, ours_before, "{name}: associations untouched");
        for p in r.pairs_of(name).iter().filter(|p| p.wanted) {
            assert_eq!(p.gap, 0, "{}", show(p));
            assert_eq!(p.senders, vec![Agent::Ama], "{}", show(p));
        }
    }
    for name in &untouched {
        let m = r.machine(name);
        assert_eq!(step(&m), Some(MachineStep::RolledBack), "{name}");
        for p in r.pairs_of(name).iter().filter(|p| p.wanted) {
            assert_eq!(p.gap, 0, "{}", show(p));
        }
    }
    assert_eq!(writes(&r.log()[log_before..]), Vec::<String>::new());
    let b = r.plan_condition(ctypes::BLOCKED).expect("plan Blocked");
    assert_eq!(
        (b.status.as_str(), b.reason.as_str()),
        (cstatus::TRUE, mreasons::ROLLBACK_BLOCKED_NO_LEGACY),
        "{b:?}"
    );
    assert_eq!(r.s.report().violations, 0);
}

/// After the flip: every machine keeps its legacy agent (uninstall Never), the plan completes and
/// flips its streams; rolling back the whole plan restores the workspace settings first, then
/// removes associations and AMA, then the plan's DCRs. No gap anywhere; a stop in the middle
/// repeats no write; a second rollback sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_back_the_whole_plan_after_the_flip_restores_the_legacy_path_first() {
    let world = Scenario {
        agents: legacy_only_start(),
        in_guest_legacy_ratio: 0.0,
        ..scenario(12)
    };
    let mut r = start(world, None).await;
    r.s.plan.spec.legacy.uninstall = UninstallPolicy::Never;
    waves(
        &mut r.s.plan,
        serde_json::json!([
            {"name": "first", "maxRisk": "High", "count": 4},
            {"name": "rest", "maxRisk": "High"}
        ]),
    );
    let end = r.run(None).await;
    assert_eq!(end, RunEnd::Completed);
    let flipped = r.s.report().flipped;
    assert!(!flipped.is_empty(), "the plan flipped its streams");
    let owned: Vec<String> = r
        .plan()
        .status
        .map(|s| s.owned_dcrs.into_iter().map(|d| d.resource_id).collect())
        .unwrap_or_default();
    assert!(!owned.is_empty());
    let c = r.s.client.clone();

    let rb_start = r.log().len();
    let stopped =
        r.s.rollback(RollbackScope::Plan, Some(StopPoint::AfterWrites(5)))
            .await
            .unwrap();
    assert!(stopped.stopped, "{stopped:?}");
    let end = r.s.rollback(RollbackScope::Plan, None).await.unwrap();
    assert!(end.complete(), "{end:?}");
    assert_eq!(end.rolled_back, 12, "{end:?}");
    let restored: BTreeSet<String> = stopped
        .restored_streams
        .iter()
        .chain(&end.restored_streams)
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        restored,
        flipped.iter().cloned().collect::<BTreeSet<_>>(),
        "every flipped stream restored"
    );
    for m in &r.machines() {
        let (ours, ama) = on_machine(&c, m).await;
        assert!(
            ours.is_empty() && !ama,
            "{}: {ours:?} ama={ama}",
            name_of(m)
        );
        assert_eq!(step(m), Some(MachineStep::RolledBack));
    }
    for id in &owned {
        let rid = ResourceId::parse(id).unwrap();
        let got: Option<serde_json::Value> = c.get_dcr(&rid).await.unwrap();
        assert!(got.is_none(), "plan DCR {id} deleted");
    }
    let allowed = max_overlap_minutes(&r);
    for p in r.ledger().iter().filter(|p| p.wanted && !p.out_of_scope) {
        assert_eq!(p.gap, 0, "{}", show(p));
        assert!(p.dup <= allowed, "{}", show(p));
        assert_eq!(p.senders, vec![Agent::Legacy], "{}", show(p));
    }
    assert_eq!(r.s.report().violations, 0);
    assert_eq!(
        needless_repeats(&r.log()),
        Vec::<String>::new(),
        "a stopped rollback repeats no write"
    );
    // The workspace settings went back before the first association was removed.
    let log = r.log();
    let rb = &log[rb_start..];
    let first_restore = rb
        .iter()
        .position(|x| x.method == "PUT" && lpath(x).contains("/datasources/"))
        .expect("a dataSource restore");
    let first_dissociation = rb
        .iter()
        .position(|x| x.method == "DELETE" && lpath(x).contains("/datacollectionruleassociations/"))
        .expect("a dissociation");
    assert!(
        first_restore < first_dissociation,
        "restore before dissociation"
    );
    let before = log.len();
    let again = r.s.rollback(RollbackScope::Plan, None).await.unwrap();
    assert!(again.complete() && again.writes == 0, "{again:?}");
    assert_eq!(writes(&r.log()[before..]), Vec::<String>::new());
    let report = r.s.report();
    eprintln!(
        "whole-plan rollback after the flip: {} machines, streams restored {:?}, DCRs deleted {}, rollback writes {}+{}, duplicates {} gaps {} violations {}",
        report.machines,
        restored,
        stopped.deleted_dcrs.len() + end.deleted_dcrs.len(),
        stopped.writes,
        end.writes,
        report.duplicate_minutes,
        report.gap_minutes,
        report.violations
    );
}

/// A whole-plan rollback killed outright (its future dropped mid-await, as a SIGKILL leaves the
/// state file) right after each of its first writes reached ARM — workspace restores first, then
/// dissociations — resumes each time and completes: every stream restored, every machine back on
/// its legacy agent, no write repeated after it had succeeded. (Once, a kill after the second
/// write left a `RestoreLegacy` entry open that refused every later rollback for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_killed_after_each_of_its_first_writes_resumes_to_completion() {
    let world = Scenario {
        agents: legacy_only_start(),
        in_guest_legacy_ratio: 0.0,
        ..scenario(8)
    };
    let dir = std::env::temp_dir().join(format!("rollback-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.db");
    let _ = std::fs::remove_file(&path);
    let mut r = start(world, Some(path)).await;
    r.s.plan.spec.legacy.uninstall = UninstallPolicy::Never;
    waves(
        &mut r.s.plan,
        serde_json::json!([{"name": "all", "maxRisk": "High"}]),
    );
    assert_eq!(r.run(None).await, RunEnd::Completed);
    let flipped = r.s.report().flipped;
    assert!(!flipped.is_empty(), "the plan flipped its streams");
    let sim = r.s.sim.clone();
    let count = |sim: &ama_migrator::sim::SimHandle| writes(&sim.request_log()).len();

    const KILLS: usize = 8;
    let mut kills = 0;
    let mut end = None;
    while end.is_none() {
        let before = count(&sim);
        let reached_next_write = async {
            while count(&sim) <= before {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        if kills < KILLS {
            tokio::select! {
                e = r.s.rollback(RollbackScope::Plan, None) => end = Some(e.unwrap()),
                () = reached_next_write => kills += 1,
            }
        } else {
            end = Some(r.s.rollback(RollbackScope::Plan, None).await.unwrap());
        }
    }
    let end = end.unwrap();
    // Writes sent at once can land between two looks: fewer kills than writes is possible.
    assert!(kills >= KILLS / 2, "only {kills} kills");
    assert!(end.complete(), "{end:?}");
    assert_eq!(end.rolled_back, 8, "{end:?}");
    for m in &r.machines() {
        assert_eq!(step(m), Some(MachineStep::RolledBack), "{}", name_of(m));
    }
    for p in r.ledger().iter().filter(|p| p.wanted && !p.out_of_scope) {
        assert_eq!(p.gap, 0, "{}", show(p));
        assert_eq!(p.senders, vec![Agent::Legacy], "{}", show(p));
    }
    let repeats = needless_repeats(&r.log());
    if !repeats.is_empty() {
        let history: Vec<String> = r
            .log()
            .iter()
            .filter(|x| lpath(x).contains("/extensions/azuremonitor"))
            .map(|x| {
                format!(
                    "#{} {} {} {} {}",
                    x.seq, x.sim_time, x.method, x.status, x.path
                )
            })
            .collect();
        panic!(
            "a killed rollback repeats no write after it succeeded: {repeats:#?}\nAMA extension requests:\n{}",
            history.join("\n")
        );
    }
    eprintln!(
        "rollback killed {kills} times (after each of its first {KILLS} writes), then completed: {} machines rolled back, {} writes in all",
        end.rolled_back,
        count(&sim)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
