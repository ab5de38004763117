use std::process::ExitCode;

use super::SimulatorArgs;

pub fn run(_args: SimulatorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`simulator` is not available yet")
}
