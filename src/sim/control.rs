//! Control plane for tests under `/_sim/` (JSON), mirrored by `SimHandle` methods: ledger, request log,
//! faults, clock, world snapshot. Not part of Azure's surface; never throttled or logged.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::DataSourceType;

use super::clock::{SimMillis, iso};
use super::delivery::LegacyConfig;
use super::faults::Fault;
use super::http::{Core, Req, Resp, Shared};
use super::ledger::{Agent, LedgerTotals, PairCounts};
use super::world::{ExtState, World};

/// Ledger pair with the machine spelled out (for trackers and tests).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairDetail {
    pub machine: String,
    pub computer: String,
    /// Lower-case ARM id; empty for on-premises computers.
    pub resource_id: String,
    pub out_of_scope: bool,
    pub data_source: DataSourceType,
    pub wanted: bool,
    pub senders: Vec<Agent>,
    #[serde(flatten)]
    pub counts: PairCounts,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerReport {
    pub now: String,
    pub started: String,
    pub totals: LedgerTotals,
    pub by_data_source: BTreeMap<DataSourceType, PairCounts>,
}

pub fn ledger_report(w: &World, now: SimMillis) -> LedgerReport {
    let (totals, by_data_source) = w.ledger.totals(now);
    LedgerReport {
        now: iso(now),
        started: iso(w.ledger.started()),
        totals,
        by_data_source,
    }
}

pub fn pair_details(
    w: &World,
    now: SimMillis,
    machine: Option<&str>,
    ds: Option<DataSourceType>,
) -> Vec<PairDetail> {
    let idx = machine.and_then(|k| w.find_machine(k));
    if machine.is_some() && idx.is_none() {
        return Vec::new();
    }
    w.ledger
        .pair_reports(now)
        .into_iter()
        .filter(|p| idx.is_none_or(|i| p.machine == i) && ds.is_none_or(|d| p.data_source == d))
        .map(|p| {
            let m = &w.machines[p.machine];
            PairDetail {
                machine: m.name.clone(),
                computer: m.computer().to_string(),
                resource_id: m
                    .arm_id()
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_default(),
                out_of_scope: m.out_of_scope,
                data_source: p.data_source,
                wanted: p.wanted,
                senders: p.senders,
                counts: p.counts,
            }
        })
        .collect()
}

fn find(w: &World, key: &str) -> Result<usize, String> {
    w.find_machine(key)
        .ok_or_else(|| format!("no machine named or with id '{key}'"))
}

/// Switch a fault on at `now`.
pub fn apply_fault(core: &mut Core, now: SimMillis, fault: Fault) -> Result<(), String> {
    let w = &mut core.world;
    match fault {
        Fault::ServerErrors { count, status } => {
            if !(500..=599).contains(&status) {
                return Err(format!(
                    "ServerErrors.status must be a 5xx code, not {status}"
                ));
            }
            w.faults.server_errors = count;
            w.faults.server_error_status = status;
        }
        Fault::ThrottleStorm { seconds } => {
            w.faults.storm_until = Some(now + seconds as SimMillis * 1000)
        }
        Fault::ExtensionFailure {
            machine,
            code,
            probability,
        } => {
            if let Some(m) = &machine {
                find(w, m)?;
            }
            if !(0.0..=1.0).contains(&probability) {
                return Err(format!(
                    "ExtensionFailure.probability must be in 0..=1, not {probability}"
                ));
            }
            w.faults
                .extension_failures
                .push((machine, code, probability));
        }
        Fault::NoHeartbeat { machine } => {
            let i = find(w, &machine)?;
            w.machines[i].no_heartbeat = true;
            w.recompute(now, i);
        }
        Fault::StuckDelete { machine } => {
            let i = find(w, &machine)?;
            w.machines[i].stuck_delete = true;
            for e in w.machines[i].extensions.values_mut() {
                if let ExtState::Deleting { until } = &mut e.state {
                    *until = None;
                }
            }
            for op in w.ops.values_mut().filter(|o| {
                o.machine == i
                    && o.kind == super::world::OpKind::DeleteExtension
                    && o.end.is_none_or(|e| e > now)
            }) {
                op.end = None;
            }
        }
        Fault::Lock { scope } => w.faults.locks.push(scope),
        Fault::PolicyDeny { scope } => w.faults.policies.push(scope),
        Fault::Forbidden { scope } => w.faults.forbidden.push(scope),
        Fault::Deallocate { machine } => {
            let i = find(w, &machine)?;
            w.set_running(now, i, false);
        }
        Fault::Start { machine } => {
            let i = find(w, &machine)?;
            w.set_running(now, i, true);
        }
    }
    Ok(())
}

/// Switch every fault off (machines keep their power state).
pub fn clear_faults(core: &mut Core, now: SimMillis) {
    let w = &mut core.world;
    w.faults = Default::default();
    let delete_ms = w.lro.extension_delete_secs as SimMillis * 1000;
    for i in 0..w.machines.len() {
        let m = &mut w.machines[i];
        let changed = m.no_heartbeat || m.stuck_delete;
        m.no_heartbeat = false;
        m.stuck_delete = false;
        for e in m.extensions.values_mut() {
            if let ExtState::Deleting {
                until: until @ None,
            } = &mut e.state
            {
                *until = Some(now + delete_ms);
            }
        }
        if changed {
            w.recompute(now, i);
        }
    }
    for op in w.ops.values_mut() {
        if op.kind == super::world::OpKind::DeleteExtension && op.end.is_none() {
            op.end = Some(now + delete_ms);
        }
    }
}

pub fn snapshot(w: &World, now: SimMillis) -> Value {
    let workspaces: Vec<Value> = w
        .workspaces
        .iter()
        .map(|ws| {
            json!({
                "id": ws.spec.resource_id(), "customerId": ws.spec.customer_id, "served": ws.served,
                "legacy": legacy_json(&ws.legacy),
                "dataSources": ws.data_sources.values().collect::<Vec<_>>(),
            })
        })
        .collect();
    let machines: Vec<Value> = w
        .machines
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "id": m.arm_id(), "kind": m.kind, "os": m.os, "subscription": m.subscription,
                "resourceGroup": m.resource_group, "location": m.location, "tags": m.tags, "running": m.running,
                "outOfScope": m.out_of_scope, "identity": {"type": m.identity.type_str(), "userAssigned": m.identity.user},
                "identityUsable": m.identity_usable(), "noHeartbeat": m.no_heartbeat,
                "produces": m.produces, "inGuestLegacy": m.in_guest_legacy, "multiHomedTo": m.multi_home_extra,
                "extensions": m.extensions.values().map(|e| json!({"name": e.name, "publisher": e.publisher(), "type": e.ext_type(), "provisioningState": e.provisioning_state(), "workspaceId": e.workspace_id()})).collect::<Vec<_>>(),
                "dcras": m.dcras.values().map(|a| json!({"name": a.name, "dataCollectionRuleId": a.properties.get("dataCollectionRuleId")})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "now": iso(now),
        "tenantId": w.fleet.tenant_id,
        "subscriptions": w.fleet.subscriptions,
        "outsideSubscription": w.fleet.outside_subscription,
        "workspaces": workspaces,
        "dcrs": w.dcrs.values().map(|d| d.resource.clone()).collect::<Vec<_>>(),
        "faults": w.faults,
        "machines": machines,
    })
}

fn legacy_json(c: &LegacyConfig) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

fn bad(msg: impl Into<String>) -> Resp {
    Resp::json(
        400,
        json!({"error": {"code": "BadRequest", "message": msg.into()}}),
    )
}

pub fn handle(shared: &Shared, r: &Req) -> Resp {
    let clock = &shared.clock;
    let path: Vec<&str> = r.low.iter().skip(1).map(String::as_str).collect();
    let mut core = shared.lock();
    let now = clock.now();
    core.world.settle(now);
    match (r.method.as_str(), path.as_slice()) {
        ("GET", ["info"]) => {
            let f = &core.world.fleet;
            Resp::json(
                200,
                json!({
                    "workspaceResourceId": f.workspace.resource_id(), "workspaceCustomerId": f.workspace.customer_id,
                    "testWorkspaceResourceId": f.test_workspace.resource_id(), "testWorkspaceCustomerId": f.test_workspace.customer_id,
                    "subscriptions": f.subscriptions, "outsideSubscription": f.outside_subscription, "tenantId": f.tenant_id,
                    "now": iso(now), "timeScale": clock.scale(),
                }),
            )
        }
        ("GET", ["ledger"]) => Resp::json(
            200,
            serde_json::to_value(ledger_report(&core.world, now)).unwrap_or(Value::Null),
        ),
        ("GET", ["ledger", "pairs"]) => {
            let ds = match r.q("dataSource").map(|d| DataSourceType::parse(d).ok_or(d)) {
                Some(Err(d)) => return bad(format!("unknown dataSource '{d}'")),
                Some(Ok(d)) => Some(d),
                None => None,
            };
            Resp::json(
                200,
                json!({"value": pair_details(&core.world, now, r.q("machine"), ds)}),
            )
        }
        ("POST", ["ledger", "wanted"]) => {
            let Some(body) = &r.body else {
                return bad("body {\"machine\", \"dataSource\", \"wanted\"} required");
            };
            let (Some(m), Some(d), Some(wanted)) = (
                body.get("machine").and_then(Value::as_str),
                body.get("dataSource").and_then(Value::as_str),
                body.get("wanted").and_then(Value::as_bool),
            ) else {
                return bad(
                    "body {\"machine\": string, \"dataSource\": string, \"wanted\": bool} required",
                );
            };
            let Some(ds) = DataSourceType::parse(d) else {
                return bad(format!("unknown dataSource '{d}'"));
            };
            let Some(i) = core.world.find_machine(m) else {
                return bad(format!("unknown machine '{m}'"));
            };
            if core.world.ledger.set_wanted(now, i, ds, wanted) {
                Resp::json(
                    200,
                    json!({"machine": m, "dataSource": d, "wanted": wanted}),
                )
            } else {
                bad(format!("machine '{m}' does not produce {d}"))
            }
        }
        ("GET", ["requests"]) => {
            // Record by record, so the log is never held as values all at once.
            let mut text = String::new();
            if r.q("format") == Some("jsonl") {
                for x in core.log.iter() {
                    text.push_str(&serde_json::to_string(&x).unwrap_or_default());
                    text.push('\n');
                }
                Resp::text(200, "application/x-ndjson", text)
            } else {
                text.push_str("{\"value\":[");
                for (i, x) in core.log.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    text.push_str(&serde_json::to_string(&x).unwrap_or_default());
                }
                text.push_str(&format!("],\"dropped\":{}}}", core.log.dropped()));
                Resp::text(200, "application/json; charset=utf-8", text)
            }
        }
        ("DELETE", ["requests"]) => {
            core.log.clear();
            Resp::empty(204)
        }
        ("GET", ["faults"]) => Resp::json(
            200,
            serde_json::to_value(&core.world.faults).unwrap_or(Value::Null),
        ),
        ("POST", ["faults"]) => {
            let Some(body) = &r.body else {
                return bad("body: a Fault, e.g. {\"kind\":\"ServerErrors\",\"count\":2}");
            };
            match serde_json::from_value::<Fault>(body.clone()) {
                Ok(f) => match apply_fault(&mut core, now, f) {
                    Ok(()) => Resp::json(
                        200,
                        serde_json::to_value(&core.world.faults).unwrap_or(Value::Null),
                    ),
                    Err(e) => bad(e),
                },
                Err(e) => bad(format!("not a Fault: {e}")),
            }
        }
        ("DELETE", ["faults"]) => {
            clear_faults(&mut core, now);
            Resp::empty(204)
        }
        ("GET", ["clock"]) => Resp::json(200, json!({"now": iso(now), "timeScale": clock.scale()})),
        ("POST", ["clock", "advance"]) => {
            let Some(secs) = r
                .body
                .as_ref()
                .and_then(|b| b.get("seconds"))
                .and_then(Value::as_f64)
                .filter(|s| *s >= 0.0 && s.is_finite())
            else {
                return bad("body {\"seconds\": non-negative number} required");
            };
            clock.advance(Duration::from_secs_f64(secs));
            let now = clock.now();
            core.world.settle(now);
            Resp::json(200, json!({"now": iso(now)}))
        }
        ("GET", ["snapshot"]) => Resp::json(200, snapshot(&core.world, now)),
        _ => Resp::json(
            404,
            json!({"error": {"code": "NotFound", "message": format!("no control endpoint {} {}", r.method, r.path)}}),
        ),
    }
}
