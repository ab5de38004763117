//! Property tests: stepping through the planner's decisions on random fleets and plans (a machine
//! completes a step, a gate passes, a flip happens, a machine fails) never yields a steady state
//! with two senders or no sender for a wanted (machine, data source), never removes a legacy
//! agent that is still needed, and never flips a legacy stream with an uncovered sender.

use std::collections::HashMap;

use ama_migrator::api::load::load_plan;
use ama_migrator::api::plan::{Agent, CutoverPolicy, MigrationPlanSpec};
use ama_migrator::azure::WorkspaceDataSource;
use ama_migrator::catalog::{DataSourceType, LegacyConfig, OsFamily};
use ama_migrator::inventory::{HeartbeatSender, InventoryMachine};
use ama_migrator::plan::{
    MachineAction, MachineState, PlanAction, PlanInput, PlanProgress, WaveProgress, plan,
};
use proptest::prelude::*;

const WS: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/prod";

#[derive(Clone, Debug)]
struct Gen {
    os_linux: bool,
    legacy: u8, // 0 none, 1 ours, 2 other workspace, 3 both (multi-homed)
    ama: bool,
    identity: bool,
    risk_low: bool,
}

fn machine(i: usize, g: &Gen) -> InventoryMachine {
    let mut ext = Vec::new();
    let t = if g.os_linux {
        "OmsAgentForLinux"
    } else {
        "MicrosoftMonitoringAgent"
    };
    let mut add = |ws: &str| {
        ext.push(serde_json::json!({"name": t, "publisher": "Microsoft.EnterpriseCloud.Monitoring", "type": t, "provisioningState": "Succeeded", "workspaceId": ws}))
    };
    match g.legacy {
        1 => add("ours"),
        2 => add("other"),
        3 => {
            add("ours");
            add("other")
        }
        _ => {}
    }
    if g.ama {
        let at = if g.os_linux {
            "AzureMonitorLinuxAgent"
        } else {
            "AzureMonitorWindowsAgent"
        };
        ext.push(serde_json::json!({"name": at, "publisher": "Microsoft.Azure.Monitor", "type": at, "provisioningState": "Succeeded", "workspaceId": ""}));
    }
    serde_json::from_value(serde_json::json!({
        "id": format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/m{i}"),
        "name": format!("m{i}"), "type": "microsoft.compute/virtualmachines", "location": "westeurope",
        "resourceGroup": "rg", "subscriptionId": "s",
        "tags": {"env": if g.risk_low { "dev" } else { "prod" }},
        "osType": if g.os_linux { "Linux" } else { "Windows" },
        "identityType": if g.identity { "SystemAssigned" } else { "" },
        "powerState": "PowerState/running", "extensions": ext
    }))
    .unwrap()
}

fn spec(
    policy_no_dup: bool,
    test_ws: bool,
    firewall_legacy: bool,
    accept_onprem: bool,
) -> MigrationPlanSpec {
    let y = format!(
        r#"apiVersion: amamigrator.io/v1alpha1
kind: MigrationPlan
metadata: {{name: p}}
spec:
  workspace: {WS}
  location: westeurope
  workspaceCustomerId: ours
{test}
  dataSources:
    - {{name: sec, type: WindowsSecurityEvents, agent: AMA}}
    - {{name: sysmon, type: WindowsSysmon, agent: AMA}}
{fw}
    - {{name: syslog, type: LinuxSyslog, agent: AMA}}
    - {{name: cef, type: LinuxCef, agent: AMA}}
  rollout:
    riskRules: [{{match: {{tags: {{env: dev}}}}, risk: Low}}]
    waves:
      - {{name: canary, maxRisk: Low, count: 1, canary: true, gates: {{manualApproval: true}}}}
      - {{name: rest, maxRisk: High}}
    maxParallel: 3
    cutover: {{policy: {policy}}}
  legacy:
    flip:
      acceptedUncoveredSenders: {accept}
"#,
        test = if test_ws {
            "  testWorkspace: {resourceId: /subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/poc, location: westeurope}"
        } else {
            ""
        },
        fw = if firewall_legacy {
            "    - {name: fw, type: WindowsFirewallLogs, agent: Legacy}"
        } else {
            ""
        },
        policy = if policy_no_dup {
            "PreferNoDuplicate"
        } else {
            "PreferNoGap"
        },
        accept = if accept_onprem {
            "[{computer: ONPREM, reason: decommissioned}]"
        } else {
            "[]"
        },
    );
    load_plan(&y).unwrap().spec
}

fn legacy_config() -> LegacyConfig {
    let ds: Vec<WorkspaceDataSource> = serde_json::from_value(serde_json::json!([
        {"name": "sec", "kind": "SecurityInsightsSecurityEventCollectionConfiguration", "properties": {"tier": "Recommended"}},
        {"name": "sysmon", "kind": "WindowsEvent", "properties": {"eventLogName": "Microsoft-Windows-Sysmon/Operational", "eventTypes": [{"eventType": "Error"}]}},
        {"name": "auth", "kind": "LinuxSyslog", "properties": {"syslogName": "auth", "syslogSeverities": [{"severity": "err"}]}}
    ]))
    .unwrap();
    LegacyConfig::from_data_sources(&ds).unwrap()
}

/// The oracle: does the legacy agent deliver `t` from machine `g` into the workspace now?
fn legacy_sends(
    g: &Gen,
    st: &MachineState,
    t: DataSourceType,
    legacy: &LegacyConfig,
    flipped: &ama_migrator::plan::TypeSet,
) -> bool {
    let reports_here = g.legacy == 1 || g.legacy == 3;
    if !reports_here || st.legacy_removed {
        return false;
    }
    let os = if g.os_linux {
        OsFamily::Linux
    } else {
        OsFamily::Windows
    };
    if t.os() != os {
        return false;
    }
    use ama_migrator::catalog::legacy::LegacyState;
    match legacy.state(t) {
        LegacyState::Enabled => !flipped.contains(t),
        LegacyState::NotInDataSources => true,
        LegacyState::Disabled => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn planner_keeps_one_agent_per_data_source(
        fleet in proptest::collection::vec((any::<bool>(), 0u8..4, any::<bool>(), any::<bool>(), any::<bool>()), 1..10),
        no_dup in any::<bool>(),
        test_ws in any::<bool>(),
        firewall_legacy in any::<bool>(),
        onprem in any::<bool>(),
        accept_onprem in any::<bool>(),
        choices in proptest::collection::vec(any::<u32>(), 300),
    ) {
        let gens: Vec<Gen> = fleet.iter().map(|&(os_linux, legacy, ama, identity, risk_low)| Gen { os_linux, legacy, ama, identity, risk_low }).collect();
        let inventory: Vec<InventoryMachine> = gens.iter().enumerate().map(|(i, g)| machine(i, g)).collect();
        let spec = spec(no_dup, test_ws, firewall_legacy, accept_onprem);
        let legacy = legacy_config();
        let heartbeat: Vec<HeartbeatSender> = if onprem {
            vec![HeartbeatSender { computer: "ONPREM".into(), resource_id: None, category: "Direct Agent".into(), os: Some(OsFamily::Windows) }]
        } else { Vec::new() };
        let mut states: HashMap<String, MachineState> = inventory.iter().zip(&gens).map(|(m, g)| {
            (m.id.to_ascii_lowercase(), MachineState { ama_installed: g.ama && g.identity, ..MachineState::default() })
        }).collect();
        let mut progress = PlanProgress { waves: vec![WaveProgress::default(); 2], ..PlanProgress::default() };
        let mut failed_once = false;
        for step in 0..300usize {
            let out = plan(&PlanInput {
                plan_name: "p", spec: &spec, inventory: &inventory, heartbeat: &heartbeat, legacy: &legacy,
                states: &states, progress: &progress, other_plans: &[], now: "2026-11-25T12:00:00Z".parse().unwrap(),
            });
            prop_assert!(!out.refused(), "{:?}", out.errors);
            let machine_actions: Vec<(usize, MachineAction)> = out.machines.iter().flat_map(|m| m.actions.iter().map(move |a| (m.index, *a))).collect();
            let steady = machine_actions.is_empty() && out.plan_actions.is_empty();
            if steady {
                for m in &out.machines {
                    let g = &gens[m.index];
                    let st = &states[&m.key];
                    for a in &m.assignments {
                        let l = legacy_sends(g, st, a.ds_type, &legacy, &progress.flipped);
                        let am = st.ama_installed && st.associated.contains(a.ds_type);
                        if let Some(why) = a.unservable {
                            prop_assert!(st.failed || !m.blocked.is_empty() || !st.ama_installed || !m.may_proceed || a.target == Agent::Legacy,
                                "unservable without cause on {}: {why}", m.key);
                            continue;
                        }
                        prop_assert!(u8::from(l) + u8::from(am) == 1,
                            "steady state with {} senders for ({}, {}) legacy={l} ama={am} lane={:?}", u8::from(l) + u8::from(am), m.key, a.ds_type, m.lane);
                    }
                }
            }
            let c = choices[step % choices.len()] as usize;
            // Events: run a pending action (most of the time), pass a gate, or fail a machine.
            let roll = c % 10;
            if roll == 0 && !failed_once && !machine_actions.is_empty() {
                let (idx, _) = machine_actions[c / 10 % machine_actions.len()];
                states.get_mut(&inventory[idx].id.to_ascii_lowercase()).unwrap().failed = true;
                failed_once = true;
                continue;
            }
            if !out.plan_actions.is_empty() && (roll < 4 || machine_actions.is_empty()) {
                let pa = out.plan_actions[c / 10 % out.plan_actions.len()];
                match pa {
                    PlanAction::Flip(t) => {
                        // Oracle: every legacy sender of t is covered (or ready under NoDup) or accepted.
                        for (i, g) in gens.iter().enumerate() {
                            let st = &states[&inventory[i].id.to_ascii_lowercase()];
                            if legacy_sends(g, st, t, &legacy, &progress.flipped) {
                                let covered = st.ama_installed && !st.failed && (st.associated.contains(t) || spec.rollout.cutover.policy == CutoverPolicy::PreferNoDuplicate);
                                prop_assert!(covered, "flip of {t} with uncovered sender m{i}");
                            }
                        }
                        if onprem && t.os() == OsFamily::Windows {
                            prop_assert!(accept_onprem, "flip of {t} with the uncovered on-prem sender");
                        }
                        progress.flipped.insert(t);
                    }
                    PlanAction::Restore(t) => progress.flipped.remove(t),
                }
                continue;
            }
            if !machine_actions.is_empty() {
                let (idx, a) = machine_actions[c / 10 % machine_actions.len()];
                let g = &gens[idx];
                let key = inventory[idx].id.to_ascii_lowercase();
                let st = states.get_mut(&key).unwrap();
                match a {
                    MachineAction::EnableIdentity => st.identity_enabled = true,
                    MachineAction::InstallAma => st.ama_installed = true,
                    MachineAction::Associate { ds, test: false } => st.associated.insert(ds),
                    MachineAction::Associate { ds, test: true } => st.test_associated.insert(ds),
                    MachineAction::Dissociate { ds, test: false } => st.associated.remove(ds),
                    MachineAction::Dissociate { ds, test: true } => st.test_associated.remove(ds),
                    MachineAction::RemoveLegacy => {
                        // Oracle: the legacy agent serves nothing else.
                        prop_assert!(g.legacy == 1, "removed a legacy agent that also serves another workspace (m{idx})");
                        let os = if g.os_linux { OsFamily::Linux } else { OsFamily::Windows };
                        prop_assert!(!(firewall_legacy && os == OsFamily::Windows), "removed the legacy agent from m{idx}, which still sends Firewall logs on Legacy");
                        st.legacy_removed = true;
                    }
                }
                continue;
            }
            // Nothing to do: pass the next gate that is not passed yet.
            if let Some(w) = out.waves.iter().position(|w| !w.gate_passed) {
                progress.waves[w].approved = true;
                progress.waves[w].finished_at = Some("2026-11-01T00:00:00Z".parse().unwrap());
                progress.waves[w].parity_ok = Some(true);
                if out.waves[w].gate_passed { break; }
            } else {
                break;
            }
        }
    }
}
