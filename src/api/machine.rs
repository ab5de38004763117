//! `MachineMigration`: one per machine in scope, created and owned by the plan controller. Its
//! spec is the planner's per-(machine, data source) assignment; its status is what the machine
//! step function observed and did (in-flight ARM operations persist here before any wait).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plan::{Agent, MachineKind, Risk};
use crate::catalog::{DataSourceType, OsFamily};

/// Labels the plan controller puts on every MachineMigration.
pub mod labels {
    pub const PLAN: &str = "amamigrator.io/plan";
    pub const WAVE: &str = "amamigrator.io/wave";
    pub const RISK: &str = "amamigrator.io/risk";
    pub const OS: &str = "amamigrator.io/os";
}

/// Annotations people set to steer one machine.
pub mod annotations {
    /// `"true"`: do not start new steps on this machine.
    pub const HOLD: &str = "amamigrator.io/hold";
    /// Any new value: retry a Failed machine from its last step.
    pub const RETRY: &str = "amamigrator.io/retry";
    /// A wave name: pin the machine to that wave.
    pub const PIN_WAVE: &str = "amamigrator.io/pin-wave";
}

/// The migration of one machine.
// The kube printcolumn struct form repeats `type_ = "string"`; clippy reads that as duplicated.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "amamigrator.io",
    version = "v1alpha1",
    kind = "MachineMigration",
    namespaced,
    status = "MachineMigrationStatus",
    shortname = "amamm",
    category = "ama",
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.plan"),
    printcolumn(name = "Wave", type_ = "string", json_path = ".spec.wave"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.step"),
    printcolumn(name = "Agents", type_ = "string", json_path = ".status.agents"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.machineId == oldSelf.machineId").message("spec.machineId is immutable"))]
pub struct MachineMigrationSpec {
    /// Name of the owning MigrationPlan.
    #[schemars(length(min = 1))]
    pub plan: String,
    /// Resource ID of the VM or Arc server.
    #[schemars(
        length(min = 1, max = 1024),
        regex(
            pattern = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/[^/]+/[^/]+$"
        )
    )]
    pub machine_id: String,
    pub os: OsFamily,
    pub kind: MachineKind,
    pub wave: String,
    pub risk: Risk,
    /// The desired agent per data source.
    #[serde(default)]
    pub data_sources: Vec<MachineDataSource>,
    /// Whether the machine may start its next step now (wave admitted, window open, not paused).
    #[serde(default)]
    pub may_proceed: bool,
}

/// Desired assignment of one data source on the machine.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineDataSource {
    /// The plan data source name.
    pub name: String,
    #[serde(rename = "type")]
    pub type_: DataSourceType,
    pub agent: Agent,
    /// Resource ID of the DCR to associate (AMA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcr: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MachineMigrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<MachineStep>,
    /// Agents present, for `kubectl get` (e.g. `Legacy+AMA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<String>,
    /// Senders observed per data source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_senders: Vec<ObservedSenders>,
    /// The ARM operation being waited on, persisted before waiting so a restart resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<InFlightOperation>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ArmErrorStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Per-machine steps (design.md §5), each idempotent and resumable.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum MachineStep {
    Pending,
    CheckEligibility,
    EnsureIdentity,
    InstallAma,
    AssociateDcrs,
    Verify,
    Cutover,
    WaitForFlip,
    Done,
    Failed,
    Blocked,
    RollingBack,
    // Rolled back on request: the migrator's DCR associations and AMA install are removed and
    // the legacy path is kept. Final until the rollback is cleared (the plan then re-migrates).
    // (A plain comment: a doc comment on one variant changes the generated CRD enum's shape.)
    RolledBack,
}

/// Where a machine stands, whatever its step: what the trackers and the plan's counts group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPhase {
    /// Not started, or rolled back (on the legacy path again, as before the migration).
    Pending,
    InProgress,
    Done,
    Failed,
    Blocked,
}

impl MachineStep {
    pub fn phase(self) -> StepPhase {
        match self {
            MachineStep::Pending | MachineStep::RolledBack => StepPhase::Pending,
            MachineStep::Done => StepPhase::Done,
            MachineStep::Failed => StepPhase::Failed,
            MachineStep::Blocked => StepPhase::Blocked,
            MachineStep::CheckEligibility
            | MachineStep::EnsureIdentity
            | MachineStep::InstallAma
            | MachineStep::AssociateDcrs
            | MachineStep::Verify
            | MachineStep::Cutover
            | MachineStep::WaitForFlip
            | MachineStep::RollingBack => StepPhase::InProgress,
        }
    }
}

/// Which agents delivered one data source during the last observation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSenders {
    pub name: String,
    #[serde(default)]
    pub senders: Vec<Agent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

/// A long-running ARM operation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InFlightOperation {
    /// The `Azure-AsyncOperation` or `Location` URL to poll.
    #[schemars(length(min = 1))]
    pub url: String,
    pub kind: OperationKind,
    pub started_at: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OperationKind {
    EnableIdentity,
    InstallAma,
    RemoveLegacy,
    RemoveAma,
    Other,
}

/// The last ARM error: code and message, never request bodies or secrets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArmErrorStatus {
    pub code: String,
    pub message: String,
}
