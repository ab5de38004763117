//! Executing one machine write through the ARM client, journaled: the journal entry exists before
//! the request is sent and a long-running operation's handle is stored before anything waits on
//! it, so a restarted engine polls the handle instead of sending the write again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use k8s_openapi::jiff::Timestamp;

use crate::api::machine::OperationKind;
use crate::azure::error::Classification;
use crate::azure::lro::OperationHandle;
use crate::azure::{ArmClient, AzureError, DcrAssociation, Extension, PollOutcome, ResourceId};
use crate::catalog::{DataSourceType, OsFamily};
use crate::inventory::AgentKind;
use crate::local::OperationOutcome;

use super::state::EngineState;

/// Prefix of every DCR association the engine creates; only these are ever removed.
pub const ASSOCIATION_PREFIX: &str = "ama-migrator-";

/// `ama-migrator-<dcr name>`, lower-cased (the same name the step function uses).
pub fn association_name(dcr_id: &str) -> String {
    let name = dcr_id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(dcr_id);
    format!("{ASSOCIATION_PREFIX}{}", name.to_ascii_lowercase())
}

/// One write for one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    EnableIdentity,
    InstallAma {
        os: OsFamily,
        location: String,
        /// Only a user-assigned identity: AMA must be told which one.
        user_assigned_only: bool,
    },
    Associate {
        dcr_id: String,
        types: BTreeSet<DataSourceType>,
        test: bool,
    },
    Dissociate {
        dcr_id: String,
        types: BTreeSet<DataSourceType>,
        test: bool,
    },
    RemoveLegacy {
        extension: String,
    },
}

impl Act {
    /// The journal's action label (one in flight per machine and label).
    pub fn label(&self) -> String {
        match self {
            Self::EnableIdentity => "EnableIdentity".into(),
            Self::InstallAma { .. } => "InstallAma".into(),
            Self::Associate { dcr_id, .. } => format!("Associate:{}", association_name(dcr_id)),
            Self::Dissociate { dcr_id, .. } => {
                format!("Dissociate:{}", association_name(dcr_id))
            }
            Self::RemoveLegacy { .. } => "RemoveLegacy".into(),
        }
    }

    pub fn kind(&self) -> OperationKind {
        match self {
            Self::EnableIdentity => OperationKind::EnableIdentity,
            Self::InstallAma { .. } => OperationKind::InstallAma,
            Self::RemoveLegacy { .. } => OperationKind::RemoveLegacy,
            _ => OperationKind::Other,
        }
    }
}

/// The effect of a finished write on the machine's progress (from its journal label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    IdentityEnabled,
    AmaInstalled,
    LegacyRemoved,
    /// Associations are applied by the caller from the `Act` it still holds.
    Other,
}

pub fn effect_of(label: &str) -> Effect {
    match label {
        "EnableIdentity" => Effect::IdentityEnabled,
        "InstallAma" => Effect::AmaInstalled,
        "RemoveLegacy" => Effect::LegacyRemoved,
        _ => Effect::Other,
    }
}

/// A failure reduced to what the retry policy needs (never request bodies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub classification: Classification,
}

impl Failure {
    pub fn from_azure(e: &AzureError) -> Self {
        Self {
            code: e.arm_code().unwrap_or("ClientError").to_string(),
            message: e.to_string(),
            classification: e.classification(),
        }
    }

    fn store(e: &crate::local::StoreError) -> Self {
        Self {
            code: "StateStoreError".into(),
            message: e.to_string(),
            classification: Classification::Transient,
        }
    }
}

/// What one execution or poll came to.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkResult {
    /// The write is complete. Its journal entry (if any) is finished by the caller once the
    /// machine's record holding the write's effect is saved: a stop in between leaves the entry
    /// open, so a restart re-reads ARM (or polls the handle) instead of writing again.
    Done {
        journal: Option<i64>,
    },
    /// A long-running operation runs; its handle is journaled under `journal_id`.
    Started {
        journal_id: i64,
        handle: OperationHandle,
    },
    Running {
        retry_after: Option<Duration>,
    },
    Failed(Failure),
}

fn finish(
    state: &dyn EngineState,
    id: i64,
    result: &Result<(), Failure>,
    now: Timestamp,
) -> Result<(), Failure> {
    let outcome = match result {
        Ok(()) => OperationOutcome::Succeeded,
        Err(f) => OperationOutcome::Failed {
            code: f.code.clone(),
            message: f.message.chars().take(512).collect(),
        },
    };
    state
        .finish_operation(id, &outcome, now)
        .map_err(|e| Failure::store(&e))
}

fn ama_settings(user_assigned: Option<&str>) -> Option<serde_json::Value> {
    user_assigned.map(|id| {
        serde_json::json!({"authentication": {"managedIdentity": {
            "identifier-name": "mi_res_id", "identifier-value": id}}})
    })
}

/// Run `act` on `machine` (journaled).
pub async fn execute(
    client: &ArmClient,
    state: &dyn EngineState,
    machine: &ResourceId,
    act: &Act,
    now: Timestamp,
) -> WorkResult {
    let label = act.label();
    let id = match state.begin_operation(machine.as_str(), &label, now) {
        Ok(id) => id,
        Err(e) => return WorkResult::Failed(Failure::store(&e)),
    };
    let sent = send(client, machine, act).await;
    match sent {
        Ok(Some(handle)) => match state.set_operation_handle(id, &handle) {
            Ok(()) => WorkResult::Started {
                journal_id: id,
                handle,
            },
            Err(e) => WorkResult::Failed(Failure::store(&e)),
        },
        Ok(None) => WorkResult::Done { journal: Some(id) },
        Err(f) => {
            let _ = finish(state, id, &Err(f.clone()), now);
            WorkResult::Failed(f)
        }
    }
}

/// Send the write; `Some(handle)` while it continues as a long-running operation.
async fn send(
    client: &ArmClient,
    machine: &ResourceId,
    act: &Act,
) -> Result<Option<OperationHandle>, Failure> {
    let fail = |e: AzureError| Failure::from_azure(&e);
    match act {
        Act::EnableIdentity => {
            let r = client
                .enable_system_assigned_identity(machine)
                .await
                .map_err(fail)?;
            Ok(r.and_then(|s| s.operation))
        }
        Act::InstallAma {
            os,
            location,
            user_assigned_only,
        } => {
            let uai = if *user_assigned_only {
                // The one read per machine outside discovery: which identity AMA must use.
                client
                    .get_identity(machine)
                    .await
                    .map_err(fail)?
                    .and_then(|i| i.user_assigned_identities.keys().next().cloned())
            } else {
                None
            };
            let ext_type = AgentKind::Ama.extension_type(*os);
            let body = Extension::install(
                location,
                AgentKind::Ama.publisher(),
                ext_type,
                Some("1.0"),
                ama_settings(uai.as_deref()),
            );
            let r = client
                .put_extension(machine, ext_type, &body)
                .await
                .map_err(fail)?;
            Ok(r.operation)
        }
        Act::Associate { dcr_id, .. } => {
            let body = DcrAssociation::for_rule(dcr_id, Some("created by ama-migrator"));
            client
                .put_association(machine, &association_name(dcr_id), &body)
                .await
                .map_err(fail)?;
            Ok(None)
        }
        Act::Dissociate { dcr_id, .. } => {
            client
                .delete_association(machine, &association_name(dcr_id))
                .await
                .map_err(fail)?;
            Ok(None)
        }
        Act::RemoveLegacy { extension } => {
            let r = client
                .delete_extension(machine, extension)
                .await
                .map_err(fail)?;
            Ok(r.operation)
        }
    }
}

/// Poll a journaled operation once; finishes the journal entry when it ends.
pub async fn poll(
    client: &ArmClient,
    state: &dyn EngineState,
    journal_id: i64,
    handle: &OperationHandle,
    now: Timestamp,
) -> WorkResult {
    match client.poll_operation(handle).await {
        Ok(PollOutcome::Running { retry_after }) => WorkResult::Running { retry_after },
        Ok(PollOutcome::Done(_)) => WorkResult::Done {
            journal: Some(journal_id),
        },
        Err(e @ AzureError::OperationFailed { .. }) => {
            let f = Failure::from_azure(&e);
            let _ = finish(state, journal_id, &Err(f.clone()), now);
            WorkResult::Failed(f)
        }
        Err(e)
            if e.status() == Some(404) && handle.method == crate::azure::lro::LroMethod::Delete =>
        {
            WorkResult::Done {
                journal: Some(journal_id),
            }
        }
        // The poll itself failed (throttled, 5xx): the operation may still run; poll again.
        Err(e) if e.classification() != Classification::Permanent => {
            WorkResult::Running { retry_after: None }
        }
        Err(e) => {
            let f = Failure::from_azure(&e);
            let _ = state.finish_operation(
                journal_id,
                &OperationOutcome::Abandoned {
                    reason: format!("the operation status could not be read: {}", f.code),
                },
                now,
            );
            WorkResult::Failed(f)
        }
    }
}

/// Whether an abandoned write is in effect on ARM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InEffect {
    /// The write's result is there: sending it again would be a needless write.
    Yes,
    /// ARM accepted it and is still carrying it out (`Creating`, `Updating`, `Deleting`): wait and
    /// look again rather than send it a second time.
    Underway,
    /// Not there (or unsure): the write is sent.
    No,
}

fn provisioning(state: Option<&str>, done: &str) -> InEffect {
    match state {
        Some(s) if s.eq_ignore_ascii_case(done) => InEffect::Yes,
        Some(s)
            if ["Creating", "Updating", "Deleting", "Accepted"]
                .iter()
                .any(|u| s.eq_ignore_ascii_case(u)) =>
        {
            InEffect::Underway
        }
        _ => InEffect::No,
    }
}

/// Whether `act` is already in effect on `machine`, read from ARM. Asked only for a write whose
/// journal entry was abandoned (the engine stopped after sending it, before the answer was
/// recorded): if it reached ARM, sending it again would be a needless write. `No` when unsure.
pub async fn already_done(client: &ArmClient, machine: &ResourceId, act: &Act) -> InEffect {
    let yes_if = |b: bool| if b { InEffect::Yes } else { InEffect::No };
    match act {
        Act::EnableIdentity => yes_if(
            client
                .get_identity(machine)
                .await
                .ok()
                .flatten()
                .and_then(|i| i.identity_type)
                .is_some_and(|t| t.to_ascii_lowercase().contains("systemassigned")),
        ),
        Act::InstallAma { os, .. } => {
            let ext_type = AgentKind::Ama.extension_type(*os);
            let state = client
                .get_extension(machine, ext_type)
                .await
                .ok()
                .flatten()
                .and_then(|e| e.properties.provisioning_state);
            match provisioning(state.as_deref(), "Succeeded") {
                // An install being deleted is not an install under way.
                InEffect::Underway if state.as_deref() == Some("Deleting") => InEffect::No,
                x => x,
            }
        }
        Act::Associate { dcr_id, .. } => yes_if(
            client
                .get_association(machine, &association_name(dcr_id))
                .await
                .ok()
                .flatten()
                .and_then(|a| a.properties.data_collection_rule_id)
                .is_some_and(|id| id.eq_ignore_ascii_case(dcr_id)),
        ),
        Act::Dissociate { dcr_id, .. } => yes_if(
            client
                .get_association(machine, &association_name(dcr_id))
                .await
                .is_ok_and(|a| a.is_none()),
        ),
        Act::RemoveLegacy { extension } => match client.get_extension(machine, extension).await {
            Ok(None) => InEffect::Yes,
            // Deleting: ARM accepted the delete and the agent is going away; a second DELETE
            // would be needless, and waiting would let the planner lean on a leaving agent.
            Ok(Some(e)) => match e.properties.provisioning_state.as_deref() {
                Some(s) if s.eq_ignore_ascii_case("Deleting") => InEffect::Yes,
                _ => InEffect::No,
            },
            Err(_) => InEffect::No,
        },
    }
}

/// A finished piece of machine work: the machine's key, the write it was (`None` for a poll) and
/// what it came to.
#[derive(Debug)]
pub struct Finished {
    pub key: String,
    pub act: Option<Act>,
    pub result: WorkResult,
}

/// Machine work kept running across engine passes. A pass starts what the planner allows and
/// takes whatever finished, without waiting for the rest: a write waiting for a token, a poll
/// waiting for a read token or a slow answer no longer holds back the next pass's writes, so the
/// binding bucket keeps being drawn from while any machine has a write ready.
///
/// It also keeps `Retry-After` in real time. The engine schedules polls on its own clock, which in
/// `simulate` runs faster than real time while the service's `Retry-After` is a real-time wait:
/// without this, a machine would be polled many times more often than the service asked.
pub struct Pipeline<'a> {
    running: FuturesUnordered<BoxFuture<'a, Finished>>,
    keys: HashSet<String>,
    /// Machines whose operation said `Retry-After`: no request for them before this instant.
    hold: HashMap<String, tokio::time::Instant>,
}

impl Default for Pipeline<'_> {
    fn default() -> Self {
        Self {
            running: FuturesUnordered::new(),
            keys: HashSet::new(),
            hold: HashMap::new(),
        }
    }
}

impl<'a> Pipeline<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pieces of work running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Whether `key` (a machine) has work running, or its running operation's `Retry-After`
    /// (real time) has not passed: it gets no other work until then.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
            || self
                .hold
                .get(key)
                .is_some_and(|until| tokio::time::Instant::now() < *until)
    }

    /// Start `work` for machine `key` (one piece per machine at a time; the caller checks
    /// [`Self::contains`]).
    pub fn push(
        &mut self,
        key: String,
        work: impl Future<Output = (String, Option<Act>, WorkResult)> + Send + 'a,
    ) {
        self.keys.insert(key);
        self.running.push(Box::pin(async move {
            let (key, act, result) = work.await;
            Finished { key, act, result }
        }));
    }

    fn take(&mut self, f: Finished, out: &mut Vec<Finished>) {
        self.keys.remove(&f.key);
        let wait = match &f.result {
            WorkResult::Started { handle, .. } => handle.retry_after_ms.map(Duration::from_millis),
            WorkResult::Running { retry_after } => *retry_after,
            _ => None,
        };
        match wait {
            Some(d) => {
                self.hold
                    .insert(f.key.clone(), tokio::time::Instant::now() + d);
            }
            None => {
                self.hold.remove(&f.key);
            }
        }
        out.push(f);
    }

    /// What finishes within one pass: waits at least `min` (the tick) collecting results, then
    /// returns as soon as it holds one, waiting at most `max` in all. With nothing running it
    /// just waits `min`.
    pub async fn collect(&mut self, min: Duration, max: Duration) -> Vec<Finished> {
        let start = tokio::time::Instant::now();
        let max = max.max(min);
        let mut out = Vec::new();
        loop {
            let elapsed = start.elapsed();
            if self.running.is_empty() {
                if out.is_empty() && elapsed < min {
                    tokio::time::sleep(min - elapsed).await;
                }
                return out;
            }
            let limit = if out.is_empty() { max } else { min };
            if elapsed >= limit {
                return out;
            }
            match tokio::time::timeout(limit - elapsed, self.running.next()).await {
                Ok(Some(f)) => self.take(f, &mut out),
                Ok(None) => {}
                Err(_) => return out,
            }
        }
    }

    /// Everything still running, awaited to its end (a stop: no answer is left unrecorded).
    pub async fn drain(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Some(f) = self.running.next().await {
            self.take(f, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(
        key: &str,
        ms: u64,
    ) -> impl Future<Output = (String, Option<Act>, WorkResult)> + Send + 'static {
        let key = key.to_string();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (key, None, WorkResult::Done { journal: None })
        }
    }

    fn keys(v: &[Finished]) -> Vec<&str> {
        v.iter().map(|f| f.key.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_takes_what_finished_and_leaves_slow_work_running() {
        let mut p = Pipeline::new();
        p.push("fast".into(), after("fast", 5));
        p.push("slow".into(), after("slow", 10_000));
        assert!(p.contains("slow"));
        let t = tokio::time::Instant::now();
        let got = p
            .collect(Duration::from_millis(20), Duration::from_millis(80))
            .await;
        assert_eq!(keys(&got), ["fast"]);
        // Returned at the tick, not when the slow work ends.
        assert_eq!(t.elapsed(), Duration::from_millis(20));
        assert!(p.contains("slow") && !p.contains("fast"));
        assert_eq!(p.len(), 1);
        // Nothing finishes within `max`: the pass goes on empty-handed after `max`.
        let t = tokio::time::Instant::now();
        let got = p
            .collect(Duration::from_millis(20), Duration::from_millis(80))
            .await;
        assert!(got.is_empty());
        assert_eq!(t.elapsed(), Duration::from_millis(80));
        // Work pushed while the slow one runs is collected first.
        p.push("next".into(), after("next", 30));
        let got = p
            .collect(Duration::from_millis(20), Duration::from_millis(80))
            .await;
        assert_eq!(keys(&got), ["next"]);
        let got = p.drain().await;
        assert_eq!(keys(&got), ["slow"]);
        assert!(p.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_the_machine_in_real_time() {
        let mut p = Pipeline::new();
        p.push("m".into(), async {
            let running = WorkResult::Running {
                retry_after: Some(Duration::from_secs(3)),
            };
            ("m".to_string(), None, running)
        });
        let got = p
            .collect(Duration::from_millis(20), Duration::from_millis(80))
            .await;
        assert_eq!(keys(&got), ["m"]);
        assert!(p.is_empty());
        assert!(p.contains("m"), "held until Retry-After has passed");
        tokio::time::sleep(Duration::from_millis(2_900)).await;
        assert!(p.contains("m"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!p.contains("m"));
        // A result without Retry-After releases the hold at once.
        p.push("m".into(), after("m", 1));
        p.collect(Duration::from_millis(20), Duration::from_millis(80))
            .await;
        assert!(!p.contains("m"));
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_running_a_pass_waits_one_tick() {
        let mut p = Pipeline::new();
        let t = tokio::time::Instant::now();
        assert!(
            p.collect(Duration::from_millis(20), Duration::from_millis(80))
                .await
                .is_empty()
        );
        assert_eq!(t.elapsed(), Duration::from_millis(20));
    }
}
