//! The operator's Prometheus metrics (prometheus-client, one explicit registry): machines by
//! plan and step, ARM requests by class and status (read from the ARM client's counters at
//! scrape time), throttling, engine operation durations, Kubernetes writes, reconcile durations
//! and errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::azure::ArmClient;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MachineLabels {
    pub namespace: String,
    pub plan: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    /// The error's `kind()`: low cardinality by construction.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub resource: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    class: String,
    status: String,
}

/// Reads the ARM clients' own counters at scrape time, so nothing is counted twice: the
/// operator's client and every plan's own (plan credentials), summed.
#[derive(Debug, Default)]
struct ArmCollector {
    client: Mutex<Option<ArmClient>>,
    /// Clients of plans with their own credentials; kept after a credential rotation so the
    /// counters never go down.
    plan_clients: Mutex<Vec<ArmClient>>,
}

impl ArmCollector {
    fn snapshot(&self) -> Option<crate::azure::MetricsSnapshot> {
        let base = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(ArmClient::metrics);
        let plans = self.plan_clients.lock().unwrap_or_else(|e| e.into_inner());
        if base.is_none() && plans.is_empty() {
            return None;
        }
        let mut sum = base.unwrap_or_default();
        for c in plans.iter() {
            let s = c.metrics();
            sum.reads += s.reads;
            sum.writes += s.writes;
            sum.deletes += s.deletes;
            sum.throttled += s.throttled;
            sum.retries += s.retries;
            sum.network_errors += s.network_errors;
            for (k, n) in s.by_status {
                *sum.by_status.entry(k).or_default() += n;
            }
        }
        Some(sum)
    }
}

impl Collector for ArmCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(snapshot) = self.snapshot() else {
            return Ok(());
        };
        let requests = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "ama_migrator_arm_requests",
            "ARM, Resource Graph and Log Analytics responses by class and HTTP status",
            None,
            requests.metric_type(),
        )?;
        for ((class, status), n) in &snapshot.by_status {
            let labels = ArmLabels {
                class: class.clone(),
                status: status.to_string(),
            };
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "ama_migrator_arm_throttled",
                "429 responses from Azure; each is followed by a Retry-After wait",
                snapshot.throttled,
            ),
            (
                "ama_migrator_arm_retries",
                "requests re-sent after a 429, 5xx or network error",
                snapshot.retries,
            ),
            (
                "ama_migrator_arm_network_errors",
                "requests that failed without an HTTP status",
                snapshot.network_errors,
            ),
        ] {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}

/// All metrics of one operator process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub machines: Family<MachineLabels, Gauge>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub operation_duration: Family<OperationLabels, Histogram>,
    pub kube_writes: Family<WriteLabels, Counter>,
    arm: Arc<ArmCollector>,
    /// Last step count per (namespace, plan), so gauges of emptied steps go to zero.
    steps: Mutex<HashMap<(String, String), HashMap<String, i64>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let machines = Family::<MachineLabels, Gauge>::default();
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            });
        let operation_duration = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        });
        let kube_writes = Family::<WriteLabels, Counter>::default();
        let arm = Arc::new(ArmCollector::default());
        registry.register(
            "ama_migrator_machines",
            "MachineMigrations by plan and step",
            machines.clone(),
        );
        registry.register(
            "ama_migrator_reconciles",
            "reconciles by controller",
            reconciles.clone(),
        );
        registry.register(
            "ama_migrator_reconcile_errors",
            "failed reconciles by controller and error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "ama_migrator_reconcile_duration_seconds",
            "reconcile duration by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "ama_migrator_operation_duration_seconds",
            "ARM write operations from journal entry to outcome (long-running operations included), by action and outcome",
            operation_duration.clone(),
        );
        registry.register(
            "ama_migrator_kube_writes",
            "Kubernetes writes by resource and outcome",
            kube_writes.clone(),
        );
        registry.register_collector(Box::new(arm.clone()));
        Self {
            registry,
            machines,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            operation_duration,
            kube_writes,
            arm,
            steps: Mutex::new(HashMap::new()),
        }
    }

    /// Report this client's request counters under `ama_migrator_arm_*`.
    pub fn observe_arm_client(&self, client: ArmClient) {
        *self.arm.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
    }

    /// Also report a plan's own client (built from the plan's credentials).
    pub fn observe_plan_arm_client(&self, client: ArmClient) {
        self.arm
            .plan_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(client);
    }

    /// Set the machines-by-step gauges of one plan (steps missing from `counts` go to zero).
    pub fn set_plan_steps(&self, namespace: &str, plan: &str, counts: HashMap<String, i64>) {
        let mut all = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), plan.to_string());
        let previous = all.remove(&key).unwrap_or_default();
        for step in previous.keys().filter(|s| !counts.contains_key(*s)) {
            self.machines
                .get_or_create(&MachineLabels {
                    namespace: namespace.into(),
                    plan: plan.into(),
                    step: step.clone(),
                })
                .set(0);
        }
        for (step, n) in &counts {
            self.machines
                .get_or_create(&MachineLabels {
                    namespace: namespace.into(),
                    plan: plan.into(),
                    step: step.clone(),
                })
                .set(*n);
        }
        all.insert(key, counts);
    }

    pub fn kube_write(&self, resource: &str, ok: bool) {
        self.kube_writes
            .get_or_create(&WriteLabels {
                resource: resource.into(),
                outcome: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_gauges_drop_to_zero_when_a_step_empties() {
        let m = Metrics::new();
        m.set_plan_steps(
            "ns",
            "p",
            HashMap::from([("InstallAma".to_string(), 3), ("Done".to_string(), 1)]),
        );
        m.set_plan_steps("ns", "p", HashMap::from([("Done".to_string(), 4)]));
        let text = m.encode();
        assert!(
            text.contains(r#"ama_migrator_machines{namespace="ns",plan="p",step="Done"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ama_migrator_machines{namespace="ns",plan="p",step="InstallAma"} 0"#),
            "{text}"
        );
    }
}
