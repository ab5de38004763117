//! Shared helpers of the scenario, crash-resume tests and the throughput bench: a fast simulated
//! world, the built-in plan with per-test edits, ledger deltas since the plan started, machine
//! conditions from the state, and request-log checks.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ama_migrator::api::machine::MachineStep;
use ama_migrator::api::{MachineMigration, MigrationPlan};
use ama_migrator::catalog::DataSourceType;
use ama_migrator::engine::simulate::Simulation;
use ama_migrator::engine::{RunEnd, SimulateOptions, StopPoint};
use ama_migrator::sim::{Agent, BucketConfig, RequestRecord, Scenario, ThrottleConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Simulated seconds per real second in these tests: a 1 h soak is 2.4 s, an install 0.1 s.
pub const TIME_SCALE: f64 = 1500.0;

/// Bound on one engine run in real time (a hang fails the test instead of blocking CI).
pub const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A small fast world: no outside-scope or on-premises senders, nobody off, generous quotas
/// (tests that study them set their own). Callers switch on what their scenario is about.
pub fn scenario(machines: usize) -> Scenario {
    Scenario {
        machines,
        time_scale: TIME_SCALE,
        outside_subscription_machines: 0,
        on_prem_computers: 0,
        deallocated_ratio: 0.0,
        disconnected_ratio: 0.0,
        multi_homed_ratio: 0.0,
        legacy_only_sources_ratio: 0.0,
        throttle: generous_throttle(),
        ..Scenario::default()
    }
}

pub fn generous_throttle() -> ThrottleConfig {
    let b = |size: f64, refill_per_sec: f64| BucketConfig {
        size,
        refill_per_sec,
    };
    ThrottleConfig {
        reads: b(2000.0, 500.0),
        writes: b(2000.0, 200.0),
        deletes: b(2000.0, 200.0),
        compute_update: b(2000.0, 200.0),
    }
}

/// The simulation, started, with the ledger as it stood before the engine ran.
pub struct Run {
    pub s: Simulation,
    pub baseline: HashMap<(String, DataSourceType), (i64, i64)>,
}

/// Start the simulator on `scenario` with the built-in plan (editable through `s.plan`).
pub async fn start(scenario: Scenario, state: Option<std::path::PathBuf>) -> Run {
    let s = Simulation::start(SimulateOptions {
        scenario,
        state,
        tick: Duration::from_millis(10),
        ..SimulateOptions::default()
    })
    .await
    .expect("simulation starts");
    let baseline = s
        .sim
        .ledger_pairs(None, None)
        .into_iter()
        .map(|p| {
            (
                (p.machine.clone(), p.data_source),
                (p.counts.duplicate_minutes, p.counts.gap_minutes),
            )
        })
        .collect();
    Run { s, baseline }
}

/// One (machine, data source) of the ledger: minutes since the engine started and senders now.
#[derive(Clone, Debug)]
pub struct PairDelta {
    pub machine: String,
    pub computer: String,
    pub resource_id: String,
    pub out_of_scope: bool,
    pub ds: DataSourceType,
    pub wanted: bool,
    pub dup: i64,
    pub gap: i64,
    pub senders: Vec<Agent>,
}

impl Run {
    /// Run a fresh engine on the state until it ends (bounded by [`RUN_LIMIT`]).
    pub async fn run(&mut self, stop: Option<StopPoint>) -> RunEnd {
        tokio::time::timeout(RUN_LIMIT, self.s.run(stop))
            .await
            .expect("the engine run ends within the time limit")
            .expect("the engine run does not error")
    }

    pub fn ledger(&self) -> Vec<PairDelta> {
        self.s
            .sim
            .ledger_pairs(None, None)
            .into_iter()
            .map(|p| {
                let (d0, g0) = self
                    .baseline
                    .get(&(p.machine.clone(), p.data_source))
                    .copied()
                    .unwrap_or_default();
                PairDelta {
                    machine: p.machine,
                    computer: p.computer,
                    resource_id: p.resource_id,
                    out_of_scope: p.out_of_scope,
                    ds: p.data_source,
                    wanted: p.wanted,
                    dup: p.counts.duplicate_minutes - d0,
                    gap: p.counts.gap_minutes - g0,
                    senders: p.senders,
                }
            })
            .collect()
    }

    /// Ledger pairs of one machine (by name).
    pub fn pairs_of(&self, machine: &str) -> Vec<PairDelta> {
        self.ledger()
            .into_iter()
            .filter(|p| p.machine.eq_ignore_ascii_case(machine))
            .collect()
    }

    pub fn machines(&self) -> Vec<MachineMigration> {
        let p = &self.s.plan;
        self.s
            .state
            .list_plan_machines(
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or(""),
            )
            .expect("machines listed")
    }

    /// The MachineMigration of the machine named `name` (its ARM id ends with `/name`).
    pub fn machine(&self, name: &str) -> MachineMigration {
        let suffix = format!("/{}", name.to_ascii_lowercase());
        self.machines()
            .into_iter()
            .find(|m| m.spec.machine_id.to_ascii_lowercase().ends_with(&suffix))
            .unwrap_or_else(|| panic!("no MachineMigration for {name}"))
    }

    pub fn plan(&self) -> MigrationPlan {
        let p = &self.s.plan;
        self.s
            .state
            .get::<MigrationPlan>(
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or(""),
            )
            .expect("plan read")
            .expect("plan stored")
    }

    pub fn plan_condition(&self, type_: &str) -> Option<Condition> {
        self.plan()
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_))
    }

    pub fn log(&self) -> Vec<RequestRecord> {
        self.s.request_log()
    }
}

pub fn step(m: &MachineMigration) -> Option<MachineStep> {
    m.status.as_ref().and_then(|s| s.step)
}

pub fn condition(m: &MachineMigration, type_: &str) -> Option<Condition> {
    m.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_).cloned())
}

pub fn name_of(m: &MachineMigration) -> String {
    m.spec
        .machine_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Lower-cased path of a request.
pub fn lpath(r: &RequestRecord) -> String {
    r.path.to_ascii_lowercase()
}

pub fn ok(r: &RequestRecord) -> bool {
    (200..300).contains(&r.status)
}

/// Requests with `method` whose lower-cased path contains every fragment.
pub fn requests<'a>(
    log: &'a [RequestRecord],
    method: &str,
    fragments: &[&str],
) -> Vec<&'a RequestRecord> {
    log.iter()
        .filter(|r| r.method == method)
        .filter(|r| {
            let p = lpath(r);
            fragments
                .iter()
                .all(|f| p.contains(&f.to_ascii_lowercase()))
        })
        .collect()
}

/// The state-changing class of a write, or `None` for reads and queries.
fn write_kind(r: &RequestRecord) -> Option<&'static str> {
    let p = lpath(r);
    if p.starts_with("/v1/workspaces/") || p.contains("/microsoft.resourcegraph/") {
        return None;
    }
    match r.method.as_str() {
        "PUT" if p.contains("/extensions/") => Some("extension PUT"),
        "PUT" if p.contains("/datacollectionruleassociations/") => Some("DCRA PUT"),
        "PUT" if p.contains("/datacollectionrules/") => Some("DCR PUT"),
        "PUT" if p.contains("/datasources/") => Some("workspace dataSource PUT"),
        "PATCH" => Some("VM PATCH"),
        "DELETE" if p.contains("/extensions/") => Some("extension DELETE"),
        "DELETE" if p.contains("/datacollectionruleassociations/") => Some("DCRA DELETE"),
        "DELETE" => Some("DELETE"),
        "PUT" => Some("PUT"),
        _ => None,
    }
}

/// State-changing writes repeated needlessly: the same write (method, path and, for PUT/PATCH,
/// body) sent again after it already succeeded (2xx) with no other write to that path in
/// between. A repeat after a 4xx/5xx/429 answer is legitimate: nothing changed yet. A repeat after
/// an accepted asynchronous write whose operation later failed would be legitimate too; tests
/// that use this check inject no such failures. Returns `kind path (n times)` per offence.
pub fn needless_repeats(log: &[RequestRecord]) -> Vec<String> {
    // path → (method, body) of the last successful write on that path
    let mut last_ok: HashMap<String, (String, String)> = HashMap::new();
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for r in log {
        let Some(kind) = write_kind(r) else { continue };
        let p = lpath(r);
        let body = match r.method.as_str() {
            "DELETE" => String::new(),
            _ => r
                .request_body
                .as_ref()
                .map(|b| b.to_string())
                .unwrap_or_default(),
        };
        let this = (r.method.clone(), body);
        if last_ok.get(&p) == Some(&this) {
            *out.entry(format!("{kind} {}", r.path)).or_default() += 1;
        }
        // A rejected write (4xx, 429, 5xx) changes nothing: it does not reset the last success.
        if ok(r) {
            last_ok.insert(p, this);
        }
    }
    out.into_iter()
        .map(|(k, n)| format!("{k} ({n} times)"))
        .collect()
}

/// A one-line ledger summary for failure messages.
pub fn show(p: &PairDelta) -> String {
    format!(
        "{}/{}: dup {} gap {} senders {:?}",
        p.machine, p.ds, p.dup, p.gap, p.senders
    )
}

/// `ama-migrator migrate` (the built binary) against the simulator over HTTP, as a person without
/// Kubernetes runs it: no credential (loopback), short ticks, stdout and stderr piped. Callers
/// add their own flags with `.args(...)`.
pub fn migrate_command(
    sim: &ama_migrator::sim::SimHandle,
    plan: &std::path::Path,
    state: &std::path::Path,
) -> std::process::Command {
    let base = sim.base_url();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"));
    c.args(["migrate", "--plan"])
        .arg(plan)
        .arg("--state")
        .arg(state)
        .args(["--credential", "none", "--arm-endpoint", &base])
        .args(["--log-analytics-endpoint", &format!("{base}/")])
        .args(["--tick-seconds", "1", "--verify-interval-seconds", "2"])
        .env_remove("AMA_MIGRATOR_ARM_ENDPOINT")
        .env_remove("AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

/// A fresh directory for one test with `plan` written as `plan.json` and no state file yet:
/// (the directory, the plan's path, the state file's path).
pub fn workdir(
    name: &str,
    plan: &MigrationPlan,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let plan_path = dir.join("plan.json");
    let plan_json = serde_json::to_vec_pretty(plan).expect("a plan serializes");
    std::fs::write(&plan_path, plan_json).expect("the plan is written");
    let state = dir.join("state.db");
    (dir, plan_path, state)
}
