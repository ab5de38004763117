//! An in-process stand-in for the Kubernetes API server, on a loopback address, for controller
//! tests and the memory benchmark: list (paged by `limit`/`continue`), watch, get, create, patch
//! (apply, merge, strategic as merge, JSON patch), delete with finalizers and owner-reference
//! garbage collection, generation on spec changes, metadata-only answers
//! (`PartialObjectMetadata`, as kube's `Api<PartialObjectMeta<K>>` asks), and a log of every
//! request so tests can assert what the operator wrote.
//!
//! Writes go through what a real API server does before it stores them ([`admission`]): object
//! metadata rules, and for custom resources the structural schema of their CRD — pruning,
//! defaulting, OpenAPI validation. The operator's CRDs are installed when the fake starts; a CRD
//! applied later is installed the same way and reported `Established`.
//!
//! It is not an apiserver: no CEL rules, no RBAC, server-side apply keeps no field ownership
//! (one writer owns everything it applies, which is how the operator uses it).

pub mod admission;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Where CRDs live.
const CRD_COLLECTION: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// How many watch events are kept for watches that resume from an older resourceVersion.
const HISTORY: usize = 50_000;

/// One request the fake served.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
    pub status: u16,
}

/// `(api prefix + resource)`, namespace, name.
type Key = (String, String, String);

#[derive(Clone, Debug)]
struct WatchEvent {
    rv: u64,
    collection: String,
    namespace: String,
    kind: &'static str,
    object: Arc<Value>,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<WatchEvent>,
    requests: Vec<RecordedRequest>,
    record_requests: bool,
    /// Resources (plural, e.g. `leases`) whose every request fails with this status: an API
    /// server the operator can no longer reach for them.
    failing: BTreeMap<String, u16>,
    /// Custom resources' body schemas by collection path, from the CRDs stored.
    schemas: BTreeMap<String, Value>,
    /// Collections whose CRD enables the status subresource: writes to the object leave its
    /// status alone, writes to `/status` change nothing else.
    status_subresources: std::collections::BTreeSet<String>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<WatchEvent>,
}

/// A running fake API server.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// A parsed request path.
#[derive(Debug)]
struct Target {
    /// `/apis/group/version/resource` or `/api/v1/resource` (namespace removed).
    collection: String,
    api_version: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, api_version, rest) = match *seg.first()? {
        "api" => (
            format!("/api/{}", seg.get(1)?),
            seg.get(1)?.to_string(),
            &seg[2..],
        ),
        "apis" => (
            format!("/apis/{}/{}", seg.get(1)?, seg.get(2)?),
            format!("{}/{}", seg.get(1)?, seg.get(2)?),
            &seg[3..],
        ),
        _ => return None,
    };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let resource = rest.first()?.to_string();
    Some(Target {
        collection: format!("{prefix}/{resource}"),
        api_version,
        resource,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "migrationplans" => "MigrationPlan",
        "machinemigrations" => "MachineMigration",
        "configmaps" => "ConfigMap",
        "events" => "Event",
        "leases" => "Lease",
        "secrets" => "Secret",
        "namespaces" => "Namespace",
        "customresourcedefinitions" => "CustomResourceDefinition",
        _ => "Object",
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Equality-only label selectors (`a=b,c=d`), which is what the operator sends.
fn matches_selector(obj: &Value, selector: Option<&str>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        let v = v.trim_start_matches('=');
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v)
    })
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status_error(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// An object as `PartialObjectMetadata` (what the apiserver answers to
/// `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`).
fn partial_metadata(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

/// A list's `continue` token: the resourceVersion of the first page and the last key served.
fn continue_token(rv: u64, key: &Key) -> String {
    format!("{rv}/{}/{}", key.1, key.2)
}

fn parse_continue(token: &str) -> Option<(u64, String, String)> {
    let mut parts = token.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, parts.next()?.to_string(), parts.next()?.to_string()))
}

impl Store {
    /// A list, in pages of `limit` objects when asked (`continue` resumes after the last key
    /// served). Unlike the apiserver, later pages show objects as they are now rather than at
    /// the first page's resourceVersion (which every page reports); a watch from that version
    /// replays the changes made in between, so a reflector ends up with the same state.
    fn list(&self, t: &Target, query: &str, metadata_only: bool) -> (u16, Value) {
        let ns = t.namespace.clone().unwrap_or_default();
        let selector = query_param(query, "labelSelector");
        let limit = query_param(query, "limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0);
        let (rv, after) = match query_param(query, "continue").filter(|c| !c.is_empty()) {
            Some(token) => match parse_continue(&token) {
                Some((rv, ns, name)) => (rv, Some((t.collection.clone(), ns, name))),
                None => {
                    return status_error(
                        400,
                        "BadRequest",
                        format!("invalid continue token {token:?}"),
                    );
                }
            },
            None => (self.rv, None),
        };
        let range = match &after {
            Some(k) => self
                .objects
                .range::<Key, _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => self.objects.range::<Key, _>(..),
        };
        let mut matching = range
            .filter(|(k, _)| k.0 == t.collection && (t.namespace.is_none() || k.1 == ns))
            .filter(|(_, o)| matches_selector(o, selector.as_deref()));
        let mut items = Vec::new();
        let mut last = None;
        for (k, o) in matching.by_ref() {
            items.push(if metadata_only {
                partial_metadata(o)
            } else {
                o.clone()
            });
            last = Some(k);
            if limit.is_some_and(|l| items.len() >= l) {
                break;
            }
        }
        let more = limit.is_some() && matching.next().is_some();
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let (true, Some(k)) = (more, last) {
            meta["continue"] = json!(continue_token(rv, k));
        }
        let (api_version, kind) = if metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
            )
        } else {
            (
                t.api_version.clone(),
                format!("{}List", kind_of(&t.resource)),
            )
        };
        (
            200,
            json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "items": items}),
        )
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(
        &mut self,
        tx: &broadcast::Sender<WatchEvent>,
        key: &Key,
        kind: &'static str,
        obj: &Value,
    ) {
        let ev = WatchEvent {
            rv: self.rv,
            collection: key.0.clone(),
            namespace: key.1.clone(),
            kind,
            object: Arc::new(obj.clone()),
        };
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(ev.clone());
        let _ = tx.send(ev);
    }

    /// Store `obj` (new or changed), stamping resourceVersion and emitting the watch event.
    fn put(&mut self, tx: &broadcast::Sender<WatchEvent>, key: Key, mut obj: Value, added: bool) {
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers_empty = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        if deleting && finalizers_empty {
            self.objects.remove(&key);
            self.emit(tx, &key, "DELETED", &obj);
            self.collect_garbage(tx, &obj);
            return;
        }
        self.emit(tx, &key, if added { "ADDED" } else { "MODIFIED" }, &obj);
        self.objects.insert(key, obj);
    }

    /// Delete the dependents of a deleted owner (background cascading deletion).
    fn collect_garbage(&mut self, tx: &broadcast::Sender<WatchEvent>, owner: &Value) {
        let Some(uid) = owner.pointer("/metadata/uid").and_then(Value::as_str) else {
            return;
        };
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            if let Some(mut o) = self.objects.get(&k).cloned() {
                o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                self.put(tx, k, o, false);
            }
        }
    }

    /// What the API server does before it stores a write: metadata rules, the schema of a custom
    /// resource's CRD, and for a CRD itself, the structural check and its establishment.
    fn admit(&mut self, t: &Target, obj: &mut Value) -> Result<(), (u16, Value)> {
        let mut errors: Vec<String> = admission::check_object(&t.resource, obj)
            .iter()
            .map(ToString::to_string)
            .collect();
        if let Some(schema) = self.schemas.get(&t.collection) {
            errors.extend(
                admission::admit_custom_resource(schema, obj)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        if t.collection == CRD_COLLECTION {
            match serde_json::from_value::<CustomResourceDefinition>(obj.clone()) {
                Ok(crd) => errors.extend(
                    crate::api::crd::structural_violations(&crd)
                        .iter()
                        .map(|v| format!("spec.{v}")),
                ),
                Err(e) => errors.push(format!("<root>: not a CustomResourceDefinition: {e}")),
            }
        }
        if !errors.is_empty() {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(status_error(
                422,
                "Invalid",
                format!(
                    "{} {name:?} is invalid: [{}]",
                    kind_of(&t.resource),
                    errors.join(", ")
                ),
            ));
        }
        if t.collection == CRD_COLLECTION {
            self.establish(obj);
        }
        Ok(())
    }

    /// Serve a CRD's custom resources (with its schemas) and report it as the API server's CRD
    /// controllers would: names accepted, established.
    fn establish(&mut self, crd: &mut Value) {
        let text = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let (group, plural) = (
            text("/spec/group").to_string(),
            text("/spec/names/plural").to_string(),
        );
        let mut stored = Vec::new();
        for version in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = version
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if version.get("storage").and_then(Value::as_bool) == Some(true) {
                stored.push(json!(name));
            }
            let collection = format!("/apis/{group}/{name}/{plural}");
            if version.pointer("/subresources/status").is_some() {
                self.status_subresources.insert(collection.clone());
            } else {
                self.status_subresources.remove(&collection);
            }
            match version.pointer("/schema/openAPIV3Schema") {
                Some(schema) if version.get("served").and_then(Value::as_bool) != Some(false) => {
                    self.schemas
                        .insert(collection, admission::body_schema(schema));
                }
                _ => {
                    self.schemas.remove(&collection);
                }
            }
        }
        let condition = |type_: &str, reason: &str| {
            json!({"type": type_, "status": "True", "reason": reason, "message": "",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        crd["status"] = json!({
            "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({})),
            "storedVersions": stored,
            "conditions": [
                condition("NamesAccepted", "NoConflicts"),
                condition("Established", "InitialNamesAccepted"),
            ],
        });
    }

    /// `obj` with the status the stored object has (or none): what a write to an object whose
    /// status is a subresource keeps of it.
    fn keep_status(&self, t: &Target, mut obj: Value, existing: Option<&Value>) -> Value {
        if t.subresource.is_none() && self.status_subresources.contains(&t.collection) {
            match existing.and_then(|e| e.get("status")) {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    if let Some(o) = obj.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        obj
    }

    fn create(
        &mut self,
        tx: &broadcast::Sender<WatchEvent>,
        t: &Target,
        ns: &str,
        mut obj: Value,
    ) -> (u16, Value) {
        let Some(name) = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                obj.pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                    .map(|g| format!("{g}{}", self.rv + 1))
            })
        else {
            return status_error(422, "Invalid", "metadata.name is required".into());
        };
        let key = (t.collection.clone(), ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return status_error(
                409,
                "AlreadyExists",
                format!("{} {name} already exists", t.resource),
            );
        }
        let uid = format!("uid-{}", self.rv + 1);
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if t.namespace.is_some() {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(uid);
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        obj["apiVersion"] = json!(t.api_version);
        obj["kind"] = json!(kind_of(&t.resource));
        if let Err(refused) = self.admit(t, &mut obj) {
            return refused;
        }
        self.put(tx, key.clone(), obj, true);
        (201, self.objects.get(&key).cloned().unwrap_or(Value::Null))
    }

    fn patch(
        &mut self,
        tx: &broadcast::Sender<WatchEvent>,
        t: &Target,
        key: Key,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let status_only = t.subresource.as_deref() == Some("status");
        if content_type.starts_with("application/apply-patch") {
            if body.get("apiVersion").is_none() || body.get("kind").is_none() {
                return status_error(
                    400,
                    "BadRequest",
                    "an apply patch must set apiVersion and kind".into(),
                );
            }
            if let Some(named) = body.pointer("/metadata/name").and_then(Value::as_str) {
                if named != key.2 {
                    return status_error(
                        400,
                        "BadRequest",
                        format!(
                            "the name of the object ({named}) does not match the name on the URL ({})",
                            key.2
                        ),
                    );
                }
            }
        }
        let Some(existing) = self.objects.get(&key).cloned() else {
            if content_type.starts_with("application/apply-patch") && !status_only {
                let body = self.keep_status(t, body, None);
                return self.create(tx, t, &key.1, body);
            }
            return status_error(
                404,
                "NotFound",
                format!("{} \"{}\" not found", t.resource, key.2),
            );
        };
        let mut updated = existing.clone();
        if content_type.starts_with("application/json-patch") {
            let patch: json_patch::Patch = match serde_json::from_value(body) {
                Ok(p) => p,
                Err(e) => return status_error(400, "BadRequest", format!("bad JSON patch: {e}")),
            };
            // The apiserver reads a missing list as null (the finalizer helper tests for it).
            if updated["metadata"].get("finalizers").is_none() {
                updated["metadata"]["finalizers"] = Value::Null;
            }
            let result = json_patch::patch(&mut updated, &patch);
            if updated["metadata"]["finalizers"].is_null() {
                if let Some(m) = updated["metadata"].as_object_mut() {
                    m.remove("finalizers");
                }
            }
            if let Err(e) = result {
                return status_error(422, "Invalid", format!("JSON patch failed: {e}"));
            }
        } else if status_only {
            if let Some(s) = body.get("status") {
                if content_type.starts_with("application/apply-patch") {
                    updated["status"] = s.clone();
                } else {
                    merge_patch(&mut updated["status"], s);
                }
            }
        } else if content_type.starts_with("application/apply-patch") {
            // One manager owns what it applies: spec is replaced, metadata maps merged.
            if let Some(spec) = body.get("spec") {
                updated["spec"] = spec.clone();
            }
            if let Some(data) = body.get("data") {
                updated["data"] = data.clone();
            }
            if let Some(m) = body.get("metadata") {
                for field in ["labels", "annotations"] {
                    if let Some(v) = m.get(field) {
                        merge_patch(&mut updated["metadata"][field], v);
                    }
                }
                if let Some(v) = m.get("ownerReferences") {
                    updated["metadata"]["ownerReferences"] = v.clone();
                }
            }
            for (k, v) in body.as_object().into_iter().flatten() {
                if !["spec", "data", "metadata", "status", "apiVersion", "kind"]
                    .contains(&k.as_str())
                {
                    updated[k] = v.clone();
                }
            }
        } else {
            let mut b = body;
            if let Some(o) = b.as_object_mut() {
                o.remove("status");
            }
            merge_patch(&mut updated, &b);
        }
        if status_only {
            // The status subresource changes nothing but status.
            let s = updated.get("status").cloned();
            updated = existing.clone();
            if let Some(s) = s {
                updated["status"] = s;
            }
        }
        let mut updated = self.keep_status(t, updated, Some(&existing));
        if let Err(refused) = self.admit(t, &mut updated) {
            return refused;
        }
        if !status_only && existing.get("spec") != updated.get("spec") {
            let g = existing
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            updated["metadata"]["generation"] = json!(g + 1);
        }
        if updated == existing {
            return (200, existing);
        }
        self.put(tx, key.clone(), updated.clone(), false);
        let current = self.objects.get(&key).cloned().unwrap_or(updated);
        (200, current)
    }

    fn delete(&mut self, tx: &broadcast::Sender<WatchEvent>, t: &Target, key: Key) -> (u16, Value) {
        let Some(mut obj) = self.objects.get(&key).cloned() else {
            return status_error(
                404,
                "NotFound",
                format!("{} \"{}\" not found", t.resource, key.2),
            );
        };
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            self.put(tx, key, obj.clone(), false);
        }
        (200, obj)
    }
}

impl FakeApiServer {
    /// Start on `127.0.0.1` (a free port), with the operator's CRDs installed.
    pub async fn start() -> std::io::Result<Self> {
        let (events, _) = broadcast::channel(65_536);
        let mut store = Store {
            record_requests: true,
            ..Store::default()
        };
        let crds = parse_path(CRD_COLLECTION)
            .ok_or_else(|| std::io::Error::other("the CRD collection path does not parse"))?;
        for (file, crd) in crate::api::crd::all() {
            let crd = serde_json::to_value(crd).map_err(std::io::Error::other)?;
            let (code, answer) = store.create(&events, &crds, "", crd);
            if code >= 300 {
                return Err(std::io::Error::other(format!(
                    "installing the CRD of {file} was refused: {answer}"
                )));
            }
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            events,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server, with `default_namespace` as its default.
    pub fn client(&self, default_namespace: &str) -> Result<kube::Client, kube::Error> {
        let url = self
            .url()
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| kube::Error::Service(Box::new(e)))?;
        let mut config = kube::Config::new(url);
        config.default_namespace = default_namespace.to_string();
        kube::Client::try_from(config)
    }

    /// A kubeconfig file's text pointing at this server (for a child process).
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop keeping the request log (the benchmark would otherwise grow it without bound).
    pub fn set_record_requests(&self, on: bool) {
        self.store().record_requests = on;
    }

    /// Fail every request for `resource` (plural, e.g. `"leases"`) with `status` (`None`: serve
    /// it again). Watches of it end and cannot be re-established.
    pub fn fail_resource(&self, resource: &str, status: Option<u16>) {
        let mut store = self.store();
        match status {
            Some(code) => store.failing.insert(resource.to_string(), code),
            None => store.failing.remove(resource),
        };
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.store().requests.clone()
    }

    /// Every stored object of a collection path such as `/apis/amamigrator.io/v1alpha1/machinemigrations`.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        self.store()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == collection)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn object(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        self.store()
            .objects
            .get(&(
                collection.to_string(),
                namespace.to_string(),
                name.to_string(),
            ))
            .cloned()
    }

    /// Create an object as a user would (`kubectl create`), without recording a request; unlike
    /// a request, the status given is kept (a test's shortcut for a controller's earlier writes).
    pub fn create(
        &self,
        collection_path: &str,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, String> {
        let t = parse_path(collection_path)
            .ok_or_else(|| format!("not an API path: {collection_path}"))?;
        let (code, v) = self.store().create(&self.shared.events, &t, namespace, obj);
        if code < 300 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let Some(t) = parse_path(&path) else {
        return json_response(
            404,
            json!({"kind": "Status", "code": 404, "message": "unknown path"}),
        );
    };
    let failing = shared
        .store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .failing
        .get(&t.resource)
        .copied();
    if let Some(code) = failing {
        let (code, body) = status_error(
            code,
            "ServiceUnavailable",
            format!("{} are unavailable (fault injected)", t.resource),
        );
        return json_response(code, body);
    }
    // `Api<PartialObjectMeta<K>>` asks for metadata only (kube's metadata watchers).
    let metadata_only = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let watch = matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"));
    if method == Method::GET && watch {
        return watch_response(&shared, &t, &query, metadata_only);
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let (code, out) = {
        let mut store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
        let tx = &shared.events;
        let result = match (&method, &t.name) {
            (&Method::GET, None) => store.list(&t, &query, metadata_only),
            (&Method::GET, Some(name)) => {
                match store
                    .objects
                    .get(&(t.collection.clone(), ns.clone(), name.clone()))
                {
                    Some(o) => (200, o.clone()),
                    None => status_error(
                        404,
                        "NotFound",
                        format!("{} \"{name}\" not found", t.resource),
                    ),
                }
            }
            (&Method::POST, None) => match body_json.clone() {
                Some(b) => {
                    let b = store.keep_status(&t, b, None);
                    store.create(tx, &t, &ns, b)
                }
                None => status_error(400, "BadRequest", "a body is required".into()),
            },
            (&Method::PATCH, Some(_))
                if content_type.starts_with("application/apply-patch")
                    && query_param(&query, "fieldManager").is_none_or(|m| m.is_empty()) =>
            {
                status_error(
                    400,
                    "BadRequest",
                    "fieldManager: Required value: is required for apply patch".into(),
                )
            }
            (&Method::PATCH, Some(name)) => match body_json.clone() {
                Some(b) => store.patch(
                    tx,
                    &t,
                    (t.collection.clone(), ns.clone(), name.clone()),
                    &content_type,
                    b,
                ),
                None => status_error(400, "BadRequest", "a body is required".into()),
            },
            (&Method::PUT, Some(name)) => match body_json.clone() {
                Some(b) => {
                    let key = (t.collection.clone(), ns.clone(), name.clone());
                    let existing = store.objects.get(&key).cloned();
                    let mut b = store.keep_status(&t, b, existing.as_ref());
                    if existing.is_none() {
                        store.create(tx, &t, &ns, b)
                    } else if let Err(refused) = store.admit(&t, &mut b) {
                        refused
                    } else {
                        store.put(tx, key.clone(), b, false);
                        (200, store.objects.get(&key).cloned().unwrap_or(Value::Null))
                    }
                }
                None => status_error(400, "BadRequest", "a body is required".into()),
            },
            (&Method::DELETE, Some(name)) => {
                store.delete(tx, &t, (t.collection.clone(), ns.clone(), name.clone()))
            }
            _ => status_error(405, "MethodNotAllowed", format!("{method} {path}")),
        };
        if store.record_requests {
            store.requests.push(RecordedRequest {
                method: method.to_string(),
                path: path.clone(),
                query: query.clone(),
                content_type,
                body: body_json,
                status: result.0,
            });
        }
        result
    };
    // Objects (not lists, which answer in their own form, nor Status errors) as metadata only.
    let is_object = out.get("metadata").is_some()
        && !matches!(
            out["kind"].as_str(),
            Some("Status" | "PartialObjectMetadataList")
        )
        && !(method == Method::GET && t.name.is_none());
    if metadata_only && code < 300 && is_object {
        return json_response(code, partial_metadata(&out));
    }
    json_response(code, out)
}

fn json_response(code: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A watch: replay history after the requested resourceVersion, then follow live events; a
/// lagging watcher's stream ends and the client resumes from its last resourceVersion.
fn watch_response(shared: &Arc<Shared>, t: &Target, query: &str, metadata_only: bool) -> Response {
    let since: u64 = query_param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let selector = query_param(query, "labelSelector");
    let collection = t.collection.clone();
    let namespace = t.namespace.clone();
    let rx = shared.events.subscribe();
    let backlog: Vec<WatchEvent> = {
        let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .history
            .iter()
            .filter(|e| e.rv > since)
            .cloned()
            .collect()
    };
    let last = backlog.last().map(|e| e.rv).unwrap_or(since);
    let wanted = move |e: &WatchEvent| {
        e.collection == collection
            && namespace.as_ref().is_none_or(|n| *n == e.namespace)
            && matches_selector(&e.object, selector.as_deref())
    };
    let wanted2 = wanted.clone();
    let line = move |e: &WatchEvent| {
        let text = if metadata_only {
            json!({"type": e.kind, "object": partial_metadata(&e.object)})
        } else {
            json!({"type": e.kind, "object": *e.object})
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("{text}\n")))
    };
    let replay = futures::stream::iter(
        backlog
            .into_iter()
            .filter(move |e| wanted(e))
            .map(move |e| line(&e)),
    );
    let live = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((Some(e), rx)),
            Err(broadcast::error::RecvError::Lagged(_))
            | Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .filter_map(move |e| {
        let keep = e.filter(|e| e.rv > last && wanted2(e));
        async move { keep.map(|e| line(&e)) }
    });
    Response::builder()
        .status(200)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(replay.chain(live)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        let t = parse_path("/apis/amamigrator.io/v1alpha1/namespaces/ns1/migrationplans/p/status")
            .unwrap();
        assert_eq!(t.collection, "/apis/amamigrator.io/v1alpha1/migrationplans");
        assert_eq!(t.namespace.as_deref(), Some("ns1"));
        assert_eq!(t.name.as_deref(), Some("p"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_path("/api/v1/namespaces/x/configmaps").unwrap();
        assert_eq!(t.collection, "/api/v1/configmaps");
        assert!(t.name.is_none());
        let t = parse_path("/apis/amamigrator.io/v1alpha1/machinemigrations").unwrap();
        assert!(t.namespace.is_none());
        assert!(parse_path("/healthz").is_none());
    }

    fn store_with(n: usize) -> (Store, broadcast::Sender<WatchEvent>, Target) {
        let (tx, _) = broadcast::channel(16);
        let mut store = Store::default();
        let t =
            parse_path("/apis/amamigrator.io/v1alpha1/namespaces/ns1/machinemigrations").unwrap();
        for i in 0..n {
            let labels = if i % 2 == 0 {
                json!({"p": "a"})
            } else {
                json!({"p": "b"})
            };
            let (code, _) = store.create(
                &tx,
                &t,
                "ns1",
                json!({"metadata": {"name": format!("m{i}"), "labels": labels}, "spec": {"x": i}}),
            );
            assert_eq!(code, 201);
        }
        (store, tx, t)
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn lists_are_paged_by_limit_and_continue() {
        let (mut store, tx, t) = store_with(7);
        let (code, first) = store.list(&t, "labelSelector=p%3Da&limit=3", false);
        assert_eq!(code, 200);
        assert_eq!(names(&first), ["m0", "m2", "m4"]);
        let rv = first["metadata"]["resourceVersion"].clone();
        let token = first["metadata"]["continue"].as_str().unwrap().to_string();
        // A change between pages: later pages show it, every page reports the first page's rv.
        store.create(
            &tx,
            &t,
            "ns1",
            json!({"metadata": {"name": "m9", "labels": {"p": "a"}}}),
        );
        let q = format!("labelSelector=p%3Da&limit=3&continue={token}");
        let (_, second) = store.list(&t, &q, false);
        assert_eq!(names(&second), ["m6", "m9"]);
        assert_eq!(second["metadata"]["resourceVersion"], rv);
        assert!(second["metadata"].get("continue").is_none());
        // Without a limit: everything in one page, no token.
        let (_, all) = store.list(&t, "", false);
        assert_eq!(names(&all).len(), 8);
        assert!(all["metadata"].get("continue").is_none());
        let (code, _) = store.list(&t, "limit=3&continue=garbage", false);
        assert_eq!(code, 400);
    }

    #[test]
    fn metadata_only_lists_and_gets_drop_spec_and_status() {
        let (store, _, t) = store_with(2);
        let (_, list) = store.list(&t, "limit=1", true);
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
        let item = &list["items"][0];
        assert_eq!(item["kind"], "PartialObjectMetadata");
        assert_eq!(item["metadata"]["name"], "m0");
        assert_eq!(item["metadata"]["labels"]["p"], "a");
        assert!(item.get("spec").is_none());
        assert!(list["metadata"]["continue"].is_string());
    }

    #[test]
    fn selectors_match_equality_terms() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(matches_selector(&o, Some("a=1,b=2")));
        assert!(matches_selector(&o, Some("a==1")));
        assert!(!matches_selector(&o, Some("a=2")));
        assert!(matches_selector(&o, None));
    }
}
