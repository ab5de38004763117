//! `MigrationPlan`: the declaration people and GitOps write (design.md §3). The controller never
//! writes its spec; it reports progress in the status subresource.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogOverride;
use crate::catalog::settings::DataSourceSettings;
use crate::catalog::{DataSourceType, OsFamily};

/// Declares which machines move which data sources to which agent, in which waves, within
/// which duplicate/gap bounds.
// The kube printcolumn struct form repeats `type_ = "string"`; clippy reads that as duplicated.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "amamigrator.io",
    version = "v1alpha1",
    kind = "MigrationPlan",
    namespaced,
    status = "MigrationPlanStatus",
    shortname = "amaplan",
    shortname = "amaplans",
    category = "ama",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Wave", type_ = "string", json_path = ".status.currentWave"),
    printcolumn(name = "Done", type_ = "integer", json_path = ".status.summary.done"),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.summary.total"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.testWorkspace) || self.testWorkspace.resourceId.lowerAscii() != self.workspace.lowerAscii()").message("spec.testWorkspace must differ from spec.workspace: canary data would duplicate into production"))]
pub struct MigrationPlanSpec {
    /// Resource ID of the Sentinel (Log Analytics) workspace the plan migrates.
    #[schemars(
        length(min = 1, max = 512),
        regex(
            pattern = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.OperationalInsights/workspaces/[^/]+$"
        )
    )]
    pub workspace: String,
    /// Azure region of the workspace; the plan's DCRs are created there.
    #[schemars(length(min = 1))]
    pub location: String,
    /// Workspace ID (customer GUID) the legacy agent's settings carry; tells which legacy agents
    /// report to this workspace when no Heartbeat export is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_customer_id: Option<String>,
    /// Workspace for the proof of concept: canary waves send their AMA data here while both
    /// agents run, so production sees no duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_workspace: Option<TestWorkspace>,
    /// Which machines the plan covers.
    #[serde(default)]
    pub scope: Scope,
    /// Data sources and the agent each must be sent by.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("data source names must be unique"))]
    pub data_sources: Vec<PlanDataSource>,
    /// Corrections to the built-in catalog (AMA has gained sources the seed lists as unsupported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalog_overrides: Vec<CatalogOverride>,
    pub rollout: Rollout,
    #[serde(default)]
    pub legacy: LegacyPolicy,
    /// Whether the controller may enable a system-assigned identity where AMA needs one.
    #[serde(default)]
    pub identity: IdentityPolicy,
    /// The Azure identity this plan acts as; default: the operator's own (workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<PlanAzure>,
    /// Stop admitting machines; in-flight steps finish.
    #[serde(default)]
    pub paused: bool,
    /// Compute and report decisions without changing anything in Azure.
    #[serde(default)]
    pub dry_run: bool,
}

/// The Azure identity of one plan, from the plan's own namespace. Set one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.credentialsSecretRef) && has(self.clientId))").message("spec.azure: set credentialsSecretRef or clientId, not both"))]
pub struct PlanAzure {
    /// A Secret in the plan's namespace: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    /// `AZURE_CLIENT_SECRET` (a service principal), or `AZURE_CLIENT_ID` (and optionally
    /// `AZURE_TENANT_ID`) alone for an Entra identity federated with the operator's
    /// ServiceAccount (workload identity). The operator needs `get` on Secrets there
    /// (chart value `rbac.secretAccess`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
    /// Client ID of an Entra identity (e.g. a user-assigned managed identity) federated with the
    /// operator's ServiceAccount: the operator's workload-identity token is exchanged for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[0-9a-fA-F-]+$"))]
    pub client_id: Option<String>,
}

/// A Secret of the plan's own namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The proof-of-concept workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TestWorkspace {
    #[schemars(
        length(min = 1, max = 512),
        regex(
            pattern = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.OperationalInsights/workspaces/[^/]+$"
        )
    )]
    pub resource_id: String,
    /// Must equal the production workspace's region (DCRs live in their destination's region).
    #[schemars(length(min = 1))]
    pub location: String,
}

/// Machines the plan covers: every filter that is set must match; `excludes` always wins.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// Subscription IDs (GUIDs). Empty: every subscription in the inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// Resource group resource IDs (`/subscriptions/<id>/resourceGroups/<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_groups: Vec<String>,
    /// Tags a machine must carry with these exact values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_selector: BTreeMap<String, String>,
    /// Machine kinds. Empty: both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<MachineKind>,
    /// Machine resource IDs (or names) never touched by this plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
}

/// Azure VM or Azure Arc-enabled server.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum MachineKind {
    AzureVM,
    ArcServer,
}

impl From<crate::inventory::MachineKind> for MachineKind {
    fn from(k: crate::inventory::MachineKind) -> Self {
        match k {
            crate::inventory::MachineKind::AzureVM => Self::AzureVM,
            crate::inventory::MachineKind::ArcServer => Self::ArcServer,
        }
    }
}

/// Which agent sends a data source.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Agent {
    #[serde(rename = "AMA")]
    Ama,
    Legacy,
}

impl Agent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ama => "AMA",
            Self::Legacy => "Legacy",
        }
    }
}

/// One data source of the plan.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanDataSource {
    /// Name, unique in the plan (used in DCR names and MachineMigration specs).
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(rename = "type")]
    pub type_: DataSourceType,
    /// The agent that must send it at the end of the migration.
    pub agent: Agent,
    #[serde(default)]
    pub settings: DataSourceSettings,
}

/// Risk class of a machine; waves admit machines up to a maximum risk.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    Default,
)]
pub enum Risk {
    Low,
    #[default]
    Medium,
    High,
}

impl Risk {
    pub const ALL: [Risk; 3] = [Risk::Low, Risk::Medium, Risk::High];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
        }
    }
}

/// How the plan rolls out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// First matching rule wins; machines no rule matches get `defaultRisk`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_rules: Vec<RiskRule>,
    #[serde(default)]
    pub default_risk: Risk,
    /// Ordered waves; a wave starts when the previous one finished and passed its gates.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("wave names must be unique"))]
    pub waves: Vec<Wave>,
    /// Machines migrating at the same time, across the plan.
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_parallel: u32,
    #[serde(default)]
    pub failure_budget: FailureBudget,
    #[serde(default)]
    pub cutover: Cutover,
    /// When machines may start a step (UTC). Empty: any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub maintenance_windows: Vec<MaintenanceWindow>,
}

fn default_max_parallel() -> u32 {
    50
}

/// A risk rule: every condition that is set must match.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RiskRule {
    #[serde(rename = "match")]
    pub match_: RiskMatch,
    pub risk: Risk,
}

/// What a risk rule matches on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RiskMatch {
    /// Tags with exact values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsFamily>,
    /// Value of the machine's `role` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Value of the machine's `criticality` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<String>,
}

/// One wave.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.count) && has(self.percent))").message("a wave's size is a count or a percent, not both"))]
pub struct Wave {
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Highest risk class this wave admits.
    pub max_risk: Risk,
    /// Number of machines. Without count and percent the wave takes every remaining machine up to `maxRisk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub count: Option<u32>,
    /// Share of the plan's machines, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<u32>,
    /// A proof-of-concept wave: both agents run, AMA data goes to `testWorkspace` when set.
    #[serde(default)]
    pub canary: bool,
    /// How long the wave must run cleanly before the next starts (e.g. `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub soak: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Gates>,
}

/// Conditions a wave must meet before the next wave starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.parityTolerancePercent) == has(self.parityWindow)").message("parityTolerancePercent and parityWindow go together"))]
pub struct Gates {
    /// Share of the wave's machines that must reach Done (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_success_ratio: Option<f64>,
    /// Largest allowed difference, in percent, between what AMA and the legacy agent ingest from the same hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub parity_tolerance_percent: Option<u32>,
    /// Period the parity comparison covers (e.g. `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub parity_window: Option<String>,
    /// A person must approve (annotation `amamigrator.io/approve-wave: <name>`) before the next wave.
    #[serde(default)]
    pub manual_approval: bool,
}

/// How many machine failures pause the rollout: a count or a percent of the admitted machines.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.maxFailed) && has(self.maxFailedPercent))").message("the failure budget is a count or a percent, not both"))]
pub struct FailureBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_failed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_failed_percent: Option<u32>,
}

/// The transition policy for one (machine, data source): which bound the plan keeps.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxGap) || self.policy == 'PreferNoDuplicate'").message("maxGap applies to policy PreferNoDuplicate; use maxOverlap with PreferNoGap"))]
#[x_kube(validation = Rule::new("!has(self.maxOverlap) || self.policy == 'PreferNoGap'").message("maxOverlap applies to policy PreferNoGap; use maxGap with PreferNoDuplicate"))]
pub struct Cutover {
    pub policy: CutoverPolicy,
    /// Longest time both agents may send the same data source (PreferNoGap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub max_overlap: Option<String>,
    /// Longest time no agent may send a data source (PreferNoDuplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub max_gap: Option<String>,
}

impl Default for Cutover {
    fn default() -> Self {
        Self {
            policy: CutoverPolicy::PreferNoGap,
            max_overlap: None,
            max_gap: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CutoverPolicy {
    /// The new sender starts before the old one stops (short duplicates, never a gap).
    PreferNoGap,
    /// The old sender stops before the new one starts (short gaps, never duplicates).
    PreferNoDuplicate,
}

/// A weekly window in UTC.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start != self.end").message("a maintenance window needs distinct start and end"))]
pub struct MaintenanceWindow {
    /// Days the window opens. Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// `HH:MM`, UTC.
    #[schemars(length(max = 5), regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// `HH:MM`, UTC; earlier than `start` means the window spans midnight.
    #[schemars(length(max = 5), regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// What the plan does with the workspace's legacy collection and the legacy agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LegacyPolicy {
    #[serde(default)]
    pub flip: FlipPolicy,
    #[serde(default)]
    pub uninstall: UninstallPolicy,
}

/// When to turn a workspace legacy stream off.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FlipPolicy {
    #[serde(default)]
    pub policy: FlipWhen,
    /// Senders the plan accepts to cut off although AMA does not cover them (e.g. decommissioned
    /// on-premises hosts). Each must be named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_uncovered_senders: Vec<AcceptedSender>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
pub enum FlipWhen {
    /// Flip a stream once every sender of it in the workspace is covered by AMA.
    #[default]
    AfterAllCovered,
    /// Never change the workspace's legacy settings.
    Never,
}

/// A named sender the plan accepts to cut off.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedSender {
    /// Heartbeat `Computer` name or machine resource ID.
    #[schemars(length(min = 1))]
    pub computer: String,
    /// Plan data source names this exception covers. Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_sources: Vec<String>,
    #[schemars(length(min = 1))]
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
pub enum UninstallPolicy {
    /// Remove the legacy agent from a machine once nothing it serves remains.
    #[default]
    WhenUnused,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
pub enum IdentityPolicy {
    /// Enable a system-assigned identity on machines that have none.
    #[default]
    EnableSystemAssigned,
    /// Only migrate machines that already have a managed identity; block the others.
    RequireExisting,
}

// ---------------------------------------------------------------------------------------------
// Status

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlanStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PlanPhase>,
    /// Name of the wave being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<FleetSummary>,
    /// DCRs the plan created and owns (deleted on rollback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_dcrs: Vec<OwnedDcr>,
    /// Workspace legacy settings the plan changed, with their previous values (for rollback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_legacy_settings: Vec<ChangedLegacySetting>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PlanPhase {
    Pending,
    Progressing,
    Paused,
    Blocked,
    Completed,
    Failed,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    pub name: String,
    pub phase: WavePhase,
    pub total: u32,
    #[serde(default)]
    pub done: u32,
    #[serde(default)]
    pub failed: u32,
    #[serde(default)]
    pub in_progress: u32,
    #[serde(default)]
    pub blocked: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// End of the soak period once every machine finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WavePhase {
    Pending,
    Progressing,
    Soaking,
    AwaitingApproval,
    Completed,
    Failed,
    // Rolled back on request; the plan is paused until the rollback is cleared.
    RolledBack,
}

/// Where the fleet stands, per (machine) and per sender.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    pub total: u32,
    pub legacy_only: u32,
    pub ama_only: u32,
    pub both: u32,
    pub done: u32,
    pub failed: u32,
    /// Machines that keep the legacy agent because a source they need has no AMA support.
    pub blocked_unsupported: u32,
    /// Legacy senders to the workspace that are outside the plan's scope (they gate the flips).
    pub out_of_scope_senders: u32,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnedDcr {
    pub name: String,
    pub resource_id: String,
    /// Plan data source names this DCR collects.
    #[serde(default)]
    pub data_sources: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChangedLegacySetting {
    /// Resource ID of the workspace dataSource that was changed.
    pub resource_id: String,
    pub kind: String,
    pub data_source_type: DataSourceType,
    /// The dataSource `properties` before the change, as JSON text.
    pub previous_properties: String,
    pub changed_at: Time,
}
