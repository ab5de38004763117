//! Workspace `dataSources` (Microsoft.OperationalInsights/workspaces/dataSources, api-version 2025-02-01):
//! where the legacy agent's collection settings live, one setting for every machine of the workspace.

use serde::{Deserialize, Serialize};

/// One workspace dataSource as ARM returns it. `properties` stays JSON: its shape depends on `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceDataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    pub kind: String,
    pub properties: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// The list response: `{"value": [...], "nextLink": ...}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceDataSourceList {
    pub value: Vec<WorkspaceDataSource>,
    #[serde(rename = "nextLink", default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// dataSource kinds the migration reads and writes.
pub mod kinds {
    pub const SENTINEL_SECURITY_EVENTS: &str =
        "SecurityInsightsSecurityEventCollectionConfiguration";
    pub const SECURITY_CENTER_SECURITY_EVENTS: &str = "SecurityEventCollectionConfiguration";
    pub const WINDOWS_EVENT: &str = "WindowsEvent";
    pub const WINDOWS_PERFORMANCE_COUNTER: &str = "WindowsPerformanceCounter";
    pub const LINUX_SYSLOG: &str = "LinuxSyslog";
    pub const LINUX_SYSLOG_COLLECTION: &str = "LinuxSyslogCollection";
    pub const LINUX_PERFORMANCE_OBJECT: &str = "LinuxPerformanceObject";
    pub const LINUX_PERFORMANCE_COLLECTION: &str = "LinuxPerformanceCollection";
    pub const IIS_LOGS: &str = "IISLogs";
    pub const CUSTOM_LOG: &str = "CustomLog";
}
