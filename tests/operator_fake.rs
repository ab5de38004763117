//! The operator's controllers against the in-process fake API server and the Azure simulator:
//! a small migration runs to `Ready`, with status through the status subresource, conditions,
//! events, owner references, one field manager, and never a write to the plan's spec.

mod operator_support;

use std::time::{Duration, Instant};

use ama_migrator::operator::fake::FakeApiServer;
use ama_migrator::operator::{FIELD_MANAGER, FINALIZER};
use operator_support::{
    Controllers, EVENTS, MACHINES, PLANS, condition, plan_object, simulation, wait_for,
};
use serde_json::{Value, json};

const NS: &str = "team-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_migration_reaches_ready_through_the_controllers() {
    let simulation = simulation(12).await;
    let fake = FakeApiServer::start().await.unwrap();
    let client = fake.client(NS).unwrap();

    let mut plan = plan_object(&simulation, NS, "fleet");
    // A person approves the manual gates through the annotation (not the engine's auto-approve).
    plan["metadata"]["annotations"]["amamigrator.io/approve-wave"] = json!("canary, medium");
    let created = fake
        .create(
            &format!("/apis/amamigrator.io/v1alpha1/namespaces/{NS}/migrationplans"),
            NS,
            plan,
        )
        .unwrap();
    let spec_before = created["spec"].clone();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();

    let controllers = Controllers::start(&fake, NS, &simulation);
    let metrics = controllers.metrics.clone();

    let start = Instant::now();
    loop {
        let ready = fake
            .object(PLANS, NS, "fleet")
            .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
            .unwrap_or(false);
        if ready {
            break;
        }
        if start.elapsed() > Duration::from_secs(150) {
            let plan = fake.object(PLANS, NS, "fleet");
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
            let reqs: Vec<String> = fake
                .requests()
                .iter()
                .take(8)
                .map(|r| format!("{} {}?{} {}", r.method, r.path, r.query, r.status))
                .collect();
            panic!(
                "not Ready after 150 s: {reqs:#?} plan {:#?}\nsteps {steps:?}\nevents {reasons:?}\nrequests {}",
                plan.map(|p| p["status"].clone()),
                fake.requests().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("the plan to be Ready", Duration::from_secs(1), || {
        fake.object(PLANS, NS, "fleet")
            .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
            .unwrap_or(false)
    })
    .await;

    // Status, observedGeneration and conditions.
    let plan = fake.object(PLANS, NS, "fleet").unwrap();
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

    // Writes: plans only through the finalizer's JSON patch and the status subresource; every
    // apply with the one field manager; no PUT at all.
    let requests = fake.requests();
    for r in &requests {
        assert_ne!(r.method, "PUT", "{} {}", r.method, r.path);
        if r.path.contains("/migrationplans/") && r.method == "PATCH" {
            if r.path.ends_with("/status") {
                assert!(
                    r.content_type.starts_with("application/apply-patch"),
                    "{r:?}"
                );
                assert!(r.body.as_ref().unwrap().get("spec").is_none());
            } else {
                assert!(
                    r.content_type.starts_with("application/json-patch"),
                    "{r:?}"
                );
                for op in r.body.as_ref().unwrap().as_array().unwrap() {
                    assert!(
                        op["path"]
                            .as_str()
                            .unwrap()
                            .starts_with("/metadata/finalizers"),
                        "{op}"
                    );
                }
            }
        }
        if r.content_type.starts_with("application/apply-patch") {
            assert!(
                r.query.contains(&format!("fieldManager={FIELD_MANAGER}")),
                "{r:?}"
            );
            assert!(r.query.contains("force=true"), "{r:?}");
        }
    }
    assert!(requests.iter().any(|r| r.method == "PATCH"
        && r.path.ends_with("/machinemigrations/".to_owned().as_str())
        || r.path.contains("/machinemigrations/")));

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
        fake.object(PLANS, NS, "fleet").is_none()
    })
    .await;
    assert!(
        fake.objects(MACHINES).is_empty(),
        "MachineMigrations left behind"
    );
    let events = fake.objects(EVENTS);
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Deleted" && e["regarding"]["kind"] == "MigrationPlan")
    );

    controllers.stop().await;
    simulation.shutdown().await;
}
