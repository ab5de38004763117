//! The one ARM client (design.md §6): explicit credentials, configurable endpoints, a budget
//! shaped like ARM's token buckets, bounded retries, resumable long-running operations and typed
//! operations for the resources the migration touches.

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
