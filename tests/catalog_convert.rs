//! Converter: workspace legacy dataSources → DCRs (the DCR Config Generator's job), and the
//! `dcr from-workspace` command.

use std::path::PathBuf;
use std::process::Command;

use ama_migrator::catalog::DataSourceType as D;
use ama_migrator::catalog::convert::{ConvertError, convert_text, parse_data_sources};
use ama_migrator::catalog::dcr::RequirementKind;
use ama_migrator::catalog::xpath::event_ids_in;
use ama_migrator::contract::SpecSet;

const DCE: &str = "/subscriptions/00000000-0000-0000-0000-000000000005/resourceGroups/rg-sec/providers/Microsoft.Insights/dataCollectionEndpoints/dce-weu";
const DCR_SPEC: &str = "Insights/stable/2023-03-11/dataCollectionRules_API.json";

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn realistic() -> String {
    std::fs::read_to_string(golden("catalog-workspace-datasources.json")).unwrap()
}

fn spec_example_bodies() -> Vec<serde_json::Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../shared/azure-specs/specification/operationalinsights/resource-manager/Microsoft.OperationalInsights/stable/2025-02-01/examples",
    );
    let mut out = Vec::new();
    for f in ["DataSourcesGet.json", "DataSourcesCreate.json"] {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        out.push(v["responses"]["200"]["body"].clone());
    }
    out
}

#[test]
fn spec_examples_convert_to_no_dcr_with_a_note() {
    // The spec's DataSources examples are AzureActivityLog: not an agent setting.
    let bodies = spec_example_bodies();
    let text = serde_json::json!({ "value": bodies }).to_string();
    let set = convert_text(&text, None, "westeurope", None).unwrap();
    assert!(set.rules.is_empty());
    assert!(
        set.requirements
            .iter()
            .any(|r| r.message.contains("AzureActivityLog")),
        "{:?}",
        set.requirements
    );
    // A plain array is accepted too, and the workspace comes from the IDs.
    let text = serde_json::Value::Array(bodies).to_string();
    assert!(convert_text(&text, None, "westeurope", None).is_ok());
}

#[test]
fn realistic_workspace_converts_to_valid_equivalent_dcrs() {
    let specs = SpecSet::load_default().unwrap();
    let set = convert_text(&realistic(), None, "westeurope", Some(DCE)).unwrap();
    let names: Vec<&str> = set.rules.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        ["dcr-law-sentinel-windows-1", "dcr-law-sentinel-linux-1"]
    );
    for g in &set.rules {
        let body = serde_json::to_value(&g.rule).unwrap();
        specs
            .validate_schema_ref(DCR_SPEC, "#/definitions/DataCollectionRuleResource", &body)
            .unwrap_or_else(|v| panic!("{}: {v:?}", g.name));
        assert!(
            g.rule.properties.destinations.log_analytics[0]
                .workspace_resource_id
                .ends_with("/workspaces/law-sentinel")
        );
    }
    let win = &set.rules[0];
    let ds = win.rule.properties.data_sources.as_ref().unwrap();
    let xp: Vec<&String> = ds
        .windows_event_logs
        .iter()
        .flat_map(|s| s.x_path_queries.iter())
        .collect();
    // Recommended tier → the Common set, 143 IDs on the Security channel.
    let sec_ids: usize = xp
        .iter()
        .filter(|q| q.starts_with("Security!"))
        .map(|q| event_ids_in(q).len())
        .sum();
    assert_eq!(sec_ids, 143);
    // Event types → levels: Error/Warning → 2/3; Information → 4.
    assert!(xp.contains(&&"System!*[System[(Level=2 or Level=3)]]".to_string()));
    assert!(xp.contains(&&"Application!*[System[(Level=2 or Level=3 or Level=4)]]".to_string()));
    assert!(
        xp.contains(
            &&"Microsoft-Windows-Sysmon/Operational!*[System[(Level=2 or Level=3 or Level=4)]]"
                .to_string()
        )
    );
    assert!(xp.contains(
        &&"Microsoft-Windows-TaskScheduler/Operational!*[System[(Level=2)]]".to_string()
    ));
    // Counters grouped by interval, as \Object(Instance)\Counter.
    let perf: Vec<(u32, Vec<String>)> = ds
        .performance_counters
        .iter()
        .map(|p| {
            (
                p.sampling_frequency_in_seconds,
                p.counter_specifiers.clone(),
            )
        })
        .collect();
    assert_eq!(
        perf,
        [
            (
                10,
                vec![
                    "\\Processor(_Total)\\% Processor Time".to_string(),
                    "\\Memory(*)\\Available MBytes".to_string()
                ]
            ),
            (300, vec!["\\LogicalDisk(*)\\% Free Space".to_string()])
        ]
    );
    assert_eq!(ds.iis_logs.len(), 1);
    assert_eq!(ds.log_files.len(), 1);
    assert_eq!(
        win.rule.properties.data_collection_endpoint_id.as_deref(),
        Some(DCE)
    );

    let lin = &set.rules[1];
    let ds = lin.rule.properties.data_sources.as_ref().unwrap();
    // Severity tokens → DCR levels, exactly: auth (all) → every level; kern (emerg..warning)
    // → Warning and up; daemon (emerg, err) → just Error and Emergency.
    let syslog: Vec<(Vec<String>, Vec<String>)> = ds
        .syslog
        .iter()
        .map(|s| (s.facility_names.clone(), s.log_levels.clone()))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        syslog,
        [
            (
                s(&["auth"]),
                s(&[
                    "Debug",
                    "Info",
                    "Notice",
                    "Warning",
                    "Error",
                    "Critical",
                    "Alert",
                    "Emergency"
                ])
            ),
            (
                s(&["kern"]),
                s(&["Warning", "Error", "Critical", "Alert", "Emergency"])
            ),
            (s(&["daemon"]), s(&["Error", "Emergency"]))
        ]
    );
    assert_eq!(
        ds.performance_counters[0].counter_specifiers,
        [
            "\\Logical Disk(*)\\% Used Space",
            "\\Logical Disk(*)\\Free Megabytes"
        ]
    );
    assert_eq!(ds.log_files[0].file_patterns, ["/var/log/app/*.log"]);
    assert!(
        set.requirements
            .iter()
            .any(|r| r.kind == RequirementKind::CustomTable)
    );
    assert!(
        set.requirements
            .iter()
            .any(|r| r.data_source == Some(D::WindowsApplicationServiceLogs))
    );
}

#[test]
fn custom_logs_without_an_endpoint_are_reported_not_converted() {
    let set = convert_text(&realistic(), None, "westeurope", None).unwrap();
    let log_files: usize = set
        .rules
        .iter()
        .map(|g| {
            g.rule
                .properties
                .data_sources
                .as_ref()
                .unwrap()
                .log_files
                .len()
        })
        .sum();
    assert_eq!(log_files, 0);
    let dce_reqs: Vec<_> = set
        .requirements
        .iter()
        .filter(|r| r.kind == RequirementKind::DataCollectionEndpoint)
        .collect();
    assert_eq!(dce_reqs.len(), 2, "one per OS of AppLog_CL");
    assert!(dce_reqs[0].message.contains("--data-collection-endpoint"));
}

#[test]
fn malformed_input_names_the_entry() {
    let cases = [
        ("not json", "not valid JSON"),
        ("{\"values\": []}", "did you mean \"value\""),
        (
            "[{\"kind\": \"WindowsEvent\"}]",
            "[0].properties: is required",
        ),
        (
            "[{\"kind\": \"IISLogs\", \"properties\": {}}, {\"kind\": 3, \"properties\": {}}]",
            "[1].kind",
        ),
        (
            "[{\"name\": \"sys\", \"kind\": \"WindowsEvent\", \"properties\": {\"eventTypes\": []}}]",
            "dataSources[0] (sys, kind WindowsEvent): properties.eventLogName",
        ),
    ];
    for (text, needle) in cases {
        let err = convert_text(text, Some("/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w"), "westeurope", None).unwrap_err();
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
    // No IDs and no --workspace.
    let err = convert_text("[]", None, "westeurope", None).unwrap_err();
    assert!(matches!(err, ConvertError::NoWorkspace));
    assert!(parse_data_sources("{\"value\": []}").unwrap().is_empty());
}

#[test]
fn cli_from_workspace_prints_dcr_json_and_requirements() {
    let out = Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .args(["dcr", "from-workspace", "--datasources"])
        .arg(golden("catalog-workspace-datasources.json"))
        .args([
            "--location",
            "westeurope",
            "--data-collection-endpoint",
            DCE,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = rules.as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["name"], "dcr-law-sentinel-windows-1");
    assert_eq!(rules[0]["rule"]["kind"], "Windows");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CustomTable"), "{stderr}");

    let bad = std::env::temp_dir().join(format!("catalog-convert-bad-{}.json", std::process::id()));
    std::fs::write(&bad, "{\"value\": [{\"kind\": \"LinuxSyslog\", \"name\": \"s\", \"properties\": {\"syslogName\": \"auth\", \"syslogSeverities\": [{\"severity\": \"loud\"}]}}]}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .args(["dcr", "from-workspace", "--datasources"])
        .arg(&bad)
        .args(["--workspace", "/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dataSources[0] (s, kind LinuxSyslog)"),
        "{stderr}"
    );
    assert!(stderr.contains("\"loud\""), "{stderr}");
}

#[test]
fn golden_converter_output_matches() {
    let set = convert_text(&realistic(), None, "westeurope", Some(DCE)).unwrap();
    let out = serde_json::json!({
        "rules": set.rules.iter().map(|g| serde_json::json!({"name": g.name, "rule": g.rule})).collect::<Vec<_>>(),
        "requirements": set.requirements,
    });
    let text = format!("{}\n", serde_json::to_string_pretty(&out).unwrap());
    let path = golden("catalog-convert-workspace-dcrs.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    } else {
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing {}: run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(
            text, want,
            "converter output drifted; rerun with UPDATE_GOLDEN=1 if intended"
        );
    }
}
