//! Plain data in and out of the per-machine step function: what Azure looks like (`Observation`),
//! what the last action returned (`Outcome`), the plan's knobs (`Policy`), people's requests
//! (`Requests`), and the `Decision` (next status + one action + events).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::machine::{InFlightOperation, MachineMigrationStatus, OperationKind};
use crate::api::plan::{Agent, CutoverPolicy, IdentityPolicy, UninstallPolicy};
use crate::azure::error::{AzureError, Classification};
use crate::azure::lro::OperationHandle;

/// Power / connectivity of the machine as ARM reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Power {
    /// VM running or Arc server connected: extension operations can proceed.
    #[default]
    Ready,
    /// VM deallocated or stopped: extension operations fail with `OperationNotAllowed`.
    Deallocated,
    /// Arc server disconnected: extension operations never complete.
    Disconnected,
}

/// The machine's managed identities.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IdentityState {
    pub system_assigned: bool,
    /// Resource IDs of user-assigned identities.
    pub user_assigned: Vec<String>,
}

impl IdentityState {
    pub fn usable(&self) -> bool {
        self.system_assigned || !self.user_assigned.is_empty()
    }
}

/// State of an agent extension as ARM reports it (`provisioningState`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ExtensionState {
    #[default]
    Absent,
    /// `Creating` / `Updating`.
    Provisioning,
    /// `Deleting` (a delete that timed out stays here; only a retried DELETE clears it).
    Deleting,
    Succeeded,
    Failed {
        code: String,
        message: String,
    },
}

impl ExtensionState {
    pub fn is_present(&self) -> bool {
        !matches!(self, Self::Absent)
    }
    pub fn is_transitioning(&self) -> bool {
        matches!(self, Self::Provisioning | Self::Deleting)
    }
}

/// The AMA extension on the machine.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AmaState {
    /// The extension's name when present (free-form: adopt whatever name it has).
    pub name: Option<String>,
    pub state: ExtensionState,
}

/// The legacy agent (MMA/OMS) on the machine.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LegacyState {
    /// The ARM extension's name when the agent is installed as an extension.
    pub name: Option<String>,
    pub state: ExtensionState,
    /// The agent runs but ARM cannot see it (MSI-installed, or multi-homed in-guest): it is seen
    /// only in the workspace Heartbeat, and cannot be removed through ARM.
    pub in_guest_only: bool,
}

impl LegacyState {
    /// The agent runs on the machine, whatever installed it.
    pub fn is_present(&self) -> bool {
        self.state.is_present() || self.in_guest_only
    }
}

/// One DCR association on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Association {
    pub name: String,
    /// Resource ID of the associated DCR.
    pub dcr_id: String,
}

/// Result of the heartbeat and data queries (Log Analytics) for this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// When the queries ran.
    pub observed_at: Timestamp,
    /// AMA Heartbeat seen since AMA was installed.
    pub ama_heartbeat: bool,
    /// Per plan data source name: the agents seen delivering it in the verification window.
    pub delivering: BTreeMap<String, BTreeSet<Agent>>,
}

impl Verification {
    pub fn ama_delivers(&self, source: &str) -> bool {
        self.delivering
            .get(source)
            .is_some_and(|s| s.contains(&Agent::Ama))
    }
}

/// What the orchestrator saw of the machine in Azure (bulk Resource Graph and Log Analytics
/// queries). It must be taken after the last outcome's action completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The machine still exists in ARM.
    pub exists: bool,
    pub power: Power,
    pub identity: IdentityState,
    pub ama: AmaState,
    pub legacy: LegacyState,
    pub associations: Vec<Association>,
    /// Latest heartbeat/data query result, if any was run.
    pub verification: Option<Verification>,
    /// Why the legacy agent must stay besides the spec's Legacy sources (computed by the
    /// orchestrator from the planner), e.g. "multi-homed to workspace contoso-soc". Empty: none.
    pub legacy_needed_by: Vec<String>,
    /// Plan data source names whose workspace legacy stream is already switched off.
    pub flipped: BTreeSet<String>,
}

impl Default for Observation {
    fn default() -> Self {
        Self {
            exists: true,
            power: Power::Ready,
            identity: IdentityState::default(),
            ama: AmaState::default(),
            legacy: LegacyState::default(),
            associations: Vec::new(),
            verification: None,
            legacy_needed_by: Vec::new(),
            flipped: BTreeSet::new(),
        }
    }
}

/// How long to wait and how often to try (from the plan, with defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub identity: IdentityPolicy,
    pub uninstall: UninstallPolicy,
    pub cutover: CutoverPolicy,
    /// Failures of one step before the machine is `Failed`.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long AMA may take to show a heartbeat and data before the verify attempt fails.
    pub verify_timeout: Duration,
    /// How often to re-run the verification queries while waiting.
    pub verify_interval: Duration,
    /// Poll interval for running operations and transitional states when ARM gives no Retry-After.
    pub poll_interval: Duration,
    /// A running operation older than this is abandoned and the step retried (extensions: 90 min).
    pub operation_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            identity: IdentityPolicy::EnableSystemAssigned,
            uninstall: UninstallPolicy::WhenUnused,
            cutover: CutoverPolicy::PreferNoGap,
            max_attempts: 5,
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(30 * 60),
            verify_timeout: Duration::from_secs(30 * 60),
            verify_interval: Duration::from_secs(5 * 60),
            poll_interval: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(90 * 60),
        }
    }
}

/// People's requests on the MachineMigration (annotations) or the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Requests {
    /// `amamigrator.io/hold: "true"`: start nothing new (running operations are still polled).
    pub hold: bool,
    /// A new value of `amamigrator.io/retry`: resume a Failed machine with attempts reset.
    /// The orchestrator sets it once per new value.
    pub retry: bool,
    /// Roll the machine back: remove what the migrator added, keep the legacy path.
    pub rollback: bool,
}

/// The identity AMA authenticates with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmaIdentity {
    SystemAssigned,
    /// Settings must carry `authentication.managedIdentity` with `mi_res_id` = this resource ID.
    UserAssigned(String),
}

/// The one thing the orchestrator does next for this machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing until something changes (Done, Failed, Blocked, held, not admitted).
    None,
    /// Observe again and call `step` at (or after) this time.
    WaitUntil(Timestamp),
    /// PATCH the VM's identity to add a system-assigned identity, resending every user-assigned one.
    EnableSystemIdentity,
    /// PUT the AMA extension.
    InstallAma {
        extension_name: String,
        publisher: &'static str,
        extension_type: &'static str,
        identity: AmaIdentity,
    },
    /// PUT a DCR association (synchronous).
    Associate {
        dcr_id: String,
        association_name: String,
    },
    /// Run the heartbeat and data queries for this machine and pass the result in
    /// `Observation::verification`.
    Verify,
    /// DELETE the legacy agent extension.
    RemoveLegacy { extension_name: String },
    /// GET the in-flight operation's poll URL once; report `Outcome::Polled`.
    PollOperation(InFlightOperation),
    /// DELETE a DCR association the migrator created.
    RemoveAssociation { association_name: String },
    /// DELETE the AMA extension (rollback of our install, or a retried delete of a stuck one).
    RemoveAma { extension_name: String },
}

impl Action {
    /// The action changes something in Azure.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Self::EnableSystemIdentity
                | Self::InstallAma { .. }
                | Self::Associate { .. }
                | Self::RemoveLegacy { .. }
                | Self::RemoveAssociation { .. }
                | Self::RemoveAma { .. }
        )
    }

    /// The operation kind an LRO started by this action is recorded under.
    pub fn operation_kind(&self) -> OperationKind {
        match self {
            Self::EnableSystemIdentity => OperationKind::EnableIdentity,
            Self::InstallAma { .. } => OperationKind::InstallAma,
            Self::RemoveLegacy { .. } => OperationKind::RemoveLegacy,
            Self::RemoveAma { .. } => OperationKind::RemoveAma,
            _ => OperationKind::Other,
        }
    }
}

/// A failure of an action, reduced to what the step function decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionError {
    pub classification: Classification,
    pub code: String,
    pub message: String,
    pub http_status: Option<u16>,
    /// `Retry-After` the service asked for (429).
    pub retry_after: Option<Duration>,
}

impl ActionError {
    /// From the client's error; never carries request bodies.
    pub fn from_azure(e: &AzureError, retry_after: Option<Duration>) -> Self {
        Self {
            classification: e.classification(),
            code: e.arm_code().unwrap_or("ClientError").to_string(),
            message: e.to_string(),
            http_status: e.status(),
            retry_after,
        }
    }
}

/// The result of one poll of the in-flight operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollResult {
    Running {
        retry_after: Option<Duration>,
    },
    Succeeded,
    /// The operation ended `Failed` / `Canceled` (the error of the operation itself).
    Failed(ActionError),
    /// The poll request itself failed (429, 5xx, 404 on the status URL).
    PollError(ActionError),
}

/// What happened when the orchestrator executed the previous decision's action.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The write was accepted; `operation` is `Some` when it continues as a long-running operation.
    Submitted {
        action: Action,
        operation: Option<OperationHandle>,
    },
    Polled(PollResult),
    /// The action failed before any operation started.
    Failed {
        action: Action,
        error: ActionError,
    },
}

/// Severity of an event, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// An event for the MachineMigration (step changes and failures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// The step function's answer. The orchestrator persists `status` BEFORE executing `action`
/// (that is what makes in-flight operations resumable).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: MachineMigrationStatus,
    pub action: Action,
    pub events: Vec<Event>,
}
