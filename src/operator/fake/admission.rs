//! What the API server does to an object on every write before it stores it, so the fake keeps,
//! changes and refuses what a real cluster would:
//!
//! * object metadata: names, label keys and values, annotation size; ConfigMap data size;
//! * custom resources, from the structural schema of their CRD (apiextensions.k8s.io/v1): fields
//!   the schema does not declare are pruned (and nulls where it is not `nullable`), defaults are
//!   filled in, then the OpenAPI rules are checked — types, enums, required fields, bounds,
//!   lengths, patterns, item counts, `date-time` strings and list-map keys.
//!
//! Not done: CEL rules (`x-kubernetes-validations`), validation ratcheting, string formats other
//! than `date-time`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::{Map, Value};

use crate::contract::schema::{json_type, looks_like_date_time};

/// What a real API server allows for one object's annotations, keys and values together.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// What a real API server allows for a ConfigMap's data and binaryData together.
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

/// The keys of a custom resource that belong to the API server, whatever its schema says.
const SERVER_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// One field error, worded as the API server words it (`spec.waves[0].name: Invalid value: …`).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub detail: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

fn error(out: &mut Vec<FieldError>, path: &str, detail: String) {
    out.push(FieldError {
        path: path.to_string(),
        detail,
    });
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A CRD version's `openAPIV3Schema` as it applies to a stored object's body: `apiVersion`,
/// `kind` and `metadata` taken out (the server handles them itself).
pub fn body_schema(open_api_v3_schema: &Value) -> Value {
    let mut schema = open_api_v3_schema.clone();
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for field in SERVER_FIELDS {
            props.remove(field);
        }
    }
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| !r.as_str().is_some_and(|r| SERVER_FIELDS.contains(&r)));
    }
    schema
}

/// Prune, default and validate a custom resource against its [`body_schema`]. The object is
/// changed in place as the server would store it; the errors are why the server would refuse it.
pub fn admit_custom_resource(schema: &Value, obj: &mut Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(root) = obj.as_object_mut() else {
        error(&mut out, "<root>", "must be an object".into());
        return out;
    };
    let server: Vec<(String, Value)> = SERVER_FIELDS
        .iter()
        .filter_map(|k| root.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    let mut body = Value::Object(std::mem::take(root));
    prune(schema, &mut body);
    default(schema, &mut body);
    validate(schema, &body, "", &mut out);
    let mut fields = match body {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in server {
        fields.insert(k, v);
    }
    *root = fields;
    out
}

/// Drop what the schema does not declare, and nulls where it is not `nullable`.
fn prune(schema: &Value, value: &mut Value) {
    if flag(schema, "x-kubernetes-embedded-resource") {
        return;
    }
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_unknown = flag(schema, "x-kubernetes-preserve-unknown-fields")
                || additional.is_some_and(|a| a.as_bool() == Some(true));
            let schema_of = |k: &str| -> Option<&Value> {
                props
                    .and_then(|p| p.get(k))
                    .or(additional.filter(|a| a.is_object()))
            };
            fields.retain(|k, v| match schema_of(k) {
                None => keep_unknown,
                Some(s) => !v.is_null() || flag(s, "nullable"),
            });
            for (k, v) in fields.iter_mut() {
                if let Some(s) = schema_of(k) {
                    prune(s, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|item| prune(s, item));
            }
        }
        _ => {}
    }
}

/// Fill in every missing field that has a `default`, top down (a default's own fields too).
fn default(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, s) in props.into_iter().flatten() {
                if let (false, Some(d)) = (fields.contains_key(k), s.get("default")) {
                    fields.insert(k.clone(), d.clone());
                }
            }
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in fields.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    default(s, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|item| default(s, item));
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// Compiled `pattern`s, kept for the life of the process (a schema has a handful).
static PATTERNS: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn matches_pattern(pattern: &str, text: &str) -> bool {
    let mut cache = PATTERNS.lock().unwrap_or_else(|e| e.into_inner());
    let re = cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok());
    // A pattern the server could not compile would have been refused with the CRD.
    re.as_ref().is_none_or(|re| re.is_match(text))
}

fn validate(schema: &Value, value: &Value, path: &str, out: &mut Vec<FieldError>) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if !flag(schema, "nullable") {
            let want = schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("value");
            error(
                out,
                shown,
                format!(
                    "Invalid value: \"null\": {shown} in body must be of type {want}: \"null\""
                ),
            );
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            error(
                out,
                shown,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    short(value),
                    list.join(", ")
                ),
            );
        }
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !matches!(json_type(value), "integer" | "string") {
            error(
                out,
                shown,
                format!(
                    "Invalid value: \"{}\": {shown} in body must be of type int-or-string",
                    json_type(value)
                ),
            );
        }
        return;
    }
    let Some(want) = schema.get("type").and_then(Value::as_str) else {
        return;
    };
    let got = json_type(value);
    let fits = got == want || (want == "number" && got == "integer");
    if !fits {
        error(
            out,
            shown,
            format!("Invalid value: \"{got}\": {shown} in body must be of type {want}: \"{got}\""),
        );
        return;
    }
    match value {
        Value::Object(fields) => validate_object(schema, fields, path, out),
        Value::Array(items) => validate_array(schema, items, shown, path, out),
        Value::String(text) => validate_string(schema, text, shown, out),
        Value::Number(n) => validate_number(schema, n, shown, out),
        _ => {}
    }
}

fn validate_object(
    schema: &Value,
    fields: &Map<String, Value>,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(r) {
            error(out, &child(path, r), "Required value".into());
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in fields {
        if let Some(s) = props.and_then(|p| p.get(k)) {
            validate(s, v, &child(path, k), out);
        } else if let Some(s) = additional {
            validate(
                s,
                v,
                &format!("{}[{k}]", if path.is_empty() { "<root>" } else { path }),
                out,
            );
        }
    }
}

fn validate_array(
    schema: &Value,
    items: &[Value],
    shown: &str,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if items.len() as u64 > max {
            error(
                out,
                shown,
                format!("Too many: {}: must have at most {max} items", items.len()),
            );
        }
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if (items.len() as u64) < min {
            error(
                out,
                shown,
                format!(
                    "Invalid value: {}: {shown} in body should have at least {min} items",
                    items.len()
                ),
            );
        }
    }
    let item_path = |i: usize| format!("{path}[{i}]");
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    error(
                        out,
                        &item_path(i),
                        format!("Duplicate value: {}", short(item)),
                    );
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            for (i, item) in items.iter().enumerate() {
                let key = key_of(item);
                if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                    let shown_key: Map<String, Value> = keys
                        .iter()
                        .map(|k| k.to_string())
                        .zip(key.iter().cloned())
                        .collect();
                    error(
                        out,
                        &item_path(i),
                        format!("Duplicate value: {}", Value::Object(shown_key)),
                    );
                }
            }
        }
        _ => {}
    }
    if let Some(s) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate(s, item, &item_path(i), out);
        }
    }
}

fn validate_string(schema: &Value, text: &str, shown: &str, out: &mut Vec<FieldError>) {
    let chars = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            error(
                out,
                shown,
                format!("Too long: may not be more than {max} bytes"),
            );
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            error(
                out,
                shown,
                format!(
                    "Invalid value: \"{text}\": {shown} in body should be at least {min} chars long"
                ),
            );
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if !matches_pattern(pattern, text) {
            error(
                out,
                shown,
                format!("Invalid value: \"{text}\": {shown} in body should match '{pattern}'"),
            );
        }
    }
    let date_time = matches!(
        schema.get("format").and_then(Value::as_str),
        Some("date-time" | "datetime")
    );
    if date_time && !looks_like_date_time(text) {
        error(
            out,
            shown,
            format!(
                "Invalid value: \"{text}\": {shown} in body must be of type date-time: \"{text}\""
            ),
        );
    }
}

fn validate_number(schema: &Value, n: &serde_json::Number, shown: &str, out: &mut Vec<FieldError>) {
    let Some(x) = n.as_f64() else {
        return;
    };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            error(
                out,
                shown,
                format!("Invalid value: {n}: {shown} in body should be {op} {min}"),
            );
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            error(
                out,
                shown,
                format!("Invalid value: {n}: {shown} in body should be {op} {max}"),
            );
        }
    }
}

static DNS_SUBDOMAIN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok()
});
static DNS_LABEL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").ok());
static QUALIFIED_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").ok());
static CONFIG_KEY: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[-._a-zA-Z0-9]+$").ok());

fn is_match(re: &LazyLock<Option<Regex>>, text: &str) -> bool {
    re.as_ref().is_none_or(|re| re.is_match(text))
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters.
fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || !is_match(&DNS_SUBDOMAIN, p) {
            return Some(format!("prefix part {p:?} must be a DNS subdomain"));
        }
    }
    if name.is_empty() || name.len() > 63 || !is_match(&QUALIFIED_NAME, name) {
        return Some(format!(
            "name part {name:?} must be 1-63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        ));
    }
    None
}

/// Metadata and size rules every object of `resource` (plural) must meet.
pub fn check_object(resource: &str, obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
        let (re, max, what) = if resource == "namespaces" {
            (&DNS_LABEL, 63, "a DNS-1123 label")
        } else {
            (&DNS_SUBDOMAIN, 253, "a DNS-1123 subdomain")
        };
        if name.len() > max || !is_match(re, name) {
            error(
                &mut out,
                "metadata.name",
                format!(
                    "Invalid value: {name:?}: must be {what} (lowercase alphanumeric characters, '-' or '.', at most {max})"
                ),
            );
        }
    }
    for (k, v) in obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let path = format!("metadata.labels[{k}]");
        if let Some(problem) = qualified_name_problem(k) {
            error(&mut out, &path, format!("Invalid value: {k:?}: {problem}"));
        }
        let text = v.as_str().unwrap_or_default();
        if !(text.is_empty() || (text.len() <= 63 && is_match(&QUALIFIED_NAME, text))) {
            error(
                &mut out,
                &path,
                format!(
                    "Invalid value: {text:?}: a label value must be empty or at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
                ),
            );
        }
    }
    let annotations = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let mut annotation_bytes = 0;
    for (k, v) in annotations.into_iter().flatten() {
        if let Some(problem) = qualified_name_problem(k) {
            error(
                &mut out,
                &format!("metadata.annotations[{k}]"),
                format!("Invalid value: {k:?}: {problem}"),
            );
        }
        annotation_bytes += k.len() + v.as_str().map_or(0, str::len);
    }
    if annotation_bytes > MAX_ANNOTATIONS_BYTES {
        error(
            &mut out,
            "metadata.annotations",
            format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
        );
    }
    if resource == "configmaps" {
        let mut bytes = 0;
        for field in ["data", "binaryData"] {
            for (k, v) in obj
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if k.len() > 253 || !is_match(&CONFIG_KEY, k) {
                    error(
                        &mut out,
                        &format!("{field}[{k}]"),
                        format!(
                            "Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                        ),
                    );
                }
                bytes += k.len() + v.as_str().map_or(0, str::len);
            }
        }
        if bytes > MAX_CONFIGMAP_BYTES {
            error(
                &mut out,
                "<root>",
                format!("Too long: must have at most {MAX_CONFIGMAP_BYTES} bytes"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        body_schema(&json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                        "mode": {"type": "string", "enum": ["Fast", "Slow"], "default": "Slow"},
                        "count": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 10},
                        "note": {"type": "string", "nullable": true},
                        "when": {"type": "string", "format": "date-time"},
                        "nested": {"type": "object", "default": {}, "properties": {
                            "on": {"type": "boolean", "default": false}
                        }},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                        "items": {"type": "array", "maxItems": 2, "items": {"type": "object",
                            "properties": {"type": {"type": "string"}, "v": {"type": "integer"}}},
                            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
                    }
                },
                "status": {"type": "object", "nullable": true, "properties": {
                    "phase": {"type": "string"}
                }}
            }
        }))
    }

    #[test]
    fn unknown_fields_and_non_nullable_nulls_are_pruned_and_defaults_filled() {
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "extra": 1},
            "spec": {"name": "ab", "bogus": true, "count": null, "note": null,
                     "tags": {"k": "v"}},
            "status": {"phase": "Done", "unknown": [1]},
            "topLevel": "dropped"
        });
        let errors = admit_custom_resource(&schema(), &mut obj);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            obj,
            json!({
                "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "extra": 1},
                "spec": {"name": "ab", "note": null, "mode": "Slow", "nested": {"on": false},
                         "tags": {"k": "v"}},
                "status": {"phase": "Done"}
            })
        );
    }

    #[test]
    fn each_openapi_rule_is_enforced_with_the_field_path() {
        let cases = [
            (
                json!({"name": "ab", "count": "3"}),
                "spec.count",
                "must be of type integer",
            ),
            (json!({"name": "AB"}), "spec.name", "should match"),
            (json!({"name": "abcdef"}), "spec.name", "Too long"),
            (
                json!({"name": "ab", "mode": "Quick"}),
                "spec.mode",
                "Unsupported value",
            ),
            (
                json!({"name": "ab", "count": 11}),
                "spec.count",
                "less than or equal to 10",
            ),
            (
                json!({"name": "ab", "count": -1}),
                "spec.count",
                "greater than or equal to 0",
            ),
            (
                json!({"name": "ab", "when": "yesterday"}),
                "spec.when",
                "date-time",
            ),
            (json!({}), "spec.name", "Required value"),
            (
                json!({"name": "ab", "tags": {"k": 1}}),
                "spec.tags[k]",
                "must be of type string",
            ),
            (
                json!({"name": "ab", "items": [{"type": "A"}, {"type": "A"}]}),
                "spec.items[1]",
                "Duplicate value",
            ),
            (
                json!({"name": "ab", "items": [{"type": "A"}, {"type": "B"}, {"type": "C"}]}),
                "spec.items",
                "Too many",
            ),
        ];
        for (spec, path, want) in cases {
            let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {}, "spec": spec});
            let errors = admit_custom_resource(&schema(), &mut obj);
            assert!(
                errors
                    .iter()
                    .any(|e| e.path == path && e.detail.contains(want)),
                "{spec}: wanted {path}: {want}; got {errors:?}"
            );
        }
        let mut no_spec = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {}});
        let errors = admit_custom_resource(&schema(), &mut no_spec);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec");
    }

    #[test]
    fn metadata_names_labels_and_sizes_are_checked() {
        let ok = json!({"metadata": {"name": "web-01-1a2b3c4d",
            "labels": {"amamigrator.io/plan": "p", "amamigrator.io/wave": ""},
            "annotations": {"amamigrator.io/hold": "true"}}});
        assert!(check_object("machinemigrations", &ok).is_empty());
        let bad = [
            (
                "machinemigrations",
                json!({"metadata": {"name": "Web_01"}}),
                "metadata.name",
            ),
            (
                "namespaces",
                json!({"metadata": {"name": "a.b"}}),
                "metadata.name",
            ),
            (
                "machinemigrations",
                json!({"metadata": {"name": "a", "labels": {"amamigrator.io/wave": "Pilot wave"}}}),
                "metadata.labels[amamigrator.io/wave]",
            ),
            (
                "machinemigrations",
                json!({"metadata": {"name": "a", "labels": {"bad key/x": "v"}}}),
                "metadata.labels[bad key/x]",
            ),
            (
                "machinemigrations",
                json!({"metadata": {"name": "a", "annotations": {"k": "x".repeat(MAX_ANNOTATIONS_BYTES)}}}),
                "metadata.annotations",
            ),
            (
                "configmaps",
                json!({"metadata": {"name": "a"}, "data": {"k": "x".repeat(MAX_CONFIGMAP_BYTES)}}),
                "<root>",
            ),
        ];
        for (resource, obj, path) in bad {
            let errors = check_object(resource, &obj);
            assert!(errors.iter().any(|e| e.path == path), "{path}: {errors:?}");
        }
    }
}
