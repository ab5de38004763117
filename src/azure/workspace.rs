//! Workspace dataSources (Microsoft.OperationalInsights 2025-02-01): the legacy agent's
//! workspace-wide collection settings, including the Sentinel Security Events tier.

use super::ResourceId;
use super::api_versions::OPERATIONAL_INSIGHTS;
use super::client::ArmClient;
use super::datasource::{WorkspaceDataSource, kinds};
use super::error::AzureError;

/// The legacy Security Events tier as stored under both kinds that carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityEventsTier {
    /// `(dataSource name, tier)` of `SecurityInsightsSecurityEventCollectionConfiguration` (Sentinel).
    pub sentinel: Vec<(String, String)>,
    /// `(dataSource name, tier)` of `SecurityEventCollectionConfiguration` (Defender for Cloud).
    pub security_center: Vec<(String, String)>,
}

impl SecurityEventsTier {
    /// True when any configuration still collects security events (tier other than None).
    pub fn legacy_collects(&self) -> bool {
        self.sentinel
            .iter()
            .chain(&self.security_center)
            .any(|(_, t)| !t.eq_ignore_ascii_case("None") && !t.is_empty())
    }
}

fn tiers(sources: Vec<WorkspaceDataSource>) -> Vec<(String, String)> {
    sources
        .into_iter()
        .map(|d| {
            let tier = d
                .properties
                .get("tier")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_string();
            (d.name.unwrap_or_default(), tier)
        })
        .collect()
}

fn require_workspace(ws: &ResourceId) -> Result<(), AzureError> {
    if ws.is_type("Microsoft.OperationalInsights/workspaces") {
        Ok(())
    } else {
        Err(AzureError::UnsupportedResource {
            id: ws.to_string(),
            expected: "a Microsoft.OperationalInsights/workspaces id",
        })
    }
}

impl ArmClient {
    /// dataSources of one kind (`$filter` is required by the API), all pages.
    pub async fn list_data_sources(
        &self,
        workspace: &ResourceId,
        kind: &str,
    ) -> Result<Vec<WorkspaceDataSource>, AzureError> {
        require_workspace(workspace)?;
        let filter = format!("kind='{kind}'");
        let url = self.arm_url(
            &format!("{workspace}/dataSources"),
            OPERATIONAL_INSIGHTS,
            &[("$filter", &filter)],
        )?;
        self.list_paged(url, workspace.subscription()).await
    }

    pub async fn get_data_source(
        &self,
        workspace: &ResourceId,
        name: &str,
    ) -> Result<Option<WorkspaceDataSource>, AzureError> {
        require_workspace(workspace)?;
        let url = self.arm_url(
            &format!("{workspace}/dataSources/{name}"),
            OPERATIONAL_INSIGHTS,
            &[],
        )?;
        self.get_optional(url, workspace.subscription()).await
    }

    /// Creates or updates a dataSource (not an LRO). Read-only fields are not sent.
    pub async fn put_data_source(
        &self,
        workspace: &ResourceId,
        name: &str,
        source: &WorkspaceDataSource,
    ) -> Result<WorkspaceDataSource, AzureError> {
        require_workspace(workspace)?;
        let url = self.arm_url(
            &format!("{workspace}/dataSources/{name}"),
            OPERATIONAL_INSIGHTS,
            &[],
        )?;
        let body = WorkspaceDataSource {
            id: None,
            name: None,
            resource_type: None,
            kind: source.kind.clone(),
            properties: source.properties.clone(),
            etag: source.etag.clone(),
        };
        self.put_plain(url, workspace.subscription(), &body).await
    }

    /// Reads the Security Events tier from both kinds that may hold it.
    pub async fn security_events_tier(
        &self,
        workspace: &ResourceId,
    ) -> Result<SecurityEventsTier, AzureError> {
        Ok(SecurityEventsTier {
            sentinel: tiers(
                self.list_data_sources(workspace, kinds::SENTINEL_SECURITY_EVENTS)
                    .await?,
            ),
            security_center: tiers(
                self.list_data_sources(workspace, kinds::SECURITY_CENTER_SECURITY_EVENTS)
                    .await?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_reading() {
        let ds = |tier: &str| WorkspaceDataSource {
            id: None,
            name: Some("SecurityInsightsSecurityEventCollectionConfiguration".into()),
            resource_type: None,
            kind: kinds::SENTINEL_SECURITY_EVENTS.into(),
            properties: serde_json::json!({"tier": tier, "tierSetMethod": "Custom"}),
            etag: None,
        };
        let t = SecurityEventsTier {
            sentinel: tiers(vec![ds("None")]),
            security_center: vec![],
        };
        assert!(!t.legacy_collects());
        let t = SecurityEventsTier {
            sentinel: tiers(vec![ds("None")]),
            security_center: tiers(vec![ds("Recommended")]),
        };
        assert!(t.legacy_collects());
        assert_eq!(t.security_center[0].1, "Recommended");
    }
}
