//! Rollback of a wave or of a whole plan: put every machine back on the legacy path with no gap,
//! removing only what the migrator added.
//!
//! Order, per scope:
//! 1. The plan is marked rolled back (annotation [`ROLLBACK_ANNOTATION`]) and paused *before* any
//!    write: [`super::Engine::run`] then stops at once instead of re-migrating the machines (also
//!    after a stop or crash in the middle of the rollback).
//! 2. The workspace legacy settings the plan switched off are restored first ([`super::flip::restore`]),
//!    for the streams the scope's machines need: every machine that still has its legacy agent
//!    gets its legacy stream back before its AMA association goes.
//! 3. Per machine, the pure step function ([`crate::machine::step`] with `requests.rollback`)
//!    decides: delete the migrator's DCR associations (`ama-migrator-` prefix), then the AMA
//!    extension where the migrator installed it. The legacy agent is never touched. A machine whose
//!    legacy agent the migrator removed keeps its associations and AMA and ends `Blocked`
//!    (`RollbackWouldLeaveNoSender`): removing them would leave its sources with no sender.
//! 4. Whole plan only: the DCRs the plan owns are deleted, except those a blocked machine still uses.
//!
//! Every write is journaled before it is sent; a long-running delete's handle is journaled before
//! anything waits on it. A restarted rollback reads ARM again (associations list, AMA extension GET)
//! before deciding, polls journaled operations instead of re-sending, and so repeats no write.
//! Machines end `RolledBack` (or `Blocked` / `Failed` with conditions saying why); the waves end
//! `RolledBack` and the plan `Paused` until [`super::Engine::clear_rollback`] is called.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::MigrationPlan;
use crate::api::conditions::{self, status as cstatus, types as ctypes};
use crate::api::machine::{MachineMigrationStatus, MachineStep, OperationKind};
use crate::api::plan::{PlanPhase, WavePhase, WaveStatus};
use crate::azure::lro::OperationHandle;
use crate::azure::{AzureError, PollOutcome, ResourceId};
use crate::catalog::DataSourceType;
use crate::inventory::{AgentKind, HeartbeatSender, InventoryMachine};
use crate::local::{ObjectKey, OperationOutcome, StoredEvent};
use crate::machine::{
    self, Action, ActionError, AmaState, Association, ExtensionState, IdentityState, LegacyState,
    Observation, Outcome, PollResult, Power, Requests, StepInput, reasons as mreasons,
};

use super::discover::discover;
use super::record::MachineRecord;
use super::run::{Engine, PLAN_PROGRESS_ANNOTATION};
use super::status::{MachineView, apply_counts, tally};
use super::{EngineError, flip, plan_key};

/// On the MigrationPlan: the rollback that paused it (JSON [`RollbackMarker`]).
pub const ROLLBACK_ANNOTATION: &str = "amamigrator.io/rollback";
/// Plan condition reason while a rollback pauses the plan.
pub const REASON_ROLLED_BACK: &str = "RolledBack";
/// Plan condition reason once a person cleared the rollback.
pub const REASON_ROLLBACK_CLEARED: &str = "RollbackCleared";

/// Journal labels of rollback writes (one in flight per resource and label).
const LABEL_DISSOCIATE: &str = "Rollback:RemoveAssociation";
const LABEL_REMOVE_AMA: &str = "Rollback:RemoveAma";
const LABEL_DELETE_DCR: &str = "Rollback:DeleteDcr";

/// Steps one machine may take in one rollback call before it gives up (a bound, not a timeout:
/// run the rollback again to continue).
const MAX_STEPS: usize = 2_000;

/// What is rolled back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackScope {
    /// The machines of one wave (`spec.rollout.waves[].name`).
    Wave(String),
    /// Every machine of the plan, every restored setting, the plan's own DCRs.
    Plan,
}

/// Recorded on the plan while a rollback pauses it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackMarker {
    /// Rolled-back waves (every wave for a whole-plan rollback).
    #[serde(default)]
    pub waves: Vec<String>,
    #[serde(default)]
    pub whole_plan: bool,
    /// When the (last) rollback started, RFC 3339.
    #[serde(default)]
    pub at: String,
}

/// One machine's end of the rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineRollback {
    pub machine_id: String,
    /// `RolledBack`, `Blocked`, `Failed`, or `RollingBack` (not finished: stopped or waiting).
    pub step: MachineStep,
    /// The condition reason that explains the end (e.g. `RollbackWouldLeaveNoSender`).
    pub reason: String,
    pub message: String,
}

/// How a rollback ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackEnd {
    /// The wave name, or `*` for the whole plan.
    pub scope: String,
    pub machines: usize,
    pub rolled_back: usize,
    /// Machines that are not rolled back, with the reason (blocked, failed, waiting).
    pub not_rolled_back: Vec<MachineRollback>,
    /// Workspace legacy streams switched back on.
    pub restored_streams: Vec<DataSourceType>,
    /// Plan-owned DCRs deleted (whole plan only).
    pub deleted_dcrs: Vec<String>,
    /// Plan-owned DCRs kept because a machine that could not be rolled back still uses them.
    pub kept_dcrs: Vec<String>,
    /// State-changing ARM requests sent by this call.
    pub writes: u64,
    /// Stopped by the caller (or the write-count hook): run the rollback again to finish.
    pub stopped: bool,
}

impl RollbackEnd {
    /// Every machine rolled back and nothing left to do.
    pub fn complete(&self) -> bool {
        !self.stopped && self.not_rolled_back.is_empty()
    }
}

/// The reason `Engine::run` stops for a plan a rollback paused, if it did.
pub fn paused_by_rollback(plan: &MigrationPlan) -> Option<String> {
    let m = marker(plan)?;
    let what = if m.whole_plan {
        "the whole plan".to_string()
    } else {
        format!("wave(s) {}", m.waves.join(", "))
    };
    Some(format!(
        "{what} rolled back at {}: the plan is paused so it does not migrate those machines again; \
         run `ama-migrator rollback --clear` (Engine::clear_rollback) to resume the plan",
        m.at
    ))
}

fn marker(plan: &MigrationPlan) -> Option<RollbackMarker> {
    plan.metadata
        .annotations
        .as_ref()?
        .get(ROLLBACK_ANNOTATION)
        .map(|s| serde_json::from_str(s).unwrap_or_default())
}

/// Shared by the machines of one rollback call.
struct Shared {
    policy: machine::Policy,
    /// Journaled operations by poll URL: (journal id, handle).
    handles: Mutex<HashMap<String, (i64, OperationHandle)>>,
}

/// One machine about to be rolled back.
struct Target {
    record: MachineRecord,
    rid: ResourceId,
    obs: Observation,
    /// A journaled delete whose handle never reached the status: resume polling it.
    resume: Option<Outcome>,
}

impl Engine {
    /// Roll back the machines of `wave`; see the module documentation.
    pub async fn rollback_wave(
        &self,
        plan: &MigrationPlan,
        wave: &str,
    ) -> Result<RollbackEnd, EngineError> {
        self.rollback(plan, RollbackScope::Wave(wave.to_string()))
            .await
    }

    /// Roll back every machine of the plan, restore every workspace setting it changed and delete
    /// the DCRs it owns (those no machine still uses). For the deletion policy `Rollback`.
    pub async fn rollback_plan(&self, plan: &MigrationPlan) -> Result<RollbackEnd, EngineError> {
        self.rollback(plan, RollbackScope::Plan).await
    }

    /// Roll back `scope` of the plan stored under `plan`'s namespace and name.
    pub async fn rollback(
        &self,
        plan: &MigrationPlan,
        scope: RollbackScope,
    ) -> Result<RollbackEnd, EngineError> {
        let (ns, name) = plan_key(plan)?;
        let mut plan_obj = self
            .state
            .load_plan(&ns, &name)
            .map_err(EngineError::Store)?
            .ok_or_else(|| EngineError::Plan {
                field: "metadata.name",
                problem: format!(
                    "{ns}/{name} has no stored state: nothing was migrated, so there is nothing to roll back (check --state and --plan-name)"
                ),
            })?;
        let spec = plan_obj.spec.clone();
        let wave_names: Vec<String> = spec.rollout.waves.iter().map(|w| w.name.clone()).collect();
        let (scope_label, waves) = match &scope {
            RollbackScope::Wave(w) => {
                if !wave_names.iter().any(|n| n == w) {
                    return Err(EngineError::Plan {
                        field: "spec.rollout.waves",
                        problem: format!(
                            "has no wave {w:?}; its waves are: {}",
                            wave_names.join(", ")
                        ),
                    });
                }
                (w.clone(), vec![w.clone()])
            }
            RollbackScope::Plan => ("*".to_string(), wave_names.clone()),
        };
        let workspace = ResourceId::parse(&spec.workspace).map_err(|e| EngineError::Plan {
            field: "spec.workspace",
            problem: e.to_string(),
        })?;
        let start = self.clock.now();
        let writes_before = self.writes();

        // 1. Pause the plan before any write.
        let mut m = marker(&plan_obj).unwrap_or_default();
        for w in &waves {
            if !m.waves.contains(w) {
                m.waves.push(w.clone());
            }
        }
        m.whole_plan |= scope == RollbackScope::Plan;
        m.at = start.to_string();
        plan_obj
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                ROLLBACK_ANNOTATION.to_string(),
                serde_json::to_string(&m).unwrap_or_default(),
            );
        let msg = format!(
            "rolling back {}: the plan is paused",
            if scope == RollbackScope::Plan {
                "the whole plan".to_string()
            } else {
                format!("wave {scope_label}")
            }
        );
        set_plan_conditions(
            &mut plan_obj,
            ctypes::PROGRESSING,
            cstatus::TRUE,
            mreasons::ROLLING_BACK,
            &msg,
            start,
        );
        plan_obj.status.get_or_insert_with(Default::default).phase = Some(PlanPhase::Paused);
        plan_obj = self
            .state
            .save_plan(&plan_obj)
            .map_err(EngineError::Store)?;

        // 2. Observe: bulk discovery, then one associations read per machine.
        let disc = discover(&self.client, &spec).await?;
        let inv = disc.by_key();
        let records: Vec<MachineRecord> = self
            .state
            .load_machines(&ns, &name)
            .map_err(EngineError::Store)?
            .into_iter()
            .map(MachineRecord::from_object)
            .filter(|r| waves.contains(&r.object.spec.wave))
            .collect();
        let shared = Shared {
            policy: self.rollback_policy(&plan_obj),
            handles: Mutex::new(HashMap::new()),
        };
        let journal = self
            .state
            .in_flight_operations()
            .map_err(EngineError::Store)?;
        let mut targets = Vec::new();
        for record in records {
            let key = record.key();
            let rid = ResourceId::parse(&record.object.spec.machine_id).map_err(|e| {
                EngineError::Discovery {
                    what: "a stored MachineMigration",
                    problem: format!("{}: {e}", record.object.spec.machine_id),
                }
            })?;
            let mut obs = observe(inv.get(&key).copied(), &disc.heartbeat, &record);
            if obs.exists {
                obs.associations = self.associations(&rid).await?;
            }
            let mut resume = None;
            for e in journal
                .iter()
                .filter(|e| e.resource_id.eq_ignore_ascii_case(&rid.to_string()))
            {
                match &e.handle {
                    Some(h) => {
                        if let Ok(mut map) = shared.handles.lock() {
                            map.insert(h.poll_url.clone(), (e.id, h.clone()));
                        }
                        let in_status = record
                            .object
                            .status
                            .as_ref()
                            .and_then(|s| s.operation.as_ref())
                            .is_some_and(|o| o.url == h.poll_url);
                        if e.action == LABEL_REMOVE_AMA && !in_status {
                            resume = Some(Outcome::Submitted {
                                action: Action::RemoveAma {
                                    extension_name: h
                                        .resource_id
                                        .rsplit('/')
                                        .next()
                                        .unwrap_or_default()
                                        .to_string(),
                                },
                                operation: Some(h.clone()),
                            });
                        }
                    }
                    None if e.action.starts_with("Rollback:") => {
                        // Stopped between journaling and the answer: the write may have reached
                        // ARM. Abandon the entry and read ARM again before deciding (the
                        // associations list above is fresh; the AMA extension is read here).
                        let _ = self.state.finish_operation(
                            e.id,
                            &OperationOutcome::Abandoned {
                                reason: "the rollback stopped before the response was recorded"
                                    .into(),
                            },
                            start,
                        );
                        if e.action == LABEL_REMOVE_AMA {
                            self.read_ama(&rid, &mut obs).await?;
                        }
                    }
                    None => {}
                }
            }
            targets.push(Target {
                record,
                rid,
                obs,
                resume,
            });
        }

        // 3. Restore the workspace legacy streams these machines need, before any dissociation.
        let changes = self
            .state
            .legacy_changes(&ns, &name)
            .map_err(EngineError::Store)?;
        let changed: BTreeSet<DataSourceType> =
            changes.iter().map(|c| c.setting.data_source_type).collect();
        let needed: BTreeSet<DataSourceType> = match scope {
            RollbackScope::Plan => changed.clone(),
            RollbackScope::Wave(_) => targets
                .iter()
                .filter(|t| t.obs.legacy.is_present())
                .flat_map(|t| {
                    t.record
                        .object
                        .spec
                        .data_sources
                        .iter()
                        .filter(|d| d.agent == crate::api::plan::Agent::Ama)
                        .map(|d| d.type_)
                })
                .filter(|t| changed.contains(t))
                .collect(),
        };
        let mut restored = Vec::new();
        for t in &needed {
            if self.stopping() {
                break;
            }
            flip::restore(
                &self.client,
                self.state.as_ref(),
                &ns,
                &name,
                &workspace,
                *t,
                self.clock.now(),
            )
            .await?;
            restored.push(*t);
            plan_obj = self.note_restored(plan_obj, *t)?;
            self.plan_event(
                &plan_obj,
                "LegacyStreamRestored",
                format!("rollback: workspace legacy collection of {t} restored"),
            );
        }
        let still_off: BTreeSet<DataSourceType> = changed
            .iter()
            .filter(|t| !restored.contains(t))
            .copied()
            .collect();
        for t in &mut targets {
            t.obs.flipped = t
                .record
                .object
                .spec
                .data_sources
                .iter()
                .filter(|d| still_off.contains(&d.type_))
                .map(|d| d.name.clone())
                .collect();
        }

        // 4. Machines, concurrently within maxParallel.
        let parallel = spec.rollout.max_parallel.max(1) as usize;
        let shared = &shared;
        let ends: Vec<Result<(MachineRollback, Vec<String>), EngineError>> = if self.stopping() {
            Vec::new()
        } else {
            futures::stream::iter(targets)
                .map(|t| self.roll_back_machine(shared, t))
                .buffer_unordered(parallel)
                .collect()
                .await
        };
        let mut not_rolled_back = Vec::new();
        let mut rolled_back = 0;
        let mut in_use: BTreeSet<String> = BTreeSet::new();
        let mut stopped = self.stopping();
        for e in ends {
            let (end, dcrs_in_use) = e?;
            in_use.extend(dcrs_in_use);
            match end.step {
                MachineStep::RolledBack => rolled_back += 1,
                MachineStep::RollingBack if self.stopping() => {
                    stopped = true;
                    not_rolled_back.push(end);
                }
                _ => not_rolled_back.push(end),
            }
        }
        not_rolled_back.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));

        // 5. Whole plan: the plan's own DCRs, unless a machine still uses them.
        let mut deleted = Vec::new();
        let mut kept = Vec::new();
        if scope == RollbackScope::Plan && !stopped {
            let owned = plan_obj
                .status
                .as_ref()
                .map(|s| s.owned_dcrs.clone())
                .unwrap_or_default();
            for d in owned {
                if in_use.contains(&d.resource_id.to_ascii_lowercase()) {
                    kept.push(d.resource_id.clone());
                    continue;
                }
                if self.stopping() {
                    stopped = true;
                    break;
                }
                self.delete_dcr(&d.resource_id).await?;
                deleted.push(d.resource_id.clone());
                let st = plan_obj.status.get_or_insert_with(Default::default);
                st.owned_dcrs.retain(|o| o.resource_id != d.resource_id);
                plan_obj = self
                    .state
                    .save_plan(&plan_obj)
                    .map_err(EngineError::Store)?;
            }
        }

        // 6. The plan's status: waves RolledBack, plan Paused with conditions saying why.
        let end = RollbackEnd {
            scope: scope_label,
            machines: rolled_back + not_rolled_back.len(),
            rolled_back,
            not_rolled_back,
            restored_streams: restored,
            deleted_dcrs: deleted,
            kept_dcrs: kept,
            writes: self.writes().saturating_sub(writes_before),
            stopped,
        };
        self.finish_plan(&mut plan_obj, &waves, &end)?;
        Ok(end)
    }

    /// Resume a plan a rollback paused: the rolled-back machines go back to `Pending` (the next
    /// run migrates them again from where Azure is), the rolled-back waves must pass their gates
    /// again, and the pause marker is removed. Returns the machines reset.
    pub fn clear_rollback(&self, plan: &MigrationPlan) -> Result<usize, EngineError> {
        let (ns, name) = plan_key(plan)?;
        let Some(mut plan_obj) = self
            .state
            .load_plan(&ns, &name)
            .map_err(EngineError::Store)?
        else {
            return Ok(0);
        };
        let Some(m) = marker(&plan_obj) else {
            return Ok(0);
        };
        let now = self.clock.now();
        let mut n = 0;
        for obj in self
            .state
            .load_machines(&ns, &name)
            .map_err(EngineError::Store)?
        {
            let mut r = MachineRecord::from_object(obj);
            if !m.waves.contains(&r.object.spec.wave) {
                continue;
            }
            let step = r.step();
            let blocked_by_rollback = step == MachineStep::Blocked
                && conditions::find(
                    &r.object.status.clone().unwrap_or_default().conditions,
                    ctypes::BLOCKED,
                )
                .is_some_and(|c| c.reason == mreasons::ROLLBACK_BLOCKED_NO_LEGACY);
            if !(step == MachineStep::RolledBack
                || step == MachineStep::RollingBack
                || blocked_by_rollback)
            {
                continue;
            }
            r.set_step(MachineStep::Pending, now);
            let st = r.status_mut();
            st.operation = None;
            for t in [
                ctypes::READY,
                ctypes::PROGRESSING,
                ctypes::BLOCKED,
                ctypes::DEGRADED,
            ] {
                conditions::set_condition(
                    &mut st.conditions,
                    t,
                    cstatus::FALSE,
                    REASON_ROLLBACK_CLEARED,
                    "rollback cleared: the plan migrates this machine again",
                    None,
                    Time(now),
                );
            }
            r.encode();
            self.state
                .save_machine(&r.object)
                .map_err(EngineError::Store)?;
            n += 1;
        }
        // The rolled-back waves pass their gates again (engine progress of those waves reset).
        let idx: Vec<usize> = plan_obj
            .spec
            .rollout
            .waves
            .iter()
            .enumerate()
            .filter(|(_, w)| m.waves.contains(&w.name))
            .map(|(i, _)| i)
            .collect();
        if let Some(a) = plan_obj.metadata.annotations.as_mut() {
            a.remove(ROLLBACK_ANNOTATION);
            if let Some(text) = a.get(PLAN_PROGRESS_ANNOTATION)
                && let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text)
            {
                if let Some(ws) = v.get_mut("waves").and_then(|w| w.as_array_mut()) {
                    for i in idx {
                        if let Some(w) = ws.get_mut(i) {
                            *w = serde_json::json!({});
                        }
                    }
                }
                a.insert(PLAN_PROGRESS_ANNOTATION.to_string(), v.to_string());
            }
        }
        let st = plan_obj.status.get_or_insert_with(Default::default);
        st.phase = Some(PlanPhase::Progressing);
        for w in st.waves.iter_mut().filter(|w| m.waves.contains(&w.name)) {
            w.phase = WavePhase::Pending;
        }
        set_plan_conditions(
            &mut plan_obj,
            ctypes::PROGRESSING,
            cstatus::TRUE,
            REASON_ROLLBACK_CLEARED,
            "rollback cleared: the plan resumes",
            now,
        );
        set_plan_conditions(
            &mut plan_obj,
            ctypes::BLOCKED,
            cstatus::FALSE,
            REASON_ROLLBACK_CLEARED,
            "",
            now,
        );
        self.recount(&mut plan_obj)?;
        self.state
            .save_plan(&plan_obj)
            .map_err(EngineError::Store)?;
        self.plan_event(
            &plan_obj,
            REASON_ROLLBACK_CLEARED,
            format!(
                "rollback of {} cleared; {n} machine(s) will be migrated again",
                m.waves.join(", ")
            ),
        );
        Ok(n)
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    fn rollback_policy(&self, plan: &MigrationPlan) -> machine::Policy {
        let spec = &plan.spec;
        machine::Policy {
            identity: spec.identity,
            uninstall: spec.legacy.uninstall,
            cutover: spec.rollout.cutover.policy,
            max_attempts: self.options.max_attempts.max(1),
            backoff_base: self.options.backoff_base,
            backoff_cap: self.options.backoff_cap,
            verify_timeout: self.options.verify_timeout,
            verify_interval: self.options.verify_interval,
            poll_interval: self.options.poll_interval,
            ..machine::Policy::default()
        }
    }

    /// Read the machine's AMA extension (by the name observed) into `obs`.
    async fn read_ama(&self, rid: &ResourceId, obs: &mut Observation) -> Result<(), EngineError> {
        let Some(n) = obs.ama.name.clone() else {
            return Ok(());
        };
        let got = self
            .client
            .get_extension(rid, &n)
            .await
            .map_err(|e| EngineError::azure("reading the AMA extension", e))?;
        obs.ama = ama_state(got.as_ref().map(|x| {
            (
                n.as_str(),
                x.properties.provisioning_state.as_deref().unwrap_or(""),
            )
        }));
        Ok(())
    }

    /// The machine's DCR associations (a DCE association has no rule id and is left out).
    async fn associations(&self, rid: &ResourceId) -> Result<Vec<Association>, EngineError> {
        let list = self
            .client
            .list_associations(rid)
            .await
            .map_err(|e| EngineError::azure("listing a machine's DCR associations", e))?;
        Ok(list
            .into_iter()
            .filter_map(|a| {
                Some(Association {
                    name: a.name?,
                    dcr_id: a.properties.data_collection_rule_id?,
                })
            })
            .collect())
    }

    /// Drive one machine through the step function until it rests. Returns its end and the DCRs
    /// (lower-cased ids) its remaining migrator associations still use.
    async fn roll_back_machine(
        &self,
        shared: &Shared,
        t: Target,
    ) -> Result<(MachineRollback, Vec<String>), EngineError> {
        let Target {
            mut record,
            rid,
            mut obs,
            resume,
        } = t;
        let mut status = input_status(&record);
        let mut outcome = resume;
        let mut last_action = Action::None;
        for _ in 0..MAX_STEPS {
            if self.stopping() {
                break;
            }
            let now = self.clock.now();
            let polled_kind = status.operation.as_ref().map(|o| o.kind);
            let d = machine::step(&StepInput {
                spec: &record.object.spec,
                status: &status,
                observation: &obs,
                outcome: outcome.as_ref(),
                policy: &shared.policy,
                requests: Requests {
                    rollback: true,
                    ..Requests::default()
                },
                now,
            });
            if let Some(o) = outcome.take() {
                apply_outcome(&mut obs, &o, polled_kind);
            }
            status = d.status.clone();
            last_action = d.action.clone();
            // Persisted before the action runs (an operation handle is in it before any wait).
            self.save_decision(&mut record, &d, &obs, now)?;
            outcome = match d.action {
                Action::None => break,
                Action::WaitUntil(at) => {
                    self.wait_until(at).await;
                    // An extension seen mid-change with no operation to poll (its handle was lost
                    // in a stop): read it again, or the wait would end in a blind re-send.
                    if status.operation.is_none() && obs.ama.state.is_transitioning() {
                        self.read_ama(&rid, &mut obs).await?;
                    }
                    None
                }
                Action::RemoveAssociation { association_name } => Some(
                    self.remove_association(&rid, &association_name, now)
                        .await?,
                ),
                Action::RemoveAma { extension_name } => {
                    Some(self.remove_ama(shared, &rid, &extension_name, now).await?)
                }
                Action::PollOperation(op) => {
                    Some(self.poll(shared, &rid, &op.url, &mut obs, now).await?)
                }
                other => {
                    tracing::warn!(machine = %rid, action = ?other, "rollback: the step function asked for a forward action; not sent");
                    break;
                }
            };
        }
        let st = record.object.status.clone().unwrap_or_default();
        let cond = |t: &str| conditions::find(&st.conditions, t).cloned();
        let step = record.step();
        let (reason, message) = match step {
            MachineStep::RolledBack => cond(ctypes::READY),
            MachineStep::Blocked => cond(ctypes::BLOCKED),
            MachineStep::Failed => cond(ctypes::DEGRADED),
            _ => cond(ctypes::PROGRESSING),
        }
        .map(|c| (c.reason, c.message))
        .unwrap_or_else(|| (format!("{last_action:?}"), String::new()));
        let in_use = obs
            .associations
            .iter()
            .filter(|a| a.name.starts_with(machine::ASSOCIATION_PREFIX))
            .map(|a| a.dcr_id.to_ascii_lowercase())
            .collect();
        Ok((
            MachineRollback {
                machine_id: record.object.spec.machine_id.clone(),
                step,
                reason,
                message,
            },
            in_use,
        ))
    }

    /// Store the decision: the step function's status, its terminal step mapped to what people
    /// read (`RolledBack`, `Blocked`), the engine progress updated, the events recorded.
    fn save_decision(
        &self,
        record: &mut MachineRecord,
        d: &machine::Decision,
        obs: &Observation,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let mut st = d.status.clone();
        if d.action == Action::None && st.step == Some(MachineStep::RollingBack) {
            let ready = conditions::find(&st.conditions, ctypes::READY)
                .is_some_and(|c| c.reason == mreasons::ROLLED_BACK);
            let blocked = conditions::find(&st.conditions, ctypes::BLOCKED)
                .is_some_and(|c| c.status == cstatus::TRUE);
            let waiting = conditions::find(&st.conditions, ctypes::PROGRESSING)
                .is_some_and(|c| c.reason == mreasons::ROLLBACK_WAITING_FOR_LEGACY);
            let to = if ready {
                Some(MachineStep::RolledBack)
            } else if blocked || waiting {
                Some(MachineStep::Blocked)
            } else {
                None
            };
            if let Some(to) = to {
                st.step = Some(to);
                st.step_started_at = Some(Time(now));
                if waiting && !blocked {
                    let msg = conditions::find(&st.conditions, ctypes::PROGRESSING)
                        .map(|c| c.message.clone())
                        .unwrap_or_default();
                    conditions::set_condition(
                        &mut st.conditions,
                        ctypes::BLOCKED,
                        cstatus::TRUE,
                        mreasons::ROLLBACK_WAITING_FOR_LEGACY,
                        msg,
                        None,
                        Time(now),
                    );
                }
            }
        }
        // Unchanged terminal step: keep when it started.
        let prev = record.object.status.clone().unwrap_or_default();
        if prev.step == st.step {
            st.step_started_at = prev.step_started_at.clone();
        }
        let p = &mut record.progress;
        let ours = |a: &&Association| a.name.starts_with(machine::ASSOCIATION_PREFIX);
        if !obs.associations.iter().any(|a| ours(&a)) {
            p.associated.clear();
            p.verifying.clear();
            p.test_associated.clear();
            p.verify_since = None;
        }
        if !obs.ama.state.is_present() {
            p.ama_installed = false;
        }
        if st.step == Some(MachineStep::RolledBack) {
            p.failed = false;
            p.attempts = 0;
            p.not_before = None;
            p.in_flight = None;
        }
        let changed = prev != st;
        record.object.status = Some(st);
        for e in &d.events {
            let _ = self.state.record_event(&StoredEvent {
                object: ObjectKey::of(&record.object),
                event_type: match e.type_ {
                    machine::EventType::Normal => crate::local::EventType::Normal,
                    machine::EventType::Warning => crate::local::EventType::Warning,
                },
                reason: e.reason.to_string(),
                message: e.message.clone(),
                at: now,
            });
        }
        let before = record
            .object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::record::PROGRESS_ANNOTATION).cloned());
        record.encode();
        let after = record
            .object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::record::PROGRESS_ANNOTATION).cloned());
        if changed || before != after {
            record.object = self
                .state
                .save_machine(&record.object)
                .map_err(EngineError::Store)?;
        }
        Ok(())
    }

    async fn wait_until(&self, at: Timestamp) {
        // Bounded by the stop flag; each nap is one engine tick of real time.
        while self.clock.now() < at && !self.stopping() {
            tokio::time::sleep(self.options.tick.min(Duration::from_secs(5))).await;
        }
    }

    async fn remove_association(
        &self,
        rid: &ResourceId,
        name: &str,
        now: Timestamp,
    ) -> Result<Outcome, EngineError> {
        let action = Action::RemoveAssociation {
            association_name: name.to_string(),
        };
        let id = self
            .state
            .begin_operation(rid.as_str(), LABEL_DISSOCIATE, now)
            .map_err(EngineError::Store)?;
        self.count_write();
        let r = self.client.delete_association(rid, name).await.map(|_| ());
        self.finish_journal(id, &r.as_ref().map(|_| ()).map_err(summary), now)?;
        Ok(match r {
            Ok(()) => Outcome::Submitted {
                action,
                operation: None,
            },
            Err(e) => Outcome::Failed {
                action,
                error: ActionError::from_azure(&e, None),
            },
        })
    }

    async fn remove_ama(
        &self,
        shared: &Shared,
        rid: &ResourceId,
        name: &str,
        now: Timestamp,
    ) -> Result<Outcome, EngineError> {
        let action = Action::RemoveAma {
            extension_name: name.to_string(),
        };
        let id = self
            .state
            .begin_operation(rid.as_str(), LABEL_REMOVE_AMA, now)
            .map_err(EngineError::Store)?;
        self.count_write();
        match self.client.delete_extension(rid, name).await {
            Ok(s) => match s.operation {
                Some(h) => {
                    self.state
                        .set_operation_handle(id, &h)
                        .map_err(EngineError::Store)?;
                    if let Ok(mut m) = shared.handles.lock() {
                        m.insert(h.poll_url.clone(), (id, h.clone()));
                    }
                    Ok(Outcome::Submitted {
                        action,
                        operation: Some(h),
                    })
                }
                None => {
                    self.finish_journal(id, &Ok(()), now)?;
                    Ok(Outcome::Submitted {
                        action,
                        operation: None,
                    })
                }
            },
            Err(e) => {
                self.finish_journal(id, &Err(summary(&e)), now)?;
                Ok(Outcome::Failed {
                    action,
                    error: ActionError::from_azure(&e, None),
                })
            }
        }
    }

    /// Poll a journaled operation once. Without a journaled handle the AMA extension is read
    /// again and the observation decides.
    async fn poll(
        &self,
        shared: &Shared,
        rid: &ResourceId,
        url: &str,
        obs: &mut Observation,
        now: Timestamp,
    ) -> Result<Outcome, EngineError> {
        let entry = shared.handles.lock().ok().and_then(|m| m.get(url).cloned());
        let Some((id, h)) = entry else {
            self.read_ama(rid, obs).await?;
            return Ok(Outcome::Polled(PollResult::PollError(ActionError {
                classification: crate::azure::Classification::Permanent,
                code: "OperationHandleMissing".into(),
                message: "no journaled handle for this operation; deciding from ARM".into(),
                http_status: None,
                retry_after: None,
            })));
        };
        let done = |s: &Self| -> Result<(), EngineError> {
            if let Ok(mut m) = shared.handles.lock() {
                m.remove(url);
            }
            s.finish_journal(id, &Ok(()), now)
        };
        Ok(Outcome::Polled(
            match self.client.poll_operation(&h).await {
                Ok(PollOutcome::Running { retry_after }) => PollResult::Running { retry_after },
                Ok(PollOutcome::Done(_)) => {
                    done(self)?;
                    PollResult::Succeeded
                }
                Err(e)
                    if e.status() == Some(404)
                        && h.method == crate::azure::lro::LroMethod::Delete =>
                {
                    done(self)?;
                    PollResult::Succeeded
                }
                Err(e @ AzureError::OperationFailed { .. }) => {
                    if let Ok(mut m) = shared.handles.lock() {
                        m.remove(url);
                    }
                    self.finish_journal(id, &Err(summary(&e)), now)?;
                    PollResult::Failed(ActionError::from_azure(&e, None))
                }
                Err(e) => PollResult::PollError(ActionError::from_azure(&e, None)),
            },
        ))
    }

    async fn delete_dcr(&self, id: &str) -> Result<(), EngineError> {
        let rid = ResourceId::parse(id).map_err(|e| EngineError::Discovery {
            what: "the plan's owned DCRs",
            problem: format!("{id}: {e}"),
        })?;
        let now = self.clock.now();
        let stopped_midway = self
            .state
            .in_flight_operations()
            .map_err(EngineError::Store)?
            .iter()
            .any(|e| e.action == LABEL_DELETE_DCR && e.resource_id.eq_ignore_ascii_case(id));
        if stopped_midway {
            // A stop between journaling this delete and its answer: read ARM back first.
            let there: Option<serde_json::Value> = self
                .client
                .get_dcr(&rid)
                .await
                .map_err(|e| EngineError::azure("reading a data collection rule back", e))?;
            flip::close_abandoned(
                self.state.as_ref(),
                id,
                LABEL_DELETE_DCR,
                there.is_none(),
                now,
            )?;
            if there.is_none() {
                return Ok(());
            }
        }
        let jid = self
            .state
            .begin_operation(id, LABEL_DELETE_DCR, now)
            .map_err(EngineError::Store)?;
        self.count_write();
        let r = self.client.delete_dcr(&rid).await.map(|_| ());
        self.finish_journal(jid, &r.as_ref().map(|_| ()).map_err(summary), now)?;
        r.map_err(|e| EngineError::azure("deleting a data collection rule the plan owns", e))
    }

    fn finish_journal(
        &self,
        id: i64,
        r: &Result<(), (String, String)>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let outcome = match r {
            Ok(()) => OperationOutcome::Succeeded,
            Err((code, message)) => OperationOutcome::Failed {
                code: code.clone(),
                message: message.chars().take(512).collect(),
            },
        };
        self.state
            .finish_operation(id, &outcome, now)
            .map_err(EngineError::Store)
    }

    /// Drop the restored stream from the plan's flipped set and its changed settings.
    fn note_restored(
        &self,
        mut plan: MigrationPlan,
        t: DataSourceType,
    ) -> Result<MigrationPlan, EngineError> {
        if let Some(a) = plan.metadata.annotations.as_mut()
            && let Some(text) = a.get(PLAN_PROGRESS_ANNOTATION)
            && let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text)
        {
            let name = serde_json::to_value(t).unwrap_or_default();
            if let Some(list) = v.get_mut("flipped").and_then(|f| f.as_array_mut()) {
                list.retain(|x| *x != name);
            }
            a.insert(PLAN_PROGRESS_ANNOTATION.to_string(), v.to_string());
        }
        if let Some(st) = plan.status.as_mut() {
            st.changed_legacy_settings
                .retain(|c| c.data_source_type != t);
        }
        self.state.save_plan(&plan).map_err(EngineError::Store)
    }

    fn finish_plan(
        &self,
        plan: &mut MigrationPlan,
        waves: &[String],
        end: &RollbackEnd,
    ) -> Result<(), EngineError> {
        let now = self.clock.now();
        let st = plan.status.get_or_insert_with(Default::default);
        st.phase = Some(PlanPhase::Paused);
        if !end.stopped {
            for w in waves {
                match st.waves.iter_mut().find(|x| &x.name == w) {
                    Some(ws) => ws.phase = WavePhase::RolledBack,
                    None => st.waves.push(WaveStatus {
                        name: w.clone(),
                        phase: WavePhase::RolledBack,
                        total: 0,
                        done: 0,
                        failed: 0,
                        in_progress: 0,
                        blocked: 0,
                        started_at: None,
                        soak_until: None,
                        completed_at: None,
                    }),
                }
            }
        }
        let what = if end.scope == "*" {
            "the whole plan".to_string()
        } else {
            format!("wave {}", end.scope)
        };
        let blocked: Vec<&MachineRollback> = end
            .not_rolled_back
            .iter()
            .filter(|m| m.step == MachineStep::Blocked)
            .collect();
        let msg = if end.stopped {
            format!(
                "rollback of {what} stopped before it finished; run it again to continue. The plan is paused"
            )
        } else {
            format!(
                "{what} rolled back: {} of {} machine(s) back on the legacy path, {} not ({} blocked); workspace streams restored: {}. The plan is paused and does not migrate these machines again until the rollback is cleared (ama-migrator rollback --clear)",
                end.rolled_back,
                end.machines,
                end.not_rolled_back.len(),
                blocked.len(),
                if end.restored_streams.is_empty() {
                    "none".to_string()
                } else {
                    end.restored_streams
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        };
        set_plan_conditions(
            plan,
            ctypes::PROGRESSING,
            cstatus::FALSE,
            REASON_ROLLED_BACK,
            &msg,
            now,
        );
        set_plan_conditions(
            plan,
            ctypes::READY,
            cstatus::FALSE,
            REASON_ROLLED_BACK,
            &msg,
            now,
        );
        if blocked.is_empty() {
            set_plan_conditions(
                plan,
                ctypes::BLOCKED,
                cstatus::FALSE,
                REASON_ROLLED_BACK,
                "",
                now,
            );
        } else {
            let names: Vec<&str> = blocked
                .iter()
                .take(10)
                .map(|m| m.machine_id.rsplit('/').next().unwrap_or(&m.machine_id))
                .collect();
            set_plan_conditions(
                plan,
                ctypes::BLOCKED,
                cstatus::TRUE,
                mreasons::ROLLBACK_BLOCKED_NO_LEGACY,
                &format!(
                    "{} machine(s) of {what} could not be rolled back without a gap (e.g. {}): the migrator removed their legacy agent, so they keep AMA and its DCR associations; reinstall MMA/OMS on them and run the rollback again, or clear the rollback",
                    blocked.len(),
                    names.join(", ")
                ),
                now,
            );
        }
        self.recount(plan)?;
        *plan = self.state.save_plan(plan).map_err(EngineError::Store)?;
        self.plan_event(plan, REASON_ROLLED_BACK, msg);
        Ok(())
    }

    /// The plan's wave and fleet counts from its stored machines, as the wave phases written
    /// with them (the planner's figures — machines kept on the legacy agent for an AMA-unsupported
    /// source, out-of-scope senders — stay as the last run measured them).
    fn recount(&self, plan: &mut MigrationPlan) -> Result<(), EngineError> {
        let (ns, name) = plan_key(plan)?;
        let machines = self
            .state
            .load_machines(&ns, &name)
            .map_err(EngineError::Store)?;
        let views: Vec<MachineView<'_>> = machines.iter().map(MachineView::of).collect();
        let st = plan.status.get_or_insert_with(Default::default);
        let before = st.summary.clone().unwrap_or_default();
        let mut t = tally(&views, before.out_of_scope_senders);
        t.summary.blocked_unsupported = before.blocked_unsupported;
        apply_counts(st, &t);
        Ok(())
    }

    fn plan_event(&self, plan: &MigrationPlan, reason: &str, message: String) {
        let _ = self.state.record_event(&StoredEvent {
            object: ObjectKey::of(plan),
            event_type: crate::local::EventType::Normal,
            reason: reason.into(),
            message,
            at: self.clock.now(),
        });
    }
}

/// An Azure error as (code, message) for the journal (never a request body).
fn summary(e: &AzureError) -> (String, String) {
    (
        e.arm_code().unwrap_or("ClientError").to_string(),
        e.to_string(),
    )
}

fn set_plan_conditions(
    plan: &mut MigrationPlan,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let st = plan.status.get_or_insert_with(Default::default);
    conditions::set_condition(
        &mut st.conditions,
        type_,
        status,
        reason,
        message.to_string(),
        None,
        Time(now),
    );
}

/// The status the step function starts from: a rested rollback step goes back to `RollingBack`
/// (re-checked against ARM), and the markers of what the migrator added come from the engine's
/// progress (the forward engine does not write them).
fn input_status(r: &MachineRecord) -> MachineMigrationStatus {
    let mut st = r.object.status.clone().unwrap_or_default();
    if matches!(
        st.step,
        Some(MachineStep::RolledBack | MachineStep::Blocked)
    ) {
        st.step = Some(MachineStep::RollingBack);
    }
    let at = st
        .step_started_at
        .clone()
        .unwrap_or(Time(Timestamp::UNIX_EPOCH));
    let mut mark = |t: &str, reason: &str, msg: &str| {
        conditions::set_condition(
            &mut st.conditions,
            t,
            cstatus::TRUE,
            reason,
            msg.to_string(),
            None,
            at.clone(),
        );
    };
    if r.progress.ama_installed {
        mark(
            mreasons::TYPE_AMA_INSTALLED_BY_MIGRATOR,
            mreasons::AMA_INSTALLED,
            "the migrator installed the AMA extension",
        );
    }
    if r.progress.legacy_removed {
        mark(
            mreasons::TYPE_LEGACY_REMOVED_BY_MIGRATOR,
            mreasons::LEGACY_REMOVED,
            "the migrator removed the legacy agent extension; a rollback cannot reinstall it",
        );
    }
    st
}

/// The observation of one machine from the bulk discovery (associations are read separately).
fn observe(
    m: Option<&InventoryMachine>,
    heartbeat: &[HeartbeatSender],
    r: &MachineRecord,
) -> Observation {
    let Some(m) = m else {
        return Observation {
            exists: false,
            ..Observation::default()
        };
    };
    let power = if m.is_deallocated() {
        Power::Deallocated
    } else if m.is_disconnected() {
        Power::Disconnected
    } else {
        Power::Ready
    };
    let ama = ama_state(
        m.agents(AgentKind::Ama)
            .next()
            .map(|e| (e.name.as_str(), e.provisioning_state.as_str())),
    );
    let legacy_ext = m.agents(AgentKind::Legacy).next();
    let id = m.id.to_ascii_lowercase();
    // A legacy Heartbeat without an extension is an agent ARM cannot see, unless the migrator
    // removed the extension (its last heartbeats are still in the query window).
    let in_guest = legacy_ext.is_none()
        && !r.progress.legacy_removed
        && heartbeat.iter().any(|h| {
            h.resource_id.as_deref() == Some(id.as_str())
                && !h.category.eq_ignore_ascii_case("Azure Monitor Agent")
        });
    let ty = m.identity_type.to_ascii_lowercase();
    Observation {
        exists: true,
        power,
        identity: IdentityState {
            system_assigned: ty.contains("systemassigned"),
            user_assigned: if ty.contains("userassigned") {
                vec!["user-assigned".into()]
            } else {
                Vec::new()
            },
        },
        ama,
        legacy: LegacyState {
            name: legacy_ext.map(|e| e.name.clone()),
            state: legacy_ext
                .map(|e| extension_state(&e.provisioning_state))
                .unwrap_or_default(),
            in_guest_only: in_guest,
        },
        associations: Vec::new(),
        verification: None,
        legacy_needed_by: Vec::new(),
        flipped: BTreeSet::new(),
    }
}

fn extension_state(provisioning: &str) -> ExtensionState {
    match provisioning.to_ascii_lowercase().as_str() {
        "succeeded" => ExtensionState::Succeeded,
        "creating" | "updating" => ExtensionState::Provisioning,
        "deleting" => ExtensionState::Deleting,
        "failed" => ExtensionState::Failed {
            code: "ProvisioningFailed".into(),
            message: "the extension reports provisioningState Failed".into(),
        },
        _ => ExtensionState::Succeeded,
    }
}

fn ama_state(ext: Option<(&str, &str)>) -> AmaState {
    match ext {
        Some((name, state)) => AmaState {
            name: Some(name.to_string()),
            state: extension_state(state),
        },
        None => AmaState::default(),
    }
}

/// Apply a finished action's known effect to the observation the next step reads (`polled`: the
/// kind of the operation a poll result is about).
fn apply_outcome(obs: &mut Observation, o: &Outcome, polled: Option<OperationKind>) {
    let gone = |obs: &mut Observation, a: &Action| match a {
        Action::RemoveAssociation { association_name } => obs
            .associations
            .retain(|x| !x.name.eq_ignore_ascii_case(association_name)),
        Action::RemoveAma { .. } => obs.ama = AmaState::default(),
        _ => {}
    };
    match o {
        Outcome::Submitted {
            action,
            operation: None,
        } => gone(obs, action),
        Outcome::Failed { action, error } if error.http_status == Some(404) => gone(obs, action),
        Outcome::Polled(PollResult::Succeeded) => match polled {
            Some(OperationKind::RemoveAma) => obs.ama = AmaState::default(),
            Some(OperationKind::InstallAma) => obs.ama.state = ExtensionState::Succeeded,
            Some(OperationKind::RemoveLegacy) => obs.legacy.state = ExtensionState::Absent,
            _ => {}
        },
        _ => {}
    }
}
