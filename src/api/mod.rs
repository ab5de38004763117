//! Custom resources: `MigrationPlan` and `MachineMigration` (group `amamigrator.io`, `v1alpha1`).
