//! The Helm chart ships the CRDs from its own `crds/` folder; they must stay byte-identical to the
//! generated `crds/` at the repository root. `UPDATE_CRDS=1` (run by `make generate`) copies them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, fs::read(&path).unwrap());
        }
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn chart_crds_are_byte_identical_to_generated_crds() {
    let generated_dir = root().join("crds");
    let chart_dir = root().join("charts/ama-migrator/crds");
    let generated = yaml_files(&generated_dir);
    assert!(
        generated.len() >= 2,
        "expected the MigrationPlan and MachineMigration CRDs in {}",
        generated_dir.display()
    );
    if std::env::var_os("UPDATE_CRDS").is_some() {
        for (name, _) in yaml_files(&chart_dir) {
            if !generated.contains_key(&name) {
                fs::remove_file(chart_dir.join(&name)).unwrap();
            }
        }
        for (name, bytes) in &generated {
            fs::write(chart_dir.join(name), bytes).unwrap();
        }
    }
    let chart = yaml_files(&chart_dir);
    let missing: Vec<_> = generated
        .keys()
        .filter(|k| !chart.contains_key(*k))
        .collect();
    let extra: Vec<_> = chart
        .keys()
        .filter(|k| !generated.contains_key(*k))
        .collect();
    let differ: Vec<_> = generated
        .iter()
        .filter(|(k, v)| chart.get(*k).is_some_and(|c| c != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "charts/ama-migrator/crds/ drifted from crds/: missing {missing:?}, extra {extra:?}, \
         different {differ:?}; run `UPDATE_CRDS=1 cargo test --test chart_crds` (or `make generate`)"
    );
}
