//! Opening a state file: connection settings, the file's identity (`application_id`) and the
//! schema migrations tracked by `user_version`, each applied in its own transaction.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::error::StoreError;

/// `PRAGMA application_id` of an ama-migrator state file ("AMAM"), so another SQLite file is refused.
pub const APPLICATION_ID: i32 = 0x414D_414D;

/// How long a writer waits for another process holding the file before failing with "busy".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations; `user_version` is the number applied. Append only, never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 1: objects, ARM operation journal, legacy settings changed, events.
    r#"
    CREATE TABLE plans (
        namespace   TEXT NOT NULL,
        name        TEXT NOT NULL,
        object      TEXT NOT NULL CHECK (json_valid(object)),
        version     INTEGER NOT NULL CHECK (version >= 1),
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    ) WITHOUT ROWID;

    CREATE TABLE machine_migrations (
        namespace   TEXT NOT NULL,
        name        TEXT NOT NULL,
        plan        TEXT NOT NULL,
        object      TEXT NOT NULL CHECK (json_valid(object)),
        version     INTEGER NOT NULL CHECK (version >= 1),
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (namespace, name),
        FOREIGN KEY (namespace, plan) REFERENCES plans (namespace, name) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX machine_migrations_by_plan ON machine_migrations (namespace, plan);

    CREATE TABLE arm_operations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        resource_id TEXT NOT NULL,
        action      TEXT NOT NULL,
        handle      TEXT CHECK (handle IS NULL OR json_valid(handle)),
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        outcome     TEXT CHECK (outcome IS NULL OR json_valid(outcome)),
        CHECK ((finished_at IS NULL) = (outcome IS NULL))
    );
    CREATE UNIQUE INDEX arm_operations_one_in_flight
        ON arm_operations (resource_id, action) WHERE finished_at IS NULL;
    CREATE INDEX arm_operations_by_resource ON arm_operations (resource_id);

    CREATE TABLE legacy_settings_changed (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        plan_namespace      TEXT NOT NULL,
        plan_name           TEXT NOT NULL,
        resource_id         TEXT NOT NULL,
        kind                TEXT NOT NULL,
        data_source_type    TEXT NOT NULL,
        previous_properties TEXT NOT NULL CHECK (json_valid(previous_properties)),
        changed_at          TEXT NOT NULL,
        restored_at         TEXT
    );
    CREATE UNIQUE INDEX legacy_settings_one_open_change
        ON legacy_settings_changed (plan_namespace, plan_name, resource_id) WHERE restored_at IS NULL;

    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,
        namespace   TEXT NOT NULL,
        name        TEXT NOT NULL,
        type        TEXT NOT NULL,
        reason      TEXT NOT NULL,
        message     TEXT NOT NULL,
        at          TEXT NOT NULL
    );
    CREATE INDEX events_by_object ON events (kind, namespace, name);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Open (creating if absent) and migrate the state file at `path`.
pub fn open_file(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    prepare(conn, path, true)
}

/// A private in-memory store (tests, dry runs).
pub fn open_memory(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    prepare(conn, path, false)
}

fn prepare(mut conn: Connection, path: &Path, file: bool) -> Result<Connection, StoreError> {
    let sql_err =
        |operation: &'static str| move |source: rusqlite::Error| classify(path, operation, source);
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_err("setting the busy timeout"))?;
    // The first read of the header tells a non-SQLite file apart.
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sql_err("reading the file header"))?;
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql_err("reading the schema version"))?;
    if application_id != APPLICATION_ID {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(sql_err("reading the schema"))?;
        if application_id != 0 || tables != 0 || user_version != 0 {
            return Err(StoreError::NotAStateFile {
                path: path.to_path_buf(),
                reason: format!(
                    "a SQLite database of another application (application_id {application_id:#x}, {tables} schema objects)"
                ),
            });
        }
    }
    if user_version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: user_version,
            supported: SCHEMA_VERSION,
        });
    }
    if file {
        // WAL: readers never block the writer; a crash leaves either the old or the new commit.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql_err("enabling the write-ahead log"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotAStateFile {
                path: path.to_path_buf(),
                reason: format!("the file refuses write-ahead logging (journal mode {mode})"),
            });
        }
    }
    // FULL: a commit that returned is on disk, so a write the engine reported done stays done.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err("setting synchronous=FULL"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql_err("enabling foreign keys"))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(user_version as usize) {
        let target = index as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(sql_err("starting a schema migration"))?;
        // Another process may have migrated while we waited for the lock.
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql_err("reading the schema version"))?;
        if current >= target {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(sql_err("applying a schema migration"))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql_err("writing the file identity"))?;
        tx.pragma_update(None, "user_version", target)
            .map_err(sql_err("writing the schema version"))?;
        tx.commit()
            .map_err(sql_err("committing a schema migration"))?;
    }
    Ok(conn)
}

/// Map a SQLite error, recognising "this is not a database" as such.
pub fn classify(path: &Path, operation: &'static str, source: rusqlite::Error) -> StoreError {
    if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        return StoreError::NotAStateFile {
            path: path.to_path_buf(),
            reason: "not a SQLite database".to_string(),
        };
    }
    StoreError::Sqlite {
        path: path.to_path_buf(),
        operation,
        source,
    }
}
