//! The embedded shell's state: one SQLite file holding the same `MigrationPlan` and
//! `MachineMigration` objects the Kubernetes shell keeps as custom resources (as their Kubernetes
//! JSON), with a version per object for optimistic concurrency, transactions, the ARM operation
//! journal, the legacy settings a plan changed, and events — safe against a crash at any point.
//!
//! The tracker summary (`tracker`) is a pure function over `MachineMigration` objects, shared by
//! `status` and `simulate`.

mod error;
mod journal;
mod schema;
mod store;
pub mod tracker;
mod writer;

pub use error::StoreError;
pub use journal::{
    EventType, JournalEntry, LegacyChange, ObjectKey, OperationOutcome, StoredEvent,
};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use store::{DEFAULT_NAMESPACE, Snapshot, StateStore, StoredObject, Tx, resource_version};
pub use writer::{WriterLock, lock_path};

#[cfg(test)]
mod tests;
