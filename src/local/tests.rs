//! Unit tests of the store: objects, versions, transactions, journal, legacy settings, events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::api::machine::{ArmErrorStatus, MachineStep};
use crate::api::plan::ChangedLegacySetting;
use crate::api::{MachineMigration, MigrationPlan};
use crate::azure::lro::{LroMethod, OperationHandle, PollKind};
use crate::catalog::DataSourceType;

pub(crate) fn plan(name: &str) -> MigrationPlan {
    serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MigrationPlan",
        "metadata": {"name": name},
        "spec": {
            "workspace": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws",
            "location": "westeurope",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}],
            "rollout": {"waves": [{"name": "canary", "maxRisk": "Low", "count": 2}]}
        }
    }))
    .unwrap()
}

pub(crate) fn machine(name: &str, plan: &str) -> MachineMigration {
    serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MachineMigration",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "plan": plan,
            "machineId": format!("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"),
            "os": "Windows", "kind": "AzureVM", "wave": "canary", "risk": "Low",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}]
        }
    }))
    .unwrap()
}

fn handle(resource_id: &str) -> OperationHandle {
    OperationHandle {
        method: LroMethod::Put,
        poll_kind: PollKind::AzureAsyncOperation,
        poll_url: "https://management.azure.com/operations/op1?api-version=2024-11-01".into(),
        resource_url: format!("https://management.azure.com{resource_id}?api-version=2024-11-01"),
        resource_id: resource_id.into(),
        started_at_ms: 1_700_000_000_000,
        retry_after_ms: Some(1000),
    }
}

fn as_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn store_with_plan() -> StateStore {
    let store = StateStore::open_in_memory().unwrap();
    store.create(&plan("p1")).unwrap();
    store
}

#[test]
fn create_sets_version_generation_namespace_and_round_trips() {
    let store = store_with_plan();
    let created = store.create(&machine("vm-b", "p1")).unwrap();
    store.create(&machine("vm-a", "p1")).unwrap();
    assert_eq!(resource_version(&created), Some(1));
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.creation_timestamp.is_some());

    let plan: MigrationPlan = store.get("default", "p1").unwrap().unwrap();
    assert_eq!(plan.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(plan.spec.location, "westeurope");

    let got: MachineMigration = store.get("default", "vm-b").unwrap().unwrap();
    assert_eq!(as_json(&got), as_json(&created));
    assert!(
        store
            .get::<MachineMigration>("default", "absent")
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get::<MachineMigration>("other", "vm-b")
            .unwrap()
            .is_none()
    );

    let names: Vec<String> = store
        .list::<MachineMigration>(None)
        .unwrap()
        .into_iter()
        .map(|m| m.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["vm-a", "vm-b"]);
    assert_eq!(store.list_plan_machines("default", "p1").unwrap().len(), 2);
    assert!(
        store
            .list_plan_machines("default", "p2")
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list::<MachineMigration>(Some("other"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn create_twice_is_already_exists_naming_the_object() {
    let store = store_with_plan();
    let err = store.create(&plan("p1")).unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref name, .. } if name == "p1"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "MigrationPlan default/p1 already exists in :memory:"
    );
}

#[test]
fn machine_needs_its_plan() {
    let store = store_with_plan();
    let err = store.create(&machine("vm-1", "nope")).unwrap_err();
    assert!(
        matches!(err, StoreError::PlanNotFound { ref plan, ref name, .. } if plan == "nope" && name == "vm-1"),
        "{err}"
    );
    assert!(err.to_string().contains("store the plan first"));
    let mut unnamed = machine("x", "p1");
    unnamed.metadata.name = None;
    let err = store.create(&unnamed).unwrap_err();
    assert!(err.to_string().contains("metadata.name is empty"), "{err}");
}

#[test]
fn update_bumps_version_and_a_stale_version_conflicts() {
    let store = store_with_plan();
    let mut m = store.create(&machine("vm-1", "p1")).unwrap();
    m.status = Some(Default::default());
    m.status.as_mut().unwrap().step = Some(MachineStep::InstallAma);
    let v2 = store.update(&m, 1).unwrap();
    assert_eq!(resource_version(&v2), Some(2));
    // A status change leaves the generation alone; a spec change bumps it.
    assert_eq!(v2.metadata.generation, Some(1));
    let mut spec_change = v2.clone();
    spec_change.spec.may_proceed = true;
    let v3 = store.update(&spec_change, 2).unwrap();
    assert_eq!(resource_version(&v3), Some(3));
    assert_eq!(v3.metadata.generation, Some(2));
    assert_eq!(
        v3.metadata.creation_timestamp,
        v2.metadata.creation_timestamp
    );

    // A writer holding version 2 loses.
    let err = store.update(&v2, 2).unwrap_err();
    match &err {
        StoreError::Conflict {
            kind,
            namespace,
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(
                (kind.as_str(), namespace.as_str(), name.as_str()),
                ("MachineMigration", "default", "vm-1")
            );
            assert_eq!((*expected, *found), (2, 3));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().contains("MachineMigration default/vm-1"));
    let stored: MachineMigration = store.get("default", "vm-1").unwrap().unwrap();
    assert_eq!(as_json(&stored), as_json(&v3));

    let err = store.update(&machine("ghost", "p1"), 1).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[test]
fn a_transaction_commits_together_or_not_at_all() {
    let store = store_with_plan();
    let m = store.create(&machine("vm-1", "p1")).unwrap();
    let id = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1";

    // An error after both writes rolls both back.
    let result: Result<(), StoreError> = store.transaction(|tx| {
        let mut changed = m.clone();
        changed.status = Some(Default::default());
        changed.status.as_mut().unwrap().attempts = 1;
        tx.update(&changed, 1)?;
        tx.begin_operation(id, "InstallAma", Some(&handle(id)), ts(100))?;
        // Stale version: the second update in the same transaction conflicts.
        tx.update(&changed, 1)?;
        Ok(())
    });
    assert!(matches!(result, Err(StoreError::Conflict { .. })));
    let stored: MachineMigration = store.get("default", "vm-1").unwrap().unwrap();
    assert_eq!(resource_version(&stored), Some(1));
    assert!(stored.status.is_none());
    assert!(store.read(|s| s.operations()).unwrap().is_empty());

    // The caller's own error type works too, and Ok commits both writes.
    #[derive(Debug)]
    enum EngineError {
        Store(StoreError),
    }
    impl From<StoreError> for EngineError {
        fn from(e: StoreError) -> Self {
            Self::Store(e)
        }
    }
    let op = store
        .transaction(|tx| -> Result<i64, EngineError> {
            let mut changed = m.clone();
            changed.status = Some(Default::default());
            changed.status.as_mut().unwrap().attempts = 1;
            tx.update(&changed, 1)?;
            Ok(tx.begin_operation(id, "InstallAma", Some(&handle(id)), ts(100))?)
        })
        .unwrap();
    let stored: MachineMigration = store.get("default", "vm-1").unwrap().unwrap();
    assert_eq!(resource_version(&stored), Some(2));
    assert_eq!(
        store.read(|s| s.operation(op)).unwrap().handle,
        Some(handle(id))
    );
    let stale = store.transaction(|tx| -> Result<(), EngineError> {
        tx.update(&m, 1)?;
        Ok(())
    });
    assert!(matches!(
        stale,
        Err(EngineError::Store(StoreError::Conflict { found: 2, .. }))
    ));
}

#[test]
fn a_panic_inside_a_transaction_rolls_back_and_the_store_stays_usable() {
    let store = store_with_plan();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _: Result<(), StoreError> = store.transaction(|tx| {
            tx.create(&machine("vm-1", "p1"))?;
            panic!("engine bug");
        });
    }));
    assert!(caught.is_err());
    assert!(
        store
            .get::<MachineMigration>("default", "vm-1")
            .unwrap()
            .is_none()
    );
    store.create(&machine("vm-1", "p1")).unwrap();
}

#[test]
fn deleting_a_plan_deletes_its_machines_and_checks_the_version() {
    let store = store_with_plan();
    store.create(&machine("vm-1", "p1")).unwrap();
    let err = store
        .delete::<MigrationPlan>("default", "p1", Some(7))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 7,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
    store
        .delete::<MigrationPlan>("default", "p1", Some(1))
        .unwrap();
    assert!(store.list::<MachineMigration>(None).unwrap().is_empty());
    let err = store
        .delete::<MigrationPlan>("default", "p1", None)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
}

#[test]
fn journal_keeps_one_operation_in_flight_per_resource_and_action() {
    let store = store_with_plan();
    let id = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1";
    let op = store
        .transaction(|tx| tx.begin_operation(id, "InstallAma", None, ts(100)))
        .unwrap();
    let err = store
        .transaction(|tx| tx.begin_operation(id, "InstallAma", None, ts(101)))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::OperationInFlight { id: existing, .. } if existing == op),
        "{err}"
    );
    // Another action on the same machine is independent.
    store
        .transaction(|tx| tx.begin_operation(id, "EnableIdentity", None, ts(101)))
        .unwrap();

    store
        .transaction(|tx| tx.set_operation_handle(op, &handle(id)))
        .unwrap();
    let resumable = store
        .read(|s| s.in_flight_operation(id, "InstallAma"))
        .unwrap()
        .unwrap();
    assert_eq!(resumable.id, op);
    assert_eq!(resumable.handle, Some(handle(id)));
    assert_eq!(store.read(|s| s.in_flight_operations()).unwrap().len(), 2);

    let failed = OperationOutcome::Failed {
        code: "VMExtensionProvisioningError".into(),
        message: "extension failed".into(),
    };
    store
        .transaction(|tx| tx.finish_operation(op, &failed, ts(160)))
        .unwrap();
    let err = store
        .transaction(|tx| tx.finish_operation(op, &OperationOutcome::Succeeded, ts(170)))
        .unwrap_err();
    assert!(matches!(err, StoreError::OperationFinished { .. }), "{err}");
    let entry = store.read(|s| s.operation(op)).unwrap();
    assert_eq!(entry.outcome, Some(failed));
    assert_eq!(entry.started_at, ts(100));
    assert_eq!(entry.finished_at, Some(ts(160)));
    assert!(
        store
            .read(|s| s.in_flight_operation(id, "InstallAma"))
            .unwrap()
            .is_none()
    );
    // Once finished, the action may run again (a retry), and the journal keeps both.
    store
        .transaction(|tx| tx.begin_operation(id, "InstallAma", None, ts(200)))
        .unwrap();
    assert_eq!(store.read(|s| s.operations_for(id)).unwrap().len(), 3);
    let err = store.read(|s| s.operation(999)).unwrap_err();
    assert!(matches!(err, StoreError::OperationNotFound { id: 999, .. }));
}

#[test]
fn legacy_changes_keep_the_value_from_before_the_migration() {
    let store = store_with_plan();
    let ds = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/dataSources/SecurityEventCollectionConfiguration";
    let change = |previous: &str, at: i64| ChangedLegacySetting {
        resource_id: ds.into(),
        kind: "SecurityEventCollectionConfiguration".into(),
        data_source_type: DataSourceType::WindowsSecurityEvents,
        previous_properties: previous.into(),
        changed_at: Time(ts(at)),
    };
    let original = r#"{"tier":"All"}"#;
    assert!(
        store
            .transaction(|tx| tx.record_legacy_change("default", "p1", &change(original, 10)))
            .unwrap()
    );
    // A resumed engine records again with the already-flipped value: the original is kept.
    assert!(
        !store
            .transaction(|tx| tx.record_legacy_change(
                "default",
                "p1",
                &change(r#"{"tier":"None"}"#, 20)
            ))
            .unwrap()
    );
    let open = store
        .read(|s| s.legacy_changes("default", "p1", false))
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].setting.previous_properties, original);
    assert_eq!(open[0].setting.changed_at, Time(ts(10)));
    assert_eq!(
        open[0].setting.data_source_type,
        DataSourceType::WindowsSecurityEvents
    );

    assert!(
        store
            .transaction(|tx| tx.mark_legacy_restored("default", "p1", ds, ts(30)))
            .unwrap()
    );
    assert!(
        !store
            .transaction(|tx| tx.mark_legacy_restored("default", "p1", ds, ts(31)))
            .unwrap()
    );
    assert!(
        store
            .read(|s| s.legacy_changes("default", "p1", false))
            .unwrap()
            .is_empty()
    );
    let all = store
        .read(|s| s.legacy_changes("default", "p1", true))
        .unwrap();
    assert_eq!(all[0].restored_at, Some(ts(30)));

    let err = store
        .transaction(|tx| tx.record_legacy_change("default", "p1", &change("{not json", 40)))
        .unwrap_err();
    assert!(
        err.to_string().contains("previousProperties is not JSON"),
        "{err}"
    );
}

#[test]
fn events_are_newest_first_filterable_and_bounded() {
    let store = store_with_plan();
    let m = store.create(&machine("vm-1", "p1")).unwrap();
    let p: MigrationPlan = store.get("default", "p1").unwrap().unwrap();
    store
        .transaction(|tx| {
            tx.record_event(&StoredEvent {
                object: ObjectKey::of(&p),
                event_type: EventType::Normal,
                reason: "WaveInProgress".into(),
                message: "wave canary started".into(),
                at: ts(1),
            })?;
            tx.record_event(&StoredEvent {
                object: ObjectKey::of(&m),
                event_type: EventType::Warning,
                reason: "ArmError".into(),
                message: "é".repeat(2000),
                at: ts(2),
            })
        })
        .unwrap();
    let all = store.read(|s| s.events(None, 10)).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].reason, "ArmError");
    assert!(all[0].message.len() <= 1024);
    assert!(all[0].message.chars().all(|c| c == 'é'));
    let of_plan = store
        .read(|s| s.events(Some(&ObjectKey::of(&p)), 10))
        .unwrap();
    assert_eq!(of_plan.len(), 1);
    assert_eq!(of_plan[0].object.kind, "MigrationPlan");
    assert_eq!(store.read(|s| s.events(None, 1)).unwrap().len(), 1);
}

#[test]
fn failed_status_round_trips_through_the_store() {
    let store = store_with_plan();
    let mut m = store.create(&machine("vm-1", "p1")).unwrap();
    let status = m.status.get_or_insert_with(Default::default);
    status.step = Some(MachineStep::Failed);
    status.last_error = Some(ArmErrorStatus {
        code: "OperationNotAllowed".into(),
        message: "quota".into(),
    });
    let updated = store.update(&m, 1).unwrap();
    let got: MachineMigration = store.get("default", "vm-1").unwrap().unwrap();
    assert_eq!(as_json(&got), as_json(&updated));
    assert_eq!(
        got.status.unwrap().last_error.unwrap().code,
        "OperationNotAllowed"
    );
}

#[test]
fn modify_reads_changes_and_writes_in_one_step() {
    let store = store_with_plan();
    store.create(&machine("vm-1", "p1")).unwrap();
    let updated = store
        .modify::<MachineMigration>("default", "vm-1", |m| {
            m.status.get_or_insert_with(Default::default).step = Some(MachineStep::Verify);
        })
        .unwrap();
    assert_eq!(resource_version(&updated), Some(2));
    let got: MachineMigration = store.get("default", "vm-1").unwrap().unwrap();
    assert_eq!(got.status.unwrap().step, Some(MachineStep::Verify));
    let err = store
        .modify::<MachineMigration>("default", "ghost", |_| {})
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}
