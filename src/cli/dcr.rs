//! `ama-migrator dcr from-workspace`: legacy workspace dataSources → equivalent DCR JSON.

use std::process::ExitCode;

use anyhow::Context;

use super::DcrFromWorkspaceArgs;
use crate::catalog::convert;

/// Print the DCRs as a JSON array of `{name, os, dataSources, rule}` on stdout and the
/// requirements on stderr.
pub fn run_from_workspace(args: DcrFromWorkspaceArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.datasources)
        .with_context(|| format!("cannot read --datasources {}", args.datasources.display()))?;
    let set = convert::convert_text(
        &text,
        args.workspace.as_deref(),
        &args.location,
        args.data_collection_endpoint.as_deref(),
    )
    .with_context(|| format!("cannot convert {}", args.datasources.display()))?;
    println!("{}", serde_json::to_string_pretty(&set.rules)?);
    for r in &set.requirements {
        let source = r.data_source.map(|t| format!(" {t}")).unwrap_or_default();
        eprintln!("requirement ({:?}{source}): {}", r.kind, r.message);
    }
    if set.rules.is_empty() {
        eprintln!("no agent collection settings found: no DCR generated");
    }
    Ok(ExitCode::SUCCESS)
}
