//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): the controllers run
//! only while this replica holds the Lease, so two replicas never both write status. Losing the
//! Lease stops the controllers and ends the process (Kubernetes restarts it as a standby);
//! shutting down releases the Lease so a rolling update hands over at once.
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
//! [`LeaseTiming::validate`]); [`lead`] is the thin shell over the Lease and the controllers.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
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
        Duration::from_millis((self.grace * 500).max(200))
    }
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
    #[error("the watch of the Lease {namespace}/{name} ended before this replica became leader")]
    WatchEnded { namespace: String, name: String },
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

/// Where [`lead`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Standby,
    Leading,
    Expired,
}

/// Stand by for the Lease, run the controllers while holding it, stop on `shutdown` or when
/// the Lease is lost; stop (and wait, not ready) while the Lease goes unrenewed past its
/// duration. The Lease is released before this returns (unless another replica holds it
/// already).
pub async fn lead(
    client: Client,
    config: &LeaderConfig,
    ctx: Arc<Context>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, LeaderError> {
    let timing = config.timing.validate()?;
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(timing.duration)
        .with_grace(timing.grace)
        .build()
        .await
        .map_err(|source| LeaderError::Lease {
            namespace: config.namespace.clone(),
            name: config.lease_name.clone(),
            source,
        })?;
    health.set(LeaderState::Standby);
    tracing::info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "standing by for the Lease");
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
    tokio::pin!(shutdown);
    let mut phase = Phase::Standby;
    let outcome = loop {
        match phase {
            Phase::Standby => {
                health.set(LeaderState::Standby);
                tokio::select! {
                    _ = &mut shutdown => break Ok(Outcome::Shutdown),
                    changed = rx.changed() => {
                        let holder = changed.ok().map(|_| *rx.borrow_and_update());
                        match on_change(false, holder) {
                            Transition::StartControllers => phase = Phase::Leading,
                            Transition::WatchFailed => break Err(LeaderError::WatchEnded {
                                namespace: config.namespace.clone(),
                                name: config.lease_name.clone(),
                            }),
                            Transition::StopAndExit | Transition::Nothing => {}
                        }
                    }
                }
            }
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
                        break Ok(o);
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
                    Some(o) => break Ok(o),
                    None => phase = Phase::Expired,
                }
            }
            Phase::Expired => {
                health.set(LeaderState::Expired);
                tokio::select! {
                    _ = &mut shutdown => break Ok(Outcome::Shutdown),
                    changed = rx.changed() => {
                        let holder = changed.ok().map(|_| *rx.borrow_and_update());
                        if on_change(true, holder) == Transition::StopAndExit {
                            tracing::warn!(identity = %config.identity, "leadership lost while the Lease was unrenewed");
                            break Ok(Outcome::LostLeadership);
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
    };
    guard.abort();
    health.set(LeaderState::Unknown);
    // Dropping the receiver makes the watch task release the Lease and end.
    drop(rx);
    match tokio::time::timeout(Duration::from_secs(5), watch_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("Lease released"),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "cannot release the Lease; it expires on its own")
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("the Lease watch did not end in time; the Lease expires on its own")
        }
    }
    outcome
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
