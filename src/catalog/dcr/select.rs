//! Per-kind selection: a request's settings become DCR data source entries, validated.

use super::*;
pub(super) fn non_empty_list(
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
pub(super) fn source_of_channel(channel: &str) -> DataSourceType {
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

pub(super) fn validated_ids(c: &Ctx) -> Result<Vec<u32>, DcrError> {
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
pub(super) fn raw_queries(c: &Ctx) -> Result<Vec<String>, DcrError> {
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

pub(super) fn event_queries(c: &Ctx) -> Result<Vec<String>, DcrError> {
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
    if q.is_empty() {
        return Err(c.err(
            DcrErrorKind::MissingSetting,
            "channels",
            "selects no channel and no xPathQueries, so nothing would be collected",
            "list channels (e.g. [System]) or xPathQueries",
        ));
    }
    Ok(q)
}

pub(super) fn syslog_selection(c: &Ctx) -> Result<(Vec<String>, Vec<String>), DcrError> {
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
    let levels = match c.exact_levels {
        Some([]) => {
            return Err(c.err(
                DcrErrorKind::InvalidSetting,
                "minimumLevel",
                "the exact syslog level list is empty",
                "give at least one level",
            ));
        }
        Some(exact) => {
            let mut v = exact.to_vec();
            v.sort();
            v.dedup();
            v.iter().map(|l| l.dcr_name().to_string()).collect()
        }
        None => {
            let min = c.s.minimum_level.unwrap_or(SyslogLevel::Info);
            min.and_above().map(|l| l.dcr_name().to_string()).collect()
        }
    };
    Ok((facilities, levels))
}

/// CEF must not share a facility with Syslog (events would land in both tables); Sysmon for
/// Linux already travels with a Syslog source that collects its facility.
pub(super) fn check_syslog_overlap(
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

pub(super) fn perf_selection(c: &Ctx) -> Result<(Vec<String>, u32), DcrError> {
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

pub(super) fn text_log_unit(
    c: &Ctx,
    requirements: &mut Vec<Requirement>,
) -> Result<Unit, DcrError> {
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
