//! The loop: plan → act on machines concurrently → verify in bulk → gates and flips → persist,
//! until the plan completes, stalls, or the caller stops it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::conditions::{self, reasons, status as cstatus, types as ctypes};
use crate::api::duration::parse_duration;
use crate::api::machine::{MachineDataSource, MachineMigrationSpec, MachineStep};
use crate::api::plan::{Agent, MachineKind, OwnedDcr, PlanPhase, WavePhase};
use crate::api::{MachineMigration, MigrationPlan};
use crate::azure::lro::OperationHandle;
use crate::azure::{ArmClient, ResourceId};
use crate::catalog::{Catalog, DataSourceType, OsFamily};
use crate::inventory::{AgentKind, InventoryMachine};
use crate::local::{OperationOutcome, StoredEvent};
use crate::plan::{
    DcrPlan, MachineAction, MachineDecision, MachineState, PlanAction, PlanInput, PlanOutcome,
    PlanProgress, TypeSet, WaveProgress,
};

use super::discover::{Discovery, customer_id, discover};
use super::exec::{self, Act, Effect, WorkResult};
use super::record::{InFlight, MachineRecord, PROGRESS_ANNOTATION, Progress};
use super::state::EngineState;
use super::status::{self, MachineView, WaveView};
use super::verify::{self, Pending};
use super::{EngineError, flip};

/// The engine's time: simulated in `simulate`, the system clock against Azure.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Knobs of the loop. Durations marked "engine clock" are measured on [`Clock`].
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Real time between two passes of the loop.
    pub tick: Duration,
    /// Approve every manual gate (the simulator; never against Azure by default).
    pub auto_approve: bool,
    /// Waves a person approved (`migrate --approve`).
    pub approvals: Vec<String>,
    /// Failures of one machine before it is `Failed`.
    pub max_attempts: u32,
    /// Backoff after a failure: base × 2^(attempts-1), capped (engine clock).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long AMA may take to prove delivery before the attempt fails (engine clock).
    pub verify_timeout: Duration,
    /// Time between bulk verification rounds (engine clock).
    pub verify_interval: Duration,
    /// Poll interval of running operations when ARM sends no Retry-After (engine clock).
    pub poll_interval: Duration,
    /// How long the loop may stay idle (nothing to do, nothing running) before it reports the
    /// plan stalled (engine clock).
    pub stall_after: Duration,
    /// Test hook: stop (as if killed) after this many machine writes were sent.
    pub stop_after_writes: Option<u64>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            auto_approve: false,
            approvals: Vec::new(),
            max_attempts: 4,
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(15 * 60),
            verify_timeout: Duration::from_secs(30 * 60),
            verify_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(30),
            stall_after: Duration::from_secs(30 * 60),
            stop_after_writes: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "end", rename_all = "camelCase")]
pub enum RunEnd {
    /// Every machine reached a final state and nothing remains to do.
    Completed,
    /// Nothing can progress without a person (gate, failure budget, flip blocked by senders).
    Stalled { reason: String },
    /// Stopped by the caller (or the `stop_after_writes` hook); restart to continue.
    Stopped,
    /// The planner refused the plan.
    Refused { errors: Vec<String> },
}

/// Live figures for a progress display.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub machines: usize,
    pub by_step: BTreeMap<String, usize>,
    /// Per wave: (name, members, finished).
    pub waves: Vec<(String, usize, usize)>,
    /// Per wave: (name, phase) as the plan's status has it after this pass.
    pub wave_phases: Vec<(String, WavePhase)>,
    pub flipped: Vec<DataSourceType>,
    pub writes: u64,
    pub in_flight: usize,
}

/// Where the loop reports its progress (the `simulate` bars; nothing by default).
pub trait ProgressSink: Send + Sync {
    fn update(&self, snapshot: &Snapshot);
}

/// The plan's own engine progress, in an annotation of the MigrationPlan.
pub const PLAN_PROGRESS_ANNOTATION: &str = "amamigrator.io/engine-progress";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanRecord {
    #[serde(default)]
    waves: Vec<WaveRecord>,
    #[serde(default)]
    flipped: BTreeSet<DataSourceType>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WaveRecord {
    #[serde(default)]
    finished_at: Option<i64>,
    #[serde(default)]
    parity_ok: Option<bool>,
    #[serde(default)]
    approved: bool,
    #[serde(default)]
    parity_checked_at: Option<i64>,
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One machine's work this pass.
enum Work {
    /// `true`: read ARM first, the same write was abandoned at a stop.
    Act(Act, bool),
    Poll(i64, OperationHandle),
}

/// The engine: one plan, one client, one state.
pub struct Engine {
    pub client: ArmClient,
    pub state: Arc<dyn EngineState>,
    pub clock: Arc<dyn Clock>,
    pub options: EngineOptions,
    /// Set to stop the loop at its next pass.
    pub stop: Arc<AtomicBool>,
    pub progress: Option<Arc<dyn ProgressSink>>,
    pub(super) writes: AtomicU64,
}

/// The DCRs of the plan, resolved to ids and types.
/// DCRs by (OS, test workspace): (resource id, source types it carries).
/// Writes abandoned at a stop, by (machine key, action label), with their open journal entries.
type Recheck = HashMap<(String, String), Vec<i64>>;

type DcrsByOs = HashMap<(OsFamily, bool), Vec<(String, BTreeSet<DataSourceType>)>>;

struct Dcrs {
    /// (os, test) → [(dcr id, types)]
    by_os: DcrsByOs,
}

impl Dcrs {
    fn find(
        &self,
        os: OsFamily,
        test: bool,
        t: DataSourceType,
    ) -> Option<&(String, BTreeSet<DataSourceType>)> {
        self.by_os
            .get(&(os, test))?
            .iter()
            .find(|(_, ts)| ts.contains(&t))
    }
}

fn dcr_id(workspace: &ResourceId, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Insights/dataCollectionRules/{name}",
        workspace.subscription(),
        workspace.resource_group().unwrap_or("")
    )
}

impl Engine {
    pub fn new(
        client: ArmClient,
        state: Arc<dyn EngineState>,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
    ) -> Self {
        Self {
            client,
            state,
            clock,
            options,
            stop: Arc::new(AtomicBool::new(false)),
            progress: None,
            writes: AtomicU64::new(0),
        }
    }

    /// Machine writes sent by this engine instance.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self
                .options
                .stop_after_writes
                .is_some_and(|n| self.writes() >= n)
    }

    /// Load (or create) the plan in the state and run it until it ends.
    pub async fn run(&self, plan: MigrationPlan) -> Result<RunEnd, EngineError> {
        let (ns, name) = super::plan_key(&plan)?;
        let mut plan_obj = match self
            .state
            .load_plan(&ns, &name)
            .map_err(EngineError::Store)?
        {
            Some(mut stored) => {
                if stored.spec != plan.spec {
                    stored.spec = plan.spec.clone();
                    stored = self.state.save_plan(&stored).map_err(EngineError::Store)?;
                }
                stored
            }
            None => {
                let mut p = plan.clone();
                p.metadata.namespace = Some(ns.clone());
                p.metadata.resource_version = None;
                self.state.save_plan(&p).map_err(EngineError::Store)?
            }
        };
        // A rollback paused the plan: migrating now would undo it (see engine::rollback).
        if let Some(reason) = super::rollback::paused_by_rollback(&plan_obj) {
            return Ok(RunEnd::Stalled { reason });
        }
        let spec = plan_obj.spec.clone();
        let workspace = ResourceId::parse(&spec.workspace).map_err(|e| EngineError::Plan {
            field: "spec.workspace",
            problem: e.to_string(),
        })?;
        let cid = customer_id(&spec)?;
        let test_cid = spec.test_workspace.as_ref().and_then(|_| {
            // The test workspace's customer id is not in the spec: parity is measured only when
            // the caller gives it through the plan annotation.
            plan_obj
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TEST_WORKSPACE_ID_ANNOTATION).cloned())
        });
        let catalog = Catalog::with_overrides(&spec.catalog_overrides).unwrap_or_default();
        let mut prec: PlanRecord = plan_obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PLAN_PROGRESS_ANNOTATION))
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        prec.waves
            .resize(spec.rollout.waves.len(), WaveRecord::default());

        let disc = discover(&self.client, &spec).await?;
        let inv = disc.by_key();
        let mut records: BTreeMap<String, MachineRecord> = self
            .state
            .load_machines(&ns, &name)
            .map_err(EngineError::Store)?
            .into_iter()
            .map(MachineRecord::from_object)
            .map(|r| (r.key(), r))
            .collect();
        // Agents that were there before the plan started count as installed.
        let mut handles: HashMap<i64, OperationHandle> = HashMap::new();
        // Writes abandoned at a stop, by (machine, action), with their journal entries. The
        // entries stay open until ARM was read: a stop before that finds them again on restart.
        let mut recheck: Recheck = HashMap::new();
        let mut unrecorded: HashMap<String, InFlight> = HashMap::new();
        for e in self
            .state
            .in_flight_operations()
            .map_err(EngineError::Store)?
        {
            if let Some(h) = e.handle {
                // The record may have been saved before the handle reached it: attach it, so the
                // operation is polled rather than sent again.
                let flight = InFlight {
                    journal_id: e.id,
                    action: e.action.clone(),
                    poll_at_ms: 0,
                };
                match records.get_mut(&e.resource_id.to_ascii_lowercase()) {
                    Some(r) => {
                        if r.progress.in_flight.is_none() {
                            r.progress.in_flight = Some(flight);
                            r.dirty = true;
                        }
                    }
                    // Killed before the machine's first record was saved: the record made for it
                    // below takes the operation over.
                    None => {
                        unrecorded.insert(e.resource_id.to_ascii_lowercase(), flight);
                    }
                }
                handles.insert(e.id, h);
            } else {
                // The process died between journaling and the answer: the write may or may not
                // have reached ARM. Before the planner's next write of the same action on this
                // machine, ARM is read and the write skipped if already in effect. The entry is
                // closed only then (`settle_recheck`): closing it here would forget the doubt at
                // the next stop, and the write would be sent again blind.
                recheck
                    .entry((e.resource_id.to_ascii_lowercase(), e.action.clone()))
                    .or_default()
                    .push(e.id);
                for r in records.values_mut() {
                    if r.progress
                        .in_flight
                        .as_ref()
                        .is_some_and(|f| f.journal_id == e.id)
                    {
                        r.progress.in_flight = None;
                        r.dirty = true;
                    }
                }
            }
        }
        for r in records.values_mut() {
            if let Some(f) = &r.progress.in_flight
                && !handles.contains_key(&f.journal_id)
            {
                r.progress.in_flight = None;
                r.dirty = true;
            }
        }
        // A legacy removal that may have reached ARM is settled now, not when the planner next
        // asks for it: until then the planner would count on the (leaving) legacy agent, and
        // could take AMA off a source it alone still sends.
        let mut legacy_gone: HashSet<String> = HashSet::new();
        for ((key, _), _) in recheck.iter().filter(|((_, a), _)| a == "RemoveLegacy") {
            let Ok(rid) = ResourceId::parse(key) else {
                continue;
            };
            if let Ok(exts) = self.client.agent_extensions(&rid).await {
                let leaving = exts.iter().all(|(kind, e)| {
                    *kind != AgentKind::Legacy
                        || e.properties
                            .provisioning_state
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case("Deleting"))
                });
                if leaving {
                    legacy_gone.insert(key.clone());
                }
            }
        }
        for key in &legacy_gone {
            if let Some(r) = records.get_mut(key) {
                apply_effect(&mut r.progress, Effect::LegacyRemoved);
                r.dirty = true;
            }
        }
        // The records hold the removal before the doubt is closed.
        self.persist(&mut records)?;
        for key in &legacy_gone {
            self.settle_recheck(&mut recheck, key, "RemoveLegacy");
        }

        let plan_types: BTreeSet<DataSourceType> = spec
            .data_sources
            .iter()
            .filter(|d| d.agent == Agent::Ama)
            .map(|d| d.type_)
            .collect();
        let produced = verify::producers(&self.client, &cid, &catalog, &plan_types, 60).await?;
        let mut dcrs_ready = false;
        let mut dcrs = Dcrs {
            by_os: HashMap::new(),
        };
        let mut last_verify: i64 = i64::MIN;
        let mut idle_since: Option<i64> = None;
        // Machine work runs across passes (see exec::Pipeline): no pass waits for a whole batch.
        let mut pipeline = exec::Pipeline::new();
        loop {
            if self.stopping() {
                let finished = pipeline.drain().await;
                self.take_results(&mut records, &mut recheck, &mut handles, finished)?;
                self.persist(&mut records)?;
                return Ok(RunEnd::Stopped);
            }
            let now = self.clock.now();
            let now_s = now.as_second();
            let now_ms = now.as_millisecond();
            let states: HashMap<String, MachineState> = records
                .iter()
                .map(|(k, r)| (k.clone(), r.progress.state(r.held())))
                .collect();
            let states = seed_states(states, &disc, &records);
            let progress = PlanProgress {
                waves: prec
                    .waves
                    .iter()
                    .map(|w| WaveProgress {
                        finished_at: w.finished_at.map(ts),
                        parity_ok: w.parity_ok,
                        approved: w.approved,
                    })
                    .collect(),
                flipped: prec.flipped.iter().copied().collect::<TypeSet>(),
            };
            let input = PlanInput {
                plan_name: &name,
                spec: &spec,
                inventory: &disc.inventory,
                heartbeat: &disc.heartbeat,
                legacy: &disc.legacy,
                states: &states,
                progress: &progress,
                other_plans: &[],
                now,
            };
            let t_plan = std::time::Instant::now();
            let outcome = crate::plan::plan(&input);
            let plan_ms = t_plan.elapsed().as_millis();
            if outcome.refused() {
                let errors: Vec<String> = outcome.errors.iter().map(|e| e.to_string()).collect();
                set_plan_phase(
                    &mut plan_obj,
                    PlanPhase::Failed,
                    reasons::INVALID_SPEC,
                    errors.join("; "),
                    now,
                );
                self.save_plan(&mut plan_obj, &prec, &counts(&outcome, &records, &catalog))?;
                return Ok(RunEnd::Refused { errors });
            }
            if !dcrs_ready && outcome.machines.is_empty() {
                // Nothing to migrate is a mistake in the scope, not a finished plan.
                return Err(EngineError::NoMachinesInScope {
                    inventory: disc.inventory.len(),
                    scope: serde_json::to_string(&spec.scope).unwrap_or_default(),
                });
            }
            if !dcrs_ready && clear_failure_conditions(&mut plan_obj, now) {
                // Azure answered and the scope has machines: a failure reported by the operator
                // (`engine::failure`) is over.
                self.save_plan(&mut plan_obj, &prec, &counts(&outcome, &records, &catalog))?;
            }
            if !dcrs_ready {
                dcrs = self.ensure_dcrs(&workspace, &spec, &outcome.dcrs).await?;
                dcrs_ready = true;
                plan_obj
                    .status
                    .get_or_insert_with(Default::default)
                    .owned_dcrs = outcome
                    .dcrs
                    .iter()
                    .map(|d| OwnedDcr {
                        name: d.name.clone(),
                        resource_id: dcr_id(&workspace, &d.name),
                        data_sources: d.data_sources.clone(),
                    })
                    .collect();
            }

            // ---- plan actions: flips and restores
            let mut acted = false;
            for a in &outcome.plan_actions {
                match a {
                    PlanAction::Flip(t) => {
                        let controls = outcome
                            .flips
                            .iter()
                            .find(|f| f.ds_type == *t)
                            .map(|f| f.controls.clone())
                            .unwrap_or_default();
                        let changed = flip::flip(
                            &self.client,
                            self.state.as_ref(),
                            &ns,
                            &name,
                            &workspace,
                            *t,
                            &controls,
                            &disc.data_sources,
                            now,
                        )
                        .await?;
                        let st = plan_obj.status.get_or_insert_with(Default::default);
                        for c in changed {
                            if !st
                                .changed_legacy_settings
                                .iter()
                                .any(|s| s.resource_id == c.resource_id)
                            {
                                st.changed_legacy_settings.push(c);
                            }
                        }
                        prec.flipped.insert(*t);
                        // Saved per flip: a stop during the next flip must not forget this one.
                        self.save_plan(
                            &mut plan_obj,
                            &prec,
                            &counts(&outcome, &records, &catalog),
                        )?;
                        self.event_plan(
                            &plan_obj,
                            "LegacyStreamFlipped",
                            format!("workspace legacy collection of {t} switched off"),
                            now,
                        );
                    }
                    PlanAction::Restore(t) => {
                        flip::restore(
                            &self.client,
                            self.state.as_ref(),
                            &ns,
                            &name,
                            &workspace,
                            *t,
                            now,
                        )
                        .await?;
                        prec.flipped.remove(t);
                        self.save_plan(
                            &mut plan_obj,
                            &prec,
                            &counts(&outcome, &records, &catalog),
                        )?;
                        self.event_plan(
                            &plan_obj,
                            "LegacyStreamRestored",
                            format!("workspace legacy collection of {t} restored"),
                            now,
                        );
                    }
                }
                acted = true;
            }
            if acted {
                self.save_plan(&mut plan_obj, &prec, &counts(&outcome, &records, &catalog))?;
                continue; // re-plan with the new workspace state
            }

            // ---- machine records follow the planner
            for d in &outcome.machines {
                let Some(m) = inv.get(&d.key) else { continue };
                let spec_now = machine_spec(&name, &spec, d, m, &dcrs, &outcome);
                let rec = records.entry(d.key.clone()).or_insert_with(|| {
                    let mut r = MachineRecord::new(&plan_obj, spec_now.clone());
                    r.progress.in_flight = unrecorded.remove(&d.key);
                    if legacy_gone.contains(&d.key) {
                        apply_effect(&mut r.progress, Effect::LegacyRemoved);
                    }
                    r
                });
                if rec.object.spec != spec_now {
                    rec.object.spec = spec_now;
                    rec.dirty = true;
                }
            }

            // ---- choose work
            let mut work: Vec<(String, Work)> = Vec::new();
            for d in &outcome.machines {
                let Some(rec) = records.get_mut(&d.key) else {
                    continue;
                };
                let Some(m) = inv.get(&d.key) else { continue };
                if pipeline.contains(&d.key) {
                    continue;
                }
                if let Some(f) = rec.progress.in_flight.clone() {
                    if now_ms >= f.poll_at_ms
                        && let Some(h) = handles.get(&f.journal_id)
                    {
                        work.push((d.key.clone(), Work::Poll(f.journal_id, h.clone())));
                    }
                    continue;
                }
                if rec.progress.failed || rec.progress.not_before.is_some_and(|t| t > now_s) {
                    continue;
                }
                match choose(d, rec, m, &dcrs) {
                    Some(act) => {
                        tracing::debug!(machine = %m.name, act = %act.label(), actions = ?d.actions, "write");
                        let check = recheck.contains_key(&(d.key.clone(), act.label()));
                        work.push((d.key.clone(), Work::Act(act, check)))
                    }
                    None if !d.actions.is_empty() => tracing::trace!(
                        machine = %d.key,
                        actions = ?d.actions,
                        progress = ?rec.progress,
                        "no write for the planner's actions"
                    ),
                    None => {}
                }
            }
            let max_parallel = spec.rollout.max_parallel.max(1) as usize;
            let n_work = work.len();
            let room = max_parallel.saturating_sub(pipeline.len());
            for (key, w) in work.into_iter().take(room) {
                pipeline.push(key.clone(), async move {
                    let rid = match ResourceId::parse(&key) {
                        Ok(r) => r,
                        Err(e) => {
                            return (
                                key,
                                None,
                                WorkResult::Failed(exec::Failure {
                                    code: "InvalidResourceId".into(),
                                    message: e.to_string(),
                                    classification: crate::azure::Classification::Permanent,
                                }),
                            );
                        }
                    };
                    match w {
                        Work::Act(act, check) => {
                            if check {
                                match exec::already_done(&self.client, &rid, &act).await {
                                    exec::InEffect::Yes => {
                                        tracing::debug!(machine = %key, act = %act.label(), "already in effect after a restart; not sent again");
                                        return (key, Some(act), WorkResult::Done { journal: None });
                                    }
                                    exec::InEffect::Underway => {
                                        tracing::debug!(machine = %key, act = %act.label(), "accepted before a restart and still under way; looked at again later");
                                        return (key, Some(act), WorkResult::Running { retry_after: None });
                                    }
                                    exec::InEffect::No => {}
                                }
                            }
                            self.writes.fetch_add(1, Ordering::Relaxed);
                            let r =
                                exec::execute(&self.client, self.state.as_ref(), &rid, &act, now)
                                    .await;
                            (key, Some(act), r)
                        }
                        Work::Poll(id, h) => {
                            let r =
                                exec::poll(&self.client, self.state.as_ref(), id, &h, now).await;
                            (key, None, r)
                        }
                    }
                });
            }
            // Each result is saved as it arrives: a stop while other writes are still awaited
            // must not lose the record of a write the journal already holds as done. Work not
            // finished within this pass keeps running into the next.
            let tick = self.options.tick;
            let finished = pipeline.collect(tick, tick.saturating_mul(4)).await;
            self.take_results(&mut records, &mut recheck, &mut handles, finished)?;

            // ---- verification, in bulk
            let waiting: Vec<Pending> = records
                .iter()
                .filter(|(_, r)| !r.progress.verifying.is_empty() && !r.progress.failed)
                .filter_map(|(k, r)| {
                    inv.get(k).map(|m| Pending {
                        key: k.clone(),
                        computer: m.name.clone(),
                        types: r.progress.verifying.clone(),
                    })
                })
                .collect();
            let verify_due =
                now_s >= last_verify.saturating_add(self.options.verify_interval.as_secs() as i64);
            let t_verify = std::time::Instant::now();
            if !waiting.is_empty() && verify_due {
                last_verify = now_s;
                let proved =
                    verify::verify(&self.client, &cid, &catalog, &waiting, &produced).await?;
                for p in &waiting {
                    let Some(rec) = records.get_mut(&p.key) else {
                        continue;
                    };
                    if let Some(ok) = proved.get(&p.key) {
                        for t in ok {
                            rec.progress.verifying.remove(t);
                            rec.progress.associated.insert(*t);
                        }
                        rec.dirty = true;
                    }
                    if rec.progress.verifying.is_empty() {
                        rec.progress.verify_since = None;
                        rec.progress.attempts = 0;
                        rec.clear_error();
                    } else if rec
                        .progress
                        .verify_since
                        .is_some_and(|s| s + self.options.verify_timeout.as_secs() as i64 <= now_s)
                    {
                        let missing: Vec<String> = rec
                            .progress
                            .verifying
                            .iter()
                            .map(|t| t.to_string())
                            .collect();
                        let f = exec::Failure {
                            code: "AmaDataMissing".into(),
                            message: format!(
                                "no AMA heartbeat or no data for {} within {}s of associating the DCR; check the machine's identity, network access to the monitoring endpoints and the DCR",
                                missing.join(", "),
                                self.options.verify_timeout.as_secs()
                            ),
                            classification: crate::azure::Classification::Transient,
                        };
                        // Associate again next time: the association may have been lost.
                        rec.progress.verifying.clear();
                        rec.progress.verify_since = None;
                        self.fail(rec, &f, now);
                    }
                }
            }

            let verify_ms = t_verify.elapsed().as_millis();
            // ---- steps, waves, gates
            let (finished_waves, snapshot) =
                self.summarize(&outcome, &mut records, &inv, &prec, now);
            let mut plan_changed = false;
            for (i, w) in spec.rollout.waves.iter().enumerate() {
                let rec_w = &mut prec.waves[i];
                if finished_waves[i] && rec_w.finished_at.is_none() {
                    rec_w.finished_at = Some(now_s);
                    plan_changed = true;
                }
                let gates = w.gates.clone().unwrap_or_default();
                if gates.manual_approval
                    && !rec_w.approved
                    && (self.options.auto_approve
                        || self.options.approvals.iter().any(|a| a == &w.name))
                    && rec_w.finished_at.is_some()
                {
                    rec_w.approved = true;
                    plan_changed = true;
                }
                if let (Some(tol), Some(tcid), Some(fin)) = (
                    gates.parity_tolerance_percent,
                    test_cid.as_deref(),
                    rec_w.finished_at,
                ) {
                    let window = gates
                        .parity_window
                        .as_deref()
                        .and_then(|d| parse_duration(d).ok())
                        .unwrap_or(Duration::from_secs(3600));
                    let due = rec_w.parity_ok != Some(true)
                        && fin + window.as_secs() as i64 <= now_s
                        && rec_w.parity_checked_at.is_none_or(|c| {
                            c + self.options.verify_interval.as_secs() as i64 <= now_s
                        });
                    let members: Vec<(String, String)> = if due {
                        outcome
                            .machines
                            .iter()
                            .filter(|d| d.wave == Some(i) && d.blocked.is_empty())
                            .filter_map(|d| {
                                inv.get(&d.key).map(|m| (d.key.clone(), m.name.clone()))
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    // A wave with no eligible machine has nothing to compare (the planner passes
                    // its parity gate): no query.
                    if !members.is_empty() {
                        let types: BTreeSet<DataSourceType> = spec
                            .data_sources
                            .iter()
                            .filter(|d| d.agent == Agent::Ama)
                            .map(|d| d.type_)
                            .collect();
                        let minutes = (window.as_secs() / 60).clamp(1, u64::from(u32::MAX)) as u32;
                        let r = verify::parity(
                            &self.client,
                            &cid,
                            tcid,
                            &catalog,
                            &members,
                            &types,
                            minutes,
                            tol,
                        )
                        .await?;
                        prec.waves[i].parity_checked_at = Some(now_s);
                        if prec.waves[i].parity_ok != r {
                            tracing::info!(wave = %w.name, parity_ok = ?r, "parity measured");
                            prec.waves[i].parity_ok = r;
                            plan_changed = true;
                        }
                    }
                }
            }
            update_plan_status(&mut plan_obj, &outcome, &records, &catalog, &prec, now);
            if plan_changed || self.plan_status_changed(&plan_obj)? {
                self.save_plan(&mut plan_obj, &prec, &counts(&outcome, &records, &catalog))?;
            }
            self.persist(&mut records)?;
            tracing::debug!(
                now = %now,
                steps = ?snapshot.by_step,
                waves = ?snapshot.waves,
                flipped = ?snapshot.flipped,
                work = n_work,
                plan_ms,
                verify_ms,
                "engine pass"
            );
            if let Some(p) = &self.progress {
                let mut s = snapshot;
                s.writes = self.writes();
                s.wave_phases = plan_obj
                    .status
                    .as_ref()
                    .map(|st| st.waves.iter().map(|w| (w.name.clone(), w.phase)).collect())
                    .unwrap_or_default();
                p.update(&s);
            }

            // ---- end?
            let busy = n_work > 0
                || !pipeline.is_empty()
                || records.values().any(|r| {
                    r.progress.in_flight.is_some()
                        || (!r.progress.verifying.is_empty() && !r.progress.failed)
                        || (!r.progress.failed && r.progress.not_before.is_some_and(|t| t > now_s))
                })
                || soaking(&spec, &prec, now_s)
                || outcome.held_by_window;
            if busy || plan_changed {
                idle_since = None;
            } else {
                let since = *idle_since.get_or_insert(now_s);
                let all_final = outcome.machines.iter().all(|d| {
                    machine_finished(d)
                        || !d.blocked.is_empty()
                        || records.get(&d.key).is_some_and(|r| r.progress.failed)
                });
                // Streams still waiting for their flip keep their sources on the legacy agent:
                // that is not a completed migration.
                let flips_done = outcome.flips.iter().all(|f| f.flipped || f.never.is_some());
                if all_final && flips_done && outcome.plan_actions.is_empty() {
                    set_plan_phase(
                        &mut plan_obj,
                        PlanPhase::Completed,
                        reasons::COMPLETED,
                        "every machine reached a final state".into(),
                        now,
                    );
                    self.save_plan(&mut plan_obj, &prec, &counts(&outcome, &records, &catalog))?;
                    // Doubts the planner never came back to (the machine finished by another
                    // path): nothing will send those writes again.
                    for (key, action) in recheck.keys().cloned().collect::<Vec<_>>() {
                        self.settle_recheck(&mut recheck, &key, &action);
                    }
                    return Ok(RunEnd::Completed);
                }
                if since + self.options.stall_after.as_secs() as i64 <= now_s {
                    // A wave that only waits for a person says so first, with what to do.
                    let awaiting = awaiting_approval(&spec, &outcome, &prec, now_s);
                    let parity: Vec<Option<bool>> =
                        prec.waves.iter().map(|w| w.parity_ok).collect();
                    let causes = super::stall::stall_reason(&super::stall::StallFacts {
                        spec: &spec,
                        outcome: &outcome,
                        records: &records,
                        parity: &parity,
                        awaiting_approval: &awaiting,
                        finished: machine_finished,
                    });
                    let (code, reason) = if awaiting.is_empty() {
                        (
                            "Stalled",
                            causes.unwrap_or_else(|| super::stall::NO_CAUSE.to_string()),
                        )
                    } else {
                        let name = plan_obj.metadata.name.as_deref().unwrap_or("NAME");
                        let approve = format!(
                            "wave {} finished and waits for approval: `kubectl annotate migrationplan/{name} amamigrator.io/approve-wave={}` (or run `migrate` again with `--approve {}`)",
                            awaiting.join(", "),
                            awaiting.join(","),
                            awaiting.join(" --approve ")
                        );
                        let reason = match causes {
                            Some(more) => format!("{approve}; {more}"),
                            None => approve,
                        };
                        (reasons::AWAITING_APPROVAL, reason)
                    };
                    set_plan_phase(&mut plan_obj, PlanPhase::Blocked, code, reason.clone(), now);
                    self.save_plan(&mut plan_obj, &prec, &counts(&outcome, &records, &catalog))?;
                    return Ok(RunEnd::Stalled { reason });
                }
            }
        }
    }

    /// Apply the finished pieces of machine work of one pass to their records, save those records
    /// (one batch), then close the journal entries the saved records now account for.
    fn take_results(
        &self,
        records: &mut BTreeMap<String, MachineRecord>,
        recheck: &mut Recheck,
        handles: &mut HashMap<i64, OperationHandle>,
        finished: Vec<exec::Finished>,
    ) -> Result<(), EngineError> {
        if finished.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        // What each result closes once its record is saved.
        let mut closes: Vec<(String, Option<String>, Option<i64>)> = Vec::new();
        for exec::Finished { key, act, result } in finished {
            let Some(rec) = records.get_mut(&key) else {
                continue;
            };
            // An abandoned write stays under re-check until it was found in effect or sent, and
            // its entry is closed only once the record holding that is saved (below).
            let settled = match (&act, &result) {
                (Some(_), WorkResult::Running { .. }) | (None, _) => None,
                (Some(a), _) => Some(a.label()),
            };
            let done_journal = match &result {
                WorkResult::Done { journal } => *journal,
                _ => None,
            };
            self.apply(rec, act, result, handles, now);
            rec.dirty = true;
            closes.push((key, settled, done_journal));
        }
        self.persist(records)?;
        // Only now that the records hold the effects: a stop before this line re-reads ARM.
        for (key, settled, done_journal) in closes {
            if let Some(action) = settled {
                self.settle_recheck(recheck, &key, &action);
            }
            if let Some(id) = done_journal {
                self.state
                    .finish_operation(id, &OperationOutcome::Succeeded, now)
                    .map_err(EngineError::Store)?;
            }
        }
        Ok(())
    }

    /// Close the journal entries of an abandoned write once ARM was read (found in effect, or sent
    /// again under a new entry).
    fn settle_recheck(&self, recheck: &mut Recheck, key: &str, action: &str) {
        let Some(ids) = recheck.remove(&(key.to_string(), action.to_string())) else {
            return;
        };
        for id in ids {
            let _ = self.state.finish_operation(
                id,
                &OperationOutcome::Abandoned {
                    reason: "the engine stopped before the response was recorded".into(),
                },
                self.clock.now(),
            );
        }
    }

    /// Save every changed record (one batch: the state may send them concurrently), then make the
    /// state's deferred bookkeeping durable (`EngineState::flush`).
    fn persist(&self, records: &mut BTreeMap<String, MachineRecord>) -> Result<(), EngineError> {
        let mut dirty: Vec<&mut MachineRecord> = records.values_mut().filter(|r| r.dirty).collect();
        save_records(self.state.as_ref(), &mut dirty)?;
        self.state.flush().map_err(EngineError::Store)
    }

    /// Save the plan with its engine progress; every status written carries the counts of the
    /// machines' records as they are now (`counts`), whatever else changed.
    fn save_plan(
        &self,
        plan: &mut MigrationPlan,
        prec: &PlanRecord,
        counts: &status::Tally,
    ) -> Result<(), EngineError> {
        status::apply_counts(plan.status.get_or_insert_with(Default::default), counts);
        let text = serde_json::to_string(prec).unwrap_or_default();
        plan.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(PLAN_PROGRESS_ANNOTATION.to_string(), text);
        *plan = self.state.save_plan(plan).map_err(EngineError::Store)?;
        Ok(())
    }

    fn plan_status_changed(&self, plan: &MigrationPlan) -> Result<bool, EngineError> {
        let (Some(ns), Some(name)) = (
            plan.metadata.namespace.as_deref(),
            plan.metadata.name.as_deref(),
        ) else {
            return Ok(true);
        };
        let stored = self.state.load_plan(ns, name).map_err(EngineError::Store)?;
        Ok(stored.is_none_or(|s| s.status != plan.status))
    }

    fn event_plan(&self, plan: &MigrationPlan, reason: &str, message: String, now: Timestamp) {
        let _ = self.state.record_event(&StoredEvent {
            object: crate::local::ObjectKey::of(plan),
            event_type: crate::local::EventType::Normal,
            reason: reason.into(),
            message,
            at: now,
        });
    }

    /// Create or update the plan's DCRs (GET first; PUT only what differs).
    async fn ensure_dcrs(
        &self,
        workspace: &ResourceId,
        spec: &crate::api::MigrationPlanSpec,
        plans: &[DcrPlan],
    ) -> Result<Dcrs, EngineError> {
        let mut by_os: DcrsByOs = HashMap::new();
        for d in plans {
            let Some(body) = &d.body else { continue };
            let id = dcr_id(workspace, &d.name);
            let rid = ResourceId::parse(&id).map_err(|e| EngineError::Plan {
                field: "spec.workspace",
                problem: e.to_string(),
            })?;
            let current: Option<serde_json::Value> = self
                .client
                .get_dcr(&rid)
                .await
                .map_err(|e| EngineError::azure("reading a data collection rule", e))?;
            let same = current.as_ref().is_some_and(|c| {
                ["dataSources", "dataFlows"].iter().all(|k| {
                    c.pointer(&format!("/properties/{k}"))
                        == body.pointer(&format!("/properties/{k}"))
                })
            });
            if !same {
                let _: serde_json::Value = self
                    .client
                    .put_dcr(&rid, body)
                    .await
                    .map_err(|e| EngineError::azure("creating a data collection rule", e))?;
            }
            let types: BTreeSet<DataSourceType> = spec
                .data_sources
                .iter()
                .filter(|s| d.data_sources.contains(&s.name))
                .map(|s| s.type_)
                .collect();
            by_os
                .entry((d.os, d.test_workspace))
                .or_default()
                .push((id, types));
        }
        // A source the generator folded into another one's data source (Sysmon for Linux rides
        // on the syslog facilities) has no DCR of its own: it moves with the OS's first DCR.
        for src in spec.data_sources.iter().filter(|s| s.agent == Agent::Ama) {
            for ((os, _), list) in by_os.iter_mut() {
                if src.type_.os() == *os
                    && !list.iter().any(|(_, ts)| ts.contains(&src.type_))
                    && let Some((_, ts)) = list.first_mut()
                {
                    ts.insert(src.type_);
                }
            }
        }
        Ok(Dcrs { by_os })
    }

    fn fail(&self, rec: &mut MachineRecord, f: &exec::Failure, now: Timestamp) {
        rec.progress.attempts += 1;
        rec.set_error(&f.code, &f.message);
        let max = self.options.max_attempts.max(1);
        if rec.progress.attempts >= max {
            rec.progress.failed = true;
            rec.set_step(MachineStep::Failed, now);
            rec.set_condition(ctypes::DEGRADED, cstatus::TRUE, reasons::ARM_ERROR, format!(
                "failed after {} attempts: {}: {}; fix the cause and set annotation amamigrator.io/retry",
                rec.progress.attempts, f.code, f.message
            ));
        } else {
            let shift = rec.progress.attempts.saturating_sub(1).min(20);
            let delay = self
                .options
                .backoff_base
                .saturating_mul(1 << shift)
                .min(self.options.backoff_cap);
            rec.progress.not_before = Some(now.as_second() + delay.as_secs() as i64);
            rec.set_condition(
                ctypes::DEGRADED,
                cstatus::TRUE,
                reasons::RETRYING,
                format!(
                    "attempt {} of {max} failed: {}: {}; retrying in {}s",
                    rec.progress.attempts,
                    f.code,
                    f.message,
                    delay.as_secs()
                ),
            );
        }
        rec.dirty = true;
        let _ = self.state.record_event(&StoredEvent {
            object: crate::local::ObjectKey::of(&rec.object),
            event_type: crate::local::EventType::Warning,
            reason: if rec.progress.failed {
                "Failed".into()
            } else {
                reasons::RETRYING.into()
            },
            message: format!("{}: {}", f.code, f.message),
            at: now,
        });
    }

    fn apply(
        &self,
        rec: &mut MachineRecord,
        act: Option<Act>,
        result: WorkResult,
        handles: &mut HashMap<i64, OperationHandle>,
        now: Timestamp,
    ) {
        let poll_ms = |d: Option<Duration>| {
            now.as_millisecond() + d.unwrap_or(self.options.poll_interval).as_millis() as i64
        };
        rec.dirty = true;
        match result {
            WorkResult::Started { journal_id, handle } => {
                let label = act.as_ref().map(Act::label).unwrap_or_default();
                let kind = act
                    .as_ref()
                    .map(Act::kind)
                    .unwrap_or(crate::api::machine::OperationKind::Other);
                rec.set_operation(Some((handle.poll_url.clone(), kind, now)));
                let first = handle.retry_after_ms.map(Duration::from_millis);
                rec.progress.in_flight = Some(InFlight {
                    journal_id,
                    action: label,
                    poll_at_ms: poll_ms(first),
                });
                handles.insert(journal_id, handle);
            }
            WorkResult::Running { retry_after } => match rec.progress.in_flight.as_mut() {
                Some(f) => f.poll_at_ms = poll_ms(retry_after),
                // A write accepted before a restart, with no handle to poll: look again later.
                None => rec.progress.not_before = Some(poll_ms(retry_after).div_euclid(1000)),
            },
            WorkResult::Done { .. } => {
                let effect = match (&act, rec.progress.in_flight.take()) {
                    (Some(a), _) => {
                        apply_act(&mut rec.progress, a, now);
                        exec::effect_of(&a.label())
                    }
                    (None, Some(f)) => {
                        handles.remove(&f.journal_id);
                        exec::effect_of(&f.action)
                    }
                    (None, None) => Effect::Other,
                };
                apply_effect(&mut rec.progress, effect);
                rec.set_operation(None);
                rec.progress.attempts = 0;
                rec.progress.not_before = None;
                rec.clear_error();
            }
            WorkResult::Failed(f) => {
                if let Some(fl) = rec.progress.in_flight.take() {
                    handles.remove(&fl.journal_id);
                }
                rec.set_operation(None);
                self.fail(rec, &f, now);
            }
        }
    }

    /// Steps per machine from the planner's decisions; which waves finished; live figures.
    fn summarize(
        &self,
        outcome: &PlanOutcome,
        records: &mut BTreeMap<String, MachineRecord>,
        inv: &HashMap<String, &InventoryMachine>,
        prec: &PlanRecord,
        now: Timestamp,
    ) -> (Vec<bool>, Snapshot) {
        let waves = outcome.waves.len();
        let mut finished = vec![true; waves];
        let mut members = vec![0usize; waves];
        let mut fin_count = vec![0usize; waves];
        let mut snap = Snapshot {
            machines: outcome.machines.len(),
            ..Snapshot::default()
        };
        let flipped: TypeSet = prec.flipped.iter().copied().collect();
        for d in &outcome.machines {
            let Some(rec) = records.get_mut(&d.key) else {
                continue;
            };
            let p = &rec.progress;
            let step = if !d.blocked.is_empty() {
                let msg = d
                    .blocked
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                let reason = super::record::block_reason(&d.blocked[0]);
                rec.mark_blocked(reason, msg, now);
                MachineStep::Blocked
            } else if p.failed {
                MachineStep::Failed
            } else if machine_finished(d) {
                rec.mark_done(now);
                MachineStep::Done
            } else {
                let s = if let Some(f) = &p.in_flight {
                    match f.action.as_str() {
                        "EnableIdentity" => MachineStep::EnsureIdentity,
                        "InstallAma" => MachineStep::InstallAma,
                        "RemoveLegacy" => MachineStep::Cutover,
                        _ => MachineStep::AssociateDcrs,
                    }
                } else if !p.verifying.is_empty() {
                    MachineStep::Verify
                } else if d.actions.is_empty() {
                    if d.may_proceed
                        && (p.ama_installed || matches!(d.lane, crate::plan::Lane::KeepLegacy(_)))
                    {
                        MachineStep::WaitForFlip
                    } else {
                        MachineStep::Pending
                    }
                } else {
                    match d.actions[0] {
                        MachineAction::EnableIdentity => MachineStep::EnsureIdentity,
                        MachineAction::InstallAma => MachineStep::InstallAma,
                        MachineAction::Associate { .. } | MachineAction::Dissociate { .. } => {
                            MachineStep::AssociateDcrs
                        }
                        MachineAction::RemoveLegacy => MachineStep::Cutover,
                    }
                };
                rec.set_step(s, now);
                s
            };
            let legacy_present = inv
                .get(&d.key)
                .is_some_and(|m| m.agents(AgentKind::Legacy).next().is_some())
                && !rec.progress.legacy_removed;
            // AMA the inventory found installed before the plan started is there too.
            let ama_present = rec.progress.ama_installed
                || inv.get(&d.key).is_some_and(|m| {
                    m.agents(AgentKind::Ama)
                        .any(|e| e.provisioning_state.eq_ignore_ascii_case("Succeeded"))
                });
            rec.refresh_summary(legacy_present, ama_present, &|t| !flipped.contains(t));
            *snap.by_step.entry(format!("{step:?}")).or_default() += 1;
            if rec.progress.in_flight.is_some() {
                snap.in_flight += 1;
            }
            if let Some(w) = d.wave {
                members[w] += 1;
                let settled = machine_finished(d)
                    || !d.blocked.is_empty()
                    || rec.progress.failed
                    || (d.actions.is_empty()
                        && rec.progress.in_flight.is_none()
                        && rec.progress.verifying.is_empty()
                        && (rec.progress.ama_installed || d.may_proceed));
                if settled {
                    fin_count[w] += 1;
                } else {
                    finished[w] = false;
                }
            }
        }
        for (i, w) in outcome.waves.iter().enumerate() {
            if !w.admitted {
                finished[i] = false;
            }
            snap.waves.push((w.name.clone(), members[i], fin_count[i]));
        }
        snap.flipped = prec.flipped.iter().copied().collect();
        (finished, snap)
    }
}

/// The plan's status after a pass: wave phases, counts, current wave and summary from the
/// machines' records (`status::build`), and the Progressing, Degraded and Blocked conditions.
fn update_plan_status(
    plan: &mut MigrationPlan,
    outcome: &PlanOutcome,
    records: &BTreeMap<String, MachineRecord>,
    catalog: &Catalog,
    prec: &PlanRecord,
    now: Timestamp,
) {
    let waves = wave_views(&plan.spec, outcome, prec);
    let st = plan.status.get_or_insert_with(Default::default);
    let completed = st.phase == Some(PlanPhase::Completed);
    let figures = status::build(
        &waves,
        &machine_views(outcome, records, catalog),
        out_of_scope(outcome),
        &st.waves,
        completed,
        now,
    );
    let current_phase = figures
        .current_wave
        .as_deref()
        .and_then(|c| figures.waves.iter().find(|w| w.name == c))
        .map(|w| (w.phase, w.soak_until.clone()));
    figures.apply(st);
    let over_budget = outcome
        .warnings
        .iter()
        .any(|w| w.starts_with("failure budget exceeded"));
    if over_budget {
        st.phase = Some(PlanPhase::Paused);
        conditions::set_condition(
            &mut st.conditions,
            ctypes::DEGRADED,
            cstatus::TRUE,
            reasons::FAILURE_BUDGET_EXCEEDED,
            "the failure budget is exceeded: no new machine starts until failures are retried or the budget is raised",
            None,
            Time(now),
        );
    } else if st.phase != Some(PlanPhase::Completed) {
        st.phase = Some(PlanPhase::Progressing);
        let (reason, message) = if outcome.held_by_window {
            (
                reasons::OUTSIDE_MAINTENANCE_WINDOW,
                "machines with work left wait for the next maintenance window (spec.rollout.maintenanceWindows)".to_string(),
            )
        } else {
            let wave = st.current_wave.as_deref().unwrap_or("none");
            match current_phase {
                Some((WavePhase::Soaking, until)) => (
                    reasons::SOAKING,
                    match until {
                        Some(t) => format!("wave {wave} finished; soaking until {}", t.0),
                        None => format!("wave {wave} finished; waiting for its gates"),
                    },
                ),
                Some((WavePhase::AwaitingApproval, _)) => (
                    reasons::AWAITING_APPROVAL,
                    format!(
                        "wave {wave} finished and soaked; it waits for approval (annotation amamigrator.io/approve-wave: {wave})"
                    ),
                ),
                Some((WavePhase::Failed, _)) => (
                    reasons::GATE_FAILED,
                    format!(
                        "wave {wave} finished below its success ratio (gates.minSuccessRatio): retry its failed machines (annotation amamigrator.io/retry)"
                    ),
                ),
                _ => (
                    reasons::WAVE_IN_PROGRESS,
                    format!("migrating; current wave: {wave}"),
                ),
            }
        };
        conditions::set_condition(
            &mut st.conditions,
            ctypes::PROGRESSING,
            cstatus::TRUE,
            reason,
            message,
            None,
            Time(now),
        );
    }
    let blocked_flips: Vec<String> = outcome
        .flips
        .iter()
        .filter(|f| !f.flipped && f.never.is_none() && !f.ready)
        .map(|f| {
            let unnamed = f.blocking_total.saturating_sub(f.blocking_senders.len());
            format!(
                "{} ({} sender(s): {}{})",
                f.ds_type,
                f.blocking_total,
                f.blocking_senders.join(", "),
                if unnamed > 0 {
                    format!(" and {unnamed} more")
                } else {
                    String::new()
                }
            )
        })
        .collect();
    if blocked_flips.is_empty() {
        conditions::set_condition(
            &mut st.conditions,
            ctypes::BLOCKED,
            cstatus::FALSE,
            reasons::PLAN_ACCEPTED,
            "",
            None,
            Time(now),
        );
    } else {
        conditions::set_condition(
            &mut st.conditions,
            ctypes::BLOCKED,
            cstatus::TRUE,
            reasons::FLIP_WAITING_FOR_SENDERS,
            format!(
                "legacy flips wait for senders nothing covers; cover each (bring it into spec.scope so it gets AMA, or fix the in-scope machine) or accept losing that stream from it by naming it in spec.legacy.flip.acceptedUncoveredSenders: {}",
                blocked_flips.join("; ")
            ),
            None,
            Time(now),
        );
    }
}

/// The annotation carrying the test workspace's customer id (for the parity gate).
pub const TEST_WORKSPACE_ID_ANNOTATION: &str = "amamigrator.io/test-workspace-customer-id";

/// Set `Degraded` / `Blocked` conditions that carry an engine-failure reason
/// ([`super::failure::ALL_REASONS`]) to `False`; `true` if one was set.
fn clear_failure_conditions(plan: &mut MigrationPlan, now: Timestamp) -> bool {
    let Some(st) = plan.status.as_mut() else {
        return false;
    };
    let mut cleared = false;
    for type_ in [ctypes::DEGRADED, ctypes::BLOCKED] {
        let failed = st.conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == cstatus::TRUE
                && super::failure::ALL_REASONS.contains(&c.reason.as_str())
        });
        if failed {
            conditions::set_condition(
                &mut st.conditions,
                type_,
                cstatus::FALSE,
                super::failure::reasons::RECOVERED,
                "the engine reached Azure again and found machines in scope; migrating",
                plan.metadata.generation,
                Time(now),
            );
            cleared = true;
        }
    }
    cleared
}

fn set_plan_phase(
    plan: &mut MigrationPlan,
    phase: PlanPhase,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let st = plan.status.get_or_insert_with(Default::default);
    st.phase = Some(phase);
    if phase == PlanPhase::Completed {
        // No wave is worked on or waited on any more.
        st.current_wave = None;
    }
    let (ready, progressing) = match phase {
        PlanPhase::Completed => (cstatus::TRUE, cstatus::FALSE),
        _ => (cstatus::FALSE, cstatus::FALSE),
    };
    conditions::set_condition(
        &mut st.conditions,
        ctypes::READY,
        ready,
        reason,
        message.clone(),
        None,
        Time(now),
    );
    conditions::set_condition(
        &mut st.conditions,
        ctypes::PROGRESSING,
        progressing,
        reason,
        message,
        None,
        Time(now),
    );
}

/// The spec's waves with the planner's verdict and the engine's progress of each.
fn wave_views<'a>(
    spec: &'a crate::api::MigrationPlanSpec,
    outcome: &'a PlanOutcome,
    prec: &PlanRecord,
) -> Vec<WaveView<'a>> {
    outcome
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let def = spec.rollout.waves.get(i);
            let gates = def.and_then(|d| d.gates.as_ref());
            let rec = prec.waves.get(i);
            WaveView {
                name: &w.name,
                admitted: w.admitted,
                gate_passed: w.gate_passed,
                finished_at: rec.and_then(|r| r.finished_at),
                soak_secs: def.map_or(0, soak_secs),
                manual_approval: gates.is_some_and(|g| g.manual_approval),
                approved: rec.is_some_and(|r| r.approved),
                min_success_ratio: gates.and_then(|g| g.min_success_ratio),
            }
        })
        .collect()
}

/// The plan's machines (the planner's, blocked ones included) as the status counts them: each
/// with its record's step (`Pending` before its first record) and agents.
fn machine_views<'a>(
    outcome: &'a PlanOutcome,
    records: &'a BTreeMap<String, MachineRecord>,
    catalog: &Catalog,
) -> Vec<MachineView<'a>> {
    outcome
        .machines
        .iter()
        .map(|d| {
            let rec = records.get(&d.key);
            MachineView {
                wave: d
                    .wave
                    .and_then(|w| outcome.waves.get(w))
                    .map_or("", |w| w.name.as_str()),
                step: rec.map_or(MachineStep::Pending, MachineRecord::step),
                agents: rec
                    .and_then(|r| r.object.status.as_ref())
                    .and_then(|s| s.agents.as_deref()),
                keeps_legacy_unsupported: matches!(d.lane, crate::plan::Lane::KeepLegacy(_))
                    && d.assignments.iter().any(|a| {
                        a.target == Agent::Legacy && !catalog.row(a.ds_type).ama.is_supported()
                    }),
            }
        })
        .collect()
}

fn out_of_scope(outcome: &PlanOutcome) -> u32 {
    u32::try_from(outcome.out_of_scope_senders.len()).unwrap_or(u32::MAX)
}

/// The status counts of the plan's machines as their records stand.
fn counts(
    outcome: &PlanOutcome,
    records: &BTreeMap<String, MachineRecord>,
    catalog: &Catalog,
) -> status::Tally {
    status::tally(
        &machine_views(outcome, records, catalog),
        out_of_scope(outcome),
    )
}

/// Waves whose machines finished and whose soak is over, that wait for a manual approval.
fn awaiting_approval(
    spec: &crate::api::MigrationPlanSpec,
    outcome: &PlanOutcome,
    prec: &PlanRecord,
    now_s: i64,
) -> Vec<String> {
    spec.rollout
        .waves
        .iter()
        .zip(&prec.waves)
        .zip(&outcome.waves)
        .filter(|((w, r), plan)| {
            plan.admitted
                && !plan.gate_passed
                && w.gates.as_ref().is_some_and(|g| g.manual_approval)
                && !r.approved
                && r.finished_at.is_some_and(|f| f + soak_secs(w) <= now_s)
        })
        .map(|((w, _), _)| w.name.clone())
        .collect()
}

/// A wave's soak period in seconds (0 when it has none; the planner refuses a bad one).
fn soak_secs(w: &crate::api::plan::Wave) -> i64 {
    w.soak
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// A wave finished and waits for its soak period.
fn soaking(spec: &crate::api::MigrationPlanSpec, prec: &PlanRecord, now_s: i64) -> bool {
    spec.rollout
        .waves
        .iter()
        .zip(&prec.waves)
        .any(|(w, r)| r.finished_at.is_some_and(|f| f + soak_secs(w) > now_s))
}

/// Agents that were there before the plan started count as installed (from the inventory).
/// Save a machine's record with its progress, and keep the stored object without the progress
/// annotation: the record holds the progress itself, and the next save encodes it again (10,000
/// machines: one copy of the JSON each fewer for the whole run).
/// Records handed to the state at once (see [`save_records`]).
const SAVE_CHUNK: usize = 32;

/// Save records, [`SAVE_CHUNK`] at a time in one call to the state each. Every record whose save
/// succeeded is updated even when another one failed; the first failure is returned.
fn save_records(
    state: &dyn EngineState,
    records: &mut [&mut MachineRecord],
) -> Result<(), EngineError> {
    let mut first_error = None;
    // In chunks: each save answers with a copy of its machine, and 10,000 copies at once (the
    // first pass of a large plan) would double the engine's memory for a moment.
    for chunk in records.chunks_mut(SAVE_CHUNK) {
        for rec in chunk.iter_mut() {
            rec.encode();
        }
        let objects: Vec<&MachineMigration> = chunk.iter().map(|r| &r.object).collect();
        let saved = state.save_machines(&objects);
        drop(objects);
        for (rec, result) in chunk.iter_mut().zip(saved) {
            match result {
                Ok(object) => {
                    rec.object = object;
                    if let Some(a) = rec.object.metadata.annotations.as_mut() {
                        a.remove(PROGRESS_ANNOTATION);
                    }
                    rec.dirty = false;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(EngineError::Store(e)),
        None => Ok(()),
    }
}

fn seed_states(
    mut states: HashMap<String, MachineState>,
    disc: &Discovery,
    records: &BTreeMap<String, MachineRecord>,
) -> HashMap<String, MachineState> {
    for m in &disc.inventory {
        let key = m.id.to_ascii_lowercase();
        // Installed and usable: a VM needs a managed identity (Arc servers always have one).
        let identity = m.identity_type.to_ascii_lowercase().contains("assigned")
            || m.kind() == Some(crate::inventory::MachineKind::ArcServer)
            || records
                .get(&key)
                .is_some_and(|r| r.progress.identity_enabled);
        let ama = identity
            && m.agents(AgentKind::Ama)
                .any(|e| e.provisioning_state.eq_ignore_ascii_case("Succeeded"));
        if ama {
            let s = states.entry(key.clone()).or_default();
            s.ama_installed = true;
        }
    }
    states
}

/// The MachineMigration spec for a planner decision.
fn machine_spec(
    plan: &str,
    spec: &crate::api::MigrationPlanSpec,
    d: &MachineDecision,
    m: &InventoryMachine,
    dcrs: &Dcrs,
    outcome: &PlanOutcome,
) -> MachineMigrationSpec {
    let os = d.os.unwrap_or(OsFamily::Windows);
    let wave = d
        .wave
        .and_then(|w| outcome.waves.get(w))
        .map(|w| w.name.clone())
        .unwrap_or_default();
    MachineMigrationSpec {
        plan: plan.to_string(),
        machine_id: m.id.clone(),
        os,
        kind: match m.kind() {
            Some(crate::inventory::MachineKind::ArcServer) => MachineKind::ArcServer,
            _ => MachineKind::AzureVM,
        },
        wave,
        risk: d.risk,
        data_sources: d
            .assignments
            .iter()
            .filter_map(|a| {
                let ds = spec.data_sources.get(a.ds_index)?;
                Some(MachineDataSource {
                    name: ds.name.clone(),
                    type_: a.ds_type,
                    agent: a.target,
                    dcr: (a.target == Agent::Ama)
                        .then(|| dcrs.find(os, false, a.ds_type).map(|x| x.0.clone()))
                        .flatten(),
                })
            })
            .collect(),
        may_proceed: d.may_proceed,
    }
}

/// The first planner action this machine can take now, as a write.
fn choose(
    d: &MachineDecision,
    rec: &MachineRecord,
    m: &InventoryMachine,
    dcrs: &Dcrs,
) -> Option<Act> {
    let os = d.os?;
    let p = &rec.progress;
    for a in &d.actions {
        match *a {
            MachineAction::EnableIdentity => return Some(Act::EnableIdentity),
            MachineAction::InstallAma => {
                let t = m.identity_type.to_ascii_lowercase();
                return Some(Act::InstallAma {
                    os,
                    location: m.location.clone(),
                    user_assigned_only: t.contains("userassigned")
                        && !t.contains("systemassigned")
                        && !p.identity_enabled,
                });
            }
            MachineAction::Associate { ds, test } => {
                if !test && p.verifying.contains(&ds) {
                    continue;
                }
                let (id, types) = dcrs.find(os, test, ds)?;
                return Some(Act::Associate {
                    dcr_id: id.clone(),
                    types: types.clone(),
                    test,
                });
            }
            MachineAction::Dissociate { ds, test } => {
                let Some((id, types)) = dcrs.find(os, test, ds) else {
                    continue;
                };
                // One DCR carries several sources: remove it only when none of them should stay on AMA.
                let keep = !test
                    && d.assignments
                        .iter()
                        .any(|x| types.contains(&x.ds_type) && x.desired_now == Agent::Ama);
                if keep {
                    continue;
                }
                return Some(Act::Dissociate {
                    dcr_id: id.clone(),
                    types: types.clone(),
                    test,
                });
            }
            MachineAction::RemoveLegacy => {
                let ext = m.agents(AgentKind::Legacy).next()?;
                return Some(Act::RemoveLegacy {
                    extension: ext.name.clone(),
                });
            }
        }
    }
    None
}

fn apply_act(p: &mut Progress, a: &Act, now: Timestamp) {
    match a {
        Act::Associate {
            types, test: false, ..
        } => {
            for t in types {
                if !p.associated.contains(t) {
                    p.verifying.insert(*t);
                }
            }
            p.verify_since.get_or_insert(now.as_second());
        }
        Act::Associate {
            types, test: true, ..
        } => p.test_associated.extend(types.iter().copied()),
        Act::Dissociate {
            types, test: false, ..
        } => {
            for t in types {
                p.associated.remove(t);
                p.verifying.remove(t);
            }
        }
        Act::Dissociate {
            types, test: true, ..
        } => {
            for t in types {
                p.test_associated.remove(t);
            }
        }
        _ => {}
    }
}

fn apply_effect(p: &mut Progress, e: Effect) {
    match e {
        Effect::IdentityEnabled => p.identity_enabled = true,
        Effect::AmaInstalled => p.ama_installed = true,
        Effect::LegacyRemoved => p.legacy_removed = true,
        Effect::Other => {}
    }
}

/// The planner's `done`, or nothing left the plan can do: every source bound for AMA is on AMA,
/// and the only open assignments are Legacy sources the machine has no legacy agent for.
fn machine_finished(d: &MachineDecision) -> bool {
    if d.done {
        return true;
    }
    // A source that ends on the retained legacy agent (no flip controls it) asks to dissociate
    // a DCR that also carries sources that moved: one DCR per OS cannot drop it alone, so the
    // engine keeps the DCR (`choose`) and the ledger judges whether that duplicates anything.
    let kept_on_legacy = |t: DataSourceType| {
        d.assignments
            .iter()
            .any(|a| a.ds_type == t && a.desired_now == Agent::Legacy && a.unservable.is_none())
    };
    d.actions
        .iter()
        .all(|a| matches!(*a, MachineAction::Dissociate { ds, test: false } if kept_on_legacy(ds)))
        && d.blocked.is_empty()
        && d.lane != crate::plan::Lane::DropLegacy
        && d.assignments.iter().all(|a| {
            if a.target == Agent::Ama {
                a.desired_now == Agent::Ama && a.unservable.is_none()
            } else {
                a.desired_now == Agent::Legacy
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Lane, WavePlan};

    const NOW: i64 = 1_750_000_000;

    fn plan(waves: serde_json::Value) -> MigrationPlan {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "amamigrator.io/v1alpha1",
            "kind": "MigrationPlan",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "workspace": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws",
                "location": "westeurope",
                "dataSources": [{"name": "sec", "type": "WindowsSecurityEvents", "agent": "AMA"}],
                "rollout": {"waves": waves},
            },
        }))
        .unwrap_or_else(|e| panic!("test plan: {e}"))
    }

    fn key(i: usize) -> String {
        format!(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm{i}"
        )
    }

    /// `n` machines of wave `wave`, none of which the planner counts as done.
    fn decisions(n: usize, wave: usize) -> Vec<MachineDecision> {
        (0..n)
            .map(|i| MachineDecision {
                index: i,
                key: key(i),
                os: Some(OsFamily::Windows),
                risk: crate::api::plan::Risk::Low,
                wave: Some(wave),
                lane: Lane::NoLegacy,
                blocked: Vec::new(),
                assignments: Vec::new(),
                actions: Vec::new(),
                may_proceed: true,
                done: false,
            })
            .collect()
    }

    fn outcome(machines: Vec<MachineDecision>, waves: Vec<WavePlan>) -> PlanOutcome {
        PlanOutcome {
            errors: Vec::new(),
            machines,
            waves,
            flips: Vec::new(),
            plan_actions: Vec::new(),
            windows: Vec::new(),
            dcrs: Vec::new(),
            out_of_scope_senders: vec!["onprem-1".into()],
            warnings: Vec::new(),
            held_by_window: false,
        }
    }

    fn records(
        plan: &MigrationPlan,
        o: &PlanOutcome,
        step: MachineStep,
    ) -> BTreeMap<String, MachineRecord> {
        o.machines
            .iter()
            .map(|d| {
                let spec = MachineMigrationSpec {
                    plan: "p".into(),
                    machine_id: d.key.clone(),
                    os: OsFamily::Windows,
                    kind: MachineKind::AzureVM,
                    wave: d
                        .wave
                        .and_then(|w| o.waves.get(w))
                        .map(|w| w.name.clone())
                        .unwrap_or_default(),
                    risk: d.risk,
                    data_sources: Vec::new(),
                    may_proceed: true,
                };
                let mut r = MachineRecord::new(plan, spec);
                r.set_step(step, ts(NOW));
                r.status_mut().agents = Some("AMA".into());
                (d.key.clone(), r)
            })
            .collect()
    }

    #[test]
    fn a_completed_wave_counts_its_machines_records_not_the_planners_done() {
        let mut p = plan(serde_json::json!([{"name": "broad", "maxRisk": "High"}]));
        // The planner calls 4 of 10 done; the records say all 10 are Done (the engine's
        // `machine_finished` is wider than the planner's `done`).
        let o = outcome(
            decisions(10, 0),
            vec![WavePlan {
                name: "broad".into(),
                members: 10,
                done: 4,
                admitted: true,
                gate_passed: true,
                ..WavePlan::default()
            }],
        );
        let recs = records(&p, &o, MachineStep::Done);
        let prec = PlanRecord {
            waves: vec![WaveRecord {
                finished_at: Some(NOW - 60),
                ..WaveRecord::default()
            }],
            ..PlanRecord::default()
        };
        update_plan_status(&mut p, &o, &recs, &Catalog::builtin(), &prec, ts(NOW));
        let st = p.status.clone().unwrap_or_default();
        let w = &st.waves[0];
        assert_eq!(w.phase, WavePhase::Completed);
        assert_eq!((w.total, w.done, w.in_progress, w.failed), (10, 10, 0, 0));
        let summary = st.summary.clone().unwrap_or_default();
        assert_eq!(
            (summary.total, summary.done, summary.ama_only),
            (10, 10, 10)
        );
        assert_eq!(summary.out_of_scope_senders, 1);
        // Every wave passed and the plan is not completed yet: the last wave stays current.
        assert_eq!(st.current_wave.as_deref(), Some("broad"));
        set_plan_phase(
            &mut p,
            PlanPhase::Completed,
            reasons::COMPLETED,
            String::new(),
            ts(NOW),
        );
        let st = p.status.clone().unwrap_or_default();
        assert_eq!(st.current_wave, None);
        assert_eq!(st.summary.map(|s| s.done), Some(10));
    }

    #[test]
    fn an_empty_wave_soaking_is_the_current_wave() {
        let mut p = plan(serde_json::json!([
            {"name": "canary", "maxRisk": "Low"},
            {"name": "empty", "maxRisk": "Low", "soak": "1h", "gates": {"manualApproval": true}},
            {"name": "broad", "maxRisk": "High"},
        ]));
        let wave = |name: &str, admitted: bool, gate_passed: bool| WavePlan {
            name: name.into(),
            admitted,
            gate_passed,
            ..WavePlan::default()
        };
        let o = outcome(
            decisions(3, 0),
            vec![
                wave("canary", true, true),
                wave("empty", true, false),
                wave("broad", false, false),
            ],
        );
        let recs = records(&p, &o, MachineStep::Done);
        let finished = |at: i64| PlanRecord {
            waves: vec![
                WaveRecord {
                    finished_at: Some(NOW - 7_200),
                    ..WaveRecord::default()
                },
                WaveRecord {
                    finished_at: Some(at),
                    ..WaveRecord::default()
                },
                WaveRecord::default(),
            ],
            ..PlanRecord::default()
        };
        update_plan_status(
            &mut p,
            &o,
            &recs,
            &Catalog::builtin(),
            &finished(NOW - 60),
            ts(NOW),
        );
        let st = p.status.clone().unwrap_or_default();
        assert_eq!(st.current_wave.as_deref(), Some("empty"));
        assert_eq!(st.waves[1].phase, WavePhase::Soaking);
        assert_eq!(st.waves[1].total, 0);
        let progressing = conditions::find(&st.conditions, ctypes::PROGRESSING).cloned();
        assert_eq!(
            progressing.map(|c| c.reason),
            Some(reasons::SOAKING.to_string())
        );
        // The soak is over; the wave waits for a person and is still the one the plan is on.
        update_plan_status(
            &mut p,
            &o,
            &recs,
            &Catalog::builtin(),
            &finished(NOW - 3_700),
            ts(NOW),
        );
        let st = p.status.clone().unwrap_or_default();
        assert_eq!(st.current_wave.as_deref(), Some("empty"));
        assert_eq!(st.waves[1].phase, WavePhase::AwaitingApproval);
        assert_eq!(st.waves[2].phase, WavePhase::Pending);
        assert_eq!(st.summary.map(|s| (s.total, s.done)), Some((3, 3)));
    }
}
