//! The ingestion model's pure rules (design.md §2): which data sources a workspace's legacy settings
//! enable, and which (data source, workspace) pairs a DCR collects.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::azure::datasource::kinds;
use crate::catalog::DataSourceType;

/// What the legacy agent collects, read from a workspace's dataSources.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyConfig {
    /// Security Events tier (Sentinel or Security Center kind), `None` when absent.
    pub security_tier: Option<String>,
    /// WindowsEvent channels, lower-case.
    pub channels: BTreeSet<String>,
    /// LinuxSyslog facilities, lower-case.
    pub facilities: BTreeSet<String>,
    pub windows_perf: bool,
    pub linux_perf: bool,
    pub iis: bool,
    pub custom_windows: bool,
    pub custom_linux: bool,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

impl LegacyConfig {
    /// Interpret `(kind, properties)` of every dataSource of a workspace.
    pub fn from_data_sources<'a>(sources: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Self {
        let mut c = LegacyConfig::default();
        for (kind, props) in sources {
            match kind {
                k if k == kinds::SENTINEL_SECURITY_EVENTS
                    || k == kinds::SECURITY_CENTER_SECURITY_EVENTS =>
                {
                    if let Some(tier) = str_at(props, &["tier"]) {
                        let on = !tier.eq_ignore_ascii_case("None");
                        // Either configuration enabling a tier makes the agent collect.
                        if on || c.security_tier.is_none() {
                            c.security_tier = Some(tier.to_string());
                        }
                    }
                }
                kinds::WINDOWS_EVENT => {
                    if let Some(n) = str_at(props, &["eventLogName"]) {
                        c.channels.insert(n.to_ascii_lowercase());
                    }
                }
                kinds::LINUX_SYSLOG => {
                    if let Some(n) = str_at(props, &["syslogName"]) {
                        c.facilities.insert(n.to_ascii_lowercase());
                    }
                }
                kinds::WINDOWS_PERFORMANCE_COUNTER => c.windows_perf = true,
                kinds::LINUX_PERFORMANCE_OBJECT => c.linux_perf = true,
                kinds::IIS_LOGS => {
                    c.iis = str_at(props, &["state"])
                        .is_some_and(|s| s.eq_ignore_ascii_case("OnPremiseEnabled"))
                }
                kinds::CUSTOM_LOG => {
                    let locs = props.pointer("/inputs/0/location/fileSystemLocations");
                    let has = |k: &str| {
                        locs.and_then(|l| l.get(k))
                            .and_then(Value::as_array)
                            .is_some_and(|a| !a.is_empty())
                    };
                    c.custom_windows |= has("windowsFileTypeLogPaths");
                    c.custom_linux |= has("linuxFileTypeLogPaths");
                }
                _ => {}
            }
        }
        c
    }

    pub fn security_events_on(&self) -> bool {
        self.security_tier
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("None"))
    }

    /// Does the workspace's legacy configuration enable `ds` (for a machine that produces it)?
    /// Firewall, application-and-service, DNS and CEF collection are configured outside the workspace
    /// dataSources (solutions, the in-guest CEF forwarder): on whenever the legacy agent is present.
    pub fn enables(&self, ds: DataSourceType) -> bool {
        use DataSourceType as D;
        match ds {
            D::WindowsSecurityEvents => self.security_events_on(),
            D::WindowsEventLogs => {
                self.channels.contains("system") || self.channels.contains("application")
            }
            D::WindowsSysmon => self
                .channels
                .contains("microsoft-windows-sysmon/operational"),
            D::WindowsForwardedEvents => self.channels.contains("forwardedevents"),
            D::WindowsFirewallLogs
            | D::WindowsApplicationServiceLogs
            | D::WindowsDnsLogs
            | D::LinuxCef => true,
            D::WindowsPerformanceCounters => self.windows_perf,
            D::LinuxPerformanceCounters => self.linux_perf,
            D::IisLogs => self.iis,
            D::LinuxSyslog => !self.facilities.is_empty(),
            D::LinuxSysmon => self.facilities.contains("user") || self.facilities.contains("*"),
            D::WindowsCustomLogs => self.custom_windows,
            D::LinuxCustomLogs => self.custom_linux,
        }
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
    use super::*;
    use DataSourceType as D;
    use serde_json::json;

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
            (kinds::SENTINEL_SECURITY_EVENTS, &tier("Recommended")),
            (kinds::WINDOWS_EVENT, &sys),
        ]);
        assert!(c.enables(D::WindowsSecurityEvents) && c.enables(D::WindowsEventLogs));
        assert!(!c.enables(D::IisLogs) && !c.enables(D::LinuxSyslog));
        let none = tier("None");
        let c = LegacyConfig::from_data_sources([
            (kinds::SENTINEL_SECURITY_EVENTS, &none),
            (kinds::WINDOWS_EVENT, &sys),
        ]);
        assert!(!c.enables(D::WindowsSecurityEvents));
        assert!(c.enables(D::WindowsEventLogs));
    }
}
