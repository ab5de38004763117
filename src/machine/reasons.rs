//! Machine-specific condition types and reasons (stable API strings) on top of
//! `api::conditions`, and the marker conditions that remember what the migrator itself added
//! (the status has no other place for it, and rollback must remove only that).

pub use crate::api::conditions::reasons::{
    ARM_ERROR, DEALLOCATED, DISCONNECTED, HELD, MISSING_IDENTITY, RETRYING, STEP_RUNNING,
    WAITING_FOR_FLIP,
};

/// Marker: `True` once the migrator created the AMA extension (rollback removes it then only).
pub const TYPE_AMA_INSTALLED_BY_MIGRATOR: &str = "AmaInstalledByMigrator";
/// Marker: `True` once the migrator removed the legacy agent (rollback cannot reinstall it).
pub const TYPE_LEGACY_REMOVED_BY_MIGRATOR: &str = "LegacyRemovedByMigrator";
/// Informational: the legacy agent stays on this machine, and why.
pub const TYPE_LEGACY_RETAINED: &str = "LegacyAgentRetained";

pub const PENDING: &str = "Pending";
pub const NOT_ADMITTED: &str = "NotAdmitted";
pub const MACHINE_NOT_FOUND: &str = "MachineNotFound";
pub const ARC_MISSING_IDENTITY: &str = "ArcMissingIdentity";
pub const VERIFY_TIMEOUT: &str = "VerificationTimedOut";
pub const OPERATION_TIMEOUT: &str = "OperationTimedOut";
pub const MARKED_FOR_DELETION: &str = "ExtensionMarkedForDeletion";
pub const COMPLETED: &str = "MigrationCompleted";
pub const LEGACY_STILL_NEEDED: &str = "LegacyAgentStillNeeded";
pub const LEGACY_IN_GUEST: &str = "LegacyAgentInGuestOnly";
pub const LEGACY_UNINSTALL_NEVER: &str = "LegacyUninstallDisabled";
pub const LEGACY_REMOVED: &str = "LegacyAgentRemoved";
pub const AMA_INSTALLED: &str = "AmaInstalled";
pub const ROLLING_BACK: &str = "RollingBack";
pub const ROLLED_BACK: &str = "RolledBack";
pub const ROLLBACK_WAITING_FOR_LEGACY: &str = "RollbackWaitingForLegacyStream";
pub const ROLLBACK_BLOCKED_NO_LEGACY: &str = "RollbackWouldLeaveNoSender";
pub const RETRY_REQUESTED: &str = "RetryRequested";
pub const STEP_CHANGED: &str = "StepChanged";
pub const FAILED: &str = "MigrationFailed";
pub const BLOCKED: &str = "MigrationBlocked";
pub const ROLLBACK_FAILED: &str = "RollbackFailed";
