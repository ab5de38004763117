//! A plan file checked against the CRD's own OpenAPI schema, as a real API server checks a
//! `kubectl apply` with strict field validation: unknown fields, wrong types, patterns, enums and
//! the bounds (`maxItems`, `maxLength`, `minimum`, ...) the CRD declares. `plan`, `migrate` and
//! `simulate` read plan files without an API server; this gives them the same limits and names
//! every violation by its path (`spec.rollout.waves[2].soak`), all of them at once.
//!
//! CEL rules (`x-kubernetes-validations`) are not evaluated here: what they express is checked
//! again, with the same field paths, by the planner's validation (`plan::validate`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// One place where a document departs from the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaViolation {
    /// Where, in the `spec.rollout.waves[2].soak` form.
    pub path: String,
    /// What is wrong there and what is allowed.
    pub problem: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// At most this many violations are reported (the first ones, in document order).
pub const MAX_REPORTED: usize = 50;

/// Every violation of `value` (found at `path`) against the OpenAPI v3 `schema`.
pub fn violations(value: &Value, schema: &Value, path: &str) -> Vec<SchemaViolation> {
    let mut check = Check { out: Vec::new() };
    check.walk(value, schema, path);
    check.out
}

struct Check {
    out: Vec<SchemaViolation>,
}

/// Whether `text` matches the schema's `pattern` (`None`: the pattern does not compile, so it is
/// not checked). Patterns are compiled once per process: the schemas are fixed.
fn pattern_matches(pattern: &str, text: &str) -> Option<bool> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut compiled = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    compiled
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .as_ref()
        .map(|re| re.is_match(text))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// `path.key`, or `key` at the document root.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Check {
    fn push(&mut self, path: &str, problem: String) {
        if self.out.len() < MAX_REPORTED {
            self.out.push(SchemaViolation {
                path: path.to_string(),
                problem,
            });
        }
    }

    fn walk(&mut self, v: &Value, s: &Value, path: &str) {
        if self.out.len() >= MAX_REPORTED {
            return;
        }
        if v.is_null() {
            if s.get("nullable").and_then(Value::as_bool) == Some(true) {
                return;
            }
            if s.get("type").is_some() {
                self.push(
                    path,
                    "is null; give it a value or leave the field out".into(),
                );
            }
            return;
        }
        if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
            if !(v.is_string() || v.is_i64() || v.is_u64()) {
                self.push(
                    path,
                    format!("is {}; write an integer or a string", type_name(v)),
                );
            }
            return;
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            let list: Vec<String> = allowed.iter().map(short).collect();
            self.push(
                path,
                format!(
                    "{} is not allowed; use one of {}",
                    short(v),
                    list.join(", ")
                ),
            );
            return;
        }
        let ty = s.get("type").and_then(Value::as_str);
        let fits = match ty {
            None => true,
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("boolean") => v.is_boolean(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some(_) => true,
        };
        if !fits {
            self.push(
                path,
                format!(
                    "is {} ({}); the schema wants {}",
                    type_name(v),
                    short(v),
                    match ty {
                        Some("object") => "an object",
                        Some("array") => "a list",
                        Some("string") => "a string",
                        Some("boolean") => "true or false",
                        Some("integer") => "an integer",
                        _ => "a number",
                    }
                ),
            );
            return;
        }
        match v {
            Value::Object(map) => self.object(map, s, path),
            Value::Array(items) => self.array(items, s, path),
            Value::String(text) => self.string(text, s, path),
            Value::Number(n) => self.number(n, s, path),
            _ => {}
        }
    }

    fn object(&mut self, map: &serde_json::Map<String, Value>, s: &Value, path: &str) {
        let props = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        let preserve = s
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
            && map.len() as u64 > max
        {
            self.push(
                path,
                format!("has {} entries; at most {max} are allowed", map.len()),
            );
        }
        for (key, value) in map {
            let at = child(path, key);
            match (props.and_then(|p| p.get(key)), additional) {
                (Some(schema), _) => self.walk(value, schema, &at),
                (None, Some(schema)) if schema.is_object() => self.walk(value, schema, &at),
                (None, Some(Value::Bool(true))) => {}
                (None, _) if preserve || props.is_none() => {}
                (None, _) => {
                    let mut known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    known.sort_unstable();
                    let hint = close_match(key, &known)
                        .map(|k| format!("did you mean {k:?}? "))
                        .unwrap_or_default();
                    self.push(
                        &at,
                        format!(
                            "unknown field {key:?}; {hint}the fields here are: {}",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    self.push(
                        &child(path, r),
                        "is required and missing; add it (`ama-migrator crd` prints the schema)"
                            .into(),
                    );
                }
            }
        }
    }

    fn array(&mut self, items: &[Value], s: &Value, path: &str) {
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            self.push(
                path,
                format!("has {} items; at most {max} are allowed", items.len()),
            );
            // Items past the bound are not looked at (a list of a million is refused fast).
            return;
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            self.push(
                path,
                format!("has {} items; at least {min} are needed", items.len()),
            );
        }
        if let Some(schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.walk(item, schema, &format!("{path}[{i}]"));
            }
        }
    }

    fn string(&mut self, text: &str, s: &Value, path: &str) {
        let len = text.chars().count() as u64;
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            self.push(
                path,
                format!("is {len} characters long; at most {max} are allowed"),
            );
            return;
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            self.push(
                path,
                format!("is {len} characters long; at least {min} are needed"),
            );
        }
        if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
            && pattern_matches(pattern, text) == Some(false)
        {
            self.push(
                path,
                format!("{text:?} does not match the pattern {pattern}"),
            );
        }
    }

    fn number(&mut self, n: &serde_json::Number, s: &Value, path: &str) {
        let Some(x) = n.as_f64() else { return };
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && x < min
        {
            self.push(path, format!("is {n}; the smallest allowed is {min}"));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && x > max
        {
            self.push(path, format!("is {n}; the largest allowed is {max}"));
        }
    }
}

/// A known field name `key` is likely a misspelling of (case or one or two letters off).
fn close_match<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .copied()
        .find(|k| k.to_ascii_lowercase() == lower)
        .or_else(|| {
            known
                .iter()
                .copied()
                .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)
                .map(|(_, k)| k)
        })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                "count": {"type": "integer", "minimum": 0, "maximum": 10},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "items": {"type": "array", "maxItems": 2, "items": {
                    "type": "object", "properties": {"at": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "opt": {"type": "string", "nullable": true}
            }
        })
    }

    fn problems(v: Value) -> Vec<String> {
        violations(&v, &schema(), "spec")
            .iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn a_document_that_fits_has_no_violation() {
        assert!(
            problems(json!({"name": "abc", "count": 3, "mode": "A",
                "items": [{"at": "x"}], "labels": {"k": "v"}, "free": {"any": [1]}, "opt": null}))
            .is_empty()
        );
    }

    #[test]
    fn each_violation_names_its_path_and_what_is_allowed() {
        let p = problems(json!({
            "nmae": "abc", "count": 11, "mode": "C",
            "items": [{"at": 1}, {"at": "y", "extra": true}],
            "labels": {"k": 1}
        }));
        let has = |needle: &str| p.iter().any(|s| s.contains(needle));
        assert!(
            has("spec.nmae: unknown field \"nmae\"; did you mean \"name\"?"),
            "{p:#?}"
        );
        assert!(has("spec.name: is required and missing"), "{p:#?}");
        assert!(
            has("spec.count: is 11; the largest allowed is 10"),
            "{p:#?}"
        );
        assert!(
            has("spec.mode: \"C\" is not allowed; use one of \"A\", \"B\""),
            "{p:#?}"
        );
        assert!(
            has("spec.items[0].at: is an integer (1); the schema wants a string"),
            "{p:#?}"
        );
        assert!(has("spec.items[1].extra: unknown field"), "{p:#?}");
        assert!(has("spec.labels.k: is an integer"), "{p:#?}");
        assert_eq!(p.len(), 7, "{p:#?}");
    }

    #[test]
    fn bounds_and_patterns_hold() {
        let p = problems(json!({"name": "ABCDEF", "items": [{}, {}, {}]}));
        assert!(
            p.iter()
                .any(|s| s == "spec.name: is 6 characters long; at most 5 are allowed"),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|s| s == "spec.items: has 3 items; at most 2 are allowed"),
            "{p:#?}"
        );
        let p = problems(json!({"name": "AB"}));
        assert_eq!(
            p,
            vec!["spec.name: \"AB\" does not match the pattern ^[a-z]+$".to_string()]
        );
    }

    #[test]
    fn a_huge_list_is_refused_without_walking_it() {
        let items: Vec<Value> = (0..200_000).map(|_| json!({"at": 1})).collect();
        let p = problems(json!({"name": "a", "items": items}));
        assert_eq!(p.len(), 1, "{p:#?}");
    }

    #[test]
    fn misspellings_are_matched_by_case_or_a_letter_or_two() {
        let known = ["maxParallel", "waves", "cutover"];
        assert_eq!(close_match("maxparallel", &known), Some("maxParallel"));
        assert_eq!(close_match("wavs", &known), Some("waves"));
        assert_eq!(close_match("unrelated", &known), None);
    }
}
