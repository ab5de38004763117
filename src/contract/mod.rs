//! Validation of request and response bodies against Microsoft's Azure REST specs (Swagger 2.0).
//!
//! [`SpecSet`] loads every swagger under `shared/azure-specs` and resolves `$ref`s across files;
//! it finds the operation a request targets (method, path template, `api-version` = `info.version`)
//! and validates parameters, request and response bodies with AutoRest/oav semantics. Tests use it
//! to hold the ARM client and the simulator to Microsoft's wire contract.

mod examples;
mod exchange;
mod operations;
mod paths;
pub(crate) mod schema;
mod specs;

pub use examples::{OperationExample, PRODUCT_OPERATIONS};
pub use exchange::{Checked, Exchange};
pub use operations::OperationInfo;
pub use schema::{Direction, Place, Violation};
pub use specs::{SPECS_ENV, SpecError, SpecSet};

/// The DCR swagger, for [`SpecSet::validate_schema_ref`] on generated DCR bodies.
pub const DCR_SPEC: &str = "specification/monitor/resource-manager/Microsoft.Insights/Insights/stable/2023-03-11/dataCollectionRules_API.json";
/// The DCR resource definition inside [`DCR_SPEC`].
pub const DCR_RESOURCE: &str = "#/definitions/DataCollectionRuleResource";
