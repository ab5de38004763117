//! `status`: the tracker view of a local state file, per plan, as tables or one JSON document.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use serde::Serialize;

use crate::api::MigrationPlan;
use crate::api::plan::PlanPhase;
use crate::local::tracker::{self, TrackerSummary};
use crate::local::{
    EventType, JournalEntry, OperationOutcome, StateStore, StoreError, StoredEvent,
};

/// Warning events shown by the table view (JSON lists the same).
const RECENT_WARNINGS: usize = 10;
/// In-flight operations listed by the table view.
const IN_FLIGHT_SHOWN: usize = 10;

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum StatusOutput {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The state file `simulate --state` or `migrate --state` writes.
    #[arg(long, env = "AMA_MIGRATOR_STATE")]
    pub state: PathBuf,
    #[arg(long, value_enum, default_value_t = StatusOutput::Table)]
    pub output: StatusOutput,
}

/// One plan and where its machines stand.
#[derive(Debug, Serialize)]
pub struct PlanStatus {
    pub namespace: String,
    pub name: String,
    pub phase: Option<PlanPhase>,
    pub current_wave: Option<String>,
    pub paused: bool,
    pub dry_run: bool,
    /// The plan's status conditions (`Ready`, `Progressing`, `Degraded`, `Blocked`) with their
    /// full messages: what blocks the plan and what to do.
    pub conditions: Vec<PlanCondition>,
    pub tracker: TrackerSummary,
    /// Workspace legacy settings changed and not yet restored.
    pub legacy_settings_changed: usize,
}

/// One condition of a plan's status, as `kubectl describe` shows it.
#[derive(Debug, Serialize)]
pub struct PlanCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// ARM writes the engine journaled.
#[derive(Debug, Default, Serialize)]
pub struct OperationCounts {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub abandoned: usize,
    pub in_flight: usize,
}

/// The whole `status --output json` document.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub state: String,
    pub plans: Vec<PlanStatus>,
    pub operations: OperationCounts,
    pub in_flight_operations: Vec<JournalEntry>,
    pub recent_warnings: Vec<StoredEvent>,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = StateStore::open_existing(&args.state)?;
    let report =
        build_report(&store).with_context(|| format!("reading {}", args.state.display()))?;
    match args.output {
        StatusOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        StatusOutput::Table => print!("{}", render_table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Read one consistent snapshot of the file and summarise it.
pub fn build_report(store: &StateStore) -> Result<StatusReport, StoreError> {
    store.read(|s| {
        let mut plans = Vec::new();
        for plan in s.list::<MigrationPlan>(None)? {
            let namespace = plan.metadata.namespace.clone().unwrap_or_default();
            let name = plan.metadata.name.clone().unwrap_or_default();
            let machines = s.list_plan_machines(&namespace, &name)?;
            let status = plan.status.clone().unwrap_or_default();
            plans.push(PlanStatus {
                legacy_settings_changed: s.legacy_changes(&namespace, &name, false)?.len(),
                tracker: tracker::summarize(&machines),
                conditions: status
                    .conditions
                    .iter()
                    .map(|c| PlanCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                    .collect(),
                phase: status.phase,
                current_wave: status.current_wave,
                paused: plan.spec.paused,
                dry_run: plan.spec.dry_run,
                namespace,
                name,
            });
        }
        let journal = s.operations()?;
        let mut operations = OperationCounts {
            total: journal.len(),
            ..OperationCounts::default()
        };
        for entry in &journal {
            match &entry.outcome {
                None => operations.in_flight += 1,
                Some(OperationOutcome::Succeeded) => operations.succeeded += 1,
                Some(OperationOutcome::Failed { .. }) => operations.failed += 1,
                Some(OperationOutcome::Abandoned { .. }) => operations.abandoned += 1,
            }
        }
        let recent_warnings = s
            .events(None, 500)?
            .into_iter()
            .filter(|e| e.event_type == EventType::Warning)
            .take(RECENT_WARNINGS)
            .collect();
        Ok(StatusReport {
            state: store.path().display().to_string(),
            plans,
            operations,
            in_flight_operations: journal
                .into_iter()
                .filter(JournalEntry::in_flight)
                .collect(),
            recent_warnings,
        })
    })
}

pub fn render_table(report: &StatusReport) -> String {
    let mut out = String::new();
    if report.plans.is_empty() {
        out.push_str(&format!("No plans in {}.\n", report.state));
    }
    for plan in &report.plans {
        let phase = plan
            .phase
            .map_or_else(|| "Pending".to_string(), |p| format!("{p:?}"));
        let mut flags = Vec::new();
        if plan.paused {
            flags.push("paused");
        }
        if plan.dry_run {
            flags.push("dry run");
        }
        out.push_str(&format!(
            "Plan {}/{}  phase {}  wave {}{}\n",
            plan.namespace,
            plan.name,
            phase,
            plan.current_wave.as_deref().unwrap_or("-"),
            if flags.is_empty() {
                String::new()
            } else {
                format!("  ({})", flags.join(", "))
            }
        ));
        if !plan.conditions.is_empty() {
            out.push_str("Conditions:\n");
            let rows: Vec<Vec<String>> = plan
                .conditions
                .iter()
                .map(|c| {
                    vec![
                        format!("  {}", c.type_),
                        c.status.clone(),
                        c.reason.clone(),
                        c.message.clone(),
                    ]
                })
                .collect();
            out.push_str(&tracker::render_columns(&rows));
        }
        out.push_str(&tracker::render_table(&plan.tracker));
        if plan.legacy_settings_changed > 0 {
            out.push_str(&format!(
                "Legacy settings changed (restorable): {}\n",
                plan.legacy_settings_changed
            ));
        }
        out.push('\n');
    }
    let o = &report.operations;
    out.push_str(&format!(
        "ARM operations: {} journaled, {} succeeded, {} failed, {} abandoned, {} in flight\n",
        o.total, o.succeeded, o.failed, o.abandoned, o.in_flight
    ));
    for op in report.in_flight_operations.iter().take(IN_FLIGHT_SHOWN) {
        out.push_str(&format!(
            "  in flight: {} on {} since {}\n",
            op.action, op.resource_id, op.started_at
        ));
    }
    if report.in_flight_operations.len() > IN_FLIGHT_SHOWN {
        out.push_str(&format!(
            "  … and {} more in flight (--output json lists all)\n",
            report.in_flight_operations.len() - IN_FLIGHT_SHOWN
        ));
    }
    if !report.recent_warnings.is_empty() {
        out.push_str("Recent warnings:\n");
        for e in &report.recent_warnings {
            out.push_str(&format!(
                "  {}  {} {}/{}  {}: {}\n",
                e.at, e.object.kind, e.object.namespace, e.object.name, e.reason, e.message
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn the_table_lists_ten_in_flight_operations_and_counts_the_rest() {
        let store = StateStore::open_in_memory().unwrap();
        store
            .transaction(|tx| {
                for i in 0..12 {
                    tx.begin_operation(
                        &format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-{i}"),
                        "InstallAma",
                        None,
                        Timestamp::from_second(i).unwrap(),
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let report = build_report(&store).unwrap();
        assert_eq!(report.operations.in_flight, 12);
        let text = render_table(&report);
        assert!(text.starts_with("No plans in :memory:."), "{text}");
        assert_eq!(text.matches("  in flight: InstallAma").count(), 10);
        assert!(text.contains("… and 2 more in flight"), "{text}");
    }
}
