//! Property tests of DCR generation: for random valid plans, every rule stays within the DCR
//! limits, validates against the DCR schema, loses nothing that was asked for, and is deterministic.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use ama_migrator::catalog::dcr::{DcrContext, SourceRequest, generate};
use ama_migrator::catalog::settings::{
    DataSourceSettings, EventLevel, SecurityEventSet, SyslogLevel,
};
use ama_migrator::catalog::table::{Catalog, CatalogOverride, Support};
use ama_migrator::catalog::xpath::validate_xpath;
use ama_migrator::catalog::{DataSourceType as D, OsFamily};
use ama_migrator::contract::SpecSet;
use proptest::prelude::*;

const WS: &str = "/subscriptions/00000000-0000-0000-0000-000000000005/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws";
const DCE: &str = "/subscriptions/00000000-0000-0000-0000-000000000005/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionEndpoints/dce";
const DCE2: &str = "/subscriptions/00000000-0000-0000-0000-000000000005/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionEndpoints/dce2";

fn specs() -> &'static SpecSet {
    static SPECS: OnceLock<SpecSet> = OnceLock::new();
    SPECS.get_or_init(|| SpecSet::load_default().unwrap())
}

fn levels() -> impl Strategy<Value = Option<Vec<EventLevel>>> {
    proptest::option::of(proptest::sample::subsequence(
        vec![
            EventLevel::Critical,
            EventLevel::Error,
            EventLevel::Warning,
            EventLevel::Information,
            EventLevel::Verbose,
        ],
        0..=5,
    ))
}

fn ids(max: usize) -> impl Strategy<Value = Option<Vec<u32>>> {
    proptest::option::of(proptest::collection::vec(0u32..=65_535, 1..=max))
}

/// Syslog facilities other than local4 (kept for CEF) and `*`.
fn syslog_facilities() -> Vec<&'static str> {
    vec![
        "alert", "audit", "auth", "authpriv", "clock", "cron", "daemon", "ftp", "kern", "local0",
        "local1", "local2", "local3", "local5", "local6", "local7", "lpr", "mail", "mark", "news",
        "nopri", "ntp", "syslog", "uucp",
    ]
}

fn source() -> impl Strategy<Value = SourceRequest> {
    let sec = prop_oneof![
        Just(SecurityEventSet::All),
        Just(SecurityEventSet::Common),
        Just(SecurityEventSet::Minimal),
    ]
    .prop_map(|set| {
        SourceRequest::new(
            D::WindowsSecurityEvents,
            DataSourceSettings {
                security_event_set: Some(set),
                ..Default::default()
            },
        )
    });
    let custom = proptest::collection::vec(1u32..=9_000, 1..=60).prop_map(|ids| {
        SourceRequest::new(
            D::WindowsSecurityEvents,
            DataSourceSettings {
                security_event_set: Some(SecurityEventSet::Custom),
                event_ids: Some(ids),
                ..Default::default()
            },
        )
    });
    let events = (
        proptest::sample::subsequence(vec!["System", "Application", "Setup"], 1..=3),
        levels(),
        ids(45),
    )
        .prop_map(|(ch, levels, ids)| {
            SourceRequest::new(
                D::WindowsEventLogs,
                DataSourceSettings {
                    channels: Some(ch.into_iter().map(String::from).collect()),
                    event_levels: levels,
                    event_ids: ids,
                    ..Default::default()
                },
            )
        });
    let app = (0u32..50, 1usize..=6, levels(), ids(30)).prop_map(|(base, n, levels, ids)| {
        SourceRequest::new(
            D::WindowsApplicationServiceLogs,
            DataSourceSettings {
                channels: Some(
                    (0..n)
                        .map(|i| format!("Vendor-{}/Operational", base + i as u32))
                        .collect(),
                ),
                event_levels: levels,
                event_ids: ids,
                ..Default::default()
            },
        )
    });
    let perf = (any::<bool>(), 1usize..=230, 1u32..=600).prop_map(|(win, n, secs)| {
        SourceRequest::new(
            if win {
                D::WindowsPerformanceCounters
            } else {
                D::LinuxPerformanceCounters
            },
            DataSourceSettings {
                counters: Some((0..n).map(|i| format!("\\Object{i}(*)\\Counter")).collect()),
                sampling_frequency_seconds: Some(secs),
                ..Default::default()
            },
        )
    });
    let syslog = (
        proptest::sample::subsequence(syslog_facilities(), 1..=24),
        proptest::sample::select(SyslogLevel::ALL.to_vec()),
    )
        .prop_map(|(f, min)| {
            SourceRequest::new(
                D::LinuxSyslog,
                DataSourceSettings {
                    facilities: Some(f.into_iter().map(String::from).collect()),
                    minimum_level: Some(min),
                    ..Default::default()
                },
            )
        });
    let text = (any::<bool>(), 0u32..40, any::<bool>()).prop_map(|(win, n, other_dce)| {
        SourceRequest::new(
            if win {
                D::WindowsCustomLogs
            } else {
                D::LinuxCustomLogs
            },
            DataSourceSettings {
                file_patterns: Some(vec![format!("/var/log/app{n}/*.log")]),
                table_name: Some(format!("App{n}_CL")),
                data_collection_endpoint_id: Some(if other_dce { DCE2 } else { DCE }.into()),
                ..Default::default()
            },
        )
    });
    let simple = proptest::sample::select(vec![
        D::WindowsForwardedEvents,
        D::WindowsSysmon,
        D::IisLogs,
        D::WindowsDnsLogs,
        D::WindowsFirewallLogs,
        D::LinuxCef,
    ])
    .prop_map(|t| SourceRequest::new(t, DataSourceSettings::default()));
    prop_oneof![sec, custom, events, app, perf, syslog, text, simple]
}

fn catalog() -> Catalog {
    Catalog::with_overrides(&[
        CatalogOverride {
            row_type: "WindowsApplicationServiceLogs".into(),
            ama_support: Some(Support::CollectionOnly),
            legacy_support: None,
        },
        CatalogOverride {
            row_type: "WindowsFirewallLogs".into(),
            ama_support: Some(Support::CollectionOnly),
            legacy_support: None,
        },
    ])
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn generated_rules_are_valid_complete_and_deterministic(sources in proptest::collection::vec(source(), 0..20)) {
        let ctx = DcrContext {
            plan_name: "prop".into(),
            workspace_resource_id: WS.into(),
            location: "westeurope".into(),
            workspace_location: Some("westeurope".into()),
        };
        let catalog = catalog();
        let set = generate(&catalog, &ctx, &sources).unwrap();
        prop_assert_eq!(&set, &generate(&catalog, &ctx, &sources).unwrap());

        let mut names = BTreeSet::new();
        let mut counters = 0usize;
        let mut covered = BTreeSet::new();
        for g in &set.rules {
            prop_assert!(names.insert(g.name.clone()), "duplicate DCR name {}", g.name);
            let body = serde_json::to_value(&g.rule).unwrap();
            let valid = specs().validate_schema_ref(
                "Insights/stable/2023-03-11/dataCollectionRules_API.json",
                "#/definitions/DataCollectionRuleResource",
                &body,
            );
            prop_assert!(valid.is_ok(), "{}: {:?}", g.name, valid);
            let ds = g.rule.properties.data_sources.as_ref().unwrap();
            prop_assert!(ds.len() <= 10 && !ds.is_empty());
            prop_assert!(g.rule.properties.data_flows.len() <= 10);
            prop_assert!(g.rule.streams().len() <= 10);
            for s in &ds.windows_event_logs {
                prop_assert!(s.x_path_queries.len() <= 100);
                for q in &s.x_path_queries {
                    prop_assert!(validate_xpath(q).is_ok(), "{q}");
                }
            }
            for s in &ds.syslog {
                prop_assert!(s.facility_names.len() <= 20);
            }
            for p in &ds.performance_counters {
                prop_assert!(p.counter_specifiers.len() <= 100);
                counters += p.counter_specifiers.len();
            }
            // One endpoint per rule, and only when it collects text logs.
            prop_assert_eq!(g.rule.properties.data_collection_endpoint_id.is_some(), !ds.log_files.is_empty());
            for t in &g.data_sources {
                prop_assert_eq!(t.os(), g.os);
                covered.insert(*t);
            }
            let kind = if g.os == OsFamily::Windows { "Windows" } else { "Linux" };
            prop_assert_eq!(g.rule.kind.as_deref(), Some(kind));
        }
        let requested: BTreeSet<_> = sources.iter().map(|s| s.data_source).collect();
        prop_assert_eq!(covered, requested);
        let requested_counters: usize = sources.iter().filter_map(|s| s.settings.counters.as_ref()).map(|c| c.len()).sum();
        prop_assert_eq!(counters, requested_counters);
    }
}
