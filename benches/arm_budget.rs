//! Budget benchmark: a loopback server enforces an ARM-like write token bucket of N writes/s
//! (capacity N, refill N/s; 429 + Retry-After when empty, `x-ms-ratelimit-remaining-subscription-writes`
//! on every answer). The client, configured with the same bucket shape, performs a steady run of
//! 10·N writes from many concurrent tasks. Prints achieved writes/s, the limit, their ratio and
//! the 429s received. Target: zero 429 and ≥ 90 % of N.
//!
//! By default the server is the Azure simulator (`crate::sim`) with its write bucket set to N/s;
//! `-- --stub` uses a minimal in-file server with the same bucket instead.
//!
//! `cargo bench --bench arm_budget [-- N] [-- --stub]` (default N = 20 → ~10 s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ama_migrator::azure::{
    ArmClient, BucketShape, BudgetConfig, ClientConfig, CredentialConfig, Endpoints, ResourceId,
    WorkspaceDataSource,
};
use ama_migrator::sim::{BucketConfig, Scenario, Simulator, ThrottleConfig};
use axum::http::StatusCode;
use axum::response::IntoResponse;

/// The server-side bucket, as ARM applies it.
struct ServerBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl ServerBucket {
    fn draw(&mut self) -> Result<f64, f64> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.tokens)
        } else {
            Err((1.0 - self.tokens) / self.rate)
        }
    }
}

struct ServerStats {
    ok: AtomicU64,
    throttled: AtomicU64,
}

async fn start_server(n: f64) -> (url::Url, Arc<ServerStats>) {
    let bucket = Arc::new(Mutex::new(ServerBucket {
        capacity: n,
        rate: n,
        tokens: n,
        at: Instant::now(),
    }));
    let stats = Arc::new(ServerStats {
        ok: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
    });
    let st = stats.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (bucket, stats) = (bucket.clone(), st.clone());
        async move {
            let drawn = bucket.lock().map(|mut b| b.draw()).unwrap_or(Err(1.0));
            match drawn {
                Ok(remaining) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    let body = serde_json::json!({"id": uri.path(), "name": "a", "kind": "WindowsEvent",
                        "properties": {"eventLogName": "System", "eventTypes": [{"eventType": "Error"}]}});
                    let mut r = axum::Json(body).into_response();
                    r.headers_mut().insert(
                        "x-ms-ratelimit-remaining-subscription-writes",
                        (remaining.floor() as u64).into(),
                    );
                    r
                }
                Err(wait) => {
                    stats.throttled.fetch_add(1, Ordering::Relaxed);
                    let body = serde_json::json!({"error": {"code": "TooManyRequests", "message": "write bucket empty"}});
                    let mut r = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
                    r.headers_mut()
                        .insert("retry-after", (wait.ceil().max(1.0) as u64).into());
                    r.headers_mut()
                        .insert("x-ms-ratelimit-remaining-subscription-writes", 0u64.into());
                    r
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url =
        url::Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, stats)
}

const STUB_WORKSPACE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws";

/// The server under test: its base URL, the workspace to write to, and a 429 counter.
async fn target(n: f64, stub: bool) -> (url::Url, String, Box<dyn Fn() -> u64>) {
    if stub {
        let (url, stats) = start_server(n).await;
        return (
            url,
            STUB_WORKSPACE.to_string(),
            Box::new(move || stats.throttled.load(Ordering::Relaxed)),
        );
    }
    let bucket = BucketConfig {
        size: n,
        refill_per_sec: n,
    };
    let scenario = Scenario {
        machines: 10,
        throttle: ThrottleConfig {
            writes: bucket,
            ..ThrottleConfig::default()
        },
        ..Scenario::default()
    };
    let sim = Simulator::start(scenario, "127.0.0.1:0")
        .await
        .expect("simulator starts");
    let url = url::Url::parse(&sim.base_url()).expect("simulator URL");
    let ws = sim.workspace_resource_id();
    let sim = Arc::new(sim);
    (
        url,
        ws,
        Box::new(move || sim.request_log().iter().filter(|r| r.status == 429).count() as u64),
    )
}

async fn run(n: f64, writes_per_n: f64, concurrency: usize, stub: bool) {
    let (url, workspace, server_429s) = target(n, stub).await;
    let workspace = ResourceId::parse(&workspace).expect("workspace id");
    let mut cfg = ClientConfig::new(Endpoints::single(url), CredentialConfig::None);
    cfg.budget = BudgetConfig {
        writes: BucketShape::new(n, n),
        ..Default::default()
    };
    let client = ArmClient::new(cfg).expect("client");
    let total = (writes_per_n * n) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let done_at = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, done_at, ws) = (
                client.clone(),
                next.clone(),
                done_at.clone(),
                workspace.clone(),
            );
            tokio::spawn(async move {
                let source = WorkspaceDataSource {
                    id: None,
                    name: None,
                    resource_type: None,
                    kind: "WindowsEvent".into(),
                    properties: serde_json::json!({"eventLogName": "System", "eventTypes": [{"eventType": "Error"}]}),
                    etag: None,
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<(), String>(());
                    }
                    client
                        .put_data_source(&ws, &format!("bench-{i}"), &source)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Ok(mut d) = done_at.lock() {
                        d.push(start.elapsed());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("write failed: {e}"),
            Err(e) => eprintln!("task failed: {e}"),
        }
    }
    let elapsed = start.elapsed();
    let mut times = done_at.lock().map(|d| d.clone()).unwrap_or_default();
    times.sort();
    let completed = times.len() as f64;
    let overall = completed / elapsed.as_secs_f64();
    // Steady state: after the initial burst of `n` (the bucket's capacity) has been spent.
    let steady = match (times.get(n as usize), times.last()) {
        (Some(a), Some(b)) if b > a => (completed - n - 1.0) / (*b - *a).as_secs_f64(),
        _ => 0.0,
    };
    let m = client.metrics();
    println!(
        "arm_budget: limit N = {n} writes/s (bucket capacity {n}), {total} writes, {concurrency} concurrent tasks"
    );
    println!(
        "arm_budget: completed {completed} in {:.2} s; achieved {overall:.2} writes/s overall (ratio {:.3}), {steady:.2} writes/s steady after the burst (ratio {:.3})",
        elapsed.as_secs_f64(),
        overall / n,
        steady / n
    );
    println!(
        "arm_budget: server = {}; 429 received = {} (server counted {}), retries = {}",
        if stub {
            "in-file stub"
        } else {
            "Azure simulator"
        },
        m.throttled,
        server_429s(),
        m.retries,
    );
    let verdict = m.throttled == 0 && steady / n >= 0.9;
    println!(
        "arm_budget: target (zero 429, steady ≥ 90 % of N): {}",
        if verdict { "MET" } else { "NOT MET" }
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the first numeric argument is N. Without `--bench`
    // (`cargo test --all-targets` runs this too) a one-second smoke run keeps the suite fast.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let n = args
        .iter()
        .find_map(|a| a.parse::<f64>().ok())
        .filter(|n| *n >= 1.0)
        .unwrap_or(if bench { 20.0 } else { 50.0 });
    let writes_per_n = if bench { 10.0 } else { 2.0 };
    let stub = args.iter().any(|a| a == "--stub");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(n, writes_per_n, 32, stub));
}
