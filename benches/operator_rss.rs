//! Peak RSS of the operator process (a child process) with 10,000 MachineMigration objects
//! served by the in-process fake API server. Target: < 200 MB. Two measurements:
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
//! In both, the measured process holds the operator only: the fake API server (every object and
//! its watch history) and the simulator (machines, ledger) run in this bench process, whose
//! memory is not the operator's.
//!
//! The operator child runs with the image's environment (the Dockerfile's `ENV` lines, e.g.
//! `MALLOC_ARENA_MAX`); `--glibc-default` measures it without.
//!
//! `cargo bench --bench operator_rss [-- [N] [--paused-only|--engine-only] [--limit SECONDS]
//! [--glibc-default]]`

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ama_migrator::azure::{ArmClient, BucketShape, ClientConfig, CredentialConfig, Endpoints};
use ama_migrator::engine::{Clock, EngineOptions, SimulateOptions};
use ama_migrator::operator::controller::Context;
use ama_migrator::operator::fake::FakeApiServer;
use ama_migrator::operator::leader::{self, Health, LeaderConfig, LeaseTiming};
use ama_migrator::operator::metrics::Metrics;
use ama_migrator::sim::{BucketConfig, Scenario, ThrottleConfig};
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        let sim_url = args.get(i + 1).cloned().unwrap_or_default();
        operator_child(&sim_url);
        return;
    }
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run then (the
    // figures need `cargo bench`, 10,000 machines, several minutes).
    let bench = args.iter().any(|a| a == "--bench");
    let mut n: usize = if bench { 10_000 } else { 300 };
    let mut limit = Duration::from_secs(if bench { 420 } else { 120 });
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
    let env = child_env(&args);
    if !args.iter().any(|a| a == "--engine-only") {
        paused(n, &env);
    }
    if !args.iter().any(|a| a == "--paused-only") {
        engine(n, limit, &env);
    }
}

fn paused(n: usize, env: &[(String, String)]) {
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
        .envs(env.iter().map(|(k, v)| (k, v)))
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

/// The child: the operator in-process (leader election, controllers, engines) against the fake
/// (KUBECONFIG) and the simulator at `sim_url`, until killed.
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
        let client = kube::Client::try_default()
            .await
            .map_err(|e| e.to_string())?;
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
            namespace: NS.into(),
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

/// MachineMigrations by `status.step`, e.g. `Done=812 InstallAma=40`.
fn steps(fake: &FakeApiServer) -> String {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for m in fake.objects("/apis/amamigrator.io/v1alpha1/machinemigrations") {
        let step = m["status"]["step"].as_str().unwrap_or("-").to_string();
        *by.entry(step).or_default() += 1;
    }
    if by.is_empty() {
        return "(none yet)".into();
    }
    by.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn engine(n: usize, limit: Duration, env: &[(String, String)]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
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
        let fake = FakeApiServer::start().await.expect("fake API server");
        fake.set_record_requests(false);
        let mut plan = serde_json::to_value(&simulation.plan).expect("plan as JSON");
        plan["metadata"] = json!({"name": "fleet", "namespace": NS,
            "annotations": {"amamigrator.io/approve-wave": "canary, medium"}});
        fake.create(PLANS, NS, plan).expect("create the plan");
        let setup = t.elapsed();

        let dir = std::env::temp_dir().join(format!("ama-migrator-rss-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig(NS)).expect("kubeconfig");
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
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("the operator child exited early: {status}");
                outcome = "operator exited";
                break;
            }
            peak_rss = peak_rss.max(vm_rss_kib(pid).unwrap_or(0));
            if let Some(p) = fake.object(
                "/apis/amamigrator.io/v1alpha1/migrationplans",
                NS,
                "fleet",
            ) {
                summary = p["status"]["summary"].clone();
                phase = p["status"]["phase"].clone();
            }
            if phase == "Completed" {
                outcome = "plan Completed";
                break;
            }
            if last_print.elapsed() > Duration::from_secs(30) {
                last_print = Instant::now();
                eprintln!(
                    "  [{:>4.0} s] phase {phase}; machines by step {}; operator RSS {:.1} MiB (peak {:.1})",
                    start.elapsed().as_secs_f64(),
                    steps(&fake),
                    vm_rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
                    vm_hwm_kib(pid).unwrap_or(0) as f64 / 1024.0,
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let elapsed = start.elapsed();
        let hwm = vm_hwm_kib(pid);
        let final_steps = steps(&fake);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let machines = fake
            .objects("/apis/amamigrator.io/v1alpha1/machinemigrations")
            .len();
        let journal: usize = fake
            .objects("/api/v1/configmaps")
            .iter()
            .map(|c| c["data"].to_string().len())
            .max()
            .unwrap_or(0);
        println!(
            "operator_rss (engine): a fleet of {n} simulated machines (time scale 600, ARM quotas x10), plan NOT paused"
        );
        println!(
            "  measured process: the operator child (pid {pid}: leader election, controllers, engine) alone; the simulator and the fake API server (every object, watch history) run in this bench process (RSS {:.0} MiB, not counted)",
            vm_rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0
        );
        println!("  simulator + fake set up in {:.1} s", setup.as_secs_f64());
        println!(
            "  end after {:.0} s: {outcome}; phase {phase}; summary {summary}; {machines} MachineMigrations; by step: {final_steps}",
            elapsed.as_secs_f64()
        );
        println!(
            "  largest engine ConfigMap data: {:.1} KiB (the API server limit is 1 MiB)",
            journal as f64 / 1024.0
        );
        let peak = hwm.unwrap_or(peak_rss).max(peak_rss);
        let mb = peak as f64 / 1024.0;
        println!(
            "  peak RSS (VmHWM) of the operator with its engine: {mb:.1} MiB — target < 200 MB: {}",
            if mb * 1.048_576 < 200.0 { "met" } else { "NOT met" }
        );
        simulation.shutdown().await;
    });
}
