//! The rows a workspace holds, derived from the ledger: one row group per (machine, stream, agent)
//! interval, laid out in the destination tables of contracts §1.

use std::collections::BTreeMap;

use crate::catalog::{DataSourceType, OsFamily};
use crate::inventory::{CATEGORY_AMA, CATEGORY_LEGACY};

use super::clock::SimMillis;
use super::kql::RowGroup;
use super::ledger::{Agent, Stream};
use super::world::World;

const BASE: [&str; 2] = ["Computer", "_ResourceId"];

/// String columns of every table the simulator serves (TimeGenerated is implicit).
pub fn schema(table: &str) -> Option<Vec<&'static str>> {
    let extra: &[&'static str] = match table {
        "Heartbeat" => &["Category", "OSType", "Version", "ComputerEnvironment"],
        "Event" => &["EventLog"],
        "Syslog" => &["ProcessName", "Facility"],
        "Perf" => &["ObjectName"],
        "SecurityEvent"
        | "WindowsEvent"
        | "WindowsFirewall"
        | "W3CIISLog"
        | "DnsEvents"
        | "ASimDnsActivityLogs"
        | "CommonSecurityLog"
        | "AppLogs_CL" => &[],
        _ => return None,
    };
    Some(BASE.iter().chain(extra).copied().collect())
}

/// Table and distinguishing columns of a data source as `agent` delivers it.
fn layout(ds: DataSourceType, agent: Agent) -> (&'static str, Vec<(&'static str, &'static str)>) {
    use DataSourceType as D;
    match ds {
        D::WindowsSecurityEvents => ("SecurityEvent", vec![]),
        D::WindowsEventLogs => ("Event", vec![("EventLog", "System")]),
        D::WindowsApplicationServiceLogs => (
            "Event",
            vec![("EventLog", "Microsoft-Windows-TaskScheduler/Operational")],
        ),
        D::WindowsSysmon => (
            "Event",
            vec![("EventLog", "Microsoft-Windows-Sysmon/Operational")],
        ),
        D::WindowsForwardedEvents => ("WindowsEvent", vec![]),
        D::WindowsFirewallLogs => ("WindowsFirewall", vec![]),
        D::WindowsPerformanceCounters => ("Perf", vec![("ObjectName", "Processor")]),
        D::LinuxPerformanceCounters => ("Perf", vec![("ObjectName", "Memory")]),
        D::IisLogs => ("W3CIISLog", vec![]),
        D::WindowsDnsLogs => (
            if agent == Agent::Legacy {
                "DnsEvents"
            } else {
                "ASimDnsActivityLogs"
            },
            vec![],
        ),
        D::LinuxSyslog => (
            "Syslog",
            vec![("ProcessName", "sshd"), ("Facility", "auth")],
        ),
        D::LinuxSysmon => (
            "Syslog",
            vec![("ProcessName", "sysmon"), ("Facility", "user")],
        ),
        D::LinuxCef => ("CommonSecurityLog", vec![]),
        D::WindowsCustomLogs | D::LinuxCustomLogs => ("AppLogs_CL", vec![]),
    }
}

pub fn row_groups(world: &World, ws: usize, now: SimMillis) -> Vec<RowGroup> {
    let mut out = Vec::new();
    for iv in world.ledger.intervals(ws, now) {
        let m = &world.machines[iv.machine];
        let mut cols = BTreeMap::new();
        cols.insert("Computer".to_string(), m.computer().to_string());
        cols.insert(
            "_ResourceId".to_string(),
            m.arm_id()
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default(),
        );
        let table = match iv.key.stream {
            Stream::Heartbeat => {
                let (cat, ver) = match iv.key.agent {
                    Agent::Legacy => (CATEGORY_LEGACY, "10.20.18053.0"),
                    Agent::Ama => (CATEGORY_AMA, "1.35.1"),
                };
                cols.insert("Category".into(), cat.into());
                cols.insert("Version".into(), ver.into());
                cols.insert(
                    "OSType".into(),
                    if m.os == OsFamily::Windows {
                        "Windows"
                    } else {
                        "Linux"
                    }
                    .into(),
                );
                cols.insert(
                    "ComputerEnvironment".into(),
                    if m.kind == Some(crate::inventory::MachineKind::AzureVM) {
                        "Azure"
                    } else {
                        "Non-Azure"
                    }
                    .into(),
                );
                "Heartbeat"
            }
            Stream::Data(ds) => {
                let (table, extra) = layout(ds, iv.key.agent);
                for (k, v) in extra {
                    cols.insert(k.into(), v.into());
                }
                table
            }
        };
        let first = super::clock::ceil_minute(iv.start);
        let end = super::clock::ceil_minute(iv.end);
        if first < end {
            out.push(RowGroup {
                table: table.into(),
                cols,
                first,
                end,
            });
        }
    }
    out
}
