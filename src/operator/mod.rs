//! The Kubernetes shell (`ama-migrator run`): kube-runtime controllers for `MigrationPlan` and
//! `MachineMigration` over the same engine, planner and step function as the local shell.
//!
//! Named `operator` rather than `kube` so `crate::kube` never shadows the kube crate.

pub mod rbac;
