use std::process::ExitCode;

use super::DcrFromWorkspaceArgs;

pub fn run_from_workspace(_args: DcrFromWorkspaceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`dcr from-workspace` is not available yet")
}
