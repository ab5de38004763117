//! The state file on disk: its identity and settings, refusal of foreign or newer files (without
//! touching them), and optimistic concurrency between two connections (as two processes would be).

use std::path::PathBuf;

use ama_migrator::api::{MachineMigration, MigrationPlan};
use ama_migrator::local::{
    APPLICATION_ID, SCHEMA_VERSION, StateStore, StoreError, resource_version,
};
use serde_json::json;

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ama-local-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn plan() -> MigrationPlan {
    serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MigrationPlan",
        "metadata": {"name": "p1", "namespace": "migrations"},
        "spec": {
            "workspace": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws",
            "location": "westeurope",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}],
            "rollout": {"waves": [{"name": "all", "maxRisk": "High"}]}
        }
    }))
    .unwrap()
}

fn machine() -> MachineMigration {
    serde_json::from_value(json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MachineMigration",
        "metadata": {"name": "vm-1", "namespace": "migrations"},
        "spec": {
            "plan": "p1",
            "machineId": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1",
            "os": "Linux", "kind": "AzureVM", "wave": "all", "risk": "Low"
        }
    }))
    .unwrap()
}

#[test]
fn a_new_file_is_a_wal_state_file_that_keeps_its_objects() {
    let dir = temp_dir("new");
    let path = dir.join("state.db");
    {
        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        store.create(&plan()).unwrap();
        store.create(&machine()).unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // Stored as the Kubernetes JSON of the custom resource.
    let raw: String = conn
        .query_row("SELECT object FROM machine_migrations", [], |r| r.get(0))
        .unwrap();
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["apiVersion"], "amamigrator.io/v1alpha1");
    assert_eq!(raw["kind"], "MachineMigration");
    assert_eq!(raw["metadata"]["resourceVersion"], "1");
    assert_eq!(raw["spec"]["plan"], "p1");
    drop(conn);

    let store = StateStore::open_existing(&path).unwrap();
    let m: MachineMigration = store.get("migrations", "vm-1").unwrap().unwrap();
    assert_eq!(resource_version(&m), Some(1));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let dir = temp_dir("text");
    let path = dir.join("plan.yaml");
    let content = "apiVersion: amamigrator.io/v1alpha1\nkind: MigrationPlan\n".repeat(10);
    std::fs::write(&path, &content).unwrap();
    let err = StateStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStateFile { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a SQLite database"), "{message}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let dir = temp_dir("foreign");
    let path = dir.join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
            .unwrap();
    }
    let err = StateStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStateFile { .. }), "{err}");
    assert!(err.to_string().contains("another application"), "{err}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "delete",
        "the foreign file's journal mode was changed"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_from_a_newer_schema_is_refused() {
    let dir = temp_dir("newer");
    let path = dir.join("state.db");
    StateStore::open(&path).unwrap().create(&plan()).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = StateStore::open(&path).unwrap_err();
    match &err {
        StoreError::NewerSchema {
            found, supported, ..
        } => assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        other => panic!("expected NewerSchema, got {other}"),
    }
    assert!(err.to_string().contains("use a newer ama-migrator"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_file_or_directory_is_named() {
    let dir = temp_dir("missing");
    let path = dir.join("nope.db");
    let err = StateStore::open_existing(&path).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("nope.db"));
    assert!(!path.exists(), "open_existing created the file");

    let in_missing_dir = dir.join("no-such-dir").join("state.db");
    let err = StateStore::open(&in_missing_dir).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn two_connections_never_lose_an_update() {
    let dir = temp_dir("concurrent");
    let path = dir.join("state.db");
    let first = StateStore::open(&path).unwrap();
    first.create(&plan()).unwrap();
    first.create(&machine()).unwrap();
    let second = StateStore::open(&path).unwrap();

    // A stale writer on the other connection conflicts.
    let seen: MachineMigration = first.get("migrations", "vm-1").unwrap().unwrap();
    second.update(&seen, 1).unwrap();
    let err = first.update(&seen, 1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err}"
    );

    // Read-modify-write with retry on conflict from two threads: every increment lands.
    const PER_THREAD: u32 = 40;
    std::thread::scope(|scope| {
        for store in [&first, &second] {
            scope.spawn(move || {
                let mut conflicts = 0;
                for _ in 0..PER_THREAD {
                    for _attempt in 0..1000 {
                        let mut m: MachineMigration =
                            store.get("migrations", "vm-1").unwrap().unwrap();
                        let version = resource_version(&m).unwrap();
                        m.status.get_or_insert_with(Default::default).attempts += 1;
                        match store.update(&m, version) {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            });
        }
    });
    let m: MachineMigration = first.get("migrations", "vm-1").unwrap().unwrap();
    assert_eq!(m.status.as_ref().unwrap().attempts, 2 * PER_THREAD);
    assert_eq!(resource_version(&m), Some(2 + 2 * u64::from(PER_THREAD)));
    std::fs::remove_dir_all(&dir).ok();
}
