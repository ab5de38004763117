//! The controllers. A `MigrationPlan` gets a finalizer, then one engine task (the same engine
//! as `migrate`, over [`KubeState`]); the reconcile only decides whether that task must start,
//! restart (new generation, approvals, a person's machine annotations) or stop (pause,
//! deletion). A `MachineMigration` reconcile turns a person's hold/retry/skip annotations into an
//! event and a restart of its plan's engine, which applies them as it loads its machines.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use ::kube::runtime::controller::{Action, Controller};
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ::kube::runtime::finalizer::{Event as Finalizer, finalizer};
use ::kube::runtime::reflector::ObjectRef;
use ::kube::runtime::{WatchStreamExt, watcher};
use ::kube::{Client, Resource, ResourceExt};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::api::conditions::{self, reasons, status as cstatus, types as ctypes};
use crate::api::machine::{annotations as machine_annotations, labels};
use crate::api::plan::PlanPhase;
use crate::api::{MachineMigration, MigrationPlan};
use crate::azure::ArmClient;
use crate::engine::failure::Diagnosis;
use crate::engine::{Clock, Engine, EngineOptions, ProgressSink, RollbackEnd, RunEnd, Snapshot};

use super::credentials::{self, ArmFactory, CredentialCache, CredentialProblem, Resolved};
use super::metrics::{ControllerLabels, ErrorLabels, Metrics};
use super::state::{KubeState, list_paged, steering};
use super::{CONTROLLER_NAME, FIELD_MANAGER, FINALIZER, plan_annotations};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: ::kube::Error,
    },
    #[error("finalizer of MigrationPlan: {0}")]
    Finalizer(#[source] Box<::kube::runtime::finalizer::Error<Error>>),
    #[error("the engine of {namespace}/{name} cannot start: {message}")]
    Engine {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("rollback of {namespace}/{name} failed: {message}")]
    Rollback {
        namespace: String,
        name: String,
        message: String,
    },
}

impl Error {
    /// The metric label and error-policy key.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Engine { .. } => "engine",
            Self::Rollback { .. } => "rollback",
        }
    }
}

/// A plan's engine failures in a row.
#[derive(Clone, Debug, Default)]
struct FailureRecord {
    count: u32,
    /// The message of the last Warning event published.
    published: Option<String>,
}

/// Notices an engine's first pass after a failure (Azure answered, machines in scope): the
/// backoff is reset and one Normal event says so. Chains the configured sink, if any.
struct RecoverySink {
    ctx: Arc<Context>,
    plan: Arc<MigrationPlan>,
    seen: AtomicBool,
    inner: Option<Arc<dyn ProgressSink>>,
}

impl ProgressSink for RecoverySink {
    fn update(&self, snapshot: &Snapshot) {
        if let Some(inner) = &self.inner {
            inner.update(snapshot);
        }
        if self.seen.swap(true, Ordering::Relaxed) {
            return;
        }
        let key = key_of(self.plan.as_ref());
        let Some(was) = self.ctx.failures().remove(&key) else {
            return;
        };
        tracing::info!(namespace = %key.0, plan = %key.1, failures = was.count, "plan engine recovered");
        let (ctx, plan) = (self.ctx.clone(), self.plan.clone());
        tokio::spawn(async move {
            ctx.publish(
                &plan,
                EventType::Normal,
                crate::engine::failure::reasons::RECOVERED,
                format!(
                    "the engine runs again after {} failure(s); the Degraded/Blocked condition is cleared",
                    was.count
                ),
            )
            .await;
        });
    }
}

/// What an engine task was started with; a difference restarts it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RunConfig {
    generation: Option<i64>,
    approvals: Vec<String>,
    /// Bumped by the machine controller when a person changed a machine's annotations.
    restart_epoch: u64,
    /// The plan's credential (Secret name + resourceVersion, client ID, or empty for the
    /// operator's own): a rotated Secret restarts the engine with a new client.
    credential: String,
}

struct Runner {
    config: RunConfig,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    end: Arc<Mutex<Option<Result<RunEnd, Diagnosis>>>>,
    /// Steering annotations of each machine when the engine loaded them.
    steering: HashMap<String, (bool, Option<String>, bool)>,
    started: Instant,
}

/// Everything the reconcilers share.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Machine step events (many, never repeated): created without the Recorder's cache.
    pub publisher: super::events::Publisher,
    pub metrics: Arc<Metrics>,
    pub arm: ArmClient,
    pub clock: Arc<dyn Clock>,
    pub engine_options: EngineOptions,
    /// Wait before restarting an engine that stalled or failed.
    pub restart_after: Duration,
    /// First wait before restarting an engine that ended with an error; it doubles with every
    /// failure in a row up to `failure_backoff_max`.
    pub failure_backoff: Duration,
    pub failure_backoff_max: Duration,
    runners: Mutex<HashMap<(String, String), Runner>>,
    /// Engine failures in a row per plan, with the last message published (one Warning event
    /// per distinct message, not one per retry).
    failures: Mutex<HashMap<(String, String), FailureRecord>>,
    epochs: Mutex<HashMap<(String, String), u64>>,
    /// An engine ended or a person steered a machine: re-reconcile every plan. A broadcast, so
    /// the controllers can be started again after a pause in leadership.
    plan_trigger: tokio::sync::broadcast::Sender<()>,
    /// Namespaces the controllers watch; empty: every namespace (cluster-wide RBAC).
    watch_namespaces: Vec<String>,
    /// `true` once every reflector of [`run_controllers`] listed its objects (readiness).
    caches_synced: tokio::sync::watch::Sender<bool>,
    /// ARM clients of plans with their own credentials (`spec.azure`).
    credentials: CredentialCache,
    arm_factory: ArmFactory,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        arm: ArmClient,
        clock: Arc<dyn Clock>,
        engine_options: EngineOptions,
        instance: Option<String>,
    ) -> Arc<Self> {
        let publisher =
            super::events::Publisher::new(client.clone(), CONTROLLER_NAME, instance.clone());
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.into(),
                instance,
            },
        );
        metrics.observe_arm_client(arm.clone());
        let (tx, _) = tokio::sync::broadcast::channel(64);
        let arm_factory = credentials::factory_from(&arm);
        Arc::new(Self {
            client,
            recorder,
            publisher,
            metrics,
            arm,
            clock,
            engine_options,
            restart_after: Duration::from_secs(60),
            failure_backoff: Duration::from_secs(10),
            failure_backoff_max: Duration::from_secs(300),
            runners: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            epochs: Mutex::new(HashMap::new()),
            plan_trigger: tx,
            watch_namespaces: Vec::new(),
            caches_synced: tokio::sync::watch::Sender::new(false),
            credentials: CredentialCache::default(),
            arm_factory,
        })
    }

    /// Build plans' own ARM clients with `factory` instead of the operator's configuration with
    /// another credential (tests: a simulator needs no token). Call before the context is shared.
    pub fn with_arm_factory(mut self: Arc<Self>, factory: ArmFactory) -> Arc<Self> {
        if let Some(ctx) = Arc::get_mut(&mut self) {
            ctx.arm_factory = factory;
        }
        self
    }

    async fn resolve_arm(&self, plan: &MigrationPlan) -> Result<Resolved, CredentialProblem> {
        let r = self
            .credentials
            .resolve(&self.client, plan, &self.arm, &self.arm_factory)
            .await?;
        if r.new {
            self.metrics.observe_plan_arm_client(r.client.clone());
        }
        Ok(r)
    }

    /// The ARM client `plan` acts through: the operator's, or the one of the plan's own
    /// credentials (`spec.azure`), cached until its Secret changes.
    pub async fn arm_for(&self, plan: &MigrationPlan) -> Result<ArmClient, CredentialProblem> {
        Ok(self.resolve_arm(plan).await?.client)
    }

    /// Watch only these namespaces (namespaced RBAC); empty means every namespace. Call before
    /// the context is shared.
    pub fn with_watch_namespaces(mut self: Arc<Self>, namespaces: Vec<String>) -> Arc<Self> {
        if let Some(ctx) = Arc::get_mut(&mut self) {
            ctx.watch_namespaces = namespaces;
        }
        self
    }

    /// Reads `true` once the controllers' caches are synced (the leader's readiness).
    pub fn caches_synced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.caches_synced.subscribe()
    }

    fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Runner>> {
        self.runners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), FailureRecord>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wait before restarting a plan's engine after its `count`-th failure in a row.
    fn failure_backoff(&self, count: u32) -> Duration {
        let doubled = self
            .failure_backoff
            .saturating_mul(1u32 << count.saturating_sub(1).min(16));
        doubled.min(self.failure_backoff_max)
    }

    fn epoch(&self, key: &(String, String)) -> u64 {
        *self
            .epochs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .unwrap_or(&0)
    }

    /// Stop a plan's engine and wait for it (it finishes its pass and persists every machine).
    async fn stop_runner(&self, key: &(String, String)) {
        let runner = self.runners().remove(key);
        if let Some(r) = runner {
            r.stop.store(true, Ordering::Relaxed);
            let _ = r.task.await;
        }
    }

    /// Stop every engine (shutdown, lost leadership).
    pub async fn stop_all(&self) {
        let keys: Vec<_> = self.runners().keys().cloned().collect();
        for k in keys {
            self.stop_runner(&k).await;
        }
    }

    /// Stop every engine at once, without waiting for its pass (an engine that did not stop
    /// within the grace while this replica may no longer lead).
    pub fn abort_all(&self) {
        for (_, r) in self.runners().drain() {
            r.stop.store(true, Ordering::Relaxed);
            r.task.abort();
        }
    }

    /// The plans (namespace, name) whose engine task is running now.
    pub fn running_plans(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .runners()
            .iter()
            .filter(|(_, r)| !r.task.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    async fn publish(&self, plan: &MigrationPlan, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        let r = self.recorder.publish(&ev, &plan.object_ref(&())).await;
        self.metrics.kube_write("events", r.is_ok());
        if let Err(e) = r {
            tracing::warn!(error = %e, reason, "cannot publish an event");
        }
    }
}

fn key_of<K: Resource>(obj: &K) -> (String, String) {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

fn approvals(plan: &MigrationPlan) -> Vec<String> {
    let mut v: Vec<String> = plan
        .annotations()
        .get(plan_annotations::APPROVE_WAVE)
        .map(|s| {
            s.split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

fn paused(plan: &MigrationPlan) -> bool {
    plan.spec.paused
        || plan
            .annotations()
            .get(plan_annotations::PAUSE)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Server-side apply of the plan's status (never its spec or metadata).
async fn patch_plan_status(
    ctx: &Context,
    plan: &MigrationPlan,
    change: impl FnOnce(&mut crate::api::MigrationPlanStatus),
) -> Result<(), Error> {
    let (ns, name) = key_of(plan);
    let mut status = plan.status.clone().unwrap_or_default();
    change(&mut status);
    status.observed_generation = plan.metadata.generation;
    if plan.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<MigrationPlan> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": MigrationPlan::api_version(&()),
        "kind": MigrationPlan::kind(&()),
        "status": status,
    });
    let r = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await;
    ctx.metrics.kube_write("migrationplans/status", r.is_ok());
    r.map(|_| ()).map_err(|source| Error::Kube {
        action: "patch the status of MigrationPlan",
        namespace: ns,
        name,
        source,
    })
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Reconcile one MigrationPlan: finalizer first, then apply or clean up.
pub async fn reconcile_plan(plan: Arc<MigrationPlan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let labels = ControllerLabels {
        controller: "migrationplan".into(),
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let (ns, _) = key_of(plan.as_ref());
    let api: Api<MigrationPlan> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, plan, |event| async {
        match event {
            Finalizer::Apply(p) => apply_plan(p, ctx.clone()).await,
            Finalizer::Cleanup(p) => cleanup_plan(p, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn apply_plan(plan: Arc<MigrationPlan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = key_of(plan.as_ref());
    if paused(&plan) {
        let was_running = ctx.runners().contains_key(&key);
        ctx.stop_runner(&key).await;
        let already = plan.status.as_ref().and_then(|s| s.phase) == Some(PlanPhase::Paused);
        patch_plan_status(&ctx, &plan, |s| {
            s.phase = Some(PlanPhase::Paused);
            conditions::set_condition(
                &mut s.conditions,
                ctypes::PROGRESSING,
                cstatus::FALSE,
                reasons::PAUSED,
                "paused by spec.paused or the amamigrator.io/pause annotation; in-flight steps were finished",
                plan.metadata.generation,
                now(),
            );
        })
        .await?;
        if !already || was_running {
            ctx.publish(
                &plan,
                EventType::Normal,
                reasons::PAUSED,
                "new work stopped; remove the pause to resume".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    let resolved = match ctx.resolve_arm(&plan).await {
        Ok(r) => r,
        Err(problem) => return credentials_unavailable(&ctx, &plan, problem).await,
    };
    credentials_available(&ctx, &plan).await?;
    let config = RunConfig {
        generation: plan.metadata.generation,
        approvals: approvals(&plan),
        restart_epoch: ctx.epoch(&key),
        credential: resolved.fingerprint.clone(),
    };
    let (running_same, ended) = {
        let runners = ctx.runners();
        match runners.get(&key) {
            Some(r) => (
                r.config == config,
                r.end
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .map(|e| (e, r.started.elapsed())),
            ),
            None => (false, None),
        }
    };
    if running_same {
        match ended {
            None => return Ok(Action::requeue(Duration::from_secs(60))),
            Some((Ok(RunEnd::Completed), _)) => return Ok(Action::await_change()),
            Some((Ok(RunEnd::Refused { errors }), _)) => {
                patch_plan_status(&ctx, &plan, |s| {
                    s.phase = Some(PlanPhase::Failed);
                    conditions::set_condition(
                        &mut s.conditions,
                        ctypes::READY,
                        cstatus::FALSE,
                        reasons::INVALID_SPEC,
                        errors.join("; "),
                        plan.metadata.generation,
                        now(),
                    );
                })
                .await?;
                return Ok(Action::await_change());
            }
            Some((Err(diagnosis), age)) => {
                engine_failed(&ctx, &plan, &diagnosis).await?;
                let count = ctx.failures().get(&key).map_or(1, |f| f.count);
                let wait = ctx.failure_backoff(count);
                if age < wait {
                    return Ok(Action::requeue(wait - age));
                }
            }
            Some((_, age)) if age < ctx.restart_after => {
                return Ok(Action::requeue(ctx.restart_after - age));
            }
            Some(_) => {} // stalled, stopped or failed a while ago: start again
        }
    }
    let resuming = ctx.runners().contains_key(&key);
    ctx.stop_runner(&key).await;
    start_runner(&ctx, plan.clone(), config, resolved.client).await?;
    if !resuming {
        ctx.publish(
            &plan,
            EventType::Normal,
            "EngineStarted",
            format!(
                "migrating generation {}",
                plan.metadata.generation.unwrap_or_default()
            ),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// A plan's engine ended with an error: `phase`, `Ready=False`, `Progressing=False` and
/// `Degraded=True` (or `Blocked=True` where a person must act) with the diagnosis' reason and
/// message. The engine itself sets the condition back to `False` (`EngineRecovered`) once it
/// gets through discovery again.
async fn engine_failed(ctx: &Context, plan: &MigrationPlan, d: &Diagnosis) -> Result<(), Error> {
    let (type_, phase) = if d.blocking {
        (ctypes::BLOCKED, PlanPhase::Blocked)
    } else {
        (ctypes::DEGRADED, PlanPhase::Failed)
    };
    patch_plan_status(ctx, plan, |s| {
        s.phase = Some(phase);
        for (t, status, message) in [
            (type_, cstatus::TRUE, d.message.as_str()),
            (
                ctypes::READY,
                cstatus::FALSE,
                "the engine stopped with an error (see the Degraded or Blocked condition); it is retried with backoff",
            ),
            (
                ctypes::PROGRESSING,
                cstatus::FALSE,
                "the engine stopped with an error; it is retried with backoff",
            ),
        ] {
            conditions::set_condition(
                &mut s.conditions,
                t,
                status,
                d.reason,
                message,
                plan.metadata.generation,
                now(),
            );
        }
    })
    .await
}

/// The plan names credentials that cannot be used: stop its engine (it must not go on acting
/// with withdrawn credentials), say why in a Blocked condition and one Warning event, and look
/// again later (Secrets are read, never watched: no list/watch on Secrets is granted).
async fn credentials_unavailable(
    ctx: &Context,
    plan: &MigrationPlan,
    problem: CredentialProblem,
) -> Result<Action, Error> {
    let key = key_of(plan);
    ctx.stop_runner(&key).await;
    let message = problem.to_string();
    let already = blocked_by_credentials(plan).is_some_and(|m| m == message);
    patch_plan_status(ctx, plan, |s| {
        conditions::set_condition(
            &mut s.conditions,
            ctypes::BLOCKED,
            cstatus::TRUE,
            credentials::REASON_UNAVAILABLE,
            message.clone(),
            plan.metadata.generation,
            now(),
        );
        conditions::set_condition(
            &mut s.conditions,
            ctypes::PROGRESSING,
            cstatus::FALSE,
            credentials::REASON_UNAVAILABLE,
            "waiting for the plan's Azure credentials (see the Blocked condition)",
            plan.metadata.generation,
            now(),
        );
    })
    .await?;
    if !already {
        tracing::warn!(namespace = %key.0, plan = %key.1, problem = %message, "plan credentials unavailable");
        ctx.publish(
            plan,
            EventType::Warning,
            credentials::REASON_UNAVAILABLE,
            message,
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// The message of a Blocked condition this controller set for credentials, if any.
fn blocked_by_credentials(plan: &MigrationPlan) -> Option<&str> {
    plan.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| {
            c.type_ == ctypes::BLOCKED
                && c.status == cstatus::TRUE
                && c.reason == credentials::REASON_UNAVAILABLE
        })
        .map(|c| c.message.as_str())
}

/// Clear a credentials Blocked condition once they can be used again.
async fn credentials_available(ctx: &Context, plan: &MigrationPlan) -> Result<(), Error> {
    if blocked_by_credentials(plan).is_none() {
        return Ok(());
    }
    patch_plan_status(ctx, plan, |s| {
        conditions::set_condition(
            &mut s.conditions,
            ctypes::BLOCKED,
            cstatus::FALSE,
            credentials::REASON_AVAILABLE,
            "the plan's Azure credentials can be read",
            plan.metadata.generation,
            now(),
        );
    })
    .await?;
    ctx.publish(
        plan,
        EventType::Normal,
        credentials::REASON_AVAILABLE,
        "the plan's Azure credentials can be read; resuming".into(),
    )
    .await;
    Ok(())
}

async fn start_runner(
    ctx: &Arc<Context>,
    plan: Arc<MigrationPlan>,
    config: RunConfig,
    arm: ArmClient,
) -> Result<(), Error> {
    let key = key_of(plan.as_ref());
    let state = KubeState::new(
        ctx.client.clone(),
        ctx.publisher.clone(),
        ctx.metrics.clone(),
        &plan,
    )
    .map_err(|e| Error::Engine {
        namespace: key.0.clone(),
        name: key.1.clone(),
        message: e.to_string(),
    })?;
    let mut options = ctx.engine_options.clone();
    options.approvals.extend(config.approvals.iter().cloned());
    let endpoints = arm.config().endpoints.clone();
    let mut engine = Engine::new(arm, Arc::new(state), ctx.clock.clone(), options);
    engine.progress = Some(Arc::new(RecoverySink {
        ctx: ctx.clone(),
        plan: plan.clone(),
        seen: AtomicBool::new(false),
        inner: engine.progress.take(),
    }));
    let stop = engine.stop.clone();
    let end = Arc::new(Mutex::new(None));
    let steering_now = machine_steering(ctx, &key).await;
    let task_end = end.clone();
    let task_ctx = ctx.clone();
    let task_plan = plan.clone();
    let task = tokio::spawn(async move {
        let result = engine
            .run((*task_plan).clone())
            .await
            .map_err(|e| crate::engine::diagnose(&e, &endpoints, &task_plan.spec.workspace));
        match &result {
            Ok(RunEnd::Completed) => {
                task_ctx
                    .publish(
                        &task_plan,
                        EventType::Normal,
                        reasons::COMPLETED,
                        "every machine reached a final state".into(),
                    )
                    .await
            }
            Ok(RunEnd::Stalled { reason }) => {
                task_ctx
                    .publish(&task_plan, EventType::Warning, "Stalled", reason.clone())
                    .await
            }
            Ok(RunEnd::Refused { errors }) => {
                task_ctx
                    .publish(
                        &task_plan,
                        EventType::Warning,
                        reasons::INVALID_SPEC,
                        errors.join("; "),
                    )
                    .await
            }
            Ok(RunEnd::Stopped) => {}
            Err(d) => {
                let key = key_of(task_plan.as_ref());
                let (count, new_message) = {
                    let mut failures = task_ctx.failures();
                    let f = failures.entry(key.clone()).or_default();
                    f.count = f.count.saturating_add(1);
                    let new_message = f.published.as_deref() != Some(d.message.as_str());
                    f.published = Some(d.message.clone());
                    (f.count, new_message)
                };
                let retry_in = task_ctx.failure_backoff(count);
                tracing::error!(
                    namespace = %key.0,
                    plan = %key.1,
                    reason = d.reason,
                    failures = count,
                    retry_in_seconds = retry_in.as_secs(),
                    "plan engine failed: {}",
                    d.message
                );
                if new_message {
                    task_ctx
                        .publish(&task_plan, EventType::Warning, d.reason, d.message.clone())
                        .await
                }
            }
        }
        *task_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        let _ = task_ctx.plan_trigger.send(());
    });
    ctx.runners().insert(
        key,
        Runner {
            config,
            stop,
            task,
            end,
            steering: steering_now,
            started: Instant::now(),
        },
    );
    Ok(())
}

/// The steering annotations of the plan's machines, read as metadata only, page by page.
async fn machine_steering(
    ctx: &Context,
    key: &(String, String),
) -> HashMap<String, (bool, Option<String>, bool)> {
    let api: Api<PartialObjectMeta<MachineMigration>> = Api::namespaced(ctx.client.clone(), &key.0);
    let lp = ::kube::api::ListParams::default().labels(&format!("{}={}", labels::PLAN, key.1));
    let mut out = HashMap::new();
    let listed = list_paged(&api, lp, |m| {
        out.insert(m.name_any(), steering(&m));
    })
    .await;
    if let Err(e) = listed {
        tracing::warn!(error = %e, namespace = %key.0, plan = %key.1, "cannot list the plan's machines for their steering annotations");
    }
    out
}

async fn cleanup_plan(plan: Arc<MigrationPlan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = key_of(plan.as_ref());
    ctx.stop_runner(&key).await;
    let policy = plan
        .annotations()
        .get(plan_annotations::DELETION_POLICY)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    if policy == "rollback" {
        let end = rollback(&plan, &ctx).await?;
        if end.stopped {
            // The operator is shutting down or lost the lease: the finalizer stays and the next
            // leader resumes the rollback from its journal.
            return Err(Error::Rollback {
                namespace: key.0,
                name: key.1,
                message: "stopped before it finished; it resumes on the next reconcile".into(),
            });
        }
        // The engine published the plan's RolledBack event with its figures.
        if !end.not_rolled_back.is_empty() {
            let examples: Vec<String> = end
                .not_rolled_back
                .iter()
                .take(5)
                .map(|m| {
                    format!(
                        "{} ({})",
                        m.machine_id.rsplit('/').next().unwrap_or(""),
                        m.reason
                    )
                })
                .collect();
            ctx.publish(
                &plan,
                EventType::Warning,
                "RollbackIncomplete",
                format!(
                    "{} machine(s) keep the AMA path because rolling them back would leave a source with no sender (e.g. the migrator removed their legacy agent) or they are unreachable: {}; {} DCR(s) they use are kept: {}",
                    end.not_rolled_back.len(),
                    examples.join(", "),
                    end.kept_dcrs.len(),
                    end.kept_dcrs.join(", ")
                ),
            )
            .await;
        }
    }
    ctx.publish(&plan, EventType::Normal, "Deleted", "the engine stopped after its pass; every machine is at a recorded step; MachineMigrations go with the plan".into()).await;
    Ok(Action::await_change())
}

/// Roll the whole plan back with the engine (`Engine::rollback_plan`): workspace legacy streams
/// restored first, then the migrator's associations and AMA installs removed machine by machine,
/// then the plan's own DCRs deleted. Only what the operator created goes; a machine whose legacy
/// agent the operator removed keeps its AMA path (no gap) and is reported.
async fn rollback(plan: &MigrationPlan, ctx: &Arc<Context>) -> Result<RollbackEnd, Error> {
    let (ns, name) = key_of(plan);
    let err = |message: String| Error::Rollback {
        namespace: ns.clone(),
        name: name.clone(),
        message,
    };
    let arm = ctx
        .arm_for(plan)
        .await
        .map_err(|p| err(format!("no usable Azure credentials: {p}")))?;
    let state = KubeState::new(
        ctx.client.clone(),
        ctx.publisher.clone(),
        ctx.metrics.clone(),
        plan,
    )
    .map_err(|e| err(e.to_string()))?;
    let engine = Engine::new(
        arm,
        Arc::new(state),
        ctx.clock.clone(),
        ctx.engine_options.clone(),
    );
    engine
        .rollback_plan(plan)
        .await
        .map_err(|e| err(e.to_string()))
}

pub fn error_policy(_plan: Arc<MigrationPlan>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "migrationplan".into(),
            error: error.kind().into(),
        })
        .inc();
    tracing::warn!(error = %error, "MigrationPlan reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// The plan a machine belongs to: its controller owner reference (a MigrationPlan), else its
/// plan label.
fn plan_of(machine: &PartialObjectMeta<MachineMigration>) -> Option<String> {
    machine
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == MigrationPlan::kind(&()))
        .map(|o| o.name.clone())
        .or_else(|| machine.labels().get(labels::PLAN).cloned())
}

/// Reconcile one MachineMigration: a person's hold/retry/skip → an event and a plan restart.
/// The controller watches metadata only (names, labels, annotations, owners): that is all the
/// reconcile reads, and the engine keeps the machines' specs and statuses itself.
pub async fn reconcile_machine(
    machine: Arc<PartialObjectMeta<MachineMigration>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let labels = ControllerLabels {
        controller: "machinemigration".into(),
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let (ns, name) = key_of(machine.as_ref());
    let Some(plan) = plan_of(&machine) else {
        // Not a machine of any plan: nothing to steer.
        return Ok(Action::await_change());
    };
    let plan_key = (ns.clone(), plan);
    let now_steering = steering(machine.as_ref());
    let seen = ctx
        .runners()
        .get(&plan_key)
        .map(|r| r.steering.get(&name).cloned());
    let changed = match &seen {
        Some(Some(s)) => *s != now_steering,
        // Not loaded by a running engine: only a person's annotation matters.
        Some(None) | None => {
            now_steering != (false, None, false) && !retry_already_observed(&machine)
        }
    };
    if changed {
        let (hold, retry, skip) = &now_steering;
        let what = match (hold, skip, retry) {
            (_, true, _) => "SkipRequested",
            (true, _, _) => "HoldRequested",
            (_, _, Some(_)) => "RetryRequested",
            _ => "SteeringCleared",
        };
        let ev = Event {
            type_: EventType::Normal,
            reason: what.into(),
            note: Some(format!(
                "hold={hold} skip={skip} retry={}; the plan's engine restarts to apply it",
                retry.as_deref().unwrap_or("-")
            )),
            action: what.into(),
            secondary: None,
        };
        let r = ctx.recorder.publish(&ev, &machine.object_ref(&())).await;
        ctx.metrics.kube_write("events", r.is_ok());
        if let Some(r) = ctx.runners().get_mut(&plan_key) {
            r.steering.insert(name.clone(), now_steering.clone());
        }
        *ctx.epochs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(plan_key)
            .or_default() += 1;
        let _ = ctx.plan_trigger.send(());
    }
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::await_change())
}

fn retry_already_observed(m: &PartialObjectMeta<MachineMigration>) -> bool {
    let (hold, retry, skip) = steering(m);
    !hold
        && !skip
        && retry.is_some()
        && m.annotations().get(super::RETRY_OBSERVED_ANNOTATION) == retry.as_ref()
}

/// What the machine cache keeps of a MachineMigration's metadata: its identity, labels, owners and
/// the annotations a person steers it with. The rest — managedFields (two managers' field sets
/// per object on a real API server) and the engine's progress annotation, rewritten at every
/// step — would make the cache of 10,000 machines several times larger, and nothing here reads
/// it: the engine keeps the machines itself.
pub fn trim_machine_metadata(m: &mut PartialObjectMeta<MachineMigration>) {
    let meta = &mut m.metadata;
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| {
            [
                machine_annotations::HOLD,
                machine_annotations::RETRY,
                super::SKIP_ANNOTATION,
                super::RETRY_OBSERVED_ANNOTATION,
            ]
            .contains(&k.as_str())
        });
    }
}

pub fn machine_error_policy(
    _m: Arc<PartialObjectMeta<MachineMigration>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "machinemigration".into(),
            error: error.kind().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(15))
}

/// Run both controllers (one pair per watched namespace, or one cluster-wide pair) until
/// `shutdown` resolves; every engine is stopped (and has persisted its machines) before this
/// returns.
pub async fn run_controllers(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let scopes: Vec<Option<String>> = if ctx.watch_namespaces.is_empty() {
        vec![None]
    } else {
        ctx.watch_namespaces.iter().cloned().map(Some).collect()
    };
    // One engine ending re-reconciles every plan of every scope.
    let fan_tx = ctx.plan_trigger.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut runs = Vec::new();
    let mut stores_ready = Vec::new();
    for scope in scopes {
        // Machines: metadata only (PartialObjectMetadata), so the cache of 10,000 machines holds
        // no specs or statuses.
        let (plans, machines): (Api<MigrationPlan>, Api<PartialObjectMeta<MachineMigration>>) =
            match &scope {
                None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
                Some(ns) => (
                    Api::namespaced(ctx.client.clone(), ns),
                    Api::namespaced(ctx.client.clone(), ns),
                ),
            };
        let trigger = futures::stream::unfold(fan_tx.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(()) => return Some(((), rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let plan_controller = Controller::new(plans, watcher::Config::default().any_semantic())
            .with_config(
                ::kube::runtime::controller::Config::default().debounce(Duration::from_millis(500)),
            )
            .reconcile_all_on(trigger)
            .graceful_shutdown_on(wait(stop_rx.clone()));
        // The cache keeps only what `reconcile_machine` reads (see `trim_machine_metadata`).
        let (machine_reader, machine_writer) = ::kube::runtime::reflector::store();
        let machine_stream = watcher(machines, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(trim_machine_metadata)
            .reflect(machine_writer)
            .applied_objects();
        let machine_controller = Controller::for_stream(machine_stream, machine_reader)
            .graceful_shutdown_on(wait(stop_rx.clone()));
        let (plan_store, machine_store) = (plan_controller.store(), machine_controller.store());
        stores_ready.push(async move {
            store_ready(&plan_store).await && store_ready(&machine_store).await
        });
        runs.push(Box::pin(
            plan_controller
                .run(reconcile_plan, error_policy, ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "plan controller");
                    }
                }),
        )
            as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);
        runs.push(Box::pin(
            machine_controller
                .run(reconcile_machine, machine_error_policy, ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "machine controller");
                    }
                }),
        )
            as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);
    }
    let synced = ctx.caches_synced.clone();
    let ready = tokio::spawn(async move {
        let all = futures::future::join_all(stores_ready).await;
        if all.iter().all(|ok| *ok) {
            synced.send_replace(true);
            tracing::info!("controller caches synced");
        }
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    futures::future::join_all(runs).await;
    ready.abort();
    ctx.caches_synced.send_replace(false);
    ctx.stop_all().await;
}

/// Whether a controller's store got its first full list. kube-runtime's ready signal keeps one
/// waker (the controller's own), so a second waiter re-polls on a short timer.
async fn store_ready<K>(store: &::kube::runtime::reflector::Store<K>) -> bool
where
    K: ::kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(r) => return r.is_ok(),
            Err(_) => continue,
        }
    }
}

/// The plan an object reference names (for tests and tools).
pub fn plan_ref(namespace: &str, name: &str) -> ObjectRef<MigrationPlan> {
    ObjectRef::new(name).within(namespace)
}
