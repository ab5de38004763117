//! One machine as the engine keeps it: the `MachineMigration` object (spec from the planner,
//! status for people and the tracker) plus the engine's own progress, stored in an annotation of
//! the same object so one write persists both.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::conditions::{self, reasons, status as cstatus, types as ctypes};
use crate::api::machine::{
    ArmErrorStatus, InFlightOperation, MachineMigrationSpec, MachineMigrationStatus, MachineStep,
    ObservedSenders, OperationKind, labels,
};
use crate::api::plan::Agent;
use crate::api::{MachineMigration, MigrationPlan};
use crate::catalog::DataSourceType;
use crate::plan::{MachineState, TypeSet};

/// The annotation holding [`Progress`] as JSON.
pub const PROGRESS_ANNOTATION: &str = "amamigrator.io/engine-progress";

/// What the engine did and waits for on one machine (everything the planner's `MachineState`
/// needs, plus retry bookkeeping and the in-flight write).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    #[serde(default)]
    pub ama_installed: bool,
    #[serde(default)]
    pub identity_enabled: bool,
    #[serde(default)]
    pub legacy_removed: bool,
    /// Production DCR associations verified to deliver, per source type.
    #[serde(default)]
    pub associated: BTreeSet<DataSourceType>,
    /// Associated to production but not yet proven to deliver.
    #[serde(default)]
    pub verifying: BTreeSet<DataSourceType>,
    /// When verification started (unix seconds, engine clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_since: Option<i64>,
    #[serde(default)]
    pub test_associated: BTreeSet<DataSourceType>,
    #[serde(default)]
    pub failed: bool,
    /// Failures of the current action since its last success.
    #[serde(default)]
    pub attempts: u32,
    /// No new write before this time (unix seconds): backoff after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// The journal entry of the write in flight, and what it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub journal_id: i64,
    pub action: String,
    /// Next poll no earlier than this (unix milliseconds, engine clock).
    #[serde(default)]
    pub poll_at_ms: i64,
}

impl Progress {
    pub fn state(&self, held: bool) -> MachineState {
        MachineState {
            ama_installed: self.ama_installed,
            identity_enabled: self.identity_enabled,
            // A legacy removal ARM accepted counts as done: the agent is going away, so nothing
            // may lean on it (e.g. take AMA off a source "because legacy still sends it").
            legacy_removed: self.legacy_removed
                || self
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.action == "RemoveLegacy"),
            associated: self.associated.iter().copied().collect::<TypeSet>(),
            test_associated: self.test_associated.iter().copied().collect::<TypeSet>(),
            failed: self.failed,
            held,
        }
    }
}

/// The object name of a machine's MachineMigration: its name, made DNS-safe, plus a hash of its
/// id so two machines with one name in different groups do not collide.
pub fn object_name(machine_id: &str) -> String {
    let lower = machine_id.to_ascii_lowercase();
    let short = lower.rsplit('/').next().unwrap_or(&lower);
    let mut clean: String = short
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(50);
    let clean = clean.trim_matches('-');
    let hash = lower.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{clean}-{hash:08x}")
}

/// A machine record: the stored object and its decoded progress.
#[derive(Clone, Debug)]
pub struct MachineRecord {
    pub object: MachineMigration,
    pub progress: Progress,
    /// The object changed since it was last saved.
    pub dirty: bool,
}

impl MachineRecord {
    pub fn new(plan: &MigrationPlan, spec: MachineMigrationSpec) -> Self {
        let mut meta = ObjectMeta {
            name: Some(object_name(&spec.machine_id)),
            namespace: plan.metadata.namespace.clone(),
            ..ObjectMeta::default()
        };
        let mut l = std::collections::BTreeMap::new();
        l.insert(labels::PLAN.to_string(), spec.plan.clone());
        l.insert(labels::WAVE.to_string(), spec.wave.clone());
        l.insert(labels::RISK.to_string(), format!("{:?}", spec.risk));
        l.insert(labels::OS.to_string(), format!("{:?}", spec.os));
        meta.labels = Some(l);
        Self {
            object: MachineMigration {
                metadata: meta,
                spec,
                status: Some(MachineMigrationStatus {
                    step: Some(MachineStep::Pending),
                    ..MachineMigrationStatus::default()
                }),
            },
            progress: Progress::default(),
            dirty: true,
        }
    }

    /// Decode a stored object (a missing or unreadable annotation starts from scratch: every
    /// step is idempotent, so the worst case is re-sending writes that already happened).
    pub fn from_object(object: MachineMigration) -> Self {
        let progress = object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROGRESS_ANNOTATION))
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        Self {
            object,
            progress,
            dirty: false,
        }
    }

    pub fn key(&self) -> String {
        self.object.spec.machine_id.to_ascii_lowercase()
    }

    pub fn held(&self) -> bool {
        self.object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::api::machine::annotations::HOLD))
            .is_some_and(|v| v == "true")
    }

    pub fn status_mut(&mut self) -> &mut MachineMigrationStatus {
        self.object.status.get_or_insert_with(Default::default)
    }

    pub fn step(&self) -> MachineStep {
        self.object
            .status
            .as_ref()
            .and_then(|s| s.step)
            .unwrap_or(MachineStep::Pending)
    }

    /// Move to `step` (recording when it started).
    pub fn set_step(&mut self, step: MachineStep, now: Timestamp) {
        if self.step() == step {
            return;
        }
        let s = self.status_mut();
        s.step = Some(step);
        s.step_started_at = Some(Time(now));
        if s.started_at.is_none() && !matches!(step, MachineStep::Pending | MachineStep::Blocked) {
            s.started_at = Some(Time(now));
        }
        if step == MachineStep::Done && s.completed_at.is_none() {
            s.completed_at = Some(Time(now));
        }
        self.dirty = true;
    }

    pub fn set_condition(&mut self, type_: &str, status: &str, reason: &str, message: String) {
        let now = self
            .object
            .status
            .as_ref()
            .and_then(|s| s.step_started_at.clone())
            .unwrap_or(Time(Timestamp::UNIX_EPOCH));
        let before = self.object.status.as_ref().map(|s| s.conditions.clone());
        let s = self.status_mut();
        conditions::set_condition(&mut s.conditions, type_, status, reason, message, None, now);
        if before.as_ref() != Some(&s.conditions) {
            self.dirty = true;
        }
    }

    pub fn set_error(&mut self, code: &str, message: &str) {
        let attempts = self.progress.attempts;
        let s = self.status_mut();
        s.attempts = attempts;
        s.last_error = Some(ArmErrorStatus {
            code: code.to_string(),
            message: message.chars().take(1024).collect(),
        });
        self.dirty = true;
    }

    pub fn clear_error(&mut self) {
        let s = self.status_mut();
        if s.last_error.is_some() || s.attempts != 0 {
            s.last_error = None;
            s.attempts = 0;
            self.dirty = true;
        }
    }

    /// Show the in-flight operation in the status (people and the Kubernetes shell read it there).
    pub fn set_operation(&mut self, op: Option<(String, OperationKind, Timestamp)>) {
        let new = op.map(|(url, kind, at)| InFlightOperation {
            url,
            kind,
            started_at: Time(at),
        });
        let s = self.status_mut();
        if s.operation != new {
            s.operation = new;
            self.dirty = true;
        }
    }

    /// Derived status fields: the agents column and the observed senders per data source.
    /// `ama_present`: AMA installed by the plan or found installed before it.
    pub fn refresh_summary(
        &mut self,
        legacy_present: bool,
        ama_present: bool,
        legacy_stream_on: &dyn Fn(DataSourceType) -> bool,
    ) {
        let ama = ama_present;
        let agents = match (legacy_present, ama) {
            (true, true) => "Legacy+AMA",
            (true, false) => "Legacy",
            (false, true) => "AMA",
            (false, false) => "None",
        };
        let senders: Vec<ObservedSenders> = self
            .object
            .spec
            .data_sources
            .iter()
            .map(|d| {
                let mut s = Vec::new();
                if legacy_present && legacy_stream_on(d.type_) {
                    s.push(Agent::Legacy);
                }
                if ama && self.progress.associated.contains(&d.type_)
                    || self.progress.verifying.contains(&d.type_)
                {
                    s.push(Agent::Ama);
                }
                ObservedSenders {
                    name: d.name.clone(),
                    senders: s,
                    observed_at: None,
                }
            })
            .collect();
        let st = self.status_mut();
        if st.agents.as_deref() != Some(agents) || st.observed_senders != senders {
            st.agents = Some(agents.to_string());
            st.observed_senders = senders;
            self.dirty = true;
        }
    }

    /// A person's retry (`migrate --retry`, the operator's retry annotation): the failure, the
    /// attempts and the backoff are cleared and a `Failed` machine is `Pending` again, so the next
    /// pass decides its next step afresh. Returns whether the machine had failed.
    pub fn clear_failure(&mut self) -> bool {
        let was_failed = self.progress.failed || self.step() == MachineStep::Failed;
        self.progress.failed = false;
        self.progress.attempts = 0;
        self.progress.not_before = None;
        let st = self.status_mut();
        st.attempts = 0;
        if st.step == Some(MachineStep::Failed) {
            st.step = Some(MachineStep::Pending);
        }
        self.dirty = true;
        was_failed
    }

    /// Write the progress annotation into the object before saving.
    pub fn encode(&mut self) {
        let text = serde_json::to_string(&self.progress).unwrap_or_default();
        let a = self
            .object
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        a.insert(PROGRESS_ANNOTATION.to_string(), text);
    }

    /// `reason` is the condition reason (`reasons::DEALLOCATED`, ...); see `block_reason`.
    pub fn mark_blocked(&mut self, reason: &str, message: String, now: Timestamp) {
        self.set_step(MachineStep::Blocked, now);
        self.set_condition(ctypes::BLOCKED, cstatus::TRUE, reason, message);
    }

    pub fn mark_done(&mut self, now: Timestamp) {
        self.set_step(MachineStep::Done, now);
        self.set_condition(
            ctypes::READY,
            cstatus::TRUE,
            reasons::COMPLETED,
            "migrated".into(),
        );
        self.set_condition(
            ctypes::BLOCKED,
            cstatus::FALSE,
            reasons::COMPLETED,
            String::new(),
        );
    }
}

/// The Blocked condition's reason for the planner's first block reason, so status consumers can
/// tell a deallocated VM from a missing identity without parsing the message.
pub fn block_reason(b: &crate::plan::BlockReason) -> &'static str {
    use crate::plan::BlockReason as B;
    match b {
        B::Deallocated => reasons::DEALLOCATED,
        B::Disconnected => reasons::DISCONNECTED,
        B::MissingIdentity => reasons::MISSING_IDENTITY,
        B::ClaimedByOtherPlan(_) => reasons::MACHINE_CLAIMED_TWICE,
        B::Held => reasons::HELD,
        B::UnknownOs(_) | B::UnknownKind(_) => ctypes::BLOCKED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(action: &str) -> Progress {
        Progress {
            in_flight: Some(InFlight {
                journal_id: 7,
                action: action.into(),
                poll_at_ms: 0,
            }),
            ..Progress::default()
        }
    }

    #[test]
    fn an_accepted_legacy_removal_counts_as_removed_for_the_planner() {
        assert!(!Progress::default().state(false).legacy_removed);
        assert!(in_flight("RemoveLegacy").state(false).legacy_removed);
        // Other writes in flight say nothing about the legacy agent.
        assert!(!in_flight("InstallAma").state(false).legacy_removed);
        let done = Progress {
            legacy_removed: true,
            ..Progress::default()
        };
        assert!(done.state(true).legacy_removed && done.state(true).held);
    }
}
