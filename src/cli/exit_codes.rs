//! Every exit status of every subcommand, in one table: shown at the end of `--help` and copied
//! in the README (`tests/cli_exit_codes.rs` checks the two agree). Keep it true to the code:
//! `cli::run` maps errors (1 for a refused plan or input file, 2 otherwise), and each command
//! returns its own codes.

/// (exit status, commands, meaning).
pub const EXIT_CODES: &[(u8, &str, &str)] = &[
    (
        0,
        "every command",
        "success: `plan` the plan is valid; `migrate` completed; `simulate` completed with no violation; `rollback` every machine rolled back (or `--clear` done); `status`, `crd`, `dcr from-workspace` printed; `simulator` stopped by ctrl-c; `run` stopped by SIGTERM or ctrl-c",
    ),
    (
        1,
        "`plan`, `migrate`, `simulate`, `dcr from-workspace`",
        "refused plan or input file: the plan file is refused by the CRD schema or the planner (`migrate` and `simulate` refuse it before they read Azure); `plan` also refuses an inventory, Heartbeat or dataSources file (syntax, fields, a partial page) and a scope that selects no machine; `dcr from-workspace` a dataSources file it cannot convert",
    ),
    (
        1,
        "`migrate`",
        "stalled: nothing can move without a person for `--stall-after` (the reason, with what to do, is in the printed JSON and the plan's conditions), or the plan is paused by a rollback",
    ),
    (
        1,
        "`simulate`",
        "the run did not complete (stalled or refused) or the ledger counted minutes outside the plan's declared windows",
    ),
    (
        1,
        "`rollback`",
        "some machine was not rolled back (blocked or failed; named in the printed JSON)",
    ),
    (
        1,
        "`run`",
        "leadership lost or the controllers ended: Kubernetes restarts the pod as a standby",
    ),
    (
        2,
        "every command",
        "usage or setup error: a bad flag or argument; a file that cannot be read, or is not what the command expects where it is not checked as an input file (a scenario, a state file); a `migrate --retry` naming no machine of the plan; credential settings; a state file in use by another run; a runtime, client or listener that cannot start",
    ),
    (
        2,
        "`rollback`",
        "the rollback stopped with an error (Azure unreachable or refusing, the state file); run it again once fixed, it resumes",
    ),
    (
        3,
        "`migrate`, `rollback`",
        "stopped by ctrl-c after the current pass; run the same command again to resume",
    ),
    (
        4,
        "`migrate`, `simulate`",
        "the engine stopped with an error: stderr reads `error: <Reason>: <what failed and what to do>` with the operator's reasons",
    ),
];

/// The heading of the table at the end of `--help`.
pub const HELP_HEADING: &str = "Exit status:";

/// The table for `--help`: one line per row, `  <status>  <commands>: <meaning>`.
pub fn help_text() -> String {
    let mut out = String::from(HELP_HEADING);
    for (code, commands, meaning) in EXIT_CODES {
        out.push_str(&format!("\n  {code}  {commands}: {meaning}"));
    }
    out
}

/// The same table in Markdown, as the README holds it.
pub fn markdown_table() -> String {
    let mut out = String::from("| exit | commands | meaning |\n|---|---|---|\n");
    for (code, commands, meaning) in EXIT_CODES {
        out.push_str(&format!("| {code} | {commands} | {meaning} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_the_commands_return_is_in_the_table() {
        let codes: std::collections::BTreeSet<u8> = EXIT_CODES.iter().map(|r| r.0).collect();
        assert_eq!(codes.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            super::super::migrate::ENGINE_FAILED_EXIT,
            4,
            "the table's engine-error row"
        );
        // Meanings are single Markdown cells.
        assert!(
            EXIT_CODES
                .iter()
                .all(|(_, c, m)| !c.contains('|') && !m.contains('|'))
        );
    }
}
