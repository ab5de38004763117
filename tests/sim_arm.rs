//! The simulator over HTTP: extension LROs (VM and Arc), api-version checks, throttling headers and 429,
//! faults, Resource Graph paging and Log Analytics errors.

use std::time::Duration;

use ama_migrator::inventory::{INVENTORY_QUERY, InventoryMachine, ResourceGraphResponse};
use ama_migrator::sim::{BucketConfig, Fault, Scenario, SimHandle, Simulator, ThrottleConfig};
use serde_json::{Value, json};

const CMP: &str = "api-version=2024-11-01";
const HC: &str = "api-version=2024-07-10";

fn scenario() -> Scenario {
    Scenario {
        machines: 40,
        time_scale: 0.0,
        ..Scenario::default()
    }
}

async fn start(s: Scenario) -> SimHandle {
    Simulator::start(s, "127.0.0.1:0").await.unwrap()
}

/// First running, in-scope machine of `kind` ("AzureVM" / "ArcServer") and OS.
fn machine(sim: &SimHandle, kind: &str, os: &str) -> String {
    let snap = sim.snapshot();
    snap["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["kind"] == kind && m["os"] == os && m["running"] == true && m["outOfScope"] == false
        })
        .map(|m| m["id"].as_str().unwrap().to_string())
        .expect("machine of that kind")
}

fn ama_body() -> Value {
    json!({"location": "westeurope", "properties": {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent", "typeHandlerVersion": "1.0", "autoUpgradeMinorVersion": true, "protectedSettings": {"secret": "hunter2"}}})
}

struct R {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> R {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    R {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

fn h<'a>(r: &'a R, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn vm_extension_install_and_delete_progress_through_their_lros() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let vm = machine(&sim, "AzureVM", "Windows");
    let url = format!("{}{vm}/extensions/ama?{CMP}", sim.base_url());
    let put = send(c.put(&url).json(&ama_body())).await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(put.body["properties"]["provisioningState"], "Creating");
    assert!(
        put.body["properties"].get("protectedSettings").is_none(),
        "secrets are never echoed"
    );
    let status_url = h(&put, "azure-asyncoperation").to_string();
    assert!(
        status_url.contains("/providers/Microsoft.Compute/locations/") && status_url.contains(CMP),
        "{status_url}"
    );
    assert!(h(&put, "retry-after").parse::<u64>().unwrap() >= 1);
    let poll = send(c.get(&status_url)).await;
    assert_eq!(poll.body["status"], "InProgress");
    sim.advance(Duration::from_secs(60));
    assert_eq!(
        send(c.get(&url)).await.body["properties"]["provisioningState"],
        "Creating"
    );
    sim.advance(Duration::from_secs(120));
    let poll = send(c.get(&status_url)).await;
    assert_eq!(poll.body["status"], "Succeeded", "{}", poll.body);
    let got = send(c.get(&url)).await;
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        got.body["properties"]["instanceView"]["statuses"][0]["code"],
        "ProvisioningState/succeeded"
    );
    let list = send(c.get(format!("{}{vm}/extensions?{CMP}", sim.base_url()))).await;
    assert!(
        list.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "ama")
    );
    // Delete: 202 with tracking headers; the extension is Deleting, then gone; a second delete is 204.
    let del = send(c.delete(&url)).await;
    assert_eq!(del.status, 202);
    let loc = h(&del, "location").to_string();
    assert!(!h(&del, "azure-asyncoperation").is_empty() && !h(&del, "retry-after").is_empty());
    assert_eq!(
        send(c.get(&url)).await.body["properties"]["provisioningState"],
        "Deleting"
    );
    assert_eq!(send(c.get(&loc)).await.status, 202);
    let again = send(c.put(&url).json(&ama_body())).await;
    assert_eq!(again.status, 409, "PUT while deleting: {}", again.body);
    assert!(
        again.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("marked for deletion")
    );
    sim.advance(Duration::from_secs(100));
    assert_eq!(send(c.get(&loc)).await.status, 204);
    assert_eq!(send(c.get(&url)).await.status, 404);
    assert_eq!(send(c.delete(&url)).await.status, 204);
    // The request log keeps bodies, statuses and never the secret.
    let log = sim.request_log();
    assert!(log.iter().any(|r| r.method == "PUT" && r.status == 201));
    assert!(!serde_json::to_string(&log).unwrap().contains("hunter2"));
    let jsonl = c
        .get(format!("{}/_sim/requests?format=jsonl", sim.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), log.len());
    assert_eq!(lines[0]["method"], "PUT");
    sim.shutdown().await;
}

#[tokio::test]
async fn arc_extensions_report_a_single_instance_view_status() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let arc = machine(&sim, "ArcServer", "Windows");
    let url = format!(
        "{}{arc}/extensions/AzureMonitorWindowsAgent?{HC}",
        sim.base_url()
    );
    let put = send(c.put(&url).json(&ama_body())).await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert!(!h(&put, "location").is_empty() && !h(&put, "azure-asyncoperation").is_empty());
    sim.advance(Duration::from_secs(200));
    let got = send(c.get(&url)).await;
    assert_eq!(
        got.body["type"],
        "Microsoft.HybridCompute/machines/extensions"
    );
    assert_eq!(
        got.body["properties"]["instanceView"]["status"]["level"],
        "Information"
    );
    let m = send(c.get(format!("{}{arc}?{HC}", sim.base_url()))).await;
    assert_eq!(m.body["properties"]["status"], "Connected");
    assert_eq!(m.body["identity"]["type"], "SystemAssigned");
    // Arc paths want the HybridCompute api-version.
    let wrong = send(c.get(format!("{}{arc}?{CMP}", sim.base_url()))).await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.body["error"]["code"], "InvalidApiVersionParameter");
    sim.shutdown().await;
}

#[tokio::test]
async fn vm_identity_patch_is_an_lro_and_keeps_user_assigned_identities() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let vm = machine(&sim, "AzureVM", "Linux");
    let url = format!("{}{vm}?{CMP}", sim.base_url());
    let uami = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1";
    let r = send(c.patch(&url).json(&json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {uami: {}}}}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert!(!h(&r, "azure-asyncoperation").is_empty());
    sim.advance(Duration::from_secs(60));
    let got = send(c.get(format!("{url}&$expand=instanceView"))).await;
    assert_eq!(got.body["identity"]["type"], "SystemAssigned, UserAssigned");
    assert!(
        got.body["identity"]["userAssignedIdentities"]
            .get(uami)
            .is_some()
    );
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        got.body["properties"]["instanceView"]["statuses"][1]["code"],
        "PowerState/running"
    );
    let bad = send(
        c.patch(&url)
            .json(&json!({"identity": {"type": "Sometimes"}})),
    )
    .await;
    assert_eq!(bad.status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn throttling_reports_remaining_and_answers_429_with_retry_after() {
    let s = Scenario {
        throttle: ThrottleConfig {
            reads: BucketConfig {
                size: 3.0,
                refill_per_sec: 0.01,
            },
            ..ThrottleConfig::default()
        },
        ..scenario()
    };
    let sim = start(s).await;
    let c = reqwest::Client::new();
    let vm = machine(&sim, "AzureVM", "Windows");
    let url = format!("{}{vm}?{CMP}", sim.base_url());
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = send(c.get(&url)).await;
        assert_eq!(r.status, 200);
        remaining.push(h(&r, "x-ms-ratelimit-remaining-subscription-reads").to_string());
    }
    assert_eq!(remaining, vec!["2", "1", "0"]);
    let r = send(c.get(&url)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"]["code"], "SubscriptionRequestsThrottled");
    assert!(h(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    // Writes draw from their own bucket.
    let w = send(
        c.put(format!("{}{vm}/extensions/x?{CMP}", sim.base_url()))
            .json(&ama_body()),
    )
    .await;
    assert_eq!(w.status, 201);
    assert!(!h(&w, "x-ms-ratelimit-remaining-subscription-writes").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn compute_update_bucket_throttles_extension_writes() {
    let s = Scenario {
        throttle: ThrottleConfig {
            compute_update: BucketConfig {
                size: 1.0,
                refill_per_sec: 0.001,
            },
            ..ThrottleConfig::default()
        },
        ..scenario()
    };
    let sim = start(s).await;
    let c = reqwest::Client::new();
    let vm = machine(&sim, "AzureVM", "Windows");
    assert_eq!(
        send(
            c.put(format!("{}{vm}/extensions/a?{CMP}", sim.base_url()))
                .json(&ama_body())
        )
        .await
        .status,
        201
    );
    let r = send(
        c.put(format!("{}{vm}/extensions/b?{CMP}", sim.base_url()))
            .json(&ama_body()),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    assert_eq!(r.body["error"]["details"][0]["code"], "TooManyRequests");
    assert!(!h(&r, "retry-after").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_5xx_storm_failures_locks_policy_deallocation() {
    let s = Scenario {
        time_scale: 0.0,
        ..scenario()
    };
    let sim = start(s).await;
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let vm = machine(&sim, "AzureVM", "Windows");
    let vm_url = format!("{base}{vm}?{CMP}");
    // 5xx burst over HTTP control.
    let r = send(
        c.post(format!("{base}/_sim/faults"))
            .json(&json!({"kind": "ServerErrors", "count": 2, "status": 503})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(send(c.get(&vm_url)).await.status, 503);
    assert_eq!(send(c.get(&vm_url)).await.status, 503);
    assert_eq!(send(c.get(&vm_url)).await.status, 200);
    // 429 storm for 30 simulated seconds.
    sim.inject(Fault::ThrottleStorm { seconds: 30 }).unwrap();
    let r = send(c.get(&vm_url)).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        h(&r, "retry-after"),
        "1",
        "frozen clock: the minimum real wait"
    );
    sim.advance(Duration::from_secs(31));
    assert_eq!(send(c.get(&vm_url)).await.status, 200);
    // Provisioning failure with a real code.
    sim.inject(Fault::ExtensionFailure {
        machine: Some(vm.clone()),
        code: "VMExtensionHandlerNonTransientError".into(),
        probability: 1.0,
    })
    .unwrap();
    let put = send(
        c.put(format!("{base}{vm}/extensions/ama?{CMP}"))
            .json(&ama_body()),
    )
    .await;
    let op = h(&put, "azure-asyncoperation").to_string();
    sim.advance(Duration::from_secs(200));
    let st = send(c.get(&op)).await;
    assert_eq!(st.body["status"], "Failed");
    assert_eq!(
        st.body["error"]["code"],
        "VMExtensionHandlerNonTransientError"
    );
    assert_eq!(
        send(c.get(format!("{base}{vm}/extensions/ama?{CMP}")))
            .await
            .body["properties"]["provisioningState"],
        "Failed"
    );
    // Lock and deny policy.
    let rg_scope: String = vm.split("/providers/").next().unwrap().to_string();
    sim.inject(Fault::Lock {
        scope: rg_scope.clone(),
    })
    .unwrap();
    let r = send(c.delete(format!("{base}{vm}/extensions/ama?{CMP}"))).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("ScopeLocked"))
    );
    assert_eq!(
        send(c.delete(format!("{base}/_sim/faults"))).await.status,
        204
    );
    sim.inject(Fault::PolicyDeny { scope: rg_scope }).unwrap();
    let r = send(
        c.put(format!("{base}{vm}/extensions/ama2?{CMP}"))
            .json(&ama_body()),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (403, Some("RequestDisallowedByPolicy"))
    );
    sim.clear_faults();
    // Deallocated VM: extension writes are refused.
    sim.inject(Fault::Deallocate {
        machine: vm.clone(),
    })
    .unwrap();
    let r = send(
        c.put(format!("{base}{vm}/extensions/ama3?{CMP}"))
            .json(&ama_body()),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("OperationNotAllowed"))
    );
    // Unknown faults are rejected with a reason.
    let r = send(
        c.post(format!("{base}/_sim/faults"))
            .json(&json!({"kind": "Meteor"})),
    )
    .await;
    assert_eq!(r.status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn stuck_delete_and_missing_identity_faults() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let vm = machine(&sim, "AzureVM", "Windows");
    let name = vm.rsplit('/').next().unwrap().to_string();
    sim.inject(Fault::StuckDelete {
        machine: name.clone(),
    })
    .unwrap();
    assert_eq!(
        send(
            c.put(format!("{base}{vm}/extensions/ama?{CMP}"))
                .json(&ama_body())
        )
        .await
        .status,
        201
    );
    sim.advance(Duration::from_secs(200));
    assert_eq!(
        send(c.delete(format!("{base}{vm}/extensions/ama?{CMP}")))
            .await
            .status,
        202
    );
    sim.advance(Duration::from_secs(3600));
    let got = send(c.get(format!("{base}{vm}/extensions/ama?{CMP}"))).await;
    assert_eq!(got.body["properties"]["provisioningState"], "Deleting");
    assert_eq!(
        send(
            c.put(format!("{base}{vm}/extensions/ama?{CMP}"))
                .json(&ama_body())
        )
        .await
        .status,
        409
    );
    // "Succeeded but never heartbeats".
    let other = machine(&sim, "AzureVM", "Linux");
    sim.inject(Fault::NoHeartbeat {
        machine: other.clone(),
    })
    .unwrap();
    let snap = sim.snapshot();
    let m = snap["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == other.as_str())
        .unwrap();
    assert_eq!(m["noHeartbeat"], true);
    sim.shutdown().await;
}

#[tokio::test]
async fn resource_graph_pages_the_inventory_with_skip_tokens() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let url = format!(
        "{}/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
        sim.base_url()
    );
    let subs = sim.subscriptions();
    let mut all: Vec<InventoryMachine> = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..20 {
        let mut options = json!({"$top": 7});
        if let Some(t) = &token {
            options["$skipToken"] = json!(t);
        }
        let r =
            send(c.post(&url).json(
                &json!({"subscriptions": subs, "query": INVENTORY_QUERY, "options": options}),
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page: ResourceGraphResponse<InventoryMachine> =
            serde_json::from_value(r.body.clone()).unwrap();
        assert_eq!(
            page.result_truncated,
            if page.skip_token.is_some() {
                "true"
            } else {
                "false"
            }
        );
        all.extend(page.data);
        token = page.skip_token;
        if token.is_none() {
            break;
        }
    }
    assert!(token.is_none());
    assert_eq!(
        all.len(),
        40,
        "in-scope machines only (the outside subscription is not requested)"
    );
    assert!(all.iter().any(|m| !m.extensions.is_empty()));
    let bad = send(c.post(&url).json(&json!({"query": "Resources | take 1"}))).await;
    assert_eq!(bad.status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn log_analytics_rejects_queries_outside_the_subset_with_one_api_errors() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let url = format!(
        "{}/v1/workspaces/{}/query",
        sim.base_url(),
        sim.workspace_customer_id()
    );
    let r = send(
        c.post(&url)
            .json(&json!({"query": "Heartbeat | project Computer"})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "BadArgumentError");
    assert_eq!(r.body["error"]["innererror"]["code"], "SyntaxError");
    let r = send(
        c.post(&url)
            .json(&json!({"query": ama_migrator::inventory::HEARTBEAT_QUERY})),
    )
    .await;
    assert_eq!(r.status, 200);
    let cols: Vec<&str> = r.body["tables"][0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        vec!["Computer", "_ResourceId", "Category", "OSType", "count_"]
    );
    sim.advance(Duration::from_secs(120));
    let r = send(
        c.post(&url)
            .json(&json!({"query": ama_migrator::inventory::HEARTBEAT_QUERY})),
    )
    .await;
    let resp: ama_migrator::inventory::LogQueryResponse = serde_json::from_value(r.body).unwrap();
    let senders = ama_migrator::inventory::HeartbeatSender::from_export(&resp).unwrap();
    assert!(
        senders
            .iter()
            .any(|s| s.resource_id.is_none() && s.category == "Direct Agent"),
        "on-premises computers appear only in Heartbeat"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn refuses_non_loopback_and_wrong_api_versions() {
    let err = Simulator::start(scenario(), "0.0.0.0:0")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let vm = machine(&sim, "AzureVM", "Windows");
    let r = send(c.get(format!("{}{vm}?api-version=2023-03-01", sim.base_url()))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "InvalidApiVersionParameter");
    let r = send(c.get(format!("{}{vm}", sim.base_url()))).await;
    assert_eq!(r.body["error"]["code"], "MissingApiVersionParameter");
    let ws = format!(
        "{}{}/dataSources?api-version=2025-02-01",
        sim.base_url(),
        sim.workspace_resource_id()
    );
    assert_eq!(send(c.get(&ws)).await.status, 400, "$filter is required");
    let r = send(c.get(format!("{ws}&$filter=kind='WindowsEvent'"))).await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 4);
    sim.shutdown().await;
}
