//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): the controllers run
//! only while this replica holds the Lease, so two replicas never both write status. Losing the
//! Lease stops the controllers and ends the process (Kubernetes restarts it as a standby);
//! shutting down releases the Lease so a rolling update hands over at once.
//!
//! Standing by, the replica reads the Lease itself every [`LeaseTiming::standby_interval`] (one
//! GET, at most a second apart) instead of leaving it to kube-lease-manager, which sleeps until
//! the current claim's expiry and so would notice a *released* Lease only a Lease duration
//! later. A read that shows the Lease free (no holder, or an empty one, as a release leaves it),
//! expired (`renewTime + leaseDurationSeconds` passed) or already naming this replica is followed
//! by a claim: a merge patch conditioned on the `resourceVersion` just read, so of two standbys
//! only one wins. kube-lease-manager then confirms the claim and renews it while leading.
//! See [`standby_view`] and [`claim`].
//!
//! kube-lease-manager keeps retrying a failed renewal without reporting a loss, so a leader cut
//! off from the API server would go on acting while another replica takes over the expired
//! Lease. A guard therefore reads the Lease itself and keeps a local deadline: our claim's
//! `renewTime + leaseDurationSeconds`. When the deadline passes unrenewed the replica stops its
//! controllers and engines and reports not ready ([`LeaderState::Expired`]) until a read shows
//! the Lease renewed in its name again (then it leads again) or held by another replica (then
//! it exits as after any loss).
//!
//! The decisions are pure functions ([`on_change`], [`is_ready`], [`claim_remaining`],
//! [`standby_view`], [`claim`], [`LeaseTiming::validate`]); [`lead`] is the thin shell over the
//! Lease and the controllers.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::time::Instant;

use super::controller::{Context, run_controllers};

/// What the replica knows about its role; `/readyz` is derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderState {
    /// The Lease has not been read yet (API server not reached).
    Unknown,
    /// Another replica holds the Lease (or nobody yet); this one waits.
    Standby,
    /// This replica holds the Lease and runs the controllers.
    Leading { caches_synced: bool },
    /// This replica believed it held the Lease, but the Lease was not renewed within its
    /// duration (API server unreachable): controllers and engines are stopped until a renewal
    /// is seen again.
    Expired,
}

/// Ready when the role is known: a standby is ready (so a 2-replica rollout does not stall);
/// the leader once its controller caches are synced.
pub fn is_ready(state: LeaderState) -> bool {
    match state {
        LeaderState::Unknown | LeaderState::Expired => false,
        LeaderState::Standby => true,
        LeaderState::Leading { caches_synced } => caches_synced,
    }
}

/// What to do when the Lease watch reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    StartControllers,
    /// Leadership lost (or its watch ended while leading): stop and exit.
    StopAndExit,
    /// The watch ended while standing by: nothing to stop, but the replica can no longer lead.
    WatchFailed,
    Nothing,
}

/// `leading`: whether controllers run now; `holder`: the watch's new value, `None` when the
/// watch task has ended.
pub fn on_change(leading: bool, holder: Option<bool>) -> Transition {
    match (leading, holder) {
        (false, Some(true)) => Transition::StartControllers,
        (true, Some(false)) | (true, None) => Transition::StopAndExit,
        (false, None) => Transition::WatchFailed,
        (true, Some(true)) | (false, Some(false)) => Transition::Nothing,
    }
}

/// The Lease's timing in seconds (kube-lease-manager's units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a holder's claim is valid after its last renewal.
    pub duration: u64,
    /// How long before expiry the holder renews (also the tolerated clock skew).
    pub grace: u64,
}

impl LeaseTiming {
    /// kube-lease-manager panics on `grace >= duration`; reject it with a clear message instead.
    pub fn validate(self) -> Result<Self, LeaderError> {
        if self.duration == 0 || self.grace == 0 || self.grace >= self.duration {
            return Err(LeaderError::Timing {
                duration: self.duration,
                grace: self.grace,
            });
        }
        Ok(self)
    }
}

impl LeaseTiming {
    /// How often the guard reads the Lease: half the grace, at least 200 ms, so a renewal (made
    /// `grace` before expiry) is seen well before the deadline.
    pub fn guard_interval(self) -> Duration {
        Duration::from_millis(self.grace.saturating_mul(500).max(200))
    }

    /// How often a standby reads the Lease: every second (one GET), or at the guard's interval
    /// when that is shorter, so a released Lease is taken within about a second.
    pub fn standby_interval(self) -> Duration {
        self.guard_interval().min(STANDBY_POLL)
    }
}

/// The longest pause between two reads of the Lease by a standby.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// How long one request of a standby (read, claim, confirmation) may take before the standby
/// gives up on it and polls again.
const STANDBY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a standby's read of the Lease shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// Nobody holds it: no holder identity, or an empty one (a released Lease).
    Free,
    /// It names this replica (a claim not yet confirmed, or one left by an earlier run of the
    /// same pod): this replica may take it up at once.
    Ours,
    /// Another holder's claim passed `renewTime + leaseDurationSeconds` (or lacks either).
    Expired { holder: String },
    /// Another holder's claim stays valid this long.
    Held { holder: String, remaining: Duration },
}

impl LeaseView {
    /// Whether a standby may claim the Lease now.
    pub fn claimable(&self) -> bool {
        !matches!(self, LeaseView::Held { .. })
    }
}

/// What the Lease allows `identity` (a standby) at `now`.
pub fn standby_view(lease: &Lease, identity: &str, now: Timestamp) -> LeaseView {
    let Some(spec) = lease.spec.as_ref() else {
        return LeaseView::Free;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return LeaseView::Free,
        Some(h) if h == identity => return LeaseView::Ours,
        Some(h) => h.to_string(),
    };
    let expiry = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .zip(spec.lease_duration_seconds)
        .and_then(|(renewed, secs)| {
            renewed
                .0
                .checked_add(SignedDuration::from_secs(i64::from(secs)))
                .ok()
        });
    let left = expiry.map(|e| now.duration_until(e));
    match left {
        Some(left) if left.is_positive() => LeaseView::Held {
            holder,
            remaining: Duration::try_from(left).unwrap_or(Duration::ZERO),
        },
        _ => LeaseView::Expired { holder },
    }
}

/// The merge patch by which `identity` claims the Lease it read at `now` for `duration`
/// seconds: holder, renewal (and acquisition and a transition when the holder changes), with
/// the read's `resourceVersion` as a precondition so a concurrent change makes the API server
/// refuse it (409). `None` when the read carries no `resourceVersion` (no safe claim).
pub fn claim(lease: &Lease, identity: &str, duration: u64, now: Timestamp) -> Option<Lease> {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::ObjectMeta;
    let resource_version = lease.metadata.resource_version.clone()?;
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(identity);
    let seconds = i32::try_from(duration).unwrap_or(i32::MAX);
    Some(Lease {
        metadata: ObjectMeta {
            resource_version: Some(resource_version),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(now)),
            acquire_time: if ours {
                spec.acquire_time.or(Some(MicroTime(now)))
            } else {
                Some(MicroTime(now))
            },
            lease_transitions: if ours {
                spec.lease_transitions
            } else {
                Some(spec.lease_transitions.unwrap_or(0).saturating_add(1))
            },
            ..LeaseSpec::default()
        }),
    })
}

/// The field manager of this replica's writes to the Lease (kube-lease-manager's default, set
/// explicitly so the standby's claim and the crate's renewals and release share it).
fn lease_field_manager(identity: &str) -> String {
    format!("kube-lease-manager-{identity}")
}

/// How long this replica's claim stays valid, read from the Lease at `now`: `None` when the
/// Lease names another holder (or none), lacks a renewal time, or has expired.
pub fn claim_remaining(lease: &Lease, identity: &str, now: Timestamp) -> Option<Duration> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let duration = i64::from(spec.lease_duration_seconds?);
    let expiry = renewed
        .checked_add(SignedDuration::from_secs(duration))
        .ok()?;
    let left = now.duration_until(expiry);
    if left.is_positive() {
        Duration::try_from(left).ok()
    } else {
        None
    }
}

/// Which Lease, held under which identity.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    pub timing: LeaseTiming,
    /// How long a stopping controller may take to finish its engines' passes.
    pub stop_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lease duration {duration}s and grace {grace}s are invalid: both must be positive and the grace shorter than the duration (e.g. 15 and 5)"
    )]
    Timing { duration: u64, grace: u64 },
    #[error(
        "cannot use the Lease {namespace}/{name} (is the API server reachable, and may this service account get, create and patch coordination.k8s.io leases there?): {source}"
    )]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// How [`lead`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `shutdown` resolved: controllers stopped, the Lease released.
    Shutdown,
    /// Another replica took the Lease (or it could not be renewed): controllers stopped.
    LostLeadership,
    /// The controllers ended on their own while leading.
    ControllersEnded,
}

/// The role shared with the health endpoints.
#[derive(Debug)]
pub struct Health {
    state: Mutex<LeaderState>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Mutex::new(LeaderState::Unknown),
        }
    }
}

impl Health {
    pub fn get(&self) -> LeaderState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn set(&self, s: LeaderState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
    pub fn ready(&self) -> bool {
        is_ready(self.get())
    }
}

/// Reads the Lease every `interval` and publishes the local deadline of this replica's claim
/// (`None` until a read shows it). A failed read changes nothing: the deadline simply passes.
async fn guard_lease(
    api: Api<Lease>,
    name: String,
    identity: String,
    interval: Duration,
    deadline: tokio::sync::watch::Sender<Option<Instant>>,
) {
    loop {
        match tokio::time::timeout(interval.max(Duration::from_secs(1)), api.get_opt(&name)).await {
            Ok(Ok(Some(lease))) => {
                if let Some(left) = claim_remaining(&lease, &identity, Timestamp::now()) {
                    deadline.send_replace(Some(Instant::now() + left));
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the Lease"),
            Err(_) => tracing::debug!("reading the Lease timed out"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// A replica standing by: it polls the Lease and claims it when it may.
struct Standby<'a> {
    api: Api<Lease>,
    client: Client,
    config: &'a LeaderConfig,
    /// The manager built at start (its state not yet synced), used for the first confirmation;
    /// later ones build a fresh manager so that no stale state makes the crate sleep.
    spare: Option<LeaseManager>,
    /// A claim was sent and not refused, but kube-lease-manager has not confirmed it: the
    /// Lease may name this replica.
    unconfirmed: bool,
    /// The holder the last read showed, to log a change once.
    seen: Option<String>,
}

impl Standby<'_> {
    /// One poll: read the Lease; when it is free, expired or ours, claim it and have
    /// kube-lease-manager confirm the claim. `Some` with the confirmed manager (not yet
    /// watching): this replica holds the Lease.
    async fn poll(&mut self) -> Option<LeaseManager> {
        let name = &self.config.lease_name;
        let identity = &self.config.identity;
        let lease =
            match tokio::time::timeout(STANDBY_REQUEST_TIMEOUT, self.api.get_opt(name)).await {
                Ok(Ok(Some(lease))) => lease,
                Ok(Ok(None)) => {
                    // Deleted under us: create it again (empty) and claim it on the next poll.
                    let empty = Lease {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.clone()),
                            ..Default::default()
                        },
                        spec: None,
                    };
                    let created = tokio::time::timeout(
                        STANDBY_REQUEST_TIMEOUT,
                        self.api.create(&PostParams::default(), &empty),
                    )
                    .await;
                    if let Ok(Err(e)) = created {
                        tracing::debug!(error = %e, "cannot create the Lease");
                    }
                    return None;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot read the Lease");
                    return None;
                }
                Err(_) => {
                    tracing::debug!("reading the Lease timed out");
                    return None;
                }
            };
        let view = standby_view(&lease, identity, Timestamp::now());
        match &view {
            LeaseView::Held { holder, remaining } => {
                self.unconfirmed = false;
                if self.seen.as_deref() != Some(holder.as_str()) {
                    tracing::info!(%holder, ?remaining, "the Lease is held by another replica; standing by");
                    self.seen = Some(holder.clone());
                }
                return None;
            }
            LeaseView::Free => tracing::info!(%identity, "the Lease is free; claiming it"),
            LeaseView::Expired { holder } => {
                tracing::info!(%identity, %holder, "the Lease expired unrenewed; claiming it")
            }
            LeaseView::Ours => {
                tracing::info!(%identity, "the Lease names this replica; taking it up")
            }
        }
        self.seen = None;
        let Some(patch) = claim(
            &lease,
            identity,
            self.config.timing.duration,
            Timestamp::now(),
        ) else {
            tracing::warn!("the Lease was read without a resourceVersion; not claiming it");
            return None;
        };
        let params = PatchParams {
            field_manager: Some(lease_field_manager(identity)),
            ..PatchParams::default()
        };
        self.unconfirmed = true;
        match tokio::time::timeout(
            STANDBY_REQUEST_TIMEOUT,
            self.api.patch(name, &params, &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(status))) => {
                // Refused, so not applied.
                self.unconfirmed = false;
                if status.code == 409 {
                    tracing::info!("another replica claimed the Lease first; standing by");
                } else {
                    tracing::warn!(error = %status.message, code = status.code, "cannot claim the Lease");
                }
                return None;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot claim the Lease");
                return None;
            }
            Err(_) => {
                tracing::warn!("claiming the Lease timed out");
                return None;
            }
        }
        let manager = match self.spare.take() {
            Some(m) => m,
            None => match tokio::time::timeout(
                STANDBY_REQUEST_TIMEOUT,
                build_manager(self.client.clone(), self.config),
            )
            .await
            {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot set up the Lease manager");
                    return None;
                }
                Err(_) => {
                    tracing::warn!("setting up the Lease manager timed out");
                    return None;
                }
            },
        };
        match tokio::time::timeout(STANDBY_REQUEST_TIMEOUT, manager.changed()).await {
            Ok(Ok(true)) => {
                self.unconfirmed = false;
                Some(manager)
            }
            Ok(Ok(false)) => {
                tracing::warn!("the Lease manager does not see this replica's claim");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot confirm the claim on the Lease");
                None
            }
            Err(_) => {
                tracing::warn!("confirming the claim on the Lease timed out");
                None
            }
        }
    }

    /// Stopping without having led: release the Lease only if an unconfirmed claim of ours
    /// stands (a standby that never held the Lease has nothing to release).
    async fn stand_down(self) {
        if !self.unconfirmed {
            tracing::info!(identity = %self.config.identity, "stopping; this replica was a standby and holds no Lease");
            return;
        }
        let name = &self.config.lease_name;
        let identity = &self.config.identity;
        let lease = match tokio::time::timeout(STANDBY_REQUEST_TIMEOUT, self.api.get_opt(name))
            .await
        {
            Ok(Ok(Some(lease))) => lease,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the Lease to release a claim; it expires on its own");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "reading the Lease timed out; a claim of this replica expires on its own"
                );
                return;
            }
        };
        if standby_view(&lease, identity, Timestamp::now()) != LeaseView::Ours {
            tracing::info!(%identity, "stopping; this replica was a standby and holds no Lease");
            return;
        }
        let Some(rv) = lease.metadata.resource_version.clone() else {
            return;
        };
        let release = serde_json::json!({
            "metadata": {"resourceVersion": rv},
            "spec": {"holderIdentity": null, "acquireTime": null, "renewTime": null, "leaseDurationSeconds": null},
        });
        let params = PatchParams {
            field_manager: Some(lease_field_manager(identity)),
            ..PatchParams::default()
        };
        match tokio::time::timeout(
            STANDBY_REQUEST_TIMEOUT,
            self.api.patch(name, &params, &Patch::Merge(&release)),
        )
        .await
        {
            Ok(Ok(_)) => tracing::info!(%identity, "released the Lease claimed before stopping"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the Lease; it expires on its own")
            }
            Err(_) => tracing::warn!("releasing the Lease timed out; it expires on its own"),
        }
    }
}

async fn build_manager(
    client: Client,
    config: &LeaderConfig,
) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_field_manager(lease_field_manager(&config.identity))
        .with_duration(config.timing.duration)
        .with_grace(config.timing.grace)
        .build()
        .await
}

/// Where [`lead`] is once it holds the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Leading,
    Expired,
}

/// Stand by for the Lease, run the controllers while holding it, stop on `shutdown` or when
/// the Lease is lost; stop (and wait, not ready) while the Lease goes unrenewed past its
/// duration. A replica that held the Lease releases it before this returns (unless another
/// replica holds it already); a standby has nothing to release.
pub async fn lead(
    client: Client,
    config: &LeaderConfig,
    ctx: Arc<Context>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, LeaderError> {
    let timing = config.timing.validate()?;
    let manager = build_manager(client.clone(), config)
        .await
        .map_err(|source| LeaderError::Lease {
            namespace: config.namespace.clone(),
            name: config.lease_name.clone(),
            source,
        })?;
    health.set(LeaderState::Standby);
    tracing::info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, interval = ?timing.standby_interval(), "standing by for the Lease");
    tokio::pin!(shutdown);
    let mut standby = Standby {
        api: Api::namespaced(client.clone(), &config.namespace),
        client: client.clone(),
        config,
        spare: Some(manager),
        unconfirmed: false,
        seen: None,
    };
    let manager = loop {
        let polled = tokio::select! {
            biased;
            _ = &mut shutdown => None,
            m = standby.poll() => Some(m),
        };
        match polled {
            Some(Some(manager)) => break manager,
            Some(None) => {}
            None => {
                health.set(LeaderState::Unknown);
                standby.stand_down().await;
                return Ok(Outcome::Shutdown);
            }
        }
        let stopping = tokio::select! {
            biased;
            _ = &mut shutdown => true,
            _ = tokio::time::sleep(timing.standby_interval()) => false,
        };
        if stopping {
            health.set(LeaderState::Unknown);
            standby.stand_down().await;
            return Ok(Outcome::Shutdown);
        }
    };
    drop(standby);
    // The crate renews the claim from here on and reports its loss.
    let (mut rx, watch_task) = manager.watch().await;
    let (deadline_tx, mut deadline_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let guard = tokio::spawn(guard_lease(
        Api::namespaced(client, &config.namespace),
        config.lease_name.clone(),
        config.identity.clone(),
        timing.guard_interval(),
        deadline_tx,
    ));
    let lease_duration = Duration::from_secs(timing.duration);
    // Shutdown asked for while the claim was confirmed: release without starting anything.
    let stopping = tokio::select! {
        biased;
        _ = &mut shutdown => true,
        _ = std::future::ready(()) => false,
    };
    let mut phase = Phase::Leading;
    let outcome = if stopping {
        Outcome::Shutdown
    } else {
        loop {
            match phase {
                Phase::Leading => {
                    // Just acquired or seen renewed: valid for at least a Lease duration from the
                    // guard's last read, or from now when it has not read one yet.
                    let mut deadline = deadline_rx
                        .borrow_and_update()
                        .unwrap_or_else(|| Instant::now() + lease_duration);
                    tracing::info!(identity = %config.identity, "leading; starting the controllers");
                    health.set(LeaderState::Leading {
                        caches_synced: false,
                    });
                    let mut synced = ctx.caches_synced();
                    let h = health.clone();
                    let synced_task = tokio::spawn(async move {
                        if synced.wait_for(|v| *v).await.is_ok() {
                            h.set(LeaderState::Leading {
                                caches_synced: true,
                            });
                        }
                    });
                    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                    let mut task = tokio::spawn(run_controllers(ctx.clone(), async move {
                        let _ = stop_rx.await;
                    }));
                    let end = loop {
                        tokio::select! {
                            _ = &mut shutdown => break Some(Outcome::Shutdown),
                            _ = &mut task => {
                                synced_task.abort();
                                health.set(LeaderState::Unknown);
                                break Some(Outcome::ControllersEnded);
                            }
                            changed = rx.changed() => {
                                let holder = changed.ok().map(|_| *rx.borrow_and_update());
                                if on_change(true, holder) == Transition::StopAndExit {
                                    tracing::warn!(identity = %config.identity, "leadership lost");
                                    break Some(Outcome::LostLeadership);
                                }
                            }
                            Ok(()) = deadline_rx.changed() => {
                                if let Some(d) = *deadline_rx.borrow_and_update() {
                                    deadline = deadline.max(d);
                                }
                            }
                            _ = tokio::time::sleep_until(deadline) => {
                                tracing::warn!(
                                    identity = %config.identity,
                                    lease_duration = ?lease_duration,
                                    "the Lease was not renewed within its duration (API server unreachable?); stopping the controllers and engines until it is renewed"
                                );
                                break None;
                            }
                        }
                    };
                    synced_task.abort();
                    if task.is_finished() {
                        // ControllersEnded: nothing left to stop.
                        if let Some(o) = end {
                            break o;
                        }
                    }
                    if end.is_none() {
                        health.set(LeaderState::Expired);
                    }
                    tracing::info!("stopping the controllers (engines finish their pass)");
                    let _ = stop_tx.send(());
                    if tokio::time::timeout(config.stop_grace, task).await.is_err() {
                        tracing::warn!(
                            grace = ?config.stop_grace,
                            "controllers did not stop in time; the next leader resumes from the persisted state"
                        );
                        // Engines still running after the grace must not go on writing.
                        ctx.abort_all();
                    }
                    match end {
                        Some(o) => break o,
                        None => phase = Phase::Expired,
                    }
                }
                Phase::Expired => {
                    health.set(LeaderState::Expired);
                    tokio::select! {
                        _ = &mut shutdown => break Outcome::Shutdown,
                        changed = rx.changed() => {
                            let holder = changed.ok().map(|_| *rx.borrow_and_update());
                            if on_change(true, holder) == Transition::StopAndExit {
                                tracing::warn!(identity = %config.identity, "leadership lost while the Lease was unrenewed");
                                break Outcome::LostLeadership;
                            }
                        }
                        Ok(()) = deadline_rx.changed() => {
                            let renewed = deadline_rx.borrow().is_some_and(|d| d > Instant::now());
                            if renewed {
                                tracing::info!(identity = %config.identity, "the Lease is renewed again");
                                phase = Phase::Leading;
                            }
                        }
                    }
                }
            }
        }
    };
    guard.abort();
    health.set(LeaderState::Unknown);
    // Dropping the receiver makes the watch task release the Lease (when it still names this
    // replica) and end.
    drop(rx);
    let lost = outcome == Outcome::LostLeadership;
    match tokio::time::timeout(Duration::from_secs(5), watch_task).await {
        Ok(Ok(Ok(_))) if lost => {
            tracing::info!("the Lease is another replica's now; nothing to release")
        }
        Ok(Ok(Ok(_))) => tracing::info!(identity = %config.identity, "Lease released"),
        Ok(Ok(Err(e))) if lost => tracing::debug!(error = %e, "the Lease watch ended"),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "cannot release the Lease; it expires on its own")
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("the Lease watch did not end in time; the Lease expires on its own")
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leadership_change_has_one_decision() {
        assert_eq!(on_change(false, Some(true)), Transition::StartControllers);
        assert_eq!(on_change(true, Some(false)), Transition::StopAndExit);
        assert_eq!(on_change(true, None), Transition::StopAndExit);
        assert_eq!(on_change(false, None), Transition::WatchFailed);
        assert_eq!(on_change(true, Some(true)), Transition::Nothing);
        assert_eq!(on_change(false, Some(false)), Transition::Nothing);
    }

    #[test]
    fn a_standby_is_ready_and_a_leader_only_once_synced() {
        assert!(!is_ready(LeaderState::Unknown));
        assert!(is_ready(LeaderState::Standby));
        assert!(!is_ready(LeaderState::Leading {
            caches_synced: false
        }));
        assert!(is_ready(LeaderState::Leading {
            caches_synced: true
        }));
    }

    fn lease(holder: Option<&str>, renewed: &str, duration: i32) -> Lease {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_claim_is_valid_for_its_duration_after_the_last_renewal_only_for_its_holder() {
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let l = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(claim_remaining(&l, "a", now), Some(Duration::from_secs(5)));
        assert_eq!(
            claim_remaining(&l, "b", now),
            None,
            "another holder's claim"
        );
        let expired = lease(Some("a"), "2026-01-01T00:00:00Z", 10);
        assert_eq!(claim_remaining(&expired, "a", now), None);
        let stale = lease(Some("a"), "2025-12-31T23:00:00Z", 15);
        assert_eq!(claim_remaining(&stale, "a", now), None);
        assert_eq!(
            claim_remaining(&lease(None, "2026-01-01T00:00:00Z", 15), "a", now),
            None
        );
        assert_eq!(claim_remaining(&Lease::default(), "a", now), None);
        assert!(
            !is_ready(LeaderState::Expired),
            "an unrenewed leader is not ready"
        );
        let t = LeaseTiming {
            duration: 15,
            grace: 5,
        };
        assert!(t.guard_interval() < Duration::from_secs(t.grace));
    }

    #[test]
    fn a_standby_claims_a_released_expired_or_own_lease_and_waits_for_a_valid_one() {
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let held = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            standby_view(&held, "b", now),
            LeaseView::Held {
                holder: "a".into(),
                remaining: Duration::from_secs(5)
            }
        );
        assert!(!standby_view(&held, "b", now).claimable());
        // Released by kube-lease-manager (holder and times removed) or as client-go does (an
        // empty holder, times kept): free at once, not after the old claim's duration.
        let mut released = held.clone();
        if let Some(spec) = released.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.lease_duration_seconds = None;
        }
        assert_eq!(standby_view(&released, "b", now), LeaseView::Free);
        assert_eq!(
            standby_view(&lease(Some(""), "2026-01-01T00:00:09Z", 15), "b", now),
            LeaseView::Free
        );
        assert_eq!(standby_view(&Lease::default(), "b", now), LeaseView::Free);
        assert_eq!(
            standby_view(&lease(Some("a"), "2026-01-01T00:00:00Z", 10), "b", now),
            LeaseView::Expired { holder: "a".into() }
        );
        let mut timeless = held.clone();
        if let Some(spec) = timeless.spec.as_mut() {
            spec.renew_time = None;
        }
        assert_eq!(
            standby_view(&timeless, "b", now),
            LeaseView::Expired { holder: "a".into() }
        );
        assert_eq!(standby_view(&held, "a", now), LeaseView::Ours);
        for v in [
            LeaseView::Free,
            LeaseView::Ours,
            LeaseView::Expired { holder: "a".into() },
        ] {
            assert!(v.claimable(), "{v:?}");
        }
    }

    #[test]
    fn a_claim_is_conditioned_on_the_version_read() {
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let mut held = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            claim(&held, "b", 15, now),
            None,
            "no resourceVersion, no claim"
        );
        held.metadata.resource_version = Some("42".into());
        if let Some(spec) = held.spec.as_mut() {
            spec.lease_transitions = Some(3);
        }
        let patch = claim(&held, "b", 15, now).unwrap();
        assert_eq!(patch.metadata.resource_version.as_deref(), Some("42"));
        let spec = patch.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.renew_time.map(|t| t.0), Some(now));
        assert_eq!(spec.acquire_time.map(|t| t.0), Some(now));
        assert_eq!(spec.lease_transitions, Some(4));
        // Taking up our own claim keeps its acquisition and counts no transition.
        let acquired: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        if let Some(s) = held.spec.as_mut() {
            s.acquire_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                acquired,
            ));
        }
        let own = claim(&held, "a", 15, now).unwrap().spec.unwrap();
        assert_eq!(own.acquire_time.map(|t| t.0), Some(acquired));
        assert_eq!(own.lease_transitions, Some(3));
        assert_eq!(own.renew_time.map(|t| t.0), Some(now));
        // As sent: a JSON merge patch of the holder, times and version only.
        let body = serde_json::to_value(claim(&held, "b", 15, now).unwrap()).unwrap();
        assert_eq!(
            body["metadata"],
            serde_json::json!({"resourceVersion": "42"})
        );
        assert_eq!(body["spec"]["holderIdentity"], "b");
    }

    #[test]
    fn a_standby_polls_at_least_every_second() {
        for (duration, grace) in [(15, 5), (3, 1), (60, 20), (2, 1)] {
            let t = LeaseTiming { duration, grace };
            assert!(t.standby_interval() <= Duration::from_secs(1), "{t:?}");
            assert!(t.standby_interval() >= Duration::from_millis(200), "{t:?}");
        }
        assert_eq!(
            LeaseTiming {
                duration: 15,
                grace: 5
            }
            .standby_interval(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn lease_timing_rejects_what_the_crate_would_panic_on() {
        let ok = LeaseTiming {
            duration: 15,
            grace: 5,
        };
        assert_eq!(ok.validate().unwrap(), ok);
        for (duration, grace) in [(5, 5), (5, 10), (0, 0), (10, 0)] {
            let e = LeaseTiming { duration, grace }.validate().unwrap_err();
            assert!(
                e.to_string().contains("grace shorter than the duration"),
                "{e}"
            );
        }
    }
}
