//! The files a person hands to `plan` besides the plan: the inventory (a Resource Graph
//! response), the Heartbeat export (a Log Analytics response) and the workspace's dataSources.
//!
//! Each is read whole or refused, never half-read: JSON syntax errors name the line and column
//! (and say when the file ends early, as a cut download does); the document is checked against
//! its shape with the same checker plan files go through (`api::schema_check`: unknown or
//! misspelled fields with the likely intended one, wrong types, patterns), every problem named by
//! its path (`data[3].extensions[0].type`); one page of a paged result (`$skipToken`,
//! `resultTruncated`, `nextLink`, fewer rows than `totalRecords`) is refused, not planned on.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Value, json};

use crate::api::schema_check::{SchemaViolation, child, violations};
use crate::azure::WorkspaceDataSource;
use crate::azure::resource_id::ResourceId;
use crate::catalog::LegacyConfig;
use crate::inventory::{HeartbeatSender, InventoryMachine, LogColumn, LogQueryResponse, LogTable};

/// Which input a problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Inventory,
    Heartbeat,
    DataSources,
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Inventory => "the inventory (a Resource Graph response of the inventory query)",
            Self::Heartbeat => {
                "the Heartbeat export (a Log Analytics response of the Heartbeat query)"
            }
            Self::DataSources => {
                "the dataSources list (the workspace's dataSources as ARM lists them)"
            }
        })
    }
}

impl InputKind {
    fn how_to_make(self) -> &'static str {
        match self {
            Self::Inventory => "export it again with the query in the README's *Inventory* section",
            Self::Heartbeat => {
                "export it again with the Heartbeat query in the README's *Inventory* section"
            }
            Self::DataSources => {
                "list them again: GET <workspace>/dataSources?$filter=kind='<kind>' for each kind (see the README)"
            }
        }
    }
}

/// Why an input file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "{kind} is not valid JSON: {problem} at line {line}, column {column}{}; {}",
        if *cut_short { " (the file ends early: it was cut short)" } else { "" },
        kind.how_to_make()
    )]
    Syntax {
        kind: InputKind,
        problem: String,
        line: usize,
        column: usize,
        cut_short: bool,
    },
    #[error(
        "{kind} does not have the expected shape:\n{}\nfix each field named above, or {}",
        .violations.iter().map(|v| format!("  {v}")).collect::<Vec<_>>().join("\n"),
        kind.how_to_make()
    )]
    Shape {
        kind: InputKind,
        violations: Vec<SchemaViolation>,
    },
    #[error(
        "{kind} is one page of a larger result ({why}); nothing was planned on it. Fetch every page (follow {follow} until there is none) and hand over all the rows in one file"
    )]
    Partial {
        kind: InputKind,
        why: String,
        follow: &'static str,
    },
    #[error("{}{problem}; fix: {fix}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Value {
        kind: InputKind,
        path: String,
        problem: String,
        fix: String,
    },
}

impl InputError {
    fn syntax(kind: InputKind, e: &serde_json::Error) -> Self {
        // serde_json's message ends with " at line L column C"; keep only what went wrong.
        let full = e.to_string();
        let problem = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(head, _)| head)
            .to_string();
        Self::Syntax {
            kind,
            problem,
            line: e.line(),
            column: e.column(),
            cut_short: e.is_eof(),
        }
    }

    fn value(kind: InputKind, path: String, problem: String, fix: &str) -> Self {
        Self::Value {
            kind,
            path,
            problem,
            fix: fix.to_string(),
        }
    }
}

fn parse_json(kind: InputKind, text: &str) -> Result<Value, InputError> {
    serde_json::from_str(text).map_err(|e| InputError::syntax(kind, &e))
}

fn check_shape(kind: InputKind, value: &Value, schema: &Value) -> Result<(), InputError> {
    let found = violations(value, schema, "");
    if found.is_empty() {
        Ok(())
    } else {
        Err(InputError::Shape {
            kind,
            violations: found,
        })
    }
}

// ------------------------------------------------------------------------------------------
// Inventory

/// ARM resource IDs of machines: `/subscriptions/…/resourceGroups/…/providers/…`.
const MACHINE_ID_PATTERN: &str =
    r"^/(?i:subscriptions)/[^/]+/(?i:resourceGroups)/[^/]+/(?i:providers)/[^/]+/[^/]+/[^/]+$";
const MACHINE_TYPE_PATTERN: &str =
    r"^(?i:microsoft\.compute/virtualmachines|microsoft\.hybridcompute/machines)$";

fn inventory_schema() -> Value {
    let string = json!({"type": "string"});
    let text = json!({"type": "string", "nullable": true});
    let extension = json!({
        "type": "object",
        "required": ["name", "publisher", "type"],
        "properties": {
            "name": string, "publisher": string, "type": string,
            "provisioningState": text, "workspaceId": text,
        }
    });
    let row = json!({
        "type": "object",
        "required": ["id", "name", "type", "location", "resourceGroup", "subscriptionId"],
        "properties": {
            "id": {"type": "string", "pattern": MACHINE_ID_PATTERN},
            "machineId": text,
            "name": {"type": "string", "minLength": 1},
            "type": {"type": "string", "pattern": MACHINE_TYPE_PATTERN},
            "location": string, "resourceGroup": string, "subscriptionId": string,
            "tags": {"type": "object", "nullable": true, "additionalProperties": {"type": "string"}},
            "osType": text, "identityType": text, "powerState": text, "status": text,
            "extensions": {"type": "array", "nullable": true, "items": extension},
        }
    });
    // The REST response (`totalRecords`, `$skipToken`) and what `az graph query` prints
    // (`total_records`, `skip_token`) are both accepted.
    json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "totalRecords": {"type": "integer", "minimum": 0},
            "total_records": {"type": "integer", "minimum": 0},
            "count": {"type": "integer", "minimum": 0},
            "resultTruncated": {"type": "string", "enum": ["true", "false"]},
            "$skipToken": text,
            "skip_token": text,
            "facets": {"type": "array"},
            "data": {"type": "array", "items": row},
        }
    })
}

/// Read the inventory file: every machine row, or an error naming where it is wrong.
pub fn read_inventory(text: &str) -> Result<Vec<InventoryMachine>, InputError> {
    let kind = InputKind::Inventory;
    let doc = parse_json(kind, text)?;
    check_shape(kind, &doc, &inventory_schema())?;
    let rows = doc
        .get("data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let partial = |why: String| InputError::Partial {
        kind,
        why,
        follow: "$skipToken",
    };
    for key in ["$skipToken", "skip_token"] {
        if let Some(token) = doc.get(key).and_then(Value::as_str)
            && !token.is_empty()
        {
            return Err(partial(format!("it carries {key}")));
        }
    }
    if doc.get("resultTruncated").and_then(Value::as_str) == Some("true") {
        return Err(partial("resultTruncated is \"true\"".into()));
    }
    for key in ["totalRecords", "total_records"] {
        if let Some(total) = doc.get(key).and_then(Value::as_u64)
            && total > rows.len() as u64
        {
            return Err(partial(format!(
                "{key} is {total} but data holds {} rows",
                rows.len()
            )));
        }
    }
    if let Some(count) = doc.get("count").and_then(Value::as_u64)
        && count != rows.len() as u64
    {
        return Err(InputError::value(
            kind,
            "count".into(),
            format!("is {count} but data holds {} rows", rows.len()),
            "the file was edited or cut; export it again",
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let path = format!("data[{i}]");
        let machine: InventoryMachine =
            serde_json::from_value(normalize_row(row)).map_err(|e| {
                InputError::value(
                    kind,
                    path.clone(),
                    e.to_string(),
                    "make the row match the inventory query's columns",
                )
            })?;
        if let Err(e) = ResourceId::parse(&machine.id) {
            return Err(InputError::value(
                kind,
                child(&path, "id"),
                e.to_string(),
                "use the machine's full ARM resource ID",
            ));
        }
        if let Some(first) = seen.insert(machine.id.to_ascii_lowercase(), i) {
            return Err(InputError::value(
                kind,
                child(&path, "id"),
                format!("{} is listed twice (also data[{first}])", machine.id),
                "pages were merged twice or overlap; export the inventory again",
            ));
        }
        out.push(machine);
    }
    Ok(out)
}

/// A row with `null` where the query's `tostring()` columns or an empty `tags` came back null
/// (as Resource Graph does), turned into what `InventoryMachine` reads.
fn normalize_row(row: &Value) -> Value {
    let mut row = row.clone();
    if let Some(map) = row.as_object_mut() {
        for (key, v) in map.iter_mut() {
            if v.is_null() {
                *v = match key.as_str() {
                    "tags" => json!({}),
                    "extensions" => json!([]),
                    _ => json!(""),
                };
            }
        }
        if let Some(exts) = map.get_mut("extensions").and_then(Value::as_array_mut) {
            for ext in exts.iter_mut().filter_map(Value::as_object_mut) {
                for v in ext.values_mut().filter(|v| v.is_null()) {
                    *v = json!("");
                }
            }
        }
    }
    row
}

// ------------------------------------------------------------------------------------------
// Heartbeat

/// The Log Analytics REST response (`{"tables": [...]}`).
fn heartbeat_schema() -> Value {
    json!({
        "type": "object",
        "required": ["tables"],
        "properties": {
            "tables": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["name", "columns", "rows"],
                "properties": {
                    "name": {"type": "string"},
                    "columns": {"type": "array", "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                    }},
                    "rows": {"type": "array", "items": {"type": "array"}},
                }
            }},
            "statistics": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "render": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    })
}

/// What `az monitor log-analytics query` prints: a list of row objects.
fn heartbeat_rows_schema() -> Value {
    let text = json!({"type": "string", "nullable": true});
    json!({"type": "array", "items": {
        "type": "object",
        "required": ["Computer", "_ResourceId", "Category"],
        "properties": {
            "Computer": text, "_ResourceId": text, "Category": text, "OSType": text,
            "count_": {"type": "integer"}, "TableName": {"type": "string"},
        }
    }})
}

/// Read the Heartbeat export: the Log Analytics REST response (`{"tables": [...]}`) or what
/// `az monitor log-analytics query` prints (a list of row objects).
pub fn read_heartbeat(text: &str) -> Result<Vec<HeartbeatSender>, InputError> {
    let kind = InputKind::Heartbeat;
    let doc = parse_json(kind, text)?;
    let (response, row_path): (LogQueryResponse, fn(usize) -> String) = if doc.is_array() {
        check_shape(kind, &doc, &heartbeat_rows_schema())?;
        (rows_as_table(&doc), |r| format!("[{r}]"))
    } else {
        check_shape(kind, &doc, &heartbeat_schema())?;
        let response = serde_json::from_value(doc).map_err(|e| {
            InputError::value(
                kind,
                "tables".into(),
                e.to_string(),
                "export the result of the README's Heartbeat query unchanged",
            )
        })?;
        (response, |r| format!("tables[0].rows[{r}]"))
    };
    let senders = HeartbeatSender::from_export(&response).map_err(|e| {
        InputError::value(
            kind,
            String::new(),
            e.to_string(),
            "export the result of the README's Heartbeat query unchanged",
        )
    })?;
    for (r, s) in senders.iter().enumerate() {
        let bad =
            |problem: String, fix: &str| Err(InputError::value(kind, row_path(r), problem, fix));
        if s.computer.trim().is_empty() {
            return bad(
                "Computer is empty".into(),
                "every Heartbeat row names its computer; export the query's result unchanged",
            );
        }
        if s.category.trim().is_empty() {
            return bad(
                "Category is empty".into(),
                "Category says which agent sent the heartbeat (Direct Agent, Azure Monitor Agent, ...); export the query's result unchanged",
            );
        }
        if let Some(rid) = &s.resource_id
            && let Err(e) = ResourceId::parse(rid)
        {
            return bad(
                format!("_ResourceId: {e}"),
                "leave _ResourceId empty for machines Azure does not know, or give the full ID",
            );
        }
    }
    Ok(senders)
}

/// Row objects (already shape-checked) as one table with the query's columns.
fn rows_as_table(doc: &Value) -> LogQueryResponse {
    let columns = ["Computer", "_ResourceId", "Category", "OSType"];
    let rows = doc
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(*c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    LogQueryResponse {
        tables: vec![LogTable {
            name: "PrimaryResult".into(),
            columns: columns
                .iter()
                .map(|c| LogColumn {
                    name: (*c).into(),
                    column_type: "string".into(),
                })
                .collect(),
            rows,
        }],
    }
}

// ------------------------------------------------------------------------------------------
// dataSources

fn data_source_schema() -> Value {
    let text = json!({"type": "string", "nullable": true});
    json!({
        "type": "object",
        "required": ["kind", "properties"],
        "properties": {
            "id": text, "name": text, "type": text, "etag": text,
            "kind": {"type": "string", "minLength": 1},
            "properties": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "systemData": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }
    })
}

/// Read the dataSources file: `{"value": [...]}` as ARM lists them, or a plain list.
pub fn read_data_source_list(text: &str) -> Result<Vec<WorkspaceDataSource>, InputError> {
    read_list(text).map(|(list, _)| list)
}

/// Read the dataSources file into the workspace's legacy collection settings.
pub fn read_data_sources(text: &str) -> Result<LegacyConfig, InputError> {
    let (list, prefix) = read_list(text)?;
    LegacyConfig::from_data_sources(&list).map_err(|e| {
        InputError::value(
            InputKind::DataSources,
            format!("{prefix}[{}]", e.index),
            format!("({}, kind {}): {}", e.name, e.kind, e.problem),
            "correct the dataSource, or list the workspace's dataSources again",
        )
    })
}

/// The list and the path prefix of its entries (`value` or none).
fn read_list(text: &str) -> Result<(Vec<WorkspaceDataSource>, &'static str), InputError> {
    let kind = InputKind::DataSources;
    let doc = parse_json(kind, text)?;
    let items_schema = data_source_schema();
    let prefix = if doc.is_array() {
        check_shape(kind, &doc, &json!({"type": "array", "items": items_schema}))?;
        ""
    } else {
        check_shape(
            kind,
            &doc,
            &json!({
                "type": "object",
                "required": ["value"],
                "properties": {
                    "value": {"type": "array", "items": items_schema},
                    "nextLink": {"type": "string", "nullable": true},
                }
            }),
        )?;
        if let Some(link) = doc.get("nextLink").and_then(Value::as_str)
            && !link.is_empty()
        {
            return Err(InputError::Partial {
                kind,
                why: "it carries nextLink".into(),
                follow: "nextLink",
            });
        }
        "value"
    };
    let items = doc
        .as_array()
        .or_else(|| doc.get("value").and_then(Value::as_array))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut list = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let ds: WorkspaceDataSource = serde_json::from_value(item.clone()).map_err(|e| {
            InputError::value(
                kind,
                format!("{prefix}[{i}]"),
                e.to_string(),
                "make the entry a dataSource as ARM returns it (kind, properties)",
            )
        })?;
        list.push(ds);
    }
    Ok((list, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::OsFamily;

    const INVENTORY: &str = include_str!("../examples/inventory.json");
    const HEARTBEAT: &str = include_str!("../examples/heartbeat.json");
    const DATA_SOURCES: &str = include_str!("../examples/datasources.json");

    #[test]
    fn the_examples_are_read_whole() {
        assert_eq!(read_inventory(INVENTORY).unwrap().len(), 16);
        let senders = read_heartbeat(HEARTBEAT).unwrap();
        let doc: Value = serde_json::from_str(HEARTBEAT).unwrap();
        assert_eq!(
            senders.len(),
            doc["tables"][0]["rows"].as_array().unwrap().len()
        );
        let legacy = read_data_sources(DATA_SOURCES).unwrap();
        assert!(legacy.security_tier().is_some());
    }

    #[test]
    fn what_az_cli_prints_is_read_like_the_rest_response() {
        // `az graph query` names the paging fields in snake case; Resource Graph returns the
        // query's `machineId` column and nulls where a `tostring()` found nothing.
        let inv = json!({
            "count": 1, "total_records": 1, "skip_token": null,
            "data": [{
                "machineId": "/subscriptions/s/resourcegroups/rg/providers/microsoft.hybridcompute/machines/arc1",
                "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/arc1",
                "name": "arc1", "type": "microsoft.hybridcompute/machines", "location": "westeurope",
                "resourceGroup": "rg", "subscriptionId": "s", "tags": null, "osType": "windows",
                "identityType": null, "powerState": null, "status": "Connected",
                "extensions": [{"name": "MMA", "publisher": "Microsoft.EnterpriseCloud.Monitoring",
                                "type": "MicrosoftMonitoringAgent", "provisioningState": null,
                                "workspaceId": "w"}]
            }]
        });
        let machines = read_inventory(&inv.to_string()).unwrap();
        assert_eq!(machines[0].os(), Some(OsFamily::Windows));
        assert!(machines[0].tags.is_empty());
        assert_eq!(machines[0].extensions[0].provisioning_state, "");

        // `az monitor log-analytics query` prints row objects.
        let rows = json!([
            {"Computer": "onprem-01", "_ResourceId": "", "Category": "direct agent", "OSType": "Windows", "count_": 1440, "TableName": "PrimaryResult"},
            {"Computer": "vm1", "_ResourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COMPUTE/VIRTUALMACHINES/VM1", "Category": "Azure Monitor Agent", "OSType": null}
        ]);
        let senders = read_heartbeat(&rows.to_string()).unwrap();
        assert_eq!(senders.len(), 2);
        assert_eq!(senders[0].resource_id, None);
        assert_eq!(senders[0].os, Some(OsFamily::Windows));
        assert_eq!(
            senders[1].resource_id.as_deref(),
            Some(
                "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm1"
            )
        );

        // A plain list of dataSources reads as the `{"value": [...]}` response does.
        let doc: Value = serde_json::from_str(DATA_SOURCES).unwrap();
        let plain = read_data_sources(&doc["value"].to_string()).unwrap();
        assert_eq!(plain, read_data_sources(DATA_SOURCES).unwrap());
    }

    #[test]
    fn a_refusal_names_the_place() {
        let mut doc: Value = serde_json::from_str(INVENTORY).unwrap();
        doc["data"][7]["extensions"][0]["type"] = json!(42);
        let e = read_inventory(&doc.to_string()).unwrap_err();
        assert!(
            matches!(&e, InputError::Shape { violations, .. } if violations[0].path == "data[7].extensions[0].type"),
            "{e}"
        );
        let cut = &INVENTORY[..INVENTORY.len() / 2];
        match read_inventory(cut).unwrap_err() {
            InputError::Syntax {
                cut_short, line, ..
            } => {
                assert!(cut_short);
                assert_eq!(line, cut.lines().count());
            }
            other => panic!("{other}"),
        }
    }
}
