//! A plan's engine that fails shows why where people look (issue 15), on a real API server and
//! the simulator: a wrong Log Analytics endpoint, a wrong ARM endpoint, a 403 on the workspace, a
//! missing workspace and a scope with no machines each give the plan `Ready=False` plus
//! `Degraded` or `Blocked` with its reason and a message naming what failed within 30 s, and a
//! Warning event; once the fault is gone the plan recovers (the condition is set back to False)
//! and progresses without restarting the controllers. And what `ama-migrator simulator`
//! prints can be pasted as `run`'s endpoints: the plan reaches Ready.

mod operator_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ama_migrator::azure::{ArmClient, ClientConfig, CredentialConfig, Endpoints};
use ama_migrator::engine::simulate::Simulation;
use ama_migrator::operator::controller::{Context, run_controllers};
use ama_migrator::operator::metrics::Metrics;
use operator_support::{
    Cluster, PLANS, SimClock, cluster, condition, engine_options, events_for, plan_object,
    simulation, wait_for,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DROP: u8 = 0;
const NOT_FOUND: u8 = 1;
const FORWARD: u8 = 2;

/// A loopback address standing for a wrongly configured endpoint: it drops every connection
/// (nothing listening there), answers 404 to everything (another web server), or — once the
/// "configuration is fixed" — forwards to the simulator.
struct Endpoint {
    url: url::Url,
    mode: Arc<AtomicU8>,
}

async fn endpoint(mode: u8, target: std::net::SocketAddr) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let mode = Arc::new(AtomicU8::new(mode));
    let m = mode.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mode = m.load(Ordering::SeqCst);
            tokio::spawn(async move {
                match mode {
                    FORWARD => {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                        }
                    }
                    NOT_FOUND => {
                        // Read the request (headers and body), then answer 404 and close.
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 8192];
                        loop {
                            let Ok(n) = conn.read(&mut chunk).await else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            let text = String::from_utf8_lossy(&buf).to_string();
                            if let Some(end) = text.find("\r\n\r\n") {
                                let len = text[..end]
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length")
                                            .then(|| v.trim().parse::<usize>().ok())?
                                    })
                                    .unwrap_or(0);
                                if buf.len() >= end + 4 + len {
                                    break;
                                }
                            }
                        }
                        let body = "<html><body>404 Not Found</body></html>";
                        let resp = format!(
                            "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(resp.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    }
                    _ => drop(conn),
                }
            });
        }
    });
    Endpoint { url, mode }
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(cluster: &Cluster, simulation: &Simulation, arm: ArmClient) -> Running {
    let ctx = Context::new(
        cluster.operator_client().await,
        Arc::new(Metrics::new()),
        arm,
        Arc::new(SimClock(simulation.sim.clone())),
        engine_options(),
        Some("test-pod".into()),
    )
    .with_watch_namespaces(vec![cluster.namespace.clone()]);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_controllers(ctx, async move {
        let _ = rx.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

fn client(arm: &url::Url, log_analytics: &url::Url) -> ArmClient {
    ArmClient::new(ClientConfig::new(
        Endpoints {
            arm: arm.clone(),
            log_analytics: log_analytics.clone(),
        },
        CredentialConfig::None,
    ))
    .unwrap()
}

fn sim_url(simulation: &Simulation) -> url::Url {
    format!("{}/", simulation.sim.base_url()).parse().unwrap()
}

/// The condition `type_` of plan `fleet` if it is True with `reason`.
fn failing(cluster: &Cluster, type_: &str, reason: &str) -> Option<Value> {
    let plan = cluster.object(PLANS, "fleet")?;
    let c = condition(&plan, type_)?;
    let failing = c["status"] == "True" && c["reason"] == reason;
    failing.then_some(plan)
}

/// Wait (≤ 30 s) for `type_`=True with `reason` and a message containing every `needles`; check
/// Ready=False, the phase and a Warning event with the same reason. Returns the seconds it took.
async fn expect_failure(
    cluster: &Cluster,
    since: Instant,
    type_: &str,
    reason: &str,
    needles: &[&str],
) -> f64 {
    wait_for(
        &format!("{type_}=True reason {reason}"),
        Duration::from_secs(30),
        || failing(cluster, type_, reason).is_some(),
    )
    .await;
    let took = since.elapsed().as_secs_f64();
    let plan = failing(cluster, type_, reason).unwrap();
    let c = condition(&plan, type_).unwrap();
    let message = c["message"].as_str().unwrap_or("");
    for n in needles {
        assert!(
            message.contains(n),
            "{type_} message lacks {n:?}: {message}"
        );
    }
    assert_eq!(condition(&plan, "Ready").unwrap()["status"], "False");
    assert!(plan["status"]["phase"].is_string(), "{:#}", plan["status"]);
    wait_for("the Warning event", Duration::from_secs(10), || {
        events_for(cluster, "MigrationPlan", "fleet", reason)
            .iter()
            .any(|e| e["type"] == "Warning")
    })
    .await;
    eprintln!("{reason}: {type_}=True after {took:.1} s: {message}");
    took
}

/// Wait for the condition to be cleared by a running engine (`EngineRecovered`, or for `Blocked`
/// the engine's own status summary, `PlanAccepted`), the controllers never restarted.
async fn expect_recovery(cluster: &Cluster, type_: &str, reason: &str) -> f64 {
    let since = Instant::now();
    let recovered = |p: &Value| {
        condition(p, type_).is_some_and(|c| c["status"] == "False" && c["reason"] != reason)
            && ["Progressing", "Completed"].contains(&p["status"]["phase"].as_str().unwrap_or(""))
    };
    loop {
        let plan = cluster.object(PLANS, "fleet").unwrap_or_default();
        if recovered(&plan) {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(90),
            "{type_} not cleared 90 s after fixing {reason}: {:#}",
            plan["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One Warning per distinct message, not one per retry.
    let warnings = events_for(cluster, "MigrationPlan", "fleet", reason);
    assert!(warnings.len() <= 2, "{} {reason} events", warnings.len());
    let took = since.elapsed().as_secs_f64();
    eprintln!("{reason}: recovered {took:.1} s after the fix");
    took
}

fn new_plan(cluster: &Cluster, simulation: &Simulation, edit: impl FnOnce(&mut Value)) {
    let mut plan = plan_object(simulation, &cluster.namespace, "fleet");
    plan["metadata"]["annotations"]["amamigrator.io/approve-wave"] = json!("canary, medium");
    edit(&mut plan);
    cluster.create(PLANS, plan);
}

async fn merge_spec(client: &kube::Client, ns: &str, spec: Value) {
    let api: kube::Api<ama_migrator::api::MigrationPlan> =
        kube::Api::namespaced(client.clone(), ns);
    api.patch(
        "fleet",
        &Default::default(),
        &kube::api::Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_log_analytics_endpoint_degrades_the_plan_until_it_is_fixed() {
    let Some((cluster, _)) = cluster("fail-la").await else {
        return;
    };
    let simulation = simulation(8).await;
    let la = endpoint(NOT_FOUND, simulation.sim.addr()).await;
    new_plan(&cluster, &simulation, |_| {});
    let since = Instant::now();
    let running = start(
        &cluster,
        &simulation,
        client(&sim_url(&simulation), &la.url),
    )
    .await;
    let la_query = format!("{}v1/workspaces/", la.url);
    expect_failure(
        &cluster,
        since,
        "Degraded",
        "LogAnalyticsQueryFailed",
        &[la_query.as_str(), "HTTP 404", "--log-analytics-endpoint"],
    )
    .await;
    assert_eq!(
        cluster.object(PLANS, "fleet").unwrap()["status"]["phase"],
        "Failed"
    );
    la.mode.store(FORWARD, Ordering::SeqCst);
    expect_recovery(&cluster, "Degraded", "LogAnalyticsQueryFailed").await;
    running.stop().await;
    simulation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_arm_endpoint_degrades_the_plan_until_it_answers() {
    let Some((cluster, _)) = cluster("fail-arm").await else {
        return;
    };
    let simulation = simulation(8).await;
    let arm = endpoint(DROP, simulation.sim.addr()).await;
    new_plan(&cluster, &simulation, |_| {});
    let since = Instant::now();
    let running = start(
        &cluster,
        &simulation,
        client(&arm.url, &sim_url(&simulation)),
    )
    .await;
    let host = arm.url.as_str().trim_end_matches('/').to_string();
    expect_failure(
        &cluster,
        since,
        "Degraded",
        "AzureEndpointUnreachable",
        &[host.as_str(), "--arm-endpoint"],
    )
    .await;
    arm.mode.store(FORWARD, Ordering::SeqCst);
    expect_recovery(&cluster, "Degraded", "AzureEndpointUnreachable").await;
    running.stop().await;
    simulation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_403_on_the_workspace_blocks_the_plan_until_access_is_granted() {
    let Some((cluster, _)) = cluster("fail-403").await else {
        return;
    };
    let simulation = simulation(8).await;
    let workspace = simulation.sim.workspace_resource_id();
    simulation
        .sim
        .inject(ama_migrator::sim::Fault::Forbidden {
            scope: workspace.clone(),
        })
        .unwrap();
    new_plan(&cluster, &simulation, |_| {});
    let since = Instant::now();
    let running = start(&cluster, &simulation, simulation.client.clone()).await;
    expect_failure(
        &cluster,
        since,
        "Blocked",
        "AuthorizationFailed",
        &[
            "HTTP 403",
            "AuthorizationFailed",
            "deploy/azure-custom-role.json",
        ],
    )
    .await;
    assert_eq!(
        cluster.object(PLANS, "fleet").unwrap()["status"]["phase"],
        "Blocked"
    );
    simulation.sim.clear_faults();
    expect_recovery(&cluster, "Blocked", "AuthorizationFailed").await;
    running.stop().await;
    simulation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_workspace_blocks_the_plan_until_the_spec_names_one() {
    let Some((cluster, client)) = cluster("fail-ws").await else {
        return;
    };
    let simulation = simulation(8).await;
    let workspace = simulation.sim.workspace_resource_id();
    let (parent, _) = workspace.rsplit_once('/').unwrap();
    let missing = format!("{parent}/no-such-workspace");
    let m = missing.clone();
    new_plan(&cluster, &simulation, |p| p["spec"]["workspace"] = json!(m));
    let since = Instant::now();
    let running = start(&cluster, &simulation, simulation.client.clone()).await;
    expect_failure(
        &cluster,
        since,
        "Blocked",
        "WorkspaceNotFound",
        &[missing.as_str(), "spec.workspace"],
    )
    .await;
    merge_spec(
        &client,
        &cluster.namespace,
        json!({ "workspace": workspace }),
    )
    .await;
    expect_recovery(&cluster, "Blocked", "WorkspaceNotFound").await;
    running.stop().await;
    simulation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_scope_blocks_the_plan_until_the_scope_selects_machines() {
    let Some((cluster, client)) = cluster("fail-scope").await else {
        return;
    };
    let simulation = simulation(8).await;
    new_plan(&cluster, &simulation, |p| {
        p["spec"]["scope"]["tagSelector"] = json!({"team": "nobody"});
    });
    let since = Instant::now();
    let running = start(&cluster, &simulation, simulation.client.clone()).await;
    expect_failure(
        &cluster,
        since,
        "Blocked",
        "NoMachinesInScope",
        &["nobody", "spec.scope"],
    )
    .await;
    merge_spec(
        &client,
        &cluster.namespace,
        json!({"scope": {"tagSelector": null}}),
    )
    .await;
    expect_recovery(&cluster, "Blocked", "NoMachinesInScope").await;
    running.stop().await;
    simulation.shutdown().await;
}

/// The endpoints as `ama-migrator simulator` prints them, given to `run`'s flags.
#[derive(clap::Parser)]
struct RunFlags {
    #[command(flatten)]
    azure: ama_migrator::cli::azure_args::AzureEndpointArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_simulators_printed_endpoints_pasted_into_run_reach_ready() {
    let Some((cluster, _)) = cluster("fail-paste").await else {
        return;
    };
    let simulation = simulation(8).await;
    let base = simulation.sim.base_url();
    // What the simulator prints: "ARM / Resource Graph endpoint: {base}" and
    // "Log Analytics endpoint: {base}/v1".
    let printed_la = format!("{base}/v1");
    let flags = <RunFlags as clap::Parser>::try_parse_from([
        "run",
        "--arm-endpoint",
        base.as_str(),
        "--log-analytics-endpoint",
        printed_la.as_str(),
    ])
    .unwrap();
    let arm = flags.azure.client("none").unwrap();
    new_plan(&cluster, &simulation, |_| {});
    let running = start(&cluster, &simulation, arm).await;
    let since = Instant::now();
    wait_for("the plan to be Ready", Duration::from_secs(150), || {
        cluster
            .object(PLANS, "fleet")
            .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
            .unwrap_or(false)
    })
    .await;
    eprintln!(
        "pasted endpoints: Ready after {:.1} s",
        since.elapsed().as_secs_f64()
    );
    let plan = cluster.object(PLANS, "fleet").unwrap();
    assert!(condition(&plan, "Degraded").is_none_or(|c| c["status"] == "False"));
    assert!(
        simulation
            .sim
            .request_log()
            .iter()
            .all(|r| !r.path.to_ascii_lowercase().starts_with("/v1/v1")),
        "a query went to /v1/v1"
    );
    running.stop().await;
    simulation.shutdown().await;
}
