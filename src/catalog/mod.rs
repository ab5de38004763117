//! The data-source catalog: the seed article's gap tables as data (design.md §4).
//!
//! `DataSourceType` names every data source a plan can move. It is the key of the catalog, of the
//! planner's per-(machine, data source) assignment, and of the simulator's ingestion ledger.

pub mod convert;
pub mod dcr;
pub mod legacy;
pub mod settings;
pub mod table;
pub mod xpath;

pub use legacy::{LegacyConfig, LegacyConfigError, LegacySecurityTier, LegacyState};
pub use settings::DataSourceSettings;
pub use table::{Catalog, CatalogError, CatalogOverride, CatalogRow, Support};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Operating system family a data source applies to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum OsFamily {
    Windows,
    Linux,
}

impl OsFamily {
    /// Parse the `osType` Azure reports (`Windows`, `Linux`, any case).
    pub fn from_azure(os_type: &str) -> Option<Self> {
        if os_type.eq_ignore_ascii_case("windows") {
            Some(Self::Windows)
        } else if os_type.eq_ignore_ascii_case("linux") {
            Some(Self::Linux)
        } else {
            None
        }
    }
}

/// A data source a plan can assign to an agent. One variant per data-source row of the seed's
/// Windows and Linux gap tables (capability rows such as multi-homing or event-ID filtering are
/// catalog rows too, but they are settings of these sources, not sources of their own).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum DataSourceType {
    /// Windows Security Events (Sentinel connector; legacy tier All/Common/Minimal/None).
    WindowsSecurityEvents,
    /// Windows event logs (System, Application, … channels) into the `Event` table.
    WindowsEventLogs,
    /// Windows Event Forwarding (the `ForwardedEvents` channel of a collector).
    WindowsForwardedEvents,
    /// Windows Firewall logs.
    WindowsFirewallLogs,
    /// Windows performance counters.
    WindowsPerformanceCounters,
    /// Custom text logs on Windows.
    WindowsCustomLogs,
    /// IIS logs.
    IisLogs,
    /// Application and service logs.
    WindowsApplicationServiceLogs,
    /// Sysmon on Windows (`Microsoft-Windows-Sysmon/Operational`).
    WindowsSysmon,
    /// DNS server logs.
    WindowsDnsLogs,
    /// Linux Syslog.
    LinuxSyslog,
    /// Common Event Format through a Linux forwarder.
    LinuxCef,
    /// Sysmon for Linux (delivered through syslog).
    LinuxSysmon,
    /// Custom text logs on Linux.
    LinuxCustomLogs,
    /// Linux performance counters (not a seed row; Azure Monitor's migration guide covers it).
    LinuxPerformanceCounters,
}

impl DataSourceType {
    pub const ALL: [DataSourceType; 15] = [
        Self::WindowsSecurityEvents,
        Self::WindowsEventLogs,
        Self::WindowsForwardedEvents,
        Self::WindowsFirewallLogs,
        Self::WindowsPerformanceCounters,
        Self::WindowsCustomLogs,
        Self::IisLogs,
        Self::WindowsApplicationServiceLogs,
        Self::WindowsSysmon,
        Self::WindowsDnsLogs,
        Self::LinuxSyslog,
        Self::LinuxCef,
        Self::LinuxSysmon,
        Self::LinuxCustomLogs,
        Self::LinuxPerformanceCounters,
    ];

    /// The OS this source applies to.
    pub fn os(self) -> OsFamily {
        match self {
            Self::LinuxSyslog
            | Self::LinuxCef
            | Self::LinuxSysmon
            | Self::LinuxCustomLogs
            | Self::LinuxPerformanceCounters => OsFamily::Linux,
            _ => OsFamily::Windows,
        }
    }

    /// The stable name used in YAML, JSON, the ledger and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WindowsSecurityEvents => "WindowsSecurityEvents",
            Self::WindowsEventLogs => "WindowsEventLogs",
            Self::WindowsForwardedEvents => "WindowsForwardedEvents",
            Self::WindowsFirewallLogs => "WindowsFirewallLogs",
            Self::WindowsPerformanceCounters => "WindowsPerformanceCounters",
            Self::WindowsCustomLogs => "WindowsCustomLogs",
            Self::IisLogs => "IisLogs",
            Self::WindowsApplicationServiceLogs => "WindowsApplicationServiceLogs",
            Self::WindowsSysmon => "WindowsSysmon",
            Self::WindowsDnsLogs => "WindowsDnsLogs",
            Self::LinuxSyslog => "LinuxSyslog",
            Self::LinuxCef => "LinuxCef",
            Self::LinuxSysmon => "LinuxSysmon",
            Self::LinuxCustomLogs => "LinuxCustomLogs",
            Self::LinuxPerformanceCounters => "LinuxPerformanceCounters",
        }
    }

    /// Parse a name as written in a plan; `None` for an unknown type.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for DataSourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for t in DataSourceType::ALL {
            assert_eq!(DataSourceType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(DataSourceType::parse("WindowsSecurityEvent"), None);
    }
}
