//! The operator's controllers against a real API server (kube-apiserver + etcd +
//! kube-controller-manager, `operator_support::control_plane`) and the Azure simulator: a small
//! migration runs to `Ready`, with status through the status subresource, conditions, events,
//! owner references, one field manager, and never a write to the plan's spec — read back from the
//! server's own record of who wrote what (`metadata.managedFields`).

mod operator_support;

use std::time::{Duration, Instant};

use ama_migrator::operator::{FIELD_MANAGER, FINALIZER};
use operator_support::{
    Controllers, EVENTS, MACHINES, PLANS, cluster, condition, plan_object, simulation, wait_for,
};
use serde_json::{Value, json};

const NS: &str = "team-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_migration_reaches_ready_through_the_controllers() {
    let Some((fake, client)) = cluster(NS).await else {
        return;
    };
    let simulation = simulation(12).await;

    let mut plan = plan_object(&simulation, NS, "fleet");
    // A person approves the manual gates through the annotation (not the engine's auto-approve).
    plan["metadata"]["annotations"]["amamigrator.io/approve-wave"] = json!("canary, medium");
    let created = fake.create(PLANS, plan);
    let spec_before = created["spec"].clone();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();

    let controllers = Controllers::start(&fake, &simulation).await;
    let metrics = controllers.metrics.clone();

    let start = Instant::now();
    loop {
        let ready = fake
            .object(PLANS, "fleet")
            .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
            .unwrap_or(false);
        if ready {
            break;
        }
        if start.elapsed() > Duration::from_secs(150) {
            let plan = fake.object(PLANS, "fleet");
            let steps: Vec<Value> = fake
                .objects(MACHINES)
                .iter()
                .map(|m| m["status"]["step"].clone())
                .collect();
            let reasons: Vec<Value> = fake
                .objects(EVENTS)
                .iter()
                .map(|e| e["reason"].clone())
                .collect();
            panic!(
                "not Ready after 150 s: plan {:#?}\nsteps {steps:?}\nevents {reasons:?}",
                plan.map(|p| p["status"].clone()),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("the plan to be Ready", Duration::from_secs(1), || {
        fake.object(PLANS, "fleet")
            .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
            .unwrap_or(false)
    })
    .await;

    // Status, observedGeneration and conditions.
    let plan = fake.object(PLANS, "fleet").unwrap();
    assert_eq!(plan["status"]["phase"], "Completed", "{:#}", plan["status"]);
    assert_eq!(
        plan["status"]["observedGeneration"],
        plan["metadata"]["generation"]
    );
    assert_eq!(plan["spec"], spec_before, "the plan's spec changed");
    assert_eq!(plan["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(condition(&plan, "Ready").unwrap()["reason"], "Completed");

    // Machines: owned by the plan (controller reference), final, with observedGeneration.
    let machines = fake.objects(MACHINES);
    assert!(
        machines.len() >= 8,
        "only {} MachineMigrations",
        machines.len()
    );
    let mut done = 0;
    for m in &machines {
        let owners = m["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(owners.len(), 1, "{m:#}");
        assert_eq!(owners[0]["uid"], uid.as_str());
        assert_eq!(owners[0]["controller"], true);
        assert_eq!(owners[0]["kind"], "MigrationPlan");
        assert_eq!(m["metadata"]["labels"]["amamigrator.io/plan"], "fleet");
        let step = m["status"]["step"].as_str().unwrap();
        assert!(
            ["Done", "Blocked", "Failed"].contains(&step),
            "{} is {step}",
            m["metadata"]["name"]
        );
        done += usize::from(step == "Done");
        assert_eq!(
            m["status"]["observedGeneration"],
            m["metadata"]["generation"]
        );
    }
    assert!(done >= 5, "only {done} machines Done");

    // Events: step changes of machines and the plan's completion, through events.k8s.io.
    let events = fake.objects(EVENTS);
    let on = |kind: &str, reason: &str| {
        events
            .iter()
            .filter(|e| e["regarding"]["kind"] == kind && e["reason"] == reason)
            .count()
    };
    assert!(
        on("MachineMigration", "StepChanged") >= machines.len(),
        "{} step events",
        on("MachineMigration", "StepChanged")
    );
    assert!(on("MachineMigration", "MachineDone") >= done);
    assert_eq!(on("MigrationPlan", "Completed"), 1);
    assert!(
        events
            .iter()
            .all(|e| e["reportingController"] == "ama-migrator")
    );

    // Writes, as the API server recorded them: the plan's spec was never written (generation 1,
    // and the operator's field manager owns no spec field); the operator wrote the plan only
    // through the status subresource (server-side apply) and the finalizer (a JSON patch of
    // metadata.finalizers); machines only by server-side apply with the one field manager.
    assert_eq!(
        plan["metadata"]["generation"], 1,
        "the plan's spec was written"
    );
    let ours = |obj: &Value| -> Vec<Value> {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["manager"] == FIELD_MANAGER)
            .cloned()
            .collect()
    };
    let plan_writes = ours(&plan);
    assert!(!plan_writes.is_empty(), "{:#}", plan["metadata"]);
    for m in &plan_writes {
        let fields = m["fieldsV1"].as_object().unwrap();
        if m["subresource"] == "status" {
            assert_eq!(m["operation"], "Apply", "{m:#}");
            assert!(fields.keys().all(|k| k == "f:status"), "{m:#}");
        } else {
            assert_eq!(m["operation"], "Update", "{m:#}");
            assert_eq!(
                fields.keys().collect::<Vec<_>>(),
                ["f:metadata"],
                "the operator wrote more than metadata: {m:#}"
            );
            let meta = fields["f:metadata"].as_object().unwrap();
            assert!(meta.keys().all(|k| k == "f:finalizers"), "{m:#}");
        }
    }
    assert!(
        plan_writes
            .iter()
            .any(|m| m["subresource"] == "status" && m["operation"] == "Apply"),
        "no status apply by {FIELD_MANAGER}: {plan_writes:#?}"
    );
    for m in &machines {
        let writes = ours(m);
        assert!(!writes.is_empty(), "{:#}", m["metadata"]);
        assert!(
            writes.iter().all(|w| w["operation"] == "Apply"),
            "a MachineMigration written other than by apply: {writes:#?}"
        );
        let managers: Vec<&Value> = m["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| &w["manager"])
            .collect();
        assert!(
            managers.iter().all(|w| *w == FIELD_MANAGER),
            "another field manager wrote a MachineMigration: {managers:?}"
        );
    }

    // Metrics saw machines, ARM requests and reconciles.
    let text = metrics.encode();
    assert!(
        text.contains("ama_migrator_machines{namespace=\"team-a\",plan=\"fleet\",step=\"Done\"}"),
        "{text}"
    );
    assert!(
        text.contains("ama_migrator_arm_requests_total{class=\"write\",status=\"20"),
        "{text}"
    );
    assert!(text.contains("ama_migrator_reconciles_total{controller=\"migrationplan\"}"));

    // Deleting the plan: the finalizer stops the engine, then goes; children are collected.
    let plans: kube::Api<ama_migrator::api::MigrationPlan> =
        kube::Api::namespaced(client.clone(), NS);
    plans.delete("fleet", &Default::default()).await.unwrap();
    wait_for("the plan to be gone", Duration::from_secs(20), || {
        fake.object(PLANS, "fleet").is_none()
    })
    .await;
    // The garbage collector (kube-controller-manager) removes the owned MachineMigrations.
    wait_for(
        "the MachineMigrations to be garbage-collected",
        Duration::from_secs(60),
        || fake.objects(MACHINES).is_empty(),
    )
    .await;
    let events = fake.objects(EVENTS);
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Deleted" && e["regarding"]["kind"] == "MigrationPlan")
    );

    controllers.stop().await;
    simulation.shutdown().await;
}
