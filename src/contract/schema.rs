//! Validating a JSON value against a Swagger 2.0 schema with AutoRest/oav semantics.
//!
//! Differences from plain JSON Schema, as the specs README asks: `allOf` members are merged (so
//! `additionalProperties: false` is relative to all inherited properties); `discriminator` +
//! `x-ms-discriminator-value` select the subtype to check; enums with `x-ms-enum.modelAsString` are
//! open; responses may carry `null` for optional properties; `readOnly` is accepted both ways.
//! Not enforced: `format: uuid`/`uri`/`arm-id` (examples use non-conforming ids), `uniqueItems`,
//! patterns the `regex` crate cannot compile (listed by `SpecSet::unsupported_patterns`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde_json::Value;

use super::specs::{FileId, SchemaKey, SpecSet, escape_pointer};

/// Where a violation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The request or response body; `pointer` is a JSON pointer into it.
    Body,
    /// A path parameter; `pointer` is `/<name>`.
    Path,
    /// A query parameter; `pointer` is `/<name>`.
    Query,
    /// The HTTP status code of a response.
    Status,
    /// The operation itself could not be identified (method, path, api-version).
    Operation,
    /// The schema asked for does not exist.
    Schema,
}

/// One way a value breaks its contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub place: Place,
    /// JSON pointer into the instance (`""` = the whole body).
    pub pointer: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match self.place {
            Place::Body => "body",
            Place::Path => "path",
            Place::Query => "query",
            Place::Status => "status",
            Place::Operation => "operation",
            Place::Schema => "schema",
        };
        let ptr = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        write!(f, "{place} {ptr}: {}", self.message)
    }
}

/// Which way a body travels; decides the `null` and `readOnly`-required relaxations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Bound on instance nesting, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// The merged view of a schema node with its `$ref` targets and `allOf` ancestors.
#[derive(Default)]
struct Merged<'s> {
    /// Every schema node contributing scalar keywords (type, enum, bounds, items).
    nodes: Vec<(FileId, &'s Value)>,
    properties: BTreeMap<String, Vec<(FileId, &'s Value)>>,
    required: BTreeSet<String>,
    additional: Vec<(FileId, &'s Value)>,
    closed: bool,
    nullable: bool,
    /// Definitions already merged (guards `allOf` cycles and double counting after dispatch).
    seen: HashSet<SchemaKey>,
}

pub(crate) struct SchemaValidator<'s> {
    specs: &'s SpecSet,
    direction: Direction,
    place: Place,
    pub violations: Vec<Violation>,
}

impl<'s> SchemaValidator<'s> {
    pub fn new(specs: &'s SpecSet, direction: Direction, place: Place) -> Self {
        SchemaValidator {
            specs,
            direction,
            place,
            violations: Vec::new(),
        }
    }

    fn fail(&mut self, pointer: &str, message: String) {
        self.violations.push(Violation {
            place: self.place,
            pointer: pointer.to_string(),
            message,
        });
    }

    /// Validates `inst` (at `pointer`) against the schema node `schema` written in `file`.
    pub fn validate(&mut self, file: FileId, schema: &'s Value, inst: &Value, pointer: &str) {
        self.validate_all(&[(file, schema)], inst, pointer, 0);
    }

    fn validate_all(
        &mut self,
        schemas: &[(FileId, &'s Value)],
        inst: &Value,
        ptr: &str,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            self.fail(ptr, format!("nested deeper than {MAX_DEPTH} levels"));
            return;
        }
        let mut m = Merged::default();
        for &(f, s) in schemas {
            self.collect(f, s, inst, &mut m, ptr);
        }
        self.check(&m, inst, ptr, depth);
    }

    fn collect(
        &mut self,
        file: FileId,
        node: &'s Value,
        inst: &Value,
        m: &mut Merged<'s>,
        ptr: &str,
    ) {
        if node.get("x-nullable") == Some(&Value::Bool(true)) {
            m.nullable = true;
        }
        if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let (f, p, target) = match self.specs.resolve(file, reference) {
                Ok(t) => t,
                Err(why) => {
                    self.fail(ptr, format!("schema error: {why}"));
                    return;
                }
            };
            self.collect_key((f, p), target, inst, m, ptr);
            return;
        }
        self.collect_node(file, node, inst, m, ptr);
    }

    /// Merges the definition `key` (node `target`), or the subtype its discriminator selects.
    fn collect_key(
        &mut self,
        key: SchemaKey,
        target: &'s Value,
        inst: &Value,
        m: &mut Merged<'s>,
        ptr: &str,
    ) {
        if m.seen.contains(&key) {
            return;
        }
        if let Some(sub) = self.subtype_for(&key, inst) {
            let specs = self.specs;
            if let Some(node) = specs.docs[sub.0].value.pointer(&sub.1)
                && m.seen.insert(sub.clone())
            {
                self.collect_node(sub.0, node, inst, m, ptr);
                return;
            }
        }
        let file = key.0;
        m.seen.insert(key);
        self.collect_node(file, target, inst, m, ptr);
    }

    /// Validates `inst` against the definition at `pointer` in `file` (polymorphism applies).
    pub fn validate_definition(&mut self, file: FileId, pointer: &str, inst: &Value) {
        let specs = self.specs;
        let Some(target) = specs.docs[file].value.pointer(pointer) else {
            self.fail("", format!("`#{pointer}` not found in {}", specs.rel(file)));
            return;
        };
        let mut m = Merged::default();
        self.collect_key((file, pointer.to_string()), target, inst, &mut m, "");
        self.check(&m, inst, "", 0);
    }

    fn collect_node(
        &mut self,
        file: FileId,
        node: &'s Value,
        inst: &Value,
        m: &mut Merged<'s>,
        ptr: &str,
    ) {
        if node.get("$ref").is_some() {
            // A definition that is itself only a `$ref`.
            self.collect(file, node, inst, m, ptr);
            return;
        }
        if node.get("x-nullable") == Some(&Value::Bool(true)) {
            m.nullable = true;
        }
        m.nodes.push((file, node));
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                m.properties
                    .entry(name.clone())
                    .or_default()
                    .push((file, sub));
            }
        }
        if let Some(req) = node.get("required").and_then(Value::as_array) {
            m.required
                .extend(req.iter().filter_map(Value::as_str).map(str::to_string));
        }
        match node.get("additionalProperties") {
            Some(Value::Bool(false)) => m.closed = true,
            Some(v @ Value::Object(_)) => m.additional.push((file, v)),
            _ => {}
        }
        if let Some(all_of) = node.get("allOf").and_then(Value::as_array) {
            for member in all_of {
                self.collect(file, member, inst, m, ptr);
            }
        }
    }

    /// The subtype of polymorphic `base` that the instance's discriminator value names, if it is
    /// not `base` itself. Unknown values validate against the base (as oav does).
    fn subtype_for(&self, base: &SchemaKey, inst: &Value) -> Option<SchemaKey> {
        let obj = inst.as_object()?;
        let prop = self.discriminator_of(base, 0)?;
        let wanted = obj.get(&prop)?.as_str()?;
        if self.discriminator_value(base).as_deref() == Some(wanted) {
            return None;
        }
        let mut queue: Vec<SchemaKey> = self.specs.children(base).to_vec();
        let mut visited: HashSet<SchemaKey> = HashSet::new();
        while let Some(k) = queue.pop() {
            if !visited.insert(k.clone()) || visited.len() > 1000 {
                continue;
            }
            if self.discriminator_value(&k).as_deref() == Some(wanted) {
                return Some(k);
            }
            queue.extend(self.specs.children(&k).iter().cloned());
        }
        None
    }

    /// The discriminator property declared by a definition or one of its `allOf` ancestors.
    fn discriminator_of(&self, key: &SchemaKey, depth: usize) -> Option<String> {
        if depth > 32 {
            return None;
        }
        let node = self.specs.docs[key.0].value.pointer(&key.1)?;
        if let Some(d) = node.get("discriminator").and_then(Value::as_str) {
            return Some(d.to_string());
        }
        for member in node.get("allOf").and_then(Value::as_array)? {
            let r = member.get("$ref").and_then(Value::as_str)?;
            if let Ok((f, p, _)) = self.specs.resolve(key.0, r)
                && let Some(d) = self.discriminator_of(&(f, p), depth + 1)
            {
                return Some(d);
            }
        }
        None
    }

    fn discriminator_value(&self, key: &SchemaKey) -> Option<String> {
        let node = self.specs.docs[key.0].value.pointer(&key.1)?;
        match node.get("x-ms-discriminator-value").and_then(Value::as_str) {
            Some(v) => Some(v.to_string()),
            None => key.1.rsplit('/').next().map(str::to_string),
        }
    }

    fn check(&mut self, m: &Merged<'s>, inst: &Value, ptr: &str, depth: usize) {
        if inst.is_null() {
            if !m.nullable {
                self.fail(ptr, "null is not allowed here".into());
            }
            return;
        }
        let declared: Vec<&str> = m
            .nodes
            .iter()
            .filter_map(|(_, n)| n.get("type").and_then(Value::as_str))
            .collect();
        for t in &declared {
            if !type_matches(t, inst) {
                self.fail(ptr, format!("expected {t}, found {}", json_type(inst)));
                return;
            }
        }
        let object_like = !m.properties.is_empty() || !m.additional.is_empty() || m.closed;
        if declared.is_empty() && object_like && !inst.is_object() {
            self.fail(ptr, format!("expected object, found {}", json_type(inst)));
            return;
        }
        let mut items = Vec::new();
        for &(file, node) in &m.nodes {
            self.check_scalar(node, inst, ptr);
            if let (Some(it), Value::Array(_)) = (node.get("items"), inst) {
                items.push((file, it));
            }
        }
        if let Value::Array(elems) = inst
            && !items.is_empty()
        {
            for (i, e) in elems.iter().enumerate() {
                self.validate_all(&items, e, &format!("{ptr}/{i}"), depth + 1);
            }
        }
        if let Value::Object(obj) = inst {
            self.check_object(m, obj, ptr, depth);
        }
    }

    fn check_object(
        &mut self,
        m: &Merged<'s>,
        obj: &serde_json::Map<String, Value>,
        ptr: &str,
        depth: usize,
    ) {
        for name in &m.required {
            if obj.contains_key(name) {
                continue;
            }
            let read_only = m
                .properties
                .get(name)
                .is_some_and(|ss| ss.iter().any(|(f, s)| self.is_read_only(*f, s)));
            if self.direction == Direction::Request && read_only {
                continue; // the service fills it in
            }
            self.fail(ptr, format!("missing required property `{name}`"));
        }
        for (name, value) in obj {
            let child = format!("{ptr}/{}", escape_pointer(name));
            if let Some(schemas) = m.properties.get(name) {
                if value.is_null()
                    && self.direction == Direction::Response
                    && !m.required.contains(name)
                {
                    continue; // README: responses may carry null for optional properties
                }
                self.validate_all(schemas, value, &child, depth + 1);
            } else if !m.additional.is_empty() {
                self.validate_all(&m.additional, value, &child, depth + 1);
            } else if m.closed {
                self.fail(
                    &child,
                    format!("property `{name}` is not allowed (additionalProperties: false)"),
                );
            }
        }
    }

    fn is_read_only(&self, file: FileId, node: &Value) -> bool {
        if node.get("readOnly") == Some(&Value::Bool(true)) {
            return true;
        }
        match self.specs.deref(file, node) {
            Ok((_, n)) => n.get("readOnly") == Some(&Value::Bool(true)),
            Err(_) => false,
        }
    }

    fn check_scalar(&mut self, node: &Value, inst: &Value, ptr: &str) {
        if let Some(allowed) = node.get("enum").and_then(Value::as_array) {
            let open = node.pointer("/x-ms-enum/modelAsString") == Some(&Value::Bool(true));
            if !open && !allowed.contains(inst) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                self.fail(ptr, format!("{inst} is not one of [{}]", list.join(", ")));
            }
        }
        let format = node.get("format").and_then(Value::as_str).unwrap_or("");
        match inst {
            Value::String(s) => self.check_string(node, format, s, ptr),
            Value::Number(n) => {
                if format == "int32" && n.as_i64().is_none_or(|v| i32::try_from(v).is_err()) {
                    self.fail(ptr, format!("{n} does not fit int32"));
                }
                let v = n.as_f64().unwrap_or(f64::NAN);
                let excl_min = node.get("exclusiveMinimum") == Some(&Value::Bool(true));
                let excl_max = node.get("exclusiveMaximum") == Some(&Value::Bool(true));
                if let Some(min) = node.get("minimum").and_then(Value::as_f64)
                    && (v < min || (excl_min && v == min))
                {
                    self.fail(ptr, format!("{n} is below the minimum {min}"));
                }
                if let Some(max) = node.get("maximum").and_then(Value::as_f64)
                    && (v > max || (excl_max && v == max))
                {
                    self.fail(ptr, format!("{n} is above the maximum {max}"));
                }
            }
            Value::Array(a) => {
                if let Some(min) = node.get("minItems").and_then(Value::as_u64)
                    && (a.len() as u64) < min
                {
                    self.fail(ptr, format!("{} items, at least {min} required", a.len()));
                }
                if let Some(max) = node.get("maxItems").and_then(Value::as_u64)
                    && (a.len() as u64) > max
                {
                    self.fail(ptr, format!("{} items, at most {max} allowed", a.len()));
                }
            }
            _ => {}
        }
    }

    fn check_string(&mut self, node: &Value, format: &str, s: &str, ptr: &str) {
        let len = s.chars().count() as u64;
        if let Some(min) = node.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            self.fail(ptr, format!("string of length {len} is shorter than {min}"));
        }
        if let Some(max) = node.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            self.fail(ptr, format!("string of length {len} is longer than {max}"));
        }
        if let Some(p) = node.get("pattern").and_then(Value::as_str)
            && let Some(re) = self.specs.pattern(p)
            && !re.is_match(s)
        {
            self.fail(ptr, format!("{s:?} does not match the pattern {p}"));
        }
        if format == "date-time" && !looks_like_date_time(s) {
            self.fail(ptr, format!("{s:?} is not a date-time"));
        }
    }
}

fn type_matches(t: &str, inst: &Value) -> bool {
    match t {
        "string" => inst.is_string(),
        "integer" => inst.is_i64() || inst.is_u64(),
        "number" => inst.is_number(),
        "boolean" => inst.is_boolean(),
        "object" => inst.is_object(),
        "array" => inst.is_array(),
        _ => true, // `file` and unknown types are not checked
    }
}

/// The JSON Schema type of a value (`integer` for whole numbers, `number` otherwise).
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Loose RFC 3339 check: `YYYY-MM-DD` then optionally `T`/space and a time.
pub fn looks_like_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b.len() == 10 || matches!(b[10], b'T' | b't' | b' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_time_is_checked_loosely() {
        assert!(looks_like_date_time("2024-03-22T19:15:08.2155156Z"));
        assert!(looks_like_date_time("2024-03-22"));
        assert!(!looks_like_date_time("yesterday"));
        assert!(!looks_like_date_time("2024/03/22T00:00:00Z"));
    }

    #[test]
    fn types_follow_swagger_names() {
        assert!(type_matches("integer", &serde_json::json!(3)));
        assert!(!type_matches("integer", &serde_json::json!(3.5)));
        assert!(type_matches("number", &serde_json::json!(3)));
        assert!(!type_matches("string", &serde_json::json!(3)));
    }
}
