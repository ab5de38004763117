//! `ama-migrator simulate`: the engine against the in-process simulator, then the tracker table
//! (or one JSON document). Exit 0 only if the migration completed with no violation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

use crate::engine::progress::StderrProgress;
use crate::engine::simulate::{DEFAULT_TIME_SCALE, Simulation, request_lines};
use crate::engine::{SimulateOptions, SimulationReport};
use crate::local::tracker::render_columns;
use crate::sim::Scenario;

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum ReportFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Machines in the simulated fleet (default 500, or the scenario's).
    #[arg(long)]
    pub machines: Option<usize>,
    /// Scenario file (JSON or YAML) shaping the simulated world.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// MigrationPlan to run (default: a built-in plan for the simulator's workspace).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// State file (SQLite); default: in memory.
    #[arg(long)]
    pub state: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub report: ReportFormat,
    /// Write every ARM request (method, path, query, body) to this file as JSON lines.
    #[arg(long)]
    pub record_requests: Option<PathBuf>,
    /// How long the run may sit with nothing to do before it ends as stalled, in simulated time
    /// (the engine runs on the simulator's clock): seconds (`90`) or a duration (`45m`).
    #[arg(long, value_name = "DURATION", default_value = "45m", value_parser = super::migrate::parse_stall_after)]
    pub stall_after: Duration,
    /// Without a terminal on stderr: real seconds between two progress summary lines.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_interval_seconds: u64,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let mut scenario = match &args.scenario {
        Some(p) => Scenario::from_file(p)?,
        None => Scenario {
            time_scale: DEFAULT_TIME_SCALE,
            ..Scenario::default()
        },
    };
    if let Some(n) = args.machines {
        scenario.machines = n;
    }
    let plan = match &args.plan {
        Some(p) => Some(super::read_plan_file(p)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let options = SimulateOptions {
            scenario,
            plan,
            state: args.state.clone(),
            stall_after: args.stall_after,
            ..SimulateOptions::default()
        };
        let mut sim = Simulation::start(options).await?;
        let progress = Arc::new(StderrProgress::new(
            sim.client.clone(),
            Duration::from_secs(args.progress_interval_seconds),
        ));
        sim.options.progress = Some(progress.clone());
        let ran = sim.run(None).await;
        progress.finish();
        if let Err(e) = ran {
            let endpoints = sim.client.config().endpoints.clone();
            let code = super::migrate::engine_failure(&e, &endpoints, &sim.plan.spec.workspace);
            sim.shutdown().await;
            return Ok(code);
        }
        let report = sim.report();
        if let Some(path) = &args.record_requests {
            std::fs::write(path, request_lines(&sim.request_log()))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        match args.report {
            ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            ReportFormat::Table => print!("{}", table(&report)),
        }
        sim.shutdown().await;
        Ok(if report.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

fn table(r: &SimulationReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("RESULT  {:?}\n\n", r.end));
    out.push_str(&render_columns(&[
        vec![
            "machines".into(),
            "completed".into(),
            "failed".into(),
            "blocked".into(),
        ],
        vec![
            r.machines.to_string(),
            r.completed.to_string(),
            r.failed.to_string(),
            r.blocked.to_string(),
        ],
    ]));
    out.push_str("\nAGENTS PER DATA SOURCE (in-scope machines, from the ledger)\n");
    let mut rows = vec![vec![
        "data source".to_string(),
        "legacy only".into(),
        "AMA only".into(),
        "both".into(),
        "none".into(),
    ]];
    for (t, s) in &r.agent_states {
        rows.push(vec![
            t.to_string(),
            s.legacy_only.to_string(),
            s.ama_only.to_string(),
            s.both.to_string(),
            s.none.to_string(),
        ]);
    }
    out.push_str(&render_columns(&rows));
    out.push_str(&format!(
        "\nLEDGER  duplicate minutes {} · gap minutes {} · outside the declared windows {} · duplicates that predate the plan {}\n",
        r.duplicate_minutes, r.gap_minutes, r.violations, r.preexisting_duplicate_minutes
    ));
    for v in &r.violation_examples {
        out.push_str(&format!("  violation: {v}\n"));
    }
    out.push_str(&format!(
        "ARM     {} reads · {} writes · {} deletes · {} throttled · {} Resource Graph · {} Log Analytics queries\n",
        r.arm.reads, r.arm.writes, r.arm.deletes, r.arm.throttled, r.arm.resource_graph, r.arm.log_queries
    ));
    out.push_str(&format!(
        "TIME    {:.1} s elapsed ({} simulated minutes) · {:.0} machines/h against a quota bound of {:.0}/h (ratio {:.2}) · {:.1} reads and {:.1} writes per machine\n",
        r.elapsed_seconds, r.simulated_minutes, r.machines_per_hour, r.quota_bound_per_hour, r.throughput_ratio, r.reads_per_machine, r.writes_per_machine
    ));
    if !r.flipped.is_empty() {
        out.push_str(&format!("FLIPPED {}\n", r.flipped.join(", ")));
    }
    out
}
