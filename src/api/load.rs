//! Reading a `MigrationPlan` from a YAML or JSON file, with errors that name the field and the
//! fix (serde alone says "unknown variant" without saying where).

use crate::catalog::DataSourceType;

use super::MigrationPlan;
use super::schema_check::{SchemaViolation, violations};

#[derive(Debug, thiserror::Error)]
pub enum PlanLoadError {
    #[error("the plan is neither valid YAML nor JSON: {0}")]
    Syntax(String),
    #[error(
        "the document is not a MigrationPlan (kind {found:?}); expected `apiVersion: amamigrator.io/v1alpha1` and `kind: MigrationPlan`"
    )]
    WrongKind { found: String },
    #[error("apiVersion: {found:?} is not a MigrationPlan version; write `apiVersion: {expected}`")]
    WrongApiVersion { found: String, expected: String },
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
    #[error(
        "the plan does not match the MigrationPlan schema (as an API server with strict field validation would refuse it):\n{}\nfix each field named above; `ama-migrator crd` prints the schema",
        .0.iter().map(|v| format!("  {v}")).collect::<Vec<_>>().join("\n")
    )]
    Schema(Vec<SchemaViolation>),
}

/// The top-level fields of a plan document.
const TOP_LEVEL: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// Where the plan document departs from the MigrationPlan CRD's schema (its spec, and unknown
/// top-level fields).
pub fn schema_violations(value: &serde_json::Value) -> Vec<SchemaViolation> {
    let mut out = Vec::new();
    if let Some(map) = value.as_object() {
        for key in map.keys().filter(|k| !TOP_LEVEL.contains(&k.as_str())) {
            out.push(SchemaViolation {
                path: key.clone(),
                problem: format!(
                    "unknown field {key:?}; a plan document has {}",
                    TOP_LEVEL.join(", ")
                ),
            });
        }
    }
    let crd = <MigrationPlan as kube::CustomResourceExt>::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok());
    if let (Some(schema), Some(spec)) = (schema, value.get("spec"))
        && let Some(spec_schema) = schema.pointer("/properties/spec")
    {
        out.extend(violations(spec, spec_schema, "spec"));
    }
    out
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
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let expected = <MigrationPlan as kube::Resource>::api_version(&());
    if api_version != expected {
        return Err(PlanLoadError::WrongApiVersion {
            found: api_version.to_string(),
            expected: expected.into_owned(),
        });
    }
    if let Some(sources) = value
        .pointer("/spec/dataSources")
        .and_then(|v| v.as_array())
    {
        for (i, ds) in sources.iter().enumerate() {
            if let Some(t) = ds.get("type").and_then(|t| t.as_str())
                && DataSourceType::parse(t).is_none()
            {
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
            if let Some(a) = ds.get("agent").and_then(|t| t.as_str())
                && a != "AMA"
                && a != "Legacy"
            {
                return Err(PlanLoadError::UnknownAgent {
                    field: format!("spec.dataSources[{i}].agent"),
                    value: a.to_string(),
                });
            }
        }
    }
    let problems = schema_violations(&value);
    if !problems.is_empty() {
        return Err(PlanLoadError::Schema(problems));
    }
    serde_json::from_value(value).map_err(|e| PlanLoadError::Shape(e.to_string()))
}
