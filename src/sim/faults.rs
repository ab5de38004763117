//! Injectable faults (domain.md §C.9): switched on by the scenario, by `POST /_sim/faults`, or by
//! `SimHandle::inject`. Faults that change a machine (deallocate, no heartbeat, stuck delete) are
//! applied to the world; the rest are consulted on every request.

use serde::{Deserialize, Serialize};

use super::clock::SimMillis;

fn default_status() -> u16 {
    500
}
fn default_probability() -> f64 {
    1.0
}

/// One fault. JSON: `{"kind": "ServerErrors", "count": 3, "status": 503}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Fault {
    /// The next `count` ARM requests fail with `status` (500 or 503).
    ServerErrors {
        count: u32,
        #[serde(default = "default_status")]
        status: u16,
    },
    /// Every ARM request gets 429 `SubscriptionRequestsThrottled` for `seconds` of simulated time.
    ThrottleStorm { seconds: u64 },
    /// Extension installs end `Failed` (or `Canceled` for `OperationPreempted`) with `code`, on `machine`
    /// (ARM id or name) or on any machine with `probability`.
    ExtensionFailure {
        #[serde(default)]
        machine: Option<String>,
        code: String,
        #[serde(default = "default_probability")]
        probability: f64,
    },
    /// The AMA extension provisions `Succeeded` but the agent never starts (no token): no Heartbeat, no data.
    NoHeartbeat { machine: String },
    /// A delete on this machine's extensions never finishes: the extension stays `Deleting`, a PUT gets 409.
    StuckDelete { machine: String },
    /// Writes and deletes under `scope` (a resource id prefix) get 409 `ScopeLocked`.
    Lock { scope: String },
    /// PUTs under `scope` get 403 `RequestDisallowedByPolicy`.
    PolicyDeny { scope: String },
    /// Every ARM request under `scope` (any method) gets 403 `AuthorizationFailed`: the identity
    /// has no role there.
    Forbidden { scope: String },
    /// Deallocate the VM / disconnect the Arc server.
    Deallocate { machine: String },
    /// Start the VM / reconnect the Arc server.
    Start { machine: String },
}

/// Error codes an extension installation can fail with, and whether the LRO ends `Canceled`.
pub fn extension_failure_message(code: &str) -> (String, bool) {
    match code {
        "OperationPreempted" => (
            "Operation execution has been preempted by a more recent operation.".into(),
            true,
        ),
        "VMExtensionHandlerNonTransientError" => (
            "Handler 'Microsoft.Azure.Monitor.AzureMonitorLinuxAgent' has reported terminal failure for VM Extension with error code 51 and message: Unsupported operating system".into(),
            false,
        ),
        "VMAgentStatusCommunicationError" => (
            "VM has reported a failure when processing extension. VM Agent is not reporting status; the guest agent may be unresponsive.".into(),
            false,
        ),
        "VMExtensionProvisioningTimeout" => (
            "Provisioning of VM extension has timed out. Extension provisioning has taken too long to complete.".into(),
            false,
        ),
        _ => (
            format!("VM has reported a failure when processing extension. Error code: {code}. Enable failed with exit code 52."),
            false,
        ),
    }
}

/// Request-time faults currently in force.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultState {
    pub server_errors: u32,
    pub server_error_status: u16,
    pub storm_until: Option<SimMillis>,
    pub extension_failures: Vec<(Option<String>, String, f64)>,
    pub locks: Vec<String>,
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden: Vec<String>,
}

impl FaultState {
    pub fn scope_hit(scopes: &[String], path: &str) -> bool {
        let p = path.to_ascii_lowercase();
        scopes
            .iter()
            .any(|s| p.starts_with(&s.to_ascii_lowercase()))
    }
}
