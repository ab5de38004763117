//! The one ARM client (design.md §6).

pub mod resource_id;

pub use resource_id::{ResourceId, ResourceIdError};
