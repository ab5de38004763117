//! A plan's own Azure identity (`spec.azure`): a Secret of the plan's namespace or the client
//! ID of an identity federated with the operator's ServiceAccount. The decisions are pure
//! ([`PlanCredential::of`], [`from_secret_data`]); [`CredentialCache`] reads the Secret and keeps
//! one ARM client per plan until the Secret's resourceVersion changes.
//!
//! Secret values never leave [`from_secret_data`] except inside a [`CredentialConfig`], whose
//! Debug redacts them; every error names the Secret and the key, never a value.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::api::MigrationPlan;
use crate::azure::config::SecretString;
use crate::azure::{ArmClient, AzureError, CredentialConfig};

/// The condition reason of a plan whose credentials cannot be used.
pub const REASON_UNAVAILABLE: &str = "CredentialsUnavailable";
/// The condition reason once they can again.
pub const REASON_AVAILABLE: &str = "CredentialsAvailable";

pub const TENANT_KEY: &str = "AZURE_TENANT_ID";
pub const CLIENT_KEY: &str = "AZURE_CLIENT_ID";
pub const SECRET_KEY: &str = "AZURE_CLIENT_SECRET";

/// Which identity a plan acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanCredential {
    /// The operator's own (no `spec.azure`).
    Operator,
    Secret {
        name: String,
    },
    ClientId(String),
}

impl PlanCredential {
    pub fn of(plan: &MigrationPlan) -> Self {
        let Some(azure) = &plan.spec.azure else {
            return Self::Operator;
        };
        if let Some(r) = &azure.credentials_secret_ref {
            return Self::Secret {
                name: r.name.clone(),
            };
        }
        match &azure.client_id {
            Some(id) if !id.trim().is_empty() => Self::ClientId(id.trim().to_string()),
            _ => Self::Operator,
        }
    }
}

/// Why a plan's credentials cannot be used: each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialProblem {
    #[error(
        "spec.azure.credentialsSecretRef names the Secret {namespace}/{name}, which does not exist; create it in the plan's namespace with the keys AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (kubectl create secret generic {name} -n {namespace} --from-literal=AZURE_TENANT_ID=... --from-literal=AZURE_CLIENT_ID=... --from-literal=AZURE_CLIENT_SECRET=...)"
    )]
    SecretNotFound { namespace: String, name: String },
    #[error(
        "the operator may not read the Secret {namespace}/{name} named by spec.azure.credentialsSecretRef; grant it get on secrets there (Helm value rbac.secretAccess=true)"
    )]
    Forbidden { namespace: String, name: String },
    #[error(
        "the Secret {namespace}/{name} named by spec.azure.credentialsSecretRef has no key {key}; add it (kubectl patch secret {name} -n {namespace} --type merge -p '{{\"stringData\":{{\"{key}\":\"...\"}}}}')"
    )]
    MissingKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error(
        "the key {key} of the Secret {namespace}/{name} (spec.azure.credentialsSecretRef) is empty or not UTF-8 text; set it to the value Azure gave"
    )]
    BadValue {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error(
        "cannot read the Secret {namespace}/{name} named by spec.azure.credentialsSecretRef: {message}; the operator retries"
    )]
    Unreadable {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("cannot build the Azure client of the plan's credentials: {message}")]
    Client { message: String },
}

/// The credential a Secret's data describes: a service principal when it holds a client
/// secret, else workload identity for the client ID it names.
pub fn from_secret_data(
    namespace: &str,
    name: &str,
    data: &BTreeMap<String, ByteString>,
) -> Result<CredentialConfig, CredentialProblem> {
    let value = |key: &'static str| -> Result<Option<String>, CredentialProblem> {
        match data.get(key) {
            None => Ok(None),
            Some(ByteString(bytes)) => match std::str::from_utf8(bytes).map(str::trim) {
                Ok(v) if !v.is_empty() => Ok(Some(v.to_string())),
                _ => Err(CredentialProblem::BadValue {
                    namespace: namespace.into(),
                    name: name.into(),
                    key,
                }),
            },
        }
    };
    let missing = |key: &'static str| CredentialProblem::MissingKey {
        namespace: namespace.into(),
        name: name.into(),
        key,
    };
    let client_id = value(CLIENT_KEY)?.ok_or_else(|| missing(CLIENT_KEY))?;
    let tenant_id = value(TENANT_KEY)?;
    match value(SECRET_KEY)? {
        Some(secret) => Ok(CredentialConfig::ClientSecret {
            tenant_id: tenant_id.ok_or_else(|| missing(TENANT_KEY))?,
            client_id,
            secret: SecretString::new(secret),
        }),
        None => Ok(CredentialConfig::WorkloadIdentityFor {
            client_id,
            tenant_id,
        }),
    }
}

/// Builds an ARM client for a credential (the operator's endpoints and budget settings).
pub type ArmFactory =
    Arc<dyn Fn(CredentialConfig) -> Result<ArmClient, AzureError> + Send + Sync + 'static>;

/// The default factory: `base`'s configuration with another credential.
pub fn factory_from(base: &ArmClient) -> ArmFactory {
    let config = base.config().clone();
    Arc::new(move |credential| {
        let mut c = config.clone();
        c.credential = credential;
        ArmClient::new(c)
    })
}

/// A resolved credential: the client and what it was built from.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub client: ArmClient,
    /// Changes when the credential does (Secret name + resourceVersion, or the client ID); a
    /// change restarts the plan's engine with the new client.
    pub fingerprint: String,
    /// Newly built (not from the cache): register it with the metrics.
    pub new: bool,
}

/// One ARM client per plan, rebuilt only when its credential changes.
#[derive(Default)]
pub struct CredentialCache {
    clients: Mutex<HashMap<(String, String), (String, ArmClient)>>,
}

impl CredentialCache {
    fn cached(&self, key: &(String, String), fingerprint: &str) -> Option<ArmClient> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .get(key)
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, c)| c.clone())
    }

    fn build(
        &self,
        key: (String, String),
        fingerprint: String,
        factory: &ArmFactory,
        credential: impl FnOnce() -> Result<CredentialConfig, CredentialProblem>,
    ) -> Result<Resolved, CredentialProblem> {
        if let Some(client) = self.cached(&key, &fingerprint) {
            return Ok(Resolved {
                client,
                fingerprint,
                new: false,
            });
        }
        let client = factory(credential()?).map_err(|e| CredentialProblem::Client {
            message: e.to_string(),
        })?;
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (fingerprint.clone(), client.clone()));
        Ok(Resolved {
            client,
            fingerprint,
            new: true,
        })
    }

    /// Forget a plan's client (plan deleted, credentials withdrawn).
    pub fn forget(&self, key: &(String, String)) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The ARM client `plan` must use: `operator`'s unless the plan names its own identity.
    pub async fn resolve(
        &self,
        client: &Client,
        plan: &MigrationPlan,
        operator: &ArmClient,
        factory: &ArmFactory,
    ) -> Result<Resolved, CredentialProblem> {
        let namespace = plan.namespace().unwrap_or_default();
        let key = (namespace.clone(), plan.name_any());
        match PlanCredential::of(plan) {
            PlanCredential::Operator => {
                self.forget(&key);
                Ok(Resolved {
                    client: operator.clone(),
                    fingerprint: String::new(),
                    new: false,
                })
            }
            PlanCredential::ClientId(id) => self.build(key, format!("client-id:{id}"), factory, {
                let id = id.clone();
                move || {
                    Ok(CredentialConfig::WorkloadIdentityFor {
                        client_id: id,
                        tenant_id: None,
                    })
                }
            }),
            PlanCredential::Secret { name } => {
                let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
                let secret = match api.get_opt(&name).await {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        self.forget(&key);
                        return Err(CredentialProblem::SecretNotFound { namespace, name });
                    }
                    Err(kube::Error::Api(status)) if status.is_forbidden() => {
                        self.forget(&key);
                        return Err(CredentialProblem::Forbidden { namespace, name });
                    }
                    Err(e) => {
                        return Err(CredentialProblem::Unreadable {
                            namespace,
                            name,
                            message: e.to_string(),
                        });
                    }
                };
                let fingerprint = format!(
                    "secret:{name}@{}",
                    secret.resource_version().unwrap_or_default()
                );
                let result = self.build(key.clone(), fingerprint, factory, || {
                    let data = merged_data(&secret);
                    from_secret_data(&namespace, &name, &data)
                });
                if result.is_err() {
                    self.forget(&key);
                }
                result
            }
        }
    }
}

/// `data` with `stringData` laid over it (an apiserver folds stringData into data on write;
/// a fake or a dry run may not).
fn merged_data(secret: &Secret) -> BTreeMap<String, ByteString> {
    let mut data = secret.data.clone().unwrap_or_default();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), ByteString(v.clone().into_bytes()));
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn a_secret_with_a_client_secret_is_a_service_principal() {
        let c = from_secret_data(
            "ns",
            "sp",
            &data(&[
                (TENANT_KEY, "t"),
                (CLIENT_KEY, "c"),
                (SECRET_KEY, "hunter2"),
            ]),
        )
        .unwrap();
        assert!(
            matches!(&c, CredentialConfig::ClientSecret { tenant_id, client_id, secret }
                if tenant_id == "t" && client_id == "c" && secret.expose() == "hunter2")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_secret_without_a_client_secret_is_workload_identity_for_its_client() {
        let c = from_secret_data("ns", "wi", &data(&[(CLIENT_KEY, "c")])).unwrap();
        assert_eq!(
            c,
            CredentialConfig::WorkloadIdentityFor {
                client_id: "c".into(),
                tenant_id: None
            }
        );
    }

    #[test]
    fn problems_name_the_secret_and_key_but_never_a_value() {
        let e = from_secret_data("ns", "sp", &data(&[(SECRET_KEY, "hunter2")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("ns/sp") && text.contains(CLIENT_KEY),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let e = from_secret_data(
            "ns",
            "sp",
            &data(&[(CLIENT_KEY, "c"), (SECRET_KEY, "hunter2")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains(TENANT_KEY), "{e}");
        assert!(!e.to_string().contains("hunter2"));
        let e = from_secret_data("ns", "sp", &data(&[(CLIENT_KEY, " ")])).unwrap_err();
        assert!(matches!(
            e,
            CredentialProblem::BadValue {
                key: CLIENT_KEY,
                ..
            }
        ));
        let nf = CredentialProblem::SecretNotFound {
            namespace: "ns".into(),
            name: "sp".into(),
        };
        assert!(
            nf.to_string()
                .contains("kubectl create secret generic sp -n ns")
        );
    }
}
