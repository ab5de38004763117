//! The state file survives a crash at any point: a child process (this test binary, re-run in
//! "writer" mode) commits transactions in a tight loop and is killed with SIGKILL at random
//! moments; after each kill the file is reopened and checked — integrity, every object parses,
//! versions never go back, every acknowledged commit is there, and each transaction (two machine
//! status changes, their journal entries, an event) is all there or not there at all.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ama_migrator::api::machine::{InFlightOperation, MachineStep, OperationKind};
use ama_migrator::api::{MachineMigration, MigrationPlan};
use ama_migrator::azure::lro::{LroMethod, OperationHandle, PollKind};
use ama_migrator::local::{
    EventType, ObjectKey, OperationOutcome, StateStore, StoreError, StoredEvent, resource_version,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const WRITER_ENV: &str = "AMA_MIGRATOR_CRASH_WRITER_STATE";
const SEED_ENV: &str = "AMA_MIGRATOR_CRASH_SEED";
const MACHINES: usize = 8;
const KILLS: usize = 25;
const ACTION: &str = "InstallAma";
const STEPS: [MachineStep; 4] = [
    MachineStep::EnsureIdentity,
    MachineStep::InstallAma,
    MachineStep::AssociateDcrs,
    MachineStep::Verify,
];
/// Large enough that one object spans two SQLite pages, so a torn write would show.
const PADDING_REPEAT: usize = 700;

fn machine_name(k: usize) -> String {
    format!("vm-{k}")
}

fn machine_id(k: usize) -> String {
    format!(
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{}",
        machine_name(k)
    )
}

fn padding(attempts: u32) -> String {
    format!("{attempts:08}").repeat(PADDING_REPEAT)
}

fn plan() -> MigrationPlan {
    serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MigrationPlan",
        "metadata": {"name": "p1", "namespace": "default"},
        "spec": {
            "workspace": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws",
            "location": "westeurope",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}],
            "rollout": {"waves": [{"name": "all", "maxRisk": "High"}]}
        }
    }))
    .unwrap()
}

fn machine(k: usize) -> MachineMigration {
    serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MachineMigration",
        "metadata": {"name": machine_name(k), "namespace": "default",
                     "annotations": {"test/padding": padding(0)}},
        "spec": {
            "plan": "p1", "machineId": machine_id(k),
            "os": "Windows", "kind": "AzureVM", "wave": "all", "risk": "Low",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}]
        }
    }))
    .unwrap()
}

#[derive(Debug)]
enum WriterError {
    Store(StoreError),
    /// A transaction the writer abandons on purpose after writing: none of it may persist.
    Deliberate,
}

impl From<StoreError> for WriterError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The child: set up the plan and machines (one transaction), then commit pairs of machine
/// updates with their journal entries until killed; prints `ACK k version` after each commit.
#[test]
#[ignore = "child process of crash_at_random_points_leaves_a_consistent_file"]
fn crash_writer() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let store = StateStore::open(&path).unwrap();
    let setup = store.transaction(|tx| {
        if tx.get::<MigrationPlan>("default", "p1")?.is_none() {
            tx.create(&plan())?;
            for k in 0..MACHINES {
                tx.create(&machine(k))?;
            }
        }
        Ok::<_, StoreError>(())
    });
    setup.unwrap();
    // Bounded even if the parent never kills us.
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..1_000_000 {
        if Instant::now() > deadline {
            break;
        }
        let i = rng.random_range(0..MACHINES);
        let j = (i + rng.random_range(1..MACHINES)) % MACHINES;
        let abandon = rng.random_ratio(1, 8);
        let result = store.transaction(|tx| -> Result<Vec<(usize, u64)>, WriterError> {
            let now = Timestamp::now();
            let mut acks = Vec::new();
            for k in [i, j] {
                let mut m: MachineMigration = tx.get_existing("default", &machine_name(k))?;
                let version = resource_version(&m).unwrap();
                let rid = machine_id(k);
                if let Some(previous) = tx.in_flight_operation(&rid, ACTION)? {
                    tx.finish_operation(previous.id, &OperationOutcome::Succeeded, now)?;
                }
                let id = tx.begin_operation(&rid, ACTION, None, now)?;
                let url = format!("https://127.0.0.1/operations/{id}");
                tx.set_operation_handle(
                    id,
                    &OperationHandle {
                        method: LroMethod::Put,
                        poll_kind: PollKind::AzureAsyncOperation,
                        poll_url: url.clone(),
                        resource_url: format!("https://127.0.0.1{rid}"),
                        resource_id: rid.clone(),
                        started_at_ms: 0,
                        retry_after_ms: None,
                    },
                )?;
                let status = m.status.get_or_insert_with(Default::default);
                status.attempts += 1;
                let attempts = status.attempts;
                status.step = Some(STEPS[attempts as usize % STEPS.len()]);
                status.operation = Some(InFlightOperation {
                    url,
                    kind: OperationKind::InstallAma,
                    started_at: Time(now),
                });
                m.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert("test/padding".into(), padding(attempts));
                let updated = tx.update(&m, version)?;
                acks.push((k, resource_version(&updated).unwrap()));
            }
            tx.record_event(&StoredEvent {
                object: ObjectKey::of(&machine(i)),
                event_type: EventType::Normal,
                reason: if abandon { "Abandoned" } else { "Step" }.into(),
                message: format!("{} and {}", machine_name(i), machine_name(j)),
                at: now,
            })?;
            if abandon {
                return Err(WriterError::Deliberate);
            }
            Ok(acks)
        });
        match result {
            Ok(acks) => {
                for (k, v) in acks {
                    println!("ACK {k} {v}");
                }
            }
            Err(WriterError::Deliberate) => {}
            Err(WriterError::Store(e)) => panic!("writer failed: {e}"),
        }
    }
}

#[derive(Default)]
struct Observed {
    /// Highest version per machine the writer reported committed.
    acked: HashMap<usize, u64>,
    acks: usize,
}

/// Reopen the file and check everything; returns each machine's version.
fn check_file(
    path: &Path,
    previous: &HashMap<usize, u64>,
    acked: &HashMap<usize, u64>,
) -> HashMap<usize, u64> {
    {
        let conn = rusqlite::Connection::open(path).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let fk_violations: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk_violations, 0);
    }
    let store = StateStore::open(path).unwrap();
    let plans = store.list::<MigrationPlan>(None).unwrap();
    let machines = store.list::<MachineMigration>(None).unwrap();
    // The setup transaction is all-or-nothing.
    assert!(
        (plans.is_empty() && machines.is_empty())
            || (plans.len() == 1 && machines.len() == MACHINES),
        "partial setup: {} plans, {} machines",
        plans.len(),
        machines.len()
    );
    let events = store.read(|s| s.events(None, usize::MAX)).unwrap();
    assert!(
        events.iter().all(|e| e.reason == "Step"),
        "an abandoned transaction left an event"
    );
    let journal = store.read(|s| s.operations()).unwrap();
    let mut versions = HashMap::new();
    let mut total_attempts = 0u64;
    for m in &machines {
        let name = m.metadata.name.clone().unwrap();
        let k: usize = name.trim_start_matches("vm-").parse().unwrap();
        let version = resource_version(m).unwrap();
        let status = m.status.clone().unwrap_or_default();
        let attempts = status.attempts;
        total_attempts += u64::from(attempts);
        assert_eq!(
            version,
            u64::from(attempts) + 1,
            "{name}: version and content disagree"
        );
        assert_eq!(
            m.metadata.annotations.as_ref().unwrap()["test/padding"],
            padding(attempts),
            "{name}: torn object"
        );
        let rid = machine_id(k);
        let entries: Vec<_> = journal.iter().filter(|e| e.resource_id == rid).collect();
        assert_eq!(
            entries.len(),
            attempts as usize,
            "{name}: journal entries vs status changes"
        );
        let in_flight: Vec<_> = entries.iter().filter(|e| e.in_flight()).collect();
        assert!(
            entries
                .iter()
                .filter(|e| !e.in_flight())
                .all(|e| e.outcome == Some(OperationOutcome::Succeeded))
        );
        if attempts == 0 {
            assert!(in_flight.is_empty() && status.operation.is_none());
        } else {
            assert_eq!(in_flight.len(), 1, "{name}: one operation in flight");
            let op = status.operation.as_ref().unwrap();
            assert_eq!(
                op.url,
                format!("https://127.0.0.1/operations/{}", in_flight[0].id)
            );
            assert_eq!(in_flight[0].handle.as_ref().unwrap().poll_url, op.url);
        }
        if let Some(before) = previous.get(&k) {
            assert!(
                version >= *before,
                "{name}: version went back from {before} to {version}"
            );
        }
        if let Some(ack) = acked.get(&k) {
            assert!(
                version >= *ack,
                "{name}: acknowledged version {ack} lost (stored {version})"
            );
        }
        versions.insert(k, version);
    }
    // Each committed transaction changed two machines and recorded one event.
    assert_eq!(
        total_attempts,
        2 * events.len() as u64,
        "a transaction was partly applied"
    );
    versions
}

#[test]
fn crash_at_random_points_leaves_a_consistent_file() {
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
    eprintln!("crash test seed {seed} (set {SEED_ENV} to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = std::env::temp_dir().join(format!("ama-local-crash-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("state.db");
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut versions = HashMap::new();
    let mut rounds_with_commits = 0;
    let mut total_acks = 0;
    for round in 0..KILLS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "crash test ran too long"
        );
        let mut child = Command::new(&exe)
            .args([
                "crash_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, &path)
            .env(SEED_ENV, rng.random::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let observed = Arc::new(Mutex::new(Observed::default()));
        let reader = {
            let observed = Arc::clone(&observed);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let mut parts = line.split_whitespace();
                    if parts.next() != Some("ACK") {
                        continue;
                    }
                    let k: usize = parts.next().unwrap().parse().unwrap();
                    let v: u64 = parts.next().unwrap().parse().unwrap();
                    let mut o = observed.lock().unwrap();
                    let entry = o.acked.entry(k).or_default();
                    *entry = (*entry).max(v);
                    o.acks += 1;
                }
            })
        };
        // The early kills land in process start-up and schema creation, later ones mid-write.
        let delay = if round < 3 {
            rng.random_range(0..40)
        } else {
            rng.random_range(20..220)
        };
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let observed = observed.lock().unwrap();
        if observed.acks > 0 {
            rounds_with_commits += 1;
        }
        total_acks += observed.acks;
        versions = check_file(&path, &versions, &observed.acked);
    }
    let commits: u64 = versions.values().map(|v| v - 1).sum::<u64>() / 2;
    eprintln!(
        "{KILLS} kills in {:.1}s: {rounds_with_commits} rounds killed mid-writing, {total_acks} acknowledged machine updates, {commits} committed transactions in the file",
        started.elapsed().as_secs_f64()
    );
    assert!(
        rounds_with_commits >= KILLS / 2,
        "too few kills landed while writing ({rounds_with_commits}/{KILLS}); the writer may be failing"
    );
    std::fs::remove_dir_all(&dir).ok();
}
