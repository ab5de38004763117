//! Client configuration: endpoints, the explicitly chosen credential, budget, retry and LRO
//! policies. The simulator and real Azure differ only in `Endpoints` (and credential `None`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use super::error::AuthError;
use super::retry::RetryPolicy;
use super::throttle::BudgetConfig;

pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const LOG_ANALYTICS_SCOPE: &str = "https://api.loganalytics.io/.default";

/// Where requests go. ARM also serves Resource Graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub arm: Url,
    pub log_analytics: Url,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            arm: Url::parse("https://management.azure.com/").expect("static URL"),
            log_analytics: Url::parse("https://api.loganalytics.io/").expect("static URL"),
        }
    }
}

impl Endpoints {
    /// Both services served from one base URL (the simulator).
    pub fn single(base: Url) -> Self {
        Self {
            arm: base.clone(),
            log_analytics: base,
        }
    }

    /// The same endpoints in the form the client expects: the Log Analytics endpoint is the
    /// service root, so a trailing `/v1` (as `ama-migrator simulator` prints it, or as the query
    /// API's URLs read) is dropped — the client appends `/v1/workspaces/...` itself.
    pub fn normalized(mut self) -> Self {
        self.log_analytics = normalize_log_analytics(self.log_analytics);
        self
    }

    /// The first endpoint that is not loopback, if any.
    pub fn first_remote(&self) -> Option<(&'static str, &Url)> {
        [("arm", &self.arm), ("log_analytics", &self.log_analytics)]
            .into_iter()
            .find(|(_, u)| !is_loopback(u))
    }
}

/// A Log Analytics endpoint with or without a trailing `/v1` (or `/v1/`) → its service root
/// ending in `/`: `https://api.loganalytics.io/v1` → `https://api.loganalytics.io/`.
pub fn normalize_log_analytics(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/');
    let root = if path.len() >= 3 && path[path.len() - 3..].eq_ignore_ascii_case("/v1") {
        &path[..path.len() - 3]
    } else {
        path
    };
    let root = format!("{root}/");
    url.set_path(&root);
    url
}

/// True for `127.0.0.0/8`, `::1` and `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A secret string whose Debug and Display never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which credential to use — chosen explicitly, never by probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialConfig {
    /// AKS workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE.
    WorkloadIdentity,
    /// Workload identity exchanged for another Entra identity than the pod's: the projected
    /// token of AZURE_FEDERATED_TOKEN_FILE, presented for `client_id` (which must trust the
    /// operator's ServiceAccount) in `tenant_id` (default AZURE_TENANT_ID). A plan's own identity.
    WorkloadIdentityFor {
        client_id: String,
        tenant_id: Option<String>,
    },
    /// IMDS / App Service managed identity; `client_id` selects a user-assigned identity.
    ManagedIdentity { client_id: Option<String> },
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretString,
    },
    /// `az account get-access-token`, for local runs.
    AzureCli,
    /// No Authorization header: only for loopback endpoints (the simulator).
    None,
}

/// The `--credential` / `AZURE_CREDENTIAL_KIND` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    WorkloadIdentity,
    ManagedIdentity,
    ClientSecret,
    AzureCli,
    None,
}

impl FromStr for CredentialKind {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "workload-identity" | "workloadidentity" => Ok(Self::WorkloadIdentity),
            "managed-identity" | "managedidentity" => Ok(Self::ManagedIdentity),
            "client-secret" | "clientsecret" => Ok(Self::ClientSecret),
            "azure-cli" | "azurecli" | "cli" => Ok(Self::AzureCli),
            "none" => Ok(Self::None),
            _ => Err(AuthError::UnknownKind(s.to_string())),
        }
    }
}

impl CredentialConfig {
    /// Builds the credential of `kind` from environment variables read through `env`, naming
    /// the variable that is missing.
    pub fn from_env(
        kind: CredentialKind,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthError> {
        let get = |credential: &'static str, setting: &'static str, hint: &'static str| {
            env(setting)
                .filter(|v| !v.trim().is_empty())
                .ok_or(AuthError::MissingSetting {
                    credential,
                    setting,
                    hint,
                })
        };
        match kind {
            CredentialKind::WorkloadIdentity => {
                const HINT: &str = "label the pod azure.workload.identity/use=\"true\" and annotate its ServiceAccount with azure.workload.identity/client-id so the webhook injects it";
                get("workload-identity", "AZURE_CLIENT_ID", HINT)?;
                get("workload-identity", "AZURE_TENANT_ID", HINT)?;
                let file = get("workload-identity", "AZURE_FEDERATED_TOKEN_FILE", HINT)?;
                if !PathBuf::from(&file).exists() {
                    return Err(AuthError::Credential {
                        credential: "workload-identity",
                        scope: String::new(),
                        message: format!(
                            "AZURE_FEDERATED_TOKEN_FILE points to {file}, which does not exist; check the projected service account token volume"
                        ),
                    });
                }
                Ok(Self::WorkloadIdentity)
            }
            CredentialKind::ManagedIdentity => Ok(Self::ManagedIdentity {
                client_id: env("AZURE_CLIENT_ID").filter(|v| !v.trim().is_empty()),
            }),
            CredentialKind::ClientSecret => {
                const HINT: &str = "set it to the service principal's value (az ad sp create-for-rbac prints tenant, appId and password)";
                Ok(Self::ClientSecret {
                    tenant_id: get("client-secret", "AZURE_TENANT_ID", HINT)?,
                    client_id: get("client-secret", "AZURE_CLIENT_ID", HINT)?,
                    secret: SecretString::new(get("client-secret", "AZURE_CLIENT_SECRET", HINT)?),
                })
            }
            CredentialKind::AzureCli => Ok(Self::AzureCli),
            CredentialKind::None => Ok(Self::None),
        }
    }
}

/// How long to wait for long-running operations.
#[derive(Clone, Debug, PartialEq)]
pub struct LroPolicy {
    /// Poll interval when the service sends no `Retry-After`.
    pub default_poll_interval: Duration,
    /// Longest poll interval accepted from `Retry-After` (ARM examples send 200 s).
    pub max_poll_interval: Duration,
    pub max_polls: u32,
    pub max_wait: Duration,
}

impl Default for LroPolicy {
    fn default() -> Self {
        Self {
            default_poll_interval: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(60),
            max_polls: 360,
            max_wait: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub endpoints: Endpoints,
    pub credential: CredentialConfig,
    pub budget: BudgetConfig,
    pub retry: RetryPolicy,
    pub lro: LroPolicy,
    /// Per-request timeout (connect + response).
    pub request_timeout: Duration,
    /// The ARM region label of the budget buckets ("global" when unknown).
    pub arm_region: String,
}

impl ClientConfig {
    pub fn new(endpoints: Endpoints, credential: CredentialConfig) -> Self {
        Self {
            endpoints: endpoints.normalized(),
            credential,
            budget: BudgetConfig::default(),
            retry: RetryPolicy::default(),
            lro: LroPolicy::default(),
            request_timeout: Duration::from_secs(100),
            arm_region: "global".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn loopback_detection() {
        for u in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://[::1]:9/",
            "http://127.1.2.3/",
        ] {
            assert!(is_loopback(&Url::parse(u).unwrap()), "{u}");
        }
        for u in [
            "https://management.azure.com/",
            "http://10.0.0.1/",
            "http://localhost.evil.com/",
        ] {
            assert!(!is_loopback(&Url::parse(u).unwrap()), "{u}");
        }
        assert!(Endpoints::default().first_remote().is_some());
        let local = Endpoints::single(Url::parse("http://127.0.0.1:1/").unwrap());
        assert!(local.first_remote().is_none());
    }

    #[test]
    fn log_analytics_endpoint_with_or_without_v1() {
        for (given, want) in [
            (
                "https://api.loganalytics.io/",
                "https://api.loganalytics.io/",
            ),
            (
                "https://api.loganalytics.io",
                "https://api.loganalytics.io/",
            ),
            (
                "https://api.loganalytics.io/v1",
                "https://api.loganalytics.io/",
            ),
            (
                "https://api.loganalytics.io/v1/",
                "https://api.loganalytics.io/",
            ),
            ("http://127.0.0.1:8787/v1", "http://127.0.0.1:8787/"),
            ("http://proxy.example/la/V1/", "http://proxy.example/la/"),
            ("http://proxy.example/la", "http://proxy.example/la/"),
            ("http://proxy.example/v10", "http://proxy.example/v10/"),
        ] {
            let got = normalize_log_analytics(Url::parse(given).unwrap());
            assert_eq!(got.as_str(), want, "{given}");
        }
        let c = ClientConfig::new(
            Endpoints {
                arm: Url::parse("http://127.0.0.1:1/").unwrap(),
                log_analytics: Url::parse("http://127.0.0.1:1/v1").unwrap(),
            },
            CredentialConfig::None,
        );
        assert_eq!(c.endpoints.log_analytics.as_str(), "http://127.0.0.1:1/");
    }

    #[test]
    fn from_env_names_the_missing_variable() {
        let vars: HashMap<&str, &str> = [("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")].into();
        let env = |k: &str| vars.get(k).map(|v| v.to_string());
        let err = CredentialConfig::from_env(CredentialKind::ClientSecret, env).unwrap_err();
        assert!(err.to_string().contains("AZURE_CLIENT_SECRET"), "{err}");
        let err = CredentialConfig::from_env(CredentialKind::WorkloadIdentity, env).unwrap_err();
        assert!(
            err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"),
            "{err}"
        );
        let err =
            CredentialConfig::from_env(CredentialKind::WorkloadIdentity, |_| None).unwrap_err();
        assert!(err.to_string().contains("AZURE_CLIENT_ID"), "{err}");
        let mi = CredentialConfig::from_env(CredentialKind::ManagedIdentity, env).unwrap();
        assert_eq!(
            mi,
            CredentialConfig::ManagedIdentity {
                client_id: Some("c".into())
            }
        );
        assert!("bogus".parse::<CredentialKind>().is_err());
        assert_eq!(
            "Workload-Identity".parse::<CredentialKind>().unwrap(),
            CredentialKind::WorkloadIdentity
        );
    }

    #[test]
    fn client_secret_is_redacted_in_debug() {
        let c = CredentialConfig::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: SecretString::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
