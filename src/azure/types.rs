//! Wire types of the ARM resources the client reads and writes (only the fields we use, plus
//! what the specs require on requests). `protectedSettings` never shows in Debug output.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inventory::AgentKind;

/// A VM extension (Microsoft.Compute 2024-11-01) or Arc machine extension (HybridCompute 2024-07-10).
#[derive(Clone, PartialEq, Serialize, Deserialize, Debug)]
pub struct Extension {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Optional in the spec (minimal examples omit it).
    #[serde(default)]
    pub properties: ExtensionProperties,
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub extension_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_handler_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_upgrade_minor_version: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_automatic_upgrade: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// Secrets (e.g. the MMA workspaceKey): sent on PUT, never returned, never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_settings: Option<serde_json::Value>,
    /// Read-only; free string on Compute (terminal: Succeeded, Failed, Canceled).
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
    /// Read-only; `statuses[]` on Compute, a single `status` on Arc.
    #[serde(default, skip_serializing)]
    pub instance_view: Option<serde_json::Value>,
}

impl fmt::Debug for ExtensionProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionProperties")
            .field("publisher", &self.publisher)
            .field("extension_type", &self.extension_type)
            .field("type_handler_version", &self.type_handler_version)
            .field(
                "auto_upgrade_minor_version",
                &self.auto_upgrade_minor_version,
            )
            .field("enable_automatic_upgrade", &self.enable_automatic_upgrade)
            .field("settings", &self.settings)
            .field(
                "protected_settings",
                &self.protected_settings.as_ref().map(|_| "<redacted>"),
            )
            .field("provisioning_state", &self.provisioning_state)
            .finish_non_exhaustive()
    }
}

impl Extension {
    /// The body of an install: publisher, type, version, auto-upgrade, optional settings.
    pub fn install(
        location: &str,
        publisher: &str,
        extension_type: &str,
        type_handler_version: Option<&str>,
        settings: Option<serde_json::Value>,
    ) -> Self {
        Self {
            id: None,
            name: None,
            resource_type: None,
            location: Some(location.to_string()),
            tags: None,
            properties: ExtensionProperties {
                publisher: Some(publisher.to_string()),
                extension_type: Some(extension_type.to_string()),
                type_handler_version: type_handler_version.map(str::to_string),
                auto_upgrade_minor_version: Some(true),
                enable_automatic_upgrade: Some(true),
                settings,
                ..Default::default()
            },
        }
    }

    /// Which agent this extension is, by publisher and type (never by name).
    pub fn agent(&self) -> Option<AgentKind> {
        AgentKind::of_extension(
            self.properties.publisher.as_deref()?,
            self.properties.extension_type.as_deref()?,
        )
    }

    pub fn provisioning_state(&self) -> Option<&str> {
        self.properties.provisioning_state.as_deref()
    }
}

/// `identity` of a VM or Arc machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineIdentity {
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned` or `None`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Keyed by user-assigned identity resource id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_assigned_identities: BTreeMap<String, serde_json::Value>,
}

impl MachineIdentity {
    pub fn has_system_assigned(&self) -> bool {
        self.identity_type.as_deref().is_some_and(|t| {
            t.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("SystemAssigned"))
        })
    }

    /// The `identity` of a PATCH that adds the system-assigned identity and keeps every
    /// user-assigned one (ARM drops the ones not resent). `None` when nothing needs to change.
    pub fn enable_system_assigned_patch(current: Option<&Self>) -> Option<serde_json::Value> {
        if current.is_some_and(Self::has_system_assigned) {
            return None;
        }
        let user: Vec<&String> = current
            .map(|c| c.user_assigned_identities.keys().collect())
            .unwrap_or_default();
        let identity = if user.is_empty() {
            serde_json::json!({"type": "SystemAssigned"})
        } else {
            let map: serde_json::Map<String, serde_json::Value> = user
                .into_iter()
                .map(|k| (k.clone(), serde_json::json!({})))
                .collect();
            serde_json::json!({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": map})
        };
        Some(serde_json::json!({ "identity": identity }))
    }
}

/// The parts of a VM or Arc machine resource the migration reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<MachineIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub properties: serde_json::Value,
}

/// A data collection rule association (Microsoft.Insights 2023-03-11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DcrAssociation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub properties: DcrAssociationProperties,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DcrAssociationProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collection_rule_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collection_endpoint_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
    /// Read-only `provisionedBy*`: set when another offering manages the association.
    #[serde(default, skip_serializing)]
    pub metadata: Option<serde_json::Value>,
}

impl DcrAssociation {
    pub fn for_rule(dcr_id: &str, description: Option<&str>) -> Self {
        Self {
            id: None,
            name: None,
            resource_type: None,
            etag: None,
            properties: DcrAssociationProperties {
                description: description.map(str::to_string),
                data_collection_rule_id: Some(dcr_id.to_string()),
                ..Default::default()
            },
        }
    }

    /// Managed on behalf of another offering (e.g. Defender): do not delete blindly.
    pub fn is_provisioned_by_other(&self) -> bool {
        self.properties
            .metadata
            .as_ref()
            .and_then(|m| m.get("provisionedBy"))
            .and_then(|v| v.as_str())
            .is_some_and(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protected_settings_are_sent_but_never_debug_printed() {
        let mut ext = Extension::install(
            "westeurope",
            "Microsoft.EnterpriseCloud.Monitoring",
            "MicrosoftMonitoringAgent",
            Some("1.0"),
            Some(json!({"workspaceId": "w"})),
        );
        ext.properties.protected_settings = Some(json!({"workspaceKey": "s3cr3t-key"}));
        let dbg = format!("{ext:?} {:#?}", ext);
        assert!(!dbg.contains("s3cr3t-key"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let wire = serde_json::to_string(&ext).unwrap();
        assert!(wire.contains("s3cr3t-key"), "the PUT body carries it");
        assert_eq!(ext.agent(), Some(AgentKind::Legacy));
    }

    #[test]
    fn read_only_fields_are_read_not_sent() {
        let ext: Extension = serde_json::from_value(json!({
            "name": "whatever-name", "location": "westeurope",
            "properties": {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent", "provisioningState": "Creating",
                           "instanceView": {"statuses": []}}
        })).unwrap();
        assert_eq!(ext.provisioning_state(), Some("Creating"));
        assert_eq!(ext.agent(), Some(AgentKind::Ama));
        let wire = serde_json::to_value(&ext).unwrap();
        assert!(wire["properties"].get("provisioningState").is_none());
        assert!(wire["properties"].get("instanceView").is_none());
    }

    #[test]
    fn enabling_system_identity_keeps_user_assigned() {
        assert_eq!(
            MachineIdentity::enable_system_assigned_patch(None),
            Some(json!({"identity": {"type": "SystemAssigned"}}))
        );
        let ua: MachineIdentity = serde_json::from_value(json!({
            "type": "UserAssigned",
            "userAssignedIdentities": {"/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ID1": {"principalId": "p", "clientId": "c"}}
        })).unwrap();
        assert_eq!(
            MachineIdentity::enable_system_assigned_patch(Some(&ua)),
            Some(
                json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ID1": {}}}})
            )
        );
        let both = MachineIdentity {
            identity_type: Some("SystemAssigned, UserAssigned".into()),
            ..Default::default()
        };
        assert!(both.has_system_assigned());
        assert_eq!(
            MachineIdentity::enable_system_assigned_patch(Some(&both)),
            None
        );
        let none = MachineIdentity {
            identity_type: Some("None".into()),
            ..Default::default()
        };
        assert!(MachineIdentity::enable_system_assigned_patch(Some(&none)).is_some());
    }

    #[test]
    fn association_provisioned_by_other_offering() {
        let a: DcrAssociation =
            serde_json::from_value(json!({"properties": {"dataCollectionRuleId": "/x",
            "metadata": {"provisionedBy": "Azure Security Center"}}}))
            .unwrap();
        assert!(a.is_provisioned_by_other());
        assert!(!DcrAssociation::for_rule("/x", None).is_provisioned_by_other());
        let wire = serde_json::to_value(DcrAssociation::for_rule("/x", Some("d"))).unwrap();
        assert_eq!(
            wire,
            json!({"properties": {"description": "d", "dataCollectionRuleId": "/x"}})
        );
    }
}
