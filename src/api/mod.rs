//! Custom resources: `MigrationPlan` and `MachineMigration` (group `amamigrator.io`, `v1alpha1`).

pub mod conditions;
pub mod crd;
pub mod duration;
pub mod load;
pub mod machine;
pub mod plan;
pub mod schema_check;

pub use machine::{MachineMigration, MachineMigrationSpec, MachineMigrationStatus};
pub use plan::{MigrationPlan, MigrationPlanSpec, MigrationPlanStatus};
