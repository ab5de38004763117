use std::process::ExitCode;

use super::PlanArgs;

pub fn run(_args: PlanArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`plan` is not available yet")
}
