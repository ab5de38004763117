//! Deleting a MigrationPlan annotated `amamigrator.io/deletion-policy: Rollback`: the finalizer
//! stops the engine, rolls the whole plan back through the engine (workspace legacy streams
//! restored first, then the migrator's DCR associations and AMA installs removed, then the plan's
//! DCRs deleted), and only then lets the plan go. Judged on the simulator: nothing the operator
//! created is left, every wanted source is sent by the legacy agent alone, with no gap minute.

mod operator_support;

use std::collections::HashMap;
use std::time::Duration;

use ama_migrator::azure::ResourceId;
use ama_migrator::inventory::AgentKind;
use ama_migrator::sim::Agent;
use operator_support::{
    Controllers, EVENTS, MACHINES, PLANS, cluster, condition, legacy_fleet_at, plan_object,
    wait_for,
};
use serde_json::json;

const NS: &str = "team-b";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_plan_with_rollback_policy_restores_the_legacy_path_and_removes_what_it_created()
{
    // Every machine starts on the legacy agent alone, so everything AMA-side is the operator's.
    // At 1000x: the overlap bound below is in simulated minutes, and each round trip through
    // the API server during the rollback costs some (a real second is ~17 of them).
    let simulation = legacy_fleet_at(10, Vec::new(), 1000.0).await;
    let baseline: HashMap<_, _> = simulation
        .sim
        .ledger_pairs(None, None)
        .into_iter()
        .map(|p| ((p.machine.clone(), p.data_source), p.counts))
        .collect();
    let Some((fake, client)) = cluster(NS).await else {
        return;
    };

    let mut plan = plan_object(&simulation, NS, "fleet");
    plan["metadata"]["annotations"]["amamigrator.io/approve-wave"] = json!("canary, medium");
    plan["metadata"]["annotations"]["amamigrator.io/deletion-policy"] = json!("Rollback");
    // Legacy agents stay installed, so every machine can go back to them.
    plan["spec"]["legacy"]["uninstall"] = json!("Never");
    fake.create(PLANS, plan);
    let controllers = Controllers::start(&fake, &simulation).await;
    wait_for("the plan to be Ready", Duration::from_secs(150), || {
        fake.object(PLANS, "fleet")
            .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
            .unwrap_or(false)
    })
    .await;
    let status = fake.object(PLANS, "fleet").unwrap()["status"].clone();
    let owned: Vec<String> = status["ownedDcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["resourceId"].as_str().unwrap().to_string())
        .collect();
    assert!(!owned.is_empty(), "{status:#}");
    let machines: Vec<String> = fake
        .objects(MACHINES)
        .iter()
        .map(|m| m["spec"]["machineId"].as_str().unwrap().to_string())
        .collect();
    let c = simulation.client.clone();
    let mut with_ama = 0;
    for id in &machines {
        let rid = ResourceId::parse(id).unwrap();
        let ext = c.agent_extensions(&rid).await.unwrap();
        with_ama += usize::from(ext.iter().any(|(k, _)| *k == AgentKind::Ama));
    }
    assert!(with_ama >= 5, "only {with_ama} machines got AMA");
    let flips = status["changedLegacySettings"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        flips > 0,
        "the plan switched legacy streams off: {status:#}"
    );

    // Delete: the finalizer rolls back, then lets the plan go.
    let plans: kube::Api<ama_migrator::api::MigrationPlan> =
        kube::Api::namespaced(client.clone(), NS);
    plans.delete("fleet", &Default::default()).await.unwrap();
    wait_for("the plan to be gone", Duration::from_secs(90), || {
        fake.object(PLANS, "fleet").is_none()
    })
    .await;

    for id in &machines {
        let rid = ResourceId::parse(id).unwrap();
        let ours: Vec<String> = c
            .list_associations(&rid)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|a| a.name)
            .filter(|n| n.starts_with("ama-migrator-"))
            .collect();
        assert!(ours.is_empty(), "{id}: associations left {ours:?}");
        let ext = c.agent_extensions(&rid).await.unwrap();
        assert!(
            !ext.iter().any(|(k, _)| *k == AgentKind::Ama),
            "{id}: AMA left"
        );
        assert!(
            ext.iter().any(|(k, _)| *k == AgentKind::Legacy),
            "{id}: legacy agent gone"
        );
    }
    for id in &owned {
        let got: Option<serde_json::Value> =
            c.get_dcr(&ResourceId::parse(id).unwrap()).await.unwrap();
        assert!(got.is_none(), "plan DCR {id} still there");
    }
    let mut pairs = 0;
    for p in simulation.sim.ledger_pairs(None, None) {
        if p.out_of_scope || !p.wanted {
            continue;
        }
        let b = baseline.get(&(p.machine.clone(), p.data_source));
        let gap = p.counts.gap_minutes - b.map_or(0, |b| b.gap_minutes);
        let dup = p.counts.duplicate_minutes - b.map_or(0, |b| b.duplicate_minutes);
        assert_eq!(gap, 0, "{}/{}: {gap} gap minutes", p.machine, p.data_source);
        assert!(dup <= 120, "{}/{}: {dup} min", p.machine, p.data_source);
        assert_eq!(
            p.senders,
            vec![Agent::Legacy],
            "{}/{}",
            p.machine,
            p.data_source
        );
        pairs += 1;
    }
    assert!(pairs >= 20, "only {pairs} pairs judged");
    let events = fake.objects(EVENTS);
    let rolled = events
        .iter()
        .find(|e| e["reason"] == "RolledBack" && e["regarding"]["kind"] == "MigrationPlan")
        .unwrap_or_else(|| panic!("no RolledBack event: {events:#?}"));
    let note = rolled["note"].as_str().unwrap();
    assert!(
        note.contains(&format!(
            "{0} of {0} machine(s) back on the legacy path",
            machines.len()
        )),
        "{note}"
    );
    assert!(
        !events.iter().any(|e| e["reason"] == "RollbackIncomplete"),
        "{events:#?}"
    );
    // The garbage collector (kube-controller-manager) removes the plan's MachineMigrations.
    wait_for(
        "the MachineMigrations to be collected",
        Duration::from_secs(60),
        || fake.objects(MACHINES).is_empty(),
    )
    .await;
    controllers.stop().await;
    simulation.shutdown().await;
}
