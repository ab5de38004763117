//! The Kubernetes shell (`ama-migrator run`): kube-runtime controllers for `MigrationPlan` and
//! `MachineMigration` over the same engine, planner and step function as the local shell.
//!
//! Named `operator` rather than `kube` so `crate::kube` never shadows the kube crate.
//!
//! * [`controller`]: the plan controller (finalizer, one engine task per plan, pause/approve,
//!   deletion) and the machine controller (hold/retry/skip annotations → events and a restart
//!   of the plan's engine, which honours them when it loads its machines).
//! * [`credentials`]: a plan's own Azure identity (a Secret or a client ID of its namespace).
//! * [`state`]: the engine's state over the API (SSA children, status subresource, events).
//! * [`rbac`]: every (apiGroup, resource, verbs) the code uses — the chart's RBAC is tested
//!   against it.
//! * [`leader`]: Lease-based leader election; the controllers run only on the leader.
//! * [`serve`]: `/metrics`, `/healthz`, `/readyz`.

pub mod controller;
pub mod credentials;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod serve;
pub mod state;

/// A Kubernetes client for `config` whose every request carries
/// `User-Agent: ama-migrator/<version>` ([`crate::USER_AGENT`]).
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    kube::Client::try_from(with_user_agent(config))
}

/// `config` with the operator's `User-Agent` header (instead of any it carried).
pub fn with_user_agent(mut config: kube::Config) -> kube::Config {
    use axum::http::header::{HeaderValue, USER_AGENT};
    config.headers.retain(|(name, _)| name != USER_AGENT);
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(crate::USER_AGENT)));
    config
}

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ama-migrator";
/// The finalizer on every MigrationPlan the operator has seen.
pub const FINALIZER: &str = "amamigrator.io/cleanup";
/// The `reportingController` of the operator's events.
pub const CONTROLLER_NAME: &str = "ama-migrator";

/// Annotations people set on a `MigrationPlan`.
pub mod plan_annotations {
    /// `"true"`: stop starting new work (like `spec.paused`, without editing the GitOps-owned spec).
    pub const PAUSE: &str = "amamigrator.io/pause";
    /// Comma-separated wave names a person approved (their manual gate passes).
    pub const APPROVE_WAVE: &str = "amamigrator.io/approve-wave";
    /// What deleting the plan does: `Retain` (default: Azure is left as it is) or `Rollback`
    /// (before the finalizer goes: the workspace legacy settings the plan changed are restored,
    /// then the migrator's DCR associations and AMA installs removed, then the plan's DCRs;
    /// machines whose legacy agent the migrator removed keep their AMA path, with a Warning).
    pub const DELETION_POLICY: &str = "amamigrator.io/deletion-policy";
}

/// `"true"` on a MachineMigration: leave the machine out of the migration (held for good, never
/// written to). A skipped machine still sending a stream through the legacy agent holds that
/// stream's workspace flip, as any uncovered sender does, until the plan's
/// `spec.legacy.flip.acceptedUncoveredSenders` names it.
pub const SKIP_ANNOTATION: &str = "amamigrator.io/skip";
/// The last `amamigrator.io/retry` value the operator acted on (owned by the operator).
pub const RETRY_OBSERVED_ANNOTATION: &str = "amamigrator.io/retry-observed";

#[cfg(test)]
mod tests {
    use super::*;

    /// The header is on the wire: a loopback listener reads the request the client sends.
    #[tokio::test]
    async fn kubernetes_requests_carry_the_user_agent() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}"#;
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&head).to_string()
        });
        let mut config = kube::Config::new(url.parse().unwrap());
        config.default_namespace = "ops".into();
        // Any agent a kubeconfig may have set is replaced, not doubled.
        config.headers.push((
            axum::http::header::USER_AGENT,
            axum::http::HeaderValue::from_static("other/1"),
        ));
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::default_namespaced(client(config).unwrap());
        assert!(api.get_opt("absent").await.unwrap().is_none());
        let head = server.join().unwrap().to_ascii_lowercase();
        let agents: Vec<&str> = head
            .lines()
            .filter_map(|l| l.strip_prefix("user-agent:"))
            .map(str::trim)
            .collect();
        assert_eq!(
            agents,
            vec![crate::USER_AGENT.to_ascii_lowercase()],
            "{head}"
        );
        assert!(crate::USER_AGENT.starts_with("ama-migrator/"));
        assert!(crate::USER_AGENT.ends_with(env!("CARGO_PKG_VERSION")));
    }
}
