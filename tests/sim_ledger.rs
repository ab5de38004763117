//! Ledger acceptance, driven through the simulator's HTTP API with the real paths and bodies:
//! duplicates when both agents send, gaps when the legacy agent goes before AMA is associated, and the
//! workspace-wide effect of the Security Events tier `None`.

use std::time::Duration;

use ama_migrator::catalog::DataSourceType;
use ama_migrator::sim::{Agent, Scenario, SimHandle, Simulator};
use serde_json::{Value, json};

const CMP: &str = "api-version=2024-11-01";

async fn start() -> SimHandle {
    let scenario = Scenario {
        machines: 80,
        time_scale: 0.0,
        ..Scenario::default()
    };
    Simulator::start(scenario, "127.0.0.1:0").await.unwrap()
}

/// A running Windows VM in scope with only the MMA extension, a usable identity and no DCRA.
fn legacy_only_windows_vm(sim: &SimHandle) -> (String, String) {
    let snap = sim.snapshot();
    let m = snap["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["kind"] == "AzureVM"
                && m["os"] == "Windows"
                && m["running"] == true
                && m["outOfScope"] == false
                && m["identityUsable"] == true
                && m["dcras"].as_array().unwrap().is_empty()
                && m["inGuestLegacy"].as_array().unwrap().is_empty()
                && m["extensions"].as_array().unwrap().len() == 1
                && m["extensions"][0]["type"] == "MicrosoftMonitoringAgent"
        })
        .expect("scenario has a legacy-only Windows VM");
    (
        m["id"].as_str().unwrap().to_string(),
        m["name"].as_str().unwrap().to_string(),
    )
}

async fn put(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.put(url).json(&body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn install_ama_and_associate(sim: &SimHandle, c: &reqwest::Client, vm: &str) {
    let base = sim.base_url();
    let (s, body) = put(c, format!("{base}{vm}/extensions/AzureMonitorWindowsAgent?{CMP}"), json!({
        "location": "westeurope",
        "properties": {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent", "typeHandlerVersion": "1.0", "autoUpgradeMinorVersion": true, "enableAutomaticUpgrade": true}
    })).await;
    assert_eq!(s, 201, "{body}");
    sim.advance(Duration::from_secs(200));
    let ws = sim.workspace_resource_id();
    let sub = ws.split('/').nth(2).unwrap().to_string();
    let dcr = format!(
        "/subscriptions/{sub}/resourceGroups/rg-sentinel/providers/Microsoft.Insights/dataCollectionRules/dcr-security-events"
    );
    let (s, body) = put(c, format!("{base}{dcr}?api-version=2023-03-11"), json!({
        "location": "westeurope", "kind": "Windows",
        "properties": {
            "dataSources": {"windowsEventLogs": [{"name": "eventLogsDataSource", "streams": ["Microsoft-SecurityEvent"], "xPathQueries": ["Security!*[System[(EventID=4624) or (EventID=4625)]]"]}]},
            "destinations": {"logAnalytics": [{"name": "la", "workspaceResourceId": ws}]},
            "dataFlows": [{"streams": ["Microsoft-SecurityEvent"], "destinations": ["la"]}]
        }
    })).await;
    assert!(s == 200 || s == 201, "{s} {body}");
    let (s, body) = put(c, format!("{base}{vm}/providers/Microsoft.Insights/dataCollectionRuleAssociations/secevents?api-version=2023-03-11"), json!({
        "properties": {"dataCollectionRuleId": dcr}
    })).await;
    assert_eq!(s, 201, "{body}");
}

async fn la_query(sim: &SimHandle, c: &reqwest::Client, q: &str) -> Value {
    let r = c
        .post(format!(
            "{}/v1/workspaces/{}/query",
            sim.base_url(),
            sim.workspace_customer_id()
        ))
        .json(&json!({"query": q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn both_agents_on_the_same_source_count_duplicate_minutes() {
    let sim = start().await;
    let c = reqwest::Client::new();
    let (vm, name) = legacy_only_windows_vm(&sim);
    sim.advance(Duration::from_secs(600));
    install_ama_and_associate(&sim, &c, &vm).await;
    sim.advance(Duration::from_secs(600));
    let pairs = sim.ledger_pairs(Some(&vm), Some(DataSourceType::WindowsSecurityEvents));
    let p = &pairs[0];
    assert!(p.wanted);
    assert_eq!(p.senders, vec![Agent::Legacy, Agent::Ama]);
    assert_eq!(p.counts.duplicate_minutes, 10, "{p:?}");
    assert_eq!(p.counts.gap_minutes, 0);
    // Event logs are not in the new DCR: still one sender.
    let ev = &sim.ledger_pairs(Some(&vm), Some(DataSourceType::WindowsEventLogs))[0];
    assert_eq!(ev.counts.duplicate_minutes, 0);
    assert!(sim.ledger().totals.pairs_with_duplicates >= 1);
    // The workspace shows the doubled rows, and both agents' heartbeats.
    let t = la_query(
        &sim,
        &c,
        &format!("SecurityEvent | where Computer == '{name}' and TimeGenerated > ago(10m) | count"),
    )
    .await;
    assert_eq!(t["tables"][0]["rows"], json!([[20]]), "{t}");
    let t = la_query(
        &sim,
        &c,
        &format!("Heartbeat | where Computer == '{name}' | summarize count() by Category"),
    )
    .await;
    let cats: Vec<&str> = t["tables"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(cats, vec!["Azure Monitor Agent", "Direct Agent"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn removing_legacy_before_ama_is_associated_counts_gap_minutes() {
    let sim = start().await;
    let c = reqwest::Client::new();
    let (vm, _) = legacy_only_windows_vm(&sim);
    let base = sim.base_url();
    let r = c
        .delete(format!(
            "{base}{vm}/extensions/MicrosoftMonitoringAgent?{CMP}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    sim.advance(Duration::from_secs(90 + 15 * 60));
    let p = &sim.ledger_pairs(Some(&vm), Some(DataSourceType::WindowsSecurityEvents))[0];
    assert!(p.senders.is_empty());
    assert_eq!(p.counts.gap_minutes, 15, "{p:?}");
    assert_eq!(p.counts.duplicate_minutes, 0);
    // AMA closes the gap once associated; gap minutes stop growing.
    install_ama_and_associate(&sim, &c, &vm).await;
    let before = sim.ledger_pairs(Some(&vm), Some(DataSourceType::WindowsSecurityEvents))[0]
        .counts
        .gap_minutes;
    sim.advance(Duration::from_secs(600));
    let p = &sim.ledger_pairs(Some(&vm), Some(DataSourceType::WindowsSecurityEvents))[0];
    assert_eq!(p.senders, vec![Agent::Ama]);
    assert_eq!(p.counts.gap_minutes, before);
    assert!(p.counts.gap_minutes >= 15);
    sim.shutdown().await;
}

#[tokio::test]
async fn security_events_tier_none_stops_legacy_for_every_machine_including_out_of_scope() {
    let sim = start().await;
    let c = reqwest::Client::new();
    sim.advance(Duration::from_secs(300));
    let legacy_before: Vec<_> = sim
        .ledger_pairs(None, Some(DataSourceType::WindowsSecurityEvents))
        .into_iter()
        .filter(|p| p.senders.contains(&Agent::Legacy))
        .collect();
    assert!(
        legacy_before
            .iter()
            .any(|p| p.out_of_scope && p.resource_id.is_empty()),
        "an on-premises sender"
    );
    assert!(
        legacy_before
            .iter()
            .any(|p| p.out_of_scope && !p.resource_id.is_empty()),
        "a sender in another subscription"
    );
    let ds = format!(
        "{}/dataSources/SecurityInsightsSecurityEventCollectionConfiguration?api-version=2025-02-01",
        sim.workspace_resource_id()
    );
    let (s, body) = put(
        &c,
        format!("{}{ds}", sim.base_url()),
        json!({
            "kind": "SecurityInsightsSecurityEventCollectionConfiguration",
            "properties": {"tier": "None", "tierSetMethod": "Custom"}
        }),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    sim.advance(Duration::from_secs(600));
    let after = sim.ledger_pairs(None, Some(DataSourceType::WindowsSecurityEvents));
    assert!(
        after.iter().all(|p| !p.senders.contains(&Agent::Legacy)),
        "no legacy sender remains"
    );
    for p in &legacy_before {
        let now = after.iter().find(|a| a.machine == p.machine).unwrap();
        if now.senders.is_empty() {
            assert_eq!(now.counts.gap_minutes, 10, "{now:?}");
        }
    }
    // Other legacy sources keep flowing: the tier governs Security Events only.
    assert!(
        sim.ledger_pairs(None, Some(DataSourceType::WindowsEventLogs))
            .iter()
            .any(|p| p.senders.contains(&Agent::Legacy))
    );
    let t = la_query(
        &sim,
        &c,
        "SecurityEvent | where TimeGenerated > ago(10m) | summarize count() by _ResourceId",
    )
    .await;
    let ama_only = after
        .iter()
        .filter(|p| p.senders == vec![Agent::Ama])
        .count();
    assert_eq!(
        t["tables"][0]["rows"].as_array().unwrap().len(),
        ama_only,
        "{t}"
    );
    sim.shutdown().await;
}
