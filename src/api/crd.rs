//! CRD generation (`crds/`, `ama-migrator crd`) and the structural-schema check a real API server
//! applies: a non-structural schema is rejected at apply time, so tests check it here first.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{MachineMigration, MigrationPlan};

/// Every CRD with the file name it lives in under `crds/`, its integer formats in the terms the
/// API server knows (see [`kubernetes_formats`]).
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    let mut crds = vec![
        ("migrationplans.amamigrator.io.yaml", MigrationPlan::crd()),
        (
            "machinemigrations.amamigrator.io.yaml",
            MachineMigration::crd(),
        ),
    ];
    for (_, crd) in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                && let Ok(mut value) = serde_json::to_value(&*schema)
            {
                kubernetes_formats(&mut value);
                if let Ok(normalized) = serde_json::from_value(value) {
                    *schema = normalized;
                }
            }
        }
    }
    crds
}

/// The `format` values the API server recognizes in a CRD schema; any other is accepted with a
/// warning on every apply of the CRD (`unrecognized format "uint32"`, Kubernetes 1.34 and later).
pub const RECOGNIZED_FORMATS: [&str; 29] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// Rewrite schemars' Rust-width integer formats (`uint32`, `uint8`, `int16`, `uint64`, `uint`)
/// as the OpenAPI formats Kubernetes knows, keeping their range as `minimum`/`maximum`.
pub fn kubernetes_formats(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(obj) => {
            let range: Option<(&str, i64, Option<i64>)> = match obj
                .get("format")
                .and_then(|f| f.as_str())
            {
                Some("uint8") => Some(("int32", 0, Some(i64::from(u8::MAX)))),
                Some("uint16") => Some(("int32", 0, Some(i64::from(u16::MAX)))),
                Some("uint32") => Some(("int64", 0, Some(i64::from(u32::MAX)))),
                Some("uint64" | "uint") => Some(("int64", 0, None)),
                Some("int8") => Some(("int32", i64::from(i8::MIN), Some(i64::from(i8::MAX)))),
                Some("int16") => Some(("int32", i64::from(i16::MIN), Some(i64::from(i16::MAX)))),
                _ => None,
            };
            if let Some((format, min, max)) = range {
                obj.insert("format".into(), format.into());
                obj.entry("minimum").or_insert(min.into());
                if let Some(max) = max {
                    obj.entry("maximum").or_insert(max.into());
                }
            }
            for child in obj.values_mut() {
                kubernetes_formats(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(kubernetes_formats),
        _ => {}
    }
}

/// Every `format` in `crd`'s schemas that the API server does not recognize, with its path.
pub fn unrecognized_formats(crd: &CustomResourceDefinition) -> Vec<String> {
    fn walk(node: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match node {
            serde_json::Value::Object(obj) => {
                if let Some(f) = obj.get("format").and_then(|f| f.as_str())
                    && !RECOGNIZED_FORMATS.contains(&f)
                {
                    out.push(format!("{path}: format {f:?}"));
                }
                for (k, v) in obj {
                    walk(v, &format!("{path}.{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(&crd.spec) {
        walk(&value, "spec", &mut out);
    }
    out
}

/// One CRD as YAML, as written to `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// All CRDs as one multi-document YAML stream (what `ama-migrator crd` prints).
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for (_, crd) in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}

/// A structural-schema violation: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructuralViolation {
    pub path: String,
    pub problem: String,
}

impl std::fmt::Display for StructuralViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Walk every schema node of every version of `crd` and report what Kubernetes' structural-schema
/// rules forbid (apiextensions "Specifying a structural schema").
pub fn structural_violations(crd: &CustomResourceDefinition) -> Vec<StructuralViolation> {
    let mut out = Vec::new();
    for v in &crd.spec.versions {
        let path = format!("versions[{}].schema.openAPIV3Schema", v.name);
        match v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => out.push(StructuralViolation {
                path,
                problem: "no schema".into(),
            }),
            Some(schema) => match serde_json::to_value(schema) {
                Ok(value) => check_node(&value, &path, false, &mut out),
                Err(e) => out.push(StructuralViolation {
                    path,
                    problem: format!("schema does not serialize: {e}"),
                }),
            },
        }
    }
    out
}

/// Fields a value-validation node (under allOf/anyOf/oneOf/not) must not carry.
const FORBIDDEN_IN_JUNCTORS: [&str; 5] = [
    "type",
    "description",
    "default",
    "additionalProperties",
    "nullable",
];

fn check_node(
    node: &serde_json::Value,
    path: &str,
    in_junctor: bool,
    out: &mut Vec<StructuralViolation>,
) {
    let mut bad = |problem: String| {
        out.push(StructuralViolation {
            path: path.to_string(),
            problem,
        })
    };
    let Some(obj) = node.as_object() else {
        bad("schema node is not an object".into());
        return;
    };
    for forbidden in ["$ref", "definitions", "$defs", "$schema"] {
        if obj.contains_key(forbidden) {
            bad(format!("uses `{forbidden}`"));
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        bad("has both `properties` and `additionalProperties`".into());
    }
    let flag = |k: &str| obj.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    if in_junctor {
        for f in FORBIDDEN_IN_JUNCTORS {
            if obj.contains_key(f) {
                bad(format!("`{f}` inside allOf/anyOf/oneOf/not"));
            }
        }
    } else {
        let exempt =
            flag("x-kubernetes-int-or-string") || flag("x-kubernetes-preserve-unknown-fields");
        match obj.get("type").and_then(|t| t.as_str()) {
            Some(_) => {}
            None if exempt => {}
            None if obj.contains_key("type") => bad("`type` is not a single string".into()),
            None => bad("has no `type`".into()),
        }
        if obj.get("type").and_then(|t| t.as_str()) == Some("array") && !obj.contains_key("items") {
            bad("array without `items`".into());
        }
    }
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (k, v) in props {
            check_node(v, &format!("{path}.properties.{k}"), in_junctor, out);
        }
    }
    if let Some(items) = obj.get("items") {
        check_node(items, &format!("{path}.items"), in_junctor, out);
    }
    if let Some(ap) = obj.get("additionalProperties")
        && ap.is_object()
    {
        check_node(ap, &format!("{path}.additionalProperties"), in_junctor, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get(junctor) {
            match list.as_array() {
                Some(items) => {
                    for (i, v) in items.iter().enumerate() {
                        check_node(v, &format!("{path}.{junctor}[{i}]"), true, out);
                    }
                }
                None => out.push(StructuralViolation {
                    path: path.to_string(),
                    problem: format!("`{junctor}` is not a list"),
                }),
            }
        }
    }
    if let Some(not) = obj.get("not") {
        check_node(not, &format!("{path}.not"), true, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_flags_each_forbidden_construct() {
        let cases = [
            (serde_json::json!({"properties": {}}), "has no `type`"),
            (
                serde_json::json!({"type": "object", "$ref": "#/x"}),
                "uses `$ref`",
            ),
            (
                serde_json::json!({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}),
                "both `properties` and `additionalProperties`",
            ),
            (
                serde_json::json!({"type": "object", "oneOf": [{"type": "object"}]}),
                "`type` inside allOf/anyOf/oneOf/not",
            ),
            (
                serde_json::json!({"type": "object", "properties": {"a": {"description": "x"}}}),
                "has no `type`",
            ),
            (
                serde_json::json!({"type": "array"}),
                "array without `items`",
            ),
        ];
        for (node, want) in cases {
            let mut out = Vec::new();
            check_node(&node, "root", false, &mut out);
            assert!(
                out.iter().any(|v| v.problem.contains(want)),
                "{node}: {out:?}"
            );
        }
        let mut out = Vec::new();
        check_node(
            &serde_json::json!({"type": "object", "properties": {"x": {"x-kubernetes-int-or-string": true}}}),
            "root",
            false,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }
}
