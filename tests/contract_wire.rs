//! The real ARM client on the wire, held to Microsoft's specs: every request it sends (path,
//! api-version, required query parameters, body) and every response it gets must validate.
//!
//! The server here is a spec-backed stub: it finds the operation each request targets with the
//! contract validator and answers with that operation's own `x-ms-examples` response. The second
//! test drives the same client against the Azure simulator and validates its request log. Skipped:
//! only the Log Analytics query API (`/v1/workspaces/...`), which has no ARM spec here; LRO status
//! URLs are checked against common-types v5 `OperationStatusResult`, `operationResults` bodies as
//! a GET of the resource they return.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ama_migrator::azure::dcr::DataCollectionRule;
use ama_migrator::azure::{
    ArmClient, ClientConfig, CredentialConfig, DcrAssociation, Endpoints, Extension, LroPolicy,
    ResourceId, RetryPolicy, WorkspaceDataSource,
};
use ama_migrator::contract::{Checked, Exchange, PRODUCT_OPERATIONS, SpecSet};
use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const SUB: &str = "00000000-0000-0000-0000-000000000001";

fn specs() -> &'static SpecSet {
    static SPECS: OnceLock<SpecSet> = OnceLock::new();
    SPECS.get_or_init(|| SpecSet::load_default().unwrap())
}

/// One exchange as the stub saw it.
#[derive(Clone, Debug)]
struct Logged {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    request_body: Option<Value>,
    status: u16,
    response_body: Option<Value>,
}

/// The example response of the operation a request targets: the first example's lowest 2xx.
fn example_response(method: &str, path_and_query: &str) -> (u16, Option<Value>) {
    let Ok(info) = specs().find_operation(method, path_and_query) else {
        return (
            404,
            Some(json!({"error": {"code": "NotFound", "message": "no such operation"}})),
        );
    };
    let file = info
        .spec_file
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let examples = specs().examples_for(&[(file.as_str(), info.operation_id.as_str())]);
    let Some(ex) = examples.first() else {
        // DataSources_ListByWorkspace: its example is not stored (130 KB); an empty page is valid.
        return (200, Some(json!({"value": []})));
    };
    let (status, body) = ex
        .responses
        .iter()
        .filter_map(|(s, b)| s.parse::<u16>().ok().map(|s| (s, b.clone())))
        .filter(|(s, _)| (200..300).contains(s))
        .min_by_key(|(s, _)| *s)
        .unwrap_or((500, None));
    let mut body = body;
    // Generated examples carry placeholder states ("aaaa"); a stub answer must let the LRO end.
    if let Some(state) = body
        .as_mut()
        .and_then(|b| b.pointer_mut("/properties/provisioningState"))
    {
        *state = json!("Succeeded");
    }
    if info.operation_id == "VirtualMachines_Get" {
        // Without an identity, enabling the system-assigned one really sends the PATCH.
        if let Some(b) = body.as_mut().and_then(Value::as_object_mut) {
            b.remove("identity");
        }
    }
    (status, body)
}

async fn start_stub() -> (String, Arc<Mutex<Vec<Logged>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
    let l2 = log.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
        let log = l2.clone();
        async move {
            let request_body: Option<Value> = serde_json::from_slice(&body).ok();
            let query: Vec<(String, String)> =
                url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
            let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let (status, response_body) = if uri.path().starts_with("/v1/workspaces/") {
                let tables = json!({"tables": [{"name": "PrimaryResult",
                    "columns": [{"name": "Computer", "type": "string"}], "rows": [["vm1"]]}]});
                (200, Some(tables))
            } else {
                example_response(method.as_str(), pq)
            };
            log.lock().unwrap().push(Logged {
                method: method.to_string(),
                path: uri.path().to_string(),
                query,
                request_body,
                status,
                response_body: response_body.clone(),
            });
            let code = StatusCode::from_u16(status).unwrap();
            let resp: Response = match response_body {
                Some(b) => {
                    (code, [("content-type", "application/json")], b.to_string()).into_response()
                }
                None => code.into_response(),
            };
            resp
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, log)
}

fn client(base: &str) -> ArmClient {
    let mut c = ClientConfig::new(
        Endpoints::single(url::Url::parse(base).unwrap()),
        CredentialConfig::None,
    );
    c.retry = RetryPolicy {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts: 3,
        ..Default::default()
    };
    c.lro = LroPolicy {
        default_poll_interval: Duration::from_millis(20),
        max_poll_interval: Duration::from_millis(200),
        max_polls: 20,
        max_wait: Duration::from_secs(5),
    };
    c.request_timeout = Duration::from_secs(5);
    ArmClient::new(c).unwrap()
}

/// Validates every logged exchange; returns (validated, skipped) or panics listing every violation.
fn assert_log_validates(log: &[Logged]) -> (usize, usize) {
    let (mut validated, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for l in log {
        let ex = Exchange {
            method: &l.method,
            path: &l.path,
            query: &l.query,
            request_body: l.request_body.as_ref(),
            status: l.status,
            response_body: l.response_body.as_ref(),
        };
        match specs().validate_exchange(&ex) {
            Ok(Checked::Skipped(why)) => {
                println!("skipped {} {}: {why}", l.method, l.path);
                skipped += 1;
            }
            Ok(_) => validated += 1,
            Err(v) => failures.push(format!(
                "{} {} -> {}:{}",
                l.method,
                l.path,
                l.status,
                v.iter().map(|v| format!("\n    {v}")).collect::<String>()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    (validated, skipped)
}

#[tokio::test]
async fn every_request_the_client_sends_validates_against_its_operation() {
    let (base, log) = start_stub().await;
    let c = client(&base);
    let vm = ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
    ))
    .unwrap();
    let arc = ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/arc1"
    ))
    .unwrap();
    let ws = ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws-1"
    ))
    .unwrap();
    let dcr_id = ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/dcr-1"
    ))
    .unwrap();

    for machine in [&vm, &arc] {
        let ama = Extension::install(
            "eastus",
            "Microsoft.Azure.Monitor",
            "AzureMonitorWindowsAgent",
            Some("1.0"),
            None,
        );
        let put = c
            .put_extension(machine, "AzureMonitorWindowsAgent", &ama)
            .await
            .unwrap();
        c.complete(put).await.unwrap();
        c.get_extension(machine, "AzureMonitorWindowsAgent")
            .await
            .unwrap();
        c.list_extensions(machine).await.unwrap();
        let del = c
            .delete_extension(machine, "MicrosoftMonitoringAgent")
            .await
            .unwrap();
        c.complete(del).await.unwrap();
        c.get_machine(machine).await.unwrap();
    }
    c.enable_system_assigned_identity(&vm).await.unwrap();

    let rule: DataCollectionRule = serde_json::from_value(json!({
        "location": "eastus", "kind": "Windows",
        "properties": {
            "dataSources": {"windowsEventLogs": [{"name": "sec", "streams": ["Microsoft-SecurityEvent"],
                "xPathQueries": ["Security!*[System[(EventID=4624)]]"]}]},
            "destinations": {"logAnalytics": [{"name": "la", "workspaceResourceId": ws.as_str()}]},
            "dataFlows": [{"streams": ["Microsoft-SecurityEvent"], "destinations": ["la"]}]
        }
    }))
    .unwrap();
    let _: DataCollectionRule = c.put_dcr(&dcr_id, &rule).await.unwrap();
    let _: Option<DataCollectionRule> = c.get_dcr(&dcr_id).await.unwrap();

    let assoc = DcrAssociation::for_rule(dcr_id.as_str(), Some("ama-migrator"));
    for machine in [&vm, &arc] {
        c.put_association(machine, "ama-migrator", &assoc)
            .await
            .unwrap();
        c.get_association(machine, "ama-migrator").await.unwrap();
        c.list_associations(machine).await.unwrap();
        c.delete_association(machine, "ama-migrator").await.unwrap();
    }
    c.delete_dcr(&dcr_id).await.unwrap();

    c.list_data_sources(&ws, "WindowsEvent").await.unwrap();
    let ds = c
        .get_data_source(&ws, "SecurityInsightsSecurityEventCollectionConfiguration")
        .await
        .unwrap();
    assert!(ds.is_some());
    let tier = WorkspaceDataSource {
        id: None,
        name: None,
        resource_type: None,
        kind: "SecurityInsightsSecurityEventCollectionConfiguration".into(),
        properties: json!({"tier": "None", "tierSetMethod": "Custom"}),
        etag: None,
    };
    c.put_data_source(
        &ws,
        "SecurityInsightsSecurityEventCollectionConfiguration",
        &tier,
    )
    .await
    .unwrap();
    c.security_events_tier(&ws).await.unwrap();

    let _: Vec<Value> = c
        .query_resource_graph(&[SUB.to_string()], "Resources | limit 1")
        .await
        .unwrap();
    c.query_logs(
        "11111111-1111-1111-1111-111111111111",
        "Heartbeat | take 1",
        Some("PT1H"),
    )
    .await
    .unwrap();

    let log = log.lock().unwrap().clone();
    // Every product operation except VM extension PATCH-less ones was exercised on the wire.
    let mut seen_ops = std::collections::BTreeSet::new();
    for l in &log {
        let pq = format!(
            "{}?{}",
            l.path,
            l.query
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace(' ', "%20")))
                .collect::<Vec<_>>()
                .join("&")
        );
        if let Ok(info) = specs().find_operation(&l.method, &pq) {
            seen_ops.insert(info.operation_id);
        }
    }
    println!("operations exercised: {seen_ops:?}");
    let (validated, skipped) = assert_log_validates(&log);
    println!(
        "{} exchanges: {validated} validated, {skipped} skipped",
        log.len()
    );
    assert_eq!(skipped, 1, "only the Log Analytics query has no ARM spec");
    for wanted in [
        "VirtualMachineExtensions_CreateOrUpdate",
        "VirtualMachineExtensions_Get",
        "VirtualMachineExtensions_List",
        "VirtualMachineExtensions_Delete",
        "VirtualMachines_Get",
        "VirtualMachines_Update",
        "MachineExtensions_CreateOrUpdate",
        "MachineExtensions_Get",
        "MachineExtensions_List",
        "MachineExtensions_Delete",
        "Machines_Get",
        "DataCollectionRules_Create",
        "DataCollectionRules_Get",
        "DataCollectionRuleAssociations_Create",
        "DataCollectionRuleAssociations_Get",
        "DataCollectionRuleAssociations_ListByResource",
        "DataCollectionRuleAssociations_Delete",
        "DataSources_ListByWorkspace",
        "DataSources_Get",
        "DataSources_CreateOrUpdate",
        "Resources",
    ] {
        assert!(
            seen_ops.contains(wanted),
            "{wanted} not exercised: {seen_ops:?}"
        );
        assert!(PRODUCT_OPERATIONS.iter().any(|(_, op)| *op == wanted));
    }
}

fn sim_log_as_logged(log: &[ama_migrator::sim::RequestRecord]) -> Vec<Logged> {
    log.iter()
        .map(|r| Logged {
            method: r.method.clone(),
            path: r.path.clone(),
            query: r
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            request_body: r.request_body.clone(),
            status: r.status,
            response_body: r.response_body.clone(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_between_client_and_simulator_validates() {
    use ama_migrator::sim::{Scenario, Simulator};
    let sim = Simulator::start(
        Scenario {
            machines: 20,
            time_scale: 600.0,
            ..Scenario::default()
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let base = sim.base_url();
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let c = client(&base);
    let inv = sim.inventory();
    let pick = |t: &str| {
        inv.iter()
            .find(|m| m.resource_type.eq_ignore_ascii_case(t) && m.power_state != "deallocated")
            .map(|m| ResourceId::parse(&m.id).unwrap())
            .unwrap()
    };
    let vm = pick("microsoft.compute/virtualmachines");
    let arc = pick("microsoft.hybridcompute/machines");
    let ws = ResourceId::parse(&sim.workspace_resource_id()).unwrap();
    let dcr_id = ResourceId::parse(&format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Insights/dataCollectionRules/dcr-contract",
        vm.subscription(),
        inv[0].resource_group
    ))
    .unwrap();

    for machine in [&vm, &arc] {
        let ama = Extension::install(
            "eastus",
            "Microsoft.Azure.Monitor",
            "AzureMonitorWindowsAgent",
            Some("1.0"),
            None,
        );
        let put = c
            .put_extension(machine, "AzureMonitorWindowsAgent", &ama)
            .await
            .unwrap();
        c.complete(put).await.unwrap();
        c.get_extension(machine, "AzureMonitorWindowsAgent")
            .await
            .unwrap();
        c.list_extensions(machine).await.unwrap();
        let del = c
            .delete_extension(machine, "AzureMonitorWindowsAgent")
            .await
            .unwrap();
        c.complete(del).await.unwrap();
        c.get_machine(machine).await.unwrap();
    }
    if let Some(patch) = c.enable_system_assigned_identity(&vm).await.unwrap() {
        c.complete(patch).await.unwrap();
    }
    let rule: DataCollectionRule = serde_json::from_value(json!({
        "location": "eastus", "kind": "Windows",
        "properties": {
            "dataSources": {"windowsEventLogs": [{"name": "sec", "streams": ["Microsoft-SecurityEvent"],
                "xPathQueries": ["Security!*[System[(EventID=4624)]]"]}]},
            "destinations": {"logAnalytics": [{"name": "la", "workspaceResourceId": ws.as_str()}]},
            "dataFlows": [{"streams": ["Microsoft-SecurityEvent"], "destinations": ["la"]}]
        }
    }))
    .unwrap();
    let _: DataCollectionRule = c.put_dcr(&dcr_id, &rule).await.unwrap();
    let _: Option<DataCollectionRule> = c.get_dcr(&dcr_id).await.unwrap();
    let assoc = DcrAssociation::for_rule(dcr_id.as_str(), Some("ama-migrator"));
    for machine in [&vm, &arc] {
        c.put_association(machine, "ama-migrator", &assoc)
            .await
            .unwrap();
        c.get_association(machine, "ama-migrator").await.unwrap();
        c.list_associations(machine).await.unwrap();
        c.delete_association(machine, "ama-migrator").await.unwrap();
    }
    assert!(
        c.delete_dcr(&dcr_id).await.unwrap(),
        "an existing DCR is deleted (200)"
    );
    assert!(
        !c.delete_dcr(&dcr_id).await.unwrap(),
        "a deleted DCR is already gone (204)"
    );
    let gone: Option<DataCollectionRule> = c.get_dcr(&dcr_id).await.unwrap();
    assert!(gone.is_none(), "a deleted DCR reads as absent");
    for kind in ["WindowsEvent", "LinuxSyslog"] {
        c.list_data_sources(&ws, kind).await.unwrap();
    }
    c.security_events_tier(&ws).await.unwrap();
    let _: Vec<Value> = c
        .query_resource_graph(
            &sim.subscriptions(),
            ama_migrator::inventory::INVENTORY_QUERY,
        )
        .await
        .unwrap();
    c.query_logs(
        &sim.workspace_customer_id(),
        ama_migrator::inventory::HEARTBEAT_QUERY,
        Some("PT1H"),
    )
    .await
    .unwrap();

    let log = sim_log_as_logged(&sim.request_log());
    sim.shutdown().await;
    let (validated, skipped) = assert_log_validates(&log);
    println!(
        "simulator: {} exchanges, {validated} validated, {skipped} skipped",
        log.len()
    );
    assert!(validated >= 25, "{validated}");
}
