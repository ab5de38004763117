//! The pure planner (design.md §2, §5): plan spec + inventory + workspace legacy settings +
//! observed per-machine state + now → risk, waves, the desired sender per (machine, data source),
//! the actions that may run now, legacy flips, blocked machines, DCRs and the worst-case window.
//!
//! No I/O: the Kubernetes shell, the local shell, the `plan` command and the property tests all
//! call [`plan`] with plain data.

mod decide;
mod errors;
mod fleet;
mod report;
mod typeset;
mod validate;
mod waves;
mod window;

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;

use crate::api::plan::{Agent, MigrationPlanSpec, Risk, Scope};
use crate::catalog::{Catalog, DataSourceType, LegacyConfig, OsFamily};
use crate::inventory::{HeartbeatSender, InventoryMachine};

pub use errors::{PlanError, PlanErrorKind, PlanRefused};
pub use fleet::{BlockReason, Lane};
pub use report::{EtaAssumptions, PlanReport};
pub use typeset::TypeSet;
pub use window::{TransitionWindow, WindowKind};

/// Another plan in the cluster, for "two plans claiming one machine".
#[derive(Clone, Debug, PartialEq)]
pub struct OtherPlan {
    pub name: String,
    pub workspace: String,
    pub scope: Scope,
}

/// What the shells observed and did on one machine (keyed by lower-cased resource ID).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineState {
    /// AMA extension installed and running with a usable identity.
    pub ama_installed: bool,
    /// A system-assigned identity was enabled by the controller.
    pub identity_enabled: bool,
    /// The controller removed the legacy agent.
    pub legacy_removed: bool,
    /// Production DCRs associated (and verified) per data source type.
    pub associated: TypeSet,
    /// Test-workspace (canary) DCRs associated per data source type.
    pub test_associated: TypeSet,
    /// The machine failed and waits for a person (retry annotation).
    pub failed: bool,
    /// A person put the machine on hold.
    pub held: bool,
}

/// Plan-level progress the shells record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanProgress {
    /// Per wave (spec order).
    pub waves: Vec<WaveProgress>,
    /// Legacy streams the plan turned off in the workspace.
    pub flipped: TypeSet,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaveProgress {
    /// When every machine of the wave had finished (soak starts here).
    pub finished_at: Option<Timestamp>,
    /// The parity gate's verdict, measured by the shell (`None`: not measured yet).
    pub parity_ok: Option<bool>,
    /// A person approved the wave (manual gate).
    pub approved: bool,
}

/// Everything the planner reads.
#[derive(Clone, Copy)]
pub struct PlanInput<'a> {
    pub plan_name: &'a str,
    pub spec: &'a MigrationPlanSpec,
    pub inventory: &'a [InventoryMachine],
    pub heartbeat: &'a [HeartbeatSender],
    pub legacy: &'a LegacyConfig,
    pub states: &'a HashMap<String, MachineState>,
    pub progress: &'a PlanProgress,
    pub other_plans: &'a [OtherPlan],
    pub now: Timestamp,
}

/// One step a shell may take now on one machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MachineAction {
    EnableIdentity,
    InstallAma,
    Associate { ds: DataSourceType, test: bool },
    Dissociate { ds: DataSourceType, test: bool },
    RemoveLegacy,
}

/// One step a shell may take now on the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanAction {
    /// Turn the workspace's legacy collection of this source off.
    Flip(DataSourceType),
    /// Turn it back on (a sender became uncovered after the flip).
    Restore(DataSourceType),
}

/// The planner's view of one (machine, data source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Index into `spec.dataSources`.
    pub ds_index: usize,
    pub ds_type: DataSourceType,
    /// The agent that should deliver into the production workspace now.
    pub desired_now: Agent,
    /// The agent that delivers at the end of the plan.
    pub target: Agent,
    /// Both agents deliberately (canary without a test workspace, inside the declared window).
    pub deliberate_overlap: bool,
    /// Why this pair cannot reach one sender, if it cannot.
    pub unservable: Option<&'static str>,
}

/// The decision for one in-scope machine.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineDecision {
    /// Index into the inventory.
    pub index: usize,
    pub key: String,
    /// `None` when the inventory reports an OS the planner does not know (the machine is blocked).
    pub os: Option<OsFamily>,
    pub risk: Risk,
    /// Index into `spec.rollout.waves`; `None` when no wave takes it.
    pub wave: Option<usize>,
    pub lane: Lane,
    pub blocked: Vec<BlockReason>,
    pub assignments: Vec<Assignment>,
    /// Steps that may run now (empty while the wave waits, the machine is held, blocked or done).
    pub actions: Vec<MachineAction>,
    /// The wave is admitted and nothing holds the machine.
    pub may_proceed: bool,
    /// Every assignment reached its target and nothing remains to do.
    pub done: bool,
}

/// The state of one legacy stream (per data source type the plan moves to AMA).
#[derive(Clone, Debug, PartialEq)]
pub struct FlipDecision {
    pub ds_type: DataSourceType,
    /// Workspace dataSource names that control it (what the flip changes).
    pub controls: Vec<String>,
    pub flipped: bool,
    /// Every legacy sender is covered, accepted, or about to be (stage ready).
    pub ready: bool,
    /// The flip may be made now.
    pub may_flip_now: bool,
    /// Human-readable preconditions with whether each holds.
    pub preconditions: Vec<(String, bool)>,
    /// Senders that keep the flip from happening (computer or resource ID), sorted; capped list.
    pub blocking_senders: Vec<String>,
    pub blocking_total: usize,
    /// Why the stream is never flipped by this plan, if it is not.
    pub never: Option<String>,
}

/// The wave plan: membership counts.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WavePlan {
    pub name: String,
    pub members: usize,
    pub by_risk: [usize; 3],
    pub by_os: [usize; 2],
    pub blocked: usize,
    pub done: usize,
    pub failed: usize,
    pub admitted: bool,
    pub gate_passed: bool,
    pub canary: bool,
}

/// Everything the planner decided.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOutcome {
    /// Spec problems; a non-empty list means the plan is refused and nothing may act.
    pub errors: Vec<PlanError>,
    pub machines: Vec<MachineDecision>,
    pub waves: Vec<WavePlan>,
    pub flips: Vec<FlipDecision>,
    pub plan_actions: Vec<PlanAction>,
    pub windows: Vec<TransitionWindow>,
    pub dcrs: Vec<DcrPlan>,
    /// Legacy senders to the workspace the plan does not cover (heartbeat-only or out of scope).
    pub out_of_scope_senders: Vec<String>,
    /// Notes for operators (legacy sources the plan does not list, and the like).
    pub warnings: Vec<String>,
    /// Machines have work that the maintenance windows hold back now: the plan waits for the
    /// next window, which is not a stall.
    pub held_by_window: bool,
}

impl PlanOutcome {
    pub fn refused(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// A DCR the plan needs.
#[derive(Clone, Debug, PartialEq)]
pub struct DcrPlan {
    pub name: String,
    pub os: OsFamily,
    pub test_workspace: bool,
    /// Plan data source names it collects.
    pub data_sources: Vec<String>,
    pub machines: usize,
    /// The DCR body (catalog generation), when generation succeeded.
    pub body: Option<serde_json::Value>,
    /// Why generation failed or what the DCR requires (e.g. a data collection endpoint).
    pub notes: Vec<String>,
}

/// Run the planner.
pub fn plan(input: &PlanInput<'_>) -> PlanOutcome {
    let (mut errors, catalog) = spec_checks(input.spec);
    errors.extend(validate::validate_shared_streams(input));
    let fleet = fleet::Fleet::build(input, &catalog);
    errors.extend(validate::validate_claims(input, &fleet));
    let membership = waves::assign(input.spec, &fleet);
    errors.extend(membership.errors.iter().cloned());
    let mut outcome = decide::decide(input, &catalog, &fleet, &membership);
    outcome.windows = window::windows(input.spec, &fleet, &outcome);
    errors.extend(window::bound_errors(input.spec, &outcome));
    let (dcrs, dcr_errors) = report::dcrs_and_errors(input, &fleet, &outcome);
    outcome.dcrs = dcrs;
    errors.extend(dcr_errors);
    if !errors.is_empty() {
        // A refused plan acts on nothing.
        for m in &mut outcome.machines {
            m.actions.clear();
            m.may_proceed = false;
        }
        outcome.plan_actions.clear();
        for f in &mut outcome.flips {
            f.may_flip_now = false;
        }
    }
    outcome.errors = errors;
    outcome
}

/// What the plan refuses on its own, with no inventory: `migrate` and `simulate` refuse a plan
/// with any of these before they read Azure; [`plan`] reports them with the rest.
pub fn spec_errors(spec: &MigrationPlanSpec) -> Vec<PlanError> {
    spec_checks(spec).0
}

fn spec_checks(spec: &MigrationPlanSpec) -> (Vec<PlanError>, Catalog) {
    let mut errors = validate::validate_spec(spec);
    let catalog = match Catalog::with_overrides(&spec.catalog_overrides) {
        Ok(c) => c,
        Err(e) => {
            errors.push(PlanError::from_catalog(&e));
            Catalog::builtin()
        }
    };
    errors.extend(validate::validate_support(spec, &catalog));
    (errors, catalog)
}

/// The plan data sources that apply to `os`, with their indices.
pub(crate) fn sources_for(
    spec: &MigrationPlanSpec,
    os: OsFamily,
) -> impl Iterator<Item = (usize, &crate::api::plan::PlanDataSource)> {
    spec.data_sources
        .iter()
        .enumerate()
        .filter(move |(_, d)| d.type_.os() == os)
}
