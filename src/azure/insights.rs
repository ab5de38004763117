//! Data collection rules (full PUT, not an LRO) and their associations with machines
//! (Microsoft.Insights 2023-03-11).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ResourceId;
use super::api_versions::INSIGHTS;
use super::client::ArmClient;
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
