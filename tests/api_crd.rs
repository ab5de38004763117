//! Golden and structural tests of the CRDs: `crds/` must match the Rust types (run with
//! `UPDATE_CRDS=1` to rewrite), and every schema node must be structural.

use std::path::PathBuf;

use ama_migrator::api::crd;
use kube::CustomResourceExt;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds")
}

#[test]
fn crd_files_match_the_types() {
    let update = std::env::var("UPDATE_CRDS").is_ok_and(|v| v == "1");
    let mut drifted = Vec::new();
    for (file, def) in crd::all() {
        let yaml = crd::to_yaml(&def).unwrap();
        let path = crds_dir().join(file);
        if update {
            std::fs::create_dir_all(crds_dir()).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == yaml => {}
            Ok(_) => drifted.push(format!("{file} differs from the types")),
            Err(e) => drifted.push(format!("{file}: {e}")),
        }
    }
    assert!(
        drifted.is_empty(),
        "CRDs drifted: {drifted:?}; run `UPDATE_CRDS=1 cargo test --test api_crd` and commit crds/"
    );
}

#[test]
fn crd_schemas_are_structural() {
    for (file, def) in crd::all() {
        let violations = crd::structural_violations(&def);
        assert!(violations.is_empty(), "{file}: {violations:#?}");
        // The walk must have visited a real schema: spot-check it has the fields we rely on.
        let schema = serde_json::to_value(
            def.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        assert!(
            schema.pointer("/properties/spec/properties").is_some(),
            "{file}"
        );
        assert!(
            schema
                .pointer("/properties/status/properties/conditions")
                .is_some(),
            "{file}"
        );
    }
}

/// An unrecognized `format` makes every `kubectl apply` / `helm install` of the CRDs print a
/// warning per field (Kubernetes 1.34+); schemars writes Rust widths (`uint32`) that it does not know.
#[test]
fn crd_formats_are_ones_kubernetes_recognizes_and_keep_their_range() {
    for (file, def) in crd::all() {
        let unrecognized = crd::unrecognized_formats(&def);
        assert!(unrecognized.is_empty(), "{file}: {unrecognized:#?}");
    }
    // A u32 field keeps its range as bounds; the check itself catches what schemars writes.
    let plan = serde_json::to_value(&crd::all()[0].1).unwrap();
    let text = plan.to_string();
    assert!(text.contains("\"maximum\":4294967295"), "no u32 bound kept");
    let raw = ama_migrator::api::MigrationPlan::crd();
    assert!(
        !crd::unrecognized_formats(&raw).is_empty(),
        "schemars no longer writes uint formats: the normalization can go"
    );
}

#[test]
fn crd_yaml_round_trips_and_is_what_the_cli_prints() {
    let all = crd::all_yaml().unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&all).unwrap();
    assert_eq!(docs.len(), 2);
    for (doc, (_, def)) in docs.iter().zip(crd::all()) {
        assert_eq!(doc, &serde_json::to_value(&def).unwrap());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), all);
}

#[test]
fn crd_has_printer_columns_short_names_category_and_cel_rules() {
    let plan = serde_json::to_value(crd::all()[0].1.clone()).unwrap();
    let names = &plan["spec"]["names"];
    assert_eq!(names["shortNames"][0], "amaplan");
    assert_eq!(names["categories"][0], "ama");
    let v = &plan["spec"]["versions"][0];
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Phase", "Wave", "Done", "Total", "Age"]);
    assert!(v["subresources"]["status"].is_object());
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let wave = &spec["properties"]["rollout"]["properties"]["waves"]["items"];
    let rules = wave["x-kubernetes-validations"].to_string();
    assert!(
        rules.contains("has(self.count) && has(self.percent)"),
        "{rules}"
    );
    let cutover =
        spec["properties"]["rollout"]["properties"]["cutover"]["x-kubernetes-validations"]
            .to_string();
    assert!(
        cutover.contains("maxGap") && cutover.contains("maxOverlap"),
        "{cutover}"
    );
    let conds = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conds["x-kubernetes-list-type"], "map");
    assert_eq!(conds["x-kubernetes-list-map-keys"][0], "type");
    let pct = &wave["properties"]["percent"];
    assert_eq!(pct["maximum"].as_f64(), Some(100.0));

    let mm = serde_json::to_value(crd::all()[1].1.clone()).unwrap();
    assert_eq!(mm["spec"]["names"]["shortNames"][0], "amamm");
    let cols: Vec<&str> = mm["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Plan", "Wave", "Step", "Agents", "Age"]);
}
