//! Data collection rules (full PUT, not an LRO) and their associations with machines
//! (Microsoft.Insights 2023-03-11).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ResourceId;
use super::api_versions::INSIGHTS;
use super::client::ArmClient;
use super::dcr::DataCollectionRule;
use super::error::AzureError;
use super::throttle::BucketClass;
use super::types::DcrAssociation;

fn require_dcr(id: &ResourceId) -> Result<(), AzureError> {
    if id.is_type("Microsoft.Insights/dataCollectionRules") {
        Ok(())
    } else {
        Err(AzureError::UnsupportedResource {
            id: id.to_string(),
            expected: "a Microsoft.Insights/dataCollectionRules id",
        })
    }
}

/// The rule without its read-only fields: a read-modify-PUT must not echo them.
pub fn writable_dcr(rule: &DataCollectionRule) -> DataCollectionRule {
    let mut r = rule.clone();
    r.id = None;
    r.name = None;
    r.resource_type = None;
    r.etag = None;
    r.properties.immutable_id = None;
    r.properties.provisioning_state = None;
    for d in &mut r.properties.destinations.log_analytics {
        d.workspace_id = None;
    }
    r
}

impl ArmClient {
    /// GET a DCR into the caller's type (e.g. `crate::azure::dcr::DataCollectionRule`).
    pub async fn get_dcr<T: DeserializeOwned>(
        &self,
        dcr: &ResourceId,
    ) -> Result<Option<T>, AzureError> {
        require_dcr(dcr)?;
        let url = self.arm_url(dcr.as_str(), INSIGHTS, &[])?;
        self.get_optional(url, dcr.subscription()).await
    }

    /// Creates or fully replaces a DCR (PATCH cannot change `properties`).
    pub async fn put_dcr<B: Serialize, T: DeserializeOwned>(
        &self,
        dcr: &ResourceId,
        rule: &B,
    ) -> Result<T, AzureError> {
        require_dcr(dcr)?;
        let url = self.arm_url(dcr.as_str(), INSIGHTS, &[])?;
        self.put_plain(url, dcr.subscription(), rule).await
    }

    /// Deletes a DCR (synchronous): `Ok(true)` when it existed (200), `Ok(false)` when it was
    /// already gone (204 or 404). Used by a whole-plan rollback for the DCRs the plan owns.
    pub async fn delete_dcr(&self, dcr: &ResourceId) -> Result<bool, AzureError> {
        require_dcr(dcr)?;
        let url = self.arm_url(dcr.as_str(), INSIGHTS, &[])?;
        let req = self.arm_request(
            reqwest::Method::DELETE,
            url,
            dcr.subscription(),
            BucketClass::Delete,
            &[],
            None,
        );
        let resp = self.execute(&req).await?;
        Ok(resp.status == 200)
    }

    /// GET a DCR as the shared wire type.
    pub async fn get_data_collection_rule(
        &self,
        dcr: &ResourceId,
    ) -> Result<Option<DataCollectionRule>, AzureError> {
        self.get_dcr(dcr).await
    }

    /// Full PUT of a DCR; read-only fields (from an earlier GET) are not sent.
    pub async fn put_data_collection_rule(
        &self,
        dcr: &ResourceId,
        rule: &DataCollectionRule,
    ) -> Result<DataCollectionRule, AzureError> {
        self.put_dcr(dcr, &writable_dcr(rule)).await
    }

    /// PUT that is not a long-running operation (200/201 with the resource).
    pub(crate) async fn put_plain<B: Serialize, T: DeserializeOwned>(
        &self,
        url: url::Url,
        subscription: &str,
        body: &B,
    ) -> Result<T, AzureError> {
        let bytes = serde_json::to_vec(body).map_err(|e| AzureError::Decode {
            method: "PUT".into(),
            path: url.path().into(),
            message: format!("cannot serialize the request body: {e}"),
        })?;
        let req = self.arm_request(
            reqwest::Method::PUT,
            url.clone(),
            subscription,
            BucketClass::Write,
            &[],
            Some(bytes),
        );
        let resp = self.execute(&req).await?;
        if resp.status == 404 {
            return Err(AzureError::api("PUT", url.path(), 404, &resp.body));
        }
        resp.json("PUT", url.path())
    }

    fn association_url(
        &self,
        machine: &ResourceId,
        name: Option<&str>,
    ) -> Result<url::Url, AzureError> {
        let mut path =
            format!("{machine}/providers/Microsoft.Insights/dataCollectionRuleAssociations");
        if let Some(n) = name {
            path.push('/');
            path.push_str(n);
        }
        self.arm_url(&path, INSIGHTS, &[])
    }

    pub async fn put_association(
        &self,
        machine: &ResourceId,
        name: &str,
        association: &DcrAssociation,
    ) -> Result<DcrAssociation, AzureError> {
        let url = self.association_url(machine, Some(name))?;
        self.put_plain(url, machine.subscription(), association)
            .await
    }

    pub async fn get_association(
        &self,
        machine: &ResourceId,
        name: &str,
    ) -> Result<Option<DcrAssociation>, AzureError> {
        let url = self.association_url(machine, Some(name))?;
        self.get_optional(url, machine.subscription()).await
    }

    /// Deletes an association; `Ok(false)` when it did not exist (204 or 404).
    pub async fn delete_association(
        &self,
        machine: &ResourceId,
        name: &str,
    ) -> Result<bool, AzureError> {
        let url = self.association_url(machine, Some(name))?;
        let req = self.arm_request(
            reqwest::Method::DELETE,
            url,
            machine.subscription(),
            BucketClass::Delete,
            &[],
            None,
        );
        let resp = self.execute(&req).await?;
        Ok(resp.status == 200 || resp.status == 202)
    }

    /// Every association of the machine (DCR and DCE associations mixed).
    pub async fn list_associations(
        &self,
        machine: &ResourceId,
    ) -> Result<Vec<DcrAssociation>, AzureError> {
        let url = self.association_url(machine, None)?;
        self.list_paged(url, machine.subscription()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_dcr_fields_are_not_sent() {
        let got: DataCollectionRule = serde_json::from_value(serde_json::json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/d",
            "name": "d", "type": "Microsoft.Insights/dataCollectionRules", "etag": "e", "location": "westeurope",
            "properties": {"immutableId": "dcr-1", "provisioningState": "Succeeded",
                "destinations": {"logAnalytics": [{"name": "la", "workspaceResourceId": "/w", "workspaceId": "guid"}]},
                "dataFlows": [{"streams": ["Microsoft-Syslog"], "destinations": ["la"]}]}
        }))
        .unwrap();
        let wire = serde_json::to_value(writable_dcr(&got)).unwrap();
        for ptr in [
            "/id",
            "/name",
            "/type",
            "/etag",
            "/properties/immutableId",
            "/properties/provisioningState",
            "/properties/destinations/logAnalytics/0/workspaceId",
        ] {
            assert!(wire.pointer(ptr).is_none(), "{ptr} sent");
        }
        assert_eq!(
            wire.pointer("/properties/destinations/logAnalytics/0/workspaceResourceId")
                .unwrap(),
            "/w"
        );
    }
}
