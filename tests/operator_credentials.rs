//! A plan with its own Azure credentials (`spec.azure.credentialsSecretRef`), against a real API
//! server (the operator holding only the chart's RBAC: `get` on Secrets, never list or watch) and
//! the simulator: a missing Secret, then a Secret missing a key,
//! give the plan a Blocked condition and a Warning event naming the Secret and the key, and no
//! engine runs; with a complete Secret the plan migrates through a client built from exactly
//! those values. The secret value never appears in anything the operator wrote.

mod operator_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ama_migrator::azure::CredentialConfig;
use ama_migrator::engine::EngineOptions;
use ama_migrator::operator::controller::{Context, run_controllers};
use ama_migrator::operator::metrics::Metrics;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use operator_support::{
    Cluster, EVENTS, MACHINES, PLANS, SimClock, cluster, condition, plan_object, simulation,
    wait_for,
};
use serde_json::json;

const NS: &str = "team-a";
const SECRET_VALUE: &str = "s3cr3t-Value-never-shown";

fn secret(data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some("azure-sp".into());
    s.metadata.namespace = Some(NS.into());
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect::<BTreeMap<_, _>>(),
    );
    s
}

/// A person touches the plan (`kubectl annotate`): Secrets are not watched, so this makes the
/// operator look again now rather than at its 30-second requeue.
async fn nudge(plans: &Api<ama_migrator::api::MigrationPlan>, n: u32) {
    plans
        .patch(
            "fleet",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"example.com/nudge": n.to_string()}}}),
            ),
        )
        .await
        .unwrap();
}

fn blocked_by_credentials(fake: &Cluster) -> Option<String> {
    let plan = fake.object(PLANS, "fleet")?;
    let c = condition(&plan, "Blocked")?;
    (c["status"] == "True" && c["reason"] == "CredentialsUnavailable")
        .then(|| c["message"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_acts_with_the_secret_of_its_namespace_and_is_blocked_without_it() {
    let Some((fake, client)) = cluster(NS).await else {
        return;
    };
    let simulation = simulation(12).await;

    let mut plan = plan_object(&simulation, NS, "fleet");
    plan["metadata"]["annotations"]["amamigrator.io/approve-wave"] = json!("canary, medium");
    plan["spec"]["azure"] = json!({"credentialsSecretRef": {"name": "azure-sp"}});
    let created = fake.create(PLANS, plan);
    let spec_before = created["spec"].clone();

    // Plans' own clients are built by this factory: it records the credential the operator
    // read and hands out the simulator's client (the simulator needs no token).
    let seen: Arc<Mutex<Vec<CredentialConfig>>> = Arc::default();
    let sim_client = simulation.client.clone();
    let record = seen.clone();
    let factory: ama_migrator::operator::credentials::ArmFactory = Arc::new(move |c| {
        record.lock().unwrap().push(c);
        Ok(sim_client.clone())
    });
    let options = EngineOptions {
        tick: Duration::from_millis(20),
        verify_interval: Duration::from_secs(180),
        poll_interval: Duration::from_secs(30),
        stall_after: Duration::from_secs(45 * 60),
        ..EngineOptions::default()
    };
    // The operator's own client points nowhere: only the plan's client may reach the simulator.
    let operator_arm = ama_migrator::azure::ArmClient::new(ama_migrator::azure::ClientConfig::new(
        ama_migrator::azure::Endpoints::single("http://127.0.0.1:9/".parse().unwrap()),
        CredentialConfig::None,
    ))
    .unwrap();
    let ctx = Context::new(
        fake.operator_client().await,
        Arc::new(Metrics::new()),
        operator_arm,
        Arc::new(SimClock(simulation.sim.clone())),
        options,
        Some("test-pod".into()),
    )
    .with_watch_namespaces(vec![NS.to_owned()])
    .with_arm_factory(factory);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(run_controllers(ctx.clone(), async move {
        let _ = stop_rx.await;
    }));
    let plans: Api<ama_migrator::api::MigrationPlan> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);

    // 1. The Secret does not exist.
    wait_for("Blocked: Secret missing", Duration::from_secs(20), || {
        blocked_by_credentials(&fake)
            .is_some_and(|m| m.contains("team-a/azure-sp") && m.contains("does not exist"))
    })
    .await;
    let plan = fake.object(PLANS, "fleet").unwrap();
    assert_eq!(condition(&plan, "Progressing").unwrap()["status"], "False");
    assert!(
        ctx.running_plans().is_empty(),
        "no engine without credentials"
    );
    assert!(
        fake.objects(MACHINES).is_empty(),
        "nothing migrated without credentials"
    );
    let warnings = |reason: &str| {
        fake.objects(EVENTS)
            .iter()
            .filter(|e| e["type"] == "Warning" && e["reason"] == reason)
            .map(|e| e["note"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    // The event is published after the condition is written: wait for it too.
    wait_for(
        "the CredentialsUnavailable warning",
        Duration::from_secs(20),
        || {
            warnings("CredentialsUnavailable")
                .iter()
                .any(|n| n.contains("team-a/azure-sp"))
        },
    )
    .await;

    // 2. The Secret exists but lacks AZURE_CLIENT_ID.
    secrets
        .create(
            &Default::default(),
            &secret(&[
                ("AZURE_TENANT_ID", "tenant-1"),
                ("AZURE_CLIENT_SECRET", SECRET_VALUE),
            ]),
        )
        .await
        .unwrap();
    nudge(&plans, 1).await;
    wait_for("Blocked: key missing", Duration::from_secs(20), || {
        blocked_by_credentials(&fake).is_some_and(|m| m.contains("has no key AZURE_CLIENT_ID"))
    })
    .await;
    assert!(ctx.running_plans().is_empty());
    assert!(
        seen.lock().unwrap().is_empty(),
        "no client built from an incomplete Secret"
    );

    // 3. The Secret is complete: the plan proceeds with a client of exactly these values.
    secrets
        .patch(
            "azure-sp",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"AZURE_CLIENT_ID": "Y2xpZW50LTE="}})), // client-1
        )
        .await
        .unwrap();
    nudge(&plans, 2).await;
    wait_for("the plan to be Ready", Duration::from_secs(150), || {
        fake.object(PLANS, "fleet")
            .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
            .unwrap_or(false)
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            1,
            "one client per Secret version, reused across reconciles"
        );
        match &seen[0] {
            CredentialConfig::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => {
                assert_eq!(
                    (tenant_id.as_str(), client_id.as_str()),
                    ("tenant-1", "client-1")
                );
                assert_eq!(secret.expose(), SECRET_VALUE);
            }
            other => panic!("expected a service principal, got {other:?}"),
        }
    }
    let plan = fake.object(PLANS, "fleet").unwrap();
    assert_eq!(plan["status"]["phase"], "Completed", "{:#}", plan["status"]);
    assert!(
        blocked_by_credentials(&fake).is_none(),
        "{:#}",
        plan["status"]
    );
    assert_eq!(plan["spec"], spec_before, "the plan's spec changed");
    assert!(!fake.objects(MACHINES).is_empty());

    // The secret value is nowhere the operator wrote: plans, machines, events, config maps. (That
    // the operator reads only the one Secret, by name, never listing or watching Secrets, the API
    // server's RBAC enforces: its role grants `get` alone.)
    for collection in [PLANS, MACHINES, EVENTS, "/api/v1/configmaps"] {
        for o in fake.objects(collection) {
            assert!(
                !o.to_string().contains(SECRET_VALUE),
                "{collection} holds the secret"
            );
        }
    }

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), controllers).await;
    simulation.shutdown().await;
}
