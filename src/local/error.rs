//! Typed errors of the state store: each names the state file and, where one is involved, the
//! object, so a person knows which file and which record to look at.

use std::path::PathBuf;

/// Every way the state store can fail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "no state file at {path}; `simulate --state` or `migrate --state` creates one (check the path)"
    )]
    Missing { path: PathBuf },
    #[error(
        "{path} is not an ama-migrator state file ({reason}); pass the file `simulate` or `migrate` created with --state, or a new path"
    )]
    NotAStateFile { path: PathBuf, reason: String },
    #[error(
        "state file {path} has schema version {found}, newer than this ama-migrator supports ({supported}); use a newer ama-migrator"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{kind} {namespace}/{name} already exists in {path}")]
    AlreadyExists {
        path: PathBuf,
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} not found in {path}")]
    NotFound {
        path: PathBuf,
        kind: String,
        namespace: String,
        name: String,
    },
    #[error(
        "conflict on {kind} {namespace}/{name} in {path}: expected version {expected}, stored version is {found}; read the object again and retry"
    )]
    Conflict {
        path: PathBuf,
        kind: String,
        namespace: String,
        name: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "MachineMigration {namespace}/{name} belongs to MigrationPlan {namespace}/{plan}, which is not in {path}; store the plan first"
    )]
    PlanNotFound {
        path: PathBuf,
        namespace: String,
        name: String,
        plan: String,
    },
    #[error("{kind} {namespace}/{name} cannot be stored in {path}: {reason}")]
    Invalid {
        path: PathBuf,
        kind: String,
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("stored {what} in {path} does not parse (the file was edited or is damaged): {source}")]
    Corrupt {
        path: PathBuf,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "an ARM operation {action} on {resource_id} is already in flight (journal entry {id}) in {path}; resume it instead of starting another"
    )]
    OperationInFlight {
        path: PathBuf,
        resource_id: String,
        action: String,
        id: i64,
    },
    #[error("ARM operation journal entry {id} not found in {path}")]
    OperationNotFound { path: PathBuf, id: i64 },
    #[error(
        "ARM operation journal entry {id} ({action} on {resource_id}) in {path} is already finished"
    )]
    OperationFinished {
        path: PathBuf,
        id: i64,
        action: String,
        resource_id: String,
    },
    #[error(
        "state file {path} is in use by {holder}; two runs on one state file would send the same Azure writes twice: wait for that run to end, stop it (Ctrl-C lets it finish its pass), or pass another --state file"
    )]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock {path} (one writer per state file): {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}: {operation} failed: {source}")]
    Sqlite {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// A short, stable label (for metrics and error policies).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Open { .. } => "open",
            Self::Missing { .. } => "missing",
            Self::NotAStateFile { .. } => "not_a_state_file",
            Self::NewerSchema { .. } => "newer_schema",
            Self::AlreadyExists { .. } => "already_exists",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::PlanNotFound { .. } => "plan_not_found",
            Self::Invalid { .. } => "invalid",
            Self::Corrupt { .. } => "corrupt",
            Self::OperationInFlight { .. } => "operation_in_flight",
            Self::OperationNotFound { .. } => "operation_not_found",
            Self::OperationFinished { .. } => "operation_finished",
            Self::InUse { .. } => "in_use",
            Self::Lock { .. } => "lock",
            Self::Sqlite { .. } => "sqlite",
        }
    }

    /// Whether a retry after re-reading may succeed (optimistic-concurrency conflicts, a busy file).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict { .. } => true,
            Self::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}
