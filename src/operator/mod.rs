//! The Kubernetes shell (`ama-migrator run`): kube-runtime controllers for `MigrationPlan` and
//! `MachineMigration` over the same engine, planner and step function as the local shell.
//!
//! Named `operator` rather than `kube` so `crate::kube` never shadows the kube crate.
//!
//! * [`controller`]: the plan controller (finalizer, one engine task per plan, pause/approve,
//!   deletion) and the machine controller (hold/retry/skip annotations → events and a restart
//!   of the plan's engine, which honours them when it loads its machines).
//! * [`credentials`]: a plan's own Azure identity (a Secret or a client ID of its namespace).
//! * [`state`]: the engine's state over the API (SSA children, status subresource, events).
//! * [`rbac`]: every (apiGroup, resource, verbs) the code uses — the chart's RBAC is tested
//!   against it.
//! * [`leader`]: Lease-based leader election; the controllers run only on the leader.
//! * [`serve`]: `/metrics`, `/healthz`, `/readyz`.
//! * [`fake`]: an in-process API server for tests and the memory benchmark.

pub mod controller;
pub mod credentials;
pub mod events;
pub mod fake;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod serve;
pub mod state;

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ama-migrator";
/// The finalizer on every MigrationPlan the operator has seen.
pub const FINALIZER: &str = "amamigrator.io/cleanup";
/// The `reportingController` of the operator's events.
pub const CONTROLLER_NAME: &str = "ama-migrator";

/// Annotations people set on a `MigrationPlan`.
pub mod plan_annotations {
    /// `"true"`: stop starting new work (like `spec.paused`, without editing the GitOps-owned spec).
    pub const PAUSE: &str = "amamigrator.io/pause";
    /// Comma-separated wave names a person approved (their manual gate passes).
    pub const APPROVE_WAVE: &str = "amamigrator.io/approve-wave";
    /// What deleting the plan does: `Retain` (default: Azure is left as it is) or `Rollback`
    /// (before the finalizer goes: the workspace legacy settings the plan changed are restored,
    /// then the migrator's DCR associations and AMA installs removed, then the plan's DCRs;
    /// machines whose legacy agent the migrator removed keep their AMA path, with a Warning).
    pub const DELETION_POLICY: &str = "amamigrator.io/deletion-policy";
}

/// `"true"` on a MachineMigration: leave the machine out of the migration (held for good, never
/// written to). A skipped machine still sending a stream through the legacy agent holds that
/// stream's workspace flip, as any uncovered sender does, until the plan's
/// `spec.legacy.flip.acceptedUncoveredSenders` names it.
pub const SKIP_ANNOTATION: &str = "amamigrator.io/skip";
/// The last `amamigrator.io/retry` value the operator acted on (owned by the operator).
pub const RETRY_OBSERVED_ANNOTATION: &str = "amamigrator.io/retry-observed";
