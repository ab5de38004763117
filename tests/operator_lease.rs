//! Leader election when the API server goes away: kube-lease-manager keeps retrying without
//! reporting a loss, so the leader's own guard must notice that its claim was not renewed within
//! the Lease duration, stop the controllers and every engine (no more writes), report not ready,
//! and lead again once the Lease is renewed. Against a real kube-apiserver of the test's own,
//! stopped and started again on the same etcd.

mod operator_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ama_migrator::engine::EngineOptions;
use ama_migrator::operator::controller::Context;
use ama_migrator::operator::leader::{
    self, Health, LeaderConfig, LeaderState, LeaseTiming, Outcome,
};
use ama_migrator::operator::metrics::Metrics;
use operator_support::{PLANS, SimClock, arm_writes, control_plane, plan_object, simulation};

const NS: &str = "team-a";

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unrenewed_lease_stops_the_leader_until_it_is_renewed_again() {
    let Some(mut cp) = tokio::task::spawn_blocking(control_plane::private)
        .await
        .unwrap()
    else {
        return;
    };
    let simulation = simulation(6).await;
    let fake = cp.cluster(NS);
    let ops = cp.cluster("ops");
    let plan = plan_object(&simulation, NS, "fleet");
    fake.create(PLANS, plan);

    let client = ops.operator_client().await;
    // Nobody approves the canary gate: the engine keeps running (waiting), so there is an
    // engine to stop.
    let options = EngineOptions {
        tick: Duration::from_millis(50),
        stall_after: Duration::from_secs(365 * 24 * 3600),
        ..EngineOptions::default()
    };
    let ctx = Context::new(
        client.clone(),
        Arc::new(Metrics::new()),
        simulation.client.clone(),
        Arc::new(SimClock(simulation.sim.clone())),
        options,
        Some("replica-a".into()),
    )
    .with_watch_namespaces(vec![NS.into()]);
    let config = LeaderConfig {
        lease_name: "ama-migrator".into(),
        namespace: "ops".into(),
        identity: "replica-a".into(),
        timing: LeaseTiming {
            duration: 3,
            grace: 1,
        },
        stop_grace: Duration::from_secs(5),
    };
    let health = Arc::new(Health::default());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (h, c) = (health.clone(), ctx.clone());
    let lead = tokio::spawn(async move {
        leader::lead(client, &config, c, h, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    let leading = LeaderState::Leading {
        caches_synced: true,
    };
    wait_until("leadership", Duration::from_secs(20), || {
        health.get() == leading
    })
    .await;
    wait_until("the plan's engine to run", Duration::from_secs(20), || {
        ctx.running_plans() == vec![(NS.to_string(), "fleet".to_string())]
    })
    .await;

    // The API server goes away: no renewal, no report from the crate.
    let cut = Instant::now();
    tokio::task::block_in_place(|| cp.stop_apiserver());
    wait_until("the local expiry", Duration::from_secs(15), || {
        health.get() == LeaderState::Expired
    })
    .await;
    let expired_after = cut.elapsed();
    assert!(!health.ready(), "an unrenewed leader must not be ready");
    wait_until("every engine to stop", Duration::from_secs(10), || {
        ctx.running_plans().is_empty()
    })
    .await;
    wait_until("the controllers to stop", Duration::from_secs(10), || {
        !*ctx.caches_synced().borrow()
    })
    .await;
    // Nothing writes any more while the Lease is unrenewed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = arm_writes(&simulation.sim, None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        arm_writes(&simulation.sim, None),
        before,
        "Azure writes while not leading"
    );
    assert_eq!(health.get(), LeaderState::Expired);
    assert!(!lead.is_finished(), "the replica waits to lead again");
    println!("expired {expired_after:?} after the API server stopped");

    // The API server is back (same etcd): the Lease is renewed in our name and we lead again.
    tokio::task::block_in_place(|| cp.restart_apiserver());
    wait_until("leading again", Duration::from_secs(45), || {
        health.get() == leading
    })
    .await;
    wait_until("the engine to run again", Duration::from_secs(20), || {
        !ctx.running_plans().is_empty()
    })
    .await;
    let lease = ops
        .object("/apis/coordination.k8s.io/v1/leases", "ama-migrator")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a", "{lease:#}");

    let _ = stop.send(());
    let outcome = tokio::time::timeout(Duration::from_secs(20), lead)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::Shutdown);
    assert!(ctx.running_plans().is_empty());
    simulation.shutdown().await;
}
