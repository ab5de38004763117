//! Why an engine stopped with an error, in terms a person can act on: the reason a plan's
//! `Degraded` or `Blocked` condition carries, and a message naming what failed (the endpoint,
//! the resource ID, the ARM / Log Analytics error code) and what to do. The operator, `migrate`
//! and `simulate` all report failures through [`diagnose`].

use crate::azure::{AzureError, Endpoints};

use super::EngineError;

/// The reasons, as condition reasons and event reasons.
pub mod reasons {
    /// ARM or Log Analytics could not be reached (connection refused, DNS, TLS, timeout).
    pub const ENDPOINT_UNREACHABLE: &str = "AzureEndpointUnreachable";
    /// The Log Analytics query API answered with an error other than a missing workspace.
    pub const LOG_ANALYTICS_QUERY_FAILED: &str = "LogAnalyticsQueryFailed";
    /// The plan's workspace (resource ID or customer ID) does not exist.
    pub const WORKSPACE_NOT_FOUND: &str = "WorkspaceNotFound";
    /// Azure refused the identity (401/403).
    pub const AUTHORIZATION_FAILED: &str = "AuthorizationFailed";
    /// The plan's scope selects no machine of the inventory.
    pub const NO_MACHINES_IN_SCOPE: &str = "NoMachinesInScope";
    /// Any other ARM error.
    pub const AZURE_REQUEST_FAILED: &str = "AzureRequestFailed";
    /// Anything else (state store, unexpected data).
    pub const ENGINE_FAILED: &str = "EngineFailed";
    /// The engine runs again after one of the failures above (the condition is cleared).
    pub const RECOVERED: &str = "EngineRecovered";
}

/// Reasons a person must act on (the condition is `Blocked`); the others are `Degraded` (they
/// may pass by themselves and the engine keeps retrying either way).
pub const BLOCKING_REASONS: [&str; 3] = [
    reasons::AUTHORIZATION_FAILED,
    reasons::WORKSPACE_NOT_FOUND,
    reasons::NO_MACHINES_IN_SCOPE,
];

/// Every reason [`diagnose`] can give.
pub const ALL_REASONS: [&str; 7] = [
    reasons::ENDPOINT_UNREACHABLE,
    reasons::LOG_ANALYTICS_QUERY_FAILED,
    reasons::WORKSPACE_NOT_FOUND,
    reasons::AUTHORIZATION_FAILED,
    reasons::NO_MACHINES_IN_SCOPE,
    reasons::AZURE_REQUEST_FAILED,
    reasons::ENGINE_FAILED,
];

/// A failure as a person should see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub reason: &'static str,
    /// `true`: a person must act (`Blocked`); `false`: `Degraded`, retried with backoff.
    pub blocking: bool,
    /// What failed and what to do; never holds a secret (errors carry none).
    pub message: String,
}

fn la_path(path: &str) -> bool {
    !path.to_ascii_lowercase().contains("/providers/")
}

/// The innermost error of a retried request.
fn last(e: &AzureError) -> &AzureError {
    match e {
        AzureError::RetriesExhausted { last: l, .. } => last(l),
        other => other,
    }
}

fn path_of(e: &AzureError) -> Option<&str> {
    match last(e) {
        AzureError::Api { path, .. } | AzureError::Network { path, .. } => Some(path),
        _ => None,
    }
}

/// The endpoint URL a request went to, with its path: `https://api.loganalytics.io/v1/...`.
fn url_of(endpoints: &Endpoints, path: &str) -> (bool, String) {
    let la = la_path(path);
    let base = if la {
        &endpoints.log_analytics
    } else {
        &endpoints.arm
    };
    let mut u = base.clone();
    u.set_path(path);
    u.set_query(None);
    (la, u.to_string())
}

/// Turn an engine error into a reason, a condition type and an actionable message.
pub fn diagnose(err: &EngineError, endpoints: &Endpoints, workspace: &str) -> Diagnosis {
    let d = |reason: &'static str, message: String| Diagnosis {
        reason,
        blocking: BLOCKING_REASONS.contains(&reason),
        message,
    };
    match err {
        EngineError::NoMachinesInScope { inventory, scope } => d(
            reasons::NO_MACHINES_IN_SCOPE,
            format!(
                "spec.scope ({scope}) selects none of the {inventory} machine(s) the Resource Graph inventory returned; correct spec.scope (subscriptions, resourceGroups, tagSelector, kinds, excludes) or check that the identity can read those subscriptions"
            ),
        ),
        EngineError::Azure { what, source } => {
            let inner = last(source);
            let path = path_of(source).unwrap_or("");
            let (la, url) = url_of(endpoints, path);
            let flag = if la {
                "--log-analytics-endpoint / AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT (the service root, e.g. https://api.loganalytics.io/; a trailing /v1 is accepted)"
            } else {
                "--arm-endpoint / AMA_MIGRATOR_ARM_ENDPOINT (e.g. https://management.azure.com/)"
            };
            let service = if la { "Log Analytics" } else { "ARM" };
            match inner {
                AzureError::Network { message, .. } => d(
                    reasons::ENDPOINT_UNREACHABLE,
                    format!(
                        "{what}: the {service} endpoint {url} cannot be reached ({message}); check {flag} and the network path to it (proxy, firewall, DNS)"
                    ),
                ),
                AzureError::Auth(a) => d(
                    reasons::AUTHORIZATION_FAILED,
                    format!("{what}: no token for {service}: {a}"),
                ),
                AzureError::Api {
                    status,
                    code,
                    message,
                    method,
                    ..
                } => {
                    let lc = code.to_ascii_lowercase();
                    if *status == 401 || *status == 403 || lc.contains("authorization") {
                        d(
                            reasons::AUTHORIZATION_FAILED,
                            format!(
                                "{what}: {method} {url} was refused with HTTP {status} {code}: {message}; grant the operator's identity (or the plan's spec.azure identity) the roles in deploy/azure-custom-role.json on {scope}",
                                scope = if la { workspace } else { path_scope(path) },
                            ),
                        )
                    } else if lc.contains("workspacenotfound")
                        || (*status == 404
                            && !la
                            && lc == "resourcenotfound"
                            && path
                                .to_ascii_lowercase()
                                .contains("/microsoft.operationalinsights/workspaces/"))
                    {
                        d(
                            reasons::WORKSPACE_NOT_FOUND,
                            format!(
                                "{what}: the workspace {ws} does not exist ({service} answered HTTP {status} {code} for {url}); correct spec.workspace (its resource ID) and spec.workspaceCustomerId (its Workspace ID GUID)",
                                ws = if la {
                                    format!("with customer ID {}", customer_id_of(path))
                                } else {
                                    workspace.to_string()
                                },
                            ),
                        )
                    } else if la {
                        d(
                            reasons::LOG_ANALYTICS_QUERY_FAILED,
                            format!(
                                "{what}: {method} {url} answered HTTP {status} {code}: {message}; check {flag}"
                            ),
                        )
                    } else if *status == 404 && lc != "resourcenotfound" {
                        // A 404 on a path every ARM serves: not ARM at that address.
                        d(
                            reasons::ENDPOINT_UNREACHABLE,
                            format!(
                                "{what}: {method} {url} answered HTTP {status} {code}: {message}; the ARM endpoint does not look like ARM, check {flag}"
                            ),
                        )
                    } else {
                        d(
                            reasons::AZURE_REQUEST_FAILED,
                            format!(
                                "{what}: {method} {url} answered HTTP {status} {code}: {message}"
                            ),
                        )
                    }
                }
                other => d(reasons::AZURE_REQUEST_FAILED, format!("{what}: {other}")),
            }
        }
        other => d(
            reasons::ENGINE_FAILED,
            format!("the engine stopped: {other}"),
        ),
    }
}

/// `/subscriptions/<id>` of an ARM path, or the path itself.
fn path_scope(path: &str) -> &str {
    let lower = path.to_ascii_lowercase();
    if lower.starts_with("/subscriptions/") {
        let rest = &path["/subscriptions/".len()..];
        let end = rest
            .find('/')
            .map_or(path.len(), |i| i + "/subscriptions/".len());
        &path[..end]
    } else {
        path
    }
}

/// The `{customerId}` of `.../workspaces/{customerId}/query`.
fn customer_id_of(path: &str) -> &str {
    let mut it = path.split('/');
    while let Some(seg) = it.next() {
        if seg.eq_ignore_ascii_case("workspaces") {
            return it.next().unwrap_or("");
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps() -> Endpoints {
        Endpoints {
            arm: "http://127.0.0.1:9/".parse().unwrap(),
            log_analytics: "http://127.0.0.1:8/".parse().unwrap(),
        }
    }

    fn api(path: &str, status: u16, code: &str) -> EngineError {
        EngineError::azure(
            "q",
            AzureError::Api {
                method: "POST".into(),
                path: path.into(),
                status,
                code: code.into(),
                message: "m".into(),
            },
        )
    }

    const WS: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/w";

    #[test]
    fn reasons_name_what_failed() {
        let net = EngineError::azure(
            "the Resource Graph inventory query",
            AzureError::RetriesExhausted {
                method: "POST".into(),
                path: "/providers/Microsoft.ResourceGraph/resources".into(),
                attempts: 6,
                elapsed: std::time::Duration::from_secs(9),
                last: Box::new(AzureError::Network {
                    method: "POST".into(),
                    path: "/providers/Microsoft.ResourceGraph/resources".into(),
                    message: "connection refused".into(),
                }),
            },
        );
        let g = diagnose(&net, &eps(), WS);
        assert_eq!(g.reason, reasons::ENDPOINT_UNREACHABLE);
        assert!(!g.blocking);
        assert!(
            g.message
                .contains("http://127.0.0.1:9/providers/Microsoft.ResourceGraph/resources"),
            "{}",
            g.message
        );
        assert!(g.message.contains("--arm-endpoint"));

        let g = diagnose(
            &api("/v1/v1/workspaces/g/query", 404, "PathNotFoundError"),
            &eps(),
            WS,
        );
        assert_eq!(g.reason, reasons::LOG_ANALYTICS_QUERY_FAILED);
        assert!(
            g.message
                .contains("http://127.0.0.1:8/v1/v1/workspaces/g/query"),
            "{}",
            g.message
        );
        assert!(g.message.contains("PathNotFoundError"));

        let g = diagnose(
            &api("/v1/workspaces/g/query", 404, "WorkspaceNotFoundError"),
            &eps(),
            WS,
        );
        assert_eq!(g.reason, reasons::WORKSPACE_NOT_FOUND);
        assert!(
            g.blocking && g.message.contains("customer ID g"),
            "{}",
            g.message
        );

        let g = diagnose(
            &api(&format!("{WS}/dataSources"), 404, "ResourceNotFound"),
            &eps(),
            WS,
        );
        assert_eq!(g.reason, reasons::WORKSPACE_NOT_FOUND);
        assert!(g.message.contains(WS));

        let g = diagnose(
            &api(&format!("{WS}/dataSources"), 403, "AuthorizationFailed"),
            &eps(),
            WS,
        );
        assert_eq!(g.reason, reasons::AUTHORIZATION_FAILED);
        assert!(
            g.blocking && g.message.contains("/subscriptions/s"),
            "{}",
            g.message
        );

        let g = diagnose(
            &api(
                "/x/providers/Microsoft.ResourceGraph/resources",
                404,
                "Http404",
            ),
            &eps(),
            WS,
        );
        assert_eq!(g.reason, reasons::ENDPOINT_UNREACHABLE);

        let g = diagnose(
            &api(&format!("{WS}/dataSources"), 400, "BadRequest"),
            &eps(),
            WS,
        );
        assert_eq!(g.reason, reasons::AZURE_REQUEST_FAILED);

        let g = diagnose(
            &EngineError::NoMachinesInScope {
                inventory: 12,
                scope: "tagSelector env=none".into(),
            },
            &eps(),
            WS,
        );
        assert_eq!(g.reason, reasons::NO_MACHINES_IN_SCOPE);
        assert!(g.blocking && g.message.contains("12 machine"));

        let g = diagnose(&EngineError::Simulator("x".into()), &eps(), WS);
        assert_eq!(g.reason, reasons::ENGINE_FAILED);
        for r in ALL_REASONS {
            assert!(!r.is_empty());
        }
    }
}
