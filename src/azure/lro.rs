//! Long-running operations (ARM async-operations rules): the `OperationHandle` is plain data, so
//! an operation started by one process can be persisted (e.g. in a CR status) and resumed by a
//! new client after a restart. Deciding what a response means is pure; the client polls.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::ArmErrorDetail;

/// How the operation's progress is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PollKind {
    /// GET the `Azure-AsyncOperation` URL: a status object with `status`.
    AzureAsyncOperation,
    /// GET the `Location` URL: 202 running, 200/201/204 done.
    Location,
    /// GET the resource itself: `properties.provisioningState` (404 = deleted).
    ResourceState,
}

/// The request that started the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LroMethod {
    Put,
    Patch,
    Delete,
}

impl LroMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// A running operation, persistable as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationHandle {
    pub method: LroMethod,
    pub poll_kind: PollKind,
    /// Absolute URL to poll (from the headers, or the resource URL with its api-version).
    pub poll_url: String,
    /// The resource URL with its api-version, for the final GET after a PUT/PATCH.
    pub resource_url: String,
    /// The ARM resource id the operation acts on.
    pub resource_id: String,
    /// Unix milliseconds when the operation was started.
    pub started_at_ms: u64,
    /// First poll delay the service asked for, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl OperationHandle {
    /// How long ago the operation started (zero if the clock went backwards).
    pub fn age(&self, now: SystemTime) -> Duration {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(now_ms.saturating_sub(self.started_at_ms))
    }
}

/// The LRO-relevant headers of a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LroHeaders {
    pub azure_async_operation: Option<String>,
    pub location: Option<String>,
    pub retry_after: Option<Duration>,
}

/// `provisioningState` values after which nothing changes.
pub fn is_terminal_state(state: &str) -> bool {
    ["Succeeded", "Failed", "Canceled", "Cancelled"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(state))
}

fn provisioning_state(body: Option<&serde_json::Value>) -> Option<&str> {
    body?.get("properties")?.get("provisioningState")?.as_str()
}

/// What an initial PUT/PATCH/DELETE response means: `None` when the operation already finished,
/// else a handle to poll.
pub struct StartedRequest<'a> {
    pub method: LroMethod,
    pub status: u16,
    pub headers: &'a LroHeaders,
    pub body: Option<&'a serde_json::Value>,
    pub resource_id: &'a str,
    pub resource_url: &'a str,
    pub now: SystemTime,
}

pub fn operation_from_response(r: StartedRequest<'_>) -> Option<OperationHandle> {
    let state = provisioning_state(r.body);
    let accepted = matches!(r.status, 201 | 202);
    let running_state = state.is_some_and(|s| !is_terminal_state(s));
    if r.status == 204 || r.status == 404 || !(accepted || running_state) {
        return None;
    }
    // 201 with a terminal (or no) provisioningState and no tracking header: finished.
    let has_header = r.headers.azure_async_operation.is_some() || r.headers.location.is_some();
    if r.status == 201 && !running_state && !has_header {
        return None;
    }
    let (poll_kind, poll_url) = if let Some(u) = &r.headers.azure_async_operation {
        (PollKind::AzureAsyncOperation, u.clone())
    } else if let Some(u) = &r.headers.location {
        (PollKind::Location, u.clone())
    } else {
        (PollKind::ResourceState, r.resource_url.to_string())
    };
    Some(OperationHandle {
        method: r.method,
        poll_kind,
        poll_url,
        resource_url: r.resource_url.to_string(),
        resource_id: r.resource_id.to_string(),
        started_at_ms: r
            .now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        retry_after_ms: r.headers.retry_after.map(|d| d.as_millis() as u64),
    })
}

/// The state a poll response reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollState {
    Running,
    Succeeded,
    /// `status` is `Failed` or `Canceled`.
    Failed {
        status: String,
        error: ArmErrorDetail,
    },
    /// The poll response is an HTTP error that is not a terminal state (the client surfaces it).
    HttpError,
}

/// Interprets one poll response.
pub fn interpret_poll(
    kind: PollKind,
    method: LroMethod,
    status: u16,
    body: Option<&serde_json::Value>,
) -> PollState {
    if status == 404 && method == LroMethod::Delete {
        return PollState::Succeeded;
    }
    if !(200..300).contains(&status) {
        return PollState::HttpError;
    }
    match kind {
        PollKind::Location => {
            if status == 202 {
                PollState::Running
            } else {
                PollState::Succeeded
            }
        }
        PollKind::AzureAsyncOperation => {
            let s = body.and_then(|b| b.get("status")).and_then(|s| s.as_str());
            match s {
                Some(s) if s.eq_ignore_ascii_case("Succeeded") => PollState::Succeeded,
                Some(s) if is_terminal_state(s) => PollState::Failed {
                    status: s.to_string(),
                    error: error_of(body),
                },
                // A status object without `status` is malformed; keep polling (bounded).
                _ => PollState::Running,
            }
        }
        PollKind::ResourceState => match provisioning_state(body) {
            None if status == 202 => PollState::Running,
            None => PollState::Succeeded,
            Some(s) if s.eq_ignore_ascii_case("Succeeded") => {
                if method == LroMethod::Delete {
                    // The resource is still there: the delete has not happened yet.
                    PollState::Running
                } else {
                    PollState::Succeeded
                }
            }
            Some(s) if is_terminal_state(s) => PollState::Failed {
                status: s.to_string(),
                error: error_of(body),
            },
            Some(_) => PollState::Running,
        },
    }
}

/// The error of a failed status object or resource (ARM puts it in `error`; Compute extensions
/// put it in `properties.instanceView.statuses[]`).
fn error_of(body: Option<&serde_json::Value>) -> ArmErrorDetail {
    let Some(body) = body else {
        return ArmErrorDetail::default();
    };
    if let Some(e) = body.get("error")
        && let Ok(d) = serde_json::from_value::<ArmErrorDetail>(e.clone())
    {
        return d;
    }
    let statuses = body
        .pointer("/properties/instanceView/statuses")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    let arc_status = body.pointer("/properties/instanceView/status").cloned();
    for s in statuses.iter().chain(arc_status.iter()) {
        let level = s.get("level").and_then(|l| l.as_str()).unwrap_or("");
        if level.eq_ignore_ascii_case("Error") {
            return ArmErrorDetail {
                code: s
                    .get("code")
                    .and_then(|c| c.as_str())
                    .unwrap_or("ProvisioningFailed")
                    .to_string(),
                message: s
                    .get("message")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_string(),
                ..Default::default()
            };
        }
    }
    ArmErrorDetail {
        code: "ProvisioningFailed".into(),
        message: "the operation failed without an error object".into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn start(
        method: LroMethod,
        status: u16,
        headers: &LroHeaders,
        body: Option<&serde_json::Value>,
    ) -> Option<OperationHandle> {
        operation_from_response(StartedRequest {
            method,
            status,
            headers,
            body,
            resource_id: "/subscriptions/s/x",
            resource_url: "http://h/subscriptions/s/x?api-version=1",
            now: UNIX_EPOCH + Duration::from_secs(100),
        })
    }

    #[test]
    fn async_operation_header_wins_over_location() {
        let h = LroHeaders {
            azure_async_operation: Some("http://h/op/1".into()),
            location: Some("http://h/loc/1".into()),
            retry_after: Some(Duration::from_secs(3)),
        };
        let op = start(LroMethod::Put, 201, &h, None).unwrap();
        assert_eq!(op.poll_kind, PollKind::AzureAsyncOperation);
        assert_eq!(op.poll_url, "http://h/op/1");
        assert_eq!(op.retry_after_ms, Some(3000));
        assert_eq!(op.started_at_ms, 100_000);
        let h = LroHeaders {
            location: Some("http://h/loc/1".into()),
            ..Default::default()
        };
        let op = start(LroMethod::Delete, 202, &h, None).unwrap();
        assert_eq!(op.poll_kind, PollKind::Location);
        // handle round-trips through JSON
        let back: OperationHandle =
            serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
        assert_eq!(back, op);
    }

    #[test]
    fn finished_responses_have_no_handle() {
        let none = LroHeaders::default();
        let done = json!({"properties": {"provisioningState": "Succeeded"}});
        assert!(start(LroMethod::Put, 200, &none, Some(&done)).is_none());
        assert!(start(LroMethod::Put, 201, &none, Some(&done)).is_none());
        assert!(start(LroMethod::Put, 200, &none, Some(&json!({"properties": {}}))).is_none());
        assert!(start(LroMethod::Delete, 204, &none, None).is_none());
        assert!(start(LroMethod::Delete, 200, &none, None).is_none());
        assert!(start(LroMethod::Delete, 404, &none, None).is_none());
        // a non-terminal state without headers polls the resource
        let creating = json!({"properties": {"provisioningState": "Creating"}});
        let op = start(LroMethod::Put, 201, &none, Some(&creating)).unwrap();
        assert_eq!(op.poll_kind, PollKind::ResourceState);
        assert_eq!(op.poll_url, op.resource_url);
        let op = start(
            LroMethod::Patch,
            200,
            &none,
            Some(&json!({"properties": {"provisioningState": "Updating"}})),
        )
        .unwrap();
        assert_eq!(op.poll_kind, PollKind::ResourceState);
        // a bare 202 polls the resource too
        assert!(start(LroMethod::Delete, 202, &none, None).is_some());
    }

    #[test]
    fn poll_interpretation() {
        use PollKind::*;
        let st = |s: &str| json!({"status": s});
        assert_eq!(
            interpret_poll(
                AzureAsyncOperation,
                LroMethod::Put,
                200,
                Some(&st("InProgress"))
            ),
            PollState::Running
        );
        assert_eq!(
            interpret_poll(
                AzureAsyncOperation,
                LroMethod::Put,
                200,
                Some(&st("Succeeded"))
            ),
            PollState::Succeeded
        );
        let failed = json!({"status": "Failed", "error": {"code": "VMExtensionProvisioningError", "message": "boom"}});
        match interpret_poll(AzureAsyncOperation, LroMethod::Put, 200, Some(&failed)) {
            PollState::Failed { status, error } => {
                assert_eq!(status, "Failed");
                assert_eq!(error.code, "VMExtensionProvisioningError");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            interpret_poll(
                AzureAsyncOperation,
                LroMethod::Put,
                200,
                Some(&st("Canceled"))
            ),
            PollState::Failed { .. }
        ));
        assert_eq!(
            interpret_poll(Location, LroMethod::Delete, 202, None),
            PollState::Running
        );
        assert_eq!(
            interpret_poll(Location, LroMethod::Delete, 200, None),
            PollState::Succeeded
        );
        assert_eq!(
            interpret_poll(Location, LroMethod::Delete, 204, None),
            PollState::Succeeded
        );
        assert_eq!(
            interpret_poll(Location, LroMethod::Delete, 404, None),
            PollState::Succeeded
        );
        assert_eq!(
            interpret_poll(AzureAsyncOperation, LroMethod::Delete, 404, None),
            PollState::Succeeded
        );
        assert_eq!(
            interpret_poll(Location, LroMethod::Put, 404, None),
            PollState::HttpError
        );
        assert_eq!(
            interpret_poll(Location, LroMethod::Put, 500, None),
            PollState::HttpError
        );
        let res = |s: &str| json!({"properties": {"provisioningState": s}});
        assert_eq!(
            interpret_poll(ResourceState, LroMethod::Put, 200, Some(&res("Creating"))),
            PollState::Running
        );
        assert_eq!(
            interpret_poll(ResourceState, LroMethod::Put, 200, Some(&res("Succeeded"))),
            PollState::Succeeded
        );
        assert_eq!(
            interpret_poll(
                ResourceState,
                LroMethod::Delete,
                200,
                Some(&res("Deleting"))
            ),
            PollState::Running
        );
        assert_eq!(
            interpret_poll(ResourceState, LroMethod::Delete, 404, None),
            PollState::Succeeded
        );
        let ext_failed = json!({"properties": {"provisioningState": "Failed", "instanceView": {"statuses": [
            {"code": "ProvisioningState/failed/-2125057015", "level": "Error", "message": "Extension install failed"}]}}});
        match interpret_poll(ResourceState, LroMethod::Put, 200, Some(&ext_failed)) {
            PollState::Failed { error, .. } => assert!(error.message.contains("install failed")),
            other => panic!("{other:?}"),
        }
    }
}
