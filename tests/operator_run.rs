//! `ama-migrator run`: the HTTP endpoints served in-process, leader election of two replicas
//! against a real API server (hand-over within ~2 s of a release), and the binary failing clearly
//! without a cluster.

mod operator_support;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ama_migrator::azure::ResourceId;
use ama_migrator::engine::{EngineOptions, SimulateOptions, SystemClock};
use ama_migrator::operator::controller::Context;
use ama_migrator::operator::leader::{
    self, Health, LeaderConfig, LeaderState, LeaseTiming, Outcome,
};
use ama_migrator::operator::metrics::Metrics;
use ama_migrator::operator::serve;
use ama_migrator::sim::Scenario;

async fn start_server(
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve::serve(
        listener,
        serve::router(metrics, health),
        async move {
            let _ = rx.await;
        },
    ));
    (url, tx)
}

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_healthz_and_readyz_are_served() {
    let simulation = ama_migrator::engine::simulate::Simulation::start(SimulateOptions {
        scenario: Scenario {
            machines: 2,
            ..Scenario::default()
        },
        ..SimulateOptions::default()
    })
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    metrics.observe_arm_client(simulation.client.clone());
    // One real ARM round trip so the request family has a sample (the simulator answers 404).
    let missing = ResourceId::parse(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/nope",
    )
    .unwrap();
    assert!(
        simulation
            .client
            .get_machine(&missing)
            .await
            .unwrap()
            .is_none()
    );
    metrics.set_plan_steps(
        "team-a",
        "fleet",
        std::collections::HashMap::from([("InstallAma".to_string(), 2)]),
    );
    let health = Arc::new(Health::default());
    let (url, stop) = start_server(metrics.clone(), health.clone()).await;

    let (status, ct, body) = get(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, serve::OPENMETRICS_CONTENT_TYPE);
    assert!(
        body.contains("# TYPE ama_migrator_machines gauge"),
        "{body}"
    );
    assert!(
        body.contains(
            r#"ama_migrator_machines{namespace="team-a",plan="fleet",step="InstallAma"} 2"#
        ),
        "{body}"
    );
    assert!(
        body.contains("# TYPE ama_migrator_arm_requests counter"),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("ama_migrator_arm_requests_total{")
                && l.contains(r#"status="404""#)),
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");

    let (status, _, body) = get(&format!("{url}/healthz")).await;
    assert_eq!((status, body.trim()), (200, "ok"));

    // Readiness follows the leader state: unknown → not ready; standby → ready; leader →
    // ready only once its caches synced.
    for (state, code) in [
        (LeaderState::Unknown, 503),
        (LeaderState::Standby, 200),
        (
            LeaderState::Leading {
                caches_synced: false,
            },
            503,
        ),
        (
            LeaderState::Leading {
                caches_synced: true,
            },
            200,
        ),
    ] {
        health.set(state);
        let (status, _, body) = get(&format!("{url}/readyz")).await;
        assert_eq!(status, code, "{state:?}: {body}");
    }
    let _ = stop.send(());
    simulation.shutdown().await;
}

async fn wait_for_state(health: &Health, want: LeaderState, limit: Duration) {
    let start = Instant::now();
    while health.get() != want {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {want:?}; now {:?}",
            health.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn replica(
    ops: &operator_support::Cluster,
    identity: &str,
) -> (kube::Client, Arc<Context>, LeaderConfig) {
    let client = ops.operator_client().await;
    let arm = ama_migrator::azure::ArmClient::new(ama_migrator::azure::ClientConfig::new(
        ama_migrator::azure::Endpoints {
            arm: "http://127.0.0.1:9/".parse().unwrap(),
            log_analytics: "http://127.0.0.1:9/".parse().unwrap(),
        },
        ama_migrator::azure::CredentialConfig::None,
    ))
    .unwrap();
    let ctx = Context::new(
        client.clone(),
        Arc::new(Metrics::new()),
        arm,
        Arc::new(SystemClock),
        EngineOptions::default(),
        Some(identity.into()),
    )
    .with_watch_namespaces(vec!["team-a".into()]);
    let config = LeaderConfig {
        lease_name: "ama-migrator".into(),
        namespace: "ops".into(),
        identity: identity.into(),
        // A Lease much longer than the hand-over allowed: a standby that waited for it to expire
        // instead of taking the released Lease would fail the test.
        timing: LeaseTiming {
            duration: 15,
            grace: 5,
        },
        stop_grace: Duration::from_secs(5),
    };
    (client, ctx, config)
}

/// A replica running `leader::lead` as `identity`: its health, the stop signal, the task.
struct Replica {
    health: Arc<Health>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Outcome, leader::LeaderError>>,
}

async fn start_replica(ops: &operator_support::Cluster, identity: &str) -> Replica {
    let (client, ctx, config) = replica(ops, identity).await;
    let health = Arc::new(Health::default());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let h = health.clone();
    let task = tokio::spawn(async move {
        leader::lead(client, &config, ctx, h, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    Replica { health, stop, task }
}

impl Replica {
    /// Stops it (as on SIGTERM) and asserts it shut down cleanly.
    async fn shut_down(self) {
        let _ = self.stop.send(());
        let outcome = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(outcome, Outcome::Shutdown);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_leads_and_a_released_lease_passes_to_the_standby() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(cp) = operator_support::control_plane::shared() else {
        return;
    };
    cp.cluster("team-a");
    let ops = cp.cluster("ops");
    let a = start_replica(&ops, "replica-a").await;
    let health_a = a.health.clone();
    wait_for_state(
        &health_a,
        LeaderState::Leading {
            caches_synced: true,
        },
        Duration::from_secs(20),
    )
    .await;

    let b = start_replica(&ops, "replica-b").await;
    let health_b = b.health.clone();
    wait_for_state(&health_b, LeaderState::Standby, Duration::from_secs(10)).await;
    // Longer than the renewal period: the leader renews, the standby stays a standby.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(health_b.get(), LeaderState::Standby);
    let lease = ops
        .object("/apis/coordination.k8s.io/v1/leases", "ama-migrator")
        .expect("the Lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a", "{lease:#}");

    // SIGTERM on the leader: it stops its controllers and releases; the standby takes over.
    a.shut_down().await;
    let released = Instant::now();
    assert_eq!(health_a.get(), LeaderState::Unknown);
    // Taken within ~2 s of the release (the Lease lasts 15 s), plus the caches' sync.
    let start = Instant::now();
    while !matches!(health_b.get(), LeaderState::Leading { .. }) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the standby did not take the released Lease within 5 s (Lease duration 15 s): {:?}",
            health_b.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "hand-over: the standby led {:?} after the release",
        released.elapsed()
    );
    wait_for_state(
        &health_b,
        LeaderState::Leading {
            caches_synced: true,
        },
        Duration::from_secs(20),
    )
    .await;
    let lease = ops
        .object("/apis/coordination.k8s.io/v1/leases", "ama-migrator")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b", "{lease:#}");

    // A standby that never led stops: it neither claims nor releases the Lease (the holder, its
    // acquisition and the transition count stay). (The API server keeps no managedFields for
    // Leases, so the writer itself is not recorded.)
    let before = ops
        .object("/apis/coordination.k8s.io/v1/leases", "ama-migrator")
        .unwrap();
    let c = start_replica(&ops, "replica-c").await;
    let health_c = c.health.clone();
    wait_for_state(&health_c, LeaderState::Standby, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.shut_down().await;
    let lease = ops
        .object("/apis/coordination.k8s.io/v1/leases", "ama-migrator")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b", "{lease:#}");
    for field in ["acquireTime", "leaseTransitions"] {
        assert_eq!(
            lease["spec"][field], before["spec"][field],
            "a standby wrote the Lease: {lease:#}"
        );
    }

    b.shut_down().await;

    // An empty holder with a fresh renewal (as client-go's release leaves it) is free too: a
    // replica starting now leads at once, not a Lease duration later.
    let (status, answer) = ops.send(
        "PATCH",
        &format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/ama-migrator",
            ops.namespace
        ),
        "application/merge-patch+json",
        Some(&serde_json::json!({"spec": {
            "holderIdentity": "",
            "renewTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "leaseDurationSeconds": 15
        }})),
    );
    assert_eq!(status, 200, "{answer:#}");
    let started = Instant::now();
    let d = start_replica(&ops, "replica-d").await;
    let health_d = d.health.clone();
    while !matches!(health_d.get(), LeaderState::Leading { .. }) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an emptied Lease was not taken within 5 s (duration 15 s): {:?}",
            health_d.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.shut_down().await;
}

#[test]
fn run_without_a_reachable_cluster_fails_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("ama-migrator-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: none\n  context:\n    cluster: none\n    user: none\n    namespace: ops\ncurrent-context: none\nusers:\n- name: none\n  user: {}\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("AMA_MIGRATOR_METRICS_ADDR", "127.0.0.1:0")
        .env("AZURE_CREDENTIAL_KIND", "none")
        .env("AMA_MIGRATOR_ARM_ENDPOINT", "http://127.0.0.1:9/")
        .env("AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT", "http://127.0.0.1:9/")
        .env("AMA_MIGRATOR_LEASE_NAME", "ama-migrator")
        .env_remove("AMA_MIGRATOR_LEASE_NAMESPACE")
        .env_remove("AMA_MIGRATOR_WATCH_NAMESPACES")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`run` still running after 30 s without a cluster");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "exit status {status:?}; stderr {stderr}");
    assert!(
        stderr.contains("cannot use the Lease ops/ama-migrator")
            && stderr.contains("is the API server reachable"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
