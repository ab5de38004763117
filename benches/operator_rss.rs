//! Peak RSS of the operator process (a child process) with 10,000 MachineMigration objects
//! served by a real kube-apiserver (v1.36.3, with etcd and kube-controller-manager: the test
//! control plane of `tests/operator_support/control_plane.rs`). Target: < 200 MB. Two
//! measurements, each on a control plane of its own:
//!
//! 1. *paused*: `ama-migrator run` with 10,000 MachineMigrations and a paused plan: leader
//!    election, both controllers, their reflector caches holding every object, one reconcile of
//!    each machine and of the plan; no engine.
//! 2. *engine*: the operator (this bench binary re-run as a child: leader election, both
//!    controllers and the plan's engine, the same code `run` starts) migrates a fleet of N
//!    machines of the in-process Azure simulator; its clock follows the simulator's scaled
//!    clock. The simulator's ARM quotas are raised tenfold so the run ends within minutes
//!    (memory, not throughput, is measured). Prints progress, the end, the time, the peak RSS
//!    and the size of the engine's journal ConfigMap.
//!
//! The operator talks to the API server with the operator token of the control plane: exactly the
//! chart's RBAC. The measured process holds the operator only: etcd, kube-apiserver and
//! kube-controller-manager are children of this bench process (their RSS is printed, not counted)
//! and the simulator (machines, ledger) runs in this bench process.
//!
//! Both measurements also print the Kubernetes API requests of the measured phase, from the
//! kube-apiserver's `/metrics` (`apiserver_request_total` on migrationplans, machinemigrations,
//! events, leases, configmaps and secrets, by verb and resource) read before and after it: per
//! machine (paused; the bench sends nothing to the API server in that phase) and per machine-step
//! (engine; the requests this bench sent — its plan polls and its one machine watch — are counted
//! and subtracted). The APF counter of the flow schema the operator's user alone falls in
//! (`global-default`) is printed beside it as a cross-check.
//!
//! The operator child runs with the image's environment (the Dockerfile's `ENV` lines, e.g.
//! `MALLOC_ARENA_MAX`); `--glibc-default` measures it without.
//!
//! Without the control-plane binaries (`ci/kube/build.sh`) the bench says why and exits 0.
//!
//! `cargo bench --bench operator_rss [-- [N] [--paused-only|--engine-only] [--limit SECONDS]
//! [--glibc-default]]`

#[path = "../tests/operator_support/control_plane.rs"]
mod control_plane;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ama_migrator::azure::{ArmClient, BucketShape, ClientConfig, CredentialConfig, Endpoints};
use ama_migrator::engine::{Clock, EngineOptions, SimulateOptions};
use ama_migrator::operator::controller::Context;
use ama_migrator::operator::leader::{self, Health, LeaderConfig, LeaseTiming};
use ama_migrator::operator::metrics::Metrics;
use ama_migrator::sim::{BucketConfig, Scenario, ThrottleConfig};
use control_plane::ControlPlane;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const CHILD_FLAG: &str = "--operator-child";

/// The environment the image gives the operator: every `ENV KEY=VALUE` line of the Dockerfile, so
/// the process measured here runs as shipped (`--glibc-default` leaves them out).
fn image_env() -> Vec<(String, String)> {
    include_str!("../Dockerfile")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// The image's environment unless `--glibc-default` was given, printed once.
fn child_env(args: &[String]) -> Vec<(String, String)> {
    if args.iter().any(|a| a == "--glibc-default") {
        println!(
            "  child environment: glibc defaults (--glibc-default; the image sets {:?})",
            image_env()
        );
        Vec::new()
    } else {
        let env = image_env();
        println!("  child environment as in the image (Dockerfile ENV): {env:?}");
        env
    }
}

/// The plans' and machines' namespace.
const NS: &str = "fleet";
/// The leader-election Lease's namespace (the operator's own, as in the chart).
const LEASE_NS: &str = "ama-migrator";
const PLANS: &str = "/apis/amamigrator.io/v1alpha1/namespaces/fleet/migrationplans";
const MACHINES: &str = "/apis/amamigrator.io/v1alpha1/namespaces/fleet/machinemigrations";
const CONFIGMAPS: &str = "/api/v1/namespaces/fleet/configmaps";
/// The resources whose API requests are counted.
const COUNTED: &[&str] = &[
    "migrationplans",
    "machinemigrations",
    "events",
    "leases",
    "configmaps",
    "secrets",
];

/// A MachineMigration as the planner writes it, and the status the old bench gave it on create
/// (written through `/status` afterwards: a real API server drops status on create).
fn machine(i: usize, plan_uid: &str) -> (Value, Value) {
    let windows = !i.is_multiple_of(3);
    let (os, sources) = if windows {
        (
            "Windows",
            json!([
                {"name": "security-events", "type": "WindowsSecurityEvents", "agent": "AMA",
                 "dcr": "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.Insights/dataCollectionRules/dcr-security-events"},
                {"name": "forwarded-events", "type": "WindowsForwardedEvents", "agent": "AMA",
                 "dcr": "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.Insights/dataCollectionRules/dcr-forwarded-events"},
                {"name": "firewall", "type": "WindowsFirewallLogs", "agent": "Legacy"}
            ]),
        )
    } else {
        (
            "Linux",
            json!([
                {"name": "syslog", "type": "LinuxSyslog", "agent": "AMA",
                 "dcr": "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.Insights/dataCollectionRules/dcr-syslog"}
            ]),
        )
    };
    let name = format!("vm-{i:05}");
    let object = json!({
        "apiVersion": "amamigrator.io/v1alpha1",
        "kind": "MachineMigration",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"amamigrator.io/plan": "contoso", "amamigrator.io/wave": "medium"},
            "ownerReferences": [{"apiVersion": "amamigrator.io/v1alpha1", "kind": "MigrationPlan",
                "name": "contoso", "uid": plan_uid, "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "plan": "contoso",
            "machineId": format!("/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-fleet-{}/providers/Microsoft.Compute/virtualMachines/{name}", i % 40),
            "os": os, "kind": "AzureVM", "wave": "medium", "risk": "Medium",
            "dataSources": sources, "mayProceed": false
        }
    });
    let status = json!({
        "step": "InstallAma", "agents": "Legacy", "attempts": 0,
        "conditions": [{"type": "Ready", "status": "False", "reason": "InProgress",
            "message": "installing the Azure Monitor Agent", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    });
    (object, status)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// The control plane's processes (children of this bench process): name and pid.
fn control_plane_pids() -> Vec<(String, u32)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid: Option<u32> = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok());
        if ppid == Some(me) && matches!(comm, "etcd" | "kube-apiserver" | "kube-controller") {
            // comm is cut at 15 bytes.
            let name = if comm == "kube-controller" {
                "kube-controller-manager"
            } else {
                comm
            };
            out.push((name.to_string(), pid));
        }
    }
    out.sort();
    out
}

/// One line: each control-plane process's RSS now and its peak.
fn control_plane_rss() -> String {
    control_plane_pids()
        .iter()
        .map(|(name, pid)| {
            format!(
                "{name} {:.0} MiB (peak {:.0})",
                vm_rss_kib(*pid).unwrap_or(0) as f64 / 1024.0,
                vm_hwm_kib(*pid).unwrap_or(0) as f64 / 1024.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

fn reconciled_machines(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(r#"ama_migrator_reconciles_total{controller="machinemigration"}"#))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// API request counting

/// (verb, resource, subresource) as `apiserver_request_total` labels them (`GET`, `LIST`,
/// `WATCH`, `POST`, `PATCH`, `APPLY`, `PUT`, `DELETE`, ...).
type RequestKey = (String, String, String);

fn key(verb: &str, resource: &str, subresource: &str) -> RequestKey {
    (verb.into(), resource.into(), subresource.into())
}

/// The counters read from one scrape of the kube-apiserver's `/metrics`.
#[derive(Default, Clone)]
struct ApiCounters {
    /// `apiserver_request_total` summed over codes, groups and scopes, for [`COUNTED`].
    requests: BTreeMap<RequestKey, f64>,
    /// `apiserver_flowcontrol_dispatched_requests_total` by flow schema.
    dispatched: BTreeMap<String, f64>,
}

/// `name{a="x",b="y"} value` → labels and value.
fn parse_sample(line: &str) -> Option<(HashMap<&str, &str>, f64)> {
    let open = line.find('{')?;
    let close = line.rfind('}')?;
    let mut labels = HashMap::new();
    let mut rest = &line[open + 1..close];
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim_start_matches(',').trim();
        let after = &rest[eq + 2..];
        let end = after.find('"')?;
        labels.insert(name, &after[..end]);
        rest = &after[end + 1..];
    }
    let value = line[close + 1..].split_whitespace().next()?.parse().ok()?;
    Some((labels, value))
}

impl ApiCounters {
    fn scrape(cp: &ControlPlane) -> Self {
        let body = match cp.get("/metrics") {
            Ok((200, body)) => body,
            Ok((code, body)) => {
                eprintln!(
                    "kube-apiserver /metrics answered {code}: {}",
                    &body[..body.len().min(200)]
                );
                String::new()
            }
            Err(e) => {
                eprintln!("kube-apiserver /metrics: {e}");
                String::new()
            }
        };
        let mut out = ApiCounters::default();
        for line in body.lines() {
            if line.starts_with("apiserver_request_total{") {
                let Some((l, v)) = parse_sample(line) else {
                    continue;
                };
                let resource = l.get("resource").copied().unwrap_or("");
                if !COUNTED.contains(&resource) {
                    continue;
                }
                *out.requests
                    .entry(key(
                        l.get("verb").copied().unwrap_or(""),
                        resource,
                        l.get("subresource").copied().unwrap_or(""),
                    ))
                    .or_default() += v;
            } else if line.starts_with("apiserver_flowcontrol_dispatched_requests_total{")
                && let Some((l, v)) = parse_sample(line)
            {
                *out.dispatched
                    .entry(l.get("flow_schema").copied().unwrap_or("").to_string())
                    .or_default() += v;
            }
        }
        out
    }
}

/// The requests of one measured phase: the API server's counts, less those this bench sent.
struct PhaseRequests {
    /// (verb, resource, subresource) → (counted by the API server, sent by this bench).
    rows: BTreeMap<RequestKey, (f64, f64)>,
    /// Requests dispatched under the `global-default` flow schema (the operator's user only).
    operator_apf: f64,
}

impl PhaseRequests {
    fn new(before: &ApiCounters, after: &ApiCounters, own: &BTreeMap<RequestKey, u64>) -> Self {
        let mut rows: BTreeMap<RequestKey, (f64, f64)> = BTreeMap::new();
        for (k, v) in &after.requests {
            let d = v - before.requests.get(k).copied().unwrap_or(0.0);
            if d > 0.0 {
                rows.entry(k.clone()).or_default().0 = d;
            }
        }
        for (k, v) in own {
            rows.entry(k.clone()).or_default().1 = *v as f64;
        }
        let flow = |c: &ApiCounters| c.dispatched.get("global-default").copied().unwrap_or(0.0);
        PhaseRequests {
            rows,
            operator_apf: flow(after) - flow(before),
        }
    }

    /// Requests not sent by this bench (the operator's, plus the control plane's own, e.g. the
    /// API server's identity-Lease renewals).
    fn others(&self) -> f64 {
        self.rows.values().map(|(d, o)| d - o).sum()
    }

    /// Prints the breakdown; `per` divides the totals (machines or machine-steps).
    fn print(&self, per: f64, per_what: &str) {
        let others = self.others();
        let own: f64 = self.rows.values().map(|(_, o)| o).sum();
        println!(
            "  API requests on {} in the phase, by the operator (and the control plane itself; \
             this bench's own {own:.0} subtracted): {others:.0} = {:.2} per {per_what}",
            COUNTED.join("/"),
            others / per.max(1.0)
        );
        println!(
            "    cross-check, APF flow schema global-default (the operator's user alone, every \
             resource): {:.0} = {:.2} per {per_what}",
            self.operator_apf,
            self.operator_apf / per.max(1.0)
        );
        let mut by_resource: BTreeMap<&str, f64> = BTreeMap::new();
        let mut by_verb: BTreeMap<&str, f64> = BTreeMap::new();
        for ((verb, resource, _), (d, o)) in &self.rows {
            *by_resource.entry(resource).or_default() += d - o;
            *by_verb.entry(verb).or_default() += d - o;
        }
        let fmt = |m: &BTreeMap<&str, f64>| {
            m.iter()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, v)| format!("{k} {v:.0} ({:.3})", v / per.max(1.0)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("    by resource (per {per_what}): {}", fmt(&by_resource));
        println!("    by verb (per {per_what}): {}", fmt(&by_verb));
        println!(
            "    by verb and resource (API server count - this bench's = others; per {per_what}):"
        );
        for ((verb, resource, sub), (d, o)) in &self.rows {
            let name = if sub.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{sub}")
            };
            let note = if verb == "PUT" && resource == "leases" {
                "  (kube-apiserver's own identity Lease; the operator's RBAC has no update)"
            } else {
                ""
            };
            println!(
                "      {verb:<6} {name:<28} {d:>8.0} - {o:>4.0} = {:>8.0}  {:>8.3}{note}",
                d - o,
                (d - o) / per.max(1.0)
            );
        }
    }
}

/// One JSON request through a kube client.
async fn send_json(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&Value>,
) -> Result<Value, kube::Error> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(
            body.map(|b| serde_json::to_vec(b).expect("JSON"))
                .unwrap_or_default(),
        )
        .expect("request");
    client.request::<Value>(request).await
}

/// Every object of a collection, paged (500 a page); the number of pages (LIST requests) too.
async fn list_all(client: &kube::Client, path: &str) -> Result<(Vec<Value>, u64), kube::Error> {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let mut uri = format!("{path}?limit=500");
        if !token.is_empty() {
            uri.push_str(&format!("&continue={token}"));
        }
        let mut list = send_json(client, "GET", &uri, "application/json", None).await?;
        pages += 1;
        if let Some(Value::Array(page)) = list.get_mut("items").map(Value::take) {
            items.extend(page);
        }
        token = list["metadata"]["continue"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if token.is_empty() {
            return Ok((items, pages));
        }
    }
}

/// MachineMigrations by `status.step`, e.g. `Done=812 InstallAma=40`.
fn histogram<'a>(steps: impl Iterator<Item = &'a str>) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for s in steps {
        *by.entry(s).or_default() += 1;
    }
    if by.is_empty() {
        return "(none yet)".into();
    }
    by.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn step_of(m: &Value) -> &str {
    m["status"]["step"].as_str().unwrap_or("-")
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        let sim_url = args.get(i + 1).cloned().unwrap_or_default();
        operator_child(&sim_url);
        return;
    }
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run then (the
    // figures need `cargo bench`, 10,000 machines; against the real API server the engine run
    // takes hours, hence its 4 h limit).
    let bench = args.iter().any(|a| a == "--bench");
    let mut n: usize = if bench { 10_000 } else { 60 };
    let mut limit = Duration::from_secs(if bench { 4 * 3600 } else { 120 });
    if !bench {
        println!(
            "smoke run under cargo test ({n} machines); `cargo bench --bench operator_rss` prints the figures"
        );
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--limit" {
            if let Some(v) = it.next().and_then(|v| v.parse().ok()) {
                limit = Duration::from_secs(v);
            }
        } else if let Ok(v) = a.parse() {
            n = v;
        }
    }
    if let Err(control_plane::Unavailable(why)) = control_plane::binaries() {
        if std::env::var_os("CI").is_some() {
            panic!("CI must measure against the real API server, but: {why}");
        }
        println!("operator_rss: skipped, no real API server: {why}");
        return;
    }
    let env = child_env(&args);
    if !args.iter().any(|a| a == "--engine-only") {
        paused(n, &env);
    }
    if !args.iter().any(|a| a == "--paused-only") {
        engine(n, limit, &env);
    }
}

/// A control plane of this measurement's own, with the plans' and the Lease's namespaces, or
/// `None` (the reason printed) without its binaries.
fn start_control_plane() -> Option<(ControlPlane, control_plane::Cluster)> {
    let t = Instant::now();
    let cp = control_plane::private()?;
    let fleet = cp.cluster(NS);
    cp.cluster(LEASE_NS);
    println!(
        "  control plane up in {:.1} s: kube-apiserver {} (etcd, kube-controller-manager: GC and namespace controllers)",
        t.elapsed().as_secs_f64(),
        cp.version
    );
    Some((cp, fleet))
}

/// A kubeconfig file for the operator's user (the chart's RBAC) in `dir`.
fn operator_kubeconfig(cp: &ControlPlane, dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("temp dir");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, cp.kubeconfig(NS, control_plane::OPERATOR_TOKEN)).expect("kubeconfig");
    path
}

fn paused(n: usize, env: &[(String, String)]) {
    let Some((cp, fleet)) = start_control_plane() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml"))
        .expect("examples/plan.yaml");
    let plan = ama_migrator::api::load::load_plan(&text).expect("the example plan loads");
    let mut plan = serde_json::to_value(&plan).expect("plan as JSON");
    plan["metadata"] = json!({"name": "contoso", "namespace": NS});
    plan["spec"]["paused"] = json!(true);
    if let Some(o) = plan.as_object_mut() {
        o.remove("status");
    }

    let t = Instant::now();
    let loaded: Result<(), String> = rt.block_on(async {
        let admin = fleet.admin_client().await;
        let plan = send_json(&admin, "POST", PLANS, "application/json", Some(&plan))
            .await
            .map_err(|e| format!("creating the plan: {e}"))?;
        let uid = plan["metadata"]["uid"]
            .as_str()
            .unwrap_or("uid")
            .to_string();
        futures::stream::iter(0..n)
            .map(|i| {
                let (object, status) = machine(i, &uid);
                let admin = admin.clone();
                async move {
                    send_json(&admin, "POST", MACHINES, "application/json", Some(&object))
                        .await
                        .map_err(|e| format!("creating vm-{i:05}: {e}"))?;
                    send_json(
                        &admin,
                        "PATCH",
                        &format!("{MACHINES}/vm-{i:05}/status"),
                        "application/merge-patch+json",
                        Some(&json!({ "status": status })),
                    )
                    .await
                    .map_err(|e| format!("writing the status of vm-{i:05}: {e}"))?;
                    Ok::<(), String>(())
                }
            })
            .buffer_unordered(32)
            .try_collect::<()>()
            .await
    });
    if let Err(e) = loaded {
        eprintln!("operator_rss: {e}");
        std::process::exit(1);
    }
    let loaded = t.elapsed();

    let dir = std::env::temp_dir().join(format!("ama-migrator-rss-{}", std::process::id()));
    let kubeconfig = operator_kubeconfig(&cp, &dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    // From here until the figures are read this bench sends nothing to the API server (it polls
    // the operator's /metrics): the API server's counts are the operator's and its own.
    let before = ApiCounters::scrape(&cp);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("AMA_MIGRATOR_METRICS_ADDR", &addr)
        .env("AMA_MIGRATOR_LEASE_NAME", "ama-migrator")
        .env("AMA_MIGRATOR_LEASE_NAMESPACE", LEASE_NS)
        .env("POD_NAME", "bench")
        .env("AZURE_CREDENTIAL_KIND", "none")
        .env("AMA_MIGRATOR_ARM_ENDPOINT", "http://127.0.0.1:9/")
        .env("AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT", "http://127.0.0.1:9/")
        .env_remove("AMA_MIGRATOR_WATCH_NAMESPACES")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ama-migrator run");
    let pid = child.id();
    let start = Instant::now();
    let limit = Duration::from_secs(600);
    let mut ready_after = None;
    let mut reconciled = 0;
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("ama-migrator run exited early: {status}");
            std::process::exit(1);
        }
        if ready_after.is_none() && http_get(&addr, "/readyz").is_some_and(|(c, _)| c == 200) {
            ready_after = Some(start.elapsed());
        }
        if ready_after.is_some() {
            reconciled = http_get(&addr, "/metrics")
                .map(|(_, body)| reconciled_machines(&body))
                .unwrap_or(0);
            if reconciled >= n as u64 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let settled = start.elapsed();
    // Let the reconcile queue drain and allocations settle before reading the peak.
    std::thread::sleep(Duration::from_secs(2));
    let hwm = vm_hwm_kib(pid);
    let after = ApiCounters::scrape(&cp);
    let control_plane = control_plane_rss();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "operator_rss: {n} MachineMigrations (+1 paused plan) on a real kube-apiserver {} (the operator with the chart's RBAC)",
        cp.version
    );
    println!(
        "  load into the API server: {:.1} s ({:.0} creates + status writes /s, 32 concurrent)",
        loaded.as_secs_f64(),
        n as f64 / loaded.as_secs_f64().max(0.001)
    );
    match ready_after {
        Some(d) => println!(
            "  /readyz (leader, caches synced): {:.1} s",
            d.as_secs_f64()
        ),
        None => println!("  /readyz never became ready within {limit:?}"),
    }
    println!(
        "  machines reconciled:       {reconciled} after {:.1} s",
        settled.as_secs_f64()
    );
    println!(
        "  scope: leader election + both controllers + reflector caches + one reconcile per object; the paused plan runs no engine (no Azure calls)"
    );
    PhaseRequests::new(&before, &after, &BTreeMap::new()).print(n as f64, "machine");
    println!(
        "  (measured from the operator's start to {:.1} s, the bench idle towards the API server; no machine changes step while paused)",
        (settled + Duration::from_secs(2)).as_secs_f64()
    );
    println!("  control plane, not counted: {control_plane}");
    match hwm {
        Some(kib) => {
            let mb = kib as f64 / 1024.0;
            println!(
                "  peak RSS (VmHWM) of the operator: {mb:.1} MiB — target < 200 MB: {}",
                if mb * 1.048_576 < 200.0 {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        None => println!("  peak RSS unavailable (no /proc/{pid}/status)"),
    }
    drop(cp);
}

/// The simulator's ARM quotas, raised tenfold (per subscription), and the same shapes for the
/// operator's client budget so it does not throttle itself below them.
fn quotas() -> ThrottleConfig {
    let d = ThrottleConfig::default();
    let x = |b: BucketConfig| BucketConfig {
        size: b.size * 10.0,
        refill_per_sec: b.refill_per_sec * 10.0,
    };
    ThrottleConfig {
        reads: x(d.reads),
        writes: x(d.writes),
        deletes: x(d.deletes),
        compute_update: x(d.compute_update),
    }
}

/// The simulator's clock as the child sees it: read once, then advanced at the same scale.
struct ScaledClock {
    anchor: Timestamp,
    since: Instant,
    scale: f64,
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let ms = (self.since.elapsed().as_secs_f64() * self.scale * 1000.0) as i64;
        self.anchor
            .checked_add(SignedDuration::from_millis(ms))
            .unwrap_or(self.anchor)
    }
}

/// The child: the operator in-process (leader election, controllers, engines) against the API
/// server (KUBECONFIG: the operator's user) and the simulator at `sim_url`, until killed.
fn operator_child(sim_url: &str) {
    // The runtime of `ama-migrator run`: AMA_MIGRATOR_WORKER_THREADS workers (default 2), at most
    // 8 blocking threads.
    let workers = std::env::var("AMA_MIGRATOR_WORKER_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .expect("runtime");
    let result: Result<(), String> = rt.block_on(async {
        let base: url::Url = sim_url.parse().map_err(|e| format!("{sim_url}: {e}"))?;
        let clock: Value = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?
            .get(base.join("_sim/clock").map_err(|e| e.to_string())?)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let clock = ScaledClock {
            anchor: clock["now"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("no simulator time")?,
            since: Instant::now(),
            scale: clock["timeScale"].as_f64().unwrap_or(1.0),
        };
        let q = quotas();
        let shape = |b: BucketConfig| BucketShape::new(b.size, b.refill_per_sec);
        let mut config = ClientConfig::new(Endpoints::single(base), CredentialConfig::None);
        config.budget.reads = shape(q.reads);
        config.budget.writes = shape(q.writes);
        config.budget.deletes = shape(q.deletes);
        config.budget.compute_update_vm = shape(q.compute_update);
        config.lro.default_poll_interval = Duration::from_millis(200);
        let arm = ArmClient::new(config).map_err(|e| e.to_string())?;
        // The client `run` builds (its User-Agent and connection settings).
        let kube_config = kube::Config::infer().await.map_err(|e| e.to_string())?;
        let client = ama_migrator::operator::client(kube_config).map_err(|e| e.to_string())?;
        let options = EngineOptions {
            tick: Duration::from_millis(200),
            verify_interval: Duration::from_secs(180),
            poll_interval: Duration::from_secs(30),
            stall_after: Duration::from_secs(45 * 60),
            ..EngineOptions::default()
        };
        let ctx = Context::new(
            client.clone(),
            Arc::new(Metrics::new()),
            arm,
            Arc::new(clock),
            options,
            Some("bench".into()),
        );
        let config = LeaderConfig {
            lease_name: "ama-migrator".into(),
            namespace: LEASE_NS.into(),
            identity: "bench".into(),
            timing: LeaseTiming {
                duration: 15,
                grace: 5,
            },
            stop_grace: Duration::from_secs(5),
        };
        leader::lead(
            client,
            &config,
            ctx,
            Arc::new(Health::default()),
            std::future::pending(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        eprintln!("operator child: {e}");
        std::process::exit(2);
    }
}

/// What this bench's watch of the MachineMigrations saw.
#[derive(Default)]
struct Watched {
    /// Each machine's last step seen.
    step: HashMap<String, String>,
    /// Steps entered, summed over machines: each change of a machine's `status.step` seen,
    /// the first step written counted.
    steps_entered: u64,
    /// Requests the watch sent: LIST pages and WATCHes.
    lists: u64,
    watches: u64,
    /// Times the watch had to list again (possibly missing intermediate steps).
    relists: u64,
    error: Option<String>,
}

impl Watched {
    fn observe(&mut self, m: &Value) {
        let Some(name) = m["metadata"]["name"].as_str() else {
            return;
        };
        let Some(step) = m["status"]["step"].as_str() else {
            return;
        };
        match self.step.get_mut(name) {
            Some(last) if last == step => {}
            Some(last) => {
                *last = step.to_string();
                self.steps_entered += 1;
            }
            None => {
                self.step.insert(name.to_string(), step.to_string());
                self.steps_entered += 1;
            }
        }
    }
}

/// Follows every MachineMigration of the namespace: a paged LIST, then one WATCH from its
/// resourceVersion (listing again only if the watch ends).
async fn watch_machines(client: kube::Client, watched: Arc<Mutex<Watched>>) {
    loop {
        let listed = async {
            let mut rv;
            let mut token = String::new();
            let mut items = Vec::new();
            loop {
                let mut uri = format!("{MACHINES}?limit=500");
                if !token.is_empty() {
                    uri.push_str(&format!("&continue={token}"));
                }
                let list = send_json(&client, "GET", &uri, "application/json", None).await?;
                watched.lock().unwrap().lists += 1;
                items.extend(list["items"].as_array().cloned().unwrap_or_default());
                token = list["metadata"]["continue"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                rv = list["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if token.is_empty() {
                    break;
                }
            }
            Ok::<_, kube::Error>((items, rv))
        }
        .await;
        let (items, rv) = match listed {
            Ok(l) => l,
            Err(e) => {
                watched.lock().unwrap().error = Some(format!("LIST: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        {
            let mut w = watched.lock().unwrap();
            for m in &items {
                w.observe(m);
            }
        }
        let mut rv = rv;
        loop {
            let request = http::Request::builder()
                .method("GET")
                .uri(format!(
                    "{MACHINES}?watch=true&allowWatchBookmarks=true&timeoutSeconds=7200&resourceVersion={rv}"
                ))
                .body(Vec::new())
                .expect("request");
            watched.lock().unwrap().watches += 1;
            let stream = match client.request_events::<Value>(request).await {
                Ok(s) => s,
                Err(e) => {
                    watched.lock().unwrap().error = Some(format!("WATCH: {e}"));
                    break;
                }
            };
            let mut stream = std::pin::pin!(stream);
            let mut gone = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(kube::core::WatchEvent::Added(m) | kube::core::WatchEvent::Modified(m)) => {
                        if let Some(v) = m["metadata"]["resourceVersion"].as_str() {
                            rv = v.to_string();
                        }
                        watched.lock().unwrap().observe(&m);
                    }
                    Ok(kube::core::WatchEvent::Deleted(_)) => {}
                    Ok(kube::core::WatchEvent::Bookmark(b)) => {
                        rv = b.metadata.resource_version;
                    }
                    Ok(kube::core::WatchEvent::Error(e)) => {
                        watched.lock().unwrap().error = Some(format!("watch: {e:?}"));
                        gone = true;
                        break;
                    }
                    Err(e) => {
                        watched.lock().unwrap().error = Some(format!("watch: {e}"));
                        break;
                    }
                }
            }
            if gone {
                break;
            }
        }
        watched.lock().unwrap().relists += 1;
    }
}

fn engine(n: usize, limit: Duration, env: &[(String, String)]) {
    let Some((cp, fleet)) = start_control_plane() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t = Instant::now();
        let simulation = ama_migrator::engine::simulate::Simulation::start(SimulateOptions {
            scenario: Scenario {
                machines: n,
                time_scale: 600.0,
                throttle: quotas(),
                ..Scenario::default()
            },
            ..SimulateOptions::default()
        })
        .await
        .expect("simulator");
        let admin = fleet.admin_client().await;
        let mut plan = serde_json::to_value(&simulation.plan).expect("plan as JSON");
        plan["metadata"] = json!({"name": "fleet", "namespace": NS,
            "annotations": {"amamigrator.io/approve-wave": "canary, medium"}});
        if let Some(o) = plan.as_object_mut() {
        o.remove("status");
    }
        if let Err(e) = send_json(&admin, "POST", PLANS, "application/json", Some(&plan)).await {
            eprintln!("operator_rss: creating the plan: {e}");
            std::process::exit(1);
        }
        let setup = t.elapsed();

        // This bench's own requests to the API server in the measured phase: GETs of the plan,
        // and its machine watch's LISTs and WATCHes (counted from the watch state).
        let watched = Arc::new(Mutex::new(Watched::default()));
        let watch = tokio::spawn(watch_machines(admin.clone(), watched.clone()));
        while watched.lock().unwrap().watches == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let lists_before = watched.lock().unwrap().lists;
        let before = ApiCounters::scrape(&cp);
        let mut plan_gets = 0u64;
        let mut polls = 0u64;

        let dir = std::env::temp_dir().join(format!("ama-migrator-rss-engine-{}", std::process::id()));
        let kubeconfig = operator_kubeconfig(&cp, &dir);
        // AMA_MIGRATOR_RSS_WRAPPER=heaptrack profiles the child's heap (the RSS is then the
        // wrapper's pid's: profile and measure in separate runs).
        let exe = std::env::current_exe().expect("this bench");
        let mut command = match std::env::var("AMA_MIGRATOR_RSS_WRAPPER") {
            Ok(w) if !w.is_empty() => {
                let mut c = std::process::Command::new(w);
                c.arg(exe);
                c
            }
            _ => std::process::Command::new(exe),
        };
        let mut child = command
            .arg(CHILD_FLAG)
            .arg(simulation.sim.base_url())
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "error")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the operator child");
        let pid = child.id();
        let start = Instant::now();
        let mut peak_rss = 0u64;
        let mut last_print = Instant::now();
        let mut outcome = "time limit reached";
        let mut summary = Value::Null;
        let mut phase = Value::Null;
        let mut conditions = Value::Null;
        let plan_path = format!("{PLANS}/fleet");
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("the operator child exited early: {status}");
                outcome = "operator exited";
                break;
            }
            peak_rss = peak_rss.max(vm_rss_kib(pid).unwrap_or(0));
            // The plan every 2 s (each GET is one more request the API server serves).
            polls += 1;
            if polls.is_multiple_of(2) {
                plan_gets += 1;
                if let Ok(p) =
                    send_json(&admin, "GET", &plan_path, "application/json", None).await
                {
                    summary = p["status"]["summary"].clone();
                    phase = p["status"]["phase"].clone();
                    conditions = p["status"]["conditions"].clone();
                }
            }
            if phase == "Completed" {
                outcome = "plan Completed";
                break;
            }
            if last_print.elapsed() > Duration::from_secs(30) {
                last_print = Instant::now();
                let (by_step, entered, error) = {
                    let w = watched.lock().unwrap();
                    (
                        histogram(w.step.values().map(String::as_str)),
                        w.steps_entered,
                        w.error.clone(),
                    )
                };
                eprintln!(
                    "  [{:>4.0} s] phase {phase}; machines by step {by_step} ({entered} steps entered{}); operator RSS {:.1} MiB (peak {:.1}); {}",
                    start.elapsed().as_secs_f64(),
                    error.map(|e| format!("; watch: {e}")).unwrap_or_default(),
                    vm_rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
                    vm_hwm_kib(pid).unwrap_or(0) as f64 / 1024.0,
                    control_plane_rss(),
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let elapsed = start.elapsed();
        let hwm = vm_hwm_kib(pid);
        // End the watch (the API server counts a WATCH when it ends), then read the counters
        // with the operator still running.
        watch.abort();
        let _ = watch.await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = ApiCounters::scrape(&cp);
        let control_plane = control_plane_rss();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let w = std::mem::take(&mut *watched.lock().unwrap());
        let mut own: BTreeMap<RequestKey, u64> = BTreeMap::new();
        own.insert(key("GET", "migrationplans", ""), plan_gets);
        own.insert(key("LIST", "machinemigrations", ""), w.lists - lists_before);
        own.insert(key("WATCH", "machinemigrations", ""), w.watches);
        let requests = PhaseRequests::new(&before, &after, &own);

        let (machines, final_steps, reached) = match list_all(&admin, MACHINES).await {
            Ok((items, _)) => {
                let order = |s: &str| -> u64 {
                    match s {
                        "Pending" => 1,
                        "CheckEligibility" => 2,
                        "EnsureIdentity" => 3,
                        "InstallAma" => 4,
                        "AssociateDcrs" => 5,
                        "Verify" => 6,
                        "Cutover" => 7,
                        "WaitForFlip" => 8,
                        "Done" => 9,
                        _ => 0,
                    }
                };
                let reached: u64 = items.iter().map(|m| order(step_of(m))).sum();
                (items.len(), histogram(items.iter().map(step_of)), reached)
            }
            Err(e) => (0, format!("(LIST failed: {e})"), 0),
        };
        let journal: usize = match list_all(&admin, CONFIGMAPS).await {
            Ok((items, _)) => items
                .iter()
                .map(|c| c["data"].to_string().len())
                .max()
                .unwrap_or(0),
            Err(_) => 0,
        };
        println!(
            "operator_rss (engine): a fleet of {n} simulated machines (time scale 600, ARM quotas x10), plan NOT paused, on a real kube-apiserver {} (the operator with the chart's RBAC)",
            cp.version
        );
        println!(
            "  measured process: the operator child (pid {pid}: leader election, controllers, engine) alone; the simulator runs in this bench process (RSS {:.0} MiB, not counted)",
            vm_rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0
        );
        println!("  control plane, not counted: {control_plane}");
        println!("  simulator + plan set up in {:.1} s", setup.as_secs_f64());
        println!(
            "  end after {:.0} s: {outcome}; phase {phase}; summary {summary}; {machines} MachineMigrations; by step: {final_steps}",
            elapsed.as_secs_f64()
        );
        if phase != "Completed" {
            println!("  the plan's conditions: {conditions}");
        }
        println!(
            "  largest engine ConfigMap data: {:.1} KiB (the API server limit is 1 MiB)",
            journal as f64 / 1024.0
        );
        println!(
            "  machine-steps: {} steps entered, summed over machines (each change of status.step this bench's watch saw, the first step written counted; {} re-lists{}); machines x step reached (Pending=1 .. Done=9): {reached}",
            w.steps_entered,
            w.relists,
            w.error.map(|e| format!(", last watch error: {e}")).unwrap_or_default()
        );
        requests.print(w.steps_entered as f64, "machine-step");
        println!(
            "  (measured from the operator's start to the plan's end; this bench's own requests counted and subtracted: {plan_gets} GETs of the plan, {} LIST pages and {} WATCH of the machines)",
            w.lists - lists_before,
            w.watches
        );
        let peak = hwm.unwrap_or(peak_rss).max(peak_rss);
        let mb = peak as f64 / 1024.0;
        println!(
            "  peak RSS (VmHWM) of the operator with its engine: {mb:.1} MiB — target < 200 MB: {}",
            if mb * 1.048_576 < 200.0 { "met" } else { "NOT met" }
        );
        simulation.shutdown().await;
    });
    drop(cp);
}
