//! `ama-migrator migrate`: the engine against real Azure with local state, for people without
//! Kubernetes. Stop it at any time (ctrl-c) and run it again on the same state file: in-flight
//! operations are resumed from their persisted handles.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::engine::progress::StderrProgress;
use crate::engine::state::EngineState;
use crate::engine::{Engine, EngineOptions, RunEnd, SystemClock};
use crate::local::StateStore;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The MigrationPlan (YAML or JSON).
    #[arg(long)]
    pub plan: PathBuf,
    /// State file (SQLite), created if absent; reuse it to resume.
    #[arg(long, env = "AMA_MIGRATOR_STATE")]
    pub state: PathBuf,
    /// workload-identity, managed-identity, client-secret, azure-cli (none: loopback only).
    #[arg(long, env = "AZURE_CREDENTIAL_KIND", default_value = "azure-cli")]
    pub credential: String,
    #[command(flatten)]
    pub azure: super::azure_args::AzureEndpointArgs,
    /// Approve the manual gate of this wave (repeatable).
    #[arg(long = "approve", value_name = "WAVE")]
    pub approve: Vec<String>,
    /// Retry this Failed machine (its name or resource ID; repeatable): its failure, attempts and
    /// backoff are cleared before the run, as the operator's `amamigrator.io/retry` annotation does.
    #[arg(long = "retry", value_name = "MACHINE")]
    pub retry: Vec<String>,
    /// Retry every Failed machine of the plan.
    #[arg(long)]
    pub retry_failed: bool,
    /// Failed attempts of one machine's step before the machine is Failed (retried with
    /// exponential backoff from 30 s in between).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,
    /// Seconds between two passes of the loop.
    #[arg(long, default_value_t = 15)]
    pub tick_seconds: u64,
    /// Seconds between two bulk verification queries (one Log Analytics query per round).
    #[arg(long, default_value_t = 60)]
    pub verify_interval_seconds: u64,
    /// How long the run may sit with nothing to do and nothing running before it ends as
    /// stalled (exit 1) with what a person must do: seconds (`90`) or a duration (`30m`, `1h30m`).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_stall_after)]
    pub stall_after: Duration,
    /// Without a terminal on stderr: seconds between two progress summary lines (a line also
    /// comes whenever a wave changes phase). On a terminal, live bars are drawn instead.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_interval_seconds: u64,
}

/// `--stall-after`: plain seconds (`90`) or a duration as plans write them (`30m`, `1h30m`).
pub(crate) fn parse_stall_after(text: &str) -> Result<Duration, String> {
    let d = match text.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => crate::api::duration::parse_duration(text).map_err(|e| e.to_string())?,
    };
    if d.is_zero() {
        return Err("must be at least 1 second".into());
    }
    Ok(d)
}

pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let plan = super::read_plan_file(&args.plan)?;
    let client = args.azure.client(&args.credential)?;
    let endpoints = client.config().endpoints.clone();
    let workspace = plan.spec.workspace.clone();
    let state = StateStore::open_for_writing(&args.state, "ama-migrator migrate")
        .with_context(|| format!("cannot open the state file {}", args.state.display()))?;
    if !args.retry.is_empty() || args.retry_failed {
        let retried = retry_machines(&state, &plan, &args.retry, args.retry_failed)
            .with_context(|| format!("in the state file {}", args.state.display()))?;
        eprintln!(
            "retrying {} machine(s){}",
            retried.len(),
            if retried.is_empty() {
                String::new()
            } else {
                format!(": {}", retried.join(", "))
            }
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let options = EngineOptions {
            tick: Duration::from_secs(args.tick_seconds.max(1)),
            approvals: args.approve.clone(),
            verify_interval: Duration::from_secs(args.verify_interval_seconds.max(1)),
            max_attempts: args.max_attempts,
            stall_after: args.stall_after,
            ..EngineOptions::default()
        };
        let mut engine = Engine::new(
            client.clone(),
            Arc::new(state),
            Arc::new(SystemClock),
            options,
        );
        let progress = Arc::new(StderrProgress::new(
            client,
            Duration::from_secs(args.progress_interval_seconds),
        ));
        engine.progress = Some(progress.clone());
        let stop = engine.stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping after this pass; run the same command again to resume");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let end = engine.run(plan).await;
        progress.finish();
        let end = match end {
            Ok(end) => end,
            Err(e) => return Ok(engine_failure(&e, &endpoints, &workspace)),
        };
        println!("{}", serde_json::to_string_pretty(&end)?);
        Ok(match end {
            RunEnd::Completed => ExitCode::SUCCESS,
            RunEnd::Stopped => ExitCode::from(3),
            RunEnd::Stalled { .. } | RunEnd::Refused { .. } => ExitCode::from(1),
        })
    })
}

/// An engine error on stderr as the operator reports it (`error: <Reason>: <what failed and what
/// to do>`); exit status 4.
pub(crate) fn engine_failure(
    e: &crate::engine::EngineError,
    endpoints: &crate::azure::Endpoints,
    workspace: &str,
) -> ExitCode {
    let d = crate::engine::diagnose(e, endpoints, workspace);
    eprintln!("error: {}: {}", d.reason, d.message);
    ExitCode::from(ENGINE_FAILED_EXIT)
}

/// Exit status of `migrate` and `simulate` when the engine stops with an error.
pub(crate) const ENGINE_FAILED_EXIT: u8 = 4;

/// Why a `--retry` could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(
        "--retry {wanted:?}: plan {plan} has no machine of that name or resource ID in this state file; `ama-migrator status --state FILE` lists them"
    )]
    NoSuchMachine { wanted: String, plan: String },
    #[error("the plan is not in this state file yet; run `migrate` without --retry first")]
    NoPlan,
    #[error(transparent)]
    Store(#[from] crate::local::StoreError),
}

/// Clear the failure of the named machines (by name or resource ID, any case) and, with
/// `all_failed`, of every Failed machine of the plan; saved before the engine starts. Returns the
/// names of the machines retried.
fn retry_machines(
    state: &StateStore,
    plan: &crate::api::MigrationPlan,
    names: &[String],
    all_failed: bool,
) -> Result<Vec<String>, RetryError> {
    use crate::engine::record::MachineRecord;
    let ns = plan
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| crate::local::DEFAULT_NAMESPACE.to_string());
    let name = plan.metadata.name.clone().ok_or(RetryError::NoPlan)?;
    let machines = state.list_plan_machines(&ns, &name)?;
    if machines.is_empty() {
        return Err(RetryError::NoPlan);
    }
    let matches = |m: &crate::api::MachineMigration, wanted: &str| {
        m.spec.machine_id.eq_ignore_ascii_case(wanted)
            || m.spec
                .machine_id
                .rsplit('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
            || m.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
    };
    for wanted in names {
        if !machines.iter().any(|m| matches(m, wanted)) {
            return Err(RetryError::NoSuchMachine {
                wanted: wanted.clone(),
                plan: name,
            });
        }
    }
    let mut retried = Vec::new();
    for m in machines {
        let named = names.iter().any(|w| matches(&m, w));
        let mut record = MachineRecord::from_object(m);
        let failed =
            record.progress.failed || record.step() == crate::api::machine::MachineStep::Failed;
        if !(named || (all_failed && failed)) {
            continue;
        }
        record.clear_failure();
        record.encode();
        let machine_name = record
            .object
            .spec
            .machine_id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        state.save_machine(&record.object)?;
        retried.push(machine_name);
    }
    Ok(retried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_after_takes_seconds_or_a_duration() {
        assert_eq!(parse_stall_after("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_stall_after("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_stall_after("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_stall_after("0").is_err());
        assert!(parse_stall_after("0s").is_err());
        assert!(
            parse_stall_after("soon")
                .unwrap_err()
                .contains("e.g. \"30m\"")
        );
    }
}
