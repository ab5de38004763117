//! Log Analytics query API v1: `POST /v1/workspaces/{customerId}/query`.

use super::client::{ArmClient, Request, Service};
use super::error::AzureError;
use super::throttle::BucketClass;
use crate::inventory::LogQueryResponse;

impl ArmClient {
    /// Runs a KQL query on the workspace (by its customer GUID). `timespan` is ISO-8601
    /// (`PT24H` or `start/end`).
    pub async fn query_logs(
        &self,
        workspace_guid: &str,
        query: &str,
        timespan: Option<&str>,
    ) -> Result<LogQueryResponse, AzureError> {
        let url = self.log_analytics_url(&format!("/v1/workspaces/{workspace_guid}/query"))?;
        let mut body = serde_json::json!({ "query": query });
        if let Some(t) = timespan {
            body["timespan"] = serde_json::Value::String(t.to_string());
        }
        let req = Request {
            method: reqwest::Method::POST,
            url: url.clone(),
            body: Some(body.to_string().into_bytes()),
            service: Service::LogAnalytics,
            subscription: None,
            class: BucketClass::LogQuery,
            buckets: vec![self.key("loganalytics", BucketClass::LogQuery)],
            if_match: None,
        };
        let resp = self.execute(&req).await?;
        match resp.status {
            404 => Err(AzureError::api("POST", url.path(), 404, &resp.body)),
            // 204: empty workspace; an empty body also means no tables.
            _ if resp.body.is_empty() => Ok(LogQueryResponse::default()),
            _ => resp.json("POST", url.path()),
        }
    }
}
