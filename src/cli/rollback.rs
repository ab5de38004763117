//! `ama-migrator rollback`: put a wave (or the whole plan) of a local state back on the legacy
//! path, for people without Kubernetes. Stop `migrate` first; the rollback pauses the plan, so a
//! later `migrate` does not re-migrate the machines until `rollback --clear`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::MigrationPlan;
use crate::engine::{Engine, EngineOptions, RollbackScope, SystemClock};
use crate::local::StateStore;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["wave", "all", "clear"])))]
pub struct RollbackArgs {
    /// State file (SQLite) of an earlier `migrate`.
    #[arg(long, env = "AMA_MIGRATOR_STATE")]
    pub state: PathBuf,
    /// The plan's `metadata.name`.
    #[arg(long)]
    pub plan_name: String,
    /// The plan's namespace in the state file.
    #[arg(long, default_value = crate::local::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Roll back this wave.
    #[arg(long)]
    pub wave: Option<String>,
    /// Roll back the whole plan: every machine, every workspace setting it changed, its DCRs.
    #[arg(long)]
    pub all: bool,
    /// Clear an earlier rollback: the plan resumes and migrates those machines again.
    #[arg(long)]
    pub clear: bool,
    /// workload-identity, managed-identity, client-secret, azure-cli (none: loopback only).
    #[arg(long, env = "AZURE_CREDENTIAL_KIND", default_value = "azure-cli")]
    pub credential: String,
    #[command(flatten)]
    pub azure: super::azure_args::AzureEndpointArgs,
    /// Seconds between two polls of a running operation.
    #[arg(long, default_value_t = 15)]
    pub tick_seconds: u64,
}

pub fn run(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let state = StateStore::open_for_writing(&args.state, "ama-migrator rollback")
        .with_context(|| format!("cannot open the state file {}", args.state.display()))?;
    let plan: MigrationPlan = state
        .get(&args.namespace, &args.plan_name)
        .with_context(|| format!("cannot read {}", args.state.display()))?
        .with_context(|| {
            format!(
                "{} holds no plan {}/{}: check --state, --plan-name and --namespace (`ama-migrator status --state FILE` lists the plans)",
                args.state.display(),
                args.namespace,
                args.plan_name
            )
        })?;
    let client = args.azure.client(&args.credential)?;
    let options = EngineOptions {
        tick: Duration::from_secs(args.tick_seconds.max(1)),
        ..EngineOptions::default()
    };
    let engine = Engine::new(client, Arc::new(state), Arc::new(SystemClock), options);
    if args.clear {
        let n = engine.clear_rollback(&plan)?;
        println!(
            "{}",
            serde_json::json!({"cleared": true, "machinesReset": n})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let scope = match &args.wave {
        Some(w) => RollbackScope::Wave(w.clone()),
        None => RollbackScope::Plan,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let stop = engine.stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping; run the same command again to resume the rollback");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let end = engine.rollback(&plan, scope).await?;
        println!("{}", serde_json::to_string_pretty(&end)?);
        Ok(if end.stopped {
            ExitCode::from(3)
        } else if end.complete() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
