//! What holds the example plan back over the example inventory, and what does not:
//! * wave gates: a wave that measures machines (success ratio, parity) holds the rollout until
//!   they are measured; a wave no machine falls into has nothing to measure and holds it only by
//!   what needs no machine (soak, approval);
//! * a DCR that bundles sources: a source the workspace never collected through the legacy
//!   agent waits for the flip stage when its DCR also carries sources whose flip is pending
//!   (associating it early would make AMA duplicate those), and the wave does not wait for it;
//! * maintenance windows: outside them no machine starts a step, and the outcome says the plan
//!   waits for a window (the engine must not report that as a stall); a window that spans
//!   midnight is open after midnight only if it opened on a listed day.

use std::collections::HashMap;

use ama_migrator::api::load::load_plan;
use ama_migrator::azure::WorkspaceDataSource;
use ama_migrator::catalog::DataSourceType;
use ama_migrator::catalog::LegacyConfig;
use ama_migrator::inventory::{InventoryMachine, ResourceGraphResponse};
use ama_migrator::plan::{
    MachineAction, MachineState, PlanInput, PlanOutcome, PlanProgress, WaveProgress, plan,
};

const BASE: &str = include_str!("../examples/plan.yaml");
const NOW: &str = "2026-11-25T22:00:00Z";

fn outcome(yaml: &str, progress: &PlanProgress) -> PlanOutcome {
    outcome_at(yaml, progress, NOW)
}

fn outcome_at(yaml: &str, progress: &PlanProgress, now: &str) -> PlanOutcome {
    planned(
        yaml,
        &LegacyConfig::default(),
        &HashMap::new(),
        progress,
        now,
    )
}

fn inventory() -> Vec<InventoryMachine> {
    let r: ResourceGraphResponse<InventoryMachine> =
        serde_json::from_str(include_str!("../examples/inventory.json")).unwrap();
    r.data
}

fn planned(
    yaml: &str,
    legacy: &LegacyConfig,
    states: &HashMap<String, MachineState>,
    progress: &PlanProgress,
    now: &str,
) -> PlanOutcome {
    let p = load_plan(yaml).unwrap();
    plan(&PlanInput {
        plan_name: "contoso-sentinel",
        spec: &p.spec,
        inventory: &inventory(),
        heartbeat: &[],
        legacy,
        states,
        progress,
        other_plans: &[],
        now: now.parse().unwrap(),
    })
}

/// The canary wave finished 25 h ago (past its 24 h soak) and was approved; parity not measured.
fn canary_soaked_and_approved() -> PlanProgress {
    PlanProgress {
        waves: vec![WaveProgress {
            finished_at: Some("2026-11-24T21:00:00Z".parse().unwrap()),
            parity_ok: None,
            approved: true,
        }],
        ..PlanProgress::default()
    }
}

#[test]
fn a_canary_with_machines_waits_for_its_parity_to_be_measured() {
    let out = outcome(BASE, &canary_soaked_and_approved());
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    assert!(
        out.waves[0].members > 0,
        "the example's canary has machines"
    );
    assert!(!out.waves[0].gate_passed, "parity not measured yet");
    assert!(!out.waves[1].admitted);

    let mut measured = canary_soaked_and_approved();
    measured.waves[0].parity_ok = Some(true);
    let out = outcome(BASE, &measured);
    assert!(out.waves[0].gate_passed);
    assert!(out.waves[1].admitted);
}

#[test]
fn a_wave_no_machine_falls_into_does_not_hold_the_rollout_on_parity() {
    // No machine is Low risk any more: the canary (maxRisk Low) receives none.
    let yaml = BASE.replace(
        "      - match: {tags: {env: dev}}\n        risk: Low",
        "      - match: {tags: {env: dev}}\n        risk: Medium",
    );
    assert_ne!(yaml, BASE);
    let unstarted = outcome(&yaml, &PlanProgress::default());
    assert!(unstarted.errors.is_empty(), "{:#?}", unstarted.errors);
    assert_eq!(unstarted.waves[0].members, 0);
    assert!(
        !unstarted.waves[0].gate_passed,
        "soak and approval still hold an empty wave"
    );
    assert!(
        unstarted
            .warnings
            .iter()
            .any(|w| w.contains("\"canary\" receives no machine")
                && w.contains("spec.rollout.riskRules")),
        "{:#?}",
        unstarted.warnings
    );

    let out = outcome(&yaml, &canary_soaked_and_approved());
    assert!(
        out.waves[0].gate_passed,
        "nothing to measure parity on: soak and approval decide"
    );
    assert!(out.waves[1].admitted);
}

/// Every wave approved and past its soak, parity measured: only the windows can hold work back.
fn all_gates_open() -> PlanProgress {
    PlanProgress {
        waves: (0..4)
            .map(|_| WaveProgress {
                finished_at: Some("2026-11-01T00:00:00Z".parse().unwrap()),
                parity_ok: Some(true),
                approved: true,
            })
            .collect(),
        ..PlanProgress::default()
    }
}

fn proceeding(out: &PlanOutcome) -> usize {
    out.machines
        .iter()
        .filter(|m| m.may_proceed && !m.actions.is_empty())
        .count()
}

#[test]
fn outside_its_maintenance_windows_the_plan_waits_and_says_so() {
    // The example's windows: Mon-Thu 20:00-06:00 UTC.
    let progress = all_gates_open();
    let open = outcome_at(BASE, &progress, "2026-11-24T21:00:00Z"); // Tuesday 21:00
    assert!(open.errors.is_empty(), "{:#?}", open.errors);
    assert!(proceeding(&open) > 0);
    assert!(!open.held_by_window);

    let closed = outcome_at(BASE, &progress, "2026-11-24T12:00:00Z"); // Tuesday noon
    assert_eq!(proceeding(&closed), 0);
    assert!(closed.held_by_window, "work is left and the window is shut");

    // Paused, nothing is held by the window: the pause holds it.
    let paused = BASE.replace("  paused: false", "  paused: true");
    assert_ne!(paused, BASE);
    let out = outcome_at(&paused, &progress, "2026-11-24T12:00:00Z");
    assert!(!out.held_by_window);
}

#[test]
fn a_window_spanning_midnight_is_open_after_midnight_only_after_a_listed_day() {
    let progress = all_gates_open();
    // Tuesday 03:00 belongs to Monday's window; Monday 03:00 would belong to Sunday's, which is
    // not listed; Friday 03:00 belongs to Thursday's; Saturday 03:00 to Friday's (not listed).
    for (now, open) in [
        ("2026-11-24T03:00:00Z", true),
        ("2026-11-23T03:00:00Z", false),
        ("2026-11-27T03:00:00Z", true),
        ("2026-11-28T03:00:00Z", false),
        ("2026-11-23T20:30:00Z", true),
        ("2026-11-27T20:30:00Z", false),
    ] {
        let out = outcome_at(BASE, &progress, now);
        assert_eq!(proceeding(&out) > 0, open, "{now}");
        assert_eq!(out.held_by_window, !open, "{now}");
    }
}

#[test]
fn a_source_whose_dcr_carries_flip_pending_sources_waits_for_the_flip_stage() {
    // The workspace collects Security Events and Sysmon through the legacy agent, not forwarded
    // events; the example sends all three through one Windows DCR.
    let ds: Vec<WorkspaceDataSource> = serde_json::from_value(serde_json::json!([
        {"name": "sec", "kind": "SecurityInsightsSecurityEventCollectionConfiguration", "properties": {"tier": "Recommended"}},
        {"name": "sysmon", "kind": "WindowsEvent", "properties": {"eventLogName": "Microsoft-Windows-Sysmon/Operational", "eventTypes": [{"eventType": "Error"}]}}
    ]))
    .unwrap();
    let legacy = LegacyConfig::from_data_sources(&ds).unwrap();
    assert!(legacy.enables(DataSourceType::WindowsSecurityEvents));
    assert!(!legacy.enables(DataSourceType::WindowsForwardedEvents));
    // app-win-01 (medium wave) has AMA installed and nothing associated yet.
    let key = inventory()
        .iter()
        .find(|m| m.name == "app-win-01")
        .unwrap()
        .id
        .to_ascii_lowercase();
    let states = HashMap::from([(
        key.clone(),
        MachineState {
            ama_installed: true,
            ..MachineState::default()
        },
    )]);
    let out = planned(
        BASE,
        &legacy,
        &states,
        &all_gates_open(),
        "2026-11-24T21:00:00Z",
    );
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    let d = out.machines.iter().find(|d| d.key == key).unwrap();
    assert!(d.may_proceed, "{d:#?}");
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, MachineAction::Associate { .. })),
        "no association before the flip stage: {:?}",
        d.actions
    );
    let forwarded = d
        .assignments
        .iter()
        .find(|a| a.ds_type == DataSourceType::WindowsForwardedEvents)
        .unwrap();
    assert!(
        forwarded
            .unservable
            .is_some_and(|why| why.contains("flip stage")),
        "{forwarded:?}"
    );
}
