//! Plan a generated 100,000-machine inventory; print elapsed time and peak RSS (VmHWM).
//! Target (release): < 1 s and < 300 MB.

use std::collections::HashMap;
use std::time::Instant;

use ama_migrator::api::load::load_plan;
use ama_migrator::catalog::LegacyConfig;
use ama_migrator::inventory::{HeartbeatSender, InventoryMachine, ResourceGraphResponse};
use ama_migrator::plan::{PlanInput, PlanProgress, PlanReport, plan};

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    const N: usize = 100_000;
    let mut data = Vec::with_capacity(N);
    for i in 0..N {
        let linux = i % 3 == 0;
        let sub = format!("{:08}-0000-0000-0000-000000000000", i % 7);
        let ext_type = if linux {
            "OmsAgentForLinux"
        } else {
            "MicrosoftMonitoringAgent"
        };
        let ws = if i % 50 == 0 {
            "other"
        } else {
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        };
        let mut tags = std::collections::BTreeMap::new();
        tags.insert(
            "env".to_string(),
            if i % 5 == 0 { "dev" } else { "prod" }.to_string(),
        );
        if i % 97 == 0 {
            tags.insert("criticality".to_string(), "high".to_string());
        }
        data.push(InventoryMachine {
            id: format!("/subscriptions/{sub}/resourceGroups/rg-{}/providers/Microsoft.Compute/virtualMachines/vm-{i:06}", i % 40),
            name: format!("vm-{i:06}"),
            resource_type: "microsoft.compute/virtualmachines".into(),
            location: "westeurope".into(),
            resource_group: format!("rg-{}", i % 40),
            subscription_id: sub,
            tags,
            os_type: if linux { "Linux" } else { "Windows" }.into(),
            identity_type: if i % 4 == 0 { String::new() } else { "SystemAssigned".into() },
            power_state: if i % 211 == 0 { "PowerState/deallocated" } else { "PowerState/running" }.into(),
            status: String::new(),
            extensions: if i % 10 == 9 { Vec::new() } else {
                vec![serde_json::from_value(serde_json::json!({"name": ext_type, "publisher": "Microsoft.EnterpriseCloud.Monitoring", "type": ext_type, "provisioningState": "Succeeded", "workspaceId": ws})).unwrap()]
            },
        });
    }
    let inventory = ResourceGraphResponse {
        total_records: N as i64,
        count: N as i64,
        result_truncated: "false".into(),
        skip_token: None,
        data,
    };
    // Round-trip through JSON as the CLI would read it.
    let text = serde_json::to_string(&inventory).unwrap();
    drop(inventory);
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml"))
        .unwrap();
    let mut p = load_plan(&yaml).unwrap();
    p.spec.scope.subscriptions.clear();
    p.spec.scope.excludes.clear();
    p.spec.rollout.maintenance_windows.clear();
    p.spec.rollout.cutover.max_overlap = Some("2h".into());
    p.spec.rollout.max_parallel = 2000;
    let heartbeat = vec![HeartbeatSender {
        computer: "ONPREM-FS-01".into(),
        resource_id: None,
        category: "Direct Agent".into(),
        os: None,
    }];

    let start = Instant::now();
    let inv: ResourceGraphResponse<InventoryMachine> = serde_json::from_str(&text).unwrap();
    let parsed = start.elapsed();
    drop(text);
    let states = HashMap::new();
    let progress = PlanProgress::default();
    let legacy = LegacyConfig::default();
    let input = PlanInput {
        plan_name: "bench",
        spec: &p.spec,
        inventory: &inv.data,
        heartbeat: &heartbeat,
        legacy: &legacy,
        states: &states,
        progress: &progress,
        other_plans: &[],
        now: "2026-11-25T12:00:00Z".parse().unwrap(),
    };
    let t0 = Instant::now();
    let outcome = plan(&input);
    let planned = t0.elapsed();
    let report = PlanReport::build(&input, &outcome);
    let total = start.elapsed();
    println!(
        "plan_scale: {N} machines, {} in scope, {} waves, {} errors; parse {:.3}s, plan {:.3}s, total incl. report {:.3}s; peak RSS {:.1} MB (targets: < 1 s, < 300 MB)",
        outcome.machines.len(),
        report.waves.len(),
        outcome.errors.len(),
        parsed.as_secs_f64(),
        planned.as_secs_f64(),
        total.as_secs_f64(),
        peak_rss_mb().unwrap_or(f64::NAN)
    );
}
