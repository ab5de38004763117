//! `deploy/azure-custom-role.json` must list exactly the Azure actions the operator's requests need.
//!
//! `CALL_SITES` below is the list of (method, path) every Azure-calling function sends, kept next to
//! this test and checked against the source in both directions:
//! * every `pub async fn` of `src/azure/` and every raw request built elsewhere in `src/`
//!   (`arm_url(`, `arm_request(`, `log_analytics_url(`, `trusted_arm_url(`) must have an entry, so a
//!   new operation cannot ship without its action;
//! * every entry must still exist in the source;
//! * every ARM path must be a real operation of Microsoft's REST specs at the api-version the client
//!   sends (`contract::SpecSet`).
//!
//! An ARM action is derived the way ARM authorizes a request: the namespace and resource types after
//! the last `providers/` segment, plus `read` (GET), `write` (PUT, PATCH) or `delete` (DELETE).
//! Requests ARM does not derive this way (Resource Graph's POST, the Log Analytics query API) and
//! linked checks name their actions explicitly. The role's actions must equal the union.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ama_migrator::azure::api_versions::{
    COMPUTE, HYBRID_COMPUTE, INSIGHTS, OPERATIONAL_INSIGHTS, RESOURCE_GRAPH,
};
use ama_migrator::contract::SpecSet;
use serde_json::Value;

/// One request: method, path template (`{x}` = a parameter), api-version (`None`: not ARM or not in
/// the specs), and actions ARM checks beyond the derived one.
struct Call {
    method: &'static str,
    path: &'static str,
    api: Option<&'static str>,
    extra: &'static [&'static str],
}

const fn arm(method: &'static str, path: &'static str, api: &'static str) -> Call {
    Call {
        method,
        path,
        api: Some(api),
        extra: &[],
    }
}

const VM: &str =
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}";
const VM_EXTS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/extensions";
const VM_EXT: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/extensions/{ext}";
const ARC: &str =
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{machine}";
const ARC_EXTS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{machine}/extensions";
const ARC_EXT: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{machine}/extensions/{ext}";
const DCR: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Insights/dataCollectionRules/{dcr}";
const VM_DCRAS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/providers/Microsoft.Insights/dataCollectionRuleAssociations";
const VM_DCRA: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/providers/Microsoft.Insights/dataCollectionRuleAssociations/{assoc}";
const ARC_DCRAS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{machine}/providers/Microsoft.Insights/dataCollectionRuleAssociations";
const ARC_DCRA: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{machine}/providers/Microsoft.Insights/dataCollectionRuleAssociations/{assoc}";
const WS_DSS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}/dataSources";
const WS_DS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}/dataSources/{ds}";

/// Enabling the system-assigned identity resends every user-assigned identity of the VM, and ARM
/// runs a linked check for each (LinkedAuthorizationFailed without it).
const UAI_ASSIGN: &[&str] = &["Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"];
/// The Log Analytics query API (`api.loganalytics.io`): read the workspace, run a query, read the
/// queried tables. Tables come from the catalog and plan overrides (custom `_CL` tables), so every
/// table is granted.
const LOG_QUERY: &[&str] = &[
    "Microsoft.OperationalInsights/workspaces/read",
    "Microsoft.OperationalInsights/workspaces/query/read",
    "Microsoft.OperationalInsights/workspaces/query/*/read",
];

const GET_MACHINE: &[Call] = &[arm("GET", VM, COMPUTE), arm("GET", ARC, HYBRID_COMPUTE)];
const LIST_EXTENSIONS: &[Call] = &[
    arm("GET", VM_EXTS, COMPUTE),
    arm("GET", ARC_EXTS, HYBRID_COMPUTE),
];
const GET_DCR: &[Call] = &[arm("GET", DCR, INSIGHTS)];
const PUT_DCR: &[Call] = &[arm("PUT", DCR, INSIGHTS)];
const LIST_DATA_SOURCES: &[Call] = &[arm("GET", WS_DSS, OPERATIONAL_INSIGHTS)];
/// Long-running operations are polled at the URL ARM returns (`Azure-AsyncOperation` or `Location`);
/// the resource is then read with the calls already listed for it. Not in the resource specs.
const POLL: &[Call] = &[
    Call {
        method: "GET",
        path: "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}",
        api: None,
        extra: &[],
    },
    Call {
        method: "GET",
        path: "/subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}/operationStatus/{id}",
        api: None,
        extra: &[],
    },
    Call {
        method: "GET",
        path: "/subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}/operationResults/{id}",
        api: None,
        extra: &[],
    },
];

/// (file, function) → the requests it sends. Delegating functions repeat their callee's requests.
const CALL_SITES: &[(&str, &str, &[Call])] = &[
    ("src/azure/identity.rs", "get_machine", GET_MACHINE),
    ("src/azure/identity.rs", "get_identity", GET_MACHINE),
    (
        "src/azure/identity.rs",
        "enable_system_assigned_identity",
        &[
            arm("GET", VM, COMPUTE),
            Call {
                method: "PATCH",
                path: VM,
                api: Some(COMPUTE),
                extra: UAI_ASSIGN,
            },
        ],
    ),
    (
        "src/azure/extensions.rs",
        "get_extension",
        &[
            arm("GET", VM_EXT, COMPUTE),
            arm("GET", ARC_EXT, HYBRID_COMPUTE),
        ],
    ),
    (
        "src/azure/extensions.rs",
        "list_extensions",
        LIST_EXTENSIONS,
    ),
    (
        "src/azure/extensions.rs",
        "agent_extensions",
        LIST_EXTENSIONS,
    ),
    (
        "src/azure/extensions.rs",
        "put_extension",
        &[
            arm("PUT", VM_EXT, COMPUTE),
            arm("PUT", ARC_EXT, HYBRID_COMPUTE),
        ],
    ),
    (
        "src/azure/extensions.rs",
        "delete_extension",
        &[
            arm("DELETE", VM_EXT, COMPUTE),
            arm("DELETE", ARC_EXT, HYBRID_COMPUTE),
        ],
    ),
    (
        "src/azure/graph.rs",
        "query_resource_graph",
        &[Call {
            method: "POST",
            path: "/providers/Microsoft.ResourceGraph/resources",
            api: Some(RESOURCE_GRAPH),
            extra: &["Microsoft.ResourceGraph/resources/read"],
        }],
    ),
    ("src/azure/insights.rs", "get_dcr", GET_DCR),
    ("src/azure/insights.rs", "get_data_collection_rule", GET_DCR),
    ("src/azure/insights.rs", "put_dcr", PUT_DCR),
    ("src/azure/insights.rs", "put_data_collection_rule", PUT_DCR),
    (
        "src/azure/insights.rs",
        "delete_dcr",
        &[arm("DELETE", DCR, INSIGHTS)],
    ),
    (
        "src/azure/insights.rs",
        "put_association",
        &[
            arm("PUT", VM_DCRA, INSIGHTS),
            arm("PUT", ARC_DCRA, INSIGHTS),
        ],
    ),
    (
        "src/azure/insights.rs",
        "get_association",
        &[
            arm("GET", VM_DCRA, INSIGHTS),
            arm("GET", ARC_DCRA, INSIGHTS),
        ],
    ),
    (
        "src/azure/insights.rs",
        "delete_association",
        &[
            arm("DELETE", VM_DCRA, INSIGHTS),
            arm("DELETE", ARC_DCRA, INSIGHTS),
        ],
    ),
    (
        "src/azure/insights.rs",
        "list_associations",
        &[
            arm("GET", VM_DCRAS, INSIGHTS),
            arm("GET", ARC_DCRAS, INSIGHTS),
        ],
    ),
    (
        "src/azure/logquery.rs",
        "query_logs",
        &[Call {
            method: "POST",
            path: "/v1/workspaces/{customerId}/query",
            api: None,
            extra: LOG_QUERY,
        }],
    ),
    (
        "src/azure/workspace.rs",
        "list_data_sources",
        LIST_DATA_SOURCES,
    ),
    (
        "src/azure/workspace.rs",
        "security_events_tier",
        LIST_DATA_SOURCES,
    ),
    (
        "src/azure/workspace.rs",
        "get_data_source",
        &[arm("GET", WS_DS, OPERATIONAL_INSIGHTS)],
    ),
    (
        "src/azure/workspace.rs",
        "put_data_source",
        &[arm("PUT", WS_DS, OPERATIONAL_INSIGHTS)],
    ),
    (
        "src/engine/flip.rs",
        "delete_data_source",
        &[arm("DELETE", WS_DS, OPERATIONAL_INSIGHTS)],
    ),
    ("src/azure/client.rs", "poll_operation", POLL),
    ("src/azure/client.rs", "wait_operation", POLL),
    ("src/azure/client.rs", "complete", POLL),
];

/// Public async functions of `src/azure/` that send nothing to ARM or Log Analytics.
const NOT_AZURE_RESOURCE_CALLS: &[(&str, &str, &str)] = &[
    (
        "src/azure/auth.rs",
        "authorization",
        "gets a token from Entra ID / IMDS / the Azure CLI",
    ),
    (
        "src/azure/throttle.rs",
        "acquire",
        "waits on the local token bucket",
    ),
];

/// Request plumbing: builds or sends a request whose path its caller chose (the callers are listed).
const PLUMBING: &[(&str, &str)] = &[
    ("src/azure/client.rs", "arm_url"),
    ("src/azure/client.rs", "log_analytics_url"),
    ("src/azure/client.rs", "trusted_arm_url"),
    ("src/azure/client.rs", "arm_request"),
    ("src/azure/client.rs", "get_optional"),
    ("src/azure/client.rs", "list_paged"),
    ("src/azure/client.rs", "submit"),
    ("src/azure/insights.rs", "put_plain"),
    ("src/azure/insights.rs", "association_url"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `.rs` files under `dir`, recursively, as paths relative to the crate root.
fn rust_files(dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path.strip_prefix(root()).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Non-test source lines of a file (everything before its first `#[cfg(test)]`).
fn code_lines(rel: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .map(str::to_string)
        .collect()
}

/// The name declared by a `fn` line, if the line declares one.
fn fn_name(line: &str) -> Option<&str> {
    let at = line.find("fn ")?;
    let before = line[..at].trim();
    let is_decl = before.is_empty()
        || before
            .split_whitespace()
            .all(|w| matches!(w, "pub" | "async" | "const" | "unsafe") || w.starts_with("pub("));
    if !is_decl {
        return None;
    }
    let rest = &line[at + 3..];
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0).then(|| &rest[..end])
}

/// (file, fn) of every public async function in `src/azure/`.
fn public_azure_functions() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("src/azure"), &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        for line in code_lines(&f) {
            if line.trim_start().starts_with("pub async fn ")
                && let Some(name) = fn_name(&line)
            {
                out.insert((f.clone(), name.to_string()));
            }
        }
    }
    out
}

/// (file, enclosing fn) of every request built in `src/` (the simulator and the spec validator,
/// which serve and check requests rather than send them, are left out).
fn raw_request_sites() -> BTreeSet<(String, String)> {
    const BUILDERS: &[&str] = &[
        "arm_url(",
        "arm_request(",
        "log_analytics_url(",
        "trusted_arm_url(",
    ];
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut out = BTreeSet::new();
    for f in files
        .iter()
        .filter(|f| !f.starts_with("src/sim/") && !f.starts_with("src/contract/"))
    {
        let mut current: Option<String> = None;
        for line in code_lines(f) {
            if let Some(name) = fn_name(&line) {
                current = Some(name.to_string());
            }
            let code = line.split("//").next().unwrap_or("");
            if BUILDERS.iter().any(|b| code.contains(&format!(".{b}")))
                && let Some(func) = &current
            {
                out.insert((f.clone(), func.clone()));
            }
        }
    }
    out
}

/// The action ARM checks for `method` on `path`: namespace and types after the last `providers`.
fn derived_action(method: &str, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let p = segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))?;
    let namespace = segs.get(p + 1)?;
    let types: Vec<&str> = segs[p + 2..].iter().step_by(2).copied().collect();
    if types.is_empty() {
        return None;
    }
    let verb = match method {
        "GET" => "read",
        "PUT" | "PATCH" => "write",
        "DELETE" => "delete",
        _ => return None, // POST: the provider names its action
    };
    Some(format!("{namespace}/{}/{verb}", types.join("/")))
}

fn calls() -> impl Iterator<Item = (&'static str, &'static str, &'static Call)> {
    CALL_SITES
        .iter()
        .flat_map(|(f, func, calls)| calls.iter().map(move |c| (*f, *func, c)))
}

/// Every action the listed requests need (lower-cased: ARM compares actions case-insensitively).
fn needed_actions() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (f, func, c) in calls() {
        let derived = derived_action(c.method, c.path);
        assert!(
            derived.is_some() || !c.extra.is_empty(),
            "{f} {func}: {} {} derives no action; name it in `extra`",
            c.method,
            c.path
        );
        for a in derived
            .into_iter()
            .chain(c.extra.iter().map(|s| s.to_string()))
        {
            out.entry(a.to_ascii_lowercase())
                .or_default()
                .push(format!("{func}: {} {}", c.method, c.path));
        }
    }
    out
}

fn role() -> Value {
    let path = root().join("deploy/azure-custom-role.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("role: `{key}` must be an array"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_azure_function_and_raw_request_has_its_calls_listed() {
    let listed: BTreeSet<(String, String)> = CALL_SITES
        .iter()
        .map(|(f, func, _)| (f.to_string(), func.to_string()))
        .collect();
    let exempt: BTreeSet<(String, String)> = NOT_AZURE_RESOURCE_CALLS
        .iter()
        .map(|(f, func, _)| (f.to_string(), func.to_string()))
        .chain(
            PLUMBING
                .iter()
                .map(|(f, func)| (f.to_string(), func.to_string())),
        )
        .collect();
    let found: BTreeSet<(String, String)> = public_azure_functions()
        .into_iter()
        .chain(raw_request_sites())
        .collect();
    let unlisted: Vec<_> = found
        .iter()
        .filter(|s| !listed.contains(*s) && !exempt.contains(*s))
        .collect();
    assert!(
        unlisted.is_empty(),
        "Azure calls without an entry in tests/chart_role.rs CALL_SITES: {unlisted:?}. List the \
         (method, path) they send; the test then requires their action in deploy/azure-custom-role.json"
    );
    let stale: Vec<_> = listed.iter().filter(|s| !found.contains(*s)).collect();
    assert!(
        stale.is_empty(),
        "CALL_SITES lists functions that no longer send requests (renamed or removed?): {stale:?}"
    );
    // The scan itself must see the known shapes, or it could pass by finding nothing.
    assert!(found.contains(&("src/engine/flip.rs".into(), "delete_data_source".into())));
    assert!(found.contains(&("src/azure/extensions.rs".into(), "put_extension".into())));
}

#[test]
fn role_grants_exactly_the_actions_the_calls_need() {
    let role = role();
    assert_eq!(role["IsCustom"], Value::Bool(true), "IsCustom must be true");
    assert!(role["Name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(
        !strings(&role, "AssignableScopes").is_empty(),
        "AssignableScopes must name at least one scope"
    );
    for key in ["NotActions", "DataActions", "NotDataActions"] {
        assert!(
            strings(&role, key).is_empty(),
            "`{key}` must be empty: the operator uses control-plane actions only"
        );
    }
    let actions = strings(&role, "Actions");
    let mut sorted = actions.clone();
    sorted.sort_by_key(|a| a.to_ascii_lowercase());
    sorted.dedup_by_key(|a| a.to_ascii_lowercase());
    assert_eq!(
        actions, sorted,
        "keep Actions sorted (case-insensitively) and unique"
    );

    let granted: BTreeSet<String> = actions.iter().map(|a| a.to_ascii_lowercase()).collect();
    let needed = needed_actions();
    let missing: Vec<_> = needed
        .iter()
        .filter(|(a, _)| !granted.contains(*a))
        .map(|(a, by)| format!("{a} (needed by {})", by.join("; ")))
        .collect();
    assert!(missing.is_empty(), "the role lacks: {missing:#?}");
    let unused: Vec<_> = granted
        .iter()
        .filter(|a| !needed.contains_key(*a))
        .collect();
    assert!(
        unused.is_empty(),
        "the role grants actions no listed call needs: {unused:?}"
    );
    for a in &granted {
        assert!(
            !a.contains('*') || a == "microsoft.operationalinsights/workspaces/query/*/read",
            "wildcard action {a}: only the queried tables are a wildcard"
        );
    }
}

#[test]
fn derived_actions_follow_arm_rules() {
    assert_eq!(
        derived_action("PUT", VM_EXT).as_deref(),
        Some("Microsoft.Compute/virtualMachines/extensions/write")
    );
    assert_eq!(
        derived_action("GET", ARC_DCRAS).as_deref(),
        Some("Microsoft.Insights/dataCollectionRuleAssociations/read")
    );
    assert_eq!(
        derived_action("DELETE", WS_DS).as_deref(),
        Some("Microsoft.OperationalInsights/workspaces/dataSources/delete")
    );
    assert_eq!(
        derived_action("GET", POLL[0].path).as_deref(),
        Some("Microsoft.Compute/locations/operations/read")
    );
    assert_eq!(derived_action("POST", DCR), None);
    assert_eq!(derived_action("GET", "/v1/workspaces/x/query"), None);
}

/// Each ARM path is an operation of Microsoft's REST specs at the api-version the client sends.
#[test]
fn listed_arm_calls_are_real_operations_of_the_specs() {
    let specs = SpecSet::load_default().unwrap();
    let mut checked = 0;
    for (f, func, c) in calls() {
        let Some(api) = c.api else { continue };
        let mut path = String::new();
        let mut rest = c.path;
        while let Some(open) = rest.find('{') {
            path.push_str(&rest[..open]);
            let close = rest[open..].find('}').unwrap() + open;
            path.push_str(match &rest[open + 1..close] {
                "sub" => "00000000-0000-0000-0000-000000000001",
                _ => "name1",
            });
            rest = &rest[close + 1..];
        }
        path.push_str(rest);
        let url = format!("{path}?api-version={api}");
        if let Err(v) = specs.find_operation(c.method, &url) {
            panic!("{f} {func}: {} {url} is not in the specs: {v:?}", c.method);
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} ARM calls checked");
}
