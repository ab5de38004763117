//! The Data Collection Rule wire shape (`DataCollectionRuleResource`, Microsoft.Insights api-version
//! 2023-03-11): what the ARM client PUTs and GETs and what the catalog's DCR generator produces.
//! Only the parts the migration writes or reads are typed; read-only fields are optional.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Microsoft.Insights api-version used for DCRs and DCR associations.
pub const DCR_API_VERSION: &str = "2023-03-11";

/// A DCR resource as PUT to and returned by ARM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataCollectionRule {
    /// Read-only: full ARM ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Read-only: resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Read-only: `Microsoft.Insights/dataCollectionRules`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Read-only entity tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Region; must be the destination workspace's region. Create-only.
    pub location: String,
    /// `Windows` or `Linux` (the spec's enum is model-as-string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: DcrProperties,
}

/// `properties` of a DCR.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DcrProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Read-only, e.g. `dcr-b74e0d383fc9415abaa584ec41adece3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable_id: Option<String>,
    /// Data collection endpoint; required when the rule collects text logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collection_endpoint_id: Option<String>,
    /// Custom streams (`Custom-*`) and their columns.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_declarations: BTreeMap<String, StreamDeclaration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sources: Option<DcrDataSources>,
    #[serde(default)]
    pub destinations: DcrDestinations,
    #[serde(default)]
    pub data_flows: Vec<DataFlow>,
    /// Read-only: `Creating`, `Updating`, `Deleting`, `Succeeded`, `Canceled`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamDeclaration {
    pub columns: Vec<ColumnDefinition>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnDefinition {
    pub name: String,
    /// `string`, `int`, `long`, `real`, `boolean`, `datetime` or `dynamic`.
    #[serde(rename = "type")]
    pub column_type: String,
}

/// `properties.dataSources`: one list per data source kind; empty lists are omitted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DcrDataSources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows_event_logs: Vec<WindowsEventLogDataSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syslog: Vec<SyslogDataSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_counters: Vec<PerfCounterDataSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_files: Vec<LogFilesDataSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iis_logs: Vec<IisLogsDataSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows_firewall_logs: Vec<WindowsFirewallLogsDataSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionDataSource>,
}

impl DcrDataSources {
    /// Number of data sources across all kinds (a DCR holds at most 10).
    pub fn len(&self) -> usize {
        self.windows_event_logs.len()
            + self.syslog.len()
            + self.performance_counters.len()
            + self.log_files.len()
            + self.iis_logs.len()
            + self.windows_firewall_logs.len()
            + self.extensions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsEventLogDataSource {
    pub name: String,
    pub streams: Vec<String>,
    pub x_path_queries: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyslogDataSource {
    pub name: String,
    pub streams: Vec<String>,
    pub facility_names: Vec<String>,
    pub log_levels: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerfCounterDataSource {
    pub name: String,
    pub streams: Vec<String>,
    pub sampling_frequency_in_seconds: u32,
    pub counter_specifiers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFilesDataSource {
    pub name: String,
    pub streams: Vec<String>,
    pub file_patterns: Vec<String>,
    /// `text` or `json`.
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<LogFileSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogFileSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<LogFileTextSettings>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFileTextSettings {
    /// One of the spec's formats, e.g. `ISO 8601`.
    pub record_start_timestamp_format: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IisLogsDataSource {
    pub name: String,
    pub streams: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_directories: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsFirewallLogsDataSource {
    pub name: String,
    pub streams: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile_filter: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionDataSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
    pub extension_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_data_sources: Vec<String>,
}

/// `properties.destinations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DcrDestinations {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_analytics: Vec<LogAnalyticsDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogAnalyticsDestination {
    pub name: String,
    pub workspace_resource_id: String,
    /// Read-only: the workspace's customer ID (GUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

/// One entry of `properties.dataFlows`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataFlow {
    pub streams: Vec<String>,
    pub destinations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_kql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_stream: Option<String>,
}

impl DataCollectionRule {
    /// Every stream named by the rule's data flows, deduplicated, in first-seen order.
    pub fn streams(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in self
            .properties
            .data_flows
            .iter()
            .flat_map(|f| f.streams.iter())
        {
            if !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_get_example_and_round_trips() {
        let body = serde_json::json!({
            "id": "/subscriptions/703362b3-f278-4e4b-9179-c76eaf41ffc2/resourceGroups/myResourceGroup/providers/Microsoft.Insights/dataCollectionRules/myCollectionRule",
            "name": "myCollectionRule",
            "type": "Microsoft.Insights/dataCollectionRules",
            "location": "eastus",
            "tags": {"tag1": "A"},
            "etag": "\"070057da-0000-0000-0000-5ba70d6c0000\"",
            "properties": {
                "immutableId": "dcr-b74e0d383fc9415abaa584ec41adece3",
                "dataSources": {
                    "performanceCounters": [{"name": "c", "streams": ["Microsoft-Perf"], "samplingFrequencyInSeconds": 15, "counterSpecifiers": ["\\Memory\\Committed Bytes"]}],
                    "windowsEventLogs": [{"name": "e", "streams": ["Microsoft-WindowsEvent"], "xPathQueries": ["Security!"]}],
                    "syslog": [{"name": "s", "streams": ["Microsoft-Syslog"], "facilityNames": ["cron"], "logLevels": ["Debug"]}]
                },
                "destinations": {"logAnalytics": [{"workspaceResourceId": "/subscriptions/x/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w", "workspaceId": "9ba8bc53-bd36-4156-8667-e983e7ae0e4f", "name": "centralWorkspace"}]},
                "dataFlows": [{"streams": ["Microsoft-Perf", "Microsoft-Syslog", "Microsoft-WindowsEvent"], "destinations": ["centralWorkspace"]}],
                "provisioningState": "Succeeded"
            }
        });
        let dcr: DataCollectionRule = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(
            dcr.properties.provisioning_state.as_deref(),
            Some("Succeeded")
        );
        assert_eq!(dcr.properties.data_sources.as_ref().unwrap().len(), 3);
        assert_eq!(
            dcr.streams(),
            [
                "Microsoft-Perf",
                "Microsoft-Syslog",
                "Microsoft-WindowsEvent"
            ]
        );
        assert_eq!(serde_json::to_value(&dcr).unwrap(), body);
    }
}
