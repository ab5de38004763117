//! Settings of one data source in a plan (contracts §3). A flat struct of optional fields so the
//! `MigrationPlan` CRD schema that embeds it stays structural (no untagged or mixed enums).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a plan says about how one data source is collected once it moves to AMA. Every field is
/// optional; the DCR generator reads the fields relevant to the data source type and reports a
/// field-named error when a required one is missing or malformed.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceSettings {
    /// Security Events tier (Windows Security Events only). Default: the workspace's legacy tier, else Common.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_event_set: Option<SecurityEventSet>,
    /// Event IDs to collect (Security Events with `securityEventSet: Custom`, or event-ID filtering
    /// of the channels in `channels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 0, max = 65535)))]
    pub event_ids: Option<Vec<u32>>,
    /// Raw xPath filters, each `Channel!XPath` (e.g. `Security!*[System[(EventID=4624)]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_path_queries: Option<Vec<String>>,
    /// Windows event log channel names (e.g. `System`, `Application`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Windows event levels to collect from `channels` (default: Critical, Error, Warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_levels: Option<Vec<EventLevel>>,
    /// Syslog facility names (e.g. `auth`, `local4`, `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facilities: Option<Vec<String>>,
    /// Minimum syslog level; every level from this one up to Emergency is collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_level: Option<SyslogLevel>,
    /// Performance counter specifiers (`\Object(Instance)\Counter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Vec<String>>,
    /// Sampling interval of the performance counters, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub sampling_frequency_seconds: Option<u32>,
    /// File patterns of a custom text log (e.g. `C:\app\logs\*.log`, `/var/log/app/*.log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_patterns: Option<Vec<String>>,
    /// Destination custom table of a text log; must end in `_CL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// Data collection endpoint resource ID (required for custom text logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collection_endpoint_id: Option<String>,
    /// IIS log directories (default: the IIS default directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_directories: Option<Vec<String>>,
    /// Windows Firewall profiles to collect (default: all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_profiles: Option<Vec<FirewallProfile>>,
}

/// Windows Security Events tier, as the Sentinel connector pages name them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum SecurityEventSet {
    /// All Security and AppLocker events.
    All,
    /// The "Common" set (143 event IDs; legacy wire tier `Recommended`).
    Common,
    /// The "Minimal" set (39 event IDs).
    Minimal,
    /// The plan's own `eventIds` and/or `xPathQueries`.
    Custom,
}

/// Syslog severity, ordered from least to most severe (the DCR `logLevels` names).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum SyslogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl SyslogLevel {
    /// Every level, least severe first.
    pub const ALL: [SyslogLevel; 8] = [
        Self::Debug,
        Self::Info,
        Self::Notice,
        Self::Warning,
        Self::Error,
        Self::Critical,
        Self::Alert,
        Self::Emergency,
    ];

    /// The DCR `logLevels` value.
    pub fn dcr_name(self) -> &'static str {
        match self {
            Self::Debug => "Debug",
            Self::Info => "Info",
            Self::Notice => "Notice",
            Self::Warning => "Warning",
            Self::Error => "Error",
            Self::Critical => "Critical",
            Self::Alert => "Alert",
            Self::Emergency => "Emergency",
        }
    }

    /// The legacy `LinuxSyslog` severity token (`emerg`, `alert`, `crit`, `err`, `warning`, `notice`, `info`, `debug`).
    pub fn legacy_name(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Notice => "notice",
            Self::Warning => "warning",
            Self::Error => "err",
            Self::Critical => "crit",
            Self::Alert => "alert",
            Self::Emergency => "emerg",
        }
    }

    /// Parse a legacy severity token (also accepts the DCR names and the common aliases
    /// `error`, `critical`, `emergency`, `warn`, `panic`), case-insensitively.
    pub fn from_legacy(token: &str) -> Option<Self> {
        let t = token.trim().to_ascii_lowercase();
        Some(match t.as_str() {
            "debug" => Self::Debug,
            "info" | "informational" => Self::Info,
            "notice" => Self::Notice,
            "warning" | "warn" => Self::Warning,
            "err" | "error" => Self::Error,
            "crit" | "critical" => Self::Critical,
            "alert" => Self::Alert,
            "emerg" | "emergency" | "panic" => Self::Emergency,
            _ => return None,
        })
    }

    /// This level and every more severe one, least severe first.
    pub fn and_above(self) -> impl Iterator<Item = SyslogLevel> {
        Self::ALL.into_iter().filter(move |l| *l >= self)
    }
}

/// Windows event level (the `Level` in an event's System element).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum EventLevel {
    Critical,
    Error,
    Warning,
    Information,
    Verbose,
}

impl EventLevel {
    /// The numeric `Level` value used in xPath filters.
    pub fn level_number(self) -> u8 {
        match self {
            Self::Critical => 1,
            Self::Error => 2,
            Self::Warning => 3,
            Self::Information => 4,
            Self::Verbose => 5,
        }
    }

    /// Parse a legacy `WindowsEvent` `eventType` (`Error`, `Warning`, `Information`), case-insensitively.
    pub fn from_legacy(event_type: &str) -> Option<Self> {
        let t = event_type.trim().to_ascii_lowercase();
        Some(match t.as_str() {
            "critical" => Self::Critical,
            "error" => Self::Error,
            "warning" => Self::Warning,
            "information" | "info" => Self::Information,
            "verbose" => Self::Verbose,
            _ => return None,
        })
    }
}

/// Windows Firewall profile (the DCR `profileFilter` values).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum FirewallProfile {
    Domain,
    Private,
    Public,
}

impl FirewallProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Domain => "Domain",
            Self::Private => "Private",
            Self::Public => "Public",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_serialize_camel_case_and_skip_none() {
        let s = DataSourceSettings {
            security_event_set: Some(SecurityEventSet::Common),
            x_path_queries: Some(vec!["Security!*".into()]),
            sampling_frequency_seconds: Some(60),
            ..Default::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"securityEventSet":"Common","xPathQueries":["Security!*"],"samplingFrequencySeconds":60})
        );
        let back: DataSourceSettings = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            serde_json::to_value(DataSourceSettings::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn syslog_levels_map_both_ways() {
        for l in SyslogLevel::ALL {
            assert_eq!(SyslogLevel::from_legacy(l.legacy_name()), Some(l));
            assert_eq!(SyslogLevel::from_legacy(l.dcr_name()), Some(l));
        }
        assert_eq!(SyslogLevel::from_legacy("bogus"), None);
        let up: Vec<_> = SyslogLevel::Error
            .and_above()
            .map(|l| l.dcr_name())
            .collect();
        assert_eq!(up, ["Error", "Critical", "Alert", "Emergency"]);
    }

    /// The schema as kube's `CustomResource` derive would embed it (same settings and transforms).
    fn crd_schema() -> serde_json::Value {
        let generator = schemars::generate::SchemaSettings::openapi3()
            .with(|s| {
                s.inline_subschemas = true;
                s.meta_schema = None;
            })
            .with_transform(schemars::transform::AddNullable::default())
            .with_transform(kube::core::schema::StructuralSchemaRewriter)
            .with_transform(kube::core::schema::OptionalEnum)
            .into_generator();
        serde_json::to_value(generator.into_root_schema_for::<DataSourceSettings>()).unwrap()
    }

    /// Every node has a `type`, and no anyOf/oneOf/allOf/$ref survives: a structural schema.
    fn assert_structural(node: &serde_json::Value, path: &str) {
        let obj = node.as_object().unwrap();
        for banned in ["anyOf", "oneOf", "allOf", "$ref", "not"] {
            assert!(!obj.contains_key(banned), "{path} uses {banned}: {node}");
        }
        assert!(obj.contains_key("type"), "{path} has no type: {node}");
        if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                assert_structural(v, &format!("{path}.{k}"));
            }
        }
        if let Some(items) = obj.get("items") {
            assert_structural(items, &format!("{path}[]"));
        }
    }

    #[test]
    fn crd_embedded_schema_is_structural() {
        let schema = crd_schema();
        assert_structural(&schema, "settings");
        let level = &schema["properties"]["minimumLevel"];
        assert_eq!(level["type"], "string");
        let names = |v: &serde_json::Value| -> Vec<String> {
            let arr = v["enum"].as_array().unwrap();
            arr.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        };
        let levels: Vec<String> = SyslogLevel::ALL
            .iter()
            .map(|l| l.dcr_name().into())
            .collect();
        assert_eq!(names(level), levels);
        let set = names(&schema["properties"]["securityEventSet"]);
        assert_eq!(set, ["All", "Common", "Minimal", "Custom"]);
        assert_eq!(
            schema["properties"]["samplingFrequencySeconds"]["minimum"],
            1
        );
    }
}
