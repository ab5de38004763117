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
use crate::azure::dcr::{
    ColumnDefinition, DataCollectionRule, DataFlow, DcrDataSources, DcrDestinations, DcrProperties,
    ExtensionDataSource, IisLogsDataSource, LogAnalyticsDestination, LogFileSettings,
    LogFileTextSettings, LogFilesDataSource, PerfCounterDataSource, StreamDeclaration,
    SyslogDataSource, WindowsEventLogDataSource, WindowsFirewallLogsDataSource,
};

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
}

impl SourceRequest {
    pub fn new(data_source: DataSourceType, settings: DataSourceSettings) -> Self {
        Self {
            data_source,
            settings,
        }
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
struct Unit {
    os: OsFamily,
    data_source: DataSourceType,
    entry: Entry,
    flows: Vec<DataFlow>,
    declarations: BTreeMap<String, StreamDeclaration>,
    endpoint: Option<String>,
}

#[derive(Clone, Debug)]
enum Entry {
    Event(WindowsEventLogDataSource),
    Syslog(SyslogDataSource),
    Perf(PerfCounterDataSource),
    LogFile(LogFilesDataSource),
    Iis(IisLogsDataSource),
    Firewall(WindowsFirewallLogsDataSource),
    Extension(ExtensionDataSource),
}

impl Entry {
    fn set_name(&mut self, name: String) {
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

    fn push_into(self, d: &mut DcrDataSources) {
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

struct Ctx<'a> {
    index: usize,
    t: DataSourceType,
    s: &'a DataSourceSettings,
}

impl Ctx<'_> {
    fn at(&self, field: &str) -> String {
        if field.is_empty() {
            format!("dataSources[{}] ({})", self.index, self.t)
        } else {
            format!("dataSources[{}] ({}).settings.{field}", self.index, self.t)
        }
    }

    fn err(
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

    fn simple_flow(&self, stream: &str) -> Vec<DataFlow> {
        vec![DataFlow {
            streams: vec![stream.to_string()],
            destinations: vec![DESTINATION_NAME.to_string()],
            ..Default::default()
        }]
    }

    fn unit(&self, entry: Entry, stream: &str) -> Unit {
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

fn non_empty_list(
    c: &Ctx,
    field: &str,
    v: Option<&[String]>,
) -> Result<Option<Vec<String>>, DcrError> {
    match v {
        None => Ok(None),
        Some([]) => Err(c.err(
            DcrErrorKind::InvalidSetting,
            field,
            "is empty",
            format!("list at least one value or omit {field}"),
        )),
        Some(items) => {
            for (i, x) in items.iter().enumerate() {
                if x.trim().is_empty() {
                    return Err(c.err(
                        DcrErrorKind::InvalidSetting,
                        &format!("{field}[{i}]"),
                        "is blank",
                        "remove it or give a value",
                    ));
                }
            }
            Ok(Some(items.to_vec()))
        }
    }
}

/// Which data source a Windows channel's events belong to.
fn source_of_channel(channel: &str) -> DataSourceType {
    let c = channel.trim();
    if [
        SECURITY_CHANNEL,
        APPLOCKER_EXE_DLL_CHANNEL,
        APPLOCKER_MSI_SCRIPT_CHANNEL,
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(c))
    {
        DataSourceType::WindowsSecurityEvents
    } else {
        ChannelClass::of(c).data_source()
    }
}

fn validated_ids(c: &Ctx) -> Result<Vec<u32>, DcrError> {
    let mut out = Vec::new();
    for (i, id) in c.s.event_ids.iter().flatten().enumerate() {
        if *id > 65_535 {
            return Err(c.err(
                DcrErrorKind::InvalidSetting,
                &format!("eventIds[{i}]"),
                format!("{id} is not a Windows event ID"),
                "event IDs are 0..=65535",
            ));
        }
        if !out.contains(id) {
            out.push(*id);
        }
    }
    Ok(out)
}

/// Raw `xPathQueries`, validated, each on a channel of this data source.
fn raw_queries(c: &Ctx) -> Result<Vec<String>, DcrError> {
    let mut out = Vec::new();
    for (i, q) in c.s.x_path_queries.iter().flatten().enumerate() {
        let field = format!("xPathQueries[{i}]");
        let (channel, _) = xpath::validate_xpath(q).map_err(|p| {
            c.err(
                DcrErrorKind::InvalidXPath,
                &field,
                p,
                "write Channel!XPath, e.g. Security!*[System[(EventID=4624)]]",
            )
        })?;
        let owner = source_of_channel(channel);
        if owner != c.t {
            return Err(c.err(
                DcrErrorKind::InvalidXPath,
                &field,
                format!("channel {channel:?} belongs to {owner}, not {}", c.t),
                format!("move this query to the {owner} data source"),
            ));
        }
        out.push(q.clone());
    }
    Ok(out)
}

fn event_queries(c: &Ctx) -> Result<Vec<String>, DcrError> {
    use DataSourceType as D;
    if c.t == D::WindowsSecurityEvents {
        let set = c.s.security_event_set.unwrap_or(SecurityEventSet::Common);
        if set != SecurityEventSet::Custom {
            for (field, present) in [
                ("eventIds", c.s.event_ids.is_some()),
                ("xPathQueries", c.s.x_path_queries.is_some()),
            ] {
                if present {
                    return Err(c.err(
                        DcrErrorKind::InvalidSetting,
                        field,
                        format!("is only used with securityEventSet: Custom, not {set:?}"),
                        "set securityEventSet: Custom, or remove the field",
                    ));
                }
            }
            return Ok(xpath::tier_xpaths(set).unwrap_or_default());
        }
        let ids = validated_ids(c)?;
        let mut q = if ids.is_empty() {
            Vec::new()
        } else {
            xpath::security_event_id_xpaths(&ids)
        };
        q.extend(raw_queries(c)?);
        if q.is_empty() {
            return Err(c.err(DcrErrorKind::MissingSetting, "eventIds", "securityEventSet: Custom needs eventIds or xPathQueries", "list the event IDs (e.g. [4624, 4625]) or xPathQueries, or use securityEventSet: Common"));
        }
        return Ok(q);
    }
    let fixed: Option<&str> = match c.t {
        D::WindowsSysmon => Some(SYSMON_CHANNEL),
        D::WindowsForwardedEvents => Some(FORWARDED_CHANNEL),
        _ => None,
    };
    let channels: Vec<String> = match (fixed, &c.s.channels) {
        (Some(f), Some(list)) if !list.iter().all(|ch| ch.trim().eq_ignore_ascii_case(f)) => {
            return Err(c.err(
                DcrErrorKind::InvalidSetting,
                "channels",
                format!("{} always reads the {f} channel", c.t),
                "remove channels",
            ));
        }
        (Some(f), _) => vec![f.to_string()],
        (None, Some(list)) => list.clone(),
        (None, None) if c.t == D::WindowsEventLogs => vec!["System".into(), "Application".into()],
        (None, None) => {
            if c.s.x_path_queries.as_ref().is_some_and(|q| !q.is_empty()) {
                Vec::new()
            } else {
                return Err(c.err(
                    DcrErrorKind::MissingSetting,
                    "channels",
                    format!("{} needs the channels to collect", c.t),
                    "list them, e.g. channels: [Microsoft-Windows-TaskScheduler/Operational]",
                ));
            }
        }
    };
    for (i, ch) in channels.iter().enumerate() {
        let field = format!("channels[{i}]");
        if ch.trim().is_empty() || ch.contains('!') {
            return Err(c.err(
                DcrErrorKind::InvalidSetting,
                &field,
                format!("{ch:?} is not a channel name"),
                "give the event log name, e.g. System",
            ));
        }
        let owner = source_of_channel(ch);
        if owner != c.t {
            return Err(c.err(
                DcrErrorKind::InvalidSetting,
                &field,
                format!("channel {ch:?} belongs to {owner}, not {}", c.t),
                format!("list it under the {owner} data source"),
            ));
        }
    }
    let default_levels: &[EventLevel] = match c.t {
        D::WindowsEventLogs | D::WindowsApplicationServiceLogs => {
            &[EventLevel::Critical, EventLevel::Error, EventLevel::Warning]
        }
        _ => &[],
    };
    let mut levels: Vec<EventLevel> =
        c.s.event_levels
            .clone()
            .unwrap_or_else(|| default_levels.to_vec());
    levels.sort();
    levels.dedup();
    let ids = validated_ids(c)?;
    let mut q: Vec<String> = channels
        .iter()
        .flat_map(|ch| xpath::event_id_xpaths(ch.trim(), &ids, &levels))
        .collect();
    q.extend(raw_queries(c)?);
    Ok(q)
}

fn syslog_selection(c: &Ctx) -> Result<(Vec<String>, Vec<String>), DcrError> {
    let defaults: &[&str] = match c.t {
        DataSourceType::LinuxCef => &DEFAULT_CEF_FACILITIES,
        DataSourceType::LinuxSysmon => &DEFAULT_SYSMON_FACILITIES,
        _ => &DEFAULT_SYSLOG_FACILITIES,
    };
    let mut facilities: Vec<String> = Vec::new();
    match &c.s.facilities {
        Some(list) if list.is_empty() => {
            return Err(c.err(
                DcrErrorKind::InvalidSetting,
                "facilities",
                "is empty",
                "list syslog facilities (e.g. [auth, authpriv]) or omit it for the defaults",
            ));
        }
        Some(list) => {
            for (i, f) in list.iter().enumerate() {
                let name = f.trim().to_ascii_lowercase();
                if !SYSLOG_FACILITIES.contains(&name.as_str()) {
                    return Err(c.err(
                        DcrErrorKind::InvalidSetting,
                        &format!("facilities[{i}]"),
                        format!("{f:?} is not a syslog facility"),
                        format!("use one of {}", SYSLOG_FACILITIES.join(", ")),
                    ));
                }
                if !facilities.contains(&name) {
                    facilities.push(name);
                }
            }
        }
        None => facilities = defaults.iter().map(|s| s.to_string()).collect(),
    }
    let min = c.s.minimum_level.unwrap_or(SyslogLevel::Info);
    let levels = min.and_above().map(|l| l.dcr_name().to_string()).collect();
    Ok((facilities, levels))
}

/// CEF must not share a facility with Syslog (events would land in both tables); Sysmon for
/// Linux already travels with a Syslog source that collects its facility.
fn check_syslog_overlap(
    selections: &[(usize, DataSourceType, Vec<String>)],
    units: &mut Vec<Unit>,
    requirements: &mut Vec<Requirement>,
) -> Result<(), DcrError> {
    use DataSourceType as D;
    let overlaps = |a: &[String], b: &[String]| -> Vec<String> {
        if a.iter().any(|f| f == "*") {
            return b.to_vec();
        }
        if b.iter().any(|f| f == "*") {
            return a.to_vec();
        }
        a.iter().filter(|f| b.contains(f)).cloned().collect()
    };
    for (i, t, fac) in selections.iter().filter(|(_, t, _)| *t == D::LinuxCef) {
        for (j, u, other) in selections.iter().filter(|(_, u, _)| *u == D::LinuxSyslog) {
            let shared = overlaps(fac, other);
            if !shared.is_empty() {
                return Err(DcrError {
                    kind: DcrErrorKind::FacilityOverlap,
                    location: format!("dataSources[{i}] ({t}).settings.facilities"),
                    problem: format!("shares {} with dataSources[{j}] ({u}); those events would land in both CommonSecurityLog and Syslog", shared.join(", ")),
                    fix: "give CEF its own facilities (e.g. local4) and remove them from the Syslog source".into(),
                });
            }
        }
    }
    let sysmon_covered = selections.iter().any(|(_, t, fac)| {
        *t == D::LinuxSysmon
            && selections.iter().any(|(_, u, other)| {
                *u == D::LinuxSyslog && overlaps(fac, other).len() == fac.len() && !fac.is_empty()
            })
    });
    if sysmon_covered {
        units.retain(|u| u.data_source != D::LinuxSysmon);
        requirements.push(Requirement {
            kind: RequirementKind::Note,
            data_source: Some(D::LinuxSysmon),
            message: "the LinuxSyslog source already collects Sysmon's facility, so no separate Sysmon source is generated (one source, no duplicates)".into(),
        });
    }
    Ok(())
}

fn perf_selection(c: &Ctx) -> Result<(Vec<String>, u32), DcrError> {
    let defaults: &[&str] = match c.t.os() {
        OsFamily::Windows => &DEFAULT_WINDOWS_COUNTERS,
        OsFamily::Linux => &DEFAULT_LINUX_COUNTERS,
    };
    let counters = match non_empty_list(c, "counters", c.s.counters.as_deref())? {
        Some(list) => list,
        None => defaults.iter().map(|s| s.to_string()).collect(),
    };
    let mut out: Vec<String> = Vec::new();
    for (i, spec) in counters.iter().enumerate() {
        let parts: Vec<&str> = spec.split('\\').collect();
        if !spec.starts_with('\\')
            || parts.len() < 3
            || parts[1..].iter().any(|p| p.trim().is_empty())
        {
            return Err(c.err(
                DcrErrorKind::InvalidSetting,
                &format!("counters[{i}]"),
                format!("{spec:?} is not a counter specifier"),
                "write \\Object(Instance)\\Counter, e.g. \\Processor(_Total)\\% Processor Time",
            ));
        }
        if !out.contains(spec) {
            out.push(spec.clone());
        }
    }
    let seconds =
        c.s.sampling_frequency_seconds
            .unwrap_or(DEFAULT_SAMPLING_SECONDS);
    if !(1..=86_400).contains(&seconds) {
        return Err(c.err(
            DcrErrorKind::InvalidSetting,
            "samplingFrequencySeconds",
            format!("{seconds} is out of range"),
            "use 1..=86400 seconds (60 is typical)",
        ));
    }
    Ok((out, seconds))
}

fn text_log_unit(c: &Ctx, requirements: &mut Vec<Requirement>) -> Result<Unit, DcrError> {
    let patterns =
        non_empty_list(c, "filePatterns", c.s.file_patterns.as_deref())?.ok_or_else(|| {
            c.err(
                DcrErrorKind::MissingSetting,
                "filePatterns",
                "text logs need the files to read",
                "list file patterns, e.g. filePatterns: [/var/log/app/*.log]",
            )
        })?;
    let table = c.s.table_name.as_deref().map(str::trim).unwrap_or("");
    if table.is_empty() {
        return Err(c.err(
            DcrErrorKind::InvalidTableName,
            "tableName",
            "text logs need a custom table",
            "set tableName to the custom table, e.g. AppLog_CL",
        ));
    }
    valid_table_name(table).map_err(|p| {
        c.err(
            DcrErrorKind::InvalidTableName,
            "tableName",
            p,
            "custom tables are named <Letters/digits/_>_CL, e.g. AppLog_CL",
        )
    })?;
    let endpoint =
        c.s.data_collection_endpoint_id
            .as_deref()
            .map(str::trim)
            .unwrap_or("");
    if endpoint.is_empty() {
        return Err(c.err(
            DcrErrorKind::MissingDataCollectionEndpoint,
            "dataCollectionEndpointId",
            "text logs can only be collected through a data collection endpoint, and none is set",
            "create a data collection endpoint in the workspace's region and set dataCollectionEndpointId to its resource ID",
        ));
    }
    let dce = ResourceId::parse(endpoint).map_err(|e| {
        c.err(
            DcrErrorKind::MissingDataCollectionEndpoint,
            "dataCollectionEndpointId",
            e.to_string(),
            "give the endpoint's full resource ID",
        )
    })?;
    if !dce.is_type("Microsoft.Insights/dataCollectionEndpoints") {
        return Err(c.err(
            DcrErrorKind::MissingDataCollectionEndpoint,
            "dataCollectionEndpointId",
            format!("{endpoint} is not a Microsoft.Insights/dataCollectionEndpoints ID"),
            "give the data collection endpoint's resource ID",
        ));
    }
    let input = format!("Custom-Text-{table}");
    let output = format!("Custom-{table}");
    let mut declarations = BTreeMap::new();
    declarations.insert(
        input.clone(),
        StreamDeclaration {
            columns: vec![
                ColumnDefinition {
                    name: "TimeGenerated".into(),
                    column_type: "datetime".into(),
                },
                ColumnDefinition {
                    name: "RawData".into(),
                    column_type: "string".into(),
                },
            ],
        },
    );
    requirements.push(Requirement {
        kind: RequirementKind::DataCollectionEndpoint,
        data_source: Some(c.t),
        message: format!(
            "data collection endpoint {} must exist in the workspace's region",
            dce.name()
        ),
    });
    requirements.push(Requirement {
        kind: RequirementKind::CustomTable,
        data_source: Some(c.t),
        message: format!(
            "table {table} (columns TimeGenerated datetime, RawData string) must exist in the workspace before AMA sends; once AMA writes to it, MMA can no longer write to it"
        ),
    });
    Ok(Unit {
        os: c.t.os(),
        data_source: c.t,
        entry: Entry::LogFile(LogFilesDataSource {
            name: String::new(),
            streams: vec![input.clone()],
            file_patterns: patterns,
            format: "text".into(),
            settings: Some(LogFileSettings {
                text: Some(LogFileTextSettings {
                    record_start_timestamp_format: "ISO 8601".into(),
                }),
            }),
        }),
        flows: vec![DataFlow {
            streams: vec![input],
            destinations: vec![DESTINATION_NAME.into()],
            transform_kql: Some("source".into()),
            output_stream: Some(output),
        }],
        declarations,
        endpoint: Some(dce.as_str().to_string()),
    })
}

/// A custom table name: letters, digits and `_`, starting with a letter, ending in `_CL`.
pub fn valid_table_name(name: &str) -> Result<(), String> {
    if !name.ends_with("_CL") {
        return Err(format!("{name:?} does not end in _CL"));
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 characters"));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(format!("{name:?} must start with a letter"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() <= 3 {
        return Err(format!(
            "{name:?} may only hold letters, digits and _ before _CL"
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Bin {
    units: Vec<Unit>,
    streams: Vec<String>,
    endpoint: Option<String>,
}

impl Bin {
    fn fits(&self, u: &Unit) -> bool {
        if self.units.len() + 1 > MAX_DATA_SOURCES_PER_DCR {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.endpoint, &u.endpoint)
            && !a.eq_ignore_ascii_case(b)
        {
            return false;
        }
        let mut streams = self.streams.clone();
        for s in u.flows.iter().flat_map(|f| f.streams.iter()) {
            if !streams.contains(s) {
                streams.push(s.clone());
            }
        }
        streams.len() <= MAX_STREAMS_PER_DCR && streams.len() <= MAX_FLOWS_PER_DCR
    }

    fn add(&mut self, u: Unit) {
        for s in u.flows.iter().flat_map(|f| f.streams.iter()) {
            if !self.streams.contains(s) {
                self.streams.push(s.clone());
            }
        }
        if self.endpoint.is_none() {
            self.endpoint = u.endpoint.clone();
        }
        self.units.push(u);
    }
}

/// First-fit packing per OS (Windows first), in request order: deterministic names and content.
fn pack(ctx: &DcrContext, workspace: &ResourceId, units: Vec<Unit>) -> Vec<GeneratedDcr> {
    let plan = dcr_name_part(&ctx.plan_name);
    let mut out = Vec::new();
    for os in [OsFamily::Windows, OsFamily::Linux] {
        let mut bins: Vec<Bin> = Vec::new();
        for u in units.iter().filter(|u| u.os == os) {
            match bins.iter_mut().find(|b| b.fits(u)) {
                Some(b) => b.add(u.clone()),
                None => {
                    let mut b = Bin::default();
                    b.add(u.clone());
                    bins.push(b);
                }
            }
        }
        let os_name = match os {
            OsFamily::Windows => "windows",
            OsFamily::Linux => "linux",
        };
        for (n, bin) in bins.into_iter().enumerate() {
            let name = format!("dcr-{plan}-{os_name}-{}", n + 1);
            out.push(build_rule(ctx, workspace, name, os, bin));
        }
    }
    out
}

fn build_rule(
    ctx: &DcrContext,
    workspace: &ResourceId,
    name: String,
    os: OsFamily,
    bin: Bin,
) -> GeneratedDcr {
    let mut data_sources = DcrDataSources::default();
    let mut flows: Vec<DataFlow> = Vec::new();
    let mut declarations = BTreeMap::new();
    let mut covered: Vec<DataSourceType> = Vec::new();
    let mut per_type: BTreeMap<DataSourceType, usize> = BTreeMap::new();
    for u in bin.units {
        let k = per_type.entry(u.data_source).or_insert(0);
        *k += 1;
        let mut entry = u.entry;
        entry.set_name(format!("{}-{}", u.data_source, k));
        entry.push_into(&mut data_sources);
        for f in u.flows {
            if !flows.contains(&f) {
                flows.push(f);
            }
        }
        declarations.extend(u.declarations);
        if !covered.contains(&u.data_source) {
            covered.push(u.data_source);
        }
    }
    let mut tags = BTreeMap::new();
    tags.insert("createdBy".to_string(), "ama-migrator".to_string());
    tags.insert("amaMigratorPlan".to_string(), ctx.plan_name.clone());
    let list: Vec<&str> = covered.iter().map(|t| t.as_str()).collect();
    let rule = DataCollectionRule {
        location: ctx.location.clone(),
        kind: Some(match os {
            OsFamily::Windows => "Windows".into(),
            OsFamily::Linux => "Linux".into(),
        }),
        tags,
        properties: DcrProperties {
            description: Some(format!(
                "ama-migrator plan {}: {}",
                ctx.plan_name,
                list.join(", ")
            )),
            data_collection_endpoint_id: bin.endpoint,
            stream_declarations: declarations,
            data_sources: Some(data_sources),
            destinations: DcrDestinations {
                log_analytics: vec![LogAnalyticsDestination {
                    name: DESTINATION_NAME.into(),
                    workspace_resource_id: workspace.as_str().to_string(),
                    workspace_id: None,
                }],
            },
            data_flows: flows,
            ..Default::default()
        },
        ..Default::default()
    };
    GeneratedDcr {
        name,
        os,
        data_sources: covered,
        rule,
    }
}

/// A plan name reduced to what a DCR name may hold (lower-case letters, digits, `-`).
fn dcr_name_part(plan: &str) -> String {
    let mut s: String = plan
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    let s: String = s.chars().take(48).collect();
    if s.is_empty() {
        "plan".into()
    } else {
        s.trim_end_matches('-').to_string()
    }
}
