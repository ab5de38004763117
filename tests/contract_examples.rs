//! The contract validator against Microsoft's own `x-ms-examples`, and its rejections.

use std::path::PathBuf;
use std::sync::OnceLock;

use ama_migrator::contract::{
    DCR_RESOURCE, DCR_SPEC, Direction, PRODUCT_OPERATIONS, Place, SpecError, SpecSet, Violation,
};
use serde_json::{Value, json};

fn specs() -> &'static SpecSet {
    static SPECS: OnceLock<SpecSet> = OnceLock::new();
    SPECS.get_or_init(|| SpecSet::load_default().unwrap())
}

fn show(v: &[Violation]) -> String {
    v.iter().map(|v| format!("\n  {v}")).collect()
}

/// Validates every request and response body of the given examples through operation lookup.
/// Returns (bodies validated, failures).
fn validate_examples(
    examples: &[ama_migrator::contract::OperationExample],
) -> (usize, Vec<String>) {
    let specs = specs();
    let mut bodies = 0;
    let mut failures = Vec::new();
    for ex in examples {
        let path = ex.concrete_path();
        let tag = format!("{} [{}] {} {path}", ex.operation_id, ex.title, ex.method);
        match specs.validate_request(&ex.method, &path, ex.request_body()) {
            Ok(info) if info.operation_id == ex.operation_id => {}
            Ok(info) => failures.push(format!("{tag}: matched {} instead", info.operation_id)),
            Err(v) => failures.push(format!("{tag}: request{}", show(&v))),
        }
        if ex.request_body().is_some() {
            bodies += 1;
        }
        for (status, body) in &ex.responses {
            let code: u16 = status.parse().unwrap();
            if let Err(v) = specs.validate_response(&ex.method, &path, code, body.as_ref()) {
                failures.push(format!("{tag}: response {status}{}", show(&v)));
            }
            if body.is_some() {
                bodies += 1;
            }
        }
    }
    (bodies, failures)
}

#[test]
fn every_example_of_the_products_operations_validates_against_its_operation() {
    let examples = specs().examples_for(PRODUCT_OPERATIONS);
    let (bodies, failures) = validate_examples(&examples);
    println!(
        "product operations: {} examples, {bodies} request/response bodies validated",
        examples.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every listed operation has a spec entry; all but DataSources_ListByWorkspace (example
    // skipped upstream for size) have at least one example.
    for (file, op) in PRODUCT_OPERATIONS {
        let has = examples
            .iter()
            .any(|e| e.operation_id == *op && e.spec_file.ends_with(file));
        assert_eq!(has, *op != "DataSources_ListByWorkspace", "{file} {op}");
    }
    assert_eq!(examples.len(), 44);
    assert_eq!(bodies, 68);
}

#[test]
fn every_saved_example_validates_as_the_specs_readme_says() {
    let examples = specs().all_examples();
    let (bodies, failures) = validate_examples(&examples);
    println!(
        "all saved examples: {} examples, {bodies} bodies validated",
        examples.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(bodies, 76, "README: 76 request/response bodies");
}

#[test]
fn examples_carry_operation_shape() {
    let ex = specs().examples_for(&[(
        "dataCollectionRuleAssociations_API.json",
        "DataCollectionRuleAssociations_Create",
    )]);
    assert_eq!(ex.len(), 2);
    let e = &ex[0];
    assert_eq!(e.method, "PUT");
    assert_eq!(
        e.path_template,
        "/{resourceUri}/providers/Microsoft.Insights/dataCollectionRuleAssociations/{associationName}"
    );
    assert!(e.request_body().is_some());
    assert!(e.responses.contains_key("200"));
    assert!(e.concrete_path().contains("?api-version=2023-03-11"));
}

#[test]
fn dcra_paths_resolve_resource_uri_across_segments() {
    let path = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m1/providers/Microsoft.Insights/dataCollectionRuleAssociations/assoc-1?api-version=2023-03-11";
    let info = specs().find_operation("get", path).unwrap();
    assert_eq!(info.operation_id, "DataCollectionRuleAssociations_Get");
    assert_eq!(
        info.path_params["resourceUri"],
        "subscriptions/s1/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m1"
    );
    let list = specs()
        .find_operation("GET", "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/providers/Microsoft.Insights/dataCollectionRuleAssociations?api-version=2023-03-11")
        .unwrap();
    assert_eq!(
        list.operation_id,
        "DataCollectionRuleAssociations_ListByResource"
    );
    // The DCR-scoped list has its own, more specific template.
    let by_rule = specs()
        .find_operation("GET", "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/dcr/associations?api-version=2023-03-11")
        .unwrap();
    assert_eq!(
        by_rule.operation_id,
        "DataCollectionRuleAssociations_ListByRule"
    );
}

#[test]
fn lowercase_resourcegroups_template_matches_camel_case_wire_path() {
    let info = specs()
        .find_operation(
            "GET",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws-1/dataSources/ds1?api-version=2025-02-01",
        )
        .unwrap();
    assert_eq!(info.operation_id, "DataSources_Get");
}

#[test]
fn wrong_api_version_and_unknown_path_are_rejected() {
    let v = specs()
        .validate_request(
            "GET",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/d?api-version=2022-06-01",
            None,
        )
        .unwrap_err();
    assert_eq!(v[0].place, Place::Query);
    assert!(v[0].message.contains("2023-03-11"), "{}", show(&v));
    let v = specs()
        .validate_request(
            "GET",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/d",
            None,
        )
        .unwrap_err();
    assert!(v[0].message.contains("missing api-version"), "{}", show(&v));
    let v = specs()
        .validate_request("GET", "/nowhere/at/all?api-version=1", None)
        .unwrap_err();
    assert_eq!(v[0].place, Place::Operation);
}

#[test]
fn data_sources_list_requires_its_filter() {
    let base = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws-1/dataSources?api-version=2025-02-01";
    let v = specs().validate_request("GET", base, None).unwrap_err();
    assert!(
        v.iter()
            .any(|v| v.place == Place::Query && v.pointer == "/$filter"),
        "{}",
        show(&v)
    );
    let ok = format!("{base}&$filter=kind%20eq%20'WindowsEvent'");
    specs().validate_request("GET", &ok, None).unwrap();
}

fn dcr() -> Value {
    json!({
        "location": "eastus",
        "kind": "Linux",
        "properties": {
            "dataSources": {
                "syslog": [{
                    "name": "sysLogsDataSource",
                    "streams": ["Microsoft-Syslog"],
                    "facilityNames": ["auth", "cron"],
                    "logLevels": ["Warning", "Error"]
                }]
            },
            "destinations": {
                "logAnalytics": [{
                    "name": "la",
                    "workspaceResourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws-1"
                }]
            },
            "dataFlows": [{ "streams": ["Microsoft-Syslog"], "destinations": ["la"] }]
        }
    })
}

const DCR_PUT: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/dcr-1?api-version=2023-03-11";

#[test]
fn a_generated_dcr_validates_by_schema_ref_and_by_operation() {
    specs()
        .validate_schema_ref(DCR_SPEC, DCR_RESOURCE, &dcr())
        .unwrap();
    let info = specs()
        .validate_request("PUT", DCR_PUT, Some(&dcr()))
        .unwrap();
    assert_eq!(info.operation_id, "DataCollectionRules_Create");
    // facilityNames is an open enum (x-ms-enum.modelAsString: true): unknown names pass.
    let mut open = dcr();
    open["properties"]["dataSources"]["syslog"][0]["facilityNames"] = json!(["notafacility"]);
    specs()
        .validate_schema_ref(DCR_SPEC, DCR_RESOURCE, &open)
        .unwrap();
}

#[test]
fn a_wrong_type_deep_in_a_dcr_is_rejected_at_its_pointer() {
    let mut bad = dcr();
    bad["properties"]["dataSources"]["syslog"][0]["facilityNames"] = json!(["auth", 42]);
    let v = specs()
        .validate_schema_ref(DCR_SPEC, DCR_RESOURCE, &bad)
        .unwrap_err();
    assert_eq!(v.len(), 1, "{}", show(&v));
    assert_eq!(
        v[0].pointer,
        "/properties/dataSources/syslog/0/facilityNames/1"
    );
    assert!(v[0].message.contains("expected string"), "{}", show(&v));
    let v = specs()
        .validate_request("PUT", DCR_PUT, Some(&bad))
        .unwrap_err();
    assert_eq!(v[0].place, Place::Body);
    assert_eq!(
        v[0].pointer,
        "/properties/dataSources/syslog/0/facilityNames/1"
    );
}

#[test]
fn a_missing_required_property_is_rejected() {
    let mut bad = dcr();
    bad.as_object_mut().unwrap().remove("location");
    let v = specs()
        .validate_schema_ref(DCR_SPEC, DCR_RESOURCE, &bad)
        .unwrap_err();
    assert_eq!(v.len(), 1, "{}", show(&v));
    assert_eq!(v[0].pointer, "");
    assert!(v[0].message.contains("`location`"), "{}", show(&v));
    // A required body that is absent.
    let v = specs()
        .validate_request(
            "POST",
            "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
            None,
        )
        .unwrap_err();
    assert!(v[0].message.contains("requires a body"), "{}", show(&v));
    let v = specs()
        .validate_request(
            "POST",
            "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
            Some(&json!({"subscriptions": ["s"]})),
        )
        .unwrap_err();
    assert!(v[0].message.contains("`query`"), "{}", show(&v));
}

#[test]
fn closed_enums_reject_unknown_values_and_open_ones_do_not() {
    let vm_patch = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-11-01";
    let ok = json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u": {}}}});
    assert_eq!(
        specs()
            .validate_request("PATCH", vm_patch, Some(&ok))
            .unwrap()
            .operation_id,
        "VirtualMachines_Update"
    );
    let bad = json!({"identity": {"type": "SystemAssigned,UserAssigned"}});
    let v = specs()
        .validate_request("PATCH", vm_patch, Some(&bad))
        .unwrap_err();
    assert_eq!(v.len(), 1, "{}", show(&v));
    assert_eq!(v[0].pointer, "/identity/type");
    let rg = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01";
    let v = specs()
        .validate_request(
            "POST",
            rg,
            Some(&json!({"query": "Resources", "options": {"resultFormat": "csv"}})),
        )
        .unwrap_err();
    assert_eq!(v[0].pointer, "/options/resultFormat");
    // resultTruncated is a closed string enum: a JSON boolean is a wrong type.
    let resp = json!({"totalRecords": 1, "count": 1, "resultTruncated": false, "data": []});
    let v = specs()
        .validate_response("POST", rg, 200, Some(&resp))
        .unwrap_err();
    assert_eq!(v[0].pointer, "/resultTruncated");
}

#[test]
fn an_undeclared_status_is_rejected() {
    let v = specs()
        .validate_response("GET", DCR_PUT, 202, Some(&dcr()))
        .unwrap_err();
    assert_eq!(v[0].place, Place::Status);
    assert!(v[0].message.contains("202"), "{}", show(&v));
    // DataSources_Get declares only 200 and no `default`: a 404 is not in its contract.
    let ds = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws-1/dataSources/x?api-version=2025-02-01";
    let v = specs()
        .validate_response(
            "GET",
            ds,
            404,
            Some(&json!({"error": {"code": "NotFound"}})),
        )
        .unwrap_err();
    assert_eq!(v[0].place, Place::Status);
    // With `default`, an error status validates against the error schema, recursively.
    let err = json!({"error": {"code": "X", "details": [{"code": "Y", "details": [{"code": 5}]}]}});
    let v = specs()
        .validate_response("GET", DCR_PUT, 404, Some(&err))
        .unwrap_err();
    assert_eq!(v[0].pointer, "/error/details/0/details/0/code");
    let fine = json!({"error": {"code": "ResourceNotFound", "message": "gone", "details": [{"code": "Y", "details": []}]}});
    specs()
        .validate_response("GET", DCR_PUT, 404, Some(&fine))
        .unwrap();
}

#[test]
fn nulls_are_allowed_for_optional_response_properties_only() {
    let list = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules?api-version=2023-03-11";
    let mut resp = json!({"value": [dcr()], "nextLink": null});
    resp["value"][0]["id"] = json!("/subscriptions/s/x");
    specs()
        .validate_response("GET", list, 200, Some(&resp))
        .unwrap();
    let v = specs()
        .validate_response("GET", list, 200, Some(&json!({"value": null})))
        .unwrap_err();
    assert_eq!(v[0].pointer, "/value");
    let mut req = dcr();
    req["tags"] = Value::Null;
    let v = specs()
        .validate_request("PUT", DCR_PUT, Some(&req))
        .unwrap_err();
    assert_eq!(v[0].pointer, "/tags");
}

#[test]
fn resource_graph_facets_dispatch_on_their_discriminator() {
    let rg = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01";
    let base = |facet: Value| json!({"totalRecords": 1, "count": 1, "resultTruncated": "false", "data": [], "facets": [facet]});
    specs()
        .validate_response("POST", rg, 200, Some(&base(json!({"resultType": "FacetResult", "expression": "location", "totalRecords": 1, "count": 1, "data": []}))))
        .unwrap();
    let v = specs()
        .validate_response(
            "POST",
            rg,
            200,
            Some(&base(
                json!({"resultType": "FacetResult", "expression": "location"}),
            )),
        )
        .unwrap_err();
    assert_eq!(v.len(), 3, "{}", show(&v));
    assert!(v.iter().all(|v| v.pointer == "/facets/0"));
    let v = specs()
        .validate_response(
            "POST",
            rg,
            200,
            Some(&base(
                json!({"resultType": "FacetError", "expression": "x"}),
            )),
        )
        .unwrap_err();
    assert_eq!(v.len(), 1, "{}", show(&v));
    assert!(v[0].message.contains("`errors`"), "{}", show(&v));
}

/// A small spec of our own for what Microsoft's files do not exercise (additionalProperties:
/// false with inheritance, bounds, patterns, discriminator without x-ms-discriminator-value).
fn synthetic_specs(tag: &str) -> SpecSet {
    let dir = std::env::temp_dir().join(format!("ama-contract-{tag}-{}", std::process::id()));
    let sub = dir.join("specification/test/stable");
    std::fs::create_dir_all(&sub).unwrap();
    let swagger = json!({
        "swagger": "2.0", "info": {"version": "2099-01-01", "title": "t"},
        "paths": {"/things/{name}": {"put": {
            "operationId": "Things_Put",
            "parameters": [
                {"name": "name", "in": "path", "required": true, "type": "string", "pattern": "^[a-z]+$"},
                {"$ref": "../common.json#/parameters/ApiVersion"},
                {"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/definitions/Thing"}}
            ],
            "responses": {"200": {"schema": {"$ref": "#/definitions/Thing"}}, "default": {"schema": {"$ref": "../common.json#/definitions/Error"}}}
        }}},
        "definitions": {
            "Base": {"type": "object", "properties": {"id": {"type": "string", "readOnly": true}}, "required": ["id"]},
            "Thing": {"allOf": [{"$ref": "#/definitions/Base"}], "type": "object", "additionalProperties": false,
                "required": ["shape", "count"],
                "properties": {
                    "shape": {"$ref": "#/definitions/Shape"},
                    "count": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 10},
                    "big": {"type": "integer", "format": "int32"},
                    "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "minLength": 2}},
                    "node": {"$ref": "#/definitions/Node"}
                }},
            "Shape": {"type": "object", "discriminator": "kind", "required": ["kind"], "properties": {"kind": {"type": "string"}}},
            "Circle": {"allOf": [{"$ref": "#/definitions/Shape"}], "x-ms-discriminator-value": "circle", "required": ["radius"], "properties": {"radius": {"type": "number"}}},
            "Square": {"allOf": [{"$ref": "#/definitions/Shape"}], "required": ["side"], "properties": {"side": {"type": "number"}}},
            "Node": {"type": "object", "properties": {"label": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}}}}
        }
    });
    let common = json!({
        "swagger": "2.0", "info": {"version": "1.0", "title": "c"}, "paths": {},
        "parameters": {"ApiVersion": {"name": "api-version", "in": "query", "required": true, "type": "string"}},
        "definitions": {"Error": {"type": "object", "properties": {"code": {"type": "string"}}}}
    });
    std::fs::write(sub.join("things.json"), swagger.to_string()).unwrap();
    std::fs::write(
        dir.join("specification/test/common.json"),
        common.to_string(),
    )
    .unwrap();
    let set = SpecSet::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    set
}

#[test]
fn synthetic_spec_enforces_additional_properties_bounds_patterns_and_polymorphism() {
    let s = synthetic_specs("rules");
    let put = "/things/abc?api-version=2099-01-01";
    let good = json!({"shape": {"kind": "circle", "radius": 2.5}, "count": 3, "tags": ["ab"],
        "node": {"children": [{"children": [{"label": "x"}]}]}});
    // `id` is required but readOnly: requests may omit it, responses may not.
    assert_eq!(
        s.validate_request("PUT", put, Some(&good))
            .unwrap()
            .operation_id,
        "Things_Put"
    );
    let v = s
        .validate_response("PUT", put, 200, Some(&good))
        .unwrap_err();
    assert!(v[0].message.contains("`id`"), "{}", show(&v));
    let mut with_id = good.clone();
    with_id["id"] = json!("/things/abc"); // inherited through allOf, so not "additional"
    s.validate_response("PUT", put, 200, Some(&with_id))
        .unwrap();
    s.validate_request("PUT", put, Some(&with_id)).unwrap(); // readOnly echoed in a request

    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"color": "red"}), "/color", "additionalProperties"),
        (json!({"count": 0}), "/count", "minimum"),
        (json!({"count": 11}), "/count", "maximum"),
        (json!({"big": 3_000_000_000u64}), "/big", "int32"),
        (json!({"count": 2.5}), "/count", "expected integer"),
        (json!({"tags": []}), "/tags", "at least 1"),
        (json!({"tags": ["ab", "cd", "ef"]}), "/tags", "at most 2"),
        (json!({"tags": ["a"]}), "/tags/0", "shorter"),
        (json!({"shape": {"kind": "circle"}}), "/shape", "`radius`"),
        (
            json!({"shape": {"kind": "Square", "side": "x"}}),
            "/shape/side",
            "expected number",
        ),
        (
            json!({"node": {"children": [{"children": [{"label": 5}]}]}}),
            "/node/children/0/children/0/label",
            "expected string",
        ),
    ];
    for (patch, pointer, needle) in cases {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let v = s.validate_request("PUT", put, Some(&body)).unwrap_err();
        assert_eq!(v.len(), 1, "{patch}: {}", show(&v));
        assert_eq!(v[0].pointer, pointer, "{patch}: {}", show(&v));
        assert!(v[0].message.contains(needle), "{patch}: {}", show(&v));
    }
    let v = s
        .validate_request("PUT", "/things/ABC?api-version=2099-01-01", Some(&good))
        .unwrap_err();
    assert_eq!(
        (v[0].place, v[0].pointer.as_str()),
        (Place::Path, "/name"),
        "{}",
        show(&v)
    );
    assert!(s.unsupported_patterns().is_empty());
}

#[test]
fn recursion_is_bounded_by_instance_depth() {
    let s = synthetic_specs("depth");
    let mut node = json!({"label": "leaf"});
    for _ in 0..300 {
        node = json!({"children": [node]});
    }
    let body = json!({"shape": {"kind": "circle", "radius": 1}, "count": 1, "node": node});
    let v = s
        .validate_request("PUT", "/things/abc?api-version=2099-01-01", Some(&body))
        .unwrap_err();
    assert!(
        v.iter().any(|v| v.message.contains("nested deeper")),
        "{}",
        show(&v)
    );
    assert!(
        s.validate_schema_ref_as(
            Direction::Response,
            "things.json",
            "#/definitions/Nope",
            &body
        )
        .is_err()
    );
}

#[test]
fn broken_spec_folders_fail_loudly() {
    let missing = SpecSet::load(&PathBuf::from("/nonexistent/specs")).unwrap_err();
    assert!(matches!(missing, SpecError::MissingDir { .. }), "{missing}");
    let dir = std::env::temp_dir().join(format!("ama-contract-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.json"),
        json!({"swagger": "2.0", "info": {"version": "1"}, "paths": {},
            "definitions": {"A": {"$ref": "./b.json#/definitions/B"}}})
        .to_string(),
    )
    .unwrap();
    let err = SpecSet::load(&dir).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(err, SpecError::UnresolvedRefs { .. }), "{err}");
    assert!(err.to_string().contains("b.json"), "{err}");
}

/// Parses `body` into `T`, or describes why not.
fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, String> {
    serde_json::from_value(body.clone()).map_err(|e| e.to_string())
}

/// Parses a list page as the client's pager does: `value[]` items into `T`, `nextLink` text or null.
fn parse_page<T: serde::de::DeserializeOwned>(body: &Value) -> Result<Vec<T>, String> {
    match body.get("nextLink") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => return Err(format!("nextLink is {other}")),
    }
    // Like the client's pager: a page without `value` is empty (Compute's MinimumSet examples).
    match body.get("value") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(parse::<T>).collect(),
        Some(other) => Err(format!("value is {other}")),
    }
}

#[test]
fn every_example_response_of_the_products_operations_parses_into_client_types() {
    use ama_migrator::azure::dcr::DataCollectionRule;
    use ama_migrator::azure::{
        DcrAssociation, Extension, Machine, WorkspaceDataSource, WorkspaceDataSourceList,
    };
    use ama_migrator::inventory::ResourceGraphResponse;

    let (mut seen, mut parsed) = (0, 0);
    let mut failures = Vec::new();
    for ex in specs().examples_for(PRODUCT_OPERATIONS) {
        for (status, body) in &ex.responses {
            let Some(body) = body else { continue };
            seen += 1;
            let op = ex.operation_id.as_str();
            let result: Result<(), String> = match op {
                "VirtualMachineExtensions_Get"
                | "VirtualMachineExtensions_CreateOrUpdate"
                | "MachineExtensions_Get"
                | "MachineExtensions_CreateOrUpdate" => parse::<Extension>(body).map(|e| {
                    // Detection by publisher + type must not panic on any real payload.
                    let _ = e.agent();
                }),
                "VirtualMachineExtensions_List" | "MachineExtensions_List" => {
                    parse_page::<Extension>(body).map(drop)
                }
                "VirtualMachines_Get" | "VirtualMachines_Update" | "Machines_Get" => {
                    parse::<Machine>(body).map(|m| {
                        if body.get("identity").is_some() {
                            assert!(m.identity.is_some(), "{op}: identity dropped");
                        }
                    })
                }
                "DataCollectionRules_Get" | "DataCollectionRules_Create" => {
                    parse::<DataCollectionRule>(body).map(drop)
                }
                "DataCollectionRules_ListByResourceGroup"
                | "DataCollectionRules_ListBySubscription" => {
                    parse_page::<DataCollectionRule>(body).map(drop)
                }
                "DataCollectionRuleAssociations_Get" | "DataCollectionRuleAssociations_Create" => {
                    parse::<DcrAssociation>(body).map(drop)
                }
                "DataCollectionRuleAssociations_ListByResource"
                | "DataCollectionRuleAssociations_ListByRule" => {
                    parse_page::<DcrAssociation>(body).map(drop)
                }
                "DataSources_Get" | "DataSources_CreateOrUpdate" => {
                    parse::<WorkspaceDataSource>(body).map(drop)
                }
                "DataSources_ListByWorkspace" => parse::<WorkspaceDataSourceList>(body).map(drop),
                "Resources" => parse::<ResourceGraphResponse<Value>>(body).map(drop),
                other => Err(format!("no client type mapped for {other}")),
            };
            match result {
                Ok(()) => parsed += 1,
                Err(e) => failures.push(format!("{op} [{}] {status}: {e}", ex.title)),
            }
        }
    }
    println!("{parsed} of {seen} example response bodies parsed into client types");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(parsed > 40 && parsed == seen);
}

#[test]
fn logged_exchanges_cover_lro_urls_and_skip_only_what_no_spec_describes() {
    use ama_migrator::contract::{Checked, Exchange};
    let s = specs();
    let ex = |method, path, status, response_body| Exchange {
        method,
        path,
        query: &[],
        request_body: None,
        status,
        response_body,
    };
    let skipped = s
        .validate_exchange(&ex("GET", "/_sim/ledger", 200, None))
        .unwrap();
    assert!(matches!(skipped, Checked::Skipped(_)));
    let status_url = "/subscriptions/s/providers/Microsoft.Compute/locations/eastus/operations/op1?api-version=2024-11-01";
    let running = json!({"id": "/subscriptions/s/providers/Microsoft.Compute/locations/eastus/operations/op1", "name": "op1", "status": "InProgress", "startTime": "2025-01-01T00:00:00Z"});
    assert_eq!(
        s.validate_exchange(&ex("GET", status_url, 200, Some(&running)))
            .unwrap(),
        Checked::OperationStatus
    );
    let bad = json!({"name": "op1", "percentComplete": 150});
    let v = s
        .validate_exchange(&ex("GET", status_url, 200, Some(&bad)))
        .unwrap_err();
    assert!(
        v.iter().any(|v| v.message.contains("`status`")),
        "{}",
        show(&v)
    );
    assert!(
        v.iter().any(|v| v.pointer == "/percentComplete"),
        "{}",
        show(&v)
    );
    let result_url = "/subscriptions/s/providers/Microsoft.Compute/locations/eastus/operationResults/op1?api-version=2024-11-01";
    assert_eq!(
        s.validate_exchange(&ex("GET", result_url, 202, None))
            .unwrap(),
        Checked::OperationResult(None)
    );
    let ext = json!({"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1/extensions/AzureMonitorWindowsAgent",
        "name": "AzureMonitorWindowsAgent", "location": "eastus",
        "properties": {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent", "typeHandlerVersion": "1.0", "provisioningState": "Succeeded"}});
    match s
        .validate_exchange(&ex("GET", result_url, 200, Some(&ext)))
        .unwrap()
    {
        Checked::OperationResult(Some(info)) => {
            assert_eq!(info.operation_id, "VirtualMachineExtensions_Get")
        }
        other => panic!("{other:?}"),
    }
    let mut wrong = ext.clone();
    wrong["properties"]["autoUpgradeMinorVersion"] = json!("yes");
    let v = s
        .validate_exchange(&ex("GET", result_url, 200, Some(&wrong)))
        .unwrap_err();
    assert_eq!(
        v[0].pointer,
        "/properties/autoUpgradeMinorVersion",
        "{}",
        show(&v)
    );
    // A plain ARM exchange: query given separately, request and response both checked.
    let q = vec![("api-version".to_string(), "2023-03-11".to_string())];
    let put = Exchange {
        method: "PUT",
        path: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/dcr-1",
        query: &q,
        request_body: Some(&json!({"location": "eastus", "properties": {"dataFlows": "nope"}})),
        status: 200,
        response_body: Some(&json!({"location": 5})),
    };
    let v = s.validate_exchange(&put).unwrap_err();
    assert!(
        v.iter()
            .any(|v| v.message.starts_with("request") && v.pointer == "/properties/dataFlows"),
        "{}",
        show(&v)
    );
    assert!(
        v.iter()
            .any(|v| v.message.starts_with("response") && v.pointer == "/location"),
        "{}",
        show(&v)
    );
}
