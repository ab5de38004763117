//! The workspace's legacy collection settings (its `dataSources`), summarised per data source:
//! what the legacy agent on every machine of the workspace collects today.

use serde::Serialize;

use super::settings::{EventLevel, SyslogLevel};
use super::table::ChannelClass;
use super::{DataSourceType, OsFamily};
use crate::azure::WorkspaceDataSource;
use crate::azure::datasource::kinds;

/// The Security Events tier, in the connector page's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum LegacySecurityTier {
    None,
    Minimal,
    Common,
    All,
}

impl LegacySecurityTier {
    /// Parse the wire `tier` (`All`, `Recommended`, `Minimal`, `None`); the UI name `Common` is
    /// accepted too. Case-insensitive.
    pub fn from_wire(tier: &str) -> Option<Self> {
        let t = tier.trim().to_ascii_lowercase();
        Some(match t.as_str() {
            "all" => Self::All,
            "recommended" | "common" => Self::Common,
            "minimal" => Self::Minimal,
            "none" => Self::None,
            _ => return None,
        })
    }

    /// The wire `tier` value.
    pub fn wire(self) -> &'static str {
        match self {
            Self::All => "All",
            Self::Common => "Recommended",
            Self::Minimal => "Minimal",
            Self::None => "None",
        }
    }

    /// The connector page's label.
    pub fn ui(self) -> &'static str {
        match self {
            Self::All => "All",
            Self::Common => "Common",
            Self::Minimal => "Minimal",
            Self::None => "None",
        }
    }
}

/// A `WindowsEvent` dataSource: one channel and its event types.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyEventChannel {
    pub data_source_name: String,
    pub channel: String,
    pub levels: Vec<EventLevel>,
}

/// A `WindowsPerformanceCounter` dataSource (one counter).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyWindowsCounter {
    pub data_source_name: String,
    /// `\Object(Instance)\Counter`.
    pub specifier: String,
    pub interval_seconds: u32,
}

/// A `LinuxSyslog` dataSource: one facility and its severities.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacySyslogFacility {
    pub data_source_name: String,
    pub facility: String,
    pub levels: Vec<SyslogLevel>,
}

/// A `LinuxPerformanceObject` dataSource: one object with several counters.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyLinuxPerfObject {
    pub data_source_name: String,
    /// `\Object(Instance)\Counter` for each counter.
    pub specifiers: Vec<String>,
    pub interval_seconds: u32,
}

/// A `CustomLog` dataSource.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyCustomLog {
    pub data_source_name: String,
    /// The table name, `<customLogName>` (which ends in `_CL`).
    pub table_name: String,
    pub windows_paths: Vec<String>,
    pub linux_paths: Vec<String>,
}

/// Whether the workspace turns a source on for the legacy agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LegacyState {
    Enabled,
    Disabled,
    /// Controlled outside the workspace's dataSources (a solution, or configuration on the
    /// machine — see the catalog row's `legacy_setting`); the dataSources cannot tell.
    NotInDataSources,
}

/// A malformed dataSource, named by its index and name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("dataSources[{index}] ({name}, kind {kind}): {problem}")]
pub struct LegacyConfigError {
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub problem: String,
}

/// Summary of a workspace's legacy collection settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyConfig {
    /// Tier of `SecurityInsightsSecurityEventCollectionConfiguration` (Sentinel), if present.
    pub sentinel_security_tier: Option<LegacySecurityTier>,
    /// Tier of `SecurityEventCollectionConfiguration` (Defender for Cloud), if present.
    pub security_center_security_tier: Option<LegacySecurityTier>,
    pub event_channels: Vec<LegacyEventChannel>,
    pub windows_counters: Vec<LegacyWindowsCounter>,
    pub iis_logs: bool,
    pub custom_logs: Vec<LegacyCustomLog>,
    pub syslog_facilities: Vec<LegacySyslogFacility>,
    /// `LinuxSyslogCollection.state` (`None`: no such dataSource).
    pub syslog_collection_enabled: Option<bool>,
    pub linux_perf_objects: Vec<LegacyLinuxPerfObject>,
    /// `LinuxPerformanceCollection.state` (`None`: no such dataSource).
    pub linux_perf_collection_enabled: Option<bool>,
    /// dataSource names per data source: what a legacy flip has to change.
    pub controlling: Vec<(DataSourceType, String)>,
    /// dataSources of kinds the migration does not handle, by name and kind.
    pub ignored: Vec<(String, String)>,
}

impl LegacyConfig {
    /// Summarise a workspace's dataSources. Kinds that are not agent collection settings are
    /// listed in `ignored`; a malformed entry of a known kind is an error naming it.
    pub fn from_data_sources(list: &[WorkspaceDataSource]) -> Result<Self, LegacyConfigError> {
        let mut cfg = Self::default();
        for (index, ds) in list.iter().enumerate() {
            let name = ds
                .name
                .clone()
                .or_else(|| {
                    ds.id
                        .as_deref()
                        .and_then(|id| id.rsplit('/').next())
                        .map(String::from)
                })
                .unwrap_or_else(|| format!("#{index}"));
            let err = |problem: String| LegacyConfigError {
                index,
                name: name.clone(),
                kind: ds.kind.clone(),
                problem,
            };
            let p = &ds.properties;
            match ds.kind.as_str() {
                kinds::SENTINEL_SECURITY_EVENTS | kinds::SECURITY_CENTER_SECURITY_EVENTS => {
                    let raw = str_field(p, "tier").ok_or_else(|| {
                        err("properties.tier is missing; expected All, Recommended, Minimal or None".into())
                    })?;
                    let tier = LegacySecurityTier::from_wire(raw).ok_or_else(|| {
                        err(format!(
                            "properties.tier {raw:?} is not one of All, Recommended, Minimal, None"
                        ))
                    })?;
                    if ds.kind == kinds::SENTINEL_SECURITY_EVENTS {
                        cfg.sentinel_security_tier = Some(tier);
                    } else {
                        cfg.security_center_security_tier = Some(tier);
                    }
                    cfg.controlling
                        .push((DataSourceType::WindowsSecurityEvents, name.clone()));
                }
                kinds::WINDOWS_EVENT => {
                    let channel = str_field(p, "eventLogName")
                        .filter(|c| !c.trim().is_empty())
                        .ok_or_else(|| err("properties.eventLogName is missing or empty".into()))?;
                    let mut levels = Vec::new();
                    for (i, t) in array_field(p, "eventTypes").iter().enumerate() {
                        let raw = t.get("eventType").and_then(|v| v.as_str()).ok_or_else(|| {
                            err(format!("properties.eventTypes[{i}].eventType is missing"))
                        })?;
                        let level = EventLevel::from_legacy(raw).ok_or_else(|| {
                            err(format!(
                                "properties.eventTypes[{i}].eventType {raw:?} is not Error, Warning or Information"
                            ))
                        })?;
                        if !levels.contains(&level) {
                            levels.push(level);
                        }
                    }
                    levels.sort();
                    let class = ChannelClass::of(channel);
                    cfg.controlling.push((class.data_source(), name.clone()));
                    cfg.event_channels.push(LegacyEventChannel {
                        data_source_name: name.clone(),
                        channel: channel.trim().to_string(),
                        levels,
                    });
                }
                kinds::WINDOWS_PERFORMANCE_COUNTER => {
                    let object = str_field(p, "objectName")
                        .ok_or_else(|| err("properties.objectName is missing".into()))?;
                    let counter = str_field(p, "counterName")
                        .ok_or_else(|| err("properties.counterName is missing".into()))?;
                    let instance = str_field(p, "instanceName");
                    let interval = interval(p).map_err(err)?;
                    cfg.controlling
                        .push((DataSourceType::WindowsPerformanceCounters, name.clone()));
                    cfg.windows_counters.push(LegacyWindowsCounter {
                        data_source_name: name.clone(),
                        specifier: counter_specifier(object, instance, counter),
                        interval_seconds: interval,
                    });
                }
                kinds::IIS_LOGS => {
                    let state = str_field(p, "state").unwrap_or("");
                    cfg.iis_logs = state.eq_ignore_ascii_case("OnPremiseEnabled");
                    cfg.controlling
                        .push((DataSourceType::IisLogs, name.clone()));
                }
                kinds::LINUX_SYSLOG => {
                    let facility = str_field(p, "syslogName")
                        .filter(|f| !f.trim().is_empty())
                        .ok_or_else(|| err("properties.syslogName is missing or empty".into()))?;
                    let mut levels = Vec::new();
                    for (i, s) in array_field(p, "syslogSeverities").iter().enumerate() {
                        let raw = s.get("severity").and_then(|v| v.as_str()).ok_or_else(|| {
                            err(format!(
                                "properties.syslogSeverities[{i}].severity is missing"
                            ))
                        })?;
                        let level = SyslogLevel::from_legacy(raw).ok_or_else(|| {
                            err(format!(
                                "properties.syslogSeverities[{i}].severity {raw:?} is not one of emerg, alert, crit, err, warning, notice, info, debug"
                            ))
                        })?;
                        if !levels.contains(&level) {
                            levels.push(level);
                        }
                    }
                    levels.sort();
                    let facility = facility.trim().to_ascii_lowercase();
                    cfg.controlling
                        .push((DataSourceType::LinuxSyslog, name.clone()));
                    if facility == "user" || facility == "*" {
                        cfg.controlling
                            .push((DataSourceType::LinuxSysmon, name.clone()));
                    }
                    cfg.syslog_facilities.push(LegacySyslogFacility {
                        data_source_name: name.clone(),
                        facility,
                        levels,
                    });
                }
                kinds::LINUX_SYSLOG_COLLECTION => {
                    cfg.syslog_collection_enabled = Some(state_enabled(p));
                }
                kinds::LINUX_PERFORMANCE_OBJECT => {
                    let object = str_field(p, "objectName")
                        .ok_or_else(|| err("properties.objectName is missing".into()))?;
                    let instance = str_field(p, "instanceName");
                    let interval = interval(p).map_err(err)?;
                    let mut specifiers = Vec::new();
                    for (i, c) in array_field(p, "performanceCounters").iter().enumerate() {
                        let counter =
                            c.get("counterName")
                                .and_then(|v| v.as_str())
                                .ok_or_else(|| {
                                    err(format!(
                                        "properties.performanceCounters[{i}].counterName is missing"
                                    ))
                                })?;
                        specifiers.push(counter_specifier(object, instance, counter));
                    }
                    cfg.controlling
                        .push((DataSourceType::LinuxPerformanceCounters, name.clone()));
                    cfg.linux_perf_objects.push(LegacyLinuxPerfObject {
                        data_source_name: name.clone(),
                        specifiers,
                        interval_seconds: interval,
                    });
                }
                kinds::LINUX_PERFORMANCE_COLLECTION => {
                    cfg.linux_perf_collection_enabled = Some(state_enabled(p));
                }
                kinds::CUSTOM_LOG => {
                    let log = parse_custom_log(&name, p).map_err(err)?;
                    if !log.windows_paths.is_empty() {
                        cfg.controlling
                            .push((DataSourceType::WindowsCustomLogs, name.clone()));
                    }
                    if !log.linux_paths.is_empty() {
                        cfg.controlling
                            .push((DataSourceType::LinuxCustomLogs, name.clone()));
                    }
                    cfg.custom_logs.push(log);
                }
                other => cfg.ignored.push((name.clone(), other.to_string())),
            }
        }
        Ok(cfg)
    }

    /// The tier the legacy agent collects: the broader of the Sentinel and Defender for Cloud
    /// settings (either one makes the agent send SecurityEvent); `None` if neither is present.
    pub fn security_tier(&self) -> Option<LegacySecurityTier> {
        self.sentinel_security_tier
            .max(self.security_center_security_tier)
    }

    /// Whether the workspace's dataSources make the legacy agent collect `t`.
    /// Sources controlled elsewhere (firewall and DNS solutions, CEF on the forwarder) are `false`
    /// here; see [`LegacyConfig::state`].
    pub fn enables(&self, t: DataSourceType) -> bool {
        self.state(t) == LegacyState::Enabled
    }

    /// Enabled, disabled, or not visible in the dataSources.
    pub fn state(&self, t: DataSourceType) -> LegacyState {
        use DataSourceType as D;
        let on = |b: bool| {
            if b {
                LegacyState::Enabled
            } else {
                LegacyState::Disabled
            }
        };
        let channel = |class: ChannelClass| {
            self.event_channels
                .iter()
                .any(|c| ChannelClass::of(&c.channel) == class)
        };
        let syslog_on = self.syslog_collection_enabled != Some(false);
        match t {
            D::WindowsSecurityEvents => on(self
                .security_tier()
                .is_some_and(|t| t != LegacySecurityTier::None)),
            D::WindowsEventLogs => on(channel(ChannelClass::Classic)),
            D::WindowsApplicationServiceLogs => on(channel(ChannelClass::ApplicationAndService)),
            D::WindowsSysmon => on(channel(ChannelClass::Sysmon)),
            D::WindowsForwardedEvents => on(channel(ChannelClass::Forwarded)),
            D::WindowsPerformanceCounters => on(!self.windows_counters.is_empty()),
            D::IisLogs => on(self.iis_logs),
            D::WindowsCustomLogs => {
                on(self.custom_logs.iter().any(|l| !l.windows_paths.is_empty()))
            }
            D::LinuxCustomLogs => on(self.custom_logs.iter().any(|l| !l.linux_paths.is_empty())),
            D::LinuxSyslog => on(syslog_on && !self.syslog_facilities.is_empty()),
            D::LinuxSysmon => on(syslog_on
                && self
                    .syslog_facilities
                    .iter()
                    .any(|f| (f.facility == "user" || f.facility == "*") && !f.levels.is_empty())),
            D::LinuxPerformanceCounters => on(self.linux_perf_collection_enabled != Some(false)
                && !self.linux_perf_objects.is_empty()),
            D::WindowsFirewallLogs | D::WindowsDnsLogs | D::LinuxCef => {
                LegacyState::NotInDataSources
            }
        }
    }

    /// Names of the dataSources that make the legacy agent collect `t` (what a flip changes).
    pub fn data_sources_for(&self, t: DataSourceType) -> Vec<&str> {
        self.controlling
            .iter()
            .filter(|(s, _)| *s == t)
            .map(|(_, n)| n.as_str())
            .collect()
    }

    /// Whether any custom log applies to `os`.
    pub fn has_custom_logs(&self, os: OsFamily) -> bool {
        self.custom_logs.iter().any(|l| match os {
            OsFamily::Windows => !l.windows_paths.is_empty(),
            OsFamily::Linux => !l.linux_paths.is_empty(),
        })
    }
}

/// `\Object(Instance)\Counter`, or `\Object\Counter` without an instance.
pub fn counter_specifier(object: &str, instance: Option<&str>, counter: &str) -> String {
    match instance.map(str::trim).filter(|i| !i.is_empty()) {
        Some(i) => format!("\\{}({})\\{}", object.trim(), i, counter.trim()),
        None => format!("\\{}\\{}", object.trim(), counter.trim()),
    }
}

fn str_field<'a>(p: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    p.get(key).and_then(|v| v.as_str())
}

fn array_field<'a>(p: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    p.get(key)
        .and_then(|v| v.as_array())
        .map(|a| a.as_slice())
        .unwrap_or(&[])
}

fn state_enabled(p: &serde_json::Value) -> bool {
    str_field(p, "state").is_some_and(|s| s.eq_ignore_ascii_case("Enabled"))
}

fn interval(p: &serde_json::Value) -> Result<u32, String> {
    match p.get("intervalSeconds") {
        None => Ok(60),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=86_400).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                format!(
                    "properties.intervalSeconds {v} is not a whole number of seconds in 1..=86400"
                )
            }),
    }
}

fn parse_custom_log(name: &str, p: &serde_json::Value) -> Result<LegacyCustomLog, String> {
    let table = str_field(p, "customLogName")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .unwrap_or_else(|| name.to_string());
    let table_name = if table.ends_with("_CL") {
        table
    } else {
        format!("{table}_CL")
    };
    let mut windows_paths = Vec::new();
    let mut linux_paths = Vec::new();
    for input in array_field(p, "inputs") {
        let loc = input
            .get("location")
            .and_then(|l| l.get("fileSystemLocations"));
        let Some(loc) = loc else { continue };
        for (key, out) in [
            ("windowsFileTypeLogPaths", &mut windows_paths),
            ("linuxFileTypeLogPaths", &mut linux_paths),
        ] {
            for path in array_field(loc, key) {
                let path = path.as_str().ok_or_else(|| {
                    format!(
                        "properties.inputs[].location.fileSystemLocations.{key} holds a non-string"
                    )
                })?;
                out.push(path.to_string());
            }
        }
    }
    if windows_paths.is_empty() && linux_paths.is_empty() {
        return Err(
            "properties.inputs has no windowsFileTypeLogPaths or linuxFileTypeLogPaths".into(),
        );
    }
    Ok(LegacyCustomLog {
        data_source_name: name.to_string(),
        table_name,
        windows_paths,
        linux_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(name: &str, kind: &str, properties: serde_json::Value) -> WorkspaceDataSource {
        WorkspaceDataSource {
            id: None,
            name: Some(name.into()),
            resource_type: None,
            kind: kind.into(),
            properties,
            etag: None,
        }
    }

    #[test]
    fn reads_both_security_tier_kinds_and_takes_the_broader() {
        let cfg = LegacyConfig::from_data_sources(&[
            ds(
                "SecurityInsightsSecurityEventCollectionConfiguration",
                kinds::SENTINEL_SECURITY_EVENTS,
                json!({"tier": "Recommended", "tierSetMethod": "Custom"}),
            ),
            ds(
                "SecurityEventCollectionConfiguration",
                kinds::SECURITY_CENTER_SECURITY_EVENTS,
                json!({"tier": "Minimal"}),
            ),
        ])
        .unwrap();
        assert_eq!(cfg.sentinel_security_tier, Some(LegacySecurityTier::Common));
        assert_eq!(
            cfg.security_center_security_tier,
            Some(LegacySecurityTier::Minimal)
        );
        assert_eq!(cfg.security_tier(), Some(LegacySecurityTier::Common));
        assert!(cfg.enables(DataSourceType::WindowsSecurityEvents));
        assert_eq!(
            cfg.data_sources_for(DataSourceType::WindowsSecurityEvents)
                .len(),
            2
        );

        let cfg = LegacyConfig::from_data_sources(&[ds(
            "s",
            kinds::SENTINEL_SECURITY_EVENTS,
            json!({"tier": "None"}),
        )])
        .unwrap();
        assert!(!cfg.enables(DataSourceType::WindowsSecurityEvents));
        for t in [
            LegacySecurityTier::All,
            LegacySecurityTier::Common,
            LegacySecurityTier::Minimal,
            LegacySecurityTier::None,
        ] {
            assert_eq!(LegacySecurityTier::from_wire(t.wire()), Some(t));
            assert_eq!(LegacySecurityTier::from_wire(t.ui()), Some(t));
        }
    }

    #[test]
    fn classifies_sources_and_names_the_controlling_data_sources() {
        let cfg = LegacyConfig::from_data_sources(&[
            ds("sys", kinds::WINDOWS_EVENT, json!({"eventLogName": "System", "eventTypes": [{"eventType": "Error"}, {"eventType": "Warning"}]})),
            ds("sysmon", kinds::WINDOWS_EVENT, json!({"eventLogName": "Microsoft-Windows-Sysmon/Operational", "eventTypes": [{"eventType": "Information"}]})),
            ds("kern", kinds::LINUX_SYSLOG, json!({"syslogName": "kern", "syslogSeverities": [{"severity": "emerg"}, {"severity": "err"}]})),
            ds("iis", kinds::IIS_LOGS, json!({"state": "OnPremiseEnabled"})),
            ds("act", "AzureActivityLog", json!({"linkedResourceId": "x"})),
        ])
        .unwrap();
        assert!(cfg.enables(DataSourceType::WindowsEventLogs));
        assert!(cfg.enables(DataSourceType::WindowsSysmon));
        assert!(!cfg.enables(DataSourceType::WindowsApplicationServiceLogs));
        assert!(cfg.enables(DataSourceType::LinuxSyslog));
        assert!(
            !cfg.enables(DataSourceType::LinuxSysmon),
            "kern does not carry sysmon"
        );
        assert!(cfg.enables(DataSourceType::IisLogs));
        assert!(!cfg.enables(DataSourceType::WindowsSecurityEvents));
        assert_eq!(
            cfg.state(DataSourceType::WindowsFirewallLogs),
            LegacyState::NotInDataSources
        );
        assert_eq!(
            cfg.data_sources_for(DataSourceType::WindowsSysmon),
            ["sysmon"]
        );
        assert_eq!(
            cfg.syslog_facilities[0].levels,
            [SyslogLevel::Error, SyslogLevel::Emergency]
        );
        assert_eq!(
            cfg.ignored,
            [("act".to_string(), "AzureActivityLog".to_string())]
        );

        let off = LegacyConfig::from_data_sources(&[
            ds(
                "kern",
                kinds::LINUX_SYSLOG,
                json!({"syslogName": "user", "syslogSeverities": [{"severity": "info"}]}),
            ),
            ds(
                "syslogCollection",
                kinds::LINUX_SYSLOG_COLLECTION,
                json!({"state": "Disabled"}),
            ),
        ])
        .unwrap();
        assert!(
            !off.enables(DataSourceType::LinuxSyslog),
            "master switch off"
        );
        assert!(!off.enables(DataSourceType::LinuxSysmon));
    }

    #[test]
    fn malformed_entries_are_named() {
        let err = LegacyConfig::from_data_sources(&[
            ds("ok", kinds::IIS_LOGS, json!({"state": "OnPremiseEnabled"})),
            ds(
                "bad",
                kinds::LINUX_SYSLOG,
                json!({"syslogName": "auth", "syslogSeverities": [{"severity": "loud"}]}),
            ),
        ])
        .unwrap_err();
        assert_eq!(err.index, 1);
        let msg = err.to_string();
        assert!(
            msg.contains("dataSources[1] (bad, kind LinuxSyslog)"),
            "{msg}"
        );
        assert!(msg.contains("\"loud\""), "{msg}");

        let err = LegacyConfig::from_data_sources(&[ds(
            "t",
            kinds::SENTINEL_SECURITY_EVENTS,
            json!({"tier": "Most"}),
        )])
        .unwrap_err();
        assert!(
            err.to_string().contains("properties.tier \"Most\""),
            "{err}"
        );
    }

    #[test]
    fn counter_specifiers_and_custom_logs() {
        assert_eq!(
            counter_specifier("Memory", Some("*"), "Available MBytes"),
            "\\Memory(*)\\Available MBytes"
        );
        assert_eq!(
            counter_specifier("Memory", None, "Available MBytes"),
            "\\Memory\\Available MBytes"
        );
        let cfg = LegacyConfig::from_data_sources(&[ds("app", kinds::CUSTOM_LOG, json!({
            "customLogName": "AppLog_CL",
            "inputs": [{"location": {"fileSystemLocations": {"linuxFileTypeLogPaths": ["/var/log/app/*.log"]}}}]
        }))])
        .unwrap();
        assert!(cfg.enables(DataSourceType::LinuxCustomLogs));
        assert!(!cfg.enables(DataSourceType::WindowsCustomLogs));
        assert_eq!(cfg.custom_logs[0].table_name, "AppLog_CL");
    }
}
