//! The Azure simulator (design.md §7): an axum server on a loopback address speaking the real ARM,
//! Resource Graph and Log Analytics query paths, api-versions, status codes, headers and bodies, over a
//! seeded world with an ingestion ledger.
//!
//! # In-process API
//! ```no_run
//! # async fn demo() -> Result<(), ama_migrator::sim::SimError> {
//! use ama_migrator::sim::{Scenario, Simulator, Fault};
//! let sim = Simulator::start(Scenario { machines: 50, ..Scenario::default() }, "127.0.0.1:0").await?;
//! let base = sim.base_url();                 // point the ARM, Resource Graph and LA endpoints here
//! let ws = sim.workspace_resource_id();      // the production (Sentinel) workspace
//! let cid = sim.workspace_customer_id();     // its customer id, for /v1/workspaces/{cid}/query
//! sim.inject(Fault::ServerErrors { count: 2, status: 503 })?;
//! sim.advance(std::time::Duration::from_secs(600));   // ten simulated minutes
//! let ledger = sim.ledger();                 // duplicate / gap minutes
//! let pairs = sim.ledger_pairs(None, None);  // per (machine, data source), with current senders
//! let log = sim.request_log();               // ARM/LA requests with bodies and statuses (bounded)
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # HTTP surface
//! * ARM (`/subscriptions/...`, api-versions Compute 2024-11-01, HybridCompute 2024-07-10, Insights
//!   2023-03-11, OperationalInsights 2025-02-01): VM GET/PATCH (identity, LRO); VM and Arc extensions
//!   GET/list/PUT/DELETE (LRO via `Azure-AsyncOperation`, `Location`, `Retry-After`); Arc machine GET;
//!   DCR GET/PUT/DELETE and `/associations`; DCRA PUT/GET/DELETE/list under a machine id; workspace GET and
//!   dataSources list (`$filter=kind='X'` required)/GET/PUT/DELETE; LRO status
//!   `/subscriptions/{s}/providers/{ns}/locations/{loc}/operations/{id}` and `/operationResults/{id}`.
//! * Resource Graph `POST /providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01` for
//!   `crate::inventory::INVENTORY_QUERY` (paging with `options.$top` / `options.$skipToken`).
//! * Log Analytics `POST /v1/workspaces/{customerId}/query` for the KQL subset of contracts §2.
//! * Control (`/_sim/`): `GET info`, `GET ledger`, `GET ledger/pairs?machine=&dataSource=`,
//!   `POST ledger/wanted {machine,dataSource,wanted}`, `GET|DELETE requests` (`{value, dropped}`, or
//!   `?format=jsonl`), `GET|POST|DELETE faults` (body: a `Fault`), `GET clock`,
//!   `POST clock/advance {seconds}`, `GET snapshot`.
//!
//! Time: simulated clock = scenario start + real elapsed × `timeScale` + manual advances. LRO latencies
//! and ledger minutes are simulated; `Retry-After` is in real seconds (simulated / scale, at least 1).
//! Throttling buckets refill in real time.
//!
//! Junk is answered, not fatal: a request body over `http::MAX_REQUEST_BODY_BYTES` (4 MiB) is 413
//! `RequestEntityTooLarge`; a KQL query nesting parentheses deeper than `kql::MAX_NESTING_DEPTH` is 400
//! `BadArgumentError`; the request log is a bounded ring (`request_log`, limits in
//! `Scenario::request_log`).

pub mod clock;
pub mod control;
pub mod delivery;
pub mod faults;
pub mod http;
pub mod kql;
pub mod ledger;
pub mod logs;
pub mod request_log;
pub mod scenario;
pub mod throttle;
pub mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::DataSourceType;
use crate::inventory::InventoryMachine;

pub use clock::SimClock;
pub use control::{LedgerReport, PairDetail};
pub use faults::Fault;
pub use ledger::{Agent, PairCounts};
pub use request_log::{RequestLogLimits, RequestRecord};
pub use scenario::{Fleet, Scenario, ScenarioError};
pub use throttle::{BucketConfig, ThrottleConfig};

use http::{Core, Shared};
use request_log::RequestLog;
use throttle::Throttle;
use world::World;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "the simulator listens only on loopback addresses; {0} is not loopback (use 127.0.0.1:PORT or [::1]:PORT)"
    )]
    NotLoopback(SocketAddr),
    #[error("invalid listen address {addr:?}: {message} (expected e.g. 127.0.0.1:8080)")]
    BadAddress { addr: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{0}")]
    Control(String),
}

pub struct Simulator;

impl Simulator {
    /// Build the world from `scenario` and serve it on `listen` (loopback only; port 0 picks one).
    pub async fn start(scenario: Scenario, listen: &str) -> Result<SimHandle, SimError> {
        let addr: SocketAddr =
            listen
                .parse()
                .map_err(|e: std::net::AddrParseError| SimError::BadAddress {
                    addr: listen.to_string(),
                    message: e.to_string(),
                })?;
        if !addr.ip().is_loopback() {
            return Err(SimError::NotLoopback(addr));
        }
        scenario.validate()?;
        let start = clock::parse_iso(&scenario.start).unwrap_or(0);
        let clock = Arc::new(SimClock::new(start, scenario.time_scale));
        let fleet = scenario.generate();
        let world = World::new(&scenario, fleet, start);
        let mut core = Core {
            world,
            throttle: Throttle::new(scenario.throttle.clone()),
            log: RequestLog::new(scenario.request_log.clone()),
        };
        for f in scenario.faults.clone() {
            control::apply_fault(&mut core, start, f).map_err(|e| ScenarioError::Invalid {
                field: "faults",
                problem: e,
            })?;
        }
        let shared = Arc::new(Shared {
            clock,
            core: Mutex::new(core),
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let app = Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "simulator server stopped");
            }
        });
        Ok(SimHandle {
            shared,
            addr: local,
            stop: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        })
    }
}

/// A running simulator. Dropping it without `shutdown` leaves the server running until the runtime ends.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl SimHandle {
    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.shared.lock()
    }

    /// Settle the world to the current simulated time and run `f` on it.
    fn with<T>(&self, f: impl FnOnce(&mut Core, clock::SimMillis) -> T) -> T {
        let now = self.shared.clock.now();
        let mut core = self.core();
        core.world.settle(now);
        f(&mut core, now)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:PORT` — the ARM, Resource Graph and Log Analytics endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn workspace_resource_id(&self) -> String {
        self.core().world.fleet.workspace.resource_id()
    }
    pub fn workspace_customer_id(&self) -> String {
        self.core().world.fleet.workspace.customer_id.clone()
    }
    pub fn test_workspace_resource_id(&self) -> String {
        self.core().world.fleet.test_workspace.resource_id()
    }
    pub fn test_workspace_customer_id(&self) -> String {
        self.core().world.fleet.test_workspace.customer_id.clone()
    }
    /// The in-scope subscriptions holding the machines.
    pub fn subscriptions(&self) -> Vec<String> {
        self.core().world.fleet.subscriptions.clone()
    }
    /// The subscription outside the plan's scope whose machines still report to the workspace.
    pub fn outside_subscription(&self) -> String {
        self.core().world.fleet.outside_subscription.clone()
    }
    /// Current simulated time (ISO-8601).
    pub fn now(&self) -> String {
        clock::iso(self.shared.clock.now())
    }
    /// Move simulated time forward.
    pub fn advance(&self, d: Duration) {
        self.shared.clock.advance(d);
        self.with(|_, _| ());
    }
    pub fn ledger(&self) -> LedgerReport {
        self.with(|c, now| control::ledger_report(&c.world, now))
    }
    /// Per (machine, data source) of the production workspace; filter by machine (name or ARM id) and type.
    pub fn ledger_pairs(
        &self,
        machine: Option<&str>,
        ds: Option<DataSourceType>,
    ) -> Vec<PairDetail> {
        self.with(|c, now| control::pair_details(&c.world, now, machine, ds))
    }
    /// Mark a (machine, data source) wanted or not from now on.
    pub fn set_wanted(
        &self,
        machine: &str,
        ds: DataSourceType,
        wanted: bool,
    ) -> Result<(), SimError> {
        self.with(|c, now| {
            let i = c
                .world
                .find_machine(machine)
                .ok_or_else(|| SimError::Control(format!("unknown machine '{machine}'")))?;
            if c.world.ledger.set_wanted(now, i, ds, wanted) {
                Ok(())
            } else {
                Err(SimError::Control(format!(
                    "machine '{machine}' does not produce {ds}"
                )))
            }
        })
    }
    /// The requests recorded so far (at most the scenario's `requestLog` limits; the oldest dropped).
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.core().log.records()
    }
    /// Requests served since start or the last clear, by class (not bounded by the log's limits).
    pub fn request_counts(&self) -> request_log::RequestCounts {
        self.core().log.counts().clone()
    }
    /// Records the request log dropped to stay within its limits, since start or the last clear.
    pub fn request_log_dropped(&self) -> u64 {
        self.core().log.dropped()
    }
    pub fn clear_request_log(&self) {
        self.core().log.clear();
    }
    pub fn inject(&self, fault: Fault) -> Result<(), SimError> {
        self.with(|c, now| control::apply_fault(c, now, fault))
            .map_err(SimError::Control)
    }
    pub fn clear_faults(&self) {
        self.with(control::clear_faults)
    }
    /// Machines, agents, identities, DCRAs and workspace legacy settings as JSON.
    pub fn snapshot(&self) -> Value {
        self.with(|c, now| control::snapshot(&c.world, now))
    }
    /// The fleet as the inventory query returns it (all subscriptions).
    pub fn inventory(&self) -> Vec<InventoryMachine> {
        self.with(|c, _| http::graph_rows(&c.world))
    }
    /// Stop serving and wait for the server task.
    pub async fn shutdown(self) {
        let tx = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}
