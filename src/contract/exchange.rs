//! Checking one logged HTTP exchange (request + response) against the specs, including the
//! long-running-operation URLs that no operation in the specs describes.

use serde_json::Value;

use super::operations::OperationInfo;
use super::paths;
use super::schema::{Direction, Place, Violation};
use super::specs::SpecSet;

/// The common-types file whose `OperationStatusResult` describes `Azure-AsyncOperation` bodies.
const COMMON_V5: &str = "specification/common-types/resource-management/v5/types.json";

/// One request and the response it got, as a request log records them.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub method: &'a str,
    /// Path, optionally with `?query` (then `query` may be empty).
    pub path: &'a str,
    /// Decoded query pairs (merged with any query in `path`).
    pub query: &'a [(String, String)],
    pub request_body: Option<&'a Value>,
    pub status: u16,
    pub response_body: Option<&'a Value>,
}

/// What was checked for an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Request and response validated against this operation.
    Operation(OperationInfo),
    /// An `Azure-AsyncOperation` status body, validated against common-types v5
    /// `OperationStatusResult`.
    OperationStatus,
    /// A `Location` poll: 202 without body, or the final resource validated as a GET of its `id`.
    OperationResult(Option<OperationInfo>),
    /// Not described by any spec here; the reason says which kind of URL it was.
    Skipped(&'static str),
}

impl SpecSet {
    /// Validates a logged exchange: the request against its operation's parameters and body
    /// schema, and the response against the schema of its status.
    pub fn validate_exchange(&self, ex: &Exchange<'_>) -> Result<Checked, Vec<Violation>> {
        let (path, mut query) = paths::split_path_and_query(ex.path);
        query.extend(ex.query.iter().cloned());
        let segs = paths::split_path(&path);
        let low: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
        if low.first().is_some_and(|s| s == "_sim") {
            return Ok(Checked::Skipped("simulator control endpoint"));
        }
        if low.first().is_some_and(|s| s == "v1") {
            return Ok(Checked::Skipped(
                "Log Analytics query API (api.loganalytics.io): not part of the ARM specs here",
            ));
        }
        let api_version = query
            .iter()
            .find(|(k, _)| k == "api-version")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let full = rebuild(&path, &query);
        // `/subscriptions/{s}/providers/{ns}/locations/{loc}/operations|operationResults/{id}`
        if low.len() == 8
            && low[0] == "subscriptions"
            && low[2] == "providers"
            && low[4] == "locations"
        {
            return match low[6].as_str() {
                "operations" | "operationstatus" | "operationstatuses" => {
                    self.check_operation_status(ex)
                }
                "operationresults" => self.check_operation_result(ex, &api_version),
                _ => Ok(Checked::Skipped(
                    "provider location URL not described by the specs",
                )),
            };
        }
        let mut violations = Vec::new();
        let info = match self.validate_request(ex.method, &full, ex.request_body) {
            Ok(info) => Some(info),
            Err(v) => {
                let lookup_failed = v.iter().any(|v| v.place == Place::Operation);
                violations.extend(tag(v, "request"));
                if lookup_failed {
                    return Err(violations);
                }
                None
            }
        };
        match self.validate_response(ex.method, &full, ex.status, ex.response_body) {
            Ok(resp_info) if violations.is_empty() => {
                Ok(Checked::Operation(info.unwrap_or(resp_info)))
            }
            Ok(_) => Err(violations),
            Err(v) => {
                violations.extend(tag(v, "response"));
                Err(violations)
            }
        }
    }

    fn check_operation_status(&self, ex: &Exchange<'_>) -> Result<Checked, Vec<Violation>> {
        if ex.method != "GET" {
            return Err(vec![status_violation(format!(
                "operation status URLs are polled with GET, not {}",
                ex.method
            ))]);
        }
        match (ex.status, ex.response_body) {
            (200, Some(body)) => self
                .validate_schema_ref_as(
                    Direction::Response,
                    COMMON_V5,
                    "#/definitions/OperationStatusResult",
                    body,
                )
                .map(|()| Checked::OperationStatus)
                .map_err(|v| tag(v, "operation status")),
            (200, None) => Err(vec![status_violation(
                "operation status 200 without a body".into(),
            )]),
            (s, Some(body)) if s >= 400 => {
                self.check_error(body).map(|()| Checked::OperationStatus)
            }
            (s, _) => Err(vec![status_violation(format!(
                "unexpected status {s} from an operation status URL"
            ))]),
        }
    }

    fn check_operation_result(
        &self,
        ex: &Exchange<'_>,
        api_version: &str,
    ) -> Result<Checked, Vec<Violation>> {
        match (ex.status, ex.response_body) {
            (202 | 204, None) => Ok(Checked::OperationResult(None)),
            (200, Some(body)) => {
                let Some(id) = body.get("id").and_then(Value::as_str) else {
                    return Err(vec![status_violation(
                        "operation result 200 body has no resource `id`".into(),
                    )]);
                };
                let get = format!("{id}?api-version={api_version}");
                self.validate_response("GET", &get, 200, Some(body))
                    .map(|info| Checked::OperationResult(Some(info)))
                    .map_err(|v| tag(v, "operation result (as GET of its id)"))
            }
            (s, Some(body)) if s >= 400 => self
                .check_error(body)
                .map(|()| Checked::OperationResult(None)),
            (s, _) => Err(vec![status_violation(format!(
                "unexpected status {s} (or body) from an operation result URL"
            ))]),
        }
    }

    fn check_error(&self, body: &Value) -> Result<(), Vec<Violation>> {
        self.validate_schema_ref_as(
            Direction::Response,
            COMMON_V5,
            "#/definitions/ErrorResponse",
            body,
        )
        .map_err(|v| tag(v, "error body"))
    }
}

fn rebuild(path: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", paths::percent_encode(k), paths::percent_encode(v)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

fn tag(violations: Vec<Violation>, what: &str) -> Vec<Violation> {
    violations
        .into_iter()
        .map(|mut v| {
            v.message = format!("{what}: {}", v.message);
            v
        })
        .collect()
}

fn status_violation(message: String) -> Violation {
    Violation {
        place: Place::Status,
        pointer: String::new(),
        message,
    }
}
