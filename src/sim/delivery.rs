//! The ingestion model's pure rules (design.md §2): which data sources a workspace's legacy settings
//! enable, and which (data source, workspace) pairs a DCR collects.

use serde::Serialize;
use serde_json::Value;

use crate::azure::WorkspaceDataSource;
use crate::catalog::{DataSourceType, LegacyState};

/// What a workspace's legacy dataSources make the legacy agent send: the catalog's own reading
/// (`catalog::LegacyConfig`), so the simulator and the planner agree on which setting enables
/// which source. Sources configured outside the dataSources (firewall and DNS solutions, CEF on
/// the forwarder) are sent whenever the legacy agent is present.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct LegacyConfig(pub crate::catalog::LegacyConfig);

impl LegacyConfig {
    /// Interpret `(name, kind, properties)` of every dataSource of a workspace. An entry the
    /// catalog cannot read (the simulator stores what a client PUT) enables nothing.
    pub fn from_data_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>,
    ) -> Self {
        let readable: Vec<WorkspaceDataSource> = sources
            .into_iter()
            .map(|(name, kind, props)| WorkspaceDataSource {
                id: None,
                name: (!name.is_empty()).then(|| name.to_string()),
                resource_type: None,
                kind: kind.to_string(),
                properties: props.clone(),
                etag: None,
            })
            .filter(|ds| {
                crate::catalog::LegacyConfig::from_data_sources(std::slice::from_ref(ds)).is_ok()
            })
            .collect();
        Self(crate::catalog::LegacyConfig::from_data_sources(&readable).unwrap_or_default())
    }

    /// Does the workspace's legacy configuration make the agent send `ds` (for a machine that
    /// produces it)?
    pub fn enables(&self, ds: DataSourceType) -> bool {
        matches!(
            self.0.state(ds),
            LegacyState::Enabled | LegacyState::NotInDataSources
        )
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Data sources one DCR `dataSources` entry yields on a stream.
fn sources_of(kind: &str, entry: &Value, stream: &str) -> Vec<DataSourceType> {
    use DataSourceType as D;
    let s = stream.to_ascii_lowercase();
    match kind {
        "windowsEventLogs" => {
            if s == "microsoft-securityevent" {
                return vec![D::WindowsSecurityEvents];
            }
            if s == "microsoft-event" || s == "microsoft-windowsevent" {
                let mut out = Vec::new();
                for q in strings(entry.get("xPathQueries")) {
                    let channel = q
                        .split('!')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    let d = match channel.as_str() {
                        "forwardedevents" => D::WindowsForwardedEvents,
                        "microsoft-windows-sysmon/operational" => D::WindowsSysmon,
                        "system" | "application" => D::WindowsEventLogs,
                        "security" => D::WindowsSecurityEvents,
                        _ => D::WindowsApplicationServiceLogs,
                    };
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
                return out;
            }
            Vec::new()
        }
        "syslog" => {
            if s == "microsoft-commonsecuritylog" {
                vec![D::LinuxCef]
            } else if s == "microsoft-syslog" {
                let f: Vec<String> = strings(entry.get("facilityNames"))
                    .iter()
                    .map(|x| x.to_ascii_lowercase())
                    .collect();
                let mut out = vec![D::LinuxSyslog];
                if f.iter().any(|x| x == "user" || x == "*") {
                    out.push(D::LinuxSysmon);
                }
                out
            } else {
                Vec::new()
            }
        }
        "performanceCounters" if s == "microsoft-perf" => {
            vec![D::WindowsPerformanceCounters, D::LinuxPerformanceCounters]
        }
        "iisLogs" => vec![D::IisLogs],
        "windowsFirewallLogs" => vec![D::WindowsFirewallLogs],
        "logFiles" => vec![D::WindowsCustomLogs, D::LinuxCustomLogs],
        "extensions" => {
            let name = entry
                .get("extensionName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.eq_ignore_ascii_case("MicrosoftDnsAgent") {
                vec![D::WindowsDnsLogs]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// Every (data source, lower-case workspace resource id) a DCR delivers: a data source's stream must be
/// routed by a data flow to a Log Analytics destination.
pub fn dcr_collects(dcr: &Value) -> Vec<(DataSourceType, String)> {
    let props = match dcr.get("properties") {
        Some(p) => p,
        None => return Vec::new(),
    };
    let mut dest = std::collections::HashMap::new();
    for d in props
        .pointer("/destinations/logAnalytics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(n), Some(w)) = (
            d.get("name").and_then(Value::as_str),
            d.get("workspaceResourceId").and_then(Value::as_str),
        ) {
            dest.insert(n.to_string(), w.to_ascii_lowercase());
        }
    }
    let flows: Vec<(Vec<String>, Vec<String>)> = props
        .get("dataFlows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| (strings(f.get("streams")), strings(f.get("destinations"))))
        .collect();
    let mut out: Vec<(DataSourceType, String)> = Vec::new();
    let Some(sources) = props.get("dataSources").and_then(Value::as_object) else {
        return out;
    };
    for (kind, entries) in sources {
        for entry in entries.as_array().into_iter().flatten() {
            for stream in strings(entry.get("streams")) {
                let workspaces: Vec<&String> = flows
                    .iter()
                    .filter(|(ss, _)| ss.iter().any(|x| x.eq_ignore_ascii_case(&stream)))
                    .flat_map(|(_, ds)| ds.iter().filter_map(|d| dest.get(d)))
                    .collect();
                for d in sources_of(kind, entry, &stream) {
                    for w in &workspaces {
                        if !out.iter().any(|(a, b)| *a == d && b == *w) {
                            out.push((d, (*w).clone()));
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::azure::datasource::kinds;
    use DataSourceType as D;
    use serde_json::json;

    /// A workspace with a dataSource for every legacy setting the catalog knows.
    fn every_setting() -> Vec<(String, &'static str, Value)> {
        let sev = json!([{"severity": "err"}, {"severity": "warning"}]);
        let ev = json!([{"eventType": "Error"}]);
        vec![
            (
                "sentinel".into(),
                kinds::SENTINEL_SECURITY_EVENTS,
                json!({"tier": "Recommended"}),
            ),
            (
                "system".into(),
                kinds::WINDOWS_EVENT,
                json!({"eventLogName": "System", "eventTypes": ev}),
            ),
            (
                "sysmon".into(),
                kinds::WINDOWS_EVENT,
                json!({"eventLogName": "Microsoft-Windows-Sysmon/Operational", "eventTypes": ev}),
            ),
            (
                "forwarded".into(),
                kinds::WINDOWS_EVENT,
                json!({"eventLogName": "ForwardedEvents", "eventTypes": ev}),
            ),
            (
                "taskscheduler".into(),
                kinds::WINDOWS_EVENT,
                json!({"eventLogName": "Microsoft-Windows-TaskScheduler/Operational", "eventTypes": ev}),
            ),
            (
                "cpu".into(),
                kinds::WINDOWS_PERFORMANCE_COUNTER,
                json!({"objectName": "Processor", "counterName": "% Processor Time"}),
            ),
            (
                "iis".into(),
                kinds::IIS_LOGS,
                json!({"state": "OnPremiseEnabled"}),
            ),
            (
                "auth".into(),
                kinds::LINUX_SYSLOG,
                json!({"syslogName": "auth", "syslogSeverities": sev}),
            ),
            (
                "user".into(),
                kinds::LINUX_SYSLOG,
                json!({"syslogName": "user", "syslogSeverities": sev}),
            ),
            (
                "syslog-on".into(),
                kinds::LINUX_SYSLOG_COLLECTION,
                json!({"state": "Enabled"}),
            ),
            (
                "mem".into(),
                kinds::LINUX_PERFORMANCE_OBJECT,
                json!({"objectName": "Memory", "performanceCounters": [{"counterName": "% Used Memory"}]}),
            ),
            (
                "perf-on".into(),
                kinds::LINUX_PERFORMANCE_COLLECTION,
                json!({"state": "Enabled"}),
            ),
            (
                "winapp".into(),
                kinds::CUSTOM_LOG,
                json!({"customLogName": "WinApp", "inputs": [{"location": {"fileSystemLocations": {"windowsFileTypeLogPaths": ["C:\\app\\*.log"]}}}]}),
            ),
            (
                "linapp".into(),
                kinds::CUSTOM_LOG,
                json!({"customLogName": "LinApp", "inputs": [{"location": {"fileSystemLocations": {"linuxFileTypeLogPaths": ["/var/log/app/*.log"]}}}]}),
            ),
        ]
    }

    fn config(list: &[(String, &'static str, Value)]) -> LegacyConfig {
        LegacyConfig::from_data_sources(list.iter().map(|(n, k, p)| (n.as_str(), *k, p)))
    }

    /// Every catalog row: the simulator's legacy agent sends the source exactly when the setting
    /// the catalog names for it is present. Removing that setting (the dataSources the catalog
    /// says control it, which a flip changes) stops the source and no source that does not share
    /// it; a source no dataSource controls is sent whatever the settings.
    #[test]
    fn each_source_is_sent_only_through_the_setting_the_catalog_names() {
        let all = every_setting();
        let full = config(&all);
        let catalog = crate::catalog::Catalog::builtin();
        let rows: BTreeSet<DataSourceType> = catalog
            .rows()
            .iter()
            .filter_map(|r| r.data_source)
            .collect();
        assert_eq!(
            rows.len(),
            DataSourceType::ALL.len(),
            "a catalog row per source"
        );
        for t in rows {
            let controlling: BTreeSet<&str> = full.0.data_sources_for(t).into_iter().collect();
            assert!(full.enables(t), "{t}: sent with every setting present");
            if full.0.state(t) == LegacyState::NotInDataSources {
                assert!(controlling.is_empty(), "{t}");
                assert!(
                    config(&[]).enables(t),
                    "{t}: configured outside the dataSources"
                );
                continue;
            }
            assert!(
                !controlling.is_empty(),
                "{t}: the catalog names no dataSource for it"
            );
            let without: Vec<_> = all
                .iter()
                .filter(|(n, ..)| !controlling.contains(n.as_str()))
                .cloned()
                .collect();
            let less = config(&without);
            assert!(!less.enables(t), "{t}: still sent without {controlling:?}");
            for other in DataSourceType::ALL {
                let shares = full
                    .0
                    .data_sources_for(other)
                    .iter()
                    .any(|n| controlling.contains(n));
                if !shares {
                    assert_eq!(
                        less.enables(other),
                        full.enables(other),
                        "{t}: removing {controlling:?} changed {other}"
                    );
                }
            }
        }
        // Application and service logs need a channel of their own (not System or Application).
        let classic: Vec<_> = all
            .iter()
            .filter(|(n, ..)| n != "taskscheduler")
            .cloned()
            .collect();
        assert!(!config(&classic).enables(D::WindowsApplicationServiceLogs));
        // The collection switches turn the Linux sources off.
        let off: Vec<_> = all
            .iter()
            .map(|(n, k, p)| match *k {
                kinds::LINUX_SYSLOG_COLLECTION | kinds::LINUX_PERFORMANCE_COLLECTION => {
                    (n.clone(), *k, json!({"state": "Disabled"}))
                }
                _ => (n.clone(), *k, p.clone()),
            })
            .collect();
        let c = config(&off);
        assert!(!c.enables(D::LinuxSyslog) && !c.enables(D::LinuxSysmon));
        assert!(!c.enables(D::LinuxPerformanceCounters));
        assert!(c.enables(D::WindowsEventLogs));
    }

    #[test]
    fn dcr_streams_and_channels_map_to_data_sources() {
        let ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/W";
        let dcr = json!({"properties": {
            "dataSources": {
                "windowsEventLogs": [
                    {"name": "sec", "streams": ["Microsoft-SecurityEvent"], "xPathQueries": ["Security!*"]},
                    {"name": "ev", "streams": ["Microsoft-Event"], "xPathQueries": ["System!*", "Microsoft-Windows-Sysmon/Operational!*", "ForwardedEvents!*"]}
                ],
                "syslog": [{"name": "cef", "streams": ["Microsoft-CommonSecurityLog"], "facilityNames": ["local4"]},
                           {"name": "sys", "streams": ["Microsoft-Syslog"], "facilityNames": ["auth", "user"]}],
                "extensions": [{"name": "dns", "extensionName": "MicrosoftDnsAgent", "streams": ["Microsoft-ASimDnsActivityLogs"]}]
            },
            "destinations": {"logAnalytics": [{"name": "la", "workspaceResourceId": ws}]},
            "dataFlows": [{"streams": ["Microsoft-SecurityEvent", "Microsoft-Event", "Microsoft-Syslog", "Microsoft-ASimDnsActivityLogs"], "destinations": ["la"]}]
        }});
        let got: BTreeSet<DataSourceType> = dcr_collects(&dcr)
            .into_iter()
            .map(|(d, w)| {
                assert_eq!(w, ws.to_ascii_lowercase());
                d
            })
            .collect();
        // CEF has no data flow: not delivered.
        let want: BTreeSet<_> = [
            D::WindowsSecurityEvents,
            D::WindowsEventLogs,
            D::WindowsSysmon,
            D::WindowsForwardedEvents,
            D::LinuxSyslog,
            D::LinuxSysmon,
            D::WindowsDnsLogs,
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn legacy_tier_none_disables_security_events_only() {
        let tier = |t: &str| json!({"tier": t, "tierSetMethod": "Custom"});
        let sys = json!({"eventLogName": "System", "eventTypes": [{"eventType": "Error"}]});
        let c = LegacyConfig::from_data_sources([
            (
                "sentinel",
                kinds::SENTINEL_SECURITY_EVENTS,
                &tier("Recommended"),
            ),
            ("system", kinds::WINDOWS_EVENT, &sys),
        ]);
        assert!(c.enables(D::WindowsSecurityEvents) && c.enables(D::WindowsEventLogs));
        assert!(!c.enables(D::IisLogs) && !c.enables(D::LinuxSyslog));
        let none = tier("None");
        let c = LegacyConfig::from_data_sources([
            ("sentinel", kinds::SENTINEL_SECURITY_EVENTS, &none),
            ("system", kinds::WINDOWS_EVENT, &sys),
        ]);
        assert!(!c.enables(D::WindowsSecurityEvents));
        assert!(c.enables(D::WindowsEventLogs));
    }
}
