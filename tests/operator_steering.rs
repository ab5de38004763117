//! The annotations people steer a migration with, driven through the real controllers against
//! a real API server (`operator_support::control_plane`) and the Azure simulator (issue 5: "pause and resume a plan;
//! approve a wave; retry, hold or skip a machine"; approve-wave is in `operator_migration.rs`).
//!
//! Judged on what can be observed: the plan's status and events on the API server, and the
//! state-changing ARM requests in the simulator's request log.

mod operator_support;

use std::time::{Duration, Instant};

use ama_migrator::api::machine::annotations as machine_annotations;
use ama_migrator::api::{MachineMigration, MigrationPlan};
use ama_migrator::engine::simulate::Simulation;
use ama_migrator::operator::{SKIP_ANNOTATION, plan_annotations};
use ama_migrator::sim::Fault;
use operator_support::{
    Cluster, Controllers, MACHINES, PLANS, annotate, arm_writes, condition, events_for,
    legacy_fleet, plan_object, wait_for,
};
use serde_json::{Value, json};

/// What every steering test starts from: the API server holding `simulation`'s plan as
/// `fleet` in `ns`, its manual gates passed for the `approved` waves, and the controllers running.
struct Steered {
    fake: Cluster,
    client: kube::Client,
    controllers: Controllers,
}

/// `None` (the test is skipped) without a control plane outside CI.
async fn steered(ns: &str, simulation: &Simulation, approved: &str) -> Option<Steered> {
    let (fake, client) = operator_support::cluster(ns).await?;
    let mut plan = plan_object(simulation, ns, "fleet");
    plan["metadata"]["annotations"][plan_annotations::APPROVE_WAVE] = json!(approved);
    fake.create(PLANS, plan);
    let controllers = Controllers::start(&fake, simulation).await;
    Some(Steered {
        fake,
        client,
        controllers,
    })
}

fn plan_ready(fake: &Cluster) -> bool {
    fake.object(PLANS, "fleet")
        .and_then(|p| condition(&p, "Ready").map(|c| c["status"] == "True"))
        .unwrap_or(false)
}

fn plan_status(fake: &Cluster) -> Value {
    fake.object(PLANS, "fleet")
        .map(|p| p["status"].clone())
        .unwrap_or(Value::Null)
}

fn machine(fake: &Cluster, name: &str) -> Value {
    fake.object(MACHINES, name)
        .unwrap_or_else(|| panic!("MachineMigration {name} is gone"))
}

fn step_of(m: &Value) -> String {
    m["status"]["step"].as_str().unwrap_or("").to_string()
}

/// (name, machineId, step) of every MachineMigration, sorted by name.
fn machine_steps(fake: &Cluster) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = fake
        .objects(MACHINES)
        .iter()
        .map(|m| {
            (
                m["metadata"]["name"].as_str().unwrap().to_string(),
                m["spec"]["machineId"].as_str().unwrap().to_string(),
                step_of(m),
            )
        })
        .collect();
    v.sort();
    v
}

/// Wait (bounded) for `f`; on timeout, fail showing the plan's status and every machine's step.
async fn wait_or_show(fake: &Cluster, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                show(fake)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The state-changing ARM requests under `id`, for failure messages.
fn writes_for(sim: &ama_migrator::sim::SimHandle, id: &str) -> Vec<String> {
    let prefix = format!("{}/", id.to_ascii_lowercase());
    sim.request_log()
        .iter()
        .filter(|r| operator_support::is_arm_write(r))
        .filter(|r| format!("{}/", r.path.to_ascii_lowercase()).starts_with(&prefix))
        .map(|r| {
            format!(
                "{} {} -> {} at {} {}",
                r.method,
                r.path,
                r.status,
                r.sim_time,
                r.request_body
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// What the steps look like, for failure messages.
fn show(fake: &Cluster) -> String {
    let events: Vec<String> = fake
        .objects(operator_support::EVENTS)
        .iter()
        .map(|e| {
            format!(
                "{} {} {}: {}",
                e["regarding"]["kind"].as_str().unwrap_or(""),
                e["regarding"]["name"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["note"].as_str().unwrap_or("")
            )
        })
        .collect();
    format!(
        "plan status {:#}\nmachines {:#?}\nevents {events:#?}",
        plan_status(fake),
        machine_steps(fake)
    )
}

/// Pause while machines are mid-migration: the engine finishes its pass and stops, the plan says
/// Paused, and no state-changing ARM request reaches Azure while the annotation is there; removing
/// it resumes the plan to Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pausing_a_plan_stops_every_azure_write_until_it_is_resumed() {
    const NS: &str = "steer-pause";
    let simulation = legacy_fleet(12, Vec::new()).await;
    let Some(Steered {
        fake,
        client,
        controllers,
    }) = steered(NS, &simulation, "canary, medium").await
    else {
        return;
    };
    let sim = simulation.sim.clone();

    // Mid-migration: Azure saw the first writes to machines, the plan is far from done.
    let machine_writes = || {
        machine_steps(&fake)
            .iter()
            .map(|(_, id, _)| arm_writes(&sim, Some(id)))
            .sum::<usize>()
    };
    wait_for(
        "the first ARM writes to machines",
        Duration::from_secs(30),
        || machine_writes() > 0,
    )
    .await;
    assert!(!plan_ready(&fake), "the plan finished before the pause");
    annotate::<MigrationPlan>(&client, NS, "fleet", plan_annotations::PAUSE, Some("true")).await;

    // The controller stops the engine (waiting for its pass) before it reports Paused, so once the
    // status says Paused no engine of this plan runs: nothing issued before can still be under way.
    wait_for("the plan to report Paused", Duration::from_secs(20), || {
        let st = plan_status(&fake);
        st["phase"] == "Paused"
    })
    .await;
    let plan = fake.object(PLANS, "fleet").unwrap();
    let progressing = condition(&plan, "Progressing").expect("a Progressing condition");
    assert_eq!(progressing["status"], "False", "{progressing:#}");
    assert_eq!(progressing["reason"], "Paused", "{progressing:#}");
    // The event follows the status.
    wait_for("a Paused event", Duration::from_secs(10), || {
        !events_for(&fake, "MigrationPlan", "fleet", "Paused").is_empty()
    })
    .await;
    assert!(controllers.ctx.running_plans().is_empty());
    let writes_paused = arm_writes(&sim, None);
    let steps_paused = machine_steps(&fake);
    let sim_paused = sim.now();
    assert!(
        steps_paused
            .iter()
            .any(|(_, _, s)| !["Done", "Blocked", "Failed"].contains(&s.as_str())),
        "machines were mid-migration when paused: {steps_paused:#?}"
    );

    // 3 s of wall time is 2.5 h of simulated time: the whole migration would fit in it unpaused.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes_later = arm_writes(&sim, None);
    let new: Vec<String> = sim
        .request_log()
        .iter()
        .filter(|r| operator_support::is_arm_write(r))
        .skip(writes_paused)
        .map(|r| format!("{} {} {} at {}", r.method, r.path, r.status, r.sim_time))
        .collect();
    assert_eq!(
        writes_later, writes_paused,
        "ARM writes while paused (paused at simulated {sim_paused}): {new:#?}"
    );
    assert_eq!(
        machine_steps(&fake),
        steps_paused,
        "machines moved while paused"
    );
    assert!(!plan_ready(&fake));
    assert_eq!(plan_status(&fake)["phase"], "Paused");
    assert_eq!(
        events_for(&fake, "MigrationPlan", "fleet", "Paused").len(),
        1,
        "one Paused event for one pause"
    );

    // Resume: the plan goes on to Ready, with the writes that were left to do.
    annotate::<MigrationPlan>(&client, NS, "fleet", plan_annotations::PAUSE, None).await;
    wait_for(
        "the plan to be Ready after resuming",
        Duration::from_secs(45),
        || plan_ready(&fake),
    )
    .await;
    let st = plan_status(&fake);
    assert_eq!(st["phase"], "Completed", "{st:#}");
    assert!(
        arm_writes(&sim, None) > writes_paused,
        "work remained after the pause"
    );
    let done = machine_steps(&fake)
        .iter()
        .filter(|(_, _, s)| s == "Done")
        .count();
    assert!(done >= 8, "only {done} machines Done: {}", show(&fake));

    controllers.stop().await;
    simulation.shutdown().await;
}

/// The first machine (by name) of `wave`, once the engine created the MachineMigrations.
async fn machine_of_wave(fake: &Cluster, waves: &[&str]) -> (String, String) {
    let pick = || {
        let mut ms = fake.objects(MACHINES);
        ms.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        waves.iter().find_map(|w| {
            ms.iter().find(|m| m["spec"]["wave"] == *w).map(|m| {
                (
                    m["metadata"]["name"].as_str().unwrap().to_string(),
                    m["spec"]["machineId"].as_str().unwrap().to_string(),
                )
            })
        })
    };
    wait_for(
        &format!("a MachineMigration in wave {waves:?}"),
        Duration::from_secs(30),
        || pick().is_some(),
    )
    .await;
    pick().unwrap()
}

/// Steer one machine of a wave that is not approved yet (so it has not started), then approve the
/// wave; returns the machine's (name, machineId).
async fn steer_before_start(
    fake: &Cluster,
    client: &kube::Client,
    ns: &str,
    sim: &ama_migrator::sim::SimHandle,
    key: &str,
    reason: &str,
) -> (String, String) {
    let (name, id) = machine_of_wave(fake, &["medium", "high"]).await;
    assert_eq!(
        arm_writes(sim, Some(&id)),
        0,
        "{name} was touched before its wave was approved"
    );
    annotate::<MachineMigration>(client, ns, &name, key, Some("true")).await;
    wait_for(
        &format!("a {reason} event for {name}"),
        Duration::from_secs(20),
        || !events_for(fake, "MachineMigration", &name, reason).is_empty(),
    )
    .await;
    annotate::<MigrationPlan>(
        client,
        ns,
        "fleet",
        plan_annotations::APPROVE_WAVE,
        Some("canary, medium"),
    )
    .await;
    (name, id)
}

/// Every machine but `except` migrated as far as it can alone: `Done`, or `WaitForFlip` (its
/// sources run on AMA; the workspace's legacy flip waits for every sender to be covered, so it
/// waits for a held machine), and `except`'s wave has such a machine.
fn rest_of_fleet_migrated(fake: &Cluster, except: &str) -> bool {
    let ms = fake.objects(MACHINES);
    let Some(wave) = ms
        .iter()
        .find(|m| m["metadata"]["name"] == except)
        .map(|m| m["spec"]["wave"].clone())
    else {
        return false;
    };
    let others: Vec<&Value> = ms
        .iter()
        .filter(|m| m["metadata"]["name"] != except)
        .collect();
    others
        .iter()
        .all(|m| ["Done", "WaitForFlip"].contains(&step_of(m).as_str()))
        && others.iter().any(|m| m["spec"]["wave"] == wave)
}

/// Hold a machine before it starts: a HoldRequested event, no ARM write for it while the rest of
/// the fleet (its own wave included) migrates; the hold removed, it migrates too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_machine_makes_no_progress_until_the_hold_is_removed() {
    const NS: &str = "steer-hold";
    let simulation = legacy_fleet(16, Vec::new()).await;
    let sim = simulation.sim.clone();
    let Some(Steered {
        fake,
        client,
        controllers,
    }) = steered(NS, &simulation, "canary").await
    else {
        return;
    };

    let (name, id) = steer_before_start(
        &fake,
        &client,
        NS,
        &sim,
        machine_annotations::HOLD,
        "HoldRequested",
    )
    .await;
    wait_or_show(
        &fake,
        "the rest of the fleet to migrate",
        Duration::from_secs(45),
        || rest_of_fleet_migrated(&fake, &name),
    )
    .await;
    // Give the engine time to act on the held machine if it wrongly would (1 s = 50 simulated min).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        arm_writes(&sim, Some(&id)),
        0,
        "ARM writes for held {name}: {:#?}\n{}",
        writes_for(&sim, &id),
        show(&fake)
    );
    let m = machine(&fake, &name);
    assert_eq!(step_of(&m), "Blocked", "{name}: {:#}", m["status"]);
    let blocked = condition(&m, "Blocked").expect("a Blocked condition");
    assert_eq!(blocked["status"], "True", "{blocked:#}");
    assert_eq!(blocked["reason"], "Held", "{blocked:#}");
    // The rest of the fleet did progress: machines of the waves approved after the hold (not
    // started before it) got their writes, and no machine but the held one is left at Pending.
    let later: Vec<(String, String)> = fake
        .objects(MACHINES)
        .iter()
        .filter(|m| m["spec"]["wave"] != "canary" && m["metadata"]["name"] != name.as_str())
        .map(|m| {
            (
                m["metadata"]["name"].as_str().unwrap().to_string(),
                m["spec"]["machineId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let later_writes: usize = later.iter().map(|(_, id)| arm_writes(&sim, Some(id))).sum();
    assert!(
        later_writes > 0,
        "no machine of a later wave was touched: {later:?}\n{}",
        show(&fake)
    );
    // The workspace's legacy flip waits for every sender to be covered, the held one too: the
    // plan does not complete while a machine is held.
    assert!(!plan_ready(&fake), "{}", show(&fake));

    // Released: the machine migrates and the plan ends Ready.
    annotate::<MachineMigration>(&client, NS, &name, machine_annotations::HOLD, None).await;
    wait_for(
        &format!("{name} to be Done after its hold was removed"),
        Duration::from_secs(45),
        || step_of(&machine(&fake, &name)) == "Done",
    )
    .await;
    assert!(
        arm_writes(&sim, Some(&id)) > 0,
        "{name} migrated without a write?"
    );
    wait_for("the plan to be Ready", Duration::from_secs(30), || {
        plan_ready(&fake)
    })
    .await;
    assert_eq!(plan_status(&fake)["phase"], "Completed");

    controllers.stop().await;
    simulation.shutdown().await;
}

/// Skip a machine before it starts: a SkipRequested event and no ARM write for it, ever. The
/// skipped machine still sends its sources through the legacy agent, so the workspace flip waits
/// for it (flipping would cut its data: a gap nobody chose) and the plan stalls with a condition
/// naming it; once a person accepts it as an uncovered sender in the plan's spec, the plan
/// completes. The machine stays Blocked (Held) and its annotations are the person's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skipped_machine_is_never_touched_and_the_flip_waits_until_it_is_accepted() {
    const NS: &str = "steer-skip";
    let simulation = legacy_fleet(16, Vec::new()).await;
    let sim = simulation.sim.clone();
    let Some(Steered {
        fake,
        client,
        controllers,
    }) = steered(NS, &simulation, "canary").await
    else {
        return;
    };

    let (name, id) =
        steer_before_start(&fake, &client, NS, &sim, SKIP_ANNOTATION, "SkipRequested").await;
    // The flip waits for the skipped machine and says so.
    let waits_for_it = |st: &Value| {
        let text = st.to_string();
        text.contains("acceptedUncoveredSenders")
            && text
                .to_ascii_lowercase()
                .contains(id.rsplit('/').next().unwrap_or_default())
    };
    wait_or_show(
        &fake,
        "the plan to stall on the skipped machine",
        Duration::from_secs(45),
        || waits_for_it(&plan_status(&fake)),
    )
    .await;
    assert!(!plan_ready(&fake), "{:#}", plan_status(&fake));

    // A person accepts it: the plan's spec (never written by the operator) names it.
    let api: kube::Api<ama_migrator::api::MigrationPlan> =
        kube::Api::namespaced(client.clone(), NS);
    let current = fake.object(PLANS, "fleet").unwrap();
    let mut accepted = current["spec"]["legacy"]["flip"]["acceptedUncoveredSenders"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    accepted.push(json!({"computer": id, "reason": "skipped: to be decommissioned"}));
    let body = json!({"spec": {"legacy": {"flip": {"acceptedUncoveredSenders": accepted}}}});
    api.patch(
        "fleet",
        &Default::default(),
        &kube::api::Patch::Merge(&body),
    )
    .await
    .unwrap();
    wait_or_show(
        &fake,
        "the plan to be Ready",
        Duration::from_secs(45),
        || plan_ready(&fake),
    )
    .await;
    let st = plan_status(&fake);
    assert_eq!(st["phase"], "Completed", "{st:#}");
    assert_eq!(
        arm_writes(&sim, Some(&id)),
        0,
        "ARM writes for skipped {name}: {:#?}\n{}",
        writes_for(&sim, &id),
        show(&fake)
    );
    let m = machine(&fake, &name);
    assert_eq!(step_of(&m), "Blocked", "{name}: {:#}", m["status"]);
    let blocked = condition(&m, "Blocked").expect("a Blocked condition");
    assert_eq!(blocked["reason"], "Held", "{blocked:#}");
    // The engine reads skip as hold without writing it back: the person's annotations are as set.
    let a = &m["metadata"]["annotations"];
    assert_eq!(a[SKIP_ANNOTATION], "true");
    assert!(a.get(machine_annotations::HOLD).is_none(), "{a:#}");
    let others_done = machine_steps(&fake)
        .iter()
        .filter(|(n, _, s)| *n != name && s == "Done")
        .count();
    assert!(
        others_done >= 10,
        "only {others_done} others Done: {}",
        show(&fake)
    );

    controllers.stop().await;
    simulation.shutdown().await;
}

/// Retry a Failed machine: its AMA install fails for good (an injected extension fault), the cause
/// is fixed (fault cleared), `amamigrator.io/retry: "1"`: a RetryRequested event, a new install
/// reaches Azure and the machine completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_a_failed_machine_after_the_cause_is_fixed_completes_it() {
    const NS: &str = "steer-retry";
    let simulation = legacy_fleet(12, Vec::new()).await;
    // Every AMA install on one machine fails for good until the fault is cleared.
    let target = simulation.sim.inventory()[0].clone();
    simulation
        .sim
        .inject(Fault::ExtensionFailure {
            machine: Some(target.id.clone()),
            code: "VMExtensionHandlerNonTransientError".into(),
            probability: 1.0,
        })
        .unwrap();
    let sim = simulation.sim.clone();
    let Some(Steered {
        fake,
        client,
        controllers,
    }) = steered(NS, &simulation, "canary, medium").await
    else {
        return;
    };

    let find = || {
        fake.objects(MACHINES).into_iter().find(|m| {
            m["spec"]["machineId"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(&target.id))
        })
    };
    wait_for(
        &format!("{} to fail", target.name),
        Duration::from_secs(45),
        || find().is_some_and(|m| step_of(&m) == "Failed"),
    )
    .await;
    let failed = find().unwrap();
    let name = failed["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(
        failed["status"]["lastError"]["code"], "VMExtensionHandlerNonTransientError",
        "{:#}",
        failed["status"]
    );
    let ama_puts = || {
        sim.request_log()
            .iter()
            .filter(|r| {
                r.method == "PUT"
                    && r.path
                        .to_ascii_lowercase()
                        .starts_with(&format!("{}/extensions/", target.id.to_ascii_lowercase()))
            })
            .count()
    };
    let puts_failed = ama_puts();
    assert!(puts_failed > 0);
    // Failed stays failed: no further install while nobody asks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ama_puts(), puts_failed);
    assert_eq!(step_of(&machine(&fake, &name)), "Failed");

    sim.clear_faults();
    annotate::<MachineMigration>(&client, NS, &name, machine_annotations::RETRY, Some("1")).await;
    wait_for(
        &format!("a RetryRequested event for {name}"),
        Duration::from_secs(20),
        || !events_for(&fake, "MachineMigration", &name, "RetryRequested").is_empty(),
    )
    .await;
    // The engine that loaded the machine with the new value cleared the failure and says so.
    wait_for(
        &format!("the engine to clear the failure of {name}"),
        Duration::from_secs(20),
        || {
            events_for(&fake, "MachineMigration", &name, "RetryRequested")
                .iter()
                .any(|e| {
                    e["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("retry 1 requested: the failure is cleared"))
                })
        },
    )
    .await;
    wait_for(
        &format!("{name} to be Done after the retry"),
        Duration::from_secs(45),
        || step_of(&machine(&fake, &name)) == "Done",
    )
    .await;
    assert!(ama_puts() > puts_failed, "the retry installed AMA again");
    let m = machine(&fake, &name);
    assert_eq!(
        m["metadata"]["annotations"][ama_migrator::operator::RETRY_OBSERVED_ANNOTATION],
        "1"
    );
    wait_for("the plan to be Ready", Duration::from_secs(30), || {
        plan_ready(&fake)
    })
    .await;
    assert_eq!(plan_status(&fake)["phase"], "Completed");

    controllers.stop().await;
    simulation.shutdown().await;
}
