//! Command-line wiring: one clap `Args`, one function per subcommand (each in its own module).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub mod azure_args;
mod crd;
mod dcr;
pub mod exit_codes;
mod migrate;
mod plan;
mod rollback;
mod run;
mod simulate;
mod simulator;
mod status;

pub use migrate::MigrateArgs;
pub use rollback::RollbackArgs;
pub use run::RunArgs;
pub use simulate::SimulateArgs;
pub use status::StatusArgs;

#[derive(Debug, Parser)]
#[command(
    name = "ama-migrator",
    version,
    about = "Migrate Azure VMs and Arc servers from the Log Analytics agent to the Azure Monitor Agent, one agent per data source",
    after_help = "Exit status: 0 ok; 1 refused plan or input file, stalled, or incomplete (violations, machines not rolled back, leadership lost); 2 usage or setup error; 3 stopped by ctrl-c; 4 engine error (--help: per command)",
    after_long_help = exit_codes::help_text()
)]
pub struct Args {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "AMA_MIGRATOR_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Azure simulator standalone on a loopback address.
    Simulator(SimulatorArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Dry-run a plan against an inventory: waves, blocked machines, legacy flips, windows, ETA.
    Plan(PlanArgs),
    /// Data Collection Rule tools.
    #[command(subcommand)]
    Dcr(DcrCommand),
    /// The migration tracker of a local state file.
    Status(StatusArgs),
    /// Migrate a simulated fleet in-process (no Azure, no cluster) and print the tracker.
    Simulate(SimulateArgs),
    /// Run a plan against Azure with local state (restartable at any time).
    Migrate(MigrateArgs),
    /// Roll a wave (or the whole plan) of a local state back to the legacy agent, with no gap.
    Rollback(RollbackArgs),
    /// The Kubernetes operator: controllers (while leader), /metrics, /healthz, /readyz.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulatorArgs {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", env = "AMA_MIGRATOR_SIM_LISTEN")]
    pub listen: String,
    /// Scenario file (JSON or YAML); without it a default mixed fleet of 500 machines is served.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The MigrationPlan (YAML or JSON).
    #[arg(long)]
    pub plan: PathBuf,
    /// Resource Graph response JSON of the inventory query (see README).
    #[arg(long)]
    pub inventory: PathBuf,
    /// Optional Log Analytics result of the Heartbeat query, for senders ARM cannot see.
    #[arg(long)]
    pub heartbeat: Option<PathBuf>,
    /// Optional JSON list of the workspace's legacy dataSources (as a list call returns them).
    #[arg(long)]
    pub datasources: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum DcrCommand {
    /// Convert a workspace's legacy dataSources into equivalent DCRs (printed as JSON).
    FromWorkspace(DcrFromWorkspaceArgs),
}

#[derive(Debug, clap::Args)]
pub struct DcrFromWorkspaceArgs {
    /// JSON returned by listing the workspace's dataSources (`{"value": [...]}`), or a plain array.
    #[arg(long)]
    pub datasources: PathBuf,
    /// Workspace resource ID the DCRs send to (default: derived from the dataSource IDs).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Azure region of the DCRs (must be the workspace's region).
    #[arg(long, default_value = "westeurope")]
    pub location: String,
    /// Data collection endpoint resource ID for custom text logs (without it they are reported, not converted).
    #[arg(long)]
    pub data_collection_endpoint: Option<String>,
}

/// Run the parsed command; errors are printed with their full cause chain.
pub fn run(args: Args) -> ExitCode {
    init_tracing(args.log_json);
    let result = match args.command {
        Command::Simulator(a) => simulator::run(a),
        Command::Crd => crd::run(),
        Command::Plan(a) => plan::run(a),
        Command::Dcr(DcrCommand::FromWorkspace(a)) => dcr::run_from_workspace(a),
        Command::Status(a) => status::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Rollback(a) => rollback::run(a),
        Command::Run(a) => run::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A plan or input file refused for what it says (its syntax, its schema, its fields)
            // is refused like a plan the planner refuses: 1. Anything else (flags, unreadable
            // files, credentials, the state file): 2.
            if e.chain().any(|c| {
                c.is::<crate::api::load::PlanLoadError>()
                    || c.is::<crate::plan::PlanRefused>()
                    || c.is::<crate::input_files::InputError>()
                    || c.is::<crate::catalog::convert::ConvertError>()
            }) {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// Read a plan file for a command that runs it (`migrate`, `simulate`): parsed, checked against
/// the CRD's schema, and refused for what the planner refuses with no inventory — before anything
/// is read from Azure.
pub(crate) fn read_plan_file(path: &std::path::Path) -> anyhow::Result<crate::api::MigrationPlan> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the plan {}", path.display()))?;
    let plan =
        crate::api::load::load_plan(&text).with_context(|| format!("in {}", path.display()))?;
    let errors = crate::plan::spec_errors(&plan.spec);
    if !errors.is_empty() {
        return Err(crate::plan::PlanRefused(errors))
            .with_context(|| format!("in {}", path.display()));
    }
    Ok(plan)
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
