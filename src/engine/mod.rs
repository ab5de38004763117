//! The orchestrator: a thin async shell over the pure planner, used by `simulate` and `migrate`
//! (local state in SQLite) and meant for the Kubernetes shell (state behind [`EngineState`]).
//!
//! # The loop
//! 1. **Discover** with bulk queries only: the Resource Graph inventory (every page), one Log
//!    Analytics Heartbeat query and the workspace's dataSources lists ([`discover`]).
//! 2. **Plan**: every pass calls the pure planner with the discovery, each machine's recorded
//!    progress and the plan's progress (finished waves, approvals, parity, flipped streams).
//!    A refused plan ends the run. The first pass creates or updates the plan's DCRs (GET first,
//!    PUT only what differs).
//! 3. **Flip / restore** legacy streams the planner allows, recording every dataSource's previous
//!    JSON before changing it ([`flip`]).
//! 4. **Act**: per machine, the first write the planner allows (identity, AMA, DCR association,
//!    dissociation, legacy removal), up to `maxParallel` at once and within the client's ARM
//!    budget. Every write is journaled before it is sent; a long-running operation's handle is
//!    journaled before anything waits on it, and a restarted engine polls it instead of sending
//!    the write again ([`exec`]). Failures retry with backoff, then the machine is `Failed`
//!    (which spends the plan's failure budget; over budget the planner starts nothing new).
//! 5. **Verify** in bulk: one AMA Heartbeat query and one catalog proof query per data source
//!    type cover every machine waiting for verification; only verified sources count as moved.
//! 6. **Gates**: a wave is finished when every member is done, failed, blocked or waiting for a
//!    flip; the planner then applies soak, success ratio, parity (measured here against the test
//!    workspace) and manual approval before it admits the next wave.
//! 7. **Persist** every changed MachineMigration and the plan, then sleep one tick. The run ends
//!    `Completed` when every machine is final, `Stalled` when nothing can move without a person,
//!    or `Stopped` when the caller stops it (restart on the same state to continue).
//!
//! The forward loop drives the planner's `MachineAction`s directly; the per-machine step function
//! (`crate::machine`) drives rollbacks of a wave or a whole plan ([`rollback`]).

pub mod discover;
pub mod exec;
pub mod failure;
pub mod flip;
pub mod progress;
pub mod record;
pub mod rollback;
pub mod run;
pub mod simulate;
mod stall;
pub mod state;
pub mod status;
pub mod verify;

pub use discover::{Discovery, discover};
pub use failure::{Diagnosis, diagnose};
pub use rollback::{MachineRollback, RollbackEnd, RollbackScope};
pub use run::{
    Clock, Engine, EngineOptions, ProgressSink, RunEnd, Snapshot, SystemClock,
    TEST_WORKSPACE_ID_ANNOTATION,
};
pub use simulate::{
    ArmCounts, SimulateOptions, SimulationReport, StopPoint, default_plan, run_simulation,
};
pub use state::EngineState;

use crate::azure::AzureError;
use crate::local::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the plan's {field} {problem}")]
    Plan {
        field: &'static str,
        problem: String,
    },
    #[error("{what} failed: {source}")]
    Azure {
        what: &'static str,
        #[source]
        source: AzureError,
    },
    #[error("{what} could not be read: {problem}")]
    Discovery { what: &'static str, problem: String },
    #[error(transparent)]
    Store(StoreError),
    #[error("simulator: {0}")]
    Simulator(String),
    #[error("spec.scope ({scope}) selects none of the {inventory} machine(s) in the inventory")]
    NoMachinesInScope { inventory: usize, scope: String },
}

impl EngineError {
    pub fn azure(what: &'static str, source: AzureError) -> Self {
        Self::Azure { what, source }
    }
}

/// The plan's namespace (default `default`) and name (required).
pub(crate) fn plan_key(plan: &crate::api::MigrationPlan) -> Result<(String, String), EngineError> {
    let ns = plan
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| crate::local::DEFAULT_NAMESPACE.to_string());
    let name = plan.metadata.name.clone().ok_or(EngineError::Plan {
        field: "metadata.name",
        problem: "is required".into(),
    })?;
    Ok((ns, name))
}
