//! Finding the operation a request targets and validating its parameters, body and responses.

use std::collections::BTreeMap;

use serde_json::Value;

use super::paths;
use super::schema::{Direction, Place, SchemaValidator, Violation};
use super::specs::{Operation, SpecSet};

/// The operation a request matched, as the spec describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationInfo {
    pub operation_id: String,
    /// Upper-case HTTP method.
    pub method: String,
    pub path_template: String,
    /// Swagger file, relative to the specs folder.
    pub spec_file: String,
    /// The spec's `info.version`, which the request's `api-version` equals.
    pub api_version: String,
    /// Path parameter values (multi-segment ones joined with `/`, no leading slash).
    pub path_params: BTreeMap<String, String>,
}

fn violation(place: Place, pointer: &str, message: String) -> Violation {
    Violation {
        place,
        pointer: pointer.to_string(),
        message,
    }
}

impl SpecSet {
    /// Finds the operation for `method` + `path?query`: the most specific matching template whose
    /// swagger's `info.version` equals the `api-version` query parameter.
    pub fn find_operation(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> Result<OperationInfo, Vec<Violation>> {
        self.lookup(method, path_and_query).map(|(_, info, _)| info)
    }

    #[allow(clippy::type_complexity)]
    fn lookup(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> Result<(&Operation, OperationInfo, Vec<(String, String)>), Vec<Violation>> {
        let method = method.to_ascii_uppercase();
        let (path, query) = paths::split_path_and_query(path_and_query);
        let segs = paths::split_path(&path);
        let mut matches: Vec<(&Operation, BTreeMap<String, String>)> = self
            .operations
            .iter()
            .filter_map(|op| paths::match_segments(&op.segments, &segs).map(|m| (op, m)))
            .collect();
        if matches.is_empty() {
            return Err(vec![violation(
                Place::Operation,
                "",
                format!("no path template in the specs matches {path}"),
            )]);
        }
        let path_matches = matches.len();
        matches.retain(|(op, _)| op.method == method);
        if matches.is_empty() {
            return Err(vec![violation(
                Place::Operation,
                "",
                format!(
                    "{path} matches {path_matches} template(s) but none declares method {method}"
                ),
            )]);
        }
        let api_version = query
            .iter()
            .find(|(k, _)| k == "api-version")
            .map(|(_, v)| v.clone());
        let Some(api_version) = api_version else {
            return Err(vec![violation(
                Place::Query,
                "/api-version",
                format!(
                    "missing api-version (spec {} has {})",
                    matches[0].0.operation_id, matches[0].0.api_version
                ),
            )]);
        };
        let best_versioned = matches
            .iter()
            .filter(|(op, _)| op.api_version == api_version)
            .max_by_key(|(op, _)| paths::specificity(&op.segments));
        let Some((op, params)) = best_versioned else {
            let known: Vec<String> = matches
                .iter()
                .map(|(op, _)| format!("{} at {}", op.operation_id, op.api_version))
                .collect();
            return Err(vec![violation(
                Place::Query,
                "/api-version",
                format!(
                    "api-version {api_version} is not described for {method} {path}; the specs have {}",
                    known.join(", ")
                ),
            )]);
        };
        let info = OperationInfo {
            operation_id: op.operation_id.clone(),
            method: op.method.clone(),
            path_template: op.template.clone(),
            spec_file: self.rel(op.file).to_string(),
            api_version: op.api_version.clone(),
            path_params: params.clone(),
        };
        Ok((op, info, query))
    }

    /// Validates a request: its operation exists at this api-version, path and query parameters
    /// meet their constraints, required query parameters are present, and the body matches the
    /// body parameter's schema (`body: None` = no body sent).
    pub fn validate_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<OperationInfo, Vec<Violation>> {
        let (op, info, query) = self.lookup(method, path_and_query)?;
        let mut out = Vec::new();
        for p in &op.params {
            match p.location.as_str() {
                "path" => {
                    let Some(v) = info.path_params.get(&p.name) else {
                        continue;
                    };
                    let mut sv = SchemaValidator::new(self, Direction::Request, Place::Path);
                    sv.validate(
                        p.file,
                        &p.value,
                        &typed(&p.value, v),
                        &format!("/{}", p.name),
                    );
                    out.extend(sv.violations);
                }
                "query" => match query.iter().find(|(k, _)| *k == p.name) {
                    Some((_, v)) => {
                        let mut sv = SchemaValidator::new(self, Direction::Request, Place::Query);
                        sv.validate(
                            p.file,
                            &p.value,
                            &typed(&p.value, v),
                            &format!("/{}", p.name),
                        );
                        out.extend(sv.violations);
                    }
                    None if p.required => out.push(violation(
                        Place::Query,
                        &format!("/{}", p.name),
                        format!("missing required query parameter `{}`", p.name),
                    )),
                    None => {}
                },
                _ => {} // headers are not visible here
            }
        }
        let body_param = op.params.iter().find(|p| p.location == "body");
        match (body_param, body) {
            (None, Some(b)) if !b.is_null() => out.push(violation(
                Place::Body,
                "",
                format!("{} takes no request body", op.operation_id),
            )),
            (Some(p), None) if p.required => out.push(violation(
                Place::Body,
                "",
                format!("{} requires a body (`{}`)", op.operation_id, p.name),
            )),
            (Some(p), Some(b)) => match p.value.get("schema") {
                Some(schema) => {
                    let mut sv = SchemaValidator::new(self, Direction::Request, Place::Body);
                    sv.validate(p.file, schema, b, "");
                    out.extend(sv.violations);
                }
                None => out.push(violation(
                    Place::Schema,
                    "",
                    format!("body parameter `{}` has no schema", p.name),
                )),
            },
            _ => {}
        }
        if out.is_empty() { Ok(info) } else { Err(out) }
    }

    /// Validates a response: the status is declared by the operation (non-2xx may fall back to
    /// `default`), and the body matches that response's schema (`body: None` = empty body).
    pub fn validate_response(
        &self,
        method: &str,
        path_and_query: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Result<OperationInfo, Vec<Violation>> {
        let (op, info, _) = self.lookup(method, path_and_query)?;
        let op_node = self.docs[op.file].value.pointer(&op.pointer);
        let responses = op_node.and_then(|o| o.get("responses"));
        let code = status.to_string();
        let declared = responses.and_then(|r| r.get(&code));
        let success = (200..300).contains(&status);
        let chosen = match declared {
            Some(r) => Some(r),
            None if !success => responses.and_then(|r| r.get("default")),
            None => None,
        };
        let Some(response) = chosen else {
            let list: Vec<&String> = responses
                .and_then(Value::as_object)
                .map(|r| r.keys().collect())
                .unwrap_or_default();
            return Err(vec![violation(
                Place::Status,
                "",
                format!(
                    "{} does not declare status {status} (declares {})",
                    op.operation_id,
                    list.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )]);
        };
        let (file, response) = match self.deref(op.file, response) {
            Ok(r) => r,
            Err(why) => return Err(vec![violation(Place::Schema, "", why)]),
        };
        let mut out = Vec::new();
        match (response.get("schema"), body) {
            (Some(_), None) => out.push(violation(
                Place::Body,
                "",
                format!("{} status {status} must carry a body", op.operation_id),
            )),
            (Some(schema), Some(b)) => {
                let mut sv = SchemaValidator::new(self, Direction::Response, Place::Body);
                sv.validate(file, schema, b, "");
                out.extend(sv.violations);
            }
            (None, Some(b)) if !b.is_null() => out.push(violation(
                Place::Body,
                "",
                format!(
                    "{} declares no body for status {status}, got {}",
                    op.operation_id,
                    truncate(&b.to_string(), 200)
                ),
            )),
            _ => {}
        }
        if out.is_empty() { Ok(info) } else { Err(out) }
    }

    /// Validates a value against one schema, e.g. `("…/dataCollectionRules_API.json",
    /// "#/definitions/DataCollectionRuleResource")`. `file` is relative to the specs folder (or
    /// a unique suffix of such a path). Checked as a request body (what we send).
    pub fn validate_schema_ref(
        &self,
        file: &str,
        reference: &str,
        value: &Value,
    ) -> Result<(), Vec<Violation>> {
        self.validate_schema_ref_as(Direction::Request, file, reference, value)
    }

    /// As [`SpecSet::validate_schema_ref`], choosing the direction (responses allow `null`s).
    pub fn validate_schema_ref_as(
        &self,
        direction: Direction,
        file: &str,
        reference: &str,
        value: &Value,
    ) -> Result<(), Vec<Violation>> {
        let Some(id) = self.file_id(file) else {
            return Err(vec![violation(
                Place::Schema,
                "",
                format!("no spec file `{file}` under {}", self.root().display()),
            )]);
        };
        let pointer = reference.trim_start_matches('#');
        let mut sv = SchemaValidator::new(self, direction, Place::Body);
        sv.validate_definition(id, pointer, value);
        if sv.violations.is_empty() {
            Ok(())
        } else {
            Err(sv.violations)
        }
    }
}

/// Path and query values arrive as text; typed parameters are converted before validation.
fn typed(param: &Value, raw: &str) -> Value {
    match param.get("type").and_then(Value::as_str) {
        Some("integer") => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.into())),
        Some("number") => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(raw.into())),
        Some("boolean") => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(raw.into()),
        },
        _ => Value::String(raw.into()),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}
