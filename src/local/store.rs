//! `StateStore`: the SQLite file and the object operations (create, get, list, update with an
//! expected version, delete), run inside closure-scoped transactions so related writes commit
//! together or not at all.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::StoreError;
use super::schema::{self, classify};
use crate::api::{MachineMigration, MigrationPlan};

/// Namespace given to objects stored without one (the local shell has no API server to default it).
pub const DEFAULT_NAMESPACE: &str = "default";

/// A custom resource the store keeps: `MigrationPlan` or `MachineMigration`.
pub trait StoredObject:
    Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send
{
    /// The table holding this kind.
    #[doc(hidden)]
    const TABLE: &'static str;
    /// The owning plan's name (same namespace), for kinds that have one.
    fn owning_plan(&self) -> Option<&str>;
}

impl StoredObject for MigrationPlan {
    const TABLE: &'static str = "plans";
    fn owning_plan(&self) -> Option<&str> {
        None
    }
}

impl StoredObject for MachineMigration {
    const TABLE: &'static str = "machine_migrations";
    fn owning_plan(&self) -> Option<&str> {
        Some(&self.spec.plan)
    }
}

/// The version the store gave an object (its `metadata.resourceVersion`), if it has one.
pub fn resource_version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

/// One state file. `Send + Sync`: share it behind an `Arc`; each call takes the file's lock for the
/// length of one transaction, so keep closures short and never call the store from inside one.
pub struct StateStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Held by a store opened for writing (`open_for_writing`), for as long as it lives.
    _writer: Option<super::writer::WriterLock>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

impl StateStore {
    /// Open the state file at `path`, creating it if absent and migrating an older schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = schema::open_file(&path)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            _writer: None,
        })
    }

    /// Open the state file at `path` as its one writer (`migrate`, `rollback`, `simulate`): refused
    /// while another process holds it ([`StoreError::InUse`], naming that process), before the
    /// file is read.
    pub fn open_for_writing(path: impl AsRef<Path>, command: &str) -> Result<Self, StoreError> {
        let writer = super::writer::WriterLock::acquire(path.as_ref(), command)?;
        let mut store = Self::open(path)?;
        store._writer = Some(writer);
        Ok(store)
    }

    /// Open a state file that must already exist (for readers such as `status`).
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::open(path)
    }

    /// A private store in memory (tests, dry runs); gone when dropped.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = schema::open_memory(&path)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            _writer: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a closure dropped (rolled back) its transaction; the connection is fine.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `f` in one write transaction: it commits if `f` returns `Ok`, and rolls back entirely if
    /// `f` returns `Err` (or panics). The file's write lock is taken up front.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| E::from(classify(&self.path, "starting a transaction", e)))?;
        let value = f(&Tx {
            read: Snapshot {
                conn: &tx,
                path: &self.path,
            },
        })?;
        tx.commit()
            .map_err(|e| E::from(classify(&self.path, "committing a transaction", e)))?;
        Ok(value)
    }

    /// Run `f` over one consistent read-only snapshot of the file.
    pub fn read<T, E>(&self, f: impl FnOnce(&Snapshot<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| E::from(classify(&self.path, "starting a read", e)))?;
        let value = f(&Snapshot {
            conn: &tx,
            path: &self.path,
        })?;
        // Nothing to keep: dropping the transaction ends the snapshot.
        drop(tx);
        Ok(value)
    }

    /// Store a new object at version 1. Fails with `AlreadyExists` if the name is taken.
    pub fn create<K: StoredObject>(&self, obj: &K) -> Result<K, StoreError> {
        self.transaction(|tx| tx.create(obj))
    }

    /// Replace an object if its stored version is still `expected_version` (else `Conflict`).
    pub fn update<K: StoredObject>(&self, obj: &K, expected_version: u64) -> Result<K, StoreError> {
        self.transaction(|tx| tx.update(obj, expected_version))
    }

    /// Read-modify-write one object in its own transaction (see `Tx::modify`).
    pub fn modify<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut K),
    ) -> Result<K, StoreError> {
        self.transaction(|tx| tx.modify(namespace, name, change))
    }

    /// Delete an object (a plan takes its MachineMigrations with it), checking the version if given.
    pub fn delete<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| tx.delete::<K>(namespace, name, expected_version))
    }

    pub fn get<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        self.read(|s| s.get(namespace, name))
    }

    /// Every object of kind `K`, in `namespace` or in all namespaces, ordered by namespace and name.
    pub fn list<K: StoredObject>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        self.read(|s| s.list(namespace))
    }

    /// The MachineMigrations of one plan, ordered by name.
    pub fn list_plan_machines(
        &self,
        namespace: &str,
        plan: &str,
    ) -> Result<Vec<MachineMigration>, StoreError> {
        self.read(|s| s.list_plan_machines(namespace, plan))
    }
}

/// Read access inside a transaction or snapshot.
pub struct Snapshot<'a> {
    pub(super) conn: &'a Connection,
    pub(super) path: &'a Path,
}

/// Read and write access inside `StateStore::transaction`.
pub struct Tx<'a> {
    read: Snapshot<'a>,
}

impl<'a> Deref for Tx<'a> {
    type Target = Snapshot<'a>;
    fn deref(&self) -> &Snapshot<'a> {
        &self.read
    }
}

pub(super) fn now_text() -> String {
    Timestamp::now().to_string()
}

/// Versions are stored as SQLite integers, checked `>= 1` by the schema.
fn to_version(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

fn kind_of<K: StoredObject>() -> String {
    K::kind(&()).into_owned()
}

impl Snapshot<'_> {
    pub(super) fn sql(&self, operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
        let path = self.path.to_path_buf();
        move |e| classify(&path, operation, e)
    }

    pub fn path(&self) -> &Path {
        self.path
    }

    pub fn get<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        let row: Option<(i64, String)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT version, object FROM {} WHERE namespace = ?1 AND name = ?2",
                K::TABLE
            ))
            .and_then(|mut st| {
                st.query_row(params![namespace, name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(self.sql("reading an object"))?;
        row.map(|(version, text)| self.decode::<K>(namespace, name, to_version(version), &text))
            .transpose()
    }

    /// Like `get`, but a missing object is a `NotFound` error.
    pub fn get_existing<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<K, StoreError> {
        self.get(namespace, name)?
            .ok_or_else(|| StoreError::NotFound {
                path: self.path.to_path_buf(),
                kind: kind_of::<K>(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
    }

    pub fn list<K: StoredObject>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        let sql = format!(
            "SELECT namespace, name, version, object FROM {} WHERE ?1 IS NULL OR namespace = ?1 ORDER BY namespace, name",
            K::TABLE
        );
        self.query_objects(&sql, params![namespace])
    }

    pub fn list_plan_machines(
        &self,
        namespace: &str,
        plan: &str,
    ) -> Result<Vec<MachineMigration>, StoreError> {
        self.query_objects(
            "SELECT namespace, name, version, object FROM machine_migrations WHERE namespace = ?1 AND plan = ?2 ORDER BY name",
            params![namespace, plan],
        )
    }

    fn query_objects<K: StoredObject>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<K>, StoreError> {
        let rows: Vec<(String, String, i64, String)> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(self.sql("listing objects"))?;
        rows.into_iter()
            .map(|(ns, name, version, text)| self.decode(&ns, &name, to_version(version), &text))
            .collect()
    }

    fn decode<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
        version: u64,
        text: &str,
    ) -> Result<K, StoreError> {
        let mut obj: K = serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
            path: self.path.to_path_buf(),
            what: format!("{} {namespace}/{name}", kind_of::<K>()),
            source: Box::new(e),
        })?;
        // The column is authoritative; the JSON copy is what a reader of the file sees.
        obj.meta_mut().resource_version = Some(version.to_string());
        Ok(obj)
    }

    /// Stored version of an object, or `None` if absent.
    pub fn version_of<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT version FROM {} WHERE namespace = ?1 AND name = ?2",
                K::TABLE
            ))
            .and_then(|mut st| {
                st.query_row(params![namespace, name], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|v| v.map(to_version))
            .map_err(self.sql("reading a version"))
    }
}

impl Tx<'_> {
    /// Store a new object at version 1 (generation 1, `creationTimestamp` set if absent).
    pub fn create<K: StoredObject>(&self, obj: &K) -> Result<K, StoreError> {
        let (namespace, name) = self.key_of(obj)?;
        if self.version_of::<K>(&namespace, &name)?.is_some() {
            return Err(StoreError::AlreadyExists {
                path: self.path.to_path_buf(),
                kind: kind_of::<K>(),
                namespace,
                name,
            });
        }
        self.check_plan(obj, &namespace, &name)?;
        let mut obj = obj.clone();
        let meta = obj.meta_mut();
        meta.namespace = Some(namespace.clone());
        meta.resource_version = Some("1".to_string());
        meta.generation = Some(1);
        if meta.creation_timestamp.is_none() {
            meta.creation_timestamp = Some(Time(Timestamp::now()));
        }
        let text = self.encode(&obj, &namespace, &name)?;
        self.write_row::<K>(
            "INSERT INTO {t} (namespace, name, object, version, updated_at{plan_col}) VALUES (?1, ?2, ?3, ?4, ?5{plan_val})",
            &namespace,
            &name,
            &text,
            1,
            obj.owning_plan(),
        )?;
        Ok(obj)
    }

    /// Replace an object whose stored version is `expected_version`; its version goes up by one
    /// and its generation by one when the spec changed. Fails with `Conflict` or `NotFound`.
    pub fn update<K: StoredObject>(&self, obj: &K, expected_version: u64) -> Result<K, StoreError> {
        let (namespace, name) = self.key_of(obj)?;
        let stored: Option<(i64, String)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT version, object FROM {} WHERE namespace = ?1 AND name = ?2",
                K::TABLE
            ))
            .and_then(|mut st| {
                st.query_row(params![namespace, name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(self.sql("reading an object"))?;
        let Some((found, stored_text)) = stored.map(|(v, t)| (to_version(v), t)) else {
            return Err(StoreError::NotFound {
                path: self.path.to_path_buf(),
                kind: kind_of::<K>(),
                namespace,
                name,
            });
        };
        if found != expected_version {
            return Err(StoreError::Conflict {
                path: self.path.to_path_buf(),
                kind: kind_of::<K>(),
                namespace,
                name,
                expected: expected_version,
                found,
            });
        }
        self.check_plan(obj, &namespace, &name)?;
        let stored: serde_json::Value =
            serde_json::from_str(&stored_text).map_err(|e| StoreError::Corrupt {
                path: self.path.to_path_buf(),
                what: format!("{} {namespace}/{name}", kind_of::<K>()),
                source: Box::new(e),
            })?;
        let new_spec = serde_json::to_value(obj)
            .map(|mut v| v.get_mut("spec").map(serde_json::Value::take))
            .map_err(|e| self.invalid::<K>(&namespace, &name, e.to_string()))?;
        let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1);
        let generation = if new_spec.as_ref() == stored.get("spec") {
            generation
        } else {
            generation + 1
        };
        let version = found + 1;
        let mut obj = obj.clone();
        let meta = obj.meta_mut();
        meta.namespace = Some(namespace.clone());
        meta.resource_version = Some(version.to_string());
        meta.generation = Some(generation);
        if meta.creation_timestamp.is_none() {
            meta.creation_timestamp =
                serde_json::from_value(stored["metadata"]["creationTimestamp"].clone()).ok();
        }
        let text = self.encode(&obj, &namespace, &name)?;
        self.write_row::<K>(
            "UPDATE {t} SET object = ?3, version = ?4, updated_at = ?5{plan_set} WHERE namespace = ?1 AND name = ?2",
            &namespace,
            &name,
            &text,
            version,
            obj.owning_plan(),
        )?;
        Ok(obj)
    }

    /// Read-modify-write inside this transaction: `change` edits the stored object, which is then
    /// written back at the next version. No conflict is possible (the transaction holds the write
    /// lock); `NotFound` if the object is absent.
    pub fn modify<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut K),
    ) -> Result<K, StoreError> {
        let mut obj: K = self.get_existing(namespace, name)?;
        let version = resource_version(&obj).unwrap_or(0);
        change(&mut obj);
        self.update(&obj, version)
    }

    /// Delete an object, checking its version when `expected_version` is given.
    pub fn delete<K: StoredObject>(
        &self,
        namespace: &str,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some(found) = self.version_of::<K>(namespace, name)? else {
            return Err(StoreError::NotFound {
                path: self.path.to_path_buf(),
                kind: kind_of::<K>(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        };
        if let Some(expected) = expected_version.filter(|e| *e != found) {
            return Err(StoreError::Conflict {
                path: self.path.to_path_buf(),
                kind: kind_of::<K>(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                expected,
                found,
            });
        }
        self.conn
            .execute(
                &format!(
                    "DELETE FROM {} WHERE namespace = ?1 AND name = ?2",
                    K::TABLE
                ),
                params![namespace, name],
            )
            .map_err(self.sql("deleting an object"))?;
        Ok(())
    }

    /// Insert or update one row; `{t}`, `{plan_col}`, `{plan_val}`, `{plan_set}` are filled per kind.
    fn write_row<K: StoredObject>(
        &self,
        template: &str,
        namespace: &str,
        name: &str,
        text: &str,
        version: u64,
        plan: Option<&str>,
    ) -> Result<(), StoreError> {
        let with_plan = plan.is_some();
        let sql = template
            .replace("{t}", K::TABLE)
            .replace("{plan_col}", if with_plan { ", plan" } else { "" })
            .replace("{plan_val}", if with_plan { ", ?6" } else { "" })
            .replace("{plan_set}", if with_plan { ", plan = ?6" } else { "" });
        let updated_at = now_text();
        let version = i64::try_from(version).map_err(|_| {
            self.invalid::<K>(
                namespace,
                name,
                format!("version {version} is out of range"),
            )
        })?;
        let result = match plan {
            Some(plan) => self.conn.execute(
                &sql,
                params![namespace, name, text, version, updated_at, plan],
            ),
            None => self
                .conn
                .execute(&sql, params![namespace, name, text, version, updated_at]),
        };
        match result.map_err(self.sql("writing an object"))? {
            1 => Ok(()),
            n => Err(self.invalid::<K>(
                namespace,
                name,
                format!("the write changed {n} rows instead of one"),
            )),
        }
    }

    fn key_of<K: StoredObject>(&self, obj: &K) -> Result<(String, String), StoreError> {
        let meta = obj.meta();
        let namespace = meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let name = meta.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(self.invalid::<K>(
                &namespace,
                "<unnamed>",
                "metadata.name is empty".into(),
            ));
        }
        Ok((namespace, name))
    }

    fn check_plan<K: StoredObject>(
        &self,
        obj: &K,
        namespace: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let Some(plan) = obj.owning_plan() else {
            return Ok(());
        };
        if self.version_of::<MigrationPlan>(namespace, plan)?.is_none() {
            return Err(StoreError::PlanNotFound {
                path: self.path.to_path_buf(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                plan: plan.to_string(),
            });
        }
        Ok(())
    }

    fn encode<K: StoredObject>(
        &self,
        obj: &K,
        namespace: &str,
        name: &str,
    ) -> Result<String, StoreError> {
        serde_json::to_string(obj).map_err(|e| self.invalid::<K>(namespace, name, e.to_string()))
    }

    fn invalid<K: StoredObject>(&self, namespace: &str, name: &str, reason: String) -> StoreError {
        StoreError::Invalid {
            path: self.path.to_path_buf(),
            kind: kind_of::<K>(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason,
        }
    }
}
