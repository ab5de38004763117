//! The exit-status table: the README's and the one at the end of `ama-migrator --help` list the
//! same rows (status, commands, meaning), and a few of its usage rows hold for the real binary.

use std::process::Command;

type Row = (String, String, String);

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
}

/// The rows of the README table whose header is `| exit | commands | meaning |`.
fn readme_rows() -> Vec<Row> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim() != "| exit | commands | meaning |");
    assert!(lines.next().is_some(), "no exit-status table in the README");
    assert_eq!(lines.next().map(str::trim), Some("|---|---|---|"));
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            assert_eq!(cells.len(), 3, "three cells in {l:?}");
            (
                cells[0].to_string(),
                cells[1].to_string(),
                cells[2].to_string(),
            )
        })
        .collect()
}

/// The rows under `Exit status:` at the end of `--help`: `  <status>  <commands>: <meaning>`.
fn help_rows(help: &str) -> Vec<Row> {
    let (_, table) = help
        .split_once("\nExit status:\n")
        .unwrap_or_else(|| panic!("no exit-status table in --help:\n{help}"));
    table
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let rest = l.strip_prefix("  ").unwrap_or_else(|| panic!("{l:?}"));
            let (code, rest) = rest.split_once("  ").unwrap_or_else(|| panic!("{l:?}"));
            let (commands, meaning) = rest.split_once(": ").unwrap_or_else(|| panic!("{l:?}"));
            (code.to_string(), commands.to_string(), meaning.to_string())
        })
        .collect()
}

#[test]
fn the_readme_table_and_help_list_the_same_exit_codes() {
    let out = binary().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    let from_help = help_rows(&help);
    let from_readme = readme_rows();
    assert_eq!(from_readme, from_help, "README vs --help");
    let codes: std::collections::BTreeSet<&str> =
        from_readme.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        codes.into_iter().collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4"]
    );
    // Every subcommand appears in the table.
    let commands: String = from_readme
        .iter()
        .map(|r| format!("{} {} ", r.1, r.2))
        .collect();
    for c in [
        "plan",
        "migrate",
        "simulate",
        "rollback",
        "status",
        "crd",
        "dcr from-workspace",
        "simulator",
        "run",
    ] {
        assert!(
            commands.contains(&format!("`{c}`")),
            "{c} is not in the table"
        );
    }

    // `-h` ends with the one-line summary.
    let short = binary().arg("-h").output().unwrap();
    let short = String::from_utf8(short.stdout).unwrap();
    assert!(
        short
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("Exit status: 0 ok; 1 "),
        "{short}"
    );
}

#[test]
fn usage_mistakes_exit_2() {
    for args in [
        vec!["--no-such-flag"],
        vec![
            "migrate",
            "--plan",
            "p.yaml",
            "--state",
            "s.db",
            "--stall-after",
            "soon",
        ],
        vec![
            "migrate",
            "--plan",
            "p.yaml",
            "--state",
            "s.db",
            "--progress-interval-seconds",
            "0",
        ],
        vec!["status", "--state", "/nonexistent/ama-migrator/state.db"],
    ] {
        let out = binary().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
