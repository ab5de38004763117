//! Workspace legacy dataSources → equivalent DCRs (what Microsoft's DCR Config Generator does):
//! the legacy settings become plan-style source requests, then the ordinary generator runs.

use super::dcr::{self, DcrContext, DcrError, DcrSet, Requirement, RequirementKind, SourceRequest};
use super::legacy::{LegacyConfig, LegacyConfigError, LegacySecurityTier};
use super::settings::{DataSourceSettings, SecurityEventSet, SyslogLevel};
use super::table::{Catalog, CatalogOverride, ChannelClass, Support};
use super::{DataSourceType, OsFamily};
use crate::azure::WorkspaceDataSource;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Input(#[from] crate::input_files::InputError),
    #[error(transparent)]
    Legacy(#[from] LegacyConfigError),
    #[error(
        "no workspace ID: pass --workspace /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name> (the dataSources carry no id to derive it from)"
    )]
    NoWorkspace,
    #[error(transparent)]
    Dcr(#[from] DcrError),
}

/// Parse a dataSources list: `{"value": [...]}` as ARM returns it, or a plain array (the one
/// reader of that file, `input_files`, with its checks and paths).
pub fn parse_data_sources(text: &str) -> Result<Vec<WorkspaceDataSource>, ConvertError> {
    Ok(crate::input_files::read_data_source_list(text)?)
}

/// The workspace ID the dataSource IDs belong to (`.../workspaces/<ws>/dataSources/<name>`).
pub fn workspace_from_ids(list: &[WorkspaceDataSource]) -> Option<String> {
    list.iter().filter_map(|d| d.id.as_deref()).find_map(|id| {
        let lower = id.to_ascii_lowercase();
        lower
            .rfind("/datasources/")
            .map(|pos| id[..pos].to_string())
    })
}

/// The plan-style requests equivalent to the legacy settings, plus notes on differences.
pub fn requests_from_legacy(
    cfg: &LegacyConfig,
    dce: Option<&str>,
) -> (Vec<SourceRequest>, Vec<Requirement>) {
    use DataSourceType as D;
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let note = |t: Option<DataSourceType>, m: String| Requirement {
        kind: RequirementKind::Note,
        data_source: t,
        message: m,
    };
    match cfg.security_tier() {
        Some(LegacySecurityTier::None) | None => {}
        Some(tier) => {
            let set = match tier {
                LegacySecurityTier::All => SecurityEventSet::All,
                LegacySecurityTier::Common => SecurityEventSet::Common,
                _ => SecurityEventSet::Minimal,
            };
            out.push(SourceRequest::new(
                D::WindowsSecurityEvents,
                DataSourceSettings {
                    security_event_set: Some(set),
                    ..Default::default()
                },
            ));
        }
    }
    // One request per channel: each keeps its own event types.
    for ch in &cfg.event_channels {
        let t = ChannelClass::of(&ch.channel).data_source();
        let fixed = matches!(t, D::WindowsSysmon | D::WindowsForwardedEvents);
        out.push(SourceRequest::new(
            t,
            DataSourceSettings {
                channels: (!fixed).then(|| vec![ch.channel.clone()]),
                event_levels: Some(ch.levels.clone()),
                ..Default::default()
            },
        ));
        if ch.levels.is_empty() {
            notes.push(note(
                Some(t),
                format!(
                    "{}: the legacy setting lists no event types; the DCR collects every level",
                    ch.channel
                ),
            ));
        }
    }
    let mut intervals: Vec<u32> = cfg
        .windows_counters
        .iter()
        .map(|c| c.interval_seconds)
        .collect();
    intervals.sort();
    intervals.dedup();
    for secs in intervals {
        let counters = cfg
            .windows_counters
            .iter()
            .filter(|c| c.interval_seconds == secs)
            .map(|c| c.specifier.clone())
            .collect();
        out.push(SourceRequest::new(
            D::WindowsPerformanceCounters,
            DataSourceSettings {
                counters: Some(counters),
                sampling_frequency_seconds: Some(secs),
                ..Default::default()
            },
        ));
    }
    if cfg.iis_logs {
        out.push(SourceRequest::new(
            D::IisLogs,
            DataSourceSettings::default(),
        ));
    }
    if cfg.syslog_collection_enabled != Some(false) {
        // Group facilities by their exact level set: the DCR collects what the legacy agent did.
        let mut groups: Vec<(Vec<SyslogLevel>, Vec<String>)> = Vec::new();
        for f in cfg
            .syslog_facilities
            .iter()
            .filter(|f| !f.levels.is_empty())
        {
            match groups.iter_mut().find(|(l, _)| *l == f.levels) {
                Some((_, fac)) => fac.push(f.facility.clone()),
                None => groups.push((f.levels.clone(), vec![f.facility.clone()])),
            }
        }
        for (levels, facilities) in groups {
            let min = levels.iter().copied().min().unwrap_or(SyslogLevel::Debug);
            out.push(
                SourceRequest::new(
                    D::LinuxSyslog,
                    DataSourceSettings {
                        facilities: Some(facilities),
                        minimum_level: Some(min),
                        ..Default::default()
                    },
                )
                .with_exact_syslog_levels(levels),
            );
        }
    } else if !cfg.syslog_facilities.is_empty() {
        notes.push(note(
            Some(D::LinuxSyslog),
            "LinuxSyslogCollection is Disabled: the syslog facilities are not converted".into(),
        ));
    }
    if cfg.linux_perf_collection_enabled != Some(false) {
        let mut intervals: Vec<u32> = cfg
            .linux_perf_objects
            .iter()
            .map(|o| o.interval_seconds)
            .collect();
        intervals.sort();
        intervals.dedup();
        for secs in intervals {
            let counters: Vec<String> = cfg
                .linux_perf_objects
                .iter()
                .filter(|o| o.interval_seconds == secs)
                .flat_map(|o| o.specifiers.iter().cloned())
                .collect();
            if !counters.is_empty() {
                out.push(SourceRequest::new(
                    D::LinuxPerformanceCounters,
                    DataSourceSettings {
                        counters: Some(counters),
                        sampling_frequency_seconds: Some(secs),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    for log in &cfg.custom_logs {
        for (os, paths) in [
            (OsFamily::Windows, &log.windows_paths),
            (OsFamily::Linux, &log.linux_paths),
        ] {
            if paths.is_empty() {
                continue;
            }
            let t = if os == OsFamily::Windows {
                D::WindowsCustomLogs
            } else {
                D::LinuxCustomLogs
            };
            match dce {
                Some(dce) => out.push(SourceRequest::new(
                    t,
                    DataSourceSettings {
                        file_patterns: Some(paths.clone()),
                        table_name: Some(log.table_name.clone()),
                        data_collection_endpoint_id: Some(dce.to_string()),
                        ..Default::default()
                    },
                )),
                None => notes.push(Requirement {
                    kind: RequirementKind::DataCollectionEndpoint,
                    data_source: Some(t),
                    message: format!(
                        "custom log {} ({}) was not converted: text logs need a data collection endpoint; pass --data-collection-endpoint <DCE resource ID>",
                        log.table_name,
                        paths.join(", ")
                    ),
                }),
            }
        }
    }
    for (name, kind) in &cfg.ignored {
        notes.push(note(
            None,
            format!(
                "dataSource {name} (kind {kind}) is not an agent collection setting; not converted"
            ),
        ));
    }
    (out, notes)
}

/// The catalog the converter uses: the seed lists application and service logs as unsupported by
/// AMA, but AMA collects any non-analytic channel, which is what the legacy setting names.
pub fn converter_catalog() -> Catalog {
    Catalog::with_overrides(&[CatalogOverride {
        row_type: DataSourceType::WindowsApplicationServiceLogs
            .as_str()
            .into(),
        ama_support: Some(Support::CollectionOnly),
        legacy_support: None,
    }])
    .unwrap_or_default()
}

/// Convert a workspace's legacy dataSources into DCRs.
pub fn convert(
    list: &[WorkspaceDataSource],
    ctx: &DcrContext,
    dce: Option<&str>,
) -> Result<DcrSet, ConvertError> {
    let cfg = LegacyConfig::from_data_sources(list)?;
    let (requests, notes) = requests_from_legacy(&cfg, dce);
    let mut set = dcr::generate(&converter_catalog(), ctx, &requests)?;
    if requests
        .iter()
        .any(|r| r.data_source == DataSourceType::WindowsApplicationServiceLogs)
    {
        set.requirements.push(Requirement {
            kind: RequirementKind::Note,
            data_source: Some(DataSourceType::WindowsApplicationServiceLogs),
            message: "the seed lists application and service logs as unsupported by AMA; AMA collects any non-analytic channel, so they are converted: check the channels arrive".into(),
        });
    }
    set.requirements.extend(notes);
    Ok(set)
}

/// [`convert`] from file text, deriving the workspace from the dataSource IDs when not given.
pub fn convert_text(
    text: &str,
    workspace: Option<&str>,
    location: &str,
    dce: Option<&str>,
) -> Result<DcrSet, ConvertError> {
    let list = parse_data_sources(text)?;
    let workspace = match workspace {
        Some(w) => w.to_string(),
        None => workspace_from_ids(&list).ok_or(ConvertError::NoWorkspace)?,
    };
    let plan_name = crate::azure::ResourceId::parse(&workspace)
        .map(|id| id.name().to_string())
        .unwrap_or_else(|_| "workspace".into());
    let ctx = DcrContext {
        plan_name,
        workspace_resource_id: workspace,
        location: location.to_string(),
        workspace_location: None,
    };
    convert(&list, &ctx, dce)
}
