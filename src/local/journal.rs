//! The records beside the objects: the ARM operation journal (so a restarted engine resumes an
//! in-flight long-running operation instead of writing again, and the request log can be checked
//! against it), the workspace legacy settings a plan changed (first previous value kept, for
//! restore), and events for the tracker.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::store::{Snapshot, Tx};
use crate::api::plan::ChangedLegacySetting;
use crate::azure::lro::OperationHandle;

/// How an ARM write ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum OperationOutcome {
    Succeeded,
    /// ARM error code and message (never request bodies or secrets).
    Failed {
        code: String,
        message: String,
    },
    /// Given up without a result (e.g. the handle expired or the machine left the plan).
    Abandoned {
        reason: String,
    },
}

/// One ARM write as the journal recorded it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub id: i64,
    /// The resource written (machine, DCR, association or workspace dataSource resource ID).
    pub resource_id: String,
    /// What the write does, e.g. `InstallAma` (one in flight per resource and action).
    pub action: String,
    /// The long-running operation to poll, persisted before waiting on it.
    pub handle: Option<OperationHandle>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub outcome: Option<OperationOutcome>,
}

impl JournalEntry {
    pub fn in_flight(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// A workspace legacy setting a plan changed, and whether it has been restored.
#[derive(Clone, Debug, PartialEq)]
pub struct LegacyChange {
    pub plan_namespace: String,
    pub plan_name: String,
    pub setting: ChangedLegacySetting,
    pub restored_at: Option<Timestamp>,
}

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        let meta = obj.meta();
        Self {
            kind: K::kind(&()).into_owned(),
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| super::store::DEFAULT_NAMESPACE.to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// An event about an object (what Kubernetes would hold as an `Event`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredEvent {
    pub object: ObjectKey,
    pub event_type: EventType,
    /// CamelCase reason (see `api::conditions::reasons`).
    pub reason: String,
    pub message: String,
    pub at: Timestamp,
}

/// Kubernetes caps event messages at 1 KiB; so do we, so the file cannot grow without bound per event.
const MAX_EVENT_MESSAGE: usize = 1024;

type JournalRow = (
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

const JOURNAL_COLUMNS: &str =
    "id, resource_id, action, handle, started_at, finished_at, outcome FROM arm_operations";

impl Snapshot<'_> {
    /// Every journal entry, oldest first.
    pub fn operations(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.query_journal(&format!("SELECT {JOURNAL_COLUMNS} ORDER BY id"), params![])
    }

    /// Journal entries of one resource, oldest first.
    pub fn operations_for(&self, resource_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.query_journal(
            &format!("SELECT {JOURNAL_COLUMNS} WHERE resource_id = ?1 ORDER BY id"),
            params![resource_id],
        )
    }

    /// Operations started and not finished: what a restarted engine resumes.
    pub fn in_flight_operations(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.query_journal(
            &format!("SELECT {JOURNAL_COLUMNS} WHERE finished_at IS NULL ORDER BY id"),
            params![],
        )
    }

    /// The in-flight operation of `action` on `resource_id`, if any: resume it rather than write again.
    pub fn in_flight_operation(
        &self,
        resource_id: &str,
        action: &str,
    ) -> Result<Option<JournalEntry>, StoreError> {
        Ok(self
            .query_journal(
                &format!(
                    "SELECT {JOURNAL_COLUMNS} WHERE resource_id = ?1 AND action = ?2 AND finished_at IS NULL"
                ),
                params![resource_id, action],
            )?
            .pop())
    }

    pub fn operation(&self, id: i64) -> Result<JournalEntry, StoreError> {
        self.query_journal(
            &format!("SELECT {JOURNAL_COLUMNS} WHERE id = ?1"),
            params![id],
        )?
        .pop()
        .ok_or_else(|| StoreError::OperationNotFound {
            path: self.path().to_path_buf(),
            id,
        })
    }

    fn query_journal(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let rows: Vec<JournalRow> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_map(params, |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })?
                .collect()
            })
            .map_err(self.sql("reading the ARM operation journal"))?;
        rows.into_iter()
            .map(
                |(id, resource_id, action, handle, started, finished, outcome)| {
                    let what = || format!("ARM operation journal entry {id}");
                    Ok(JournalEntry {
                        id,
                        resource_id,
                        action,
                        handle: handle.map(|h| self.parse_json(&h, what())).transpose()?,
                        started_at: self.parse_time(&started, what())?,
                        finished_at: finished.map(|f| self.parse_time(&f, what())).transpose()?,
                        outcome: outcome.map(|o| self.parse_json(&o, what())).transpose()?,
                    })
                },
            )
            .collect()
    }

    /// Legacy settings changed by a plan, oldest first; restored ones only when asked.
    pub fn legacy_changes(
        &self,
        plan_namespace: &str,
        plan_name: &str,
        include_restored: bool,
    ) -> Result<Vec<LegacyChange>, StoreError> {
        type Row = (String, String, String, String, String, Option<String>);
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(
                "SELECT resource_id, kind, data_source_type, previous_properties, changed_at, restored_at
                 FROM legacy_settings_changed
                 WHERE plan_namespace = ?1 AND plan_name = ?2 AND (?3 OR restored_at IS NULL)
                 ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map(params![plan_namespace, plan_name, include_restored], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect()
            })
            .map_err(self.sql("reading the changed legacy settings"))?;
        rows.into_iter()
            .map(
                |(resource_id, kind, ds_type, previous, changed, restored)| {
                    let what = || format!("legacy setting change of {resource_id}");
                    Ok(LegacyChange {
                        plan_namespace: plan_namespace.to_string(),
                        plan_name: plan_name.to_string(),
                        setting: ChangedLegacySetting {
                            data_source_type: self.parse_json(
                                &serde_json::Value::String(ds_type).to_string(),
                                what(),
                            )?,
                            previous_properties: previous,
                            changed_at: Time(self.parse_time(&changed, what())?),
                            kind,
                            resource_id: resource_id.clone(),
                        },
                        restored_at: restored.map(|t| self.parse_time(&t, what())).transpose()?,
                    })
                },
            )
            .collect()
    }

    /// Events, newest first, about one object or all; at most `limit`.
    pub fn events(
        &self,
        object: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        type Row = (String, String, String, String, String, String, String);
        let (kind, namespace, name) = match object {
            Some(o) => (Some(&o.kind), Some(&o.namespace), Some(&o.name)),
            None => (None, None, None),
        };
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(
                "SELECT kind, namespace, name, type, reason, message, at FROM events
                 WHERE ?1 IS NULL OR (kind = ?1 AND namespace = ?2 AND name = ?3)
                 ORDER BY id DESC LIMIT ?4",
            )
            .and_then(|mut st| {
                st.query_map(
                    params![
                        kind,
                        namespace,
                        name,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    },
                )?
                .collect()
            })
            .map_err(self.sql("reading events"))?;
        rows.into_iter()
            .map(|(kind, namespace, name, type_, reason, message, at)| {
                Ok(StoredEvent {
                    event_type: if type_ == "Warning" {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    at: self.parse_time(&at, format!("event about {kind} {namespace}/{name}"))?,
                    object: ObjectKey {
                        kind,
                        namespace,
                        name,
                    },
                    reason,
                    message,
                })
            })
            .collect()
    }

    fn parse_json<T: serde::de::DeserializeOwned>(
        &self,
        text: &str,
        what: String,
    ) -> Result<T, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
            path: self.path().to_path_buf(),
            what,
            source: Box::new(e),
        })
    }

    fn parse_time(&self, text: &str, what: String) -> Result<Timestamp, StoreError> {
        text.parse().map_err(|e| StoreError::Corrupt {
            path: self.path().to_path_buf(),
            what,
            source: Box::new(e),
        })
    }
}

impl Tx<'_> {
    /// Record that an ARM write starts (with its operation handle if the response already gave
    /// one). Fails with `OperationInFlight` if the same action on the same resource is unfinished.
    pub fn begin_operation(
        &self,
        resource_id: &str,
        action: &str,
        handle: Option<&OperationHandle>,
        at: Timestamp,
    ) -> Result<i64, StoreError> {
        if let Some(existing) = self.in_flight_operation(resource_id, action)? {
            return Err(StoreError::OperationInFlight {
                path: self.path().to_path_buf(),
                resource_id: resource_id.to_string(),
                action: action.to_string(),
                id: existing.id,
            });
        }
        let handle = handle.map(to_json).transpose()?;
        self.conn
            .execute(
                "INSERT INTO arm_operations (resource_id, action, handle, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![resource_id, action, handle, at.to_string()],
            )
            .map_err(self.sql("recording an ARM operation"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Persist the handle of a long-running operation before waiting on it.
    pub fn set_operation_handle(
        &self,
        id: i64,
        handle: &OperationHandle,
    ) -> Result<(), StoreError> {
        self.unfinished(id)?;
        self.conn
            .execute(
                "UPDATE arm_operations SET handle = ?2 WHERE id = ?1",
                params![id, to_json(handle)?],
            )
            .map_err(self.sql("recording an ARM operation handle"))?;
        Ok(())
    }

    /// Record how an operation ended. Finishing one twice is an error (the engine lost track).
    pub fn finish_operation(
        &self,
        id: i64,
        outcome: &OperationOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.unfinished(id)?;
        self.conn
            .execute(
                "UPDATE arm_operations SET finished_at = ?2, outcome = ?3 WHERE id = ?1",
                params![id, at.to_string(), to_json(outcome)?],
            )
            .map_err(self.sql("finishing an ARM operation"))?;
        Ok(())
    }

    fn unfinished(&self, id: i64) -> Result<JournalEntry, StoreError> {
        let entry = self.operation(id)?;
        if !entry.in_flight() {
            return Err(StoreError::OperationFinished {
                path: self.path().to_path_buf(),
                id,
                action: entry.action,
                resource_id: entry.resource_id,
            });
        }
        Ok(entry)
    }

    /// Record a workspace legacy setting the plan is about to change. If an unrestored change of the
    /// same setting is already recorded, it is kept (it holds the value from before the migration)
    /// and `false` is returned.
    pub fn record_legacy_change(
        &self,
        plan_namespace: &str,
        plan_name: &str,
        setting: &ChangedLegacySetting,
    ) -> Result<bool, StoreError> {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&setting.previous_properties) {
            return Err(StoreError::Invalid {
                path: self.path().to_path_buf(),
                kind: "ChangedLegacySetting".into(),
                namespace: plan_namespace.to_string(),
                name: setting.resource_id.clone(),
                reason: format!("previousProperties is not JSON: {e}"),
            });
        }
        let ds_type = match serde_json::to_value(setting.data_source_type) {
            Ok(serde_json::Value::String(s)) => s,
            other => {
                return Err(StoreError::Invalid {
                    path: self.path().to_path_buf(),
                    kind: "ChangedLegacySetting".into(),
                    namespace: plan_namespace.to_string(),
                    name: setting.resource_id.clone(),
                    reason: format!("data source type does not serialize to a name: {other:?}"),
                });
            }
        };
        let inserted = self
            .conn
            .execute(
                "INSERT INTO legacy_settings_changed
                   (plan_namespace, plan_name, resource_id, kind, data_source_type, previous_properties, changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (plan_namespace, plan_name, resource_id) WHERE restored_at IS NULL DO NOTHING",
                params![
                    plan_namespace,
                    plan_name,
                    setting.resource_id,
                    setting.kind,
                    ds_type,
                    setting.previous_properties,
                    setting.changed_at.0.to_string()
                ],
            )
            .map_err(self.sql("recording a changed legacy setting"))?;
        Ok(inserted == 1)
    }

    /// Mark a changed legacy setting as restored; `false` if no unrestored change was recorded.
    pub fn mark_legacy_restored(
        &self,
        plan_namespace: &str,
        plan_name: &str,
        resource_id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE legacy_settings_changed SET restored_at = ?4
                 WHERE plan_namespace = ?1 AND plan_name = ?2 AND resource_id = ?3 AND restored_at IS NULL",
                params![plan_namespace, plan_name, resource_id, at.to_string()],
            )
            .map_err(self.sql("marking a legacy setting restored"))?;
        Ok(n == 1)
    }

    /// Record an event about an object (the message is cut at 1 KiB).
    pub fn record_event(&self, event: &StoredEvent) -> Result<(), StoreError> {
        let mut message = event.message.as_str();
        if message.len() > MAX_EVENT_MESSAGE {
            let mut end = MAX_EVENT_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message = &message[..end];
        }
        self.conn
            .execute(
                "INSERT INTO events (kind, namespace, name, type, reason, message, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    event.object.kind,
                    event.object.namespace,
                    event.object.name,
                    event.event_type.as_str(),
                    event.reason,
                    message,
                    event.at.to_string()
                ],
            )
            .map_err(self.sql("recording an event"))?;
        Ok(())
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    // Our own types always serialize; keep the error typed anyway rather than panic.
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        path: std::path::PathBuf::new(),
        what: "a value to store".into(),
        source: Box::new(e),
    })
}
