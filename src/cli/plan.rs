use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;

use super::{OutputFormat, PlanArgs};
use crate::azure::{WorkspaceDataSource, WorkspaceDataSourceList};
use crate::catalog::LegacyConfig;
use crate::inventory::{
    HeartbeatSender, InventoryMachine, LogQueryResponse, ResourceGraphResponse,
};
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
    let inv: ResourceGraphResponse<InventoryMachine> =
        serde_json::from_str(&read(&args.inventory)?).with_context(|| {
            format!(
                "{} is not a Resource Graph response of the inventory query (see README)",
                args.inventory.display()
            )
        })?;
    let heartbeat = match &args.heartbeat {
        Some(p) => {
            let resp: LogQueryResponse = serde_json::from_str(&read(p)?).with_context(|| {
                format!("{} is not a Log Analytics query response", p.display())
            })?;
            HeartbeatSender::from_export(&resp).with_context(|| format!("in {}", p.display()))?
        }
        None => Vec::new(),
    };
    let legacy = match &args.datasources {
        Some(p) => {
            let text = read(p)?;
            let list: Vec<WorkspaceDataSource> =
                match serde_json::from_str::<WorkspaceDataSourceList>(&text) {
                    Ok(l) => l.value,
                    Err(_) => serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{} is neither {{\"value\": [...]}} nor a list of dataSources",
                            p.display()
                        )
                    })?,
                };
            LegacyConfig::from_data_sources(&list).with_context(|| format!("in {}", p.display()))?
        }
        None => LegacyConfig::default(),
    };
    let name = plan.metadata.name.clone().unwrap_or_else(|| "plan".into());
    let states = HashMap::new();
    let progress = PlanProgress::default();
    let input = PlanInput {
        plan_name: &name,
        spec: &plan.spec,
        inventory: &inv.data,
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
