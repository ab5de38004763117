//! The fleet as Azure reports it: Resource Graph rows for machines and their extensions, and Log
//! Analytics Heartbeat rows for senders ARM cannot see (MSI-installed or on-premises agents).
//!
//! These are wire shapes shared by the ARM client, the simulator (which serves them) and the
//! planner (which reads them from `plan --inventory FILE [--heartbeat FILE]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::OsFamily;

/// The Resource Graph query whose result is the inventory. `plan --inventory` reads its JSON
/// response; the engine sends it with `$skipToken` paging; the simulator answers it.
pub const INVENTORY_QUERY: &str = r#"Resources
| where type =~ 'microsoft.compute/virtualmachines' or type =~ 'microsoft.hybridcompute/machines'
| extend machineId = tolower(id),
         osType = iff(type =~ 'microsoft.compute/virtualmachines', tostring(properties.storageProfile.osDisk.osType), tostring(properties.osType)),
         identityType = tostring(identity.type),
         powerState = tostring(properties.extended.instanceView.powerState.code),
         status = tostring(properties.status)
| project machineId, id, name, type, location, resourceGroup, subscriptionId, tags, osType, identityType, powerState, status
| join kind=leftouter (
    Resources
    | where type =~ 'microsoft.compute/virtualmachines/extensions' or type =~ 'microsoft.hybridcompute/machines/extensions'
    | extend machineId = tolower(substring(id, 0, indexof(id, '/extensions')))
    | summarize extensions = make_list(pack('name', name, 'publisher', tostring(properties.publisher), 'type', tostring(properties.type), 'provisioningState', tostring(properties.provisioningState), 'workspaceId', tostring(properties.settings.workspaceId))) by machineId
  ) on machineId
| project-away machineId1
| order by id asc"#;

/// The Log Analytics query whose result is the optional Heartbeat export: which computers report
/// to the workspace, through which agent, over the last day.
pub const HEARTBEAT_QUERY: &str = "Heartbeat | where TimeGenerated > ago(1d) | summarize count() by Computer, _ResourceId, Category, OSType";

/// Heartbeat `Category` of the legacy agent (MMA/OMS).
pub const CATEGORY_LEGACY: &str = "Direct Agent";
/// Heartbeat `Category` of the Azure Monitor Agent.
pub const CATEGORY_AMA: &str = "Azure Monitor Agent";

/// Extension publisher and types that identify agents (never the extension name: it is free-form).
pub const PUBLISHER_AMA: &str = "Microsoft.Azure.Monitor";
pub const TYPE_AMA_WINDOWS: &str = "AzureMonitorWindowsAgent";
pub const TYPE_AMA_LINUX: &str = "AzureMonitorLinuxAgent";
pub const PUBLISHER_LEGACY: &str = "Microsoft.EnterpriseCloud.Monitoring";
pub const TYPE_MMA: &str = "MicrosoftMonitoringAgent";
pub const TYPE_OMS: &str = "OmsAgentForLinux";

/// Which agent an extension is, judged by publisher and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentKind {
    Ama,
    Legacy,
}

impl AgentKind {
    pub fn of_extension(publisher: &str, ext_type: &str) -> Option<Self> {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if eq(publisher, PUBLISHER_AMA)
            && (eq(ext_type, TYPE_AMA_WINDOWS) || eq(ext_type, TYPE_AMA_LINUX))
        {
            Some(Self::Ama)
        } else if eq(publisher, PUBLISHER_LEGACY)
            && (eq(ext_type, TYPE_MMA) || eq(ext_type, TYPE_OMS))
        {
            Some(Self::Legacy)
        } else {
            None
        }
    }

    /// The extension `type` for this agent on `os`.
    pub fn extension_type(self, os: OsFamily) -> &'static str {
        match (self, os) {
            (Self::Ama, OsFamily::Windows) => TYPE_AMA_WINDOWS,
            (Self::Ama, OsFamily::Linux) => TYPE_AMA_LINUX,
            (Self::Legacy, OsFamily::Windows) => TYPE_MMA,
            (Self::Legacy, OsFamily::Linux) => TYPE_OMS,
        }
    }

    pub fn publisher(self) -> &'static str {
        match self {
            Self::Ama => PUBLISHER_AMA,
            Self::Legacy => PUBLISHER_LEGACY,
        }
    }
}

/// Azure VM or Arc-enabled server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MachineKind {
    AzureVM,
    ArcServer,
}

impl MachineKind {
    /// From the ARG `type` column (`microsoft.compute/virtualmachines` / `microsoft.hybridcompute/machines`).
    pub fn from_arm_type(ty: &str) -> Option<Self> {
        if ty.eq_ignore_ascii_case("microsoft.compute/virtualmachines") {
            Some(Self::AzureVM)
        } else if ty.eq_ignore_ascii_case("microsoft.hybridcompute/machines") {
            Some(Self::ArcServer)
        } else {
            None
        }
    }
}

/// One row of the inventory query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryMachine {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub location: String,
    pub resource_group: String,
    pub subscription_id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub os_type: String,
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned`, `None` or empty.
    #[serde(default)]
    pub identity_type: String,
    /// VM power state code, e.g. `PowerState/running`, `PowerState/deallocated` (empty for Arc).
    #[serde(default)]
    pub power_state: String,
    /// Arc connectivity, e.g. `Connected`, `Disconnected` (empty for VMs).
    #[serde(default)]
    pub status: String,
    /// Extensions on the machine; ARG returns `null` when the join found none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub extensions: Vec<InventoryExtension>,
}

/// One extension inside an inventory row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryExtension {
    pub name: String,
    pub publisher: String,
    #[serde(rename = "type")]
    pub ext_type: String,
    #[serde(default)]
    pub provisioning_state: String,
    /// The legacy agent's `settings.workspaceId` (customer GUID); empty for other extensions.
    #[serde(default)]
    pub workspace_id: String,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl InventoryMachine {
    pub fn kind(&self) -> Option<MachineKind> {
        MachineKind::from_arm_type(&self.resource_type)
    }
    pub fn os(&self) -> Option<OsFamily> {
        OsFamily::from_azure(&self.os_type)
    }
    /// Extensions of the given agent kind (by publisher + type).
    pub fn agents(&self, kind: AgentKind) -> impl Iterator<Item = &InventoryExtension> {
        self.extensions
            .iter()
            .filter(move |e| AgentKind::of_extension(&e.publisher, &e.ext_type) == Some(kind))
    }
    pub fn has_system_identity(&self) -> bool {
        self.identity_type.contains("SystemAssigned")
    }
    pub fn is_deallocated(&self) -> bool {
        self.power_state
            .eq_ignore_ascii_case("PowerState/deallocated")
            || self.power_state.eq_ignore_ascii_case("PowerState/stopped")
    }
    pub fn is_disconnected(&self) -> bool {
        self.kind() == Some(MachineKind::ArcServer)
            && !self.status.eq_ignore_ascii_case("Connected")
    }
}

/// The response body of a Resource Graph `resources` query (`resultFormat: objectArray`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceGraphResponse<T> {
    #[serde(rename = "totalRecords")]
    pub total_records: i64,
    pub count: i64,
    /// `"true"` / `"false"`: a string on the wire.
    #[serde(rename = "resultTruncated")]
    pub result_truncated: String,
    #[serde(
        rename = "$skipToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub skip_token: Option<String>,
    pub data: Vec<T>,
}

/// A Log Analytics query response: `{"tables":[{"name","columns":[{"name","type"}],"rows":[[…]]}]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogQueryResponse {
    pub tables: Vec<LogTable>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogTable {
    pub name: String,
    pub columns: Vec<LogColumn>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: String,
}

impl LogTable {
    /// Index of a column by name; rows are positional.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One computer seen in the Heartbeat export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatSender {
    pub computer: String,
    /// `_ResourceId`, lower-cased; `None` for machines ARM does not know (on-premises, direct).
    pub resource_id: Option<String>,
    /// `Direct Agent` (legacy) or `Azure Monitor Agent`.
    pub category: String,
    pub os: Option<OsFamily>,
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatExportError {
    #[error("the Heartbeat export has no tables; expected the result of: {HEARTBEAT_QUERY}")]
    NoTable,
    #[error(
        "tables[0].columns: the Heartbeat export lacks column {0:?}; expected the result of: {HEARTBEAT_QUERY}"
    )]
    MissingColumn(&'static str),
    #[error(
        "tables[0].rows[{row}]: has {found} values but the table declares {declared} columns; the export was edited or cut, export it again"
    )]
    RowLength {
        row: usize,
        found: usize,
        declared: usize,
    },
    #[error("tables[0].rows[{row}][{index}] ({column}): is not a string")]
    NotAString {
        row: usize,
        index: usize,
        column: &'static str,
    },
}

impl HeartbeatSender {
    /// Read the senders out of the `HEARTBEAT_QUERY` result: whole, or an error naming the cell.
    pub fn from_export(resp: &LogQueryResponse) -> Result<Vec<Self>, HeartbeatExportError> {
        let table = resp.tables.first().ok_or(HeartbeatExportError::NoTable)?;
        let col = |name: &'static str| {
            table
                .column(name)
                .ok_or(HeartbeatExportError::MissingColumn(name))
        };
        let (c_computer, c_rid, c_cat) = (col("Computer")?, col("_ResourceId")?, col("Category")?);
        let c_os = table.column("OSType");
        let mut out = Vec::with_capacity(table.rows.len());
        for (row, values) in table.rows.iter().enumerate() {
            if values.len() != table.columns.len() {
                return Err(HeartbeatExportError::RowLength {
                    row,
                    found: values.len(),
                    declared: table.columns.len(),
                });
            }
            let text =
                |index: usize, column: &'static str| -> Result<String, HeartbeatExportError> {
                    match values.get(index) {
                        Some(serde_json::Value::String(s)) => Ok(s.clone()),
                        Some(serde_json::Value::Null) | None => Ok(String::new()),
                        Some(_) => Err(HeartbeatExportError::NotAString { row, index, column }),
                    }
                };
            let rid = text(c_rid, "_ResourceId")?;
            out.push(HeartbeatSender {
                computer: text(c_computer, "Computer")?,
                resource_id: (!rid.is_empty()).then(|| rid.to_ascii_lowercase()),
                category: text(c_cat, "Category")?,
                os: match c_os {
                    Some(i) => OsFamily::from_azure(&text(i, "OSType")?),
                    None => None,
                },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_detected_by_publisher_and_type_not_name() {
        assert_eq!(
            AgentKind::of_extension("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"),
            Some(AgentKind::Ama)
        );
        assert_eq!(
            AgentKind::of_extension("microsoft.enterprisecloud.monitoring", "OmsAgentForLinux"),
            Some(AgentKind::Legacy)
        );
        assert_eq!(
            AgentKind::of_extension("Contoso", "MicrosoftMonitoringAgent"),
            None
        );
        let row: InventoryMachine = serde_json::from_value(serde_json::json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
            "name": "vm1", "type": "microsoft.compute/virtualmachines", "location": "westeurope",
            "resourceGroup": "rg", "subscriptionId": "s", "osType": "Windows", "identityType": "",
            "extensions": [{"name": "MMA", "publisher": "Microsoft.EnterpriseCloud.Monitoring", "type": "MicrosoftMonitoringAgent", "provisioningState": "Succeeded", "workspaceId": "w"}]
        }))
        .unwrap();
        assert_eq!(row.agents(AgentKind::Legacy).count(), 1);
        assert_eq!(row.agents(AgentKind::Ama).count(), 0);
        assert_eq!(row.kind(), Some(MachineKind::AzureVM));
    }

    #[test]
    fn heartbeat_export_reads_by_column_name() {
        let resp: LogQueryResponse = serde_json::from_value(serde_json::json!({"tables": [{
            "name": "PrimaryResult",
            "columns": [{"name": "Category", "type": "string"}, {"name": "Computer", "type": "string"},
                        {"name": "_ResourceId", "type": "string"}, {"name": "OSType", "type": "string"},
                        {"name": "count_", "type": "long"}],
            "rows": [["Direct Agent", "onprem-01", "", "Windows", 1440], ["Azure Monitor Agent", "vm1", "/SUBSCRIPTIONS/S/x", "Linux", 10]]
        }]}))
        .unwrap();
        let senders = HeartbeatSender::from_export(&resp).unwrap();
        assert_eq!(senders[0].resource_id, None);
        assert_eq!(senders[0].os, Some(OsFamily::Windows));
        assert_eq!(
            senders[1].resource_id.as_deref(),
            Some("/subscriptions/s/x")
        );
        let bad = LogQueryResponse { tables: vec![] };
        assert!(matches!(
            HeartbeatSender::from_export(&bad),
            Err(HeartbeatExportError::NoTable)
        ));
    }
}
