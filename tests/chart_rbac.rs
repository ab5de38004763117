//! The chart's RBAC is checked against the code in two steps, because only Python renders the chart
//! in CI (helm-python-sdk): this test exports the code's list (`operator::rbac::REQUIRED_RULES`)
//! to `ci/rbac_required_rules.json` and fails when the file is stale; `ci/chart_check.py` renders
//! `templates/rbac.yaml` with every option and requires exactly those rules (no more, no fewer).
//! `UPDATE_GOLDEN=1` (run by `make generate`) rewrites the file.

use std::path::PathBuf;

use ama_migrator::operator::rbac::{REQUIRED_RULES, RuleScope};
use serde_json::{Value, json};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ci/rbac_required_rules.json")
}

fn exported() -> Value {
    let rules: Vec<Value> = REQUIRED_RULES
        .iter()
        .map(|r| {
            json!({
                "apiGroup": r.api_group,
                "resource": r.resource,
                "verbs": r.verbs,
                // "plans": where plans live (ClusterRole, or a Role per watched namespace);
                // "operatorNamespace": the release namespace only (the Lease).
                "scope": match r.scope {
                    RuleScope::Cluster => "plans",
                    RuleScope::OperatorNamespace => "operatorNamespace",
                },
            })
        })
        .collect();
    json!({
        "generatedBy": "tests/chart_rbac.rs from src/operator/rbac.rs REQUIRED_RULES (UPDATE_GOLDEN=1 to refresh)",
        "rules": rules,
    })
}

#[test]
fn rbac_required_rules_golden_matches_code() {
    let want = serde_json::to_string_pretty(&exported()).unwrap() + "\n";
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        have,
        want,
        "{} is stale: the operator's REQUIRED_RULES changed. Run `UPDATE_GOLDEN=1 cargo test --test \
         chart_rbac`, then update charts/ama-migrator/templates/rbac.yaml to grant exactly those \
         rules (python3 ci/chart_check.py checks it)",
        path.display()
    );
}

#[test]
fn required_rules_are_least_privilege() {
    for r in REQUIRED_RULES {
        for v in r.verbs {
            assert!(
                [
                    "get", "list", "watch", "create", "patch", "update", "delete"
                ]
                .contains(v),
                "{r:?}: unexpected verb {v}"
            );
        }
        assert_ne!(
            r.resource, "secrets",
            "Secrets are granted only by rbac.secretAccess"
        );
        if r.resource.ends_with("/status") {
            assert!(
                !r.verbs.contains(&"list") && !r.verbs.contains(&"watch"),
                "{r:?}: status subresources are read through the main resource"
            );
        }
    }
    let leases = REQUIRED_RULES
        .iter()
        .find(|r| r.resource == "leases")
        .expect("leader election needs a Lease rule");
    assert_eq!(leases.scope, RuleScope::OperatorNamespace);
}
