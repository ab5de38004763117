//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): the controllers run
//! only while this replica holds the Lease, so two replicas never both write status. Losing the
//! Lease stops the controllers and ends the process (Kubernetes restarts it as a standby);
//! shutting down releases the Lease so a rolling update hands over at once.
//!
//! The decisions are pure functions ([`on_change`], [`is_ready`], [`LeaseTiming::validate`]);
//! [`lead`] is the thin shell over the Lease and the controllers.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

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
}

/// Ready when the role is known: a standby is ready (so a 2-replica rollout does not stall);
/// the leader once its controller caches are synced.
pub fn is_ready(state: LeaderState) -> bool {
    match state {
        LeaderState::Unknown => false,
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

/// Stand by for the Lease, run the controllers while holding it, stop on `shutdown` or when
/// the Lease is lost. The Lease is released before this returns (unless another replica holds
/// it already).
pub async fn lead(
    client: Client,
    config: &LeaderConfig,
    ctx: Arc<Context>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, LeaderError> {
    let timing = config.timing.validate()?;
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
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
    tokio::pin!(shutdown);
    let outcome = 'outer: {
        // Standing by.
        loop {
            tokio::select! {
                _ = &mut shutdown => break 'outer Ok(Outcome::Shutdown),
                changed = rx.changed() => {
                    let holder = changed.ok().map(|_| *rx.borrow_and_update());
                    match on_change(false, holder) {
                        Transition::StartControllers => break,
                        Transition::WatchFailed => break 'outer Err(LeaderError::WatchEnded {
                            namespace: config.namespace.clone(),
                            name: config.lease_name.clone(),
                        }),
                        Transition::StopAndExit | Transition::Nothing => {}
                    }
                }
            }
        }
        // Leading.
        tracing::info!(identity = %config.identity, "became leader; starting the controllers");
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
        let outcome = loop {
            tokio::select! {
                _ = &mut shutdown => break Outcome::Shutdown,
                _ = &mut task => {
                    synced_task.abort();
                    break 'outer Ok(Outcome::ControllersEnded);
                }
                changed = rx.changed() => {
                    let holder = changed.ok().map(|_| *rx.borrow_and_update());
                    if on_change(true, holder) == Transition::StopAndExit {
                        tracing::warn!(identity = %config.identity, "leadership lost");
                        break Outcome::LostLeadership;
                    }
                }
            }
        };
        synced_task.abort();
        tracing::info!("stopping the controllers (engines finish their pass)");
        let _ = stop_tx.send(());
        if tokio::time::timeout(config.stop_grace, task).await.is_err() {
            tracing::warn!(
                grace = ?config.stop_grace,
                "controllers did not stop in time; the next leader resumes from the persisted state"
            );
        }
        Ok(outcome)
    };
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
