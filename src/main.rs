//! The `ama-migrator` binary: parses flags and hands off to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = ama_migrator::cli::Args::parse();
    ama_migrator::cli::run(args)
}
