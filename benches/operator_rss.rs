//! Peak RSS of the operator process (`ama-migrator run`, a child process) with 10,000
//! MachineMigration objects served by the in-process fake API server. Target: < 200 MB.
//!
//! What runs: leader election, both controllers, their reflector caches holding every object,
//! one reconcile of each of the 10,000 machines and of the plan. The plan is paused, so no engine
//! calls Azure: running the full engine for 10,000 machines is a different measurement (the
//! `plan_scale` and `throughput` benches cover the engine).
//!
//! `cargo bench --bench operator_rss [-- N]`

use std::io::Read;
use std::time::{Duration, Instant};

use ama_migrator::operator::fake::FakeApiServer;
use serde_json::{Value, json};

const NS: &str = "fleet";
const PLANS: &str = "/apis/amamigrator.io/v1alpha1/namespaces/fleet/migrationplans";
const MACHINES: &str = "/apis/amamigrator.io/v1alpha1/namespaces/fleet/machinemigrations";

fn machine(i: usize, plan_uid: &str) -> Value {
    let windows = i % 3 != 0;
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
    json!({
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
        },
        "status": {
            "step": "InstallAma", "agents": "Legacy", "attempts": 0,
            "conditions": [{"type": "Ready", "status": "False", "reason": "InProgress",
                "message": "installing the Azure Monitor Agent", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }
    })
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = rt
        .block_on(FakeApiServer::start())
        .expect("fake API server");
    fake.set_record_requests(false);

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml"))
        .expect("examples/plan.yaml");
    let plan = ama_migrator::api::load::load_plan(&text).expect("the example plan loads");
    let mut plan = serde_json::to_value(&plan).expect("plan as JSON");
    plan["metadata"] = json!({"name": "contoso", "namespace": NS});
    plan["spec"]["paused"] = json!(true);
    let plan = fake.create(PLANS, NS, plan).expect("create the plan");
    let uid = plan["metadata"]["uid"]
        .as_str()
        .unwrap_or("uid")
        .to_string();
    let t = Instant::now();
    for i in 0..n {
        fake.create(MACHINES, NS, machine(i, &uid))
            .expect("create a MachineMigration");
    }
    let loaded = t.elapsed();

    let dir = std::env::temp_dir().join(format!("ama-migrator-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig(NS)).expect("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("AMA_MIGRATOR_METRICS_ADDR", &addr)
        .env("AMA_MIGRATOR_LEASE_NAME", "ama-migrator")
        .env("AMA_MIGRATOR_LEASE_NAMESPACE", NS)
        .env("POD_NAME", "bench")
        .env("AZURE_CREDENTIAL_KIND", "none")
        .env("AMA_MIGRATOR_ARM_ENDPOINT", "http://127.0.0.1:9/")
        .env("AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT", "http://127.0.0.1:9/")
        .env_remove("AMA_MIGRATOR_WATCH_NAMESPACES")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ama-migrator run");
    let pid = child.id();
    let start = Instant::now();
    let limit = Duration::from_secs(300);
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
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "operator_rss: {n} MachineMigrations (+1 paused plan) on the in-process fake API server"
    );
    println!("  load into the fake:        {:.1} s", loaded.as_secs_f64());
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
}
