//! Resource Graph queries with `$skipToken` paging (Microsoft.ResourceGraph 2024-04-01).

use serde::de::DeserializeOwned;

use super::api_versions::RESOURCE_GRAPH;
use super::client::{ArmClient, Request, Service};
use super::error::AzureError;
use super::throttle::BucketClass;
use crate::inventory::ResourceGraphResponse;

/// Rows per page (the API maximum).
const PAGE_SIZE: u32 = 1000;
/// Upper bound on pages of one query (10 M rows).
const MAX_PAGES: usize = 10_000;

/// The request body for one page.
pub fn query_body(
    subscriptions: &[String],
    query: &str,
    skip_token: Option<&str>,
) -> serde_json::Value {
    let mut options = serde_json::json!({"$top": PAGE_SIZE, "resultFormat": "objectArray"});
    if let Some(t) = skip_token {
        options["$skipToken"] = serde_json::Value::String(t.to_string());
    }
    serde_json::json!({"subscriptions": subscriptions, "query": query, "options": options})
}

impl ArmClient {
    /// Runs `query` over `subscriptions` and returns every row of every page.
    pub async fn query_resource_graph<T: DeserializeOwned>(
        &self,
        subscriptions: &[String],
        query: &str,
    ) -> Result<Vec<T>, AzureError> {
        let url = self.arm_url(
            "/providers/Microsoft.ResourceGraph/resources",
            RESOURCE_GRAPH,
            &[],
        )?;
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let body = serde_json::to_vec(&query_body(subscriptions, query, token.as_deref()))
                .map_err(|e| AzureError::Decode {
                    method: "POST".into(),
                    path: url.path().into(),
                    message: e.to_string(),
                })?;
            let req = Request {
                method: reqwest::Method::POST,
                url: url.clone(),
                body: Some(body),
                service: Service::Arm,
                subscription: None,
                class: BucketClass::ResourceGraph,
                buckets: vec![self.key("resourcegraph", BucketClass::ResourceGraph)],
                if_match: None,
            };
            let resp = self.execute(&req).await?;
            if resp.status == 404 {
                return Err(AzureError::api("POST", url.path(), 404, &resp.body));
            }
            let page: ResourceGraphResponse<T> = resp.json("POST", url.path())?;
            rows.extend(page.data);
            match page.skip_token.filter(|t| !t.is_empty()) {
                Some(t) if token.as_deref() != Some(t.as_str()) => token = Some(t),
                _ => return Ok(rows),
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_body_carries_the_skip_token() {
        let b = query_body(&["s1".into()], "Resources", None);
        assert!(b["options"].get("$skipToken").is_none());
        assert_eq!(b["options"]["$top"], 1000);
        let b = query_body(&["s1".into()], "Resources", Some("tok"));
        assert_eq!(b["options"]["$skipToken"], "tok");
        assert_eq!(b["subscriptions"][0], "s1");
    }
}
