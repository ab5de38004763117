//! The seed's Windows and Linux gap tables as a static table (design.md §4), plus plan overrides.
//!
//! One row per seed row. Data-source rows are keyed by [`DataSourceType`]; capability rows
//! (event-ID filtering, multi-homing) qualify a data source (or every source of their OS) and are
//! keyed by [`Capability`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DataSourceType, OsFamily};

/// An agent's support for a row, as the seed states it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Support {
    /// A Sentinel data connector exists for this agent.
    Connector,
    /// The agent can collect it, without a dedicated connector.
    CollectionOnly,
    /// The agent cannot collect it.
    Unsupported,
}

impl Support {
    pub fn is_supported(self) -> bool {
        self != Self::Unsupported
    }
}

/// Whether a row is a data source or a capability qualifying one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RowKind {
    DataSource,
    Capability,
}

/// Capability rows of the seed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Capability {
    /// "Filtering by security event ID" (Windows).
    SecurityEventIdFiltering,
    /// "Filtering by event ID" (Windows).
    EventIdFiltering,
    /// "Multi-homing": one agent sending to several workspaces.
    MultiHoming,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecurityEventIdFiltering => "SecurityEventIdFiltering",
            Self::EventIdFiltering => "EventIdFiltering",
            Self::MultiHoming => "MultiHoming",
        }
    }
}

/// The workspace (or other) setting that makes the legacy agent collect a row's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LegacySetting {
    /// dataSource `SecurityInsightsSecurityEventCollectionConfiguration` (Sentinel) or
    /// `SecurityEventCollectionConfiguration` (Defender for Cloud): `properties.tier`.
    SecurityEventTier,
    /// dataSource `WindowsEvent`: `properties.eventLogName` of the channels this row owns.
    WindowsEventChannels { channels: ChannelClass },
    /// dataSource `WindowsPerformanceCounter` (one counter per dataSource).
    WindowsPerformanceCounter,
    /// dataSource `IISLogs`: `properties.state == OnPremiseEnabled`.
    IisLogs,
    /// dataSource `CustomLog`: the Windows or Linux file paths in `properties.inputs`.
    CustomLog { os: OsFamily },
    /// dataSource `LinuxSyslog`: `properties.syslogName` (facility) with its severities;
    /// `LinuxSyslogCollection.state` is the master switch.
    LinuxSyslogFacilities,
    /// dataSource `LinuxSyslog` with this facility (Sysmon for Linux logs through syslog).
    LinuxSyslogFacility { facility: &'static str },
    /// dataSource `LinuxPerformanceObject`; `LinuxPerformanceCollection.state` is the master switch.
    LinuxPerformanceObject,
    /// A workspace solution (not a dataSource): removing the solution stops legacy collection.
    Solution { name: &'static str },
    /// Configured on each machine, not in the workspace.
    MachineLocal { what: &'static str },
    /// The legacy agent cannot collect this.
    NotCollected,
    /// A capability of the agent, not a collection setting.
    AgentCapability,
}

/// Which `WindowsEvent` channels a row owns (a channel belongs to exactly one row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ChannelClass {
    /// `System`, `Application`, `Setup`.
    Classic,
    /// `Microsoft-Windows-Sysmon/Operational`.
    Sysmon,
    /// `ForwardedEvents`.
    Forwarded,
    /// Every other channel (application and service logs).
    ApplicationAndService,
}

/// Classic Windows logs: the `Event` rows of `WindowsEventLogs`.
pub const CLASSIC_CHANNELS: [&str; 3] = ["System", "Application", "Setup"];
pub const SYSMON_CHANNEL: &str = "Microsoft-Windows-Sysmon/Operational";
pub const FORWARDED_CHANNEL: &str = "ForwardedEvents";

impl ChannelClass {
    /// The class a `WindowsEvent` channel belongs to (case-insensitive).
    pub fn of(channel: &str) -> Self {
        let c = channel.trim();
        if CLASSIC_CHANNELS.iter().any(|k| k.eq_ignore_ascii_case(c)) {
            Self::Classic
        } else if c.eq_ignore_ascii_case(SYSMON_CHANNEL) {
            Self::Sysmon
        } else if c.eq_ignore_ascii_case(FORWARDED_CHANNEL) {
            Self::Forwarded
        } else {
            Self::ApplicationAndService
        }
    }

    /// The data source the channel's events belong to.
    pub fn data_source(self) -> DataSourceType {
        match self {
            Self::Classic => DataSourceType::WindowsEventLogs,
            Self::Sysmon => DataSourceType::WindowsSysmon,
            Self::Forwarded => DataSourceType::WindowsForwardedEvents,
            Self::ApplicationAndService => DataSourceType::WindowsApplicationServiceLogs,
        }
    }
}

/// The `properties.dataSources.<key>` list a data source becomes in a DCR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DcrSourceKind {
    WindowsEventLogs,
    Syslog,
    PerformanceCounters,
    LogFiles,
    IisLogs,
    WindowsFirewallLogs,
    Extensions,
}

impl DcrSourceKind {
    /// The JSON key under `properties.dataSources`.
    pub fn key(self) -> &'static str {
        match self {
            Self::WindowsEventLogs => "windowsEventLogs",
            Self::Syslog => "syslog",
            Self::PerformanceCounters => "performanceCounters",
            Self::LogFiles => "logFiles",
            Self::IisLogs => "iisLogs",
            Self::WindowsFirewallLogs => "windowsFirewallLogs",
            Self::Extensions => "extensions",
        }
    }
}

/// What a data source becomes in a DCR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DcrTarget {
    pub kind: DcrSourceKind,
    /// The stream; `Custom-` streams are per custom table (see `DataSourceSettings::table_name`).
    pub stream: &'static str,
}

/// Destination table; custom text logs go to the plan's `<Name>_CL` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TableRef {
    Named(&'static str),
    /// The `tableName` of the data source's settings.
    CustomTable,
}

impl TableRef {
    /// The table name, using `custom` for `CustomTable`; `None` if a custom table is unknown.
    pub fn resolve<'a>(&'a self, custom: Option<&'a str>) -> Option<&'a str> {
        match self {
            Self::Named(t) => Some(t),
            Self::CustomTable => custom,
        }
    }
}

/// One row of the gap tables.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogRow {
    /// The row's label in the seed article.
    pub seed_label: &'static str,
    pub kind: RowKind,
    pub os: OsFamily,
    /// For data-source rows, the source; for capability rows, the source they qualify
    /// (`None`: every source of the OS).
    pub data_source: Option<DataSourceType>,
    pub capability: Option<Capability>,
    pub ama: Support,
    pub legacy: Support,
    /// Marked "(Public preview)" in the seed.
    pub preview: bool,
    pub legacy_setting: LegacySetting,
    /// `None` for capability rows.
    pub dcr: Option<DcrTarget>,
    pub legacy_table: Option<TableRef>,
    pub ama_table: Option<TableRef>,
    /// Extra `where` predicate (contracts §2 subset) that tells this source's rows apart in a
    /// shared table.
    pub proof_filter: Option<&'static str>,
    /// Why the row is what it is, for operators reading `plan` output.
    pub note: &'static str,
}

impl CatalogRow {
    /// The KQL (contracts §2 subset) proving delivery over the last `window_minutes`: rows per
    /// machine with the latest timestamp. `custom_table` names the `_CL` table of custom logs.
    /// `None` for capability rows or a custom log without a table.
    pub fn proof_query(&self, window_minutes: u32, custom_table: Option<&str>) -> Option<String> {
        let table = self.ama_table.as_ref()?.resolve(custom_table)?;
        Some(proof_query_for(table, self.proof_filter, window_minutes))
    }

    /// Same, for the table the legacy agent writes to.
    pub fn legacy_proof_query(
        &self,
        window_minutes: u32,
        custom_table: Option<&str>,
    ) -> Option<String> {
        let table = self.legacy_table.as_ref()?.resolve(custom_table)?;
        Some(proof_query_for(table, self.proof_filter, window_minutes))
    }

    /// Support of the given agent (`true` = AMA).
    pub fn support(&self, ama: bool) -> Support {
        if ama { self.ama } else { self.legacy }
    }
}

fn proof_query_for(table: &str, filter: Option<&str>, window_minutes: u32) -> String {
    let mut q = format!("{table} | where TimeGenerated > ago({window_minutes}m)");
    if let Some(f) = filter {
        q.push_str(" and ");
        q.push_str(f);
    }
    q.push_str(" | summarize count(), max(TimeGenerated) by Computer, _ResourceId");
    q
}

const fn source(
    seed_label: &'static str,
    t: DataSourceType,
    os: OsFamily,
    ama: Support,
    legacy: Support,
) -> CatalogRow {
    CatalogRow {
        seed_label,
        kind: RowKind::DataSource,
        os,
        data_source: Some(t),
        capability: None,
        ama,
        legacy,
        preview: false,
        legacy_setting: LegacySetting::NotCollected,
        dcr: None,
        legacy_table: None,
        ama_table: None,
        proof_filter: None,
        note: "",
    }
}

const fn capability(
    seed_label: &'static str,
    c: Capability,
    os: OsFamily,
    qualifies: Option<DataSourceType>,
    ama: Support,
    legacy: Support,
    note: &'static str,
) -> CatalogRow {
    CatalogRow {
        seed_label,
        kind: RowKind::Capability,
        os,
        data_source: qualifies,
        capability: Some(c),
        ama,
        legacy,
        preview: false,
        legacy_setting: LegacySetting::AgentCapability,
        dcr: None,
        legacy_table: None,
        ama_table: None,
        proof_filter: None,
        note,
    }
}

const fn target(kind: DcrSourceKind, stream: &'static str) -> Option<DcrTarget> {
    Some(DcrTarget { kind, stream })
}

const fn table(t: &'static str) -> Option<TableRef> {
    Some(TableRef::Named(t))
}

use DataSourceType as D;
use OsFamily::{Linux, Windows};
use Support::{CollectionOnly, Connector, Unsupported};

/// The seed's gap tables (Windows rows, then Linux rows, in the seed's order), plus Linux
/// performance counters, which the seed does not list.
pub static BUILTIN_ROWS: [CatalogRow; 19] = [
    CatalogRow {
        legacy_setting: LegacySetting::SecurityEventTier,
        dcr: target(DcrSourceKind::WindowsEventLogs, "Microsoft-SecurityEvent"),
        legacy_table: table("SecurityEvent"),
        ama_table: table("SecurityEvent"),
        note: "Legacy tier is workspace-wide: setting it to None stops every legacy sender.",
        ..source(
            "Security Events",
            D::WindowsSecurityEvents,
            Windows,
            Connector,
            Connector,
        )
    },
    capability(
        "Filtering by security event ID",
        Capability::SecurityEventIdFiltering,
        Windows,
        Some(D::WindowsSecurityEvents),
        Connector,
        Unsupported,
        "AMA: securityEventSet Custom with eventIds or xPathQueries.",
    ),
    capability(
        "Filtering by event ID",
        Capability::EventIdFiltering,
        Windows,
        Some(D::WindowsEventLogs),
        CollectionOnly,
        Unsupported,
        "AMA: eventIds or xPathQueries on the event log channels.",
    ),
    CatalogRow {
        dcr: target(DcrSourceKind::WindowsEventLogs, "Microsoft-WindowsEvent"),
        legacy_table: table("WindowsEvent"),
        ama_table: table("WindowsEvent"),
        note: "Collector machines only: the ForwardedEvents channel.",
        ..source(
            "Windows Event Forwarding",
            D::WindowsForwardedEvents,
            Windows,
            Connector,
            Unsupported,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::Solution {
            name: "WindowsFirewall",
        },
        dcr: target(
            DcrSourceKind::WindowsFirewallLogs,
            "Microsoft-WindowsFirewall",
        ),
        legacy_table: table("WindowsFirewall"),
        ama_table: table("WindowsFirewall"),
        note: "Legacy collection comes from the WindowsFirewall solution, not a dataSource.",
        ..source(
            "Windows Firewall Logs",
            D::WindowsFirewallLogs,
            Windows,
            Unsupported,
            Connector,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::WindowsPerformanceCounter,
        dcr: target(DcrSourceKind::PerformanceCounters, "Microsoft-Perf"),
        legacy_table: table("Perf"),
        ama_table: table("Perf"),
        note: "Perf is shared with Linux: tell the rows apart by machine OS.",
        ..source(
            "Performance counters",
            D::WindowsPerformanceCounters,
            Windows,
            CollectionOnly,
            CollectionOnly,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::WindowsEventChannels {
            channels: ChannelClass::Classic,
        },
        dcr: target(DcrSourceKind::WindowsEventLogs, "Microsoft-Event"),
        legacy_table: table("Event"),
        ama_table: table("Event"),
        proof_filter: Some("EventLog in (\"System\", \"Application\", \"Setup\")"),
        note: "The System, Application and Setup channels.",
        ..source(
            "Windows Event Logs",
            D::WindowsEventLogs,
            Windows,
            CollectionOnly,
            CollectionOnly,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::CustomLog { os: Windows },
        dcr: target(DcrSourceKind::LogFiles, "Custom-*"),
        legacy_table: Some(TableRef::CustomTable),
        ama_table: Some(TableRef::CustomTable),
        note: "Needs a data collection endpoint and the _CL table; MMA cannot write to the table once AMA has.",
        ..source(
            "Custom logs (text)",
            D::WindowsCustomLogs,
            Windows,
            CollectionOnly,
            CollectionOnly,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::IisLogs,
        dcr: target(DcrSourceKind::IisLogs, "Microsoft-W3CIISLog"),
        legacy_table: table("W3CIISLog"),
        ama_table: table("W3CIISLog"),
        note: "AMA fills sSiteName only when the W3C field s-sitename is enabled.",
        ..source(
            "IIS logs",
            D::IisLogs,
            Windows,
            CollectionOnly,
            CollectionOnly,
        )
    },
    capability(
        "Multi-homing",
        Capability::MultiHoming,
        Windows,
        None,
        CollectionOnly,
        CollectionOnly,
        "One agent sending to several workspaces.",
    ),
    CatalogRow {
        legacy_setting: LegacySetting::WindowsEventChannels {
            channels: ChannelClass::ApplicationAndService,
        },
        dcr: target(DcrSourceKind::WindowsEventLogs, "Microsoft-Event"),
        legacy_table: table("Event"),
        ama_table: table("Event"),
        proof_filter: Some(
            "EventLog !in (\"System\", \"Application\", \"Setup\", \"Microsoft-Windows-Sysmon/Operational\")",
        ),
        note: "Every WindowsEvent channel other than System, Application, Setup and Sysmon.",
        ..source(
            "Application and service logs",
            D::WindowsApplicationServiceLogs,
            Windows,
            Unsupported,
            CollectionOnly,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::WindowsEventChannels {
            channels: ChannelClass::Sysmon,
        },
        dcr: target(DcrSourceKind::WindowsEventLogs, "Microsoft-Event"),
        legacy_table: table("Event"),
        ama_table: table("Event"),
        proof_filter: Some("EventLog == \"Microsoft-Windows-Sysmon/Operational\""),
        note: "The Microsoft-Windows-Sysmon/Operational channel.",
        ..source(
            "Sysmon",
            D::WindowsSysmon,
            Windows,
            CollectionOnly,
            CollectionOnly,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::Solution {
            name: "DnsAnalytics",
        },
        dcr: target(DcrSourceKind::Extensions, "Microsoft-ASimDnsActivityLogs"),
        legacy_table: table("DnsEvents"),
        ama_table: table("ASimDnsActivityLogs"),
        preview: true,
        note: "Legacy: DNS Analytics solution (DnsEvents); AMA: MicrosoftDnsAgent extension (ASimDnsActivityLogs).",
        ..source("DNS logs", D::WindowsDnsLogs, Windows, Connector, Connector)
    },
    CatalogRow {
        legacy_setting: LegacySetting::LinuxSyslogFacilities,
        dcr: target(DcrSourceKind::Syslog, "Microsoft-Syslog"),
        legacy_table: table("Syslog"),
        ama_table: table("Syslog"),
        proof_filter: Some("ProcessName != \"sysmon\""),
        note: "Keep CEF on facilities that Syslog does not collect, or events land twice.",
        ..source("Syslog", D::LinuxSyslog, Linux, CollectionOnly, Connector)
    },
    CatalogRow {
        legacy_setting: LegacySetting::MachineLocal {
            what: "the omsagent CEF listener (port 25226) the CEF installer script configures on the forwarder",
        },
        dcr: target(DcrSourceKind::Syslog, "Microsoft-CommonSecurityLog"),
        legacy_table: table("CommonSecurityLog"),
        ama_table: table("CommonSecurityLog"),
        note: "Forwarder machines only.",
        ..source(
            "Common Event Format (CEF)",
            D::LinuxCef,
            Linux,
            Connector,
            Connector,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::LinuxSyslogFacility { facility: "user" },
        dcr: target(DcrSourceKind::Syslog, "Microsoft-Syslog"),
        legacy_table: table("Syslog"),
        ama_table: table("Syslog"),
        proof_filter: Some("ProcessName == \"sysmon\""),
        note: "Sysmon for Linux logs to syslog (facility user): it shares the legacy LinuxSyslog switch.",
        ..source(
            "Sysmon",
            D::LinuxSysmon,
            Linux,
            CollectionOnly,
            CollectionOnly,
        )
    },
    CatalogRow {
        legacy_setting: LegacySetting::CustomLog { os: Linux },
        dcr: target(DcrSourceKind::LogFiles, "Custom-*"),
        legacy_table: Some(TableRef::CustomTable),
        ama_table: Some(TableRef::CustomTable),
        note: "Needs a data collection endpoint and the _CL table; MMA cannot write to the table once AMA has.",
        ..source(
            "Custom logs (text)",
            D::LinuxCustomLogs,
            Linux,
            CollectionOnly,
            CollectionOnly,
        )
    },
    capability(
        "Multi-homing",
        Capability::MultiHoming,
        Linux,
        None,
        CollectionOnly,
        Unsupported,
        "OMS cannot send to several workspaces; AMA can.",
    ),
    CatalogRow {
        legacy_setting: LegacySetting::LinuxPerformanceObject,
        dcr: target(DcrSourceKind::PerformanceCounters, "Microsoft-Perf"),
        legacy_table: table("Perf"),
        ama_table: table("Perf"),
        note: "Not a seed row (Azure Monitor's migration guide covers it); Perf is shared with Windows.",
        ..source(
            "Performance counters (Linux)",
            D::LinuxPerformanceCounters,
            Linux,
            CollectionOnly,
            CollectionOnly,
        )
    },
];

/// A plan's change to a row: AMA (or the legacy agent) has gained or lost a source since the seed.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogOverride {
    /// A data source type (e.g. `WindowsFirewallLogs`) or a capability (`SecurityEventIdFiltering`,
    /// `EventIdFiltering`, `MultiHoming`, applied to both OS rows).
    #[serde(rename = "type")]
    pub row_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ama_support: Option<Support>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_support: Option<Support>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "catalogOverrides[{index}].type: unknown data source type {name:?}; use one of {valid}"
    )]
    UnknownType {
        index: usize,
        name: String,
        valid: String,
    },
    #[error(
        "catalogOverrides[{index}] ({name}): sets neither amaSupport nor legacySupport; set at least one or remove the entry"
    )]
    EmptyOverride { index: usize, name: String },
    #[error(
        "catalogOverrides[{index}] ({name}): the row is already overridden by catalogOverrides[{first}]; merge the two entries"
    )]
    DuplicateOverride {
        index: usize,
        first: usize,
        name: String,
    },
}

/// The catalog a plan works with: the built-in rows with the plan's overrides applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Catalog {
    rows: Vec<CatalogRow>,
}

impl Catalog {
    /// The seed's tables as they are.
    pub fn builtin() -> Self {
        Self {
            rows: BUILTIN_ROWS.to_vec(),
        }
    }

    /// The built-in tables with `overrides` applied; every override is validated.
    pub fn with_overrides(overrides: &[CatalogOverride]) -> Result<Self, CatalogError> {
        let mut catalog = Self::builtin();
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (index, o) in overrides.iter().enumerate() {
            let name = o.row_type.trim();
            let source = DataSourceType::parse(name);
            let cap = [
                Capability::SecurityEventIdFiltering,
                Capability::EventIdFiltering,
                Capability::MultiHoming,
            ]
            .into_iter()
            .find(|c| c.as_str() == name);
            if source.is_none() && cap.is_none() {
                return Err(CatalogError::UnknownType {
                    index,
                    name: o.row_type.clone(),
                    valid: valid_override_names(),
                });
            }
            if o.ama_support.is_none() && o.legacy_support.is_none() {
                return Err(CatalogError::EmptyOverride {
                    index,
                    name: name.to_string(),
                });
            }
            if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                return Err(CatalogError::DuplicateOverride {
                    index,
                    first: *first,
                    name: name.to_string(),
                });
            }
            seen.push((name.to_string(), index));
            for row in catalog.rows.iter_mut().filter(|r| match (source, cap) {
                (Some(t), _) => r.kind == RowKind::DataSource && r.data_source == Some(t),
                (None, Some(c)) => r.capability == Some(c),
                _ => false,
            }) {
                if let Some(s) = o.ama_support {
                    row.ama = s;
                }
                if let Some(s) = o.legacy_support {
                    row.legacy = s;
                }
            }
        }
        Ok(catalog)
    }

    /// The data-source row of `t` (every `DataSourceType` has exactly one).
    pub fn row(&self, t: DataSourceType) -> &CatalogRow {
        // Every DataSourceType has a row (tested), so the fallback is unreachable in practice;
        // it returns the first row rather than panicking.
        self.rows
            .iter()
            .find(|r| r.kind == RowKind::DataSource && r.data_source == Some(t))
            .unwrap_or(&self.rows[0])
    }

    /// Every row, in the seed's order.
    pub fn rows(&self) -> &[CatalogRow] {
        &self.rows
    }

    /// The capability row for `c` on `os`, if the seed has one.
    pub fn capability(&self, c: Capability, os: OsFamily) -> Option<&CatalogRow> {
        self.rows
            .iter()
            .find(|r| r.capability == Some(c) && r.os == os)
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::builtin()
    }
}

fn valid_override_names() -> String {
    let mut names: Vec<&str> = DataSourceType::ALL.iter().map(|t| t.as_str()).collect();
    names.extend([
        "SecurityEventIdFiltering",
        "EventIdFiltering",
        "MultiHoming",
    ]);
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_source_type_has_exactly_one_row_with_its_os() {
        let c = Catalog::builtin();
        for t in DataSourceType::ALL {
            let rows: Vec<_> = c
                .rows()
                .iter()
                .filter(|r| r.kind == RowKind::DataSource && r.data_source == Some(t))
                .collect();
            assert_eq!(rows.len(), 1, "{t}");
            assert_eq!(c.row(t).os, t.os(), "{t}");
            assert!(c.row(t).dcr.is_some(), "{t}");
            assert!(c.row(t).ama_table.is_some(), "{t}");
        }
        let windows = c
            .rows()
            .iter()
            .filter(|r| r.os == OsFamily::Windows)
            .count();
        let linux = c.rows().iter().filter(|r| r.os == OsFamily::Linux).count();
        assert_eq!(
            (windows, linux),
            (13, 6),
            "13 Windows seed rows, 5 Linux + Linux perf"
        );
    }

    #[test]
    fn seed_support_is_as_stated() {
        let c = Catalog::builtin();
        let s = |t| (c.row(t).ama, c.row(t).legacy);
        assert_eq!(s(D::WindowsSecurityEvents), (Connector, Connector));
        assert_eq!(s(D::WindowsForwardedEvents), (Connector, Unsupported));
        assert_eq!(s(D::WindowsFirewallLogs), (Unsupported, Connector));
        assert_eq!(
            s(D::WindowsApplicationServiceLogs),
            (Unsupported, CollectionOnly)
        );
        assert_eq!(s(D::LinuxSyslog), (CollectionOnly, Connector));
        assert_eq!(s(D::LinuxCef), (Connector, Connector));
        assert!(c.row(D::WindowsDnsLogs).preview);
        let mh = c
            .capability(Capability::MultiHoming, OsFamily::Linux)
            .unwrap();
        assert_eq!((mh.ama, mh.legacy), (CollectionOnly, Unsupported));
        let f = c
            .capability(Capability::SecurityEventIdFiltering, OsFamily::Windows)
            .unwrap();
        assert_eq!(f.data_source, Some(D::WindowsSecurityEvents));
        assert_eq!(f.kind, RowKind::Capability);
    }

    #[test]
    fn proof_queries_follow_the_contract_tables() {
        let c = Catalog::builtin();
        assert_eq!(
            c.row(D::WindowsSecurityEvents)
                .proof_query(15, None)
                .unwrap(),
            "SecurityEvent | where TimeGenerated > ago(15m) | summarize count(), max(TimeGenerated) by Computer, _ResourceId"
        );
        assert_eq!(
            c.row(D::LinuxSysmon).proof_query(30, None).unwrap(),
            "Syslog | where TimeGenerated > ago(30m) and ProcessName == \"sysmon\" | summarize count(), max(TimeGenerated) by Computer, _ResourceId"
        );
        let dns = c.row(D::WindowsDnsLogs);
        assert!(
            dns.proof_query(15, None)
                .unwrap()
                .starts_with("ASimDnsActivityLogs |")
        );
        assert!(
            dns.legacy_proof_query(15, None)
                .unwrap()
                .starts_with("DnsEvents |")
        );
        let custom = c.row(D::LinuxCustomLogs);
        assert_eq!(custom.proof_query(15, None), None);
        assert!(
            custom
                .proof_query(15, Some("App_CL"))
                .unwrap()
                .starts_with("App_CL |")
        );
    }

    #[test]
    fn overrides_change_support_and_reject_bad_entries() {
        let c = Catalog::with_overrides(&[CatalogOverride {
            row_type: "WindowsFirewallLogs".into(),
            ama_support: Some(CollectionOnly),
            legacy_support: None,
        }])
        .unwrap();
        assert_eq!(c.row(D::WindowsFirewallLogs).ama, CollectionOnly);
        assert_eq!(c.row(D::WindowsFirewallLogs).legacy, Connector);

        let c = Catalog::with_overrides(&[CatalogOverride {
            row_type: "MultiHoming".into(),
            legacy_support: Some(CollectionOnly),
            ..Default::default()
        }])
        .unwrap();
        let mh = c
            .capability(Capability::MultiHoming, OsFamily::Linux)
            .unwrap();
        assert_eq!(mh.legacy, CollectionOnly);

        let err = Catalog::with_overrides(&[
            CatalogOverride {
                row_type: "IisLogs".into(),
                ama_support: Some(Connector),
                ..Default::default()
            },
            CatalogOverride {
                row_type: "WindowsFirewallLog".into(),
                ama_support: Some(CollectionOnly),
                ..Default::default()
            },
        ])
        .unwrap_err();
        assert!(matches!(err, CatalogError::UnknownType { index: 1, .. }));
        let msg = err.to_string();
        assert!(msg.contains("catalogOverrides[1].type"), "{msg}");
        assert!(
            msg.contains("WindowsFirewallLogs"),
            "lists valid names: {msg}"
        );

        let err = Catalog::with_overrides(&[CatalogOverride {
            row_type: "IisLogs".into(),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(matches!(err, CatalogError::EmptyOverride { index: 0, .. }));
    }

    #[test]
    fn override_deserializes_from_plan_json() {
        let o: CatalogOverride = serde_json::from_value(
            serde_json::json!({"type": "WindowsApplicationServiceLogs", "amaSupport": "CollectionOnly"}),
        )
        .unwrap();
        assert_eq!(o.row_type, "WindowsApplicationServiceLogs");
        assert_eq!(o.ama_support, Some(CollectionOnly));
    }

    #[test]
    fn channels_are_classified_into_one_source_each() {
        assert_eq!(
            ChannelClass::of("system").data_source(),
            D::WindowsEventLogs
        );
        assert_eq!(
            ChannelClass::of(SYSMON_CHANNEL).data_source(),
            D::WindowsSysmon
        );
        assert_eq!(
            ChannelClass::of("ForwardedEvents").data_source(),
            D::WindowsForwardedEvents
        );
        assert_eq!(
            ChannelClass::of("Microsoft-Windows-TaskScheduler/Operational").data_source(),
            D::WindowsApplicationServiceLogs
        );
    }
}
