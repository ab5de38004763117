//! `simulate`: the engine against the in-process simulator through the real ARM client, judged
//! by the simulator's ingestion ledger. Tests drive it through [`Simulation`] (start, run with a
//! stop point, run again on the same state, report) or [`run_simulation`] (all of it at once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::MigrationPlan;
use crate::api::duration::parse_duration;
use crate::api::plan::{AcceptedSender, Agent, CutoverPolicy, MigrationPlanSpec};
use crate::azure::{ArmClient, ClientConfig, CredentialConfig, Endpoints};
use crate::catalog::DataSourceType;
use crate::local::StateStore;
use crate::sim::{PairDetail, RequestRecord, Scenario, SimHandle, Simulator};

use super::EngineError;
use super::rollback::{RollbackEnd, RollbackScope};
use super::run::{
    Clock, Engine, EngineOptions, ProgressSink, RunEnd, TEST_WORKSPACE_ID_ANNOTATION,
};

/// Simulated seconds per real second in `simulate` unless the scenario file sets its own.
pub const DEFAULT_TIME_SCALE: f64 = 300.0;

/// Where to stop a run early (crash and resume tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopPoint {
    /// After this many machine writes were sent (the engine stops as if killed).
    AfterWrites(u64),
}

#[derive(Clone, Debug)]
pub struct SimulateOptions {
    /// The simulated world (default: 500 mixed machines at [`DEFAULT_TIME_SCALE`]).
    pub scenario: Scenario,
    /// The plan; `None`: [`default_plan`] for the simulator's workspace.
    pub plan: Option<MigrationPlan>,
    /// State file; `None`: in memory.
    pub state: Option<PathBuf>,
    pub stop: Option<StopPoint>,
    /// Real time between engine passes.
    pub tick: Duration,
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// Idle time before the run ends as stalled (simulated clock).
    pub stall_after: Duration,
}

impl std::fmt::Debug for dyn ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl Default for SimulateOptions {
    fn default() -> Self {
        Self {
            scenario: Scenario {
                time_scale: DEFAULT_TIME_SCALE,
                ..Scenario::default()
            },
            plan: None,
            state: None,
            stop: None,
            tick: Duration::from_millis(20),
            progress: None,
            stall_after: Duration::from_secs(45 * 60),
        }
    }
}

/// ARM requests the simulator served, by class (counted as they are served: the request log's
/// bounds do not truncate them).
pub use crate::sim::request_log::RequestCounts as ArmCounts;

/// Agent state of one data source over the fleet at the end (from the ledger).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgentStates {
    pub legacy_only: u64,
    pub ama_only: u64,
    pub both: u64,
    pub none: u64,
}

/// The end of a simulation, as `--report json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct SimulationReport {
    pub end: RunEnd,
    pub machines: u64,
    pub completed: u64,
    pub failed: u64,
    pub blocked: u64,
    /// Duplicate minutes the migration caused (pairs not already duplicated before it started).
    pub duplicate_minutes: i64,
    pub gap_minutes: i64,
    /// Duplicate or gap minutes beyond the plan's declared window, per (machine, data source).
    pub violations: i64,
    /// Pairs with a violation, as `machine/dataSource: N min`, capped at 20.
    pub violation_examples: Vec<String>,
    /// Duplicates of pairs that were already sent by both agents before the plan started.
    pub preexisting_duplicate_minutes: i64,
    pub arm: ArmCounts,
    pub elapsed_seconds: f64,
    pub simulated_minutes: i64,
    /// Migrated machines per hour against the bound the ARM quotas allow at the measured
    /// requests per machine (1.0 = at the quota bound).
    pub throughput_ratio: f64,
    pub machines_per_hour: f64,
    pub quota_bound_per_hour: f64,
    pub reads_per_machine: f64,
    pub writes_per_machine: f64,
    /// In-scope machines by agent state, per data source (wanted pairs).
    pub agent_states: BTreeMap<DataSourceType, AgentStates>,
    pub flipped: Vec<String>,
}

impl SimulationReport {
    /// Exit status 0: the migration completed and no minute is outside the declared windows.
    pub fn success(&self) -> bool {
        self.end == RunEnd::Completed && self.violations == 0
    }
}

/// The simulator's clock, for the engine.
struct SimClockAdapter(Arc<SimHandle>);

impl Clock for SimClockAdapter {
    fn now(&self) -> Timestamp {
        self.0.now().parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// The built-in plan for the simulator's workspace: the sources its workspace collects, Windows
/// Firewall and Application/Service logs kept on the legacy agent, a canary wave into the test
/// workspace, then low / medium / high risk. Senders the plan cannot cover (outside its scope,
/// on-premises, or VMs that are off / disconnected) are accepted by name, as an operator would
/// after reading `ama-migrator plan`.
pub fn default_plan(sim: &SimHandle) -> Result<MigrationPlan, EngineError> {
    let ds = |name: &str, t: DataSourceType, agent: Agent, settings: serde_json::Value| serde_json::json!({"name": name, "type": t, "agent": agent, "settings": settings});
    let data_sources: Vec<serde_json::Value> = vec![
        ds(
            "security-events",
            DataSourceType::WindowsSecurityEvents,
            Agent::Ama,
            serde_json::json!({"securityEventSet": "Common"}),
        ),
        ds(
            "event-logs",
            DataSourceType::WindowsEventLogs,
            Agent::Ama,
            serde_json::json!({}),
        ),
        ds(
            "sysmon",
            DataSourceType::WindowsSysmon,
            Agent::Ama,
            serde_json::json!({}),
        ),
        ds(
            "windows-perf",
            DataSourceType::WindowsPerformanceCounters,
            Agent::Ama,
            serde_json::json!({}),
        ),
        ds(
            "iis",
            DataSourceType::IisLogs,
            Agent::Ama,
            serde_json::json!({}),
        ),
        ds(
            "firewall",
            DataSourceType::WindowsFirewallLogs,
            Agent::Legacy,
            serde_json::json!({}),
        ),
        ds(
            "app-service-logs",
            DataSourceType::WindowsApplicationServiceLogs,
            Agent::Legacy,
            serde_json::json!({}),
        ),
        ds(
            "syslog",
            DataSourceType::LinuxSyslog,
            Agent::Ama,
            serde_json::json!({}),
        ),
        ds(
            "linux-sysmon",
            DataSourceType::LinuxSysmon,
            Agent::Ama,
            serde_json::json!({}),
        ),
        ds(
            "cef",
            DataSourceType::LinuxCef,
            Agent::Ama,
            serde_json::json!({"facilities": ["local4"], "minimumLevel": "Info"}),
        ),
        ds(
            "linux-perf",
            DataSourceType::LinuxPerformanceCounters,
            Agent::Ama,
            serde_json::json!({}),
        ),
    ];
    let mut accepted: Vec<AcceptedSender> = Vec::new();
    let mut seen = BTreeSet::new();
    for p in sim.ledger_pairs(None, None) {
        if p.out_of_scope && seen.insert(p.computer.clone()) {
            accepted.push(AcceptedSender {
                computer: if p.resource_id.is_empty() { p.computer.clone() } else { p.resource_id.clone() },
                data_sources: Vec::new(),
                reason: "outside the plan's scope (simulated on-premises or other-subscription host); accepted to lose legacy collection".into(),
            });
        }
    }
    for m in sim.inventory() {
        if m.is_deallocated() || m.is_disconnected() {
            accepted.push(AcceptedSender {
                computer: m.name.clone(),
                data_sources: Vec::new(),
                reason: "deallocated or disconnected; accepted to lose legacy collection".into(),
            });
        }
    }
    let waves = serde_json::json!([
        {"name": "canary", "maxRisk": "Low", "count": 10, "canary": true, "soak": "1h",
         "gates": {"minSuccessRatio": 0.9, "manualApproval": true}},
        {"name": "low", "maxRisk": "Low", "soak": "30m", "gates": {"minSuccessRatio": 0.9}},
        {"name": "medium", "maxRisk": "Medium", "soak": "30m", "gates": {"minSuccessRatio": 0.9, "manualApproval": true}},
        {"name": "high", "maxRisk": "High", "gates": {"minSuccessRatio": 0.9}}
    ]);
    let rollout = serde_json::json!({
        "riskRules": [
            {"match": {"criticality": "high"}, "risk": "High"},
            {"match": {"role": "domain-controller"}, "risk": "High"},
            {"match": {"criticality": "low"}, "risk": "Low"}
        ],
        "defaultRisk": "Medium",
        "waves": waves,
        "maxParallel": 150,
        "failureBudget": {"maxFailedPercent": 10},
        "cutover": {"policy": "PreferNoGap", "maxOverlap": "2h"}
    });
    let spec = serde_json::json!({
        "workspace": sim.workspace_resource_id(),
        "location": "westeurope",
        "workspaceCustomerId": sim.workspace_customer_id(),
        "scope": {"subscriptions": sim.subscriptions()},
        "dataSources": data_sources,
        "rollout": rollout,
        "legacy": {
            "flip": {"policy": "AfterAllCovered", "acceptedUncoveredSenders": accepted},
            "uninstall": "WhenUnused"
        },
        "identity": "EnableSystemAssigned"
    });
    let spec: MigrationPlanSpec = serde_json::from_value(spec)
        .map_err(|e| EngineError::Simulator(format!("the built-in plan does not parse: {e}")))?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        TEST_WORKSPACE_ID_ANNOTATION.to_string(),
        sim.test_workspace_customer_id(),
    );
    Ok(MigrationPlan {
        metadata: ObjectMeta {
            name: Some("simulated-fleet".into()),
            namespace: Some(crate::local::DEFAULT_NAMESPACE.into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

/// A running simulation: the simulator, a client pointed at it, the state and the plan.
pub struct Simulation {
    pub sim: Arc<SimHandle>,
    pub client: ArmClient,
    pub state: Arc<StateStore>,
    pub plan: MigrationPlan,
    pub options: SimulateOptions,
    started: Instant,
    started_sim: Timestamp,
    baseline: HashMap<(String, DataSourceType), PairDetail>,
    last_end: Option<RunEnd>,
    /// Approve every manual gate (default `true`); tests that stop after a wave set `false`.
    pub auto_approve: bool,
}

impl Simulation {
    pub async fn start(options: SimulateOptions) -> Result<Self, EngineError> {
        let sim = Simulator::start(options.scenario.clone(), "127.0.0.1:0")
            .await
            .map_err(|e| EngineError::Simulator(e.to_string()))?;
        let sim = Arc::new(sim);
        let base =
            url::Url::parse(&sim.base_url()).map_err(|e| EngineError::Simulator(e.to_string()))?;
        let mut config = ClientConfig::new(Endpoints::single(base), CredentialConfig::None);
        config.budget = simulator_budget(&options.scenario);
        config.lro.default_poll_interval = Duration::from_millis(200);
        let client =
            ArmClient::new(config).map_err(|e| EngineError::azure("building the ARM client", e))?;
        let state = match &options.state {
            Some(p) => StateStore::open_for_writing(p, "ama-migrator simulate"),
            None => StateStore::open_in_memory(),
        }
        .map_err(EngineError::Store)?;
        let plan = match options.plan.clone() {
            Some(p) => p,
            None => default_plan(&sim)?,
        };
        let baseline = sim
            .ledger_pairs(None, None)
            .into_iter()
            .map(|p| ((p.machine.clone(), p.data_source), p))
            .collect();
        let started_sim = SimClockAdapter(sim.clone()).now();
        Ok(Self {
            sim,
            client,
            state: Arc::new(state),
            plan,
            options,
            started: Instant::now(),
            started_sim,
            baseline,
            last_end: None,
            auto_approve: true,
        })
    }

    /// Run a fresh engine (as a restarted process would) on the same state until it ends or
    /// reaches `stop`.
    pub async fn run(&mut self, stop: Option<StopPoint>) -> Result<RunEnd, EngineError> {
        let engine = self.engine(stop);
        let end = engine.run(self.plan.clone()).await?;
        self.last_end = Some(end.clone());
        Ok(end)
    }

    /// Roll back a wave or the whole plan with a fresh engine on the same state (as the
    /// `rollback` command does), until it ends or reaches `stop`.
    pub async fn rollback(
        &mut self,
        scope: RollbackScope,
        stop: Option<StopPoint>,
    ) -> Result<RollbackEnd, EngineError> {
        self.engine(stop).rollback(&self.plan, scope).await
    }

    /// Clear a rollback: the plan resumes and migrates the rolled-back machines again.
    pub fn clear_rollback(&self) -> Result<usize, EngineError> {
        self.engine(None).clear_rollback(&self.plan)
    }

    /// A fresh engine on this simulation's client, state and clock.
    fn engine(&self, stop: Option<StopPoint>) -> Engine {
        let options = EngineOptions {
            tick: self.options.tick,
            auto_approve: self.auto_approve,
            verify_interval: Duration::from_secs(180),
            poll_interval: Duration::from_secs(60),
            stall_after: self.options.stall_after,
            stop_after_writes: stop.map(|StopPoint::AfterWrites(n)| n),
            ..EngineOptions::default()
        };
        let clock = Arc::new(SimClockAdapter(self.sim.clone()));
        let mut engine = Engine::new(self.client.clone(), self.state.clone(), clock, options);
        engine.progress = self.options.progress.clone();
        engine
    }

    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.sim.request_log()
    }

    /// The ledger- and log-based report.
    pub fn report(&self) -> SimulationReport {
        let end = self.last_end.clone().unwrap_or(RunEnd::Stopped);
        let spec = &self.plan.spec;
        let machines = self
            .state
            .list_plan_machines(
                self.plan.metadata.namespace.as_deref().unwrap_or("default"),
                self.plan.metadata.name.as_deref().unwrap_or(""),
            )
            .unwrap_or_default();
        let summary = crate::local::tracker::summarize(machines.iter());
        let accepted: BTreeSet<String> = spec
            .legacy
            .flip
            .accepted_uncovered_senders
            .iter()
            .map(|a| a.computer.to_ascii_lowercase())
            .collect();
        let bound = |d: &Option<String>| {
            d.as_deref()
                .and_then(|s| parse_duration(s).ok())
                .map_or(0, |d| (d.as_secs() / 60) as i64)
        };
        let (allow_dup, allow_gap) = match spec.rollout.cutover.policy {
            CutoverPolicy::PreferNoGap => (bound(&spec.rollout.cutover.max_overlap), 0),
            CutoverPolicy::PreferNoDuplicate => (0, bound(&spec.rollout.cutover.max_gap)),
        };
        let mut dup = 0;
        let mut gap = 0;
        let mut pre = 0;
        let mut violations = 0;
        let mut examples = Vec::new();
        let mut states: BTreeMap<DataSourceType, AgentStates> = BTreeMap::new();
        for p in self.sim.ledger_pairs(None, None) {
            let excused = p.out_of_scope
                || accepted.contains(&p.computer.to_ascii_lowercase())
                || accepted.contains(&p.resource_id.to_ascii_lowercase());
            let base = self.baseline.get(&(p.machine.clone(), p.data_source));
            let d0 = base.map_or(0, |b| b.counts.duplicate_minutes);
            let g0 = base.map_or(0, |b| b.counts.gap_minutes);
            let d = p.counts.duplicate_minutes - d0;
            let g = p.counts.gap_minutes - g0;
            let pre_dup = base.is_some_and(|b| b.senders.len() > 1);
            if pre_dup {
                pre += d;
            } else {
                dup += d;
            }
            gap += g;
            if !p.out_of_scope && p.wanted {
                let s = states.entry(p.data_source).or_default();
                match (
                    p.senders.contains(&crate::sim::Agent::Legacy),
                    p.senders.contains(&crate::sim::Agent::Ama),
                ) {
                    (true, true) => s.both += 1,
                    (true, false) => s.legacy_only += 1,
                    (false, true) => s.ama_only += 1,
                    (false, false) => s.none += 1,
                }
            }
            if excused {
                continue;
            }
            let over = if pre_dup { 0 } else { (d - allow_dup).max(0) } + (g - allow_gap).max(0);
            if over > 0 {
                violations += over;
                if examples.len() < 20 {
                    examples.push(format!(
                        "{}/{}: {over} min ({d} duplicate, {g} gap)",
                        p.machine, p.data_source
                    ));
                }
            }
        }
        let arm = self.sim.request_counts();
        let elapsed = self.started.elapsed().as_secs_f64();
        let sim_minutes = (SimClockAdapter(self.sim.clone()).now().as_second()
            - self.started_sim.as_second())
            / 60;
        let migrated = u64::from(summary.completed).max(1) as f64;
        let reads_pm = (arm.reads) as f64 / migrated;
        let writes_pm = (arm.writes + arm.deletes) as f64 / migrated;
        let t = &self.options.scenario.throttle;
        let subs = self.options.scenario.subscriptions.max(1) as f64;
        // The bound: the slowest class at the measured requests per machine (real time, as the
        // simulator's buckets refill in real time).
        let per_sec = [
            (t.reads.refill_per_sec * subs, reads_pm),
            (t.writes.refill_per_sec * subs, arm.writes as f64 / migrated),
            (
                t.deletes.refill_per_sec * subs,
                arm.deletes as f64 / migrated,
            ),
        ]
        .iter()
        .filter(|(_, per)| *per > 0.0)
        .map(|(rate, per)| rate / per)
        .fold(f64::INFINITY, f64::min);
        let quota_bound = if per_sec.is_finite() {
            per_sec * 3600.0
        } else {
            0.0
        };
        let per_hour = if elapsed > 0.0 {
            f64::from(summary.completed) * 3600.0 / elapsed
        } else {
            0.0
        };
        let flipped = machines_flipped(&self.state, &self.plan);
        SimulationReport {
            end,
            machines: u64::from(summary.machines),
            completed: u64::from(summary.completed),
            failed: u64::from(summary.failed),
            blocked: u64::from(summary.blocked),
            duplicate_minutes: dup,
            gap_minutes: gap,
            violations,
            violation_examples: examples,
            preexisting_duplicate_minutes: pre,
            arm,
            elapsed_seconds: elapsed,
            simulated_minutes: sim_minutes,
            throughput_ratio: if quota_bound > 0.0 {
                per_hour / quota_bound
            } else {
                0.0
            },
            machines_per_hour: per_hour,
            quota_bound_per_hour: quota_bound,
            reads_per_machine: reads_pm,
            writes_per_machine: writes_pm,
            agent_states: states,
            flipped,
        }
    }

    pub async fn shutdown(self) {
        if let Ok(sim) = Arc::try_unwrap(self.sim) {
            sim.shutdown().await;
        }
    }
}

fn machines_flipped(state: &StateStore, plan: &MigrationPlan) -> Vec<String> {
    let (Some(ns), Some(name)) = (
        plan.metadata.namespace.as_deref(),
        plan.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    state
        .get::<MigrationPlan>(ns, name)
        .ok()
        .flatten()
        .and_then(|p| p.status)
        .map(|s| {
            let mut v: Vec<String> = s
                .changed_legacy_settings
                .iter()
                .map(|c| c.data_source_type.to_string())
                .collect();
            v.sort();
            v.dedup();
            v
        })
        .unwrap_or_default()
}

/// Requests by class from the simulator's log.
pub fn count_requests(log: &[RequestRecord]) -> ArmCounts {
    let mut c = ArmCounts::default();
    for r in log {
        c.count(&r.method, &r.path, r.status);
    }
    c
}

/// The client budget shaped like the simulator's throttle (ARM's shape, as scaled there).
fn simulator_budget(s: &Scenario) -> crate::azure::BudgetConfig {
    use crate::azure::BucketShape;
    let t = &s.throttle;
    crate::azure::BudgetConfig {
        reads: BucketShape::new(t.reads.size, t.reads.refill_per_sec),
        writes: BucketShape::new(t.writes.size, t.writes.refill_per_sec),
        deletes: BucketShape::new(t.deletes.size, t.deletes.refill_per_sec),
        compute_update_vm: BucketShape::new(t.compute_update.size, t.compute_update.refill_per_sec),
        ..crate::azure::BudgetConfig::default()
    }
}

/// Start the simulator, run the plan to its end, report.
pub async fn run_simulation(options: SimulateOptions) -> Result<SimulationReport, EngineError> {
    let stop = options.stop;
    let mut s = Simulation::start(options).await?;
    s.run(stop).await?;
    let report = s.report();
    s.shutdown().await;
    Ok(report)
}

/// Every ARM request as one JSON line: method, path, query, body.
pub fn request_lines(log: &[RequestRecord]) -> String {
    let mut out = String::new();
    for r in log {
        let line = serde_json::json!({
            "method": r.method, "path": r.path, "query": r.query, "body": r.request_body,
            "status": r.status, "simTime": r.sim_time,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}
