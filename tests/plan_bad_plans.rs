//! Bad plans: each produces a specific error naming the field and the fix.

use std::collections::HashMap;

use ama_migrator::api::load::{PlanLoadError, load_plan};
use ama_migrator::api::plan::Scope;
use ama_migrator::catalog::LegacyConfig;
use ama_migrator::inventory::{InventoryMachine, ResourceGraphResponse};
use ama_migrator::plan::{OtherPlan, PlanErrorKind, PlanInput, PlanOutcome, PlanProgress, plan};

const BASE: &str = include_str!("../examples/plan.yaml");

fn inventory() -> Vec<InventoryMachine> {
    let r: ResourceGraphResponse<InventoryMachine> =
        serde_json::from_str(include_str!("../examples/inventory.json")).unwrap();
    r.data
}

fn run(yaml: &str, others: &[OtherPlan]) -> PlanOutcome {
    run_with(yaml, others, &LegacyConfig::default())
}

fn run_with(yaml: &str, others: &[OtherPlan], legacy: &LegacyConfig) -> PlanOutcome {
    plan_parsed(load_plan(yaml).unwrap(), others, legacy)
}

/// The planner over a plan that skipped the schema check (as one stored by an older version
/// would): its own validation refuses the same mistakes, by the same paths.
fn run_unchecked(yaml: &str) -> PlanOutcome {
    let p: ama_migrator::api::MigrationPlan = serde_saphyr::from_str(yaml).unwrap();
    plan_parsed(p, &[], &LegacyConfig::default())
}

fn plan_parsed(
    p: ama_migrator::api::MigrationPlan,
    others: &[OtherPlan],
    legacy: &LegacyConfig,
) -> PlanOutcome {
    let inv = inventory();
    let states = HashMap::new();
    let progress = PlanProgress::default();
    plan(&PlanInput {
        plan_name: "contoso-sentinel",
        spec: &p.spec,
        inventory: &inv,
        heartbeat: &[],
        legacy,
        states: &states,
        progress: &progress,
        other_plans: others,
        now: "2026-11-25T22:00:00Z".parse().unwrap(),
    })
}

fn expect<'a>(
    out: &'a PlanOutcome,
    kind: PlanErrorKind,
    field: &str,
    fix_has: &str,
) -> &'a ama_migrator::plan::PlanError {
    let e = out
        .errors
        .iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} error in {:#?}", out.errors));
    assert!(e.field.starts_with(field), "{e}");
    assert!(e.fix.contains(fix_has), "{e}");
    assert!(out.refused());
    assert!(
        out.machines.iter().all(|m| m.actions.is_empty()),
        "a refused plan must not act"
    );
    e
}

#[test]
fn the_example_is_valid() {
    let out = run(BASE, &[]);
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
}

#[test]
fn ama_for_an_unsupported_source() {
    let y = BASE.replace(
        "type: WindowsFirewallLogs\n      agent: Legacy",
        "type: WindowsFirewallLogs\n      agent: AMA",
    );
    let out = run(&y, &[]);
    expect(
        &out,
        PlanErrorKind::AmaUnsupportedSource,
        "spec.dataSources[3].agent",
        "agent: Legacy",
    );
    // An override lifts it.
    let y2 = y.replace("  rollout:\n", "  catalogOverrides:\n    - {type: WindowsFirewallLogs, amaSupport: CollectionOnly}\n  rollout:\n");
    let out = run(&y2, &[]);
    assert!(
        !out.errors
            .iter()
            .any(|e| e.kind == PlanErrorKind::AmaUnsupportedSource),
        "{:#?}",
        out.errors
    );
}

#[test]
fn an_unknown_data_source_type() {
    let y = BASE.replace("type: WindowsSysmon", "type: WindowsSysmonLogs");
    match load_plan(&y) {
        Err(e @ PlanLoadError::UnknownDataSourceType { .. }) => {
            let s = e.to_string();
            assert!(s.contains("spec.dataSources[2].type"), "{s}");
            assert!(
                s.contains("WindowsSysmon,") || s.contains("WindowsSysmon"),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
    let y = BASE.replace(
        "  rollout:\n",
        "  catalogOverrides:\n    - {type: Nope, amaSupport: Connector}\n  rollout:\n",
    );
    expect(
        &run(&y, &[]),
        PlanErrorKind::UnknownDataSourceType,
        "spec.catalogOverrides[0].type",
        "override",
    );
}

#[test]
fn two_plans_claiming_one_machine() {
    let other = OtherPlan {
        name: "team-b".into(),
        workspace:
            "/subscriptions/x/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w"
                .into(),
        scope: Scope {
            resource_groups: vec![
                "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app".into(),
            ],
            ..Scope::default()
        },
    };
    let out = run(BASE, &[other]);
    let e = expect(
        &out,
        PlanErrorKind::MachineClaimedTwice,
        "spec.scope",
        "excludes",
    );
    assert!(
        e.problem.contains("app-win-01") && e.problem.contains("team-b"),
        "{e}"
    );
}

#[test]
fn an_empty_wave() {
    let y = BASE.replace("count: 2", "count: 0");
    assert!(
        schema_error(&y).contains("spec.rollout.waves[0].count: is 0; the smallest allowed is 1")
    );
    expect(
        &run_unchecked(&y),
        PlanErrorKind::EmptyWave,
        "spec.rollout.waves[0].count",
        "at least 1",
    );
}

#[test]
fn an_unreachable_wave() {
    // `low` has no size, so a later wave with maxRisk Low can never get a machine.
    let y = BASE.replace("      - name: medium\n        maxRisk: Medium", "      - name: late-low\n        maxRisk: Low\n      - name: medium\n        maxRisk: Medium");
    expect(
        &run(&y, &[]),
        PlanErrorKind::UnreachableWave,
        "spec.rollout.waves[2]",
        "count or percent",
    );
}

#[test]
fn machines_no_wave_reaches() {
    let y = BASE.replace(
        "      - name: high\n        maxRisk: High",
        "      - name: high\n        maxRisk: Medium",
    );
    let out = run(&y, &[]);
    // waves[3] is unreachable too, and the High machines fall in no wave.
    expect(
        &out,
        PlanErrorKind::MachinesWithoutWave,
        "spec.rollout.waves",
        "maxRisk: High",
    );
}

#[test]
fn a_malformed_resource_id() {
    let y = BASE.replace(
        "workspace: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.OperationalInsights/workspaces/law-sentinel-prod",
        "workspace: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.OperationalInsights/workspaces",
    );
    assert!(schema_error(&y).contains("spec.workspace: \"/subscriptions/"));
    expect(
        &run_unchecked(&y),
        PlanErrorKind::MalformedResourceId,
        "spec.workspace",
        "resource ID",
    );
    let y = BASE.replace(
        "subscriptions: [\"",
        "resourceGroups: [\"rg-app\"]\n    subscriptions: [\"",
    );
    expect(
        &run(&y, &[]),
        PlanErrorKind::MalformedResourceId,
        "spec.scope.resourceGroups[0]",
        "/subscriptions/",
    );
}

#[test]
fn a_test_workspace_in_another_region() {
    let y = BASE.replacen(
        "    location: westeurope\n  scope",
        "    location: northeurope\n  scope",
        1,
    );
    let out = run(&y, &[]);
    expect(
        &out,
        PlanErrorKind::TestWorkspaceRegion,
        "spec.testWorkspace.location",
        "westeurope",
    );
}

#[test]
fn a_window_beyond_its_bound_names_machines_and_fix() {
    let y = BASE.replace("maxOverlap: 1h", "maxOverlap: 10m");
    let out = run(&y, &[]);
    expect(
        &out,
        PlanErrorKind::WindowOutOfBounds,
        "spec.rollout.cutover.maxOverlap",
        "maxOverlap",
    );
    let y = BASE.replace("  testWorkspace:\n    resourceId: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.OperationalInsights/workspaces/law-sentinel-poc\n    location: westeurope\n", "");
    let out = run(&y, &[]);
    expect(
        &out,
        PlanErrorKind::WindowOutOfBounds,
        "spec.rollout.cutover.maxOverlap",
        "testWorkspace",
    );
}

#[test]
fn a_bad_duration() {
    // Not a duration at all: refused as the CRD's schema refuses it, by its path.
    let y = BASE.replace("soak: 4h", "soak: 4 hours");
    let text = schema_error(&y);
    assert!(
        text.contains("spec.rollout.waves[1].soak: \"4 hours\" does not match the pattern"),
        "{text}"
    );
    // A duration the pattern allows but no plan can mean: refused by the planner, by its path
    // (it once panicked in the window arithmetic).
    for huge in ["18446744073709551615s", "400d"] {
        let y = BASE.replace("soak: 24h", &format!("soak: {huge}"));
        let out = run(&y, &[]);
        let e = expect(
            &out,
            PlanErrorKind::BadDuration,
            "spec.rollout.waves[0].soak",
            "30m",
        );
        assert!(e.to_string().contains("longer than 366d"), "{e}");
    }
}

/// The load error of a plan that breaks the CRD's schema, as text.
fn schema_error(yaml: &str) -> String {
    match load_plan(yaml) {
        Err(e @ PlanLoadError::Schema(_)) => e.to_string(),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[test]
fn misspelled_and_unknown_fields_are_refused_with_their_path() {
    let y = BASE.replace("maxParallel: 25", "maxParalel: 25");
    let text = schema_error(&y);
    assert!(
        text.contains(
            "spec.rollout.maxParalel: unknown field \"maxParalel\"; did you mean \"maxParallel\"?"
        ),
        "{text}"
    );
    let y = format!("{BASE}\nextra: true\n");
    assert!(schema_error(&y).contains("extra: unknown field"));
}

#[test]
fn the_plan_command_refuses_a_misspelled_plan_with_exit_1_and_the_path() {
    let dir = std::env::temp_dir().join(format!("ama-bad-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plan.yaml");
    std::fs::write(&path, BASE.replace("maxParallel: 25", "maxparallel: 25")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .args(["plan", "--plan"])
        .arg(&path)
        .arg("--inventory")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/inventory.json"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string())
            && stderr.contains("spec.rollout.maxparallel: unknown field")
            && stderr.contains("did you mean \"maxParallel\"?"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_maintenance_window_outside_the_clock_is_refused() {
    let y = BASE.replace("start: \"20:00\"", "start: \"25:00\"");
    let text = schema_error(&y);
    assert!(
        text.contains("spec.rollout.maintenanceWindows[0].start: \"25:00\" does not match"),
        "{text}"
    );
}

#[test]
fn a_plan_with_a_hundred_thousand_waves_is_refused_fast() {
    let mut doc: serde_json::Value = serde_saphyr::from_str(BASE).unwrap();
    let wave = doc["spec"]["rollout"]["waves"][1].clone();
    doc["spec"]["rollout"]["waves"] = serde_json::Value::Array(vec![wave; 100_000]);
    let started = std::time::Instant::now();
    let text = schema_error(&doc.to_string());
    assert!(
        text.contains("spec.rollout.waves: has 100000 items; at most 32 are allowed"),
        "{text}"
    );
    // A bound, not a timing assertion: the list past maxItems is not walked at all.
    eprintln!("100,000 waves refused in {:?}", started.elapsed());
}

#[test]
fn plan_command_on_the_examples_exits_zero() {
    let dir = env!("CARGO_MANIFEST_DIR");
    for output in ["table", "json", "yaml"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
            .args([
                "plan",
                "--plan",
                &format!("{dir}/examples/plan.yaml"),
                "--inventory",
                &format!("{dir}/examples/inventory.json"),
                "--heartbeat",
                &format!("{dir}/examples/heartbeat.json"),
                "--datasources",
                &format!("{dir}/examples/datasources.json"),
                "--output",
                output,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{output}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("canary"), "{stdout}");
        assert!(
            stdout.contains("ONPREM-FS-01"),
            "the on-prem Heartbeat sender must gate the flips: {stdout}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .args([
            "plan",
            "--plan",
            &format!("{dir}/examples/plan.yaml"),
            "--inventory",
            &format!("{dir}/examples/inventory.json"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("WAVES"));
}

#[test]
fn a_flip_that_would_stop_a_source_the_plan_keeps_on_legacy() {
    // The workspace collects syslog facility `user`, which carries Linux Sysmon too; the example
    // moves syslog to AMA and does not list Linux Sysmon.
    let ds: Vec<ama_migrator::azure::WorkspaceDataSource> = serde_json::from_value(serde_json::json!([
        {"name": "syslog-user", "kind": "LinuxSyslog", "properties": {"syslogName": "user", "syslogSeverities": [{"severity": "err"}]}},
        {"name": "syslog-auth", "kind": "LinuxSyslog", "properties": {"syslogName": "auth", "syslogSeverities": [{"severity": "err"}]}}
    ]))
    .unwrap();
    let legacy = LegacyConfig::from_data_sources(&ds).unwrap();
    let out = run_with(BASE, &[], &legacy);
    let e = expect(
        &out,
        PlanErrorKind::SharedLegacyStream,
        "spec.dataSources[4].type",
        "list LinuxSysmon in spec.dataSources with agent: AMA",
    );
    assert!(
        e.problem.contains("syslog-user") && !e.problem.contains("syslog-auth"),
        "{e}"
    );

    // Listed on AMA, it moves with syslog: accepted.
    let both = BASE.replace(
        "    - name: cef\n",
        "    - name: linux-sysmon\n      type: LinuxSysmon\n      agent: AMA\n    - name: cef\n",
    );
    assert_ne!(both, BASE);
    let out = run_with(&both, &[], &legacy);
    assert!(out.errors.is_empty(), "{:#?}", out.errors);

    // Kept on legacy: refused, naming where it is kept.
    let kept = both.replace(
        "      type: LinuxSysmon\n      agent: AMA",
        "      type: LinuxSysmon\n      agent: Legacy",
    );
    let out = run_with(&kept, &[], &legacy);
    let e = expect(
        &out,
        PlanErrorKind::SharedLegacyStream,
        "spec.dataSources[4].type",
        "agent: AMA",
    );
    assert!(
        e.problem
            .contains("keeps on the legacy agent (spec.dataSources[5])"),
        "{e}"
    );

    // No flip at all: nothing to refuse.
    let never = BASE.replace("      policy: AfterAllCovered", "      policy: Never");
    assert_ne!(never, BASE);
    let out = run_with(&never, &[], &legacy);
    assert!(
        !out.errors
            .iter()
            .any(|e| e.kind == PlanErrorKind::SharedLegacyStream),
        "{:#?}",
        out.errors
    );
}
