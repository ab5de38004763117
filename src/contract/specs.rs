//! Loading Microsoft's swagger files and resolving `$ref`s across them (relative file + JSON pointer).
//!
//! All JSON files under the specs folder are read eagerly (63 files, ~0.7 MB): swaggers and their
//! `x-ms-examples`. Every `$ref` inside a swagger (except example refs, some of which are deliberately
//! absent) is checked at load time, so a broken spec folder fails loudly instead of validating nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;

use super::paths::{self, Segment};

/// Environment variable naming the folder that holds `specification/` (a copy of shared/azure-specs).
pub const SPECS_ENV: &str = "AMA_MIGRATOR_AZURE_SPECS";

/// Index of one loaded JSON document inside a [`SpecSet`].
pub type FileId = usize;

/// A definition (or any schema node) identified by its document and JSON pointer.
pub type SchemaKey = (FileId, String);

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "Azure specs folder {path} not found ({why}); set {SPECS_ENV} to the folder holding \
         `specification/` (shared/azure-specs beside the repository)"
    )]
    MissingDir { path: PathBuf, why: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no swagger file (a JSON object with a `swagger` key) found under {path}")]
    NoSwagger { path: PathBuf },
    #[error("{count} unresolved $ref(s) in the specs, first: {first}")]
    UnresolvedRefs { count: usize, first: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// One loaded JSON file.
#[derive(Debug)]
pub(crate) struct Doc {
    /// Path relative to the specs folder, `/`-separated (e.g. `specification/monitor/...json`).
    pub rel: String,
    pub value: Value,
}

/// A parameter of an operation after following its `$ref`; `file` is where it is defined, so refs
/// inside its schema resolve relative to that file.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: String,
    pub location: String,
    pub required: bool,
    pub file: FileId,
    pub value: Value,
}

/// One operation (method + path template) of a swagger.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub file: FileId,
    pub method: String,
    pub template: String,
    pub segments: Vec<Segment>,
    pub operation_id: String,
    pub api_version: String,
    pub params: Vec<Param>,
    /// JSON pointer of the operation object inside its swagger.
    pub pointer: String,
}

/// Microsoft's specs, loaded and indexed: documents, operations, polymorphic subtypes, patterns.
#[derive(Debug)]
pub struct SpecSet {
    root: PathBuf,
    pub(crate) docs: Vec<Doc>,
    by_rel: HashMap<String, FileId>,
    pub(crate) operations: Vec<Operation>,
    /// Base definition -> definitions that `allOf` it directly.
    children: HashMap<SchemaKey, Vec<SchemaKey>>,
    /// Every `pattern` found in the swaggers, compiled; `None` if the Rust regex engine rejects it.
    patterns: HashMap<String, Option<Regex>>,
    /// `x-ms-examples` refs whose file is not in the folder (the README lists them as skipped).
    pub(crate) missing_examples: Vec<String>,
}

impl SpecSet {
    /// Loads the folder named by `AMA_MIGRATOR_AZURE_SPECS`, else `<crate>/../shared/azure-specs`.
    pub fn load_default() -> Result<Self, SpecError> {
        let dir = match std::env::var_os(SPECS_ENV) {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/azure-specs"),
        };
        Self::load(&dir)
    }

    /// Loads every `*.json` under `dir` and indexes the swaggers among them.
    pub fn load(dir: &Path) -> Result<Self, SpecError> {
        let meta = std::fs::metadata(dir).map_err(|e| SpecError::MissingDir {
            path: dir.to_path_buf(),
            why: e.to_string(),
        })?;
        if !meta.is_dir() {
            return Err(SpecError::MissingDir {
                path: dir.to_path_buf(),
                why: "not a directory".into(),
            });
        }
        let mut files = Vec::new();
        collect_json_files(dir, &mut files)?;
        files.sort();
        let mut docs = Vec::with_capacity(files.len());
        let mut by_rel = HashMap::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Io {
                path: path.clone(),
                source,
            })?;
            let value: Value = serde_json::from_str(&text).map_err(|source| SpecError::Json {
                path: path.clone(),
                source,
            })?;
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            by_rel.insert(rel.clone(), docs.len());
            docs.push(Doc { rel, value });
        }
        let mut set = SpecSet {
            root: dir.to_path_buf(),
            docs,
            by_rel,
            operations: Vec::new(),
            children: HashMap::new(),
            patterns: HashMap::new(),
            missing_examples: Vec::new(),
        };
        if !set.docs.iter().any(|d| is_swagger(&d.value)) {
            return Err(SpecError::NoSwagger {
                path: dir.to_path_buf(),
            });
        }
        set.check_refs()?;
        set.index_subtypes();
        set.index_operations()?;
        set.compile_patterns();
        Ok(set)
    }

    /// The folder the specs were loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Relative paths of the swagger files loaded.
    pub fn swagger_files(&self) -> Vec<&str> {
        self.docs
            .iter()
            .filter(|d| is_swagger(&d.value))
            .map(|d| d.rel.as_str())
            .collect()
    }

    /// `x-ms-examples` refs that point at files not present (deliberately skipped upstream copies).
    pub fn missing_examples(&self) -> &[String] {
        &self.missing_examples
    }

    /// Patterns found in the specs that the `regex` crate cannot compile (they are not enforced).
    pub fn unsupported_patterns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .patterns
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(p, _)| p.as_str())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn pattern(&self, p: &str) -> Option<&Regex> {
        self.patterns.get(p).and_then(|r| r.as_ref())
    }

    pub(crate) fn file_id(&self, rel: &str) -> Option<FileId> {
        let rel = rel.trim_start_matches("./");
        self.by_rel.get(rel).copied().or_else(|| {
            // Accept a path relative to `specification/` or a unique suffix of a stored path.
            let mut hits = self
                .docs
                .iter()
                .enumerate()
                .filter(|(_, d)| d.rel.ends_with(&format!("/{rel}")) || d.rel == rel);
            match (hits.next(), hits.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        })
    }

    pub(crate) fn rel(&self, file: FileId) -> &str {
        &self.docs[file].rel
    }

    /// Resolves `reference` (`other.json#/definitions/X`, `#/parameters/Y`, `./examples/Z.json`)
    /// written inside `from`. Returns the target's document, pointer and node.
    pub(crate) fn resolve(
        &self,
        from: FileId,
        reference: &str,
    ) -> Result<(FileId, String, &Value), String> {
        let (file_part, pointer) = match reference.split_once('#') {
            Some((f, p)) => (f, p),
            None => (reference, ""),
        };
        let file = if file_part.is_empty() {
            from
        } else {
            let base = self.docs[from].rel.rsplit_once('/').map_or("", |(d, _)| d);
            let joined = normalize(&format!("{base}/{file_part}"))
                .ok_or_else(|| format!("`{reference}` climbs above the specs folder"))?;
            *self
                .by_rel
                .get(&joined)
                .ok_or_else(|| format!("file `{joined}` is not in the specs folder"))?
        };
        let node = self.docs[file]
            .value
            .pointer(pointer)
            .ok_or_else(|| format!("pointer `#{pointer}` not found in {}", self.docs[file].rel))?;
        Ok((file, pointer.to_string(), node))
    }

    /// Follows `$ref` chains (bounded) and returns the final node.
    pub(crate) fn deref<'a>(
        &'a self,
        mut file: FileId,
        mut node: &'a Value,
    ) -> Result<(FileId, &'a Value), String> {
        for _ in 0..32 {
            match node.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let (f, _, n) = self.resolve(file, r)?;
                    file = f;
                    node = n;
                }
                None => return Ok((file, node)),
            }
        }
        Err("$ref chain longer than 32 links".into())
    }

    /// Definitions that directly `allOf` the given base.
    pub(crate) fn children(&self, base: &SchemaKey) -> &[SchemaKey] {
        self.children.get(base).map_or(&[], Vec::as_slice)
    }

    fn check_refs(&mut self) -> Result<(), SpecError> {
        let mut unresolved = Vec::new();
        let mut missing_examples = Vec::new();
        for (id, doc) in self.docs.iter().enumerate() {
            if !is_swagger(&doc.value) {
                continue;
            }
            let mut refs = Vec::new();
            walk_refs(&doc.value, String::new(), false, &mut refs);
            for (ptr, reference, in_examples) in refs {
                if let Err(why) = self.resolve(id, &reference) {
                    if in_examples {
                        missing_examples.push(format!("{} -> {reference}", doc.rel));
                    } else {
                        unresolved.push(format!("{}#{ptr}: `{reference}`: {why}", doc.rel));
                    }
                }
            }
        }
        self.missing_examples = missing_examples;
        match unresolved.first() {
            Some(first) => Err(SpecError::UnresolvedRefs {
                count: unresolved.len(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    fn index_subtypes(&mut self) {
        let mut children: HashMap<SchemaKey, Vec<SchemaKey>> = HashMap::new();
        for (id, doc) in self.docs.iter().enumerate() {
            let Some(defs) = doc.value.get("definitions").and_then(Value::as_object) else {
                continue;
            };
            for (name, def) in defs {
                let Some(all_of) = def.get("allOf").and_then(Value::as_array) else {
                    continue;
                };
                for member in all_of {
                    let Some(r) = member.get("$ref").and_then(Value::as_str) else {
                        continue;
                    };
                    if let Ok((f, p, _)) = self.resolve(id, r) {
                        children
                            .entry((f, p))
                            .or_default()
                            .push((id, format!("/definitions/{}", escape_pointer(name))));
                    }
                }
            }
        }
        self.children = children;
    }

    fn index_operations(&mut self) -> Result<(), SpecError> {
        let mut ops = Vec::new();
        for (id, doc) in self.docs.iter().enumerate() {
            if !is_swagger(&doc.value) {
                continue;
            }
            let api_version = doc
                .value
                .pointer("/info/version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(paths) = doc.value.get("paths").and_then(Value::as_object) else {
                continue;
            };
            for (template, item) in paths {
                let Some(item) = item.as_object() else {
                    continue;
                };
                let shared = item.get("parameters").and_then(Value::as_array);
                for (method, op) in item {
                    if !is_http_method(method) {
                        continue;
                    }
                    let invalid = |message: String| SpecError::Invalid {
                        file: doc.rel.clone(),
                        message,
                    };
                    let mut params: Vec<Param> = Vec::new();
                    let own = op.get("parameters").and_then(Value::as_array);
                    for raw in shared
                        .into_iter()
                        .flatten()
                        .chain(own.into_iter().flatten())
                    {
                        let p = self
                            .param(id, raw)
                            .map_err(|e| invalid(format!("{method} {template}: {e}")))?;
                        // Operation-level parameters override path-level ones (same name and place).
                        params.retain(|q| !(q.name == p.name && q.location == p.location));
                        params.push(p);
                    }
                    let multi: HashSet<&str> = params
                        .iter()
                        .filter(|p| {
                            p.location == "path"
                                && p.value.get("x-ms-skip-url-encoding") == Some(&Value::Bool(true))
                        })
                        .map(|p| p.name.as_str())
                        .collect();
                    let segments = paths::parse_template(template, &multi);
                    ops.push(Operation {
                        file: id,
                        method: method.to_ascii_uppercase(),
                        template: template.clone(),
                        segments,
                        operation_id: op
                            .get("operationId")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        api_version: api_version.clone(),
                        params,
                        pointer: format!("/paths/{}/{method}", escape_pointer(template)),
                    });
                }
            }
        }
        self.operations = ops;
        Ok(())
    }

    fn param(&self, file: FileId, raw: &Value) -> Result<Param, String> {
        let (f, v) = self.deref(file, raw)?;
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        let location = v.get("in").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() || location.is_empty() {
            return Err(format!("parameter without `name`/`in`: {v}"));
        }
        Ok(Param {
            name: name.to_string(),
            location: location.to_string(),
            required: v.get("required").and_then(Value::as_bool).unwrap_or(false),
            file: f,
            value: v.clone(),
        })
    }

    fn compile_patterns(&mut self) {
        let mut found = BTreeMap::new();
        for doc in &self.docs {
            if is_swagger(&doc.value) {
                walk_patterns(&doc.value, &mut found);
            }
        }
        self.patterns = found
            .into_keys()
            .map(|p| {
                let compiled = Regex::new(&p).ok();
                (p, compiled)
            })
            .collect();
    }
}

fn is_swagger(v: &Value) -> bool {
    v.get("swagger").is_some()
}

fn is_http_method(m: &str) -> bool {
    matches!(
        m,
        "get" | "put" | "post" | "patch" | "delete" | "head" | "options"
    )
}

fn collect_json_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SpecError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SpecError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SpecError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_json_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every `$ref` string in a document: (pointer of the holder, reference, inside `x-ms-examples`).
fn walk_refs(v: &Value, ptr: String, in_examples: bool, out: &mut Vec<(String, String, bool)>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push((ptr.clone(), r.clone(), in_examples));
            }
            for (k, child) in map {
                let child_ptr = format!("{ptr}/{}", escape_pointer(k));
                walk_refs(child, child_ptr, in_examples || k == "x-ms-examples", out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk_refs(child, format!("{ptr}/{i}"), in_examples, out);
            }
        }
        _ => {}
    }
}

fn walk_patterns(v: &Value, out: &mut BTreeMap<String, ()>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get("pattern") {
                out.insert(p.clone(), ());
            }
            for child in map.values() {
                walk_patterns(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|c| walk_patterns(c, out)),
        _ => {}
    }
}

/// Resolves `.` and `..` in a `/`-separated relative path; `None` if it climbs above the root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub(crate) fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_and_refuses_escaping_the_root() {
        assert_eq!(
            normalize("a/b/../c/./d.json").as_deref(),
            Some("a/c/d.json")
        );
        assert_eq!(normalize("a/../../x.json"), None);
    }

    #[test]
    fn missing_folder_names_the_env_var() {
        let err = SpecSet::load(Path::new("/nonexistent/azure-specs")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(SPECS_ENV), "{msg}");
        assert!(msg.contains("/nonexistent/azure-specs"), "{msg}");
    }
}
