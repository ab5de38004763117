//! Discovery with bulk queries only: the Resource Graph inventory (every page), one Log Analytics
//! Heartbeat query, and the workspace's dataSources lists — never a read per machine.

use std::collections::HashMap;

use crate::api::plan::MigrationPlanSpec;
use crate::azure::datasource::kinds;
use crate::azure::{ArmClient, ResourceId, WorkspaceDataSource};
use crate::catalog::LegacyConfig;
use crate::inventory::{HEARTBEAT_QUERY, HeartbeatSender, INVENTORY_QUERY, InventoryMachine};

use super::EngineError;

/// dataSource kinds that carry legacy agent collection settings.
pub const LEGACY_KINDS: [&str; 10] = [
    kinds::SENTINEL_SECURITY_EVENTS,
    kinds::SECURITY_CENTER_SECURITY_EVENTS,
    kinds::WINDOWS_EVENT,
    kinds::WINDOWS_PERFORMANCE_COUNTER,
    kinds::LINUX_SYSLOG,
    kinds::LINUX_SYSLOG_COLLECTION,
    kinds::LINUX_PERFORMANCE_OBJECT,
    kinds::LINUX_PERFORMANCE_COLLECTION,
    kinds::IIS_LOGS,
    kinds::CUSTOM_LOG,
];

/// The planner's input as Azure reports it.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub inventory: Vec<InventoryMachine>,
    pub heartbeat: Vec<HeartbeatSender>,
    pub data_sources: Vec<WorkspaceDataSource>,
    pub legacy: LegacyConfig,
}

impl Discovery {
    /// The inventory by machine key (the lower-cased resource id).
    pub fn by_key(&self) -> HashMap<String, &InventoryMachine> {
        self.inventory
            .iter()
            .map(|m| (m.id.to_ascii_lowercase(), m))
            .collect()
    }
}

/// The workspace customer id the Log Analytics queries need.
pub fn customer_id(spec: &MigrationPlanSpec) -> Result<String, EngineError> {
    spec.workspace_customer_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .ok_or_else(|| EngineError::Plan {
            field: "spec.workspaceCustomerId",
            problem: "is required to query the workspace's Heartbeat and data; copy the workspace's \"Workspace ID\" (a GUID) from its Overview page".into(),
        })
}

pub async fn discover(
    client: &ArmClient,
    spec: &MigrationPlanSpec,
) -> Result<Discovery, EngineError> {
    let workspace = ResourceId::parse(&spec.workspace).map_err(|e| EngineError::Plan {
        field: "spec.workspace",
        problem: format!("is not a workspace resource id: {e}"),
    })?;
    let cid = customer_id(spec)?;
    let mut subscriptions = spec.scope.subscriptions.clone();
    let ws_sub = workspace.subscription().to_string();
    if !subscriptions
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&ws_sub))
        && !subscriptions.is_empty()
    {
        subscriptions.push(ws_sub);
    }
    let inventory: Vec<InventoryMachine> = client
        .query_resource_graph(&subscriptions, INVENTORY_QUERY)
        .await
        .map_err(|e| EngineError::azure("the Resource Graph inventory query", e))?;
    let hb = client
        .query_logs(&cid, HEARTBEAT_QUERY, Some("P1D"))
        .await
        .map_err(|e| EngineError::azure("the workspace Heartbeat query", e))?;
    let heartbeat = HeartbeatSender::from_export(&hb).map_err(|e| EngineError::Discovery {
        what: "the Heartbeat query result",
        problem: e.to_string(),
    })?;
    drop(hb);
    let mut data_sources = Vec::new();
    for kind in LEGACY_KINDS {
        let list = client
            .list_data_sources(&workspace, kind)
            .await
            .map_err(|e| EngineError::azure("listing the workspace's dataSources", e))?;
        data_sources.extend(list);
    }
    let legacy =
        LegacyConfig::from_data_sources(&data_sources).map_err(|e| EngineError::Discovery {
            what: "the workspace's dataSources",
            problem: e.to_string(),
        })?;
    Ok(Discovery {
        inventory,
        heartbeat,
        data_sources,
        legacy,
    })
}
