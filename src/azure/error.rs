//! Typed errors of the ARM client: they keep the HTTP status and the ARM error code so callers
//! (the migration state machine) can decide between waiting, retrying later and giving up.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::resource_id::ResourceIdError;

/// How a caller should treat a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Classification {
    /// Worth retrying after a pause (5xx, network, another operation in progress).
    Transient,
    /// The service asked us to slow down (429).
    Throttled,
    /// Retrying the same request will fail the same way (4xx, policy, locks, bad input).
    Permanent,
}

/// The ARM `ErrorResponse.error` object (common-types v5); Compute's `CloudError` has the same core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ArmErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ArmErrorDetail,
}

impl ArmErrorDetail {
    /// Reads `{"error":{...}}` (ARM, Resource Graph, Log Analytics OneAPI); `None` for other bodies.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<ErrorEnvelope>(body)
            .ok()
            .map(|e| e.error)
    }
}

/// ARM error codes that mean "try again shortly" even though the status is 4xx.
const TRANSIENT_CODES: &[&str] = &[
    "RetryableErrorDueToAnotherOperation",
    "AnotherOperationInProgress",
    "OperationPreempted",
];

/// Credential and configuration problems; every message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("credential {credential} needs {setting}, which is not set; {hint}")]
    MissingSetting {
        credential: &'static str,
        setting: &'static str,
        hint: &'static str,
    },
    #[error(
        "unauthenticated mode (credential None) is only allowed when every endpoint is loopback, but {endpoint} is {url}; configure a credential (workload-identity, managed-identity, client-secret, azure-cli)"
    )]
    UnauthenticatedRemote { endpoint: &'static str, url: String },
    #[error(
        "unknown credential kind {0:?}; expected one of workload-identity, managed-identity, client-secret, azure-cli, none"
    )]
    UnknownKind(String),
    #[error(
        "credential {credential} could not be created or could not get a token for {scope}: {message}"
    )]
    Credential {
        credential: &'static str,
        scope: String,
        message: String,
    },
}

/// Every failure of an ARM / Resource Graph / Log Analytics call.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error("{method} {path} failed with HTTP {status}: {code}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{method} {path}: network error: {message}")]
    Network {
        method: String,
        path: String,
        message: String,
    },
    #[error(
        "{method} {path}: gave up after {attempts} attempts in {elapsed:?}; last error: {last}"
    )]
    RetriesExhausted {
        method: String,
        path: String,
        attempts: u32,
        elapsed: Duration,
        last: Box<AzureError>,
    },
    #[error("long-running operation on {resource} ended {status}: {code}: {message}")]
    OperationFailed {
        resource: String,
        status: String,
        code: String,
        message: String,
    },
    #[error(
        "long-running operation on {resource} still running after {polls} polls in {waited:?}; resume it later from its handle"
    )]
    OperationStillRunning {
        resource: String,
        polls: u32,
        waited: Duration,
    },
    #[error("{method} {path}: unexpected response body: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    ResourceId(#[from] ResourceIdError),
    #[error("{id} is not {expected}")]
    UnsupportedResource { id: String, expected: &'static str },
    #[error(
        "refusing to follow {url}: its host differs from the configured endpoint {endpoint} (credentials are only sent there)"
    )]
    UntrustedUrl { url: String, endpoint: String },
    #[error("invalid URL {url}: {message}")]
    InvalidUrl { url: String, message: String },
}

/// Classification of an HTTP failure by status and ARM code (pure; shared by retry and callers).
pub fn classify_status(status: u16, code: &str) -> Classification {
    if status == 429 {
        return Classification::Throttled;
    }
    if TRANSIENT_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)) {
        return Classification::Transient;
    }
    match status {
        408 | 500 | 502 | 503 | 504 => Classification::Transient,
        _ => Classification::Permanent,
    }
}

impl AzureError {
    pub fn classification(&self) -> Classification {
        match self {
            Self::Api { status, code, .. } => classify_status(*status, code),
            Self::Network { .. } | Self::OperationStillRunning { .. } => Classification::Transient,
            Self::RetriesExhausted { last, .. } => last.classification(),
            Self::OperationFailed { code, .. } => {
                if TRANSIENT_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)) {
                    Classification::Transient
                } else {
                    Classification::Permanent
                }
            }
            Self::Decode { .. }
            | Self::Auth(_)
            | Self::ResourceId(_)
            | Self::UnsupportedResource { .. }
            | Self::UntrustedUrl { .. }
            | Self::InvalidUrl { .. } => Classification::Permanent,
        }
    }

    /// The ARM error code (`VMExtensionProvisioningError`, `AuthorizationFailed`, `ScopeLocked`, …).
    pub fn arm_code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } | Self::OperationFailed { code, .. } => Some(code),
            Self::RetriesExhausted { last, .. } => last.arm_code(),
            _ => None,
        }
    }

    /// The HTTP status of the failing response, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    pub(crate) fn api(method: &str, path: &str, status: u16, body: &[u8]) -> Self {
        let detail = ArmErrorDetail::from_body(body).unwrap_or_else(|| ArmErrorDetail {
            code: format!("Http{status}"),
            message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            ..Default::default()
        });
        Self::Api {
            method: method.to_string(),
            path: path.to_string(),
            status,
            code: detail.code,
            message: detail.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_status_and_code() {
        assert_eq!(
            classify_status(429, "TooManyRequests"),
            Classification::Throttled
        );
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(
                classify_status(s, "InternalServerError"),
                Classification::Transient
            );
        }
        for (s, code) in [
            (403, "AuthorizationFailed"),
            (409, "ScopeLocked"),
            (403, "RequestDisallowedByPolicy"),
            (409, "OperationNotAllowed"),
            (409, "Conflict"),
            (400, "VMExtensionProvisioningError"),
            (404, "ResourceNotFound"),
        ] {
            assert_eq!(
                classify_status(s, code),
                Classification::Permanent,
                "{code}"
            );
        }
        assert_eq!(
            classify_status(409, "RetryableErrorDueToAnotherOperation"),
            Classification::Transient
        );
    }

    #[test]
    fn api_error_keeps_status_code_and_message() {
        let body = br#"{"error":{"code":"ScopeLocked","message":"The scope is locked"}}"#;
        let e = AzureError::api("DELETE", "/subscriptions/s/x", 409, body);
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.arm_code(), Some("ScopeLocked"));
        assert_eq!(e.classification(), Classification::Permanent);
        assert!(e.to_string().contains("The scope is locked"));
        let wrapped = AzureError::RetriesExhausted {
            method: "GET".into(),
            path: "/p".into(),
            attempts: 3,
            elapsed: Duration::from_secs(1),
            last: Box::new(AzureError::api("GET", "/p", 503, b"oops")),
        };
        assert_eq!(wrapped.classification(), Classification::Transient);
        assert_eq!(wrapped.arm_code(), Some("Http503"));
    }
}
