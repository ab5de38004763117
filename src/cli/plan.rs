use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;

use super::{OutputFormat, PlanArgs};
use crate::catalog::LegacyConfig;
use crate::plan::{PlanInput, PlanProgress, PlanReport};

/// Dry-run a plan: print waves, blocked machines, flips, windows, DCRs and ETA; exit 0 when the
/// plan is valid, 1 when it is refused.
pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (report, text) = render(&args)?;
    print!("{text}");
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Read the files, run the planner, render in the requested format.
pub fn render(args: &PlanArgs) -> anyhow::Result<(PlanReport, String)> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let plan = crate::api::load::load_plan(&read(&args.plan)?)
        .with_context(|| format!("in {}", args.plan.display()))?;
    let inventory = crate::input_files::read_inventory(&read(&args.inventory)?)
        .with_context(|| format!("in {}", args.inventory.display()))?;
    let heartbeat = match &args.heartbeat {
        Some(p) => crate::input_files::read_heartbeat(&read(p)?)
            .with_context(|| format!("in {}", p.display()))?,
        None => Vec::new(),
    };
    let legacy = match &args.datasources {
        Some(p) => crate::input_files::read_data_sources(&read(p)?)
            .with_context(|| format!("in {}", p.display()))?,
        None => LegacyConfig::default(),
    };
    let name = plan.metadata.name.clone().unwrap_or_else(|| "plan".into());
    let states = HashMap::new();
    let progress = PlanProgress::default();
    let input = PlanInput {
        plan_name: &name,
        spec: &plan.spec,
        inventory: &inventory,
        heartbeat: &heartbeat,
        legacy: &legacy,
        states: &states,
        progress: &progress,
        other_plans: &[],
        now: k8s_openapi::jiff::Timestamp::now(),
    };
    let outcome = crate::plan::plan(&input);
    let report = PlanReport::build(&input, &outcome);
    let text = match args.output {
        OutputFormat::Table => report.to_table(),
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(&report)?,
    };
    Ok((report, text))
}
