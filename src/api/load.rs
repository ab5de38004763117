//! Reading a `MigrationPlan` from a YAML or JSON file, with errors that name the field and the
//! fix (serde alone says "unknown variant" without saying where).

use crate::catalog::DataSourceType;

use super::MigrationPlan;

#[derive(Debug, thiserror::Error)]
pub enum PlanLoadError {
    #[error("the plan is neither valid YAML nor JSON: {0}")]
    Syntax(String),
    #[error(
        "the document is not a MigrationPlan (kind {found:?}); expected `apiVersion: amamigrator.io/v1alpha1` and `kind: MigrationPlan`"
    )]
    WrongKind { found: String },
    #[error("{field}: unknown data source type {value:?}; use one of: {known}")]
    UnknownDataSourceType {
        field: String,
        value: String,
        known: String,
    },
    #[error("{field}: unknown agent {value:?}; use AMA or Legacy")]
    UnknownAgent { field: String, value: String },
    #[error(
        "the plan does not match the MigrationPlan schema: {0}; run `ama-migrator crd` for the schema"
    )]
    Shape(String),
}

/// Parse a plan document (YAML, or JSON which is YAML too).
pub fn load_plan(text: &str) -> Result<MigrationPlan, PlanLoadError> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text).map_err(|e| PlanLoadError::Syntax(e.to_string()))?,
    };
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "MigrationPlan" {
        return Err(PlanLoadError::WrongKind {
            found: kind.to_string(),
        });
    }
    if let Some(sources) = value
        .pointer("/spec/dataSources")
        .and_then(|v| v.as_array())
    {
        for (i, ds) in sources.iter().enumerate() {
            if let Some(t) = ds.get("type").and_then(|t| t.as_str()) {
                if DataSourceType::parse(t).is_none() {
                    return Err(PlanLoadError::UnknownDataSourceType {
                        field: format!("spec.dataSources[{i}].type"),
                        value: t.to_string(),
                        known: DataSourceType::ALL
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            if let Some(a) = ds.get("agent").and_then(|t| t.as_str()) {
                if a != "AMA" && a != "Legacy" {
                    return Err(PlanLoadError::UnknownAgent {
                        field: format!("spec.dataSources[{i}].agent"),
                        value: a.to_string(),
                    });
                }
            }
        }
    }
    serde_json::from_value(value).map_err(|e| PlanLoadError::Shape(e.to_string()))
}
