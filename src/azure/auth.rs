//! Bearer tokens for ARM and Log Analytics from the explicitly configured azure_identity
//! credential, cached per scope until shortly before expiry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::time::OffsetDateTime;
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use tokio::sync::Mutex;

use super::config::{CredentialConfig, Endpoints};
use super::error::AuthError;

/// Tokens are refreshed this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// True while a token expiring at `expires_on` can still be used at `now`.
pub fn is_fresh(expires_on: OffsetDateTime, now: OffsetDateTime, margin: Duration) -> bool {
    let margin = azure_core::time::Duration::try_from(margin)
        .unwrap_or(azure_core::time::Duration::minutes(5));
    now + margin < expires_on
}

struct CachedToken {
    token: Secret,
    expires_on: OffsetDateTime,
}

/// Produces `Authorization` header values; `None` credential produces no header.
pub struct Authenticator {
    credential: Option<Arc<dyn TokenCredential>>,
    name: &'static str,
    /// Per-scope cache; an async lock so concurrent requests fetch a token once.
    cache: Mutex<HashMap<String, CachedToken>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("credential", &self.name)
            .finish_non_exhaustive()
    }
}

fn credential_error(credential: &'static str, scope: &str, e: azure_core::Error) -> AuthError {
    AuthError::Credential {
        credential,
        scope: scope.to_string(),
        message: e.to_string(),
    }
}

impl Authenticator {
    /// Builds the configured credential. `None` is refused unless every endpoint is loopback.
    pub fn new(config: &CredentialConfig, endpoints: &Endpoints) -> Result<Self, AuthError> {
        let (name, credential): (&'static str, Option<Arc<dyn TokenCredential>>) = match config {
            CredentialConfig::None => {
                if let Some((endpoint, url)) = endpoints.first_remote() {
                    return Err(AuthError::UnauthenticatedRemote {
                        endpoint,
                        url: url.to_string(),
                    });
                }
                ("none", None)
            }
            CredentialConfig::WorkloadIdentity => (
                "workload-identity",
                Some(
                    WorkloadIdentityCredential::new(None)
                        .map_err(|e| credential_error("workload-identity", "", e))?,
                ),
            ),
            CredentialConfig::WorkloadIdentityFor {
                client_id,
                tenant_id,
            } => {
                let options = WorkloadIdentityCredentialOptions {
                    client_id: Some(client_id.clone()),
                    tenant_id: tenant_id.clone(),
                    ..Default::default()
                };
                (
                    "workload-identity",
                    Some(
                        WorkloadIdentityCredential::new(Some(options))
                            .map_err(|e| credential_error("workload-identity", "", e))?,
                    ),
                )
            }
            CredentialConfig::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                (
                    "managed-identity",
                    Some(
                        ManagedIdentityCredential::new(Some(options))
                            .map_err(|e| credential_error("managed-identity", "", e))?,
                    ),
                )
            }
            CredentialConfig::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => (
                "client-secret",
                Some(
                    ClientSecretCredential::new(
                        tenant_id,
                        client_id.clone(),
                        Secret::new(secret.expose().to_string()),
                        None,
                    )
                    .map_err(|e| credential_error("client-secret", "", e))?,
                ),
            ),
            CredentialConfig::AzureCli => (
                "azure-cli",
                Some(
                    AzureCliCredential::new(None)
                        .map_err(|e| credential_error("azure-cli", "", e))?,
                ),
            ),
        };
        tracing::info!(credential = name, "Azure credential selected");
        Ok(Self {
            credential,
            name,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Uses a caller-provided credential (e.g. a `DeveloperToolsCredential`).
    pub fn with_credential(credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            credential: Some(credential),
            name: "custom",
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn credential_name(&self) -> &'static str {
        self.name
    }

    /// `Bearer <token>` for `scope`, or `None` in unauthenticated mode.
    pub async fn authorization(&self, scope: &str) -> Result<Option<Secret>, AuthError> {
        let Some(credential) = &self.credential else {
            return Ok(None);
        };
        let mut cache = self.cache.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(t) = cache.get(scope)
            && is_fresh(t.expires_on, now, REFRESH_MARGIN)
        {
            return Ok(Some(Secret::new(format!("Bearer {}", t.token.secret()))));
        }
        let token = credential
            .get_token(&[scope], None)
            .await
            .map_err(|e| credential_error(self.name, scope, e))?;
        let header = Secret::new(format!("Bearer {}", token.token.secret()));
        cache.insert(
            scope.to_string(),
            CachedToken {
                token: token.token,
                expires_on: token.expires_on,
            },
        );
        Ok(Some(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    #[test]
    fn freshness_respects_the_margin() {
        let now = OffsetDateTime::now_utc();
        let m = Duration::from_secs(300);
        assert!(is_fresh(
            now + azure_core::time::Duration::minutes(60),
            now,
            m
        ));
        assert!(!is_fresh(
            now + azure_core::time::Duration::minutes(4),
            now,
            m
        ));
        assert!(!is_fresh(
            now - azure_core::time::Duration::minutes(1),
            now,
            m
        ));
    }

    #[test]
    fn unauthenticated_only_for_loopback_endpoints() {
        let local = Endpoints::single(Url::parse("http://127.0.0.1:8080/").unwrap());
        assert!(Authenticator::new(&CredentialConfig::None, &local).is_ok());
        let err = Authenticator::new(&CredentialConfig::None, &Endpoints::default()).unwrap_err();
        assert!(err.to_string().contains("management.azure.com"), "{err}");
        let mixed = Endpoints {
            arm: Url::parse("http://127.0.0.1:1/").unwrap(),
            log_analytics: Url::parse("https://api.loganalytics.io/").unwrap(),
        };
        let err = Authenticator::new(&CredentialConfig::None, &mixed).unwrap_err();
        assert!(err.to_string().contains("log_analytics"), "{err}");
    }

    #[tokio::test]
    async fn none_credential_sends_no_header() {
        let local = Endpoints::single(Url::parse("http://localhost:1/").unwrap());
        let a = Authenticator::new(&CredentialConfig::None, &local).unwrap();
        assert!(
            a.authorization("https://management.azure.com/.default")
                .await
                .unwrap()
                .is_none()
        );
    }
}
