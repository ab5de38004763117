//! `ama-migrator run`: the operator. Serves `/metrics`, `/healthz`, `/readyz`, stands by for the
//! Lease and runs the controllers only while it leads. Exit codes: 0 after SIGTERM/ctrl-c,
//! 1 when leadership was lost or the controllers ended (Kubernetes restarts the pod as a
//! standby), 2 on a configuration or connection error.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::engine::{EngineOptions, SystemClock};
use crate::operator::controller::Context;
use crate::operator::leader::{self, Health, LeaderConfig, LeaseTiming, Outcome};
use crate::operator::metrics::Metrics;
use crate::operator::serve;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "AMA_MIGRATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Name of the coordination.k8s.io Lease of leader election.
    #[arg(long, env = "AMA_MIGRATOR_LEASE_NAME", default_value = "ama-migrator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the kubeconfig's or the pod's namespace).
    #[arg(long, env = "AMA_MIGRATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Comma-separated namespaces to watch (namespaced RBAC); empty: every namespace.
    #[arg(long, env = "AMA_MIGRATOR_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// workload-identity, managed-identity, client-secret, azure-cli, none (loopback only).
    #[arg(
        long,
        env = "AZURE_CREDENTIAL_KIND",
        default_value = "workload-identity"
    )]
    pub credential: String,
    #[command(flatten)]
    pub azure: super::azure_args::AzureEndpointArgs,
    /// Seconds a leader's claim on the Lease stays valid after its last renewal.
    #[arg(
        long,
        env = "AMA_MIGRATOR_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    pub lease_duration_seconds: u64,
    /// Seconds before expiry the leader renews (also the tolerated clock skew).
    #[arg(long, env = "AMA_MIGRATOR_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,
    /// Seconds the engines get to finish their pass on shutdown.
    #[arg(long, env = "AMA_MIGRATOR_STOP_GRACE_SECONDS", default_value_t = 20)]
    pub stop_grace_seconds: u64,
    /// Seconds between two passes of each plan's engine loop.
    #[arg(long, env = "AMA_MIGRATOR_TICK_SECONDS", default_value_t = 15)]
    pub tick_seconds: u64,
    /// Async worker threads (1-64). The operator waits on I/O; each extra thread costs memory
    /// (its own allocator arena and caches) and more cores do not make Azure quotas bigger.
    #[arg(
        long,
        env = "AMA_MIGRATOR_WORKER_THREADS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub worker_threads: u16,
}

/// Most threads for blocking work (DNS lookups, the Kubernetes state store's `block_in_place`).
const MAX_BLOCKING_THREADS: usize = 8;

/// SIGTERM (Kubernetes) or ctrl-c.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let timing = LeaseTiming {
        duration: args.lease_duration_seconds,
        grace: args.lease_grace_seconds,
    }
    .validate()?;
    let arm = args.azure.client(&args.credential)?;
    let watch_namespaces: Vec<String> = args
        .watch_namespaces
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads))
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let listener = tokio::net::TcpListener::bind(args.metrics_addr)
            .await
            .with_context(|| format!("cannot listen on {} (AMA_MIGRATOR_METRICS_ADDR)", args.metrics_addr))?;
        let bound = listener.local_addr()?;
        let (server_stop, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve::serve(
            listener,
            serve::router(metrics.clone(), health.clone()),
            async move {
                let _ = server_stop_rx.await;
            },
        ));
        tracing::info!(%bound, "serving /metrics, /healthz, /readyz");

        let kube_config = kube::Config::infer().await.context(
            "cannot configure the Kubernetes client (in a pod: its service account; elsewhere: KUBECONFIG or ~/.kube/config)",
        )?;
        let client = crate::operator::client(kube_config)
            .context("cannot build the Kubernetes client")?;
        let namespace = args
            .lease_namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let identity = args
            .identity
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("ama-migrator-{}", std::process::id()));
        let options = EngineOptions {
            tick: Duration::from_secs(args.tick_seconds.max(1)),
            ..EngineOptions::default()
        };
        let ctx = Context::new(
            client.clone(),
            metrics.clone(),
            arm,
            Arc::new(SystemClock),
            options,
            Some(identity.clone()),
        )
        .with_watch_namespaces(watch_namespaces);
        let config = LeaderConfig {
            lease_name: args.lease_name.clone(),
            namespace,
            identity,
            timing,
            stop_grace: Duration::from_secs(args.stop_grace_seconds),
        };
        let outcome = leader::lead(client, &config, ctx, health, terminated()).await;
        let _ = server_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        match outcome? {
            Outcome::Shutdown => Ok(ExitCode::SUCCESS),
            Outcome::LostLeadership => {
                eprintln!("leadership lost: exiting so that Kubernetes restarts this replica as a standby");
                Ok(ExitCode::from(1))
            }
            Outcome::ControllersEnded => {
                eprintln!("the controllers ended unexpectedly: exiting so that Kubernetes restarts this replica");
                Ok(ExitCode::from(1))
            }
        }
    })
}
