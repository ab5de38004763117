//! Our CRDs on a real kube-apiserver: they apply with no error and no warning (a CEL rule whose
//! estimated cost exceeds the budget is refused by the server, not by any schema check of ours),
//! and every CEL rule they carry is exercised by a server-side dry run with one object it accepts
//! and one it refuses, asserting the rule's own message. A rule added to the CRDs without a case
//! here fails `every_cel_rule_in_the_crds_has_a_case`.

mod operator_support;

use operator_support::control_plane::{self, Cluster};
use serde_json::{Value, json};

const NS: &str = "cel";
const PLANS: &str = "/apis/amamigrator.io/v1alpha1/migrationplans";
const MACHINES: &str = "/apis/amamigrator.io/v1alpha1/machinemigrations";

/// `examples/plan.yaml` as JSON, in the test namespace.
fn example_plan(name: &str) -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml"))
        .unwrap();
    let mut plan: Value = serde_saphyr::from_str(&text).unwrap();
    plan["metadata"] = json!({"name": name, "namespace": NS});
    plan
}

/// One CEL rule: its message (as in the CRD), and an edit of the example plan that breaks it;
/// `valid` is an edit that exercises the same fields and keeps it.
struct Case {
    message: &'static str,
    valid: fn(&mut Value),
    invalid: fn(&mut Value),
}

fn plan_cases() -> Vec<Case> {
    vec![
        Case {
            message: "spec.azure: set credentialsSecretRef or clientId, not both",
            valid: |p| p["spec"]["azure"] = json!({"credentialsSecretRef": {"name": "azure-sp"}}),
            invalid: |p| {
                p["spec"]["azure"] = json!({
                    "credentialsSecretRef": {"name": "azure-sp"},
                    "clientId": "00000000-0000-0000-0000-000000000000"
                })
            },
        },
        Case {
            message: "data source names must be unique",
            valid: |p| p["spec"]["dataSources"][1]["name"] = json!("forwarded-2"),
            invalid: |p| p["spec"]["dataSources"][1]["name"] = json!("security-events"),
        },
        Case {
            message: "wave names must be unique",
            valid: |p| p["spec"]["rollout"]["waves"][2]["name"] = json!("medium-2"),
            invalid: |p| p["spec"]["rollout"]["waves"][2]["name"] = json!("low"),
        },
        Case {
            message: "a wave's size is a count or a percent, not both",
            valid: |p| {
                p["spec"]["rollout"]["waves"][1]["percent"] = json!(10);
            },
            invalid: |p| {
                p["spec"]["rollout"]["waves"][1]["percent"] = json!(10);
                p["spec"]["rollout"]["waves"][1]["count"] = json!(3);
            },
        },
        Case {
            message: "parityTolerancePercent and parityWindow go together",
            valid: |p| {
                let gates = &mut p["spec"]["rollout"]["waves"][0]["gates"];
                gates["parityTolerancePercent"] = json!(3);
                gates["parityWindow"] = json!("12h");
            },
            invalid: |p| {
                let gates = &mut p["spec"]["rollout"]["waves"][0]["gates"];
                gates.as_object_mut().unwrap().remove("parityWindow");
            },
        },
        Case {
            message: "the failure budget is a count or a percent, not both",
            valid: |p| p["spec"]["rollout"]["failureBudget"] = json!({"maxFailed": 3}),
            invalid: |p| {
                p["spec"]["rollout"]["failureBudget"] =
                    json!({"maxFailed": 3, "maxFailedPercent": 5})
            },
        },
        Case {
            message: "maxGap applies to policy PreferNoDuplicate; use maxOverlap with PreferNoGap",
            valid: |p| {
                p["spec"]["rollout"]["cutover"] =
                    json!({"policy": "PreferNoDuplicate", "maxGap": "10m"})
            },
            invalid: |p| {
                p["spec"]["rollout"]["cutover"] = json!({"policy": "PreferNoGap", "maxGap": "10m"})
            },
        },
        Case {
            message: "maxOverlap applies to policy PreferNoGap; use maxGap with PreferNoDuplicate",
            valid: |p| {
                p["spec"]["rollout"]["cutover"] =
                    json!({"policy": "PreferNoGap", "maxOverlap": "30m"})
            },
            invalid: |p| {
                p["spec"]["rollout"]["cutover"] =
                    json!({"policy": "PreferNoDuplicate", "maxOverlap": "30m"})
            },
        },
        Case {
            message: "a maintenance window needs distinct start and end",
            valid: |p| {
                p["spec"]["rollout"]["maintenanceWindows"][0] =
                    json!({"days": ["Sat"], "start": "01:00", "end": "05:00"})
            },
            invalid: |p| {
                p["spec"]["rollout"]["maintenanceWindows"][0] =
                    json!({"days": ["Sat"], "start": "01:00", "end": "01:00"})
            },
        },
        Case {
            message: "spec.testWorkspace must differ from spec.workspace: canary data would duplicate into production",
            valid: |p| {
                p["spec"]["testWorkspace"]["resourceId"] = json!(
                    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.OperationalInsights/workspaces/law-sentinel-test"
                )
            },
            // The same workspace, spelled in other case: ARM resource IDs are case-insensitive.
            invalid: |p| {
                let ws = p["spec"]["workspace"]
                    .as_str()
                    .unwrap()
                    .to_ascii_uppercase();
                p["spec"]["testWorkspace"]["resourceId"] = json!(ws);
            },
        },
    ]
}

/// POST with `dryRun=All`: the server validates (schema and CEL) and stores nothing.
fn dry_run_create(cluster: &Cluster, collection: &str, obj: &Value) -> (u16, Value) {
    let (prefix, plural) = collection.rsplit_once('/').unwrap();
    cluster.send(
        "POST",
        &format!("{prefix}/namespaces/{NS}/{plural}?dryRun=All&fieldValidation=Strict"),
        "application/json",
        Some(obj),
    )
}

#[test]
fn the_crds_apply_to_a_real_api_server_with_no_error_or_warning() {
    let Some(cp) = control_plane::shared() else {
        return;
    };
    println!("kube-apiserver {}", cp.version);
    // Applied at start from crds/ (a refusal would have failed there, naming the file and the
    // server's message); the chart's copies too, here.
    assert!(cp.crd_warnings.is_empty(), "{:#?}", cp.crd_warnings);
    let warnings = cp
        .install_crds(&["charts/ama-migrator/crds"])
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(warnings.is_empty(), "{warnings:#?}");
    // Every CRD is served and Established.
    for name in [
        "migrationplans.amamigrator.io",
        "machinemigrations.amamigrator.io",
    ] {
        let (code, body) = cp
            .get(&format!(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            ))
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let crd: Value = serde_json::from_str(&body).unwrap();
        let established = crd["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(established, "{name}: {:#}", crd["status"]);
    }
}

#[test]
fn every_plan_cel_rule_accepts_a_valid_plan_and_refuses_with_its_message() {
    let Some(cp) = control_plane::shared() else {
        return;
    };
    let cluster = cp.cluster(NS);
    let (code, body) = dry_run_create(&cluster, PLANS, &example_plan("example"));
    assert_eq!(code, 201, "the example plan is refused: {body:#}");
    for (i, case) in plan_cases().iter().enumerate() {
        let mut valid = example_plan(&format!("valid-{i}"));
        (case.valid)(&mut valid);
        let (code, body) = dry_run_create(&cluster, PLANS, &valid);
        assert_eq!(
            code, 201,
            "{}: the valid plan was refused: {body:#}",
            case.message
        );

        let mut invalid = example_plan(&format!("invalid-{i}"));
        (case.invalid)(&mut invalid);
        let (code, body) = dry_run_create(&cluster, PLANS, &invalid);
        assert_eq!(
            code, 422,
            "{}: the invalid plan was not refused: {body:#}",
            case.message
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(case.message),
            "refused for another reason than {:?}: {message}",
            case.message
        );
    }
}

#[test]
fn a_machine_migration_keeps_its_machine_id() {
    let Some(cp) = control_plane::shared() else {
        return;
    };
    let cluster = cp.cluster(NS);
    let id = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1";
    let machine = json!({
        "apiVersion": "amamigrator.io/v1alpha1", "kind": "MachineMigration",
        "metadata": {"name": "vm-1", "namespace": NS},
        "spec": {"plan": "example", "machineId": id, "os": "Windows", "kind": "AzureVM",
                 "wave": "canary", "risk": "Low"},
    });
    let (code, body) = dry_run_create(&cluster, MACHINES, &machine);
    assert_eq!(code, 201, "{body:#}");
    cluster.create(MACHINES, machine);
    let path =
        format!("/apis/amamigrator.io/v1alpha1/namespaces/{NS}/machinemigrations/vm-1?dryRun=All");
    // Valid: an update that keeps machineId.
    let (code, body) = cluster.send(
        "PATCH",
        &path,
        "application/merge-patch+json",
        Some(&json!({"spec": {"wave": "low"}})),
    );
    assert_eq!(code, 200, "{body:#}");
    // Invalid: machineId changed.
    let (code, body) = cluster.send(
        "PATCH",
        &path,
        "application/merge-patch+json",
        Some(&json!({"spec": {"machineId": id.replace("vm-1", "vm-2")}})),
    );
    assert_eq!(code, 422, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.machineId is immutable"),
        "{body:#}"
    );
}

#[test]
fn every_cel_rule_in_the_crds_has_a_case() {
    let mut messages = Vec::new();
    for (_, crd) in ama_migrator::api::crd::all() {
        collect_messages(&serde_json::to_value(crd).unwrap(), &mut messages);
    }
    let mut covered: Vec<&str> = plan_cases().iter().map(|c| c.message).collect();
    covered.push("spec.machineId is immutable");
    for m in &messages {
        assert!(
            covered.contains(&m.as_str()),
            "the CEL rule with message {m:?} has no dry-run case in tests/crd_cel.rs"
        );
    }
    assert_eq!(messages.len(), covered.len(), "{messages:#?}");
}

fn collect_messages(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(rules) = map
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            {
                out.extend(
                    rules
                        .iter()
                        .filter_map(|r| r["message"].as_str().map(str::to_owned)),
                );
            }
            map.values().for_each(|v| collect_messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
        _ => {}
    }
}
