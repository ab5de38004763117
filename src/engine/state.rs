//! The engine's state access, behind a small trait so the same loop runs over the local SQLite
//! file (`local::StateStore`, implemented here) and, later, over the Kubernetes API.

use k8s_openapi::jiff::Timestamp;

use crate::api::plan::ChangedLegacySetting;
use crate::api::{MachineMigration, MigrationPlan};
use crate::azure::lro::OperationHandle;
use crate::local::{
    JournalEntry, LegacyChange, OperationOutcome, StateStore, StoreError, StoredEvent,
    resource_version,
};

/// What the engine reads and writes besides Azure. Every call is one atomic step.
pub trait EngineState: Send + Sync {
    fn load_plan(&self, namespace: &str, name: &str) -> Result<Option<MigrationPlan>, StoreError>;
    /// Create (no `resourceVersion`) or update (at its `resourceVersion`) a plan.
    fn save_plan(&self, plan: &MigrationPlan) -> Result<MigrationPlan, StoreError>;
    fn load_machines(
        &self,
        namespace: &str,
        plan: &str,
    ) -> Result<Vec<MachineMigration>, StoreError>;
    /// Create or update (optimistic concurrency on `resourceVersion`) a MachineMigration.
    fn save_machine(&self, machine: &MachineMigration) -> Result<MachineMigration, StoreError>;
    /// Save several machines; a result per machine, in order. The default saves them one after
    /// the other; a state over a network sends them concurrently.
    fn save_machines(
        &self,
        machines: &[&MachineMigration],
    ) -> Vec<Result<MachineMigration, StoreError>> {
        machines.iter().map(|m| self.save_machine(m)).collect()
    }
    /// Journal an ARM write before it is sent.
    fn begin_operation(
        &self,
        resource_id: &str,
        action: &str,
        at: Timestamp,
    ) -> Result<i64, StoreError>;
    /// Persist a long-running operation's handle before anything waits on it.
    fn set_operation_handle(&self, id: i64, handle: &OperationHandle) -> Result<(), StoreError>;
    /// Close a journal entry. A state may defer making the close durable until [`flush`]: an
    /// entry left open by a stop is only re-read from ARM on the next start, never sent again.
    ///
    /// [`flush`]: EngineState::flush
    fn finish_operation(
        &self,
        id: i64,
        outcome: &OperationOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Make deferred bookkeeping (closed journal entries) durable.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn in_flight_operations(&self) -> Result<Vec<JournalEntry>, StoreError>;
    /// Record the previous value of a workspace setting the plan changes (first one wins).
    fn record_legacy_change(
        &self,
        namespace: &str,
        plan: &str,
        setting: &ChangedLegacySetting,
    ) -> Result<bool, StoreError>;
    /// Unrestored changes of the plan.
    fn legacy_changes(&self, namespace: &str, plan: &str) -> Result<Vec<LegacyChange>, StoreError>;
    fn mark_legacy_restored(
        &self,
        namespace: &str,
        plan: &str,
        resource_id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    fn record_event(&self, event: &StoredEvent) -> Result<(), StoreError>;
}

impl EngineState for StateStore {
    fn load_plan(&self, namespace: &str, name: &str) -> Result<Option<MigrationPlan>, StoreError> {
        self.get(namespace, name)
    }

    fn save_plan(&self, plan: &MigrationPlan) -> Result<MigrationPlan, StoreError> {
        match resource_version(plan) {
            Some(v) => self.update(plan, v),
            None => self.create(plan),
        }
    }

    fn load_machines(
        &self,
        namespace: &str,
        plan: &str,
    ) -> Result<Vec<MachineMigration>, StoreError> {
        self.list_plan_machines(namespace, plan)
    }

    fn save_machine(&self, machine: &MachineMigration) -> Result<MachineMigration, StoreError> {
        match resource_version(machine) {
            Some(v) => self.update(machine, v),
            None => self.create(machine),
        }
    }

    fn begin_operation(
        &self,
        resource_id: &str,
        action: &str,
        at: Timestamp,
    ) -> Result<i64, StoreError> {
        self.transaction(|tx| tx.begin_operation(resource_id, action, None, at))
    }

    fn set_operation_handle(&self, id: i64, handle: &OperationHandle) -> Result<(), StoreError> {
        self.transaction(|tx| tx.set_operation_handle(id, handle))
    }

    fn finish_operation(
        &self,
        id: i64,
        outcome: &OperationOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| tx.finish_operation(id, outcome, at))
    }

    fn in_flight_operations(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.read(|s| s.in_flight_operations())
    }

    fn record_legacy_change(
        &self,
        namespace: &str,
        plan: &str,
        setting: &ChangedLegacySetting,
    ) -> Result<bool, StoreError> {
        self.transaction(|tx| tx.record_legacy_change(namespace, plan, setting))
    }

    fn legacy_changes(&self, namespace: &str, plan: &str) -> Result<Vec<LegacyChange>, StoreError> {
        self.read(|s| s.legacy_changes(namespace, plan, false))
    }

    fn mark_legacy_restored(
        &self,
        namespace: &str,
        plan: &str,
        resource_id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.transaction(|tx| tx.mark_legacy_restored(namespace, plan, resource_id, at))
    }

    fn record_event(&self, event: &StoredEvent) -> Result<(), StoreError> {
        self.transaction(|tx| tx.record_event(event))
    }
}
