//! The ARM client against a scripted loopback server: exact 429 / 5xx / LRO sequences, so each
//! acceptance point of the client is observed on the wire (what was sent, and when).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ama_migrator::azure::{
    ArmClient, AzureError, BucketShape, BudgetConfig, Classification, ClientConfig,
    CredentialConfig, DcrAssociation, Endpoints, Extension, LroPolicy, OperationHandle,
    PollOutcome, ResourceId, RetryPolicy, WorkspaceDataSource,
};
use ama_migrator::inventory::{AgentKind, LogQueryResponse};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
const ARC: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/arc1";
const WS: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws1";

/// One request as the stub saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    body: Option<Value>,
    has_auth: bool,
    at: Instant,
}

/// A scripted reply.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

fn reply(status: u16, body: Option<Value>) -> Reply {
    Reply {
        status,
        headers: vec![],
        body,
    }
}

impl Reply {
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
}

type Script = dyn Fn(&Seen, &mut HashMap<String, i64>, &str) -> Reply + Send + Sync;

#[derive(Clone)]
struct Stub {
    base: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
    fn url(&self) -> url::Url {
        url::Url::parse(&self.base).unwrap()
    }
}

/// Serves `script` on 127.0.0.1; the script gets the request, a scratch map and the base URL.
async fn serve(
    script: impl Fn(&Seen, &mut HashMap<String, i64>, &str) -> Reply + Send + Sync + 'static,
) -> Stub {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let scratch: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let script: Arc<Script> = Arc::new(script);
    let (l2, b2) = (log.clone(), base.clone());
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (log, scratch, script, base) =
                (l2.clone(), scratch.clone(), script.clone(), b2.clone());
            async move {
                let seen = Seen {
                    method,
                    path: uri.path().to_string(),
                    query: url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect(),
                    body: serde_json::from_slice(&body).ok(),
                    has_auth: headers.contains_key("authorization"),
                    at: Instant::now(),
                };
                let r = script(
                    &seen,
                    &mut scratch.lock().unwrap(),
                    base.trim_end_matches('/'),
                );
                log.lock().unwrap().push(seen);
                let mut resp: Response = match r.body {
                    Some(b) => axum::Json(b).into_response(),
                    None => ().into_response(),
                };
                *resp.status_mut() = StatusCode::from_u16(r.status).unwrap();
                for (k, v) in r.headers {
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                resp
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Stub { base, log }
}

fn config(stub: &Stub) -> ClientConfig {
    let mut c = ClientConfig::new(Endpoints::single(stub.url()), CredentialConfig::None);
    c.retry = RetryPolicy {
        base_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(400),
        max_attempts: 4,
        ..Default::default()
    };
    c.lro = LroPolicy {
        default_poll_interval: Duration::from_millis(30),
        max_poll_interval: Duration::from_secs(2),
        max_polls: 50,
        max_wait: Duration::from_secs(10),
    };
    c.request_timeout = Duration::from_secs(5);
    c
}

fn client(stub: &Stub) -> ArmClient {
    ArmClient::new(config(stub)).unwrap()
}

fn ext_body(name: &str, state: &str) -> Value {
    json!({"id": format!("{VM}/extensions/{name}"), "name": name, "location": "westeurope",
           "properties": {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent",
                          "typeHandlerVersion": "1.0", "provisioningState": state}})
}

fn ama() -> Extension {
    Extension::install(
        "westeurope",
        "Microsoft.Azure.Monitor",
        "AzureMonitorWindowsAgent",
        Some("1.0"),
        None,
    )
}

/// A VM extension world: PUT → 201 + Azure-AsyncOperation (InProgress twice, then Succeeded);
/// DELETE → 202 + Location (202 once, then 200); GET reflects the state.
fn extension_world(seen: &Seen, s: &mut HashMap<String, i64>, base: &str) -> Reply {
    let ext_path = format!("{VM}/extensions/AzureMonitorWindowsAgent");
    match (seen.method.as_str(), seen.path.as_str()) {
        ("PUT", p) if p == ext_path => {
            s.insert("installed".into(), 1);
            s.insert("op_polls".into(), 0);
            reply(201, Some(ext_body("AzureMonitorWindowsAgent", "Creating")))
                .header("azure-asyncoperation", format!("{base}/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Compute/locations/westeurope/operations/op1?api-version=2024-11-01"))
                .header("retry-after", "0")
        }
        ("GET", p) if p.ends_with("/operations/op1") => {
            let n = s.entry("op_polls".into()).or_default();
            *n += 1;
            let status = if *n >= 3 { "Succeeded" } else { "InProgress" };
            reply(200, Some(json!({"name": "op1", "status": status})))
        }
        ("GET", p) if p == ext_path => match s.get("installed") {
            Some(1) => reply(200, Some(ext_body("AzureMonitorWindowsAgent", "Succeeded"))),
            _ => reply(
                404,
                Some(json!({"error": {"code": "NotFound", "message": "no such extension"}})),
            ),
        },
        ("GET", p) if p == format!("{VM}/extensions") => {
            let mut value = vec![
                json!({"name": "weird-name", "properties": {"publisher": "Microsoft.EnterpriseCloud.Monitoring", "type": "MicrosoftMonitoringAgent"}}),
            ];
            if s.get("installed") == Some(&1) {
                value.push(ext_body("AzureMonitorWindowsAgent", "Succeeded"));
            }
            reply(200, Some(json!({"value": value})))
        }
        ("DELETE", p) if p == ext_path => {
            s.insert("loc_polls".into(), 0);
            reply(202, None)
                .header("location", format!("{base}/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Compute/locations/westeurope/operations/del1?monitor=true&api-version=2024-11-01"))
        }
        ("GET", p) if p.ends_with("/operations/del1") => {
            let n = s.entry("loc_polls".into()).or_default();
            *n += 1;
            if *n >= 2 {
                s.insert("installed".into(), 0);
                reply(200, None)
            } else {
                reply(202, None).header("retry-after", "0")
            }
        }
        _ => reply(
            400,
            Some(
                json!({"error": {"code": "Unexpected", "message": format!("{} {}", seen.method, seen.path)}}),
            ),
        ),
    }
}

#[tokio::test]
async fn extension_install_and_uninstall_complete() {
    let stub = serve(extension_world).await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    let mut body = ama();
    body.properties.protected_settings = Some(json!({"secret": "never-logged"}));
    let submitted = c
        .put_extension(&vm, "AzureMonitorWindowsAgent", &body)
        .await
        .unwrap();
    let op = submitted
        .operation
        .clone()
        .expect("201 + Azure-AsyncOperation is a running operation");
    assert_eq!(
        op.poll_kind,
        ama_migrator::azure::PollKind::AzureAsyncOperation
    );
    let done = c.complete(submitted).await.unwrap().unwrap();
    assert_eq!(done.provisioning_state(), Some("Succeeded"));
    assert_eq!(done.agent(), Some(AgentKind::Ama));
    let agents = c.agent_extensions(&vm).await.unwrap();
    let mut kinds: Vec<_> = agents.iter().map(|(k, _)| *k).collect();
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        vec![AgentKind::Ama, AgentKind::Legacy],
        "detected by publisher+type, not name"
    );

    let del = c
        .delete_extension(&vm, "AzureMonitorWindowsAgent")
        .await
        .unwrap();
    assert!(!del.is_done());
    assert_eq!(c.complete(del).await.unwrap(), None);
    assert_eq!(
        c.get_extension(&vm, "AzureMonitorWindowsAgent")
            .await
            .unwrap(),
        None
    );

    let seen = stub.seen();
    let put = seen.iter().find(|s| s.method == Method::PUT).unwrap();
    assert_eq!(
        put.query.get("api-version").map(String::as_str),
        Some("2024-11-01")
    );
    let sent = put.body.as_ref().unwrap();
    assert_eq!(sent["properties"]["publisher"], "Microsoft.Azure.Monitor");
    assert_eq!(
        sent["properties"]["protectedSettings"]["secret"],
        "never-logged"
    );
    assert!(sent["properties"].get("provisioningState").is_none());
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.ends_with("/operations/op1"))
            .count(),
        3
    );
    assert!(
        seen.iter().all(|s| !s.has_auth),
        "unauthenticated mode sends no Authorization"
    );
    let m = c.metrics();
    assert_eq!((m.writes, m.deletes, m.throttled), (1, 1, 0));
    assert!(m.reads >= 6, "{m:?}");
}

#[tokio::test]
async fn arc_extensions_use_hybrid_compute() {
    let stub = serve(|seen, _, base| {
        if seen.method == Method::PUT {
            reply(202, None).header("location", format!("{base}/ops/arc?api-version=2024-07-10"))
        } else if seen.path == "/ops/arc" {
            reply(200, Some(json!({"name": "AMA", "properties": {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent", "provisioningState": "Succeeded"}})))
        } else {
            reply(500, None)
        }
    })
    .await;
    let c = client(&stub);
    let arc = ResourceId::parse(ARC).unwrap();
    let s = c.put_extension(&arc, "AMA", &ama()).await.unwrap();
    let ext = c.complete(s).await.unwrap().unwrap();
    assert_eq!(ext.agent(), Some(AgentKind::Ama));
    let seen = stub.seen();
    assert_eq!(seen[0].path, format!("{ARC}/extensions/AMA"));
    assert_eq!(seen[0].query["api-version"], "2024-07-10");
}

#[tokio::test]
async fn operation_resumes_from_a_persisted_handle_after_restart() {
    let stub = serve(extension_world).await;
    let vm = ResourceId::parse(VM).unwrap();
    let persisted = {
        let c = client(&stub);
        let s = c
            .put_extension(&vm, "AzureMonitorWindowsAgent", &ama())
            .await
            .unwrap();
        let op = s.operation.unwrap();
        // One poll, then the process "dies".
        assert!(matches!(
            c.poll_operation(&op).await.unwrap(),
            PollOutcome::Running { .. }
        ));
        serde_json::to_string(&op).unwrap()
    };
    let c2 = client(&stub);
    let op: OperationHandle = serde_json::from_str(&persisted).unwrap();
    let v = c2.wait_operation(&op).await.unwrap().unwrap();
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        c2.metrics().writes,
        0,
        "the new client did not re-send the PUT"
    );
}

#[tokio::test]
async fn delete_404_is_done() {
    let stub = serve(
        |seen, _, base| match (seen.method.as_str(), seen.path.as_str()) {
            ("DELETE", p) if p.ends_with("/gone") => reply(
                404,
                Some(json!({"error": {"code": "ResourceNotFound", "message": "x"}})),
            ),
            ("DELETE", _) => {
                reply(202, None).header("azure-asyncoperation", format!("{base}/ops/d"))
            }
            ("GET", "/ops/d") => reply(404, None),
            _ => reply(500, None),
        },
    )
    .await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    let s = c.delete_extension(&vm, "gone").await.unwrap();
    assert!(s.is_done(), "404 on DELETE means already deleted");
    let s = c.delete_extension(&vm, "mma").await.unwrap();
    assert_eq!(
        c.complete(s).await.unwrap(),
        None,
        "404 on the poll of a DELETE is done"
    );
    assert_eq!(stub.seen().len(), 3);
}

#[tokio::test]
async fn throttle_storm_sends_nothing_before_retry_after_then_succeeds() {
    // A 30 s storm scaled to 3 s: every request in it gets 429 Retry-After: 1.
    let t0 = Instant::now();
    let storm = Duration::from_secs(3);
    let stub = serve(move |_, _, _| {
        if t0.elapsed() < storm {
            reply(
                429,
                Some(json!({"error": {"code": "TooManyRequests", "message": "slow down"}})),
            )
            .header("retry-after", "1")
        } else {
            reply(200, Some(json!({"value": []})))
        }
    })
    .await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (c, vm) = (c.clone(), vm.clone());
            tokio::spawn(async move { c.list_extensions(&vm).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_empty());
    }
    let seen = stub.seen();
    let throttled: Vec<Instant> = seen
        .iter()
        .filter(|s| s.at.duration_since(t0) < storm)
        .map(|s| s.at)
        .collect();
    // After each 429, nothing arrives until its Retry-After (1 s) has elapsed, except requests
    // already in flight (sent before the 429 reached the client).
    let first = throttled[0];
    let first_wave = throttled
        .iter()
        .filter(|t| t.duration_since(first) < Duration::from_millis(200))
        .count();
    assert!(first_wave <= 5);
    for w in throttled.windows(2) {
        let gap = w[1].duration_since(w[0]);
        assert!(
            gap < Duration::from_millis(200) || gap >= Duration::from_millis(990),
            "sent {gap:?} after a 429"
        );
    }
    // One probe per Retry-After window, not a retry storm: ≈ 5 + 3 over the 3 s storm.
    assert!(
        throttled.len() <= first_wave + 4,
        "{} requests during the storm",
        throttled.len()
    );
    let after: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at.duration_since(t0) >= storm)
        .collect();
    assert_eq!(
        after.len(),
        5,
        "each caller succeeds once the storm is over"
    );
    assert!(c.metrics().throttled as usize == throttled.len());
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_bounded() {
    let stub = serve(|seen, s, _| {
        let n = s.entry(seen.path.clone()).or_default();
        *n += 1;
        if seen.path.ends_with("/flaky") && *n <= 2 {
            reply(
                503,
                Some(json!({"error": {"code": "ServiceUnavailable", "message": "busy"}})),
            )
        } else if seen.path.ends_with("/flaky") {
            reply(200, Some(ext_body("flaky", "Succeeded")))
        } else {
            reply(
                500,
                Some(json!({"error": {"code": "InternalServerError", "message": "down"}})),
            )
        }
    })
    .await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    assert!(c.get_extension(&vm, "flaky").await.unwrap().is_some());
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    // equal jitter: retry n waits at least half of base·2^(n-1)
    assert!(seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(20));
    assert!(seen[2].at.duration_since(seen[1].at) >= Duration::from_millis(40));
    assert_eq!(c.metrics().retries, 2);

    let err = c.get_extension(&vm, "down").await.unwrap_err();
    assert_eq!(err.classification(), Classification::Transient);
    assert_eq!(err.arm_code(), Some("InternalServerError"));
    assert!(
        matches!(err, AzureError::RetriesExhausted { attempts: 4, .. }),
        "{err}"
    );
    assert_eq!(
        stub.seen()
            .iter()
            .filter(|s| s.path.ends_with("/down"))
            .count(),
        4
    );
}

#[tokio::test]
async fn permanent_errors_surface_with_their_arm_code() {
    let stub = serve(|seen, _, base| match (seen.method.as_str(), seen.path.rsplit('/').next().unwrap()) {
        ("PUT", "locked") => reply(409, Some(json!({"error": {"code": "ScopeLocked", "message": "The scope is locked by lock 'nodelete'"}}))),
        ("PUT", "denied") => reply(403, Some(json!({"error": {"code": "AuthorizationFailed", "message": "no write permission"}}))),
        ("PUT", "fails") => reply(201, Some(ext_body("fails", "Creating"))).header("azure-asyncoperation", format!("{base}/ops/f")),
        ("GET", "f") => reply(200, Some(json!({"status": "Failed", "error": {"code": "VMExtensionProvisioningError", "message": "VM has reported a failure when processing extension"}}))),
        ("PUT", "evil") => reply(201, None).header("azure-asyncoperation", "http://evil.example/ops/1"),
        _ => reply(500, None),
    })
    .await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    let e = c.put_extension(&vm, "locked", &ama()).await.unwrap_err();
    assert_eq!(
        (e.status(), e.arm_code(), e.classification()),
        (Some(409), Some("ScopeLocked"), Classification::Permanent)
    );
    assert!(e.to_string().contains("lock 'nodelete'"));
    let e = c.put_extension(&vm, "denied", &ama()).await.unwrap_err();
    assert_eq!(e.arm_code(), Some("AuthorizationFailed"));
    let s = c.put_extension(&vm, "fails", &ama()).await.unwrap();
    let e = c.complete(s).await.unwrap_err();
    assert_eq!(e.arm_code(), Some("VMExtensionProvisioningError"));
    assert_eq!(e.classification(), Classification::Permanent);
    let e = c.put_extension(&vm, "evil", &ama()).await.unwrap_err();
    assert!(matches!(e, AzureError::UntrustedUrl { .. }), "{e}");
    // permanent errors are not retried
    assert_eq!(
        stub.seen()
            .iter()
            .filter(|s| s.path.ends_with("/locked"))
            .count(),
        1
    );
}

#[tokio::test]
async fn enabling_system_identity_resends_user_assigned() {
    let uami = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ID1";
    let stub = serve(move |seen, _, _| match seen.method.as_str() {
        "GET" => reply(200, Some(json!({"id": VM, "name": "vm1", "location": "westeurope", "etag": "\"7\"",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {uami: {"principalId": "p", "clientId": "c"}}},
            "properties": {"provisioningState": "Succeeded"}}))),
        "PATCH" => reply(200, Some(json!({"id": VM, "name": "vm1", "location": "westeurope",
            "identity": {"type": "SystemAssigned, UserAssigned", "principalId": "sp", "userAssignedIdentities": {uami: {}}},
            "properties": {"provisioningState": "Succeeded"}}))),
        _ => reply(500, None),
    })
    .await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    let s = c
        .enable_system_assigned_identity(&vm)
        .await
        .unwrap()
        .unwrap();
    assert!(s.is_done());
    let patched = s.resource.unwrap();
    assert!(patched.identity.unwrap().has_system_assigned());
    let seen = stub.seen();
    let patch = seen.iter().find(|s| s.method == Method::PATCH).unwrap();
    assert_eq!(
        patch.body.as_ref().unwrap(),
        &json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {uami: {}}}})
    );
    let arc = ResourceId::parse(ARC).unwrap();
    assert!(c.enable_system_assigned_identity(&arc).await.is_err());
}

#[tokio::test]
async fn associations_datasources_graph_and_log_query() {
    let stub = serve(|seen, s, base| {
        let p = seen.path.as_str();
        match seen.method.as_str() {
            "PUT" if p.contains("dataCollectionRuleAssociations") => reply(201, Some(json!({"id": p, "name": "a1",
                "properties": {"dataCollectionRuleId": seen.body.as_ref().unwrap()["properties"]["dataCollectionRuleId"], "provisioningState": "Succeeded"}}))),
            "DELETE" if p.ends_with("/a1") => reply(200, None),
            "DELETE" => reply(204, None),
            "GET" if p.ends_with("dataCollectionRuleAssociations") => reply(200, Some(json!({"value": [{"name": "a1", "properties": {"dataCollectionRuleId": "/d"}}]}))),
            "GET" if p.ends_with("/dataSources") => {
                let kind = seen.query.get("$filter").cloned().unwrap_or_default();
                if seen.query.contains_key("$skiptoken") {
                    reply(200, Some(json!({"value": [{"name": "sc", "kind": "SecurityEventCollectionConfiguration", "properties": {"tier": "Minimal"}}]})))
                } else if kind.contains("SecurityEventCollectionConfiguration") && !kind.contains("SecurityInsights") {
                    reply(200, Some(json!({"value": [], "nextLink": format!("{base}{p}?api-version=2025-02-01&$filter={kind}&$skiptoken=2")})))
                } else {
                    reply(200, Some(json!({"value": [{"name": "SecurityInsightsSecurityEventCollectionConfiguration", "kind": "SecurityInsightsSecurityEventCollectionConfiguration", "properties": {"tier": "None", "tierSetMethod": "Custom"}}]})))
                }
            }
            "PUT" if p.contains("/dataSources/") => reply(200, Some(json!({"name": "x", "kind": "WindowsEvent", "properties": seen.body.as_ref().unwrap()["properties"]}))),
            "POST" if p.ends_with("/resources") => {
                let n = s.entry("pages".into()).or_default();
                *n += 1;
                let token = seen.body.as_ref().unwrap()["options"].get("$skipToken").cloned();
                let expected = if *n == 1 { None } else { Some(json!(format!("t{}", *n - 1))) };
                assert_eq!(token, expected, "page {n} carries the previous skip token");
                let mut page = json!({"totalRecords": 5, "count": 2, "resultTruncated": "false", "data": [{"id": format!("r{n}a")}, {"id": format!("r{n}b")}]});
                if *n < 3 {
                    page["$skipToken"] = json!(format!("t{n}"));
                }
                reply(200, Some(page))
            }
            "POST" if p == "/v1/workspaces/11111111-2222-3333-4444-555555555555/query" => reply(200, Some(json!({"tables": [{"name": "PrimaryResult",
                "columns": [{"name": "Category", "type": "string"}, {"name": "count_", "type": "long"}], "rows": [["Direct Agent", 42]]}]}))),
            _ => reply(500, None),
        }
    })
    .await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    let dcr = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/d";
    let a = c
        .put_association(&vm, "a1", &DcrAssociation::for_rule(dcr, None))
        .await
        .unwrap();
    assert_eq!(a.properties.data_collection_rule_id.as_deref(), Some(dcr));
    assert_eq!(c.list_associations(&vm).await.unwrap().len(), 1);
    assert!(c.delete_association(&vm, "a1").await.unwrap());
    assert!(!c.delete_association(&vm, "other").await.unwrap());

    let ws = ResourceId::parse(WS).unwrap();
    let tier = c.security_events_tier(&ws).await.unwrap();
    assert_eq!(
        tier.sentinel,
        vec![(
            "SecurityInsightsSecurityEventCollectionConfiguration".to_string(),
            "None".to_string()
        )]
    );
    assert_eq!(
        tier.security_center,
        vec![("sc".to_string(), "Minimal".to_string())],
        "read through nextLink"
    );
    assert!(tier.legacy_collects());
    let put = c.put_data_source(&ws, "x", &WorkspaceDataSource {
        id: Some("ignored".into()), name: None, resource_type: None, kind: "WindowsEvent".into(),
        properties: json!({"eventLogName": "System", "eventTypes": [{"eventType": "Error"}]}), etag: None,
    }).await.unwrap();
    assert_eq!(put.properties["eventLogName"], "System");

    let rows: Vec<Value> = c
        .query_resource_graph(
            &["00000000-0000-0000-0000-000000000001".into()],
            "Resources | project id",
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 6, "all three pages");
    let logs: LogQueryResponse = c
        .query_logs(
            "11111111-2222-3333-4444-555555555555",
            "Heartbeat | count",
            Some("PT1H"),
        )
        .await
        .unwrap();
    assert_eq!(logs.tables[0].rows[0][1], 42);

    let seen = stub.seen();
    let sent_ds = seen
        .iter()
        .find(|s| s.method == Method::PUT && s.path.contains("/dataSources/"))
        .unwrap();
    assert!(
        sent_ds.body.as_ref().unwrap().get("id").is_none(),
        "read-only id not sent"
    );
    assert!(
        seen.iter()
            .filter(|s| s.path.ends_with("/dataSources"))
            .all(|s| s.query.contains_key("$filter"))
    );
    let q = seen.iter().find(|s| s.path.ends_with("/query")).unwrap();
    assert_eq!(q.body.as_ref().unwrap()["timespan"], "PT1H");
}

#[tokio::test]
async fn remaining_header_slows_the_client_down() {
    // The server says 0 writes remain: the next write waits for the local bucket to refill.
    let stub = serve(|_, _, _| {
        reply(
            200,
            Some(json!({"properties": {"dataCollectionRuleId": "/d"}})),
        )
        .header("x-ms-ratelimit-remaining-subscription-writes", "0")
    })
    .await;
    let mut cfg = config(&stub);
    cfg.budget = BudgetConfig {
        writes: BucketShape::new(100.0, 4.0),
        ..Default::default()
    };
    let c = ArmClient::new(cfg).unwrap();
    let vm = ResourceId::parse(VM).unwrap();
    let a = DcrAssociation::for_rule("/d", None);
    c.put_association(&vm, "a", &a).await.unwrap();
    c.put_association(&vm, "a", &a).await.unwrap();
    let seen = stub.seen();
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(240),
        "{:?}",
        seen[1].at.duration_since(seen[0].at)
    );
}

#[test]
fn unauthenticated_client_is_refused_for_real_azure() {
    let err = ArmClient::new(ClientConfig::new(
        Endpoints::default(),
        CredentialConfig::None,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The same acceptance points against the Azure simulator (`crate::sim`), with a time scale.

mod against_simulator {
    use super::*;
    use ama_migrator::inventory::MachineKind;
    use ama_migrator::sim::scenario::LroConfig;
    use ama_migrator::sim::{Fault, Scenario, SimHandle, Simulator};

    async fn sim(time_scale: f64) -> SimHandle {
        let s = Scenario {
            machines: 20,
            time_scale,
            lro: LroConfig {
                extension_install_secs: 60,
                extension_delete_secs: 30,
                vm_update_secs: 10,
                max_retry_after_secs: 30,
            },
            ..Scenario::default()
        };
        Simulator::start(s, "127.0.0.1:0").await.unwrap()
    }

    fn sim_client(sim: &SimHandle) -> ArmClient {
        let base = url::Url::parse(&sim.base_url()).unwrap();
        let mut c = ClientConfig::new(Endpoints::single(base), CredentialConfig::None);
        c.retry.base_delay = Duration::from_millis(40);
        c.retry.max_delay = Duration::from_millis(400);
        c.lro.default_poll_interval = Duration::from_millis(200);
        c.lro.max_wait = Duration::from_secs(20);
        ArmClient::new(c).unwrap()
    }

    /// A running Windows VM in scope without AMA.
    fn vm_without_ama(sim: &SimHandle) -> ResourceId {
        let m = sim
            .inventory()
            .into_iter()
            .find(|m| {
                m.kind() == Some(MachineKind::AzureVM)
                    && m.os_type.eq_ignore_ascii_case("Windows")
                    && !m.is_deallocated()
                    && m.agents(AgentKind::Ama).next().is_none()
                    && sim
                        .subscriptions()
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(&m.subscription_id))
            })
            .expect("the default mix has Windows VMs without AMA");
        ResourceId::parse(&m.id).unwrap()
    }

    fn sim_ms(t: &str) -> i64 {
        ama_migrator::sim::clock::parse_iso(t).unwrap()
    }

    #[tokio::test]
    async fn install_resumed_from_a_persisted_handle_then_uninstall_then_404_delete() {
        let sim = sim(60.0).await;
        let vm = vm_without_ama(&sim);
        let persisted = {
            let c = sim_client(&sim);
            let s = c
                .put_extension(&vm, "AzureMonitorWindowsAgent", &ama())
                .await
                .unwrap();
            assert_eq!(
                s.resource.as_ref().unwrap().provisioning_state(),
                Some("Creating")
            );
            serde_json::to_string(&s.operation.expect("install is an LRO")).unwrap()
        }; // the first client is dropped mid-operation
        let c = sim_client(&sim);
        let op: OperationHandle = serde_json::from_str(&persisted).unwrap();
        let done = c.wait_operation(&op).await.unwrap().unwrap();
        assert_eq!(done["properties"]["provisioningState"], "Succeeded");
        let ext = c
            .get_extension(&vm, "AzureMonitorWindowsAgent")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ext.agent(), Some(AgentKind::Ama));

        let del = c
            .delete_extension(&vm, "AzureMonitorWindowsAgent")
            .await
            .unwrap();
        assert!(!del.is_done());
        assert_eq!(c.complete(del).await.unwrap(), None);
        assert_eq!(
            c.get_extension(&vm, "AzureMonitorWindowsAgent")
                .await
                .unwrap(),
            None
        );
        // Deleting what is gone completes at once (204/404).
        assert!(
            c.delete_extension(&vm, "AzureMonitorWindowsAgent")
                .await
                .unwrap()
                .is_done()
        );
        assert_eq!(
            c.metrics().writes,
            0,
            "the second client never re-sent the PUT"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn throttle_storm_nothing_sent_before_retry_after_then_success() {
        // 30 simulated seconds at ×10: a 3 s storm; the simulator's Retry-After says how long.
        let sim = sim(10.0).await;
        let vm = vm_without_ama(&sim);
        let c = sim_client(&sim);
        sim.clear_request_log();
        sim.inject(Fault::ThrottleStorm { seconds: 30 }).unwrap();
        let t0 = Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let (c, vm) = (c.clone(), vm.clone());
                tokio::spawn(async move { c.get_machine(&vm).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().unwrap().is_some());
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(2500),
            "{:?}",
            t0.elapsed()
        );
        let log = sim.request_log();
        let throttled: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
        let ok: Vec<_> = log.iter().filter(|r| r.status == 200).collect();
        assert_eq!(
            throttled.len(),
            3,
            "only the first wave, in flight before the first 429"
        );
        assert_eq!(ok.len(), 3);
        let last_429 = throttled.iter().map(|r| sim_ms(&r.sim_time)).max().unwrap();
        let first_ok = ok.iter().map(|r| sim_ms(&r.sim_time)).min().unwrap();
        // Retry-After was 3 real s = 30 simulated s after the storm began.
        assert!(
            first_ok - last_429 >= 27_000,
            "resent after {} simulated ms",
            first_ok - last_429
        );
        assert_eq!(c.metrics().throttled, 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn server_errors_retried_and_permanent_codes_surface() {
        let sim = sim(60.0).await;
        let vm = vm_without_ama(&sim);
        let c = sim_client(&sim);
        sim.inject(Fault::ServerErrors {
            count: 2,
            status: 503,
        })
        .unwrap();
        assert!(c.get_machine(&vm).await.unwrap().is_some());
        assert_eq!(c.metrics().retries, 2);

        sim.inject(Fault::ExtensionFailure {
            machine: Some(vm.to_string()),
            code: "VMExtensionHandlerNonTransientError".into(),
            probability: 1.0,
        })
        .unwrap();
        let s = c
            .put_extension(&vm, "AzureMonitorWindowsAgent", &ama())
            .await
            .unwrap();
        let e = c.complete(s).await.unwrap_err();
        assert_eq!(
            e.arm_code(),
            Some("VMExtensionHandlerNonTransientError"),
            "{e}"
        );
        assert_eq!(e.classification(), Classification::Permanent);
        sim.clear_faults();

        sim.inject(Fault::Lock {
            scope: vm.to_string(),
        })
        .unwrap();
        let e = c
            .delete_extension(&vm, "AzureMonitorWindowsAgent")
            .await
            .unwrap_err();
        assert_eq!(
            (e.status(), e.arm_code()),
            (Some(409), Some("ScopeLocked")),
            "{e}"
        );
        sim.clear_faults();
        sim.inject(Fault::PolicyDeny {
            scope: vm.to_string(),
        })
        .unwrap();
        let e = c.put_extension(&vm, "x", &ama()).await.unwrap_err();
        assert_eq!(e.arm_code(), Some("RequestDisallowedByPolicy"), "{e}");
        sim.shutdown().await;
    }
}

/// Captured log output, for checking what the client writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn traces_name_each_request_but_never_secrets() {
    let buf = LogBuffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let stub = serve(|seen, s, base| {
        let n = s.entry("n".into()).or_default();
        *n += 1;
        if *n == 1 {
            reply(503, None)
        } else {
            extension_world(seen, s, base)
        }
    })
    .await;
    let c = client(&stub);
    let vm = ResourceId::parse(VM).unwrap();
    let mut body = ama();
    body.properties.protected_settings = Some(json!({"workspaceKey": "TOP-SECRET-KEY"}));
    let s = c
        .put_extension(&vm, "AzureMonitorWindowsAgent", &body)
        .await
        .unwrap();
    c.complete(s).await.unwrap();
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("azure_request"), "{text}");
    assert!(text.contains("attempt=2"), "the retry is traced: {text}");
    assert!(text.contains("status=201"), "{text}");
    assert!(text.contains(&format!("{VM}/extensions/AzureMonitorWindowsAgent")));
    assert!(
        !text.contains("TOP-SECRET-KEY"),
        "protectedSettings leaked: {text}"
    );
    assert!(
        !text.contains("api-version"),
        "paths are logged without their query"
    );
}
