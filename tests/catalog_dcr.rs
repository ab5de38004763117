//! DCR generation: reference event-ID sets, golden DCR bodies, schema validation against the
//! Azure specs, DCR limits, and specific errors for bad settings.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ama_migrator::azure::dcr::DataCollectionRule;
use ama_migrator::catalog::dcr::{
    DcrContext, DcrErrorKind, DcrSet, RequirementKind, SourceRequest, generate,
};
use ama_migrator::catalog::settings::{
    DataSourceSettings, EventLevel, FirewallProfile, SecurityEventSet, SyslogLevel,
};
use ama_migrator::catalog::table::{Catalog, CatalogError, CatalogOverride, Support};
use ama_migrator::catalog::xpath::event_ids_in;
use ama_migrator::catalog::{DataSourceType as D, OsFamily};
use ama_migrator::contract::SpecSet;

const WS: &str = "/subscriptions/00000000-0000-0000-0000-000000000005/resourceGroups/rg-sec/providers/Microsoft.OperationalInsights/workspaces/law-sentinel";
const DCE: &str = "/subscriptions/00000000-0000-0000-0000-000000000005/resourceGroups/rg-sec/providers/Microsoft.Insights/dataCollectionEndpoints/dce-weu";
const DCR_SPEC: &str = "Insights/stable/2023-03-11/dataCollectionRules_API.json";

/// Copied verbatim from azure-api.md §6 (AZD:sentinel/windows-security-event-id-reference.md).
const REFERENCE_MINIMAL: &str = "1102, 4624, 4625, 4657, 4663, 4688, 4700, 4702, 4719, 4720, 4722, 4723, 4724, 4727, 4728, 4732, 4735, 4737, 4739, 4740, 4754, 4755, 4756, 4767, 4799, 4825, 4946, 4948, 4956, 5024, 5033, 8001, 8002, 8003, 8004, 8005, 8006, 8007, 8222";
const REFERENCE_COMMON: &str = "1, 299, 300, 324, 340, 403, 404, 410, 411, 412, 413, 431, 500, 501, 1100, 1102, 1107, 1108, 4608, 4610, 4611, 4614, 4622, 4624, 4625, 4634, 4647, 4648, 4649, 4657, 4661, 4662, 4663, 4665, 4666, 4667, 4688, 4670, 4672, 4673, 4674, 4675, 4689, 4697, 4700, 4702, 4704, 4705, 4716, 4717, 4718, 4719, 4720, 4722, 4723, 4724, 4725, 4726, 4727, 4728, 4729, 4733, 4732, 4735, 4737, 4738, 4739, 4740, 4742, 4744, 4745, 4746, 4750, 4751, 4752, 4754, 4755, 4756, 4757, 4760, 4761, 4762, 4764, 4767, 4768, 4771, 4774, 4778, 4779, 4781, 4793, 4797, 4798, 4799, 4800, 4801, 4802, 4803, 4825, 4826, 4870, 4886, 4887, 4888, 4893, 4898, 4902, 4904, 4905, 4907, 4931, 4932, 4933, 4946, 4948, 4956, 4985, 5024, 5033, 5059, 5136, 5137, 5140, 5145, 5632, 6144, 6145, 6272, 6273, 6278, 6416, 6423, 6424, 8001, 8002, 8003, 8004, 8005, 8006, 8007, 8222, 26401, 30004";

fn parse_ids(list: &str) -> Vec<u32> {
    list.split(',').map(|s| s.trim().parse().unwrap()).collect()
}

/// The reference lists as published in the shared reference file, when it is present (so a
/// drift between this test's copy and the reference is caught too).
fn reference_from_file(heading: &str) -> Option<Vec<u32>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/azure-api.md");
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find(&format!("{heading} ("))?;
    let rest = &text[start..];
    let open = rest.find('`')? + 1;
    let close = rest[open..].find('`')? + open;
    Some(parse_ids(&rest[open..close]))
}

fn ctx() -> DcrContext {
    DcrContext {
        plan_name: "Sentinel Rollout".into(),
        workspace_resource_id: WS.into(),
        location: "westeurope".into(),
        workspace_location: Some("West Europe".into()),
    }
}

fn req(t: D, settings: DataSourceSettings) -> SourceRequest {
    SourceRequest::new(t, settings)
}

fn sec(set: SecurityEventSet) -> SourceRequest {
    req(
        D::WindowsSecurityEvents,
        DataSourceSettings {
            security_event_set: Some(set),
            ..Default::default()
        },
    )
}

fn gen_ok(sources: &[SourceRequest]) -> DcrSet {
    generate(&Catalog::builtin(), &ctx(), sources).unwrap()
}

fn xpaths(rule: &DataCollectionRule) -> Vec<String> {
    rule.properties
        .data_sources
        .as_ref()
        .unwrap()
        .windows_event_logs
        .iter()
        .flat_map(|s| s.x_path_queries.iter().cloned())
        .collect()
}

/// IDs on the Security channel, in order, from the generated xPaths.
fn security_ids(qs: &[String]) -> Vec<u32> {
    qs.iter()
        .filter(|q| q.starts_with("Security!"))
        .flat_map(|q| event_ids_in(q))
        .collect()
}

fn specs() -> SpecSet {
    SpecSet::load_default().expect("the Azure specs in ../shared/azure-specs")
}

fn assert_valid(specs: &SpecSet, set: &DcrSet) {
    for g in &set.rules {
        let body = serde_json::to_value(&g.rule).unwrap();
        if let Err(violations) =
            specs.validate_schema_ref(DCR_SPEC, "#/definitions/DataCollectionRuleResource", &body)
        {
            let text: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
            panic!(
                "{} violates the DCR schema:\n{}\n{body:#}",
                g.name,
                text.join("\n")
            );
        }
        assert_within_limits(&g.rule);
    }
}

fn assert_within_limits(rule: &DataCollectionRule) {
    let ds = rule.properties.data_sources.as_ref().unwrap();
    assert!(ds.len() <= 10, "more than 10 data sources");
    assert!(rule.properties.data_flows.len() <= 10, "more than 10 flows");
    assert!(rule.streams().len() <= 10, "more than 10 streams");
    for s in &ds.windows_event_logs {
        assert!(s.x_path_queries.len() <= 100);
        for q in &s.x_path_queries {
            ama_migrator::catalog::xpath::validate_xpath(q).unwrap();
        }
    }
    for s in &ds.syslog {
        assert!(s.facility_names.len() <= 20);
    }
    for s in &ds.performance_counters {
        assert!(s.counter_specifiers.len() <= 100);
    }
    // Every data source name is unique and every flow goes to a declared destination.
    let mut names = BTreeSet::new();
    for n in ds
        .windows_event_logs
        .iter()
        .map(|s| &s.name)
        .chain(ds.syslog.iter().map(|s| &s.name))
        .chain(ds.performance_counters.iter().map(|s| &s.name))
        .chain(ds.log_files.iter().map(|s| &s.name))
        .chain(ds.iis_logs.iter().map(|s| &s.name))
        .chain(ds.windows_firewall_logs.iter().map(|s| &s.name))
        .chain(ds.extensions.iter().map(|s| &s.name))
    {
        assert!(names.insert(n.clone()), "duplicate data source name {n}");
    }
    let dests: Vec<&str> = rule
        .properties
        .destinations
        .log_analytics
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    for f in &rule.properties.data_flows {
        for d in &f.destinations {
            assert!(dests.contains(&d.as_str()));
        }
    }
}

#[test]
fn golden_common_xpaths_contain_exactly_the_reference_ids() {
    let reference = parse_ids(REFERENCE_COMMON);
    assert_eq!(reference.len(), 143);
    if let Some(from_file) = reference_from_file("Common") {
        assert_eq!(
            from_file, reference,
            "the test's copy drifted from azure-api.md §6"
        );
    }
    let set = gen_ok(&[sec(SecurityEventSet::Common)]);
    assert_eq!(set.rules.len(), 1);
    let qs = xpaths(&set.rules[0].rule);
    let ids = security_ids(&qs);
    assert_eq!(ids.len(), 143, "every ID once on the Security channel");
    assert_eq!(
        ids, reference,
        "list order kept (4688 before 4670, 4733 before 4732)"
    );
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>(),
        reference.iter().collect::<BTreeSet<_>>()
    );
    // 10 Security queries of ≤ 15 IDs, then the two AppLocker channels.
    let security: Vec<&String> = qs.iter().filter(|q| q.starts_with("Security!")).collect();
    assert_eq!(security.len(), 10);
    assert!(security.iter().all(|q| event_ids_in(q).len() <= 15));
    let exe: Vec<u32> = qs
        .iter()
        .filter(|q| q.starts_with("Microsoft-Windows-AppLocker/EXE and DLL!"))
        .flat_map(|q| event_ids_in(q))
        .collect();
    let msi: Vec<u32> = qs
        .iter()
        .filter(|q| q.starts_with("Microsoft-Windows-AppLocker/MSI and Script!"))
        .flat_map(|q| event_ids_in(q))
        .collect();
    assert_eq!(exe, [8001, 8002, 8003, 8004]);
    assert_eq!(msi, [8005, 8006, 8007]);
    assert_eq!(qs.len(), 12);
}

#[test]
fn golden_minimal_xpaths_contain_exactly_the_reference_ids() {
    let reference = parse_ids(REFERENCE_MINIMAL);
    assert_eq!(reference.len(), 39);
    if let Some(from_file) = reference_from_file("Minimal") {
        assert_eq!(
            from_file, reference,
            "the test's copy drifted from azure-api.md §6"
        );
    }
    let set = gen_ok(&[sec(SecurityEventSet::Minimal)]);
    let qs = xpaths(&set.rules[0].rule);
    let ids = security_ids(&qs);
    assert_eq!(ids.len(), 39);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>(),
        reference.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(qs.len(), 3 + 2);
    let stream = &set.rules[0].rule.properties.data_flows[0].streams;
    assert_eq!(stream, &["Microsoft-SecurityEvent"]);
}

#[test]
fn all_tier_reads_the_security_and_applocker_channels() {
    let set = gen_ok(&[sec(SecurityEventSet::All)]);
    assert_eq!(
        xpaths(&set.rules[0].rule),
        [
            "Security!*",
            "Microsoft-Windows-AppLocker/EXE and DLL!*",
            "Microsoft-Windows-AppLocker/MSI and Script!*"
        ]
    );
}

/// Scenarios covering every generator path; their bodies are the golden files.
fn scenarios() -> Vec<(&'static str, Vec<SourceRequest>)> {
    vec![
        ("security-common", vec![sec(SecurityEventSet::Common)]),
        ("security-minimal", vec![sec(SecurityEventSet::Minimal)]),
        (
            "windows-mixed",
            vec![
                sec(SecurityEventSet::Common),
                req(D::WindowsForwardedEvents, DataSourceSettings::default()),
                req(D::WindowsSysmon, DataSourceSettings::default()),
                req(
                    D::WindowsEventLogs,
                    DataSourceSettings {
                        channels: Some(vec!["System".into(), "Application".into()]),
                        event_levels: Some(vec![EventLevel::Critical, EventLevel::Error]),
                        event_ids: Some(vec![7036, 7040, 1000]),
                        ..Default::default()
                    },
                ),
                req(
                    D::WindowsPerformanceCounters,
                    DataSourceSettings {
                        counters: Some(vec!["\\Processor(_Total)\\% Processor Time".into()]),
                        sampling_frequency_seconds: Some(30),
                        ..Default::default()
                    },
                ),
                req(D::IisLogs, DataSourceSettings::default()),
                req(D::WindowsDnsLogs, DataSourceSettings::default()),
                req(
                    D::WindowsCustomLogs,
                    DataSourceSettings {
                        file_patterns: Some(vec!["C:\\app\\logs\\*.log".into()]),
                        table_name: Some("AppLog_CL".into()),
                        data_collection_endpoint_id: Some(DCE.into()),
                        ..Default::default()
                    },
                ),
            ],
        ),
        (
            "linux-syslog-cef",
            vec![
                req(
                    D::LinuxSyslog,
                    DataSourceSettings {
                        facilities: Some(vec!["auth".into(), "authpriv".into(), "syslog".into()]),
                        minimum_level: Some(SyslogLevel::Error),
                        ..Default::default()
                    },
                ),
                req(D::LinuxCef, DataSourceSettings::default()),
                req(D::LinuxSysmon, DataSourceSettings::default()),
                req(D::LinuxPerformanceCounters, DataSourceSettings::default()),
            ],
        ),
        (
            "security-custom",
            vec![req(
                D::WindowsSecurityEvents,
                DataSourceSettings {
                    security_event_set: Some(SecurityEventSet::Custom),
                    event_ids: Some(vec![4624, 4625, 8002]),
                    x_path_queries: Some(vec![
                        "Security!*[System[(EventID=4688)] and EventData[Data[@Name='NewProcessName']='C:\\Windows\\System32\\cmd.exe']]".into(),
                    ]),
                    ..Default::default()
                },
            )],
        ),
    ]
}

#[test]
fn golden_dcr_bodies_match_and_validate_against_the_spec() {
    let specs = specs();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, sources) in scenarios() {
        let set = gen_ok(&sources);
        assert_valid(&specs, &set);
        let out = serde_json::json!({
            "rules": set.rules.iter().map(|g| serde_json::json!({"name": g.name, "rule": g.rule})).collect::<Vec<_>>(),
            "requirements": set.requirements,
        });
        let text = format!("{}\n", serde_json::to_string_pretty(&out).unwrap());
        let path = dir.join(format!("catalog-dcr-{name}.json"));
        if update {
            std::fs::write(&path, &text).unwrap();
        } else {
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("missing {}: run with UPDATE_GOLDEN=1", path.display()));
            assert_eq!(
                text, want,
                "{name} drifted; rerun with UPDATE_GOLDEN=1 if intended"
            );
        }
    }
}

#[test]
fn generation_is_deterministic_and_names_rules_by_plan_and_os() {
    let (_, sources) = scenarios().remove(2);
    let a = gen_ok(&sources);
    let b = gen_ok(&sources);
    assert_eq!(a, b);
    let names: Vec<&str> = a.rules.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["dcr-sentinel-rollout-windows-1"]);
    let r = &a.rules[0];
    assert_eq!(r.os, OsFamily::Windows);
    assert_eq!(r.rule.kind.as_deref(), Some("Windows"));
    assert_eq!(
        r.rule.properties.data_collection_endpoint_id.as_deref(),
        Some(DCE)
    );
    assert!(
        r.rule
            .properties
            .stream_declarations
            .contains_key("Custom-Text-AppLog_CL")
    );
    let custom_flow = r
        .rule
        .properties
        .data_flows
        .iter()
        .find(|f| f.output_stream.is_some())
        .unwrap();
    assert_eq!(
        custom_flow.output_stream.as_deref(),
        Some("Custom-AppLog_CL")
    );
    let kinds: Vec<RequirementKind> = a.requirements.iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&RequirementKind::DataCollectionEndpoint));
    assert!(kinds.contains(&RequirementKind::CustomTable));
}

#[test]
fn large_requests_are_split_across_dcrs_within_limits() {
    // 12 event-log channels with 40 IDs each: 36 xPaths per channel request, 12 requests.
    let ids: Vec<u32> = (1000..1040).collect();
    let mut sources: Vec<SourceRequest> = (0..12)
        .map(|i| {
            req(
                D::WindowsApplicationServiceLogs,
                DataSourceSettings {
                    channels: Some(vec![format!("Vendor-App{i}/Operational")]),
                    event_ids: Some(ids.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    // 150 counters: two perf sources.
    sources.push(req(
        D::WindowsPerformanceCounters,
        DataSourceSettings {
            counters: Some(
                (0..150)
                    .map(|i| format!("\\Vendor({i})\\Counter"))
                    .collect(),
            ),
            ..Default::default()
        },
    ));
    // 11 text logs, each its own stream: more than 10 streams.
    for i in 0..11 {
        sources.push(req(
            D::WindowsCustomLogs,
            DataSourceSettings {
                file_patterns: Some(vec![format!("C:\\logs\\app{i}\\*.log")]),
                table_name: Some(format!("App{i}_CL")),
                data_collection_endpoint_id: Some(DCE.into()),
                ..Default::default()
            },
        ));
    }
    // 30 facilities: two syslog sources.
    let facilities: Vec<String> = ["auth", "authpriv", "cron", "daemon", "kern", "mail"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..8).map(|i| format!("local{i}")))
        .chain(
            [
                "lpr", "news", "ntp", "syslog", "user", "uucp", "ftp", "clock", "audit", "mark",
                "nopri", "alert",
            ]
            .iter()
            .map(|s| s.to_string()),
        )
        .collect();
    assert_eq!(facilities.len(), 26);
    sources.push(req(
        D::LinuxSyslog,
        DataSourceSettings {
            facilities: Some(facilities.clone()),
            ..Default::default()
        },
    ));
    let catalog = Catalog::with_overrides(&[CatalogOverride {
        row_type: "WindowsApplicationServiceLogs".into(),
        ama_support: Some(Support::CollectionOnly),
        legacy_support: None,
    }])
    .unwrap();
    let set = generate(&catalog, &ctx(), &sources).unwrap();
    assert!(
        set.rules.len() >= 3,
        "split into several DCRs: {}",
        set.rules.len()
    );
    assert_valid(&specs(), &set);
    // Nothing lost: every requested xPath, counter, facility and table is in exactly one rule.
    let all_x: Vec<String> = set.rules.iter().flat_map(|g| xpaths(&g.rule)).collect();
    assert_eq!(all_x.len(), 12 * 3);
    let counters: usize = set
        .rules
        .iter()
        .flat_map(|g| {
            g.rule
                .properties
                .data_sources
                .as_ref()
                .unwrap()
                .performance_counters
                .iter()
        })
        .map(|p| p.counter_specifiers.len())
        .sum();
    assert_eq!(counters, 150);
    let fac: Vec<String> = set
        .rules
        .iter()
        .flat_map(|g| {
            g.rule
                .properties
                .data_sources
                .as_ref()
                .unwrap()
                .syslog
                .iter()
        })
        .flat_map(|s| s.facility_names.iter().cloned())
        .collect();
    assert_eq!(fac, facilities);
    let tables: usize = set
        .rules
        .iter()
        .map(|g| g.rule.properties.stream_declarations.len())
        .sum();
    assert_eq!(tables, 11);
    let mut names: Vec<&str> = set.rules.iter().map(|g| g.name.as_str()).collect();
    names.dedup();
    assert_eq!(names.len(), set.rules.len());
    assert!(names.contains(&"dcr-sentinel-rollout-linux-1"));
}

#[test]
fn unknown_type_in_an_override_is_a_specific_error() {
    let err = Catalog::with_overrides(&[CatalogOverride {
        row_type: "WindowsFirewall".into(),
        ama_support: Some(Support::CollectionOnly),
        legacy_support: None,
    }])
    .unwrap_err();
    assert!(matches!(err, CatalogError::UnknownType { index: 0, .. }));
    let msg = err.to_string();
    assert!(msg.contains("catalogOverrides[0].type"), "{msg}");
    assert!(msg.contains("\"WindowsFirewall\""), "{msg}");
    assert!(
        msg.contains("WindowsFirewallLogs"),
        "the fix lists valid names: {msg}"
    );
}

#[test]
fn malformed_custom_xpath_is_a_specific_error() {
    let bad = req(
        D::WindowsSecurityEvents,
        DataSourceSettings {
            security_event_set: Some(SecurityEventSet::Custom),
            x_path_queries: Some(vec![
                "Security!*[System[(EventID=4624)]]".into(),
                "Security*[System[(EventID=4625)]]".into(),
            ]),
            ..Default::default()
        },
    );
    let err = generate(
        &Catalog::builtin(),
        &ctx(),
        &[sec(SecurityEventSet::Minimal), bad],
    )
    .unwrap_err();
    assert_eq!(err.kind, DcrErrorKind::InvalidXPath);
    assert_eq!(
        err.location,
        "dataSources[1] (WindowsSecurityEvents).settings.xPathQueries[1]"
    );
    assert!(err.to_string().contains("Channel!XPath"), "{err}");

    let wrong_channel = req(
        D::WindowsEventLogs,
        DataSourceSettings {
            x_path_queries: Some(vec!["Security!*".into()]),
            ..Default::default()
        },
    );
    let err = generate(&Catalog::builtin(), &ctx(), &[wrong_channel]).unwrap_err();
    assert_eq!(err.kind, DcrErrorKind::InvalidXPath);
    assert!(
        err.problem.contains("belongs to WindowsSecurityEvents"),
        "{err}"
    );
}

#[test]
fn text_logs_without_an_endpoint_are_a_specific_error() {
    let no_dce = req(
        D::LinuxCustomLogs,
        DataSourceSettings {
            file_patterns: Some(vec!["/var/log/app/*.log".into()]),
            table_name: Some("AppLog_CL".into()),
            ..Default::default()
        },
    );
    let err = generate(&Catalog::builtin(), &ctx(), std::slice::from_ref(&no_dce)).unwrap_err();
    assert_eq!(err.kind, DcrErrorKind::MissingDataCollectionEndpoint);
    assert_eq!(
        err.location,
        "dataSources[0] (LinuxCustomLogs).settings.dataCollectionEndpointId"
    );
    assert!(err.fix.contains("data collection endpoint"), "{err}");

    let mut bad_table = no_dce;
    bad_table.settings.data_collection_endpoint_id = Some(DCE.into());
    bad_table.settings.table_name = Some("AppLog".into());
    let err = generate(&Catalog::builtin(), &ctx(), &[bad_table]).unwrap_err();
    assert_eq!(err.kind, DcrErrorKind::InvalidTableName);
    assert!(err.problem.contains("_CL"), "{err}");
}

#[test]
fn other_bad_settings_name_field_and_fix() {
    let cases: Vec<(SourceRequest, DcrErrorKind, &str)> = vec![
        (
            req(D::WindowsFirewallLogs, DataSourceSettings::default()),
            DcrErrorKind::UnsupportedByAma,
            "catalogOverrides",
        ),
        (
            req(
                D::WindowsSecurityEvents,
                DataSourceSettings {
                    security_event_set: Some(SecurityEventSet::Custom),
                    ..Default::default()
                },
            ),
            DcrErrorKind::MissingSetting,
            "eventIds",
        ),
        (
            req(
                D::WindowsSecurityEvents,
                DataSourceSettings {
                    security_event_set: Some(SecurityEventSet::Common),
                    event_ids: Some(vec![4624]),
                    ..Default::default()
                },
            ),
            DcrErrorKind::InvalidSetting,
            "securityEventSet: Custom",
        ),
        (
            req(
                D::LinuxSyslog,
                DataSourceSettings {
                    facilities: Some(vec!["authz".into()]),
                    ..Default::default()
                },
            ),
            DcrErrorKind::InvalidSetting,
            "facilities[0]",
        ),
        (
            req(
                D::WindowsPerformanceCounters,
                DataSourceSettings {
                    counters: Some(vec!["Processor % Time".into()]),
                    ..Default::default()
                },
            ),
            DcrErrorKind::InvalidSetting,
            "counters[0]",
        ),
        (
            req(
                D::WindowsEventLogs,
                DataSourceSettings {
                    channels: Some(vec!["Microsoft-Windows-Sysmon/Operational".into()]),
                    ..Default::default()
                },
            ),
            DcrErrorKind::InvalidSetting,
            "belongs to WindowsSysmon",
        ),
        (
            req(
                D::WindowsEventLogs,
                DataSourceSettings {
                    channels: Some(vec![]),
                    ..Default::default()
                },
            ),
            DcrErrorKind::MissingSetting,
            "nothing would be collected",
        ),
        (
            req(
                D::WindowsFirewallLogs,
                DataSourceSettings {
                    firewall_profiles: Some(vec![]),
                    ..Default::default()
                },
            ),
            DcrErrorKind::UnsupportedByAma,
            "WindowsFirewallLogs",
        ),
    ];
    for (i, (source, kind, needle)) in cases.into_iter().enumerate() {
        let err = generate(&Catalog::builtin(), &ctx(), &[source]).unwrap_err();
        assert_eq!(err.kind, kind, "case {i}: {err}");
        assert!(err.to_string().contains(needle), "case {i}: {err}");
        assert!(
            err.location.starts_with("dataSources[0]"),
            "case {i}: {err}"
        );
    }
}

#[test]
fn cef_sharing_a_facility_with_syslog_is_refused_and_sysmon_is_not_duplicated() {
    let syslog = req(
        D::LinuxSyslog,
        DataSourceSettings {
            facilities: Some(vec!["local4".into(), "auth".into()]),
            ..Default::default()
        },
    );
    let err = generate(
        &Catalog::builtin(),
        &ctx(),
        &[syslog, req(D::LinuxCef, DataSourceSettings::default())],
    )
    .unwrap_err();
    assert_eq!(err.kind, DcrErrorKind::FacilityOverlap);
    assert!(err.to_string().contains("local4"), "{err}");

    // Default syslog facilities include `user`, which carries Sysmon for Linux.
    let set = gen_ok(&[
        req(D::LinuxSyslog, DataSourceSettings::default()),
        req(D::LinuxSysmon, DataSourceSettings::default()),
    ]);
    let syslog_sources = &set.rules[0]
        .rule
        .properties
        .data_sources
        .as_ref()
        .unwrap()
        .syslog;
    assert_eq!(syslog_sources.len(), 1);
    assert!(
        set.requirements
            .iter()
            .any(|r| r.data_source == Some(D::LinuxSysmon))
    );
}

#[test]
fn region_and_workspace_are_checked() {
    let mut c = ctx();
    c.workspace_location = Some("eastus".into());
    let err = generate(&Catalog::builtin(), &c, &[sec(SecurityEventSet::Minimal)]).unwrap_err();
    assert_eq!(err.kind, DcrErrorKind::RegionMismatch);
    assert!(err.fix.contains("eastus"));

    let mut c = ctx();
    c.workspace_location = None;
    let set = generate(&Catalog::builtin(), &c, &[sec(SecurityEventSet::Minimal)]).unwrap();
    assert!(
        set.requirements
            .iter()
            .any(|r| r.kind == RequirementKind::SameRegion)
    );

    let mut c = ctx();
    c.workspace_resource_id =
        "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm".into();
    let err = generate(&Catalog::builtin(), &c, &[]).unwrap_err();
    assert_eq!(err.kind, DcrErrorKind::InvalidWorkspace);
}

#[test]
fn firewall_is_generated_once_overridden() {
    let catalog = Catalog::with_overrides(&[CatalogOverride {
        row_type: "WindowsFirewallLogs".into(),
        ama_support: Some(Support::CollectionOnly),
        legacy_support: None,
    }])
    .unwrap();
    let set = generate(
        &catalog,
        &ctx(),
        &[req(
            D::WindowsFirewallLogs,
            DataSourceSettings {
                firewall_profiles: Some(vec![FirewallProfile::Public, FirewallProfile::Domain]),
                ..Default::default()
            },
        )],
    )
    .unwrap();
    assert_valid(&specs(), &set);
    let fw = &set.rules[0]
        .rule
        .properties
        .data_sources
        .as_ref()
        .unwrap()
        .windows_firewall_logs[0];
    assert_eq!(fw.streams, ["Microsoft-WindowsFirewall"]);
    assert_eq!(fw.profile_filter, ["Public", "Domain"]);
}

#[test]
fn the_schema_check_is_not_vacuous() {
    let specs = specs();
    let set = gen_ok(&scenarios().remove(3).1);
    let mut body = serde_json::to_value(&set.rules[0].rule).unwrap();
    let ok = specs.validate_schema_ref(DCR_SPEC, "#/definitions/DataCollectionRuleResource", &body);
    assert!(ok.is_ok());
    body["properties"]["dataSources"]["performanceCounters"][0]["samplingFrequencyInSeconds"] =
        serde_json::json!("sixty");
    body.as_object_mut().unwrap().remove("location");
    let violations = specs
        .validate_schema_ref(DCR_SPEC, "#/definitions/DataCollectionRuleResource", &body)
        .unwrap_err();
    let text: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("location")), "{text:?}");
    assert!(
        text.iter()
            .any(|t| t.contains("samplingFrequencyInSeconds")),
        "{text:?}"
    );
}
