//! Shared by the operator tests that drive the controllers against a real API server (see
//! `control_plane`) and the Azure simulator: the simulator's clock for the engine, condition lookup
//! on raw objects, bounded waiting, and the controllers started on a plan.
#![allow(dead_code)] // each test binary uses a different subset

pub mod control_plane;

pub use control_plane::Cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ama_migrator::engine::simulate::Simulation;
use ama_migrator::engine::{Clock, EngineOptions};
use ama_migrator::operator::controller::{Context, run_controllers};
use ama_migrator::operator::metrics::Metrics;
use ama_migrator::sim::SimHandle;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

pub const PLANS: &str = "/apis/amamigrator.io/v1alpha1/migrationplans";
pub const MACHINES: &str = "/apis/amamigrator.io/v1alpha1/machinemigrations";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/events";

/// The engine's clock follows the simulator's (scaled) time.
pub struct SimClock(pub Arc<SimHandle>);

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        self.0.now().parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Engine options for a simulator at a high time scale.
pub fn engine_options() -> EngineOptions {
    EngineOptions {
        tick: Duration::from_millis(20),
        verify_interval: Duration::from_secs(180),
        poll_interval: Duration::from_secs(30),
        stall_after: Duration::from_secs(45 * 60),
        ..EngineOptions::default()
    }
}

/// Running controllers; `stop` ends them and waits (bounded).
pub struct Controllers {
    pub ctx: Arc<Context>,
    pub metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Controllers {
    /// The controllers as the operator runs them, with the chart's RBAC, watching the cluster's
    /// namespace only (the tests of one binary share an API server, each in its own namespace).
    pub async fn start(cluster: &Cluster, simulation: &Simulation) -> Self {
        let client = cluster.operator_client().await;
        let namespace = cluster.namespace.as_str();
        let metrics = Arc::new(Metrics::new());
        let ctx = Context::new(
            client,
            metrics.clone(),
            simulation.client.clone(),
            Arc::new(SimClock(simulation.sim.clone())),
            engine_options(),
            Some("test-pod".into()),
        )
        .with_watch_namespaces(vec![namespace.to_owned()]);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_controllers(ctx.clone(), async move {
            let _ = stop_rx.await;
        }));
        Self {
            ctx,
            metrics,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("controllers stop within 20 s")
            .expect("controller task joins");
    }
}

/// The simulator with `machines` machines at 3000x, and the built-in plan for it.
pub async fn simulation(machines: usize) -> Simulation {
    simulation_at(machines, 3000.0).await
}

/// [`simulation`] at `time_scale` (one real second is `time_scale / 60` simulated minutes: a test
/// that judges overlap minutes against a plan's bounds must leave the API server's latency few of
/// them).
pub async fn simulation_at(machines: usize, time_scale: f64) -> Simulation {
    Simulation::start(ama_migrator::engine::SimulateOptions {
        scenario: ama_migrator::sim::Scenario {
            machines,
            time_scale,
            ..ama_migrator::sim::Scenario::default()
        },
        ..ama_migrator::engine::SimulateOptions::default()
    })
    .await
    .expect("simulation starts")
}

/// A fleet where every machine has work to do: legacy agent only, all running and connected
/// (everything AMA-side is then the operator's), at 3000x, with `faults` injected.
pub async fn legacy_fleet(machines: usize, faults: Vec<ama_migrator::sim::Fault>) -> Simulation {
    legacy_fleet_at(machines, faults, 3000.0).await
}

/// [`legacy_fleet`] at `time_scale`: a test that bounds simulated minutes spent waiting on the
/// API server (one real second is `time_scale / 60` simulated minutes) runs slower.
pub async fn legacy_fleet_at(
    machines: usize,
    faults: Vec<ama_migrator::sim::Fault>,
    time_scale: f64,
) -> Simulation {
    Simulation::start(ama_migrator::engine::SimulateOptions {
        scenario: ama_migrator::sim::Scenario {
            machines,
            time_scale,
            agents: ama_migrator::sim::scenario::AgentMix {
                legacy_only: 1.0,
                ama_only: 0.0,
                both: 0.0,
                none: 0.0,
            },
            in_guest_legacy_ratio: 0.0,
            deallocated_ratio: 0.0,
            disconnected_ratio: 0.0,
            faults,
            ..ama_migrator::sim::Scenario::default()
        },
        ..ama_migrator::engine::SimulateOptions::default()
    })
    .await
    .expect("simulation starts")
}

/// The simulation's built-in plan as a MigrationPlan object named `name` in `namespace`.
pub fn plan_object(simulation: &Simulation, namespace: &str, name: &str) -> Value {
    let mut plan = serde_json::to_value(&simulation.plan).expect("plan serializes");
    plan["metadata"]["namespace"] = Value::from(namespace);
    plan["metadata"]["name"] = Value::from(name);
    plan
}

/// Whether the simulator saw a state-changing ARM request: PUT, PATCH or DELETE, or a POST other
/// than a Resource Graph query or a Log Analytics query (both read-only).
pub fn is_arm_write(r: &ama_migrator::sim::RequestRecord) -> bool {
    let path = r.path.to_ascii_lowercase();
    match r.method.as_str() {
        "PUT" | "PATCH" | "DELETE" => true,
        "POST" => !path.contains("/microsoft.resourcegraph/") && !path.ends_with("/query"),
        _ => false,
    }
}

/// The state-changing ARM requests the simulator logged so far whose path is under `resource_id`
/// (the machine itself, its extensions, its DCR associations), or all of them with `None`.
pub fn arm_writes(sim: &SimHandle, resource_id: Option<&str>) -> usize {
    let prefix = resource_id.map(|id| format!("{}/", id.to_ascii_lowercase()));
    sim.request_log()
        .iter()
        .filter(|r| is_arm_write(r))
        .filter(|r| {
            prefix.as_ref().is_none_or(|p| {
                let path = format!("{}/", r.path.to_ascii_lowercase());
                path.starts_with(p.as_str())
            })
        })
        .count()
}

/// Set (`Some`) or remove (`None`) one annotation of a namespaced object of ours (`K`:
/// `MigrationPlan` or `MachineMigration`) by a JSON merge patch, as `kubectl annotate` does.
pub async fn annotate<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
    value: Option<&str>,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let body = serde_json::json!({"metadata": {"annotations": {key: value}}});
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), namespace);
    api.patch(name, &Default::default(), &kube::api::Patch::Merge(&body))
        .await
        .unwrap_or_else(|e| panic!("annotate {} {name}: {e}", K::kind(&Default::default())));
}

/// The events of the test's namespace about `kind`/`name` with `reason`.
pub fn events_for(cluster: &Cluster, kind: &str, name: &str, reason: &str) -> Vec<Value> {
    cluster
        .objects(EVENTS)
        .into_iter()
        .filter(|e| {
            e["regarding"]["kind"] == kind
                && e["regarding"]["name"] == name
                && e["reason"] == reason
        })
        .collect()
}

/// The test's namespace on this binary's shared API server with the operator's client for it, or
/// `None` (the test then returns, having said it is skipped) without the control plane's binaries
/// outside CI.
/// The client returned is a person's (cluster admin); the controllers get the operator's.
pub async fn cluster(namespace: &str) -> Option<(Cluster, kube::Client)> {
    let cp = control_plane::shared()?;
    let cluster = cp.cluster(namespace);
    let client = cluster.admin_client().await;
    Some((cluster, client))
}
