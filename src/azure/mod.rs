//! The one ARM client (design.md §6): explicit credentials, configurable endpoints, a budget
//! shaped like ARM's token buckets, bounded retries, resumable long-running operations and typed
//! operations for the resources the migration touches.
//!
//! # Pointing the client at Azure or at the simulator
//! ```no_run
//! # fn demo() -> Result<(), ama_migrator::azure::AzureError> {
//! use ama_migrator::azure::{ArmClient, ClientConfig, CredentialConfig, CredentialKind, Endpoints};
//! // Real Azure: default endpoints, a credential chosen explicitly (here from the environment).
//! let cred = CredentialConfig::from_env(CredentialKind::WorkloadIdentity, |k| std::env::var(k).ok())?;
//! let azure = ArmClient::new(ClientConfig::new(Endpoints::default(), cred))?;
//! // The simulator: its base URL for both services; `None` is accepted only for loopback hosts.
//! let base = url::Url::parse("http://127.0.0.1:8080/").expect("url");
//! let sim = ArmClient::new(ClientConfig::new(Endpoints::single(base), CredentialConfig::None))?;
//! # Ok(()) }
//! ```
//! Credentials: `workload-identity` (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE,
//! injected by the AKS webhook), `managed-identity` (optional AZURE_CLIENT_ID of a user-assigned
//! identity), `client-secret` (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET), `azure-cli`.
//! Roles the identity needs: Virtual Machine Contributor on the VMs (extensions, identity PATCH),
//! Azure Connected Machine Resource Administrator on Arc servers, Monitoring Contributor where the
//! DCRs and associations live, Log Analytics Contributor on the workspace (dataSources), Reader on
//! the subscriptions (Resource Graph, LRO status URLs) and Log Analytics Reader for queries.

pub mod auth;
pub mod client;
pub mod config;
pub mod datasource;
pub mod dcr;
pub mod error;
pub mod extensions;
pub mod graph;
pub mod identity;
pub mod insights;
pub mod logquery;
pub mod lro;
pub mod metrics;
pub mod resource_id;
pub mod retry;
pub mod throttle;
pub mod types;
pub mod workspace;

pub use client::{ArmClient, PollOutcome, Submitted};
pub use config::{ClientConfig, CredentialConfig, CredentialKind, Endpoints, LroPolicy};
pub use datasource::{WorkspaceDataSource, WorkspaceDataSourceList};
pub use error::{ArmErrorDetail, AuthError, AzureError, Classification};
pub use lro::{OperationHandle, PollKind};
pub use metrics::MetricsSnapshot;
pub use resource_id::{ResourceId, ResourceIdError};
pub use retry::RetryPolicy;
pub use throttle::{BucketShape, BudgetConfig};
pub use types::{DcrAssociation, Extension, ExtensionProperties, Machine, MachineIdentity};
pub use workspace::SecurityEventsTier;

/// The api-versions the client speaks (their specs are in azure-specs/).
pub mod api_versions {
    pub const COMPUTE: &str = "2024-11-01";
    pub const HYBRID_COMPUTE: &str = "2024-07-10";
    pub const INSIGHTS: &str = "2023-03-11";
    pub const OPERATIONAL_INSIGHTS: &str = "2025-02-01";
    pub const RESOURCE_GRAPH: &str = "2024-04-01";
}
