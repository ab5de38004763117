//! `ama-migrator status` on a state file the test builds: the JSON document and the table.

use std::path::PathBuf;
use std::process::Command;

use ama_migrator::api::conditions::{reasons, set_condition, status, types};
use ama_migrator::api::machine::{ArmErrorStatus, MachineStep, ObservedSenders};
use ama_migrator::api::plan::{Agent, ChangedLegacySetting, PlanPhase};
use ama_migrator::api::{MachineMigration, MigrationPlan};
use ama_migrator::catalog::DataSourceType;
use ama_migrator::local::{
    EventType, ObjectKey, OperationOutcome, StateStore, StoredEvent, resource_version,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ama-status-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + s).unwrap()
}

fn machine(name: &str, wave: &str) -> MachineMigration {
    serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MachineMigration",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "plan": "fleet",
            "machineId": format!("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"),
            "os": "Windows", "kind": "AzureVM", "wave": wave, "risk": "Low",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}]
        }
    }))
    .unwrap()
}

/// The plan's Blocked message: long (every sender named), shown whole by `status`.
const FLIP_MESSAGE: &str = "legacy flips wait for senders nothing covers; cover each (bring it into spec.scope so it gets AMA, or fix the in-scope machine) or accept losing that stream from it by naming it in spec.legacy.flip.acceptedUncoveredSenders: WindowsSecurityEvents (4 sender(s): /subscriptions/s9/resourcegroups/rg/providers/microsoft.compute/virtualmachines/outside-1, /subscriptions/s9/resourcegroups/rg/providers/microsoft.compute/virtualmachines/outside-2, onprem-dc-01, onprem-dc-02)";

/// A plan in wave-1 with 6 machines: 2 done, 1 installing (op in flight), 2 failed, 1 blocked.
fn build_state(path: &std::path::Path) {
    let store = StateStore::open(path).unwrap();
    let mut plan: MigrationPlan = serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MigrationPlan",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {
            "workspace": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws",
            "location": "westeurope",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}],
            "rollout": {"waves": [{"name": "canary", "maxRisk": "Low", "count": 2},
                                   {"name": "wave-1", "maxRisk": "High"}]}
        }
    }))
    .unwrap();
    plan = store.create(&plan).unwrap();
    let status = plan.status.get_or_insert_with(Default::default);
    status.phase = Some(PlanPhase::Progressing);
    status.current_wave = Some("wave-1".into());
    set_condition(
        &mut status.conditions,
        types::PROGRESSING,
        status::TRUE,
        reasons::WAVE_IN_PROGRESS,
        "migrating; current wave: wave-1",
        None,
        Time(ts(0)),
    );
    set_condition(
        &mut status.conditions,
        types::BLOCKED,
        status::TRUE,
        reasons::FLIP_WAITING_FOR_SENDERS,
        FLIP_MESSAGE,
        None,
        Time(ts(0)),
    );
    let plan = store.update(&plan, 1).unwrap();

    let with = |name: &str, wave: &str, step: MachineStep, agents: &str, senders: &[Agent]| {
        let mut m = machine(name, wave);
        let s = m.status.get_or_insert_with(Default::default);
        s.step = Some(step);
        s.agents = Some(agents.into());
        s.observed_senders = vec![ObservedSenders {
            name: "security".into(),
            senders: senders.to_vec(),
            observed_at: None,
        }];
        m
    };
    let mut machines = vec![
        with("vm-1", "canary", MachineStep::Done, "AMA", &[Agent::Ama]),
        with("vm-2", "canary", MachineStep::Done, "AMA", &[Agent::Ama]),
        with(
            "vm-3",
            "wave-1",
            MachineStep::InstallAma,
            "Legacy",
            &[Agent::Legacy],
        ),
    ];
    for name in ["vm-4", "vm-5"] {
        let mut m = with(
            name,
            "wave-1",
            MachineStep::Failed,
            "Legacy+AMA",
            &[Agent::Legacy, Agent::Ama],
        );
        m.status.as_mut().unwrap().last_error = Some(ArmErrorStatus {
            code: "VMExtensionProvisioningError".into(),
            message: "Multiple VMExtensions per handler not supported".into(),
        });
        machines.push(m);
    }
    let mut blocked = with(
        "vm-6",
        "wave-1",
        MachineStep::Blocked,
        "Legacy",
        &[Agent::Legacy],
    );
    set_condition(
        &mut blocked.status.as_mut().unwrap().conditions,
        types::BLOCKED,
        status::TRUE,
        reasons::MISSING_IDENTITY,
        "no managed identity; the plan requires an existing one",
        None,
        Time(ts(0)),
    );
    machines.push(blocked);

    store
        .transaction(|tx| {
            for m in &machines {
                tx.create(m)?;
            }
            let vm3 = &machines[2].spec.machine_id;
            let done = tx.begin_operation(vm3, "EnableIdentity", None, ts(1))?;
            tx.finish_operation(done, &OperationOutcome::Succeeded, ts(2))?;
            tx.begin_operation(vm3, "InstallAma", None, ts(3))?;
            let vm4 = &machines[3].spec.machine_id;
            let failed = tx.begin_operation(vm4, "InstallAma", None, ts(4))?;
            tx.finish_operation(
                failed,
                &OperationOutcome::Failed {
                    code: "VMExtensionProvisioningError".into(),
                    message: "failed".into(),
                },
                ts(5),
            )?;
            tx.record_legacy_change(
                "default",
                "fleet",
                &ChangedLegacySetting {
                    resource_id: "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/dataSources/SecurityEventCollectionConfiguration".into(),
                    kind: "SecurityEventCollectionConfiguration".into(),
                    data_source_type: DataSourceType::WindowsSecurityEvents,
                    previous_properties: r#"{"tier":"All"}"#.into(),
                    changed_at: Time(ts(6)),
                },
            )?;
            tx.record_event(&StoredEvent {
                object: ObjectKey::of(&machines[3]),
                event_type: EventType::Warning,
                reason: reasons::ARM_ERROR.into(),
                message: "VMExtensionProvisioningError after 3 attempts".into(),
                at: ts(7),
            })?;
            tx.record_event(&StoredEvent {
                object: ObjectKey::of(&plan),
                event_type: EventType::Normal,
                reason: reasons::WAVE_IN_PROGRESS.into(),
                message: "wave-1 started".into(),
                at: ts(8),
            })
        })
        .unwrap();
    assert_eq!(resource_version(&plan), Some(2));
}

fn status(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .arg("status")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn status_json_reports_the_tracker_per_plan() {
    let dir = temp_dir("json");
    let path = dir.join("state.db");
    build_state(&path);
    let (code, stdout, stderr) = status(&["--state", path.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["state"], path.display().to_string());
    let plan = &doc["plans"][0];
    assert_eq!(plan["name"], "fleet");
    assert_eq!(plan["phase"], "Progressing");
    assert_eq!(plan["current_wave"], "wave-1");
    assert_eq!(plan["legacy_settings_changed"], 1);
    assert_eq!(
        plan["conditions"],
        json!([
            {"type": "Progressing", "status": "True", "reason": "WaveInProgress",
             "message": "migrating; current wave: wave-1"},
            {"type": "Blocked", "status": "True", "reason": "LegacyFlipWaitingForSenders",
             "message": FLIP_MESSAGE}
        ])
    );
    let t = &plan["tracker"];
    assert_eq!(t["machines"], 6);
    assert_eq!(t["completed"], 2);
    assert_eq!(t["in_progress"], 1);
    assert_eq!(t["failed"], 2);
    assert_eq!(t["blocked"], 1);
    assert_eq!(
        t["agents"],
        json!({"legacy_only": 2, "ama_only": 2, "both": 2, "none": 0, "unobserved": 0})
    );
    assert_eq!(t["data_sources"]["security"]["on_target"], 2);
    assert_eq!(t["by_step"]["Failed"], 2);
    assert_eq!(t["by_wave"]["canary"]["done"], 2);
    assert_eq!(t["failures"][0]["code"], "VMExtensionProvisioningError");
    assert_eq!(t["failures"][0]["machines"], 2);
    assert_eq!(t["blocks"][0]["reason"], "MissingIdentity");
    assert_eq!(
        doc["operations"],
        json!({"total": 3, "succeeded": 1, "failed": 1, "abandoned": 0, "in_flight": 1})
    );
    assert_eq!(doc["in_flight_operations"][0]["action"], "InstallAma");
    assert_eq!(doc["recent_warnings"].as_array().unwrap().len(), 1);
    assert_eq!(doc["recent_warnings"][0]["reason"], "ArmError");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn status_table_is_the_default() {
    let dir = temp_dir("table");
    let path = dir.join("state.db");
    build_state(&path);
    let (code, stdout, stderr) = status(&["--state", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("Plan default/fleet  phase Progressing  wave wave-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Machines: 6  completed 2  in progress 1  pending 0  failed 2  blocked 1"),
        "{stdout}"
    );
    let squeeze = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(squeeze("machines"), "machines 2 2 2 0 0");
    assert_eq!(squeeze("security"), "security 6 0 2 2 2 2 0 0");
    assert!(squeeze("VMExtensionProvisioningError").contains("vm-4, vm-5"));
    assert!(squeeze("MissingIdentity").contains("vm-6"));
    assert!(stdout.contains("Legacy settings changed (restorable): 1"));
    // The conditions follow the plan line, each with its whole message.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[1], "Conditions:", "{stdout}");
    assert_eq!(
        squeeze("Progressing"),
        "Progressing True WaveInProgress migrating; current wave: wave-1"
    );
    let blocked = lines
        .iter()
        .find(|l| l.trim_start().starts_with("Blocked"))
        .unwrap_or_else(|| panic!("no Blocked line in\n{stdout}"));
    assert!(
        blocked.ends_with(&format!("LegacyFlipWaitingForSenders  {FLIP_MESSAGE}")),
        "{blocked}"
    );
    assert!(
        stdout.contains(
            "ARM operations: 3 journaled, 1 succeeded, 1 failed, 0 abandoned, 1 in flight"
        )
    );
    assert!(stdout.contains("in flight: InstallAma on /subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-3"));
    assert!(stdout.contains("ArmError: VMExtensionProvisioningError after 3 attempts"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn status_on_a_missing_or_foreign_file_fails_clearly() {
    let dir = temp_dir("bad");
    let missing = dir.join("absent.db");
    let (code, stdout, stderr) = status(&["--state", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("no state file at") && stderr.contains("absent.db"),
        "{stderr}"
    );
    assert!(!missing.exists(), "status created the state file");

    let text = dir.join("notes.txt");
    std::fs::write(&text, "x".repeat(4096)).unwrap();
    let (code, _, stderr) = status(&["--state", text.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("is not an ama-migrator state file"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
