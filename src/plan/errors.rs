//! Why a plan is refused: each error names the field, the problem and the fix.

use crate::catalog::CatalogError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanErrorKind {
    AmaUnsupportedSource,
    UnknownDataSourceType,
    MachineClaimedTwice,
    EmptyWave,
    UnreachableWave,
    MachinesWithoutWave,
    MalformedResourceId,
    TestWorkspaceRegion,
    BadDuration,
    WindowOutOfBounds,
    InvalidField,
    /// A legacy flip would turn off a workspace dataSource that also collects a source the plan
    /// does not move to AMA (syslog facility `user` carries Linux Sysmon too).
    SharedLegacyStream,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}; fix: {fix}")]
pub struct PlanError {
    pub kind: PlanErrorKind,
    /// Path of the offending field, e.g. `spec.dataSources[2].agent`.
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl PlanError {
    pub fn new(
        kind: PlanErrorKind,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn from_catalog(e: &CatalogError) -> Self {
        let (kind, field) = match e {
            CatalogError::UnknownType { index, .. } => (
                PlanErrorKind::UnknownDataSourceType,
                format!("spec.catalogOverrides[{index}].type"),
            ),
            CatalogError::EmptyOverride { index, .. }
            | CatalogError::DuplicateOverride { index, .. } => (
                PlanErrorKind::InvalidField,
                format!("spec.catalogOverrides[{index}]"),
            ),
        };
        Self::new(kind, field, e.to_string(), "correct or remove the override")
    }
}

/// A plan file refused by [`crate::plan::spec_errors`] before anything is read from Azure.
#[derive(Debug, thiserror::Error)]
#[error(
    "the plan is refused:\n{}\nrun `ama-migrator plan` on it for the full report",
    .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
)]
pub struct PlanRefused(pub Vec<PlanError>);
