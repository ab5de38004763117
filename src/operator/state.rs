//! The engine's state over the Kubernetes API, for one plan: MachineMigrations are server-side
//! applied (one field manager, a controller owner reference to the plan), statuses go through
//! the status subresource with `observedGeneration`, the plan's spec and metadata are never
//! written, and the engine's own bookkeeping (its plan progress, the ARM operation journal and
//! the recorded legacy settings) lives in one ConfigMap per plan, owned by the plan.
//!
//! The engine's state trait is synchronous; each call here runs its API requests to completion
//! (`block_in_place`), so a write is durable when the call returns, as with the SQLite store.
//! It therefore needs a multi-threaded Tokio runtime.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ::kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use ::kube::runtime::events::EventType;
use ::kube::{Client, Resource, ResourceExt};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::machine::{MachineStep, annotations as machine_annotations};
use crate::api::plan::ChangedLegacySetting;
use crate::api::{MachineMigration, MigrationPlan, MigrationPlanStatus};
use crate::azure::lro::OperationHandle;
use crate::engine::EngineState;
use crate::engine::record::PROGRESS_ANNOTATION;
use crate::engine::run::PLAN_PROGRESS_ANNOTATION;
use crate::local::{JournalEntry, LegacyChange, OperationOutcome, StoreError, StoredEvent};

use super::metrics::{MachineLabels, Metrics, OperationLabels};
use super::{FIELD_MANAGER, RETRY_OBSERVED_ANNOTATION};

/// The key of the engine data in the plan's ConfigMap.
const ENGINE_DATA_KEY: &str = "engine.json";
/// Kubernetes caps event notes at 1 KiB.
const MAX_NOTE: usize = 1024;
/// Where errors say the state lives.
const WHERE: &str = "the Kubernetes API";

/// MachineMigration saves of one engine pass sent at once.
const SAVES_IN_FLIGHT: usize = 4;

/// Objects per page of the operator's own lists (the apiserver's default for kube's watchers).
pub const LIST_PAGE: u32 = 500;

/// List with `lp` in pages of [`LIST_PAGE`], handing each object to `each` as its page arrives
/// (a list of 10,000 machines is never one response body).
pub async fn list_paged<K>(
    api: &Api<K>,
    lp: ::kube::api::ListParams,
    mut each: impl FnMut(K),
) -> Result<(), ::kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.limit(LIST_PAGE);
    loop {
        let page = api.list(&lp).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        page.items.into_iter().for_each(&mut each);
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// The name of a plan's engine ConfigMap.
pub fn engine_configmap_name(plan: &str) -> String {
    format!("{plan}-ama-migrator-engine")
}

/// The annotations of a MachineMigration this operator owns (everything else belongs to people).
const OWNED_MACHINE_ANNOTATIONS: &[&str] = &[PROGRESS_ANNOTATION, RETRY_OBSERVED_ANNOTATION];

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EngineData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<String>,
    #[serde(default)]
    next_id: i64,
    /// In-flight operations only (finished ones are dropped).
    #[serde(default)]
    journal: Vec<JournalRecord>,
    #[serde(default)]
    legacy: Vec<LegacyRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JournalRecord {
    id: i64,
    resource_id: String,
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handle: Option<OperationHandle>,
    started_at: Time,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyRecord {
    setting: ChangedLegacySetting,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restored_at: Option<Time>,
}

#[derive(Clone, Debug, Default)]
struct MachineCache {
    uid: Option<String>,
    step: Option<MachineStep>,
    /// Hash of the last applied main object (metadata we own + spec).
    main_hash: u64,
    /// Hash of the last applied status (0: not applied by this state yet).
    status_hash: u64,
    generation: Option<i64>,
}

#[derive(Default)]
struct Inner {
    data: Option<EngineData>,
    last_status: Option<MigrationPlanStatus>,
    machines: HashMap<String, MachineCache>,
    step_counts: HashMap<MachineStep, i64>,
    started: HashMap<i64, Instant>,
    /// The engine data holds closes not applied yet (see `finish_operation`).
    data_dirty: bool,
}

/// [`EngineState`] for one `MigrationPlan` over the Kubernetes API.
pub struct KubeState {
    client: Client,
    runtime: tokio::runtime::Handle,
    events: super::events::EventQueue,
    metrics: Arc<Metrics>,
    namespace: String,
    plan: String,
    owner: OwnerReference,
    plan_ref: ObjectReference,
    inner: Mutex<Inner>,
}

/// Feeds serialized JSON straight into a hasher (no string of the whole object).
struct HashWriter(std::collections::hash_map::DefaultHasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A hash of `v`'s JSON form.
fn hash_json(v: &impl Serialize) -> u64 {
    let mut w = HashWriter(std::collections::hash_map::DefaultHasher::new());
    // Serializing our own types into a sink that cannot fail does not fail; if it ever did,
    // a hash of 0 never matches a cached one, so the write is simply sent.
    match serde_json::to_writer(&mut w, v) {
        Ok(()) => w.0.finish().max(1),
        Err(_) => 0,
    }
}

/// The server-side apply body of a MachineMigration's main object: the metadata this operator
/// owns and the spec, borrowed from the machine (serialized once for the hash and once as the
/// request, never copied into a `serde_json::Value`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MachineApply<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: MachineApplyMeta<'a>,
    spec: &'a crate::api::machine::MachineMigrationSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MachineApplyMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    annotations: BTreeMap<&'a str, &'a String>,
    owner_references: [&'a OwnerReference; 1],
}

/// The server-side apply body of a MachineMigration's status subresource.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MachineStatusApply<'a> {
    api_version: &'a str,
    kind: &'a str,
    status: &'a crate::api::machine::MachineMigrationStatus,
}

fn kube_error(kind: &str, namespace: &str, name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        path: PathBuf::from(WHERE),
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason: e.to_string(),
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl KubeState {
    /// The state of `plan` (which must carry its uid: it owns everything written here).
    pub fn new(
        client: Client,
        publisher: super::events::Publisher,
        metrics: Arc<Metrics>,
        plan: &MigrationPlan,
    ) -> Result<Self, StoreError> {
        let namespace = plan.namespace().unwrap_or_default();
        let name = plan.name_any();
        let owner = plan
            .controller_owner_ref(&())
            .ok_or_else(|| kube_error("MigrationPlan", &namespace, &name, "has no uid"))?;
        let runtime = tokio::runtime::Handle::current();
        Ok(Self {
            client,
            events: super::events::EventQueue::spawn(publisher, metrics.clone(), &runtime),
            runtime,
            metrics,
            plan_ref: plan.object_ref(&()),
            namespace,
            plan: name,
            owner,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.runtime.block_on(f))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn plans(&self) -> Api<MigrationPlan> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// MachineMigrations read as metadata only (writes answered with `PartialObjectMetadata`).
    fn machine_metadata(&self) -> Api<PartialObjectMeta<MachineMigration>> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The engine data, read from the ConfigMap on first use.
    fn with_data<R>(&self, f: impl FnOnce(&mut EngineData) -> R) -> Result<R, StoreError> {
        let loaded = self.lock().data.is_some();
        if !loaded {
            let name = engine_configmap_name(&self.plan);
            let cm = self
                .block(self.configmaps().get_opt(&name))
                .map_err(|e| kube_error("ConfigMap", &self.namespace, &name, e))?;
            let data = match cm
                .and_then(|c| c.data)
                .and_then(|d| d.get(ENGINE_DATA_KEY).cloned())
            {
                Some(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    path: PathBuf::from(WHERE),
                    what: format!("engine data in ConfigMap {}/{name}", self.namespace),
                    source: Box::new(e),
                })?,
                None => EngineData::default(),
            };
            let mut inner = self.lock();
            if inner.data.is_none() {
                inner.data = Some(data);
            }
        }
        let mut inner = self.lock();
        let data = inner.data.get_or_insert_with(EngineData::default);
        Ok(f(data))
    }

    /// Change the engine data and apply the ConfigMap before returning.
    fn modify_data<R>(&self, f: impl FnOnce(&mut EngineData) -> R) -> Result<R, StoreError> {
        let r = self.with_data(f)?;
        self.write_data()?;
        Ok(r)
    }

    /// Apply the ConfigMap with the engine data as it is now (with any deferred closes).
    fn write_data(&self) -> Result<(), StoreError> {
        let text = self.with_data(|d| serde_json::to_string(d))?;
        self.lock().data_dirty = false;
        let written = self.apply_data(text);
        if written.is_err() {
            self.lock().data_dirty = true;
        }
        written
    }

    fn apply_data(&self, text: serde_json::Result<String>) -> Result<(), StoreError> {
        let text = text.map_err(|e| kube_error("ConfigMap", &self.namespace, &self.plan, e))?;
        let name = engine_configmap_name(&self.plan);
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {crate::api::machine::labels::PLAN: self.plan},
                "ownerReferences": [self.owner],
            },
            "data": {ENGINE_DATA_KEY: text},
        });
        let result = self.block(self.configmaps().patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        ));
        self.metrics.kube_write("configmaps", result.is_ok());
        result.map_err(|e| kube_error("ConfigMap", &self.namespace, &name, e))?;
        Ok(())
    }

    /// Queue an event (created in the background: a pass never waits on one).
    async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.events
            .send(reference, type_, reason, truncate(note, MAX_NOTE))
            .await;
    }

    fn machine_ref(&self, name: &str, uid: Option<String>) -> ObjectReference {
        ObjectReference {
            api_version: Some(MachineMigration::api_version(&()).into_owned()),
            kind: Some(MachineMigration::kind(&()).into_owned()),
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            uid,
            ..ObjectReference::default()
        }
    }

    fn count_step(&self, inner: &mut Inner, from: Option<MachineStep>, to: Option<MachineStep>) {
        for (step, delta) in [(from, -1), (to, 1)] {
            let Some(step) = step else { continue };
            let n = inner.step_counts.entry(step).or_default();
            *n += delta;
            self.metrics
                .machines
                .get_or_create(&MachineLabels {
                    namespace: self.namespace.clone(),
                    plan: self.plan.clone(),
                    step: format!("{step:?}"),
                })
                .set(*n);
        }
    }

    /// Publish the event of a machine's step change.
    async fn step_event(
        &self,
        machine: &MachineMigration,
        uid: Option<String>,
        from: Option<MachineStep>,
    ) {
        let status = machine.status.as_ref();
        let Some(to) = status.and_then(|s| s.step) else {
            return;
        };
        let name = machine.name_any();
        let from_text = from
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| "new".into());
        let detail = status
            .and_then(|s| s.last_error.as_ref())
            .map(|e| format!(": {}: {}", e.code, e.message))
            .unwrap_or_default();
        let (type_, reason) = match to {
            MachineStep::Failed => (EventType::Warning, "MachineFailed"),
            MachineStep::Blocked => (EventType::Warning, "MachineBlocked"),
            MachineStep::Done => (EventType::Normal, "MachineDone"),
            _ => (EventType::Normal, "StepChanged"),
        };
        self.publish(
            &self.machine_ref(&name, uid),
            type_,
            reason,
            format!("{from_text} -> {to:?}{detail}"),
        )
        .await;
    }
}

impl EngineState for KubeState {
    fn load_plan(&self, namespace: &str, name: &str) -> Result<Option<MigrationPlan>, StoreError> {
        let api: Api<MigrationPlan> = Api::namespaced(self.client.clone(), namespace);
        let Some(mut plan) = self
            .block(api.get_opt(name))
            .map_err(|e| kube_error("MigrationPlan", namespace, name, e))?
        else {
            return Ok(None);
        };
        if namespace == self.namespace && name == self.plan {
            if let Some(progress) = self.with_data(|d| d.progress.clone())? {
                plan.annotations_mut()
                    .insert(PLAN_PROGRESS_ANNOTATION.to_string(), progress);
            }
            let mut inner = self.lock();
            if inner.last_status.is_none() {
                inner.last_status = plan.status.clone();
            }
        }
        Ok(Some(plan))
    }

    fn save_plan(&self, plan: &MigrationPlan) -> Result<MigrationPlan, StoreError> {
        let name = plan.name_any();
        if name != self.plan || plan.namespace().as_deref() != Some(self.namespace.as_str()) {
            return Err(kube_error(
                "MigrationPlan",
                &plan.namespace().unwrap_or_default(),
                &name,
                format!(
                    "this state serves plan {}/{} only",
                    self.namespace, self.plan
                ),
            ));
        }
        let progress = plan.annotations().get(PLAN_PROGRESS_ANNOTATION).cloned();
        if progress.is_some() && self.with_data(|d| d.progress.clone())? != progress {
            self.modify_data(|d| d.progress = progress)?;
        } else {
            // The plan's status never runs ahead of the journal's closes.
            self.flush()?;
        }
        let mut status = plan.status.clone().unwrap_or_default();
        status.observed_generation = plan.metadata.generation;
        let unchanged = self.lock().last_status.as_ref() == Some(&status);
        if !unchanged {
            let body = json!({
                "apiVersion": MigrationPlan::api_version(&()),
                "kind": MigrationPlan::kind(&()),
                "status": status,
            });
            let result = self.block(self.plans().patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            ));
            self.metrics
                .kube_write("migrationplans/status", result.is_ok());
            result.map_err(|e| kube_error("MigrationPlan", &self.namespace, &name, e))?;
            self.lock().last_status = Some(status.clone());
        }
        let mut saved = plan.clone();
        saved.status = Some(status);
        Ok(saved)
    }

    fn load_machines(
        &self,
        namespace: &str,
        plan: &str,
    ) -> Result<Vec<MachineMigration>, StoreError> {
        let api: Api<MachineMigration> = Api::namespaced(self.client.clone(), namespace);
        let lp = ::kube::api::ListParams::default()
            .labels(&format!("{}={plan}", crate::api::machine::labels::PLAN));
        // Page by page (no response body holds every machine at once), keeping only the
        // machines this plan controls (a label alone can be set by anyone).
        let mut items: Vec<MachineMigration> = Vec::new();
        self.block(list_paged(&api, lp, |mut m: MachineMigration| {
            m.metadata.managed_fields = None;
            if m.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == self.owner.uid)
            {
                items.push(m);
            }
        }))
        .map_err(|e| kube_error("MachineMigration", namespace, plan, e))?;
        let mut inner = self.lock();
        inner.step_counts.clear();
        let mut counts: HashMap<String, i64> = HashMap::new();
        for m in &items {
            let step = m.status.as_ref().and_then(|s| s.step);
            if let Some(s) = step {
                *inner.step_counts.entry(s).or_default() += 1;
                *counts.entry(format!("{s:?}")).or_default() += 1;
            }
            inner.machines.insert(
                m.name_any(),
                MachineCache {
                    uid: m.uid(),
                    step,
                    main_hash: 0,
                    status_hash: 0,
                    generation: m.metadata.generation,
                },
            );
        }
        drop(inner);
        self.metrics.set_plan_steps(namespace, plan, counts);
        let mut out = Vec::with_capacity(items.len());
        for m in items {
            out.push(self.apply_steering(m)?);
        }
        Ok(out)
    }

    fn save_machine(&self, machine: &MachineMigration) -> Result<MachineMigration, StoreError> {
        self.block(self.save_machine_async(machine))
    }

    fn save_machines(
        &self,
        machines: &[&MachineMigration],
    ) -> Vec<Result<MachineMigration, StoreError>> {
        use futures::StreamExt;
        self.block(
            futures::stream::iter(machines.iter().map(|m| self.save_machine_async(m)))
                .buffered(SAVES_IN_FLIGHT)
                .collect(),
        )
    }

    fn begin_operation(
        &self,
        resource_id: &str,
        action: &str,
        at: Timestamp,
    ) -> Result<i64, StoreError> {
        let clash = self.with_data(|d| {
            d.journal
                .iter()
                .find(|j| j.resource_id.eq_ignore_ascii_case(resource_id) && j.action == action)
                .map(|j| j.id)
        })?;
        if let Some(id) = clash {
            return Err(StoreError::OperationInFlight {
                path: PathBuf::from(WHERE),
                resource_id: resource_id.to_string(),
                action: action.to_string(),
                id,
            });
        }
        let id = self.modify_data(|d| {
            d.next_id += 1;
            d.journal.push(JournalRecord {
                id: d.next_id,
                resource_id: resource_id.to_string(),
                action: action.to_string(),
                handle: None,
                started_at: Time(at),
            });
            d.next_id
        })?;
        self.lock().started.insert(id, Instant::now());
        Ok(id)
    }

    fn set_operation_handle(&self, id: i64, handle: &OperationHandle) -> Result<(), StoreError> {
        let found = self.modify_data(|d| match d.journal.iter_mut().find(|j| j.id == id) {
            Some(j) => {
                j.handle = Some(handle.clone());
                true
            }
            None => false,
        })?;
        if found {
            Ok(())
        } else {
            Err(StoreError::OperationNotFound {
                path: PathBuf::from(WHERE),
                id,
            })
        }
    }

    fn finish_operation(
        &self,
        id: i64,
        outcome: &OperationOutcome,
        _at: Timestamp,
    ) -> Result<(), StoreError> {
        // Deferred: applied with the next journal write or `flush` (at the end of the pass).
        let action = self.with_data(|d| {
            let action = d
                .journal
                .iter()
                .find(|j| j.id == id)
                .map(|j| j.action.clone());
            d.journal.retain(|j| j.id != id);
            action
        })?;
        if action.is_some() {
            self.lock().data_dirty = true;
        }
        let Some(action) = action else {
            return Err(StoreError::OperationNotFound {
                path: PathBuf::from(WHERE),
                id,
            });
        };
        if let Some(started) = self.lock().started.remove(&id) {
            let outcome = match outcome {
                OperationOutcome::Succeeded => "succeeded",
                OperationOutcome::Failed { .. } => "failed",
                OperationOutcome::Abandoned { .. } => "abandoned",
            };
            self.metrics
                .operation_duration
                .get_or_create(&OperationLabels {
                    action,
                    outcome: outcome.into(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        if self.lock().data_dirty {
            self.write_data()?;
        }
        Ok(())
    }

    fn in_flight_operations(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.with_data(|d| {
            d.journal
                .iter()
                .map(|j| JournalEntry {
                    id: j.id,
                    resource_id: j.resource_id.clone(),
                    action: j.action.clone(),
                    handle: j.handle.clone(),
                    started_at: j.started_at.0,
                    finished_at: None,
                    outcome: None,
                })
                .collect()
        })
    }

    fn record_legacy_change(
        &self,
        namespace: &str,
        plan: &str,
        setting: &ChangedLegacySetting,
    ) -> Result<bool, StoreError> {
        self.check_plan(namespace, plan)?;
        let known = self.with_data(|d| {
            d.legacy.iter().any(|l| {
                l.restored_at.is_none()
                    && l.setting
                        .resource_id
                        .eq_ignore_ascii_case(&setting.resource_id)
            })
        })?;
        if known {
            return Ok(false);
        }
        self.modify_data(|d| {
            d.legacy.retain(|l| {
                !l.setting
                    .resource_id
                    .eq_ignore_ascii_case(&setting.resource_id)
            });
            d.legacy.push(LegacyRecord {
                setting: setting.clone(),
                restored_at: None,
            });
        })?;
        Ok(true)
    }

    fn legacy_changes(&self, namespace: &str, plan: &str) -> Result<Vec<LegacyChange>, StoreError> {
        self.check_plan(namespace, plan)?;
        self.with_data(|d| {
            d.legacy
                .iter()
                .filter(|l| l.restored_at.is_none())
                .map(|l| LegacyChange {
                    plan_namespace: namespace.to_string(),
                    plan_name: plan.to_string(),
                    setting: l.setting.clone(),
                    restored_at: None,
                })
                .collect()
        })
    }

    fn mark_legacy_restored(
        &self,
        namespace: &str,
        plan: &str,
        resource_id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.check_plan(namespace, plan)?;
        self.modify_data(|d| {
            let mut changed = false;
            for l in d.legacy.iter_mut().filter(|l| {
                l.restored_at.is_none() && l.setting.resource_id.eq_ignore_ascii_case(resource_id)
            }) {
                l.restored_at = Some(Time(at));
                changed = true;
            }
            changed
        })
    }

    fn record_event(&self, event: &StoredEvent) -> Result<(), StoreError> {
        let reference = if event.object.kind == MigrationPlan::kind(&()) {
            self.plan_ref.clone()
        } else {
            let uid = self
                .lock()
                .machines
                .get(&event.object.name)
                .and_then(|m| m.uid.clone());
            self.machine_ref(&event.object.name, uid)
        };
        let type_ = match event.event_type {
            crate::local::EventType::Normal => EventType::Normal,
            crate::local::EventType::Warning => EventType::Warning,
        };
        self.block(self.publish(&reference, type_, &event.reason, event.message.clone()));
        Ok(())
    }
}

impl KubeState {
    /// Apply a machine's main object (when what this operator owns of it changed) and its status
    /// (when changed); the answers are read as metadata only.
    async fn save_machine_async(
        &self,
        machine: &MachineMigration,
    ) -> Result<MachineMigration, StoreError> {
        let name = machine.name_any();
        let ns = machine
            .namespace()
            .unwrap_or_else(|| self.namespace.clone());
        if ns != self.namespace {
            return Err(kube_error(
                "MachineMigration",
                &ns,
                &name,
                format!(
                    "a machine of plan {} must live in namespace {}",
                    self.plan, self.namespace
                ),
            ));
        }
        let owned: BTreeMap<&str, &String> = machine
            .annotations()
            .iter()
            .filter(|(k, _)| OWNED_MACHINE_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let api_version = MachineMigration::api_version(&());
        let kind = MachineMigration::kind(&());
        let main = MachineApply {
            api_version: &api_version,
            kind: &kind,
            metadata: MachineApplyMeta {
                name: &name,
                namespace: &ns,
                labels: machine.labels(),
                annotations: owned,
                owner_references: [&self.owner],
            },
            spec: &machine.spec,
        };
        let main_hash = hash_json(&main);
        let cached = self.lock().machines.get(&name).cloned().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut cache = cached.clone();
        // The answers are read as metadata only (PartialObjectMetadata): the machine's spec and
        // status are the ones just sent, so only its uid, generation and resourceVersion are new.
        let mut metadata = None;
        if cached.main_hash != main_hash || main_hash == 0 || cached.uid.is_none() {
            let result = self
                .machine_metadata()
                .patch(&name, &params, &Patch::Apply(&main))
                .await;
            self.metrics.kube_write("machinemigrations", result.is_ok());
            let applied = result.map_err(|e| kube_error("MachineMigration", &ns, &name, e))?;
            cache.uid = applied.metadata.uid.clone();
            cache.generation = applied.metadata.generation;
            cache.main_hash = main_hash;
            metadata = Some(applied.metadata);
        }
        drop(main);
        let mut status = machine.status.clone().unwrap_or_default();
        status.observed_generation = cache.generation;
        let body = MachineStatusApply {
            api_version: &api_version,
            kind: &kind,
            status: &status,
        };
        let status_hash = hash_json(&body);
        let mut resource_version = None;
        if status_hash != cached.status_hash || status_hash == 0 || metadata.is_some() {
            let result = self
                .machine_metadata()
                .patch_status(&name, &params, &Patch::Apply(&body))
                .await;
            self.metrics
                .kube_write("machinemigrations/status", result.is_ok());
            let applied = result.map_err(|e| kube_error("MachineMigration", &ns, &name, e))?;
            cache.status_hash = status_hash;
            resource_version = applied.metadata.resource_version;
        }
        let mut saved = MachineMigration {
            metadata: metadata
                .map(|mut m| {
                    // Kept by the engine for the whole run; the field sets are the server's.
                    m.managed_fields = None;
                    m
                })
                .unwrap_or_else(|| machine.metadata.clone()),
            spec: machine.spec.clone(),
            status: Some(status),
        };
        if resource_version.is_some() {
            saved.metadata.resource_version = resource_version;
        }
        // The answer's metadata is the server's: the hold a skip implies lives in memory only.
        hold_if_skipped(&mut saved);
        let step = saved.status.as_ref().and_then(|s| s.step);
        let from = cached.step;
        cache.step = step;
        {
            let mut inner = self.lock();
            if from != step {
                self.count_step(&mut inner, from, step);
            }
            inner.machines.insert(name, cache.clone());
        }
        if from != step {
            self.step_event(&saved, cache.uid, from).await;
        }
        Ok(saved)
    }

    /// Honour a person's annotations as the engine loads a machine: `skip` reads as `hold` to the
    /// engine (never written back), and a new `retry` value clears the failure and backoff.
    fn apply_steering(&self, mut m: MachineMigration) -> Result<MachineMigration, StoreError> {
        let (_, retry, _) = steering(&m);
        if let Some(value) = retry {
            let observed = m.annotations().get(RETRY_OBSERVED_ANNOTATION).cloned();
            if observed.as_ref() != Some(&value) {
                let mut record = crate::engine::record::MachineRecord::from_object(m);
                let was_failed = record.clear_failure();
                record.encode();
                m = record.object;
                m.annotations_mut()
                    .insert(RETRY_OBSERVED_ANNOTATION.to_string(), value.clone());
                let uid = m.uid();
                let reference = self.machine_ref(&m.name_any(), uid);
                let note = format!(
                    "retry {value} requested{}",
                    if was_failed {
                        ": the failure is cleared"
                    } else {
                        ""
                    }
                );
                self.block(self.publish(&reference, EventType::Normal, "RetryRequested", note));
                m = self.save_machine(&m)?;
            }
        }
        hold_if_skipped(&mut m);
        Ok(m)
    }

    fn check_plan(&self, namespace: &str, plan: &str) -> Result<(), StoreError> {
        if namespace == self.namespace && plan == self.plan {
            Ok(())
        } else {
            Err(kube_error(
                "MigrationPlan",
                namespace,
                plan,
                format!(
                    "this state serves plan {}/{} only",
                    self.namespace, self.plan
                ),
            ))
        }
    }

    /// Unrestored legacy settings the plan changed (for the finalizer's rollback).
    pub fn unrestored_legacy(&self) -> Result<Vec<ChangedLegacySetting>, StoreError> {
        self.with_data(|d| {
            d.legacy
                .iter()
                .filter(|l| l.restored_at.is_none())
                .map(|l| l.setting.clone())
                .collect()
        })
    }
}

/// A skipped machine is held: in memory only (never written back), on every object the engine is
/// handed — the loaded ones and each one a save returns with the server's metadata.
fn hold_if_skipped(m: &mut MachineMigration) {
    if steering(m).2 {
        m.annotations_mut()
            .insert(machine_annotations::HOLD.to_string(), "true".to_string());
    }
}

/// The steering annotations a person set on a machine that this operator honours (a whole
/// MachineMigration or its metadata).
pub fn steering<K: Resource>(machine: &K) -> (bool, Option<String>, bool) {
    let a = machine.annotations();
    let yes = |k: &str| a.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    (
        yes(machine_annotations::HOLD),
        a.get(machine_annotations::RETRY).cloned(),
        yes(super::SKIP_ANNOTATION),
    )
}
