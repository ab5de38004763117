//! The `x-ms-examples` of the operations the product calls, as plain data.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::paths::{self, Segment};
use super::specs::SpecSet;

/// The operations ama-migrator calls: (swagger file name, operationId).
pub const PRODUCT_OPERATIONS: &[(&str, &str)] = &[
    (
        "virtualMachine.json",
        "VirtualMachineExtensions_CreateOrUpdate",
    ),
    ("virtualMachine.json", "VirtualMachineExtensions_Get"),
    ("virtualMachine.json", "VirtualMachineExtensions_List"),
    ("virtualMachine.json", "VirtualMachineExtensions_Delete"),
    ("virtualMachine.json", "VirtualMachines_Get"),
    ("virtualMachine.json", "VirtualMachines_Update"),
    ("HybridCompute.json", "MachineExtensions_CreateOrUpdate"),
    ("HybridCompute.json", "MachineExtensions_Get"),
    ("HybridCompute.json", "MachineExtensions_List"),
    ("HybridCompute.json", "MachineExtensions_Delete"),
    ("HybridCompute.json", "Machines_Get"),
    ("dataCollectionRules_API.json", "DataCollectionRules_Get"),
    ("dataCollectionRules_API.json", "DataCollectionRules_Create"),
    ("dataCollectionRules_API.json", "DataCollectionRules_Delete"),
    (
        "dataCollectionRules_API.json",
        "DataCollectionRules_ListByResourceGroup",
    ),
    (
        "dataCollectionRules_API.json",
        "DataCollectionRules_ListBySubscription",
    ),
    (
        "dataCollectionRuleAssociations_API.json",
        "DataCollectionRuleAssociations_Get",
    ),
    (
        "dataCollectionRuleAssociations_API.json",
        "DataCollectionRuleAssociations_Create",
    ),
    (
        "dataCollectionRuleAssociations_API.json",
        "DataCollectionRuleAssociations_Delete",
    ),
    (
        "dataCollectionRuleAssociations_API.json",
        "DataCollectionRuleAssociations_ListByResource",
    ),
    (
        "dataCollectionRuleAssociations_API.json",
        "DataCollectionRuleAssociations_ListByRule",
    ),
    ("DataSources.json", "DataSources_Get"),
    ("DataSources.json", "DataSources_CreateOrUpdate"),
    ("DataSources.json", "DataSources_Delete"),
    ("DataSources.json", "DataSources_ListByWorkspace"),
    ("resourcegraph.json", "Resources"),
];

/// One `x-ms-examples` entry of an operation.
#[derive(Debug, Clone)]
pub struct OperationExample {
    pub operation_id: String,
    pub method: String,
    pub path_template: String,
    pub spec_file: String,
    /// The example's title (its key under `x-ms-examples`).
    pub title: String,
    pub example_file: String,
    /// All parameters, including the body under the body parameter's name.
    pub parameters: Map<String, Value>,
    /// Name of the operation's body parameter, if it has one.
    pub body_parameter: Option<String>,
    /// Response bodies by status code (`None` when the example shows no body).
    pub responses: BTreeMap<String, Option<Value>>,
    segments: Vec<Segment>,
    query_names: Vec<String>,
}

impl OperationExample {
    /// The example's request body, if the operation takes one and the example provides it.
    pub fn request_body(&self) -> Option<&Value> {
        self.body_parameter
            .as_ref()
            .and_then(|n| self.parameters.get(n))
    }

    /// The concrete `path?query` the example describes: template filled from its parameters,
    /// `api-version` and any other declared query parameters it sets.
    pub fn concrete_path(&self) -> String {
        let mut path = String::new();
        for seg in &self.segments {
            path.push('/');
            match seg {
                Segment::Literal(l) => path.push_str(l),
                Segment::Param { name, multi } => {
                    let v = self.param_text(name);
                    if *multi {
                        path.push_str(v.trim_start_matches('/'));
                    } else {
                        path.push_str(&paths::percent_encode(&v));
                    }
                }
                Segment::Mixed {
                    prefix,
                    name,
                    suffix,
                } => {
                    path.push_str(prefix);
                    path.push_str(&paths::percent_encode(&self.param_text(name)));
                    path.push_str(suffix);
                }
            }
        }
        let query: Vec<String> = self
            .query_names
            .iter()
            .filter(|n| self.parameters.contains_key(n.as_str()))
            .map(|n| {
                format!(
                    "{}={}",
                    paths::percent_encode(n),
                    paths::percent_encode(&self.param_text(n))
                )
            })
            .collect();
        if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    fn param_text(&self, name: &str) -> String {
        match self.parameters.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }
}

impl SpecSet {
    /// The examples of the given (swagger file name, operationId) operations. Example refs whose
    /// file is absent are skipped (see [`SpecSet::missing_examples`]).
    pub fn examples_for(&self, wanted: &[(&str, &str)]) -> Vec<OperationExample> {
        let mut out = Vec::new();
        for op in &self.operations {
            let rel = self.rel(op.file);
            let file_name = rel.rsplit('/').next().unwrap_or(rel);
            if !wanted
                .iter()
                .any(|(f, id)| *f == file_name && *id == op.operation_id)
            {
                continue;
            }
            out.extend(self.examples_of(op));
        }
        out
    }

    /// The examples of every operation in the specs.
    pub fn all_examples(&self) -> Vec<OperationExample> {
        self.operations
            .iter()
            .flat_map(|op| self.examples_of(op))
            .collect()
    }

    fn examples_of(&self, op: &super::specs::Operation) -> Vec<OperationExample> {
        let Some(examples) = self.docs[op.file]
            .value
            .pointer(&format!("{}/x-ms-examples", op.pointer))
            .and_then(Value::as_object)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (title, entry) in examples {
            let Ok((ef, example)) = self.deref(op.file, entry) else {
                continue; // file deliberately absent
            };
            let parameters = example
                .get("parameters")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let responses = example
                .get("responses")
                .and_then(Value::as_object)
                .map(|r| {
                    r.iter()
                        .map(|(status, resp)| (status.clone(), resp.get("body").cloned()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(OperationExample {
                operation_id: op.operation_id.clone(),
                method: op.method.clone(),
                path_template: op.template.clone(),
                spec_file: self.rel(op.file).to_string(),
                title: title.clone(),
                example_file: self.rel(ef).to_string(),
                parameters,
                body_parameter: op
                    .params
                    .iter()
                    .find(|p| p.location == "body")
                    .map(|p| p.name.clone()),
                responses,
                segments: op.segments.clone(),
                query_names: op
                    .params
                    .iter()
                    .filter(|p| p.location == "query")
                    .map(|p| p.name.clone())
                    .collect(),
            });
        }
        out
    }
}
