//! DCR generation: the AMA data sources of a plan (type + settings) become Data Collection Rules
//! within the DCR limits, plus the requirements the user must meet (endpoint, custom table, region).

use std::collections::BTreeMap;

use serde::Serialize;

use super::settings::{DataSourceSettings, EventLevel, SecurityEventSet, SyslogLevel};
use super::table::{Catalog, ChannelClass, DcrSourceKind, FORWARDED_CHANNEL, SYSMON_CHANNEL};
use super::xpath::{
    self, APPLOCKER_EXE_DLL_CHANNEL, APPLOCKER_MSI_SCRIPT_CHANNEL, SECURITY_CHANNEL,
};
use super::{DataSourceType, OsFamily};
use crate::azure::ResourceId;

mod pack;
mod select;

use crate::azure::dcr::{
    ColumnDefinition, DataCollectionRule, DataFlow, DcrDataSources, DcrDestinations, DcrProperties,
    ExtensionDataSource, IisLogsDataSource, LogAnalyticsDestination, LogFileSettings,
    LogFileTextSettings, LogFilesDataSource, PerfCounterDataSource, StreamDeclaration,
    SyslogDataSource, WindowsEventLogDataSource, WindowsFirewallLogsDataSource,
};
use pack::pack;
pub use select::valid_table_name;
use select::*;

/// DCR limits (azure-api.md §3.5).
pub const MAX_DATA_SOURCES_PER_DCR: usize = 10;
pub const MAX_STREAMS_PER_DCR: usize = 10;
pub const MAX_FLOWS_PER_DCR: usize = 10;
pub const MAX_XPATHS_PER_SOURCE: usize = 100;
pub const MAX_COUNTERS_PER_SOURCE: usize = 100;
pub const MAX_FACILITIES_PER_SOURCE: usize = 20;

/// Destination name used in every generated DCR.
pub const DESTINATION_NAME: &str = "workspace";

/// The syslog facilities a DCR accepts (SPEC-DCR enum).
pub const SYSLOG_FACILITIES: [&str; 27] = [
    "*", "alert", "audit", "auth", "authpriv", "clock", "cron", "daemon", "ftp", "kern", "local0",
    "local1", "local2", "local3", "local4", "local5", "local6", "local7", "lpr", "mail", "mark",
    "news", "nopri", "ntp", "syslog", "user", "uucp",
];

const DEFAULT_SYSLOG_FACILITIES: [&str; 8] = [
    "auth", "authpriv", "cron", "daemon", "kern", "mail", "syslog", "user",
];
const DEFAULT_CEF_FACILITIES: [&str; 1] = ["local4"];
const DEFAULT_SYSMON_FACILITIES: [&str; 1] = ["user"];
const DEFAULT_WINDOWS_COUNTERS: [&str; 4] = [
    "\\Processor(_Total)\\% Processor Time",
    "\\Memory\\Available MBytes",
    "\\LogicalDisk(_Total)\\% Free Space",
    "\\Network Interface(*)\\Bytes Total/sec",
];
const DEFAULT_LINUX_COUNTERS: [&str; 4] = [
    "\\Processor(*)\\% Processor Time",
    "\\Memory\\% Used Memory",
    "\\Logical Disk(*)\\% Used Space",
    "\\Network(*)\\Total Bytes",
];
const DEFAULT_SAMPLING_SECONDS: u32 = 60;

/// One data source a plan sends through AMA.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRequest {
    pub data_source: DataSourceType,
    pub settings: DataSourceSettings,
    /// Exact syslog levels, overriding `settings.minimumLevel` (the converter keeps a legacy
    /// facility's non-contiguous severities this way; plans use `minimumLevel`).
    pub exact_syslog_levels: Option<Vec<SyslogLevel>>,
}

impl SourceRequest {
    pub fn new(data_source: DataSourceType, settings: DataSourceSettings) -> Self {
        Self {
            data_source,
            settings,
            exact_syslog_levels: None,
        }
    }

    /// Collect exactly these syslog levels.
    pub fn with_exact_syslog_levels(mut self, levels: Vec<SyslogLevel>) -> Self {
        self.exact_syslog_levels = Some(levels);
        self
    }
}

/// Where the DCRs go.
#[derive(Clone, Debug, PartialEq)]
pub struct DcrContext {
    /// Used in DCR names (`dcr-<plan>-<os>-<n>`) and tags.
    pub plan_name: String,
    pub workspace_resource_id: String,
    /// Region of the DCRs.
    pub location: String,
    /// The workspace's region when known: it must equal `location`.
    pub workspace_location: Option<String>,
}

/// A generated rule with what it covers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedDcr {
    /// Resource name (the PUT path's last segment).
    pub name: String,
    pub os: OsFamily,
    pub data_sources: Vec<DataSourceType>,
    pub rule: DataCollectionRule,
}

/// Something the user must do or know before the DCRs work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    pub kind: RequirementKind,
    pub data_source: Option<DataSourceType>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RequirementKind {
    /// The DCR must be in the workspace's region.
    SameRegion,
    /// A data collection endpoint in the workspace's region.
    DataCollectionEndpoint,
    /// A custom `_CL` table must exist before AMA sends to it.
    CustomTable,
    /// Information that changes what is collected.
    Note,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub struct DcrSet {
    pub rules: Vec<GeneratedDcr>,
    pub requirements: Vec<Requirement>,
}

/// What went wrong, in which request and field, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}; {fix}")]
pub struct DcrError {
    pub kind: DcrErrorKind,
    /// e.g. `dataSources[2] (LinuxCustomLogs).settings.dataCollectionEndpointId`.
    pub location: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DcrErrorKind {
    UnsupportedByAma,
    MissingSetting,
    InvalidSetting,
    InvalidXPath,
    MissingDataCollectionEndpoint,
    InvalidTableName,
    FacilityOverlap,
    InvalidWorkspace,
    RegionMismatch,
}

/// One DCR data source with its streams, flows and DCR-level needs; packed into rules.
#[derive(Clone, Debug)]
pub(super) struct Unit {
    pub(super) os: OsFamily,
    pub(super) data_source: DataSourceType,
    pub(super) entry: Entry,
    pub(super) flows: Vec<DataFlow>,
    pub(super) declarations: BTreeMap<String, StreamDeclaration>,
    pub(super) endpoint: Option<String>,
}

#[derive(Clone, Debug)]
pub(super) enum Entry {
    Event(WindowsEventLogDataSource),
    Syslog(SyslogDataSource),
    Perf(PerfCounterDataSource),
    LogFile(LogFilesDataSource),
    Iis(IisLogsDataSource),
    Firewall(WindowsFirewallLogsDataSource),
    Extension(ExtensionDataSource),
}

impl Entry {
    pub(super) fn set_name(&mut self, name: String) {
        match self {
            Entry::Event(e) => e.name = name,
            Entry::Syslog(e) => e.name = name,
            Entry::Perf(e) => e.name = name,
            Entry::LogFile(e) => e.name = name,
            Entry::Iis(e) => e.name = name,
            Entry::Firewall(e) => e.name = name,
            Entry::Extension(e) => e.name = name,
        }
    }

    pub(super) fn push_into(self, d: &mut DcrDataSources) {
        match self {
            Entry::Event(e) => d.windows_event_logs.push(e),
            Entry::Syslog(e) => d.syslog.push(e),
            Entry::Perf(e) => d.performance_counters.push(e),
            Entry::LogFile(e) => d.log_files.push(e),
            Entry::Iis(e) => d.iis_logs.push(e),
            Entry::Firewall(e) => d.windows_firewall_logs.push(e),
            Entry::Extension(e) => d.extensions.push(e),
        }
    }
}

pub(super) struct Ctx<'a> {
    pub(super) index: usize,
    pub(super) t: DataSourceType,
    pub(super) s: &'a DataSourceSettings,
    pub(super) exact_levels: Option<&'a [SyslogLevel]>,
}

impl Ctx<'_> {
    pub(super) fn at(&self, field: &str) -> String {
        if field.is_empty() {
            format!("dataSources[{}] ({})", self.index, self.t)
        } else {
            format!("dataSources[{}] ({}).settings.{field}", self.index, self.t)
        }
    }

    pub(super) fn err(
        &self,
        kind: DcrErrorKind,
        field: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> DcrError {
        DcrError {
            kind,
            location: self.at(field),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(super) fn simple_flow(&self, stream: &str) -> Vec<DataFlow> {
        vec![DataFlow {
            streams: vec![stream.to_string()],
            destinations: vec![DESTINATION_NAME.to_string()],
            ..Default::default()
        }]
    }

    pub(super) fn unit(&self, entry: Entry, stream: &str) -> Unit {
        Unit {
            os: self.t.os(),
            data_source: self.t,
            entry,
            flows: self.simple_flow(stream),
            declarations: BTreeMap::new(),
            endpoint: None,
        }
    }
}

/// Generate the DCRs for `sources` (the plan's AMA data sources, in plan order).
pub fn generate(
    catalog: &Catalog,
    ctx: &DcrContext,
    sources: &[SourceRequest],
) -> Result<DcrSet, DcrError> {
    let workspace = ResourceId::parse(&ctx.workspace_resource_id).map_err(|e| DcrError {
        kind: DcrErrorKind::InvalidWorkspace,
        location: "workspaceResourceId".into(),
        problem: e.to_string(),
        fix: "give the full ID of the Log Analytics workspace".into(),
    })?;
    if !workspace.is_type("Microsoft.OperationalInsights/workspaces") {
        return Err(DcrError {
            kind: DcrErrorKind::InvalidWorkspace,
            location: "workspaceResourceId".into(),
            problem: format!(
                "{} is not a Microsoft.OperationalInsights/workspaces ID",
                ctx.workspace_resource_id
            ),
            fix: "give the ID of the Log Analytics workspace the data goes to".into(),
        });
    }
    let norm = |r: &str| r.to_ascii_lowercase().replace(' ', "");
    if ctx.location.trim().is_empty() {
        return Err(DcrError {
            kind: DcrErrorKind::RegionMismatch,
            location: "location".into(),
            problem: "the DCR region is empty".into(),
            fix: "set it to the workspace's region".into(),
        });
    }
    let mut requirements = Vec::new();
    match &ctx.workspace_location {
        Some(ws) if norm(ws) != norm(&ctx.location) => {
            return Err(DcrError {
                kind: DcrErrorKind::RegionMismatch,
                location: "location".into(),
                problem: format!(
                    "DCRs in {} cannot send to a workspace in {ws}",
                    ctx.location
                ),
                fix: format!("create the DCRs in {ws}, the workspace's region"),
            });
        }
        Some(_) => {}
        None => requirements.push(Requirement {
            kind: RequirementKind::SameRegion,
            data_source: None,
            message: format!(
                "the DCRs are created in {}: this must be the region of workspace {}",
                ctx.location,
                workspace.name()
            ),
        }),
    }

    let mut units = Vec::new();
    let mut syslog_facilities: Vec<(usize, DataSourceType, Vec<String>)> = Vec::new();
    for (index, req) in sources.iter().enumerate() {
        let t = req.data_source;
        let c = Ctx {
            index,
            t,
            s: &req.settings,
            exact_levels: req.exact_syslog_levels.as_deref(),
        };
        let row = catalog.row(t);
        if !row.ama.is_supported() {
            return Err(c.err(
                DcrErrorKind::UnsupportedByAma,
                "",
                format!("the catalog lists {} ({}) as unsupported by AMA", row.seed_label, t),
                format!("keep it on the legacy agent, or add catalogOverrides: [{{type: {t}, amaSupport: CollectionOnly}}] if AMA collects it now"),
            ));
        }
        let stream = row.dcr.map(|d| d.stream).unwrap_or("Microsoft-Event");
        let kind = row.dcr.map(|d| d.kind);
        match kind {
            Some(DcrSourceKind::WindowsEventLogs) => {
                let queries = event_queries(&c)?;
                for chunk in queries.chunks(MAX_XPATHS_PER_SOURCE) {
                    units.push(c.unit(
                        Entry::Event(WindowsEventLogDataSource {
                            name: String::new(),
                            streams: vec![stream.into()],
                            x_path_queries: chunk.to_vec(),
                        }),
                        stream,
                    ));
                }
            }
            Some(DcrSourceKind::Syslog) => {
                let (facilities, levels) = syslog_selection(&c)?;
                syslog_facilities.push((index, t, facilities.clone()));
                for chunk in facilities.chunks(MAX_FACILITIES_PER_SOURCE) {
                    units.push(c.unit(
                        Entry::Syslog(SyslogDataSource {
                            name: String::new(),
                            streams: vec![stream.into()],
                            facility_names: chunk.to_vec(),
                            log_levels: levels.clone(),
                        }),
                        stream,
                    ));
                }
            }
            Some(DcrSourceKind::PerformanceCounters) => {
                let (counters, seconds) = perf_selection(&c)?;
                for chunk in counters.chunks(MAX_COUNTERS_PER_SOURCE) {
                    units.push(c.unit(
                        Entry::Perf(PerfCounterDataSource {
                            name: String::new(),
                            streams: vec![stream.into()],
                            sampling_frequency_in_seconds: seconds,
                            counter_specifiers: chunk.to_vec(),
                        }),
                        stream,
                    ));
                }
            }
            Some(DcrSourceKind::LogFiles) => {
                units.push(text_log_unit(&c, &mut requirements)?);
            }
            Some(DcrSourceKind::IisLogs) => {
                let dirs = non_empty_list(&c, "logDirectories", c.s.log_directories.as_deref())?;
                units.push(c.unit(
                    Entry::Iis(IisLogsDataSource {
                        name: String::new(),
                        streams: vec![stream.into()],
                        log_directories: dirs.unwrap_or_default(),
                    }),
                    stream,
                ));
                requirements.push(Requirement {
                    kind: RequirementKind::Note,
                    data_source: Some(t),
                    message: "enable the IIS W3C field s-sitename, or AMA leaves sSiteName empty in W3CIISLog".into(),
                });
            }
            Some(DcrSourceKind::WindowsFirewallLogs) => {
                let profiles = match &c.s.firewall_profiles {
                    Some(p) if p.is_empty() => {
                        return Err(c.err(
                            DcrErrorKind::InvalidSetting,
                            "firewallProfiles",
                            "is empty",
                            "list Domain, Private and/or Public, or omit it for all three",
                        ));
                    }
                    Some(p) => {
                        let mut v: Vec<String> = Vec::new();
                        for x in p {
                            if !v.iter().any(|y| y == x.as_str()) {
                                v.push(x.as_str().into());
                            }
                        }
                        v
                    }
                    None => vec!["Domain".into(), "Private".into(), "Public".into()],
                };
                units.push(c.unit(
                    Entry::Firewall(WindowsFirewallLogsDataSource {
                        name: String::new(),
                        streams: vec![stream.into()],
                        profile_filter: profiles,
                    }),
                    stream,
                ));
            }
            Some(DcrSourceKind::Extensions) => {
                units.push(c.unit(
                    Entry::Extension(ExtensionDataSource {
                        name: String::new(),
                        streams: vec![stream.into()],
                        extension_name: "MicrosoftDnsAgent".into(),
                        extension_settings: None,
                        input_data_sources: Vec::new(),
                    }),
                    stream,
                ));
                requirements.push(Requirement {
                    kind: RequirementKind::Note,
                    data_source: Some(t),
                    message: "DNS via AMA writes ASimDnsActivityLogs, not DnsEvents: update analytics rules that read DnsEvents".into(),
                });
            }
            None => {}
        }
    }
    check_syslog_overlap(&syslog_facilities, &mut units, &mut requirements)?;

    let rules = pack(ctx, &workspace, units);
    Ok(DcrSet {
        rules,
        requirements,
    })
}
