//! The example plan on a Kubernetes API server through a kubeconfig, as a person would run it:
//! apply the CRDs and wait until they are `Established`, create a namespace, run the operator's
//! controllers in-process against the Azure simulator, apply `examples/plan.yaml` adapted to the
//! simulator's workspace and subscriptions, wait for `Ready`, read `kubectl get`'s columns (a
//! Table the API server computes from the CRDs' printer columns), then delete the plan and the
//! namespace.
//!
//! It always runs against the test control plane (kube-apiserver + etcd +
//! kube-controller-manager built by `ci/kube/build.sh`); with `AMA_MIGRATOR_TEST_KUBECONFIG` set it
//! also runs against that cluster.

mod operator_support;

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ama_migrator::api::MigrationPlan;
use ama_migrator::catalog::DataSourceType;
use ama_migrator::engine::EngineOptions;
use ama_migrator::operator::controller::{Context, run_controllers};
use ama_migrator::operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use operator_support::{SimClock, simulation_at};

const ENV: &str = "AMA_MIGRATOR_TEST_KUBECONFIG";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_plan_reaches_ready_on_a_real_cluster() {
    let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) else {
        println!("skipped: set {ENV} to run against a real cluster");
        return;
    };
    the_example_plan_reaches_ready(&path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_plan_reaches_ready_on_the_test_control_plane() {
    let Some(cp) = operator_support::control_plane::shared() else {
        return;
    };
    assert!(
        cp.crd_warnings.is_empty(),
        "the API server warned about our CRDs: {:#?}",
        cp.crd_warnings
    );
    println!("testing against kube-apiserver {}", cp.version);
    the_example_plan_reaches_ready(cp.kubeconfig_path.as_os_str()).await;
}

async fn the_example_plan_reaches_ready(path: &OsStr) {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let apply = PatchParams::apply("ama-migrator-test").force();

    // The CRDs, as the chart installs them; wait until they are served.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "migrationplans.amamigrator.io.yaml",
        "machinemigrations.amamigrator.io.yaml",
    ] {
        let text =
            std::fs::read_to_string(format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .unwrap();
        let start = Instant::now();
        loop {
            let c = crds.get(&name).await.unwrap();
            let established = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "CRD {name} not Established"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let ns = format!("ama-migrator-test-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_obj: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
    }))
    .unwrap();
    namespaces
        .patch(&ns, &apply, &Patch::Apply(&ns_obj))
        .await
        .unwrap();

    // At 1000x, with the example's soaks and parity window a quarter as long: the ledger judges
    // overlap minutes against the example's `maxOverlap: 1h`, and at 3000x every 20 ms the engine
    // spends on API-server round trips between an association and the flip was a simulated minute
    // (90 duplicate minutes seen on a real API server, from a 1.7 s real delay).
    let mut simulation = simulation_at(12, 1000.0).await;
    // examples/plan.yaml, pointed at the simulator's workspace, subscriptions and location.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml"))
        .unwrap();
    let mut plan = ama_migrator::api::load::load_plan(&text).unwrap();
    let sim_plan = &simulation.plan;
    plan.metadata.namespace = Some(ns.clone());
    plan.spec.workspace = sim_plan.spec.workspace.clone();
    plan.spec.location = sim_plan.spec.location.clone();
    plan.spec.workspace_customer_id = sim_plan.spec.workspace_customer_id.clone();
    plan.spec.test_workspace = sim_plan.spec.test_workspace.clone();
    plan.spec.scope = sim_plan.spec.scope.clone();
    // A quarter of the example's soaks and parity window (see the time scale above).
    let quarter = |d: &mut Option<String>| {
        if let Some(hours) = d
            .as_deref()
            .and_then(|v| v.strip_suffix('h')?.parse::<u64>().ok())
        {
            *d = Some(format!("{}m", hours * 60 / 4));
        }
    };
    for wave in &mut plan.spec.rollout.waves {
        quarter(&mut wave.soak);
        if let Some(gates) = wave.gates.as_mut() {
            quarter(&mut gates.parity_window);
        }
    }
    // The simulator's workspace collects syslog facility `user`, which carries Linux Sysmon too:
    // the plan is refused until Linux Sysmon moves with syslog (`SharedLegacyStream`).
    plan.spec.data_sources.extend(
        sim_plan
            .spec
            .data_sources
            .iter()
            .filter(|d| d.type_ == DataSourceType::LinuxSysmon)
            .cloned(),
    );
    // The senders the simulator's workspace has outside this scope (or switched off), accepted
    // as a person would after reading `ama-migrator plan`; the example's own stay.
    plan.spec
        .legacy
        .flip
        .accepted_uncovered_senders
        .extend(sim_plan.spec.legacy.flip.accepted_uncovered_senders.clone());
    let approve = plan
        .spec
        .rollout
        .waves
        .iter()
        .map(|w| w.name.clone())
        .collect::<Vec<_>>()
        .join(",");
    plan.metadata
        .annotations
        .get_or_insert_default()
        .insert("amamigrator.io/approve-wave".into(), approve);
    let name = plan.metadata.name.clone().unwrap();

    let options = EngineOptions {
        tick: Duration::from_millis(50),
        verify_interval: Duration::from_secs(180),
        poll_interval: Duration::from_secs(30),
        stall_after: Duration::from_secs(45 * 60),
        ..EngineOptions::default()
    };
    let ctx = Context::new(
        client.clone(),
        Arc::new(Metrics::new()),
        simulation.client.clone(),
        Arc::new(SimClock(simulation.sim.clone())),
        options,
        Some("operator-cluster-test".into()),
    )
    .with_watch_namespaces(vec![ns.clone()]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(run_controllers(ctx, async move {
        let _ = stop_rx.await;
    }));

    let plans: Api<MigrationPlan> = Api::namespaced(client.clone(), &ns);
    plans
        .patch(&name, &apply, &Patch::Apply(&plan))
        .await
        .unwrap();
    let start = Instant::now();
    // What `kubectl get migrationplan` showed in the WAVE column while the plan ran.
    let mut waves_shown = std::collections::BTreeSet::new();
    let plans_path = format!("/apis/amamigrator.io/v1alpha1/namespaces/{ns}/migrationplans");
    let result = loop {
        let (columns, rows) = table(&client, &plans_path).await;
        if let (Some(w), Some((_, cells))) = (
            columns.iter().position(|c| c == "Wave"),
            rows.iter().find(|(n, _)| *n == name),
        ) && let Some(wave) = cells[w].as_str().filter(|w| !w.is_empty())
        {
            waves_shown.insert(wave.to_string());
        }
        let p = plans.get(&name).await.unwrap();
        let ready = p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            break Ok(());
        }
        if start.elapsed() > Duration::from_secs(300) {
            break Err(format!(
                "not Ready after 300 s (simulated time {}): {:#?}",
                simulation.sim.now(),
                p.status
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let declared: Vec<&str> = plan
        .spec
        .rollout
        .waves
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    println!("WAVE column while running: {waves_shown:?}");
    let waves_ok = if waves_shown.is_empty() {
        Err("the WAVE column was blank throughout the migration".to_string())
    } else if let Some(w) = waves_shown.iter().find(|w| !declared.contains(&w.as_str())) {
        Err(format!(
            "the WAVE column showed {w}, not a wave of the plan ({declared:?})"
        ))
    } else {
        Ok(())
    };

    // `kubectl get` of both kinds, as the API server renders it from the printer columns.
    let columns = match &result {
        Ok(()) => printer_columns_match_the_machines(&client, &ns, &name).await,
        Err(_) => Ok(()),
    };

    // Delete while the controllers run, so the finalizer is removed; bounded wait.
    let _ = plans.delete(&name, &DeleteParams::default()).await;
    let start = Instant::now();
    while plans.get_opt(&name).await.ok().flatten().is_some()
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), controllers).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    result.unwrap();
    waves_ok.unwrap();
    columns.unwrap();
    // The namespace controller empties and removes the namespace.
    let start = Instant::now();
    while namespaces.get_opt(&ns).await.ok().flatten().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "namespace {ns} not deleted after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // What the simulator's ledger saw of every machine and source, judged by this plan's bounds
    // and accepted senders: no duplicate past maxOverlap, no gap.
    simulation.plan = plan;
    let report = simulation.report();
    simulation.shutdown().await;
    assert_eq!(
        report.violations, 0,
        "violations: {:?}",
        report.violation_examples
    );
}

/// `kubectl get <resource>` as a Table: the API server computes the rows from the CRD's printer
/// columns. Returns the column names and the rows' cells, keyed by object name.
async fn table(
    client: &kube::Client,
    path: &str,
) -> (Vec<String>, Vec<(String, Vec<serde_json::Value>)>) {
    let request = http::Request::get(path)
        .header(
            "Accept",
            "application/json;as=Table;g=meta.k8s.io;v=v1,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: serde_json::Value = client.request(request).await.unwrap();
    assert_eq!(table["kind"], "Table", "{table:#}");
    let names = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let rows = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cells = r["cells"].as_array().unwrap().clone();
            (cells[0].as_str().unwrap_or_default().to_string(), cells)
        })
        .collect();
    (names, rows)
}

/// At completion, the plan's DONE/TOTAL/PHASE columns agree with its MachineMigrations and WAVE
/// is blank (no wave is current), and every machine row shows its plan, wave, step and agents.
async fn printer_columns_match_the_machines(
    client: &kube::Client,
    ns: &str,
    plan: &str,
) -> Result<(), String> {
    let (columns, rows) = table(
        client,
        &format!("/apis/amamigrator.io/v1alpha1/namespaces/{ns}/migrationplans"),
    )
    .await;
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or(format!("no column {name} in {columns:?}"))
    };
    let (_, cells) = rows
        .iter()
        .find(|(n, _)| n == plan)
        .ok_or(format!("no row for {plan}"))?;
    println!("kubectl get migrationplans: {columns:?}\n  {cells:?}");

    let (mcolumns, mrows) = table(
        client,
        &format!("/apis/amamigrator.io/v1alpha1/namespaces/{ns}/machinemigrations"),
    )
    .await;
    let mcol = |name: &str| {
        mcolumns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or(format!("no column {name} in {mcolumns:?}"))
    };
    let (step, wave, plan_col, agents) =
        (mcol("Step")?, mcol("Wave")?, mcol("Plan")?, mcol("Agents")?);
    let mut done = 0;
    for (name, m) in &mrows {
        for c in [step, wave, plan_col, agents] {
            if m[c].as_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "machine {name}: column {} is blank: {m:?}",
                    mcolumns[c]
                ));
            }
        }
        if m[plan_col] != plan {
            return Err(format!("machine {name} shows plan {}", m[plan_col]));
        }
        done += usize::from(m[step] == "Done");
    }
    let total = mrows.len();
    if total == 0 {
        return Err("no MachineMigration rows".into());
    }
    if cells[col("Total")?] != total {
        return Err(format!(
            "TOTAL {} but {total} MachineMigrations",
            cells[col("Total")?]
        ));
    }
    if cells[col("Done")?] != done {
        return Err(format!(
            "DONE {} but {done} MachineMigrations are Done",
            cells[col("Done")?]
        ));
    }
    if cells[col("Phase")?] != "Completed" {
        return Err(format!("PHASE {}", cells[col("Phase")?]));
    }
    if !cells[col("Wave")?].as_str().is_none_or(str::is_empty) {
        return Err(format!("WAVE names a wave of a Completed plan: {cells:?}"));
    }
    Ok(())
}
