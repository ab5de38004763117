//! The one ARM client (design.md §6).

pub mod datasource;
pub mod dcr;
pub mod resource_id;

pub use datasource::{WorkspaceDataSource, WorkspaceDataSourceList};
pub use resource_id::{ResourceId, ResourceIdError};
