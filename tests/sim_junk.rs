//! The simulator, served over real HTTP, survives junk: an oversized body is a 413, a deeply nested KQL
//! query a 400 `BadArgumentError`, malformed JSON to ARM writes a 400 ARM error, unknown paths and bad
//! api-versions ARM errors; after each the server still serves. The request log stays bounded under
//! many large requests, and the KQL parser never panics on arbitrary input (property tests).

use ama_migrator::sim::kql;
use ama_migrator::sim::{
    BucketConfig, RequestLogLimits, Scenario, SimHandle, Simulator, ThrottleConfig,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CMP: &str = "api-version=2024-11-01";
const INS: &str = "api-version=2023-03-11";
const LAW: &str = "api-version=2025-02-01";
const MIB: usize = 1024 * 1024;

async fn start(s: Scenario) -> SimHandle {
    Simulator::start(s, "127.0.0.1:0")
        .await
        .expect("the simulator starts")
}

/// A small fleet; throttling out of the way (these tests send hundreds of requests in a burst).
fn scenario() -> Scenario {
    let ample = BucketConfig {
        size: 1e9,
        refill_per_sec: 1e9,
    };
    Scenario {
        machines: 10,
        time_scale: 0.0,
        throttle: ThrottleConfig {
            reads: ample,
            writes: ample,
            deletes: ample,
            compute_update: ample,
        },
        ..Scenario::default()
    }
}

struct R {
    status: u16,
    text: String,
    body: Value,
}

async fn send(what: &str, req: reqwest::RequestBuilder) -> R {
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no response: {:?}", e.without_url()));
    let status = r.status().as_u16();
    let text = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("{what}: unreadable body: {:?}", e.without_url()));
    R {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// The response is an ARM error `{"error":{"code","message"}}` with a 4xx status.
fn assert_arm_error(what: &str, r: &R) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected a 4xx, got {} {}",
        r.status,
        r.text
    );
    assert!(
        r.body["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            && r.body["error"]["message"].as_str().is_some(),
        "{what}: not an ARM error body: {} {}",
        r.status,
        r.text
    );
}

/// A running Windows VM of the fleet (ARM id).
fn vm(sim: &SimHandle) -> String {
    sim.snapshot()["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["kind"] == "AzureVM"
                && m["os"] == "Windows"
                && m["running"] == true
                && m["outOfScope"] == false
        })
        .and_then(|m| m["id"].as_str())
        .expect("a Windows VM in the fleet")
        .to_string()
}

/// A normal request still gets a normal answer.
async fn still_serves(sim: &SimHandle, after: &str) {
    let c = reqwest::Client::new();
    let r = send(after, c.get(format!("{}{}?{CMP}", sim.base_url(), vm(sim)))).await;
    assert_eq!(r.status, 200, "after {after}: {}", r.text);
    assert!(r.body["id"].is_string(), "after {after}: {}", r.text);
}

/// Send a raw HTTP/1.1 request head, then `chunks` of body (stopping quietly if the server has
/// closed), and return the response text (empty when the connection was cut first).
async fn raw(sim: &SimHandle, head: &str, chunks: impl Iterator<Item = Vec<u8>>) -> String {
    let mut s = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect to the simulator");
    s.write_all(head.as_bytes()).await.expect("send the head");
    for c in chunks {
        if s.write_all(&c).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response (`Content-Length` framed).
fn raw_json(resp: &str) -> Value {
    resp.split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_413_with_an_arm_error_naming_the_limit() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let ext = format!(
        "{}{}/extensions/AzureMonitorWindowsAgent?{CMP}",
        sim.base_url(),
        vm(&sim)
    );
    // Declared by Content-Length, and sent.
    let r = send(
        "5 MiB PUT",
        c.put(&ext)
            .header("content-type", "application/json")
            .body(vec![b' '; 5 * MIB]),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_arm_error("5 MiB PUT", &r);
    assert_eq!(r.body["error"]["code"], "RequestEntityTooLarge");
    let msg = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("4194304 bytes (4 MiB)"), "{msg}");
    assert!(msg.contains("5242880"), "names the declared size: {msg}");
    still_serves(&sim, "a 5 MiB body").await;

    // Exactly the limit is read (and is then just bad JSON).
    let r = send("4 MiB PUT", c.put(&ext).body(vec![b'x'; 4 * MIB])).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "InvalidRequestContent");

    // Declared far beyond the limit, nothing sent: answered at once, nothing buffered.
    let resp = raw(
        &sim,
        &format!(
            "PUT {}/extensions/x?{CMP} HTTP/1.1\r\nhost: sim\r\ncontent-length: 1000000000000\r\nconnection: close\r\n\r\n",
            vm(&sim)
        ),
        std::iter::empty(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(raw_json(&resp)["error"]["code"], "RequestEntityTooLarge");

    // Chunked, no length: cut off once past the limit.
    let chunk = {
        let data = vec![b'a'; 256 * 1024];
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(&data);
        c.extend_from_slice(b"\r\n");
        c
    };
    let resp = raw(
        &sim,
        &format!(
            "PUT {}/extensions/x?{CMP} HTTP/1.1\r\nhost: sim\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            vm(&sim)
        ),
        std::iter::repeat_n(chunk, 24).chain(std::iter::once(b"0\r\n\r\n".to_vec())),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let body = raw_json(&resp);
    assert_eq!(body["error"]["code"], "RequestEntityTooLarge", "{resp}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("longer than the limit of 4194304 bytes")),
        "{resp}"
    );
    still_serves(&sim, "a chunked 6 MiB body").await;
    sim.shutdown().await;
}

fn nested(levels: usize) -> String {
    format!(
        "Heartbeat | where {}Computer == 'a'{} | count",
        "(".repeat(levels),
        ")".repeat(levels)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_kql_is_400_bad_argument_naming_the_limit() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let url = format!(
        "{}/v1/workspaces/{}/query",
        sim.base_url(),
        sim.workspace_customer_id()
    );
    // 3,000 levels (6 KB) overflowed the parser's stack and killed the process.
    for levels in [kql::MAX_NESTING_DEPTH + 1, 3_000, 100_000] {
        let what = format!("{levels} nested parentheses");
        let r = send(&what, c.post(&url).json(&json!({"query": nested(levels)}))).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "BadArgumentError", "{what}");
        let inner = r.body["error"]["innererror"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            inner.contains("nesting depth limit is 64")
                && inner.contains(&format!(
                    "position {}",
                    "Heartbeat | where ".len() + kql::MAX_NESTING_DEPTH
                )),
            "{what}: {inner}"
        );
        still_serves(&sim, &what).await;
    }
    // The same by GET ?query=.
    let mut get = url::Url::parse(&url).expect("the query URL");
    get.query_pairs_mut().append_pair("query", &nested(5_000));
    let r = send("GET nested", c.get(get)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "BadArgumentError");
    // At the limit the query runs.
    let r = send(
        "64 levels",
        c.post(&url)
            .json(&json!({"query": nested(kql::MAX_NESTING_DEPTH)})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_to_arm_writes_is_a_400_arm_error() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let vm = vm(&sim);
    let ws = sim.workspace_resource_id();
    let sub = &sim.subscriptions()[0];
    let dcr = format!(
        "/subscriptions/{sub}/resourceGroups/rg-dcr/providers/Microsoft.Insights/dataCollectionRules/junk"
    );
    let writes: Vec<(reqwest::Method, String)> = vec![
        (
            reqwest::Method::PUT,
            format!("{vm}/extensions/AzureMonitorWindowsAgent?{CMP}"),
        ),
        (reqwest::Method::PATCH, format!("{vm}?{CMP}")),
        (reqwest::Method::PUT, format!("{dcr}?{INS}")),
        (
            reqwest::Method::PUT,
            format!("{vm}/providers/Microsoft.Insights/dataCollectionRuleAssociations/junk?{INS}"),
        ),
        (reqwest::Method::PUT, format!("{ws}/dataSources/junk?{LAW}")),
        (
            reqwest::Method::POST,
            "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01".to_string(),
        ),
    ];
    let deep_json = format!("{{\"properties\":{}", "[".repeat(10_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated object",
            b"{\"location\": \"westeurope\", \"properties\": {".to_vec(),
        ),
        ("not JSON", b"not json at all".to_vec()),
        ("non-UTF-8", vec![0xff, 0xfe, 0x80, 0x00, 0xc3, 0x28]),
        (
            "non-UTF-8 in a string",
            b"{\"location\": \"\xff\xfe\"}".to_vec(),
        ),
        (
            "trailing garbage",
            b"{\"location\": \"westeurope\"} }".to_vec(),
        ),
        ("10,000 nested arrays", deep_json.into_bytes()),
        ("a lone surrogate", b"{\"location\": \"\\ud800\"}".to_vec()),
    ];
    for (method, path) in &writes {
        for (kind, body) in &bodies {
            let what = format!("{method} {path} with {kind}");
            let r = send(
                &what,
                c.request(method.clone(), format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
            assert_eq!(r.status, 400, "{what}: {}", r.text);
            assert_arm_error(&what, &r);
        }
        // Valid JSON of the wrong shape is refused too, never a 5xx.
        for body in [
            json!(null),
            json!([]),
            json!("text"),
            json!(7),
            json!({"properties": 5}),
            json!({"location": ["x"], "properties": {"settings": "x"}}),
        ] {
            let what = format!("{method} {path} with {body}");
            let r = send(
                &what,
                c.request(method.clone(), format!("{base}{path}"))
                    .json(&body),
            )
            .await;
            assert!(r.status < 500, "{what}: {} {}", r.status, r.text);
            if r.status >= 400 {
                assert_arm_error(&what, &r);
            }
        }
        still_serves(&sim, &format!("junk to {method} {path}")).await;
    }
    // The Log Analytics query API keeps its own error shape, with code BadArgumentError.
    let url = format!("{base}/v1/workspaces/{}/query", sim.workspace_customer_id());
    for (kind, body) in &bodies {
        let what = format!("LA query with {kind}");
        let r = send(&what, c.post(&url).body(body.clone())).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "BadArgumentError", "{what}");
    }
    for body in [
        json!(null),
        json!({"query": 5}),
        json!({"query": ""}),
        json!([]),
    ] {
        let what = format!("LA query with {body}");
        let r = send(&what, c.post(&url).json(&body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "BadArgumentError", "{what}");
    }
    still_serves(&sim, "junk to the query API").await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_methods_and_api_versions_are_arm_errors() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let vm = vm(&sim);
    let sub = &sim.subscriptions()[0];
    let rg = format!("/subscriptions/{sub}/resourceGroups/rg");
    let long_path = "/a".repeat(2_000);
    let paths = vec![
        "/".to_string(),
        "/subscriptions".to_string(),
        format!("/subscriptions/{sub}"),
        format!("{rg}/providers/Microsoft.Compute/virtualMachines?{CMP}"),
        format!("{rg}/providers/Microsoft.HybridCompute/machines?api-version=2024-07-10"),
        format!("{rg}/providers/Microsoft.Insights/dataCollectionRules?{INS}"),
        format!("{rg}/providers/Microsoft.OperationalInsights/workspaces?{LAW}"),
        format!("{rg}/providers/Microsoft.Compute?{CMP}"),
        format!("{rg}/providers?{CMP}"),
        format!("/subscriptions/{sub}/providers/Microsoft.Compute/locations/x/operations?{CMP}"),
        format!("{vm}/extensions/a/b/c/d?{CMP}"),
        format!("{vm}/providers/Microsoft.Insights/dataCollectionRuleAssociations/a/b?{INS}"),
        format!("{vm}/providers/Microsoft.Insights?{INS}"),
        format!("/providers/Microsoft.Nope/things?{CMP}"),
        "/providers/Microsoft.ResourceGraph?api-version=2024-04-01".to_string(),
        format!("/%ff%fe/providers/%00/x?{CMP}"),
        format!(
            "{rg}/providers/Microsoft.Compute/virtualMachines/%F0%9F%92%A5/extensions/%ff?{CMP}"
        ),
        format!("{long_path}?{CMP}"),
        "/v1".to_string(),
        "/v1/workspaces".to_string(),
        "/v1/workspaces/not-a-workspace/query".to_string(),
        "/v1/workspaces/x/query/extra".to_string(),
    ];
    let methods = [
        "GET", "PUT", "PATCH", "DELETE", "POST", "OPTIONS", "HEAD", "BREW",
    ];
    for path in &paths {
        for m in methods {
            let method = reqwest::Method::from_bytes(m.as_bytes()).expect("a method token");
            let what = format!("{m} {path}");
            let r = send(
                &what,
                c.request(method, format!("{base}{path}")).json(&json!({})),
            )
            .await;
            assert!(
                (400..500).contains(&r.status),
                "{what}: expected a 4xx, got {} {}",
                r.status,
                r.text
            );
            if m != "HEAD" {
                assert!(
                    r.body["error"]["code"].is_string(),
                    "{what}: not an error body: {}",
                    r.text
                );
            }
        }
    }
    still_serves(&sim, "unknown paths").await;

    // api-version: missing, wrong, junk.
    for (q, code) in [
        ("", "MissingApiVersionParameter"),
        ("?api-version=2019-01-01", "InvalidApiVersionParameter"),
        ("?api-version=%ff%00junk", "InvalidApiVersionParameter"),
        ("?api-version=", "InvalidApiVersionParameter"),
        ("?API-VERSION=1&api-version=2", "InvalidApiVersionParameter"),
    ] {
        let what = format!("GET the VM with {q:?}");
        let r = send(&what, c.get(format!("{base}{vm}{q}"))).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.text);
    }
    still_serves(&sim, "bad api-versions").await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_query_strings_and_headers_do_not_stop_the_server() {
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let vm = vm(&sim);
    // A 60 KB query string (about the most an `http::Uri` holds): read, parsed, answered.
    let junk = "x".repeat(30_000);
    let r = send(
        "60 KB query string",
        c.get(format!("{base}{vm}?{CMP}&junk={junk}&{junk}=1")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(300)]);
    // A 1 MiB request line is refused by the HTTP layer (an error status, or the connection closed).
    let resp = raw(
        &sim,
        &format!(
            "GET {vm}?{CMP}&junk={} HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n",
            "x".repeat(MIB)
        ),
        std::iter::empty(),
    )
    .await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 4"),
        "{}",
        &resp[..resp.len().min(300)]
    );
    // Many parameters.
    let many: String = (0..5_000).map(|i| format!("&p{i}={i}")).collect();
    let r = send("5,000 parameters", c.get(format!("{base}{vm}?{CMP}{many}"))).await;
    assert_eq!(r.status, 200);
    // A 1 MiB header is refused by the HTTP layer (431, or the connection is closed).
    if let Ok(r) = c
        .get(format!("{base}{vm}?{CMP}"))
        .header("x-junk", "y".repeat(MIB))
        .send()
        .await
    {
        assert_eq!(r.status().as_u16(), 431);
    }
    // A non-UTF-8 User-Agent is accepted (not recorded as text).
    let resp = raw(
        &sim,
        &format!("GET {vm}?{CMP} HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n"),
        [b"user-agent: \xff\xfe\x80\r\n\r\n".to_vec()].into_iter(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Not HTTP at all.
    let resp = raw(&sim, "\x00\x01\x02 garbage\r\n\r\n", std::iter::empty()).await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );
    still_serves(&sim, "huge query strings and headers").await;
    sim.shutdown().await;
}

/// Recorded text of the request and response bodies of the log.
fn body_bytes(log: &[ama_migrator::sim::RequestRecord]) -> usize {
    log.iter()
        .map(|r| {
            r.request_body.as_ref().map_or(0, |b| b.to_string().len())
                + r.response_body.as_ref().map_or(0, |b| b.to_string().len())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_stays_bounded_under_many_large_requests() {
    // Default limits: each recorded body is cut to 64 KiB with a marker.
    let sim = start(scenario()).await;
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let big = json!({"blob": "z".repeat(4 * MIB - 100)});
    let sent = big.to_string().len();
    assert!(sent <= 4 * MIB);
    for i in 0..12 {
        let r = send(
            "4 MiB JSON to an unknown path",
            c.put(format!("{base}/nowhere/{i}")).json(&big),
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
    let log = sim.request_log();
    assert_eq!(log.len(), 12);
    let limits = RequestLogLimits::default();
    for r in &log {
        let body = r
            .request_body
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(
            body.len() < limits.max_body_bytes + 200,
            "a recorded body of {} bytes",
            body.len()
        );
        assert!(
            body.ends_with(&format!(
                "[truncated by the simulator's request log: {} of {sent} bytes cut; it keeps {} bytes of a body]",
                sent - limits.max_body_bytes,
                limits.max_body_bytes
            )),
            "{}",
            &body[body.len().saturating_sub(200)..]
        );
    }
    assert!(body_bytes(&log) < 12 * (limits.max_body_bytes + 1_000));
    still_serves(&sim, "twelve 4 MiB bodies").await;
    sim.shutdown().await;

    // Small limits: the ring keeps the newest records and counts the others.
    let limits = RequestLogLimits {
        max_records: 50,
        max_body_bytes: 10_000,
        max_total_bytes: 200_000,
    };
    let sim = start(Scenario {
        request_log: limits.clone(),
        ..scenario()
    })
    .await;
    let base = sim.base_url();
    // Large bodies: the byte budget binds first.
    let body = json!({"blob": "q".repeat(50_000)});
    for i in 0..300 {
        let r = send("PUT", c.put(format!("{base}/nowhere/{i}")).json(&body)).await;
        assert_eq!(r.status, 404);
    }
    let log = sim.request_log();
    assert!(log.len() < limits.max_records, "{} records", log.len());
    assert!(
        body_bytes(&log) <= limits.max_total_bytes,
        "{} body bytes",
        body_bytes(&log)
    );
    assert_eq!(log.len() as u64 + sim.request_log_dropped(), 300);
    // Small requests: the record count binds.
    for i in 0..100 {
        let r = send("GET", c.get(format!("{base}/nowhere/small/{i}"))).await;
        assert_eq!(r.status, 404);
    }
    let log = sim.request_log();
    assert_eq!(log.len(), limits.max_records);
    assert_eq!(log.len() as u64 + sim.request_log_dropped(), 400);
    assert_eq!(log.last().map(|r| r.seq), Some(399));
    assert_eq!(
        log.last().map(|r| r.path.as_str()),
        Some("/nowhere/small/99")
    );
    let listed = send("GET /_sim/requests", c.get(format!("{base}/_sim/requests"))).await;
    assert_eq!(listed.body["dropped"], json!(sim.request_log_dropped()));
    assert_eq!(
        listed.body["value"].as_array().map(Vec::len),
        Some(log.len())
    );
    sim.clear_request_log();
    assert_eq!(sim.request_log_dropped(), 0);
    still_serves(&sim, "300 requests into a 50-record log").await;
    assert_eq!(sim.request_log().len(), 1);
    sim.shutdown().await;
}
