//! The simulated world's mutable state: machines with their extensions, identities and DCR
//! associations; workspaces with their legacy dataSources; DCRs; long-running operations. Every change
//! is applied at a simulated time and re-evaluates the affected machines' streams in the ledger.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::azure::datasource::kinds;
use crate::catalog::{DataSourceType, OsFamily};
use crate::inventory::{AgentKind, MachineKind};

use super::clock::SimMillis;
use super::delivery::{LegacyConfig, dcr_collects};
use super::faults::{FaultState, extension_failure_message};
use super::ledger::{Agent, Ledger, Stream, StreamKey};
use super::scenario::{Fleet, IdentitySpec, LegacyInstall, LroConfig, Scenario, WorkspaceSpec};

/// An ARM error to return: status, code, message, optional details.
#[derive(Clone, Debug, PartialEq)]
pub struct ArmError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ArmError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            404,
            "ResourceNotFound",
            format!("The Resource '{what}' was not found."),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequestContent", message)
    }
    pub fn body(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        json!({ "error": e })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded,
    Failed { code: String, message: String },
    Canceled { code: String, message: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExtState {
    /// `Creating`/`Updating` until `until` (`None`: never completes, e.g. disconnected Arc server).
    Transition {
        verb: &'static str,
        until: Option<SimMillis>,
        outcome: Outcome,
    },
    Done(Outcome),
    /// Being deleted; gone at `until` (`None`: stuck).
    Deleting {
        until: Option<SimMillis>,
    },
}

#[derive(Clone, Debug)]
pub struct Extension {
    pub name: String,
    pub location: String,
    pub tags: Option<Value>,
    /// The resource's `properties` as written (without `protectedSettings`, which is never stored).
    pub properties: Value,
    pub state: ExtState,
    pub status_time: SimMillis,
}

impl Extension {
    pub fn publisher(&self) -> &str {
        self.properties
            .get("publisher")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn ext_type(&self) -> &str {
        self.properties
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn agent(&self) -> Option<AgentKind> {
        AgentKind::of_extension(self.publisher(), self.ext_type())
    }
    pub fn workspace_id(&self) -> Option<&str> {
        self.properties
            .pointer("/settings/workspaceId")
            .and_then(Value::as_str)
    }
    pub fn provisioning_state(&self) -> &'static str {
        match &self.state {
            ExtState::Transition { verb, .. } => verb,
            ExtState::Done(Outcome::Succeeded) => "Succeeded",
            ExtState::Done(Outcome::Failed { .. }) => "Failed",
            ExtState::Done(Outcome::Canceled { .. }) => "Canceled",
            ExtState::Deleting { .. } => "Deleting",
        }
    }
    /// The agent is installed and running (its handler finished enabling).
    pub fn installed(&self) -> bool {
        matches!(
            self.state,
            ExtState::Done(Outcome::Succeeded) | ExtState::Deleting { .. }
        ) || matches!(
            self.state,
            ExtState::Transition {
                verb: "Updating",
                ..
            }
        )
    }
}

#[derive(Clone, Debug)]
pub struct Dcra {
    pub name: String,
    pub properties: Value,
}

#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub system: bool,
    pub principal_id: String,
    /// User-assigned identity resource ids.
    pub user: Vec<String>,
}

impl Identity {
    pub fn type_str(&self) -> &'static str {
        match (self.system, !self.user.is_empty()) {
            (true, true) => "SystemAssigned, UserAssigned",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (false, false) => "None",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Machine {
    pub name: String,
    /// `None`: on-premises computer unknown to ARM.
    pub kind: Option<MachineKind>,
    pub os: OsFamily,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub identity: Identity,
    /// VM running / Arc connected.
    pub running: bool,
    pub vm_id: String,
    /// A VM PATCH in progress until then.
    pub busy_until: SimMillis,
    pub extensions: BTreeMap<String, Extension>,
    pub dcras: BTreeMap<String, Dcra>,
    /// Workspaces (customer ids) of a legacy agent installed in-guest.
    pub in_guest_legacy: Vec<String>,
    /// Further workspaces the legacy extension's agent reports to (multi-homing).
    pub multi_home_extra: Vec<String>,
    pub produces: BTreeSet<DataSourceType>,
    pub out_of_scope: bool,
    pub no_heartbeat: bool,
    pub stuck_delete: bool,
}

impl Machine {
    pub fn arm_id(&self) -> Option<String> {
        let kind = self.kind?;
        let (ns, ty) = match kind {
            MachineKind::AzureVM => ("Microsoft.Compute", "virtualMachines"),
            MachineKind::ArcServer => ("Microsoft.HybridCompute", "machines"),
        };
        Some(format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{ns}/{ty}/{}",
            self.subscription, self.resource_group, self.name
        ))
    }

    pub fn computer(&self) -> &str {
        &self.name
    }

    pub fn identity_usable(&self) -> bool {
        match self.kind {
            Some(MachineKind::AzureVM) => self.identity.system || !self.identity.user.is_empty(),
            _ => true,
        }
    }

    pub fn agent_extension(&self, kind: AgentKind) -> Option<&Extension> {
        self.extensions.values().find(|e| e.agent() == Some(kind))
    }
}

#[derive(Clone, Debug)]
pub struct Workspace {
    pub spec: WorkspaceSpec,
    /// Served as an ARM resource (the multi-homing target is not).
    pub served: bool,
    /// Stored dataSource resources, keyed by lower-case name.
    pub data_sources: BTreeMap<String, Value>,
    pub legacy: LegacyConfig,
}

impl Workspace {
    fn refresh(&mut self) {
        self.legacy = LegacyConfig::from_data_sources(self.data_sources.values().filter_map(|v| {
            Some((
                v.get("name").and_then(Value::as_str).unwrap_or_default(),
                v.get("kind")?.as_str()?,
                v.get("properties")?,
            ))
        }));
    }
}

#[derive(Clone, Debug)]
pub struct Dcr {
    pub resource: Value,
    pub collects: Vec<(DataSourceType, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    PutExtension,
    DeleteExtension,
    PatchVm,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub id: String,
    pub namespace: &'static str,
    pub kind: OpKind,
    pub machine: usize,
    pub ext_key: String,
    pub subscription: String,
    pub location: String,
    pub start: SimMillis,
    /// `None`: never completes.
    pub end: Option<SimMillis>,
    pub outcome: Outcome,
}

impl Operation {
    /// The status at `now`: `InProgress`, or the outcome.
    pub fn status(&self, now: SimMillis) -> (&'static str, Option<(String, String)>) {
        match self.end {
            Some(e) if e <= now => match &self.outcome {
                Outcome::Succeeded => ("Succeeded", None),
                Outcome::Failed { code, message } => {
                    ("Failed", Some((code.clone(), message.clone())))
                }
                Outcome::Canceled { code, message } => {
                    ("Canceled", Some((code.clone(), message.clone())))
                }
            },
            _ => ("InProgress", None),
        }
    }
}

pub const WS_PROD: usize = 0;
pub const WS_TEST: usize = 1;
pub const WS_OTHER: usize = 2;

pub struct World {
    pub fleet: Fleet,
    pub machines: Vec<Machine>,
    by_id: HashMap<String, usize>,
    pub workspaces: Vec<Workspace>,
    pub dcrs: BTreeMap<String, Dcr>,
    pub dcr_names: BTreeMap<String, String>,
    pub ops: HashMap<String, Operation>,
    pub ledger: Ledger,
    pub faults: FaultState,
    pub lro: LroConfig,
    rng: StdRng,
    next_op: u64,
    etag_seq: u64,
}

fn default_data_sources(ws: &WorkspaceSpec) -> BTreeMap<String, Value> {
    let base = ws.resource_id();
    let mk = |name: &str, kind: &str, props: Value| {
        (
            name.to_ascii_lowercase(),
            json!({
                "id": format!("{base}/dataSources/{name}"),
                "name": name,
                "type": "Microsoft.OperationalInsights/workspaces/datasources",
                "kind": kind,
                "etag": "W/\"datetime'2025-01-01T00%3A00%3A00.0000000Z'\"",
                "properties": props,
            }),
        )
    };
    let sev = |names: &[&str]| {
        names
            .iter()
            .map(|s| json!({"severity": s}))
            .collect::<Vec<_>>()
    };
    BTreeMap::from([
        mk(
            kinds::SENTINEL_SECURITY_EVENTS,
            kinds::SENTINEL_SECURITY_EVENTS,
            json!({"tier": "Recommended", "tierSetMethod": "Custom"}),
        ),
        mk(
            "DataSource_WindowsEvent_System",
            kinds::WINDOWS_EVENT,
            json!({"eventLogName": "System", "eventTypes": [{"eventType": "Error"}, {"eventType": "Warning"}]}),
        ),
        mk(
            "DataSource_WindowsEvent_Application",
            kinds::WINDOWS_EVENT,
            json!({"eventLogName": "Application", "eventTypes": [{"eventType": "Error"}, {"eventType": "Warning"}, {"eventType": "Information"}]}),
        ),
        mk(
            "DataSource_WindowsEvent_Sysmon",
            kinds::WINDOWS_EVENT,
            json!({"eventLogName": "Microsoft-Windows-Sysmon/Operational", "eventTypes": [{"eventType": "Error"}, {"eventType": "Warning"}, {"eventType": "Information"}]}),
        ),
        mk(
            "DataSource_WindowsEvent_TaskScheduler",
            kinds::WINDOWS_EVENT,
            json!({"eventLogName": "Microsoft-Windows-TaskScheduler/Operational", "eventTypes": [{"eventType": "Error"}, {"eventType": "Warning"}]}),
        ),
        mk(
            "DataSource_LinuxSyslog_auth",
            kinds::LINUX_SYSLOG,
            json!({"syslogName": "auth", "syslogSeverities": sev(&["emerg", "alert", "crit", "err", "warning", "notice", "info"])}),
        ),
        mk(
            "DataSource_LinuxSyslog_authpriv",
            kinds::LINUX_SYSLOG,
            json!({"syslogName": "authpriv", "syslogSeverities": sev(&["emerg", "alert", "crit", "err", "warning"])}),
        ),
        mk(
            "DataSource_LinuxSyslog_syslog",
            kinds::LINUX_SYSLOG,
            json!({"syslogName": "syslog", "syslogSeverities": sev(&["emerg", "alert", "crit", "err"])}),
        ),
        mk(
            "DataSource_LinuxSyslog_user",
            kinds::LINUX_SYSLOG,
            json!({"syslogName": "user", "syslogSeverities": sev(&["emerg", "alert", "crit", "err", "warning", "notice", "info"])}),
        ),
        mk(
            "DataSource_LinuxSyslogCollection",
            kinds::LINUX_SYSLOG_COLLECTION,
            json!({"state": "Enabled"}),
        ),
        mk(
            "DataSource_WindowsPerformanceCounter_Processor",
            kinds::WINDOWS_PERFORMANCE_COUNTER,
            json!({"objectName": "Processor", "instanceName": "_Total", "intervalSeconds": 60, "counterName": "% Processor Time"}),
        ),
        mk(
            "DataSource_LinuxPerformanceObject_Memory",
            kinds::LINUX_PERFORMANCE_OBJECT,
            json!({"objectName": "Memory", "instanceName": "*", "intervalSeconds": 60, "performanceCounters": [{"counterName": "% Used Memory"}]}),
        ),
        mk(
            "DataSource_LinuxPerformanceCollection",
            kinds::LINUX_PERFORMANCE_COLLECTION,
            json!({"state": "Enabled"}),
        ),
        mk(
            "DataSource_IISLogs",
            kinds::IIS_LOGS,
            json!({"state": "OnPremiseEnabled"}),
        ),
    ])
}

/// The DCR already in place for machines that start with AMA.
fn baseline_dcr(fleet: &Fleet, os: OsFamily) -> (String, Value) {
    let ws = &fleet.workspace;
    let name = match os {
        OsFamily::Windows => "dcr-baseline-windows",
        OsFamily::Linux => "dcr-baseline-linux",
    };
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Insights/dataCollectionRules/{name}",
        ws.subscription, ws.resource_group
    );
    let dest = json!({"logAnalytics": [{"name": "la", "workspaceResourceId": ws.resource_id(), "workspaceId": ws.customer_id}]});
    let (kind, sources, streams) = match os {
        OsFamily::Windows => (
            "Windows",
            json!({
                "windowsEventLogs": [
                    {"name": "securityEvents", "streams": ["Microsoft-SecurityEvent"], "xPathQueries": ["Security!*[System[(EventID=4624) or (EventID=4625) or (EventID=4688)]]"]},
                    {"name": "eventLogs", "streams": ["Microsoft-Event"], "xPathQueries": ["System!*[System[(Level=1 or Level=2 or Level=3)]]", "Application!*[System[(Level=1 or Level=2 or Level=3)]]", "Microsoft-Windows-Sysmon/Operational!*"]}
                ],
                "performanceCounters": [{"name": "perf", "streams": ["Microsoft-Perf"], "samplingFrequencyInSeconds": 60, "counterSpecifiers": ["\\Processor(_Total)\\% Processor Time"]}]
            }),
            json!([
                "Microsoft-SecurityEvent",
                "Microsoft-Event",
                "Microsoft-Perf"
            ]),
        ),
        OsFamily::Linux => (
            "Linux",
            json!({
                "syslog": [
                    {"name": "syslog", "streams": ["Microsoft-Syslog"], "facilityNames": ["auth", "authpriv", "syslog", "user"], "logLevels": ["Warning", "Error", "Critical", "Alert", "Emergency"]},
                    {"name": "cef", "streams": ["Microsoft-CommonSecurityLog"], "facilityNames": ["local4"], "logLevels": ["Info", "Notice", "Warning", "Error", "Critical", "Alert", "Emergency"]}
                ],
                "performanceCounters": [{"name": "perf", "streams": ["Microsoft-Perf"], "samplingFrequencyInSeconds": 60, "counterSpecifiers": ["Memory(*)\\% Used Memory"]}]
            }),
            json!([
                "Microsoft-Syslog",
                "Microsoft-CommonSecurityLog",
                "Microsoft-Perf"
            ]),
        ),
    };
    let body = json!({
        "id": id, "name": name, "type": "Microsoft.Insights/dataCollectionRules",
        "location": ws.location, "kind": kind, "etag": "\"00000000-0000-0000-0000-000000000001\"",
        "properties": {
            "immutableId": format!("dcr-{:032x}", name.len() as u128 * 7919),
            "dataSources": sources, "destinations": dest,
            "dataFlows": [{"streams": streams, "destinations": ["la"]}],
            "provisioningState": "Succeeded"
        }
    });
    (id, body)
}

impl World {
    pub fn new(scenario: &Scenario, fleet: Fleet, start: SimMillis) -> Self {
        let mut workspaces: Vec<Workspace> = [
            (&fleet.workspace, true),
            (&fleet.test_workspace, true),
            (&fleet.other_workspace, false),
        ]
        .into_iter()
        .map(|(spec, served)| {
            let mut w = Workspace {
                spec: spec.clone(),
                served,
                data_sources: default_data_sources(spec),
                legacy: LegacyConfig::default(),
            };
            w.refresh();
            w
        })
        .collect();
        // The test workspace starts without legacy collection: it only receives proof-of-concept AMA data.
        workspaces[WS_TEST].data_sources.clear();
        workspaces[WS_TEST].refresh();
        let mut dcrs = BTreeMap::new();
        let mut dcr_ids = HashMap::new();
        for os in [OsFamily::Windows, OsFamily::Linux] {
            let (id, body) = baseline_dcr(&fleet, os);
            dcr_ids.insert(os, id.clone());
            dcrs.insert(
                id.to_ascii_lowercase(),
                Dcr {
                    collects: dcr_collects(&body),
                    resource: body,
                },
            );
        }
        let mut rng = StdRng::seed_from_u64(scenario.seed ^ 0x5eed);
        let prod_cid = fleet.workspace.customer_id.clone();
        let other_cid = fleet.other_workspace.customer_id.clone();
        let mut machines = Vec::with_capacity(fleet.machines.len());
        for spec in &fleet.machines {
            let mut m = Machine {
                name: spec.name.clone(),
                kind: spec.kind,
                os: spec.os,
                subscription: spec.subscription.clone(),
                resource_group: spec.resource_group.clone(),
                location: spec.location.clone(),
                tags: spec.tags.clone(),
                identity: Identity::default(),
                running: spec.running,
                vm_id: guid(&mut rng),
                busy_until: start,
                extensions: BTreeMap::new(),
                dcras: BTreeMap::new(),
                in_guest_legacy: Vec::new(),
                multi_home_extra: Vec::new(),
                produces: spec.produces.clone(),
                out_of_scope: spec.out_of_scope,
                no_heartbeat: false,
                stuck_delete: false,
            };
            match spec.identity {
                IdentitySpec::None => {}
                IdentitySpec::SystemAssigned => {
                    m.identity.system = true;
                    m.identity.principal_id = guid(&mut rng);
                }
                IdentitySpec::UserAssigned => m.identity.user.push(format!(
                    "/subscriptions/{}/resourceGroups/rg-identities/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-ama",
                    spec.subscription
                )),
            }
            match spec.legacy {
                LegacyInstall::None => {}
                LegacyInstall::InGuest => m.in_guest_legacy.push(prod_cid.clone()),
                LegacyInstall::Extension => {
                    let kind = AgentKind::Legacy;
                    let (name, ver) = match spec.os {
                        OsFamily::Windows => ("MicrosoftMonitoringAgent", "1.0"),
                        OsFamily::Linux => ("OmsAgentForLinux", "1.7"),
                    };
                    m.extensions.insert(name.to_ascii_lowercase(), Extension {
                        name: name.into(),
                        location: spec.location.clone(),
                        tags: None,
                        properties: json!({"publisher": kind.publisher(), "type": kind.extension_type(spec.os), "typeHandlerVersion": ver, "autoUpgradeMinorVersion": true, "settings": {"workspaceId": prod_cid}}),
                        state: ExtState::Done(Outcome::Succeeded),
                        status_time: start,
                    });
                    if spec.multi_homed {
                        m.multi_home_extra.push(other_cid.clone());
                    }
                }
            }
            if spec.ama && spec.kind.is_some() {
                let kind = AgentKind::Ama;
                let t = kind.extension_type(spec.os);
                m.extensions.insert(t.to_ascii_lowercase(), Extension {
                    name: t.into(),
                    location: spec.location.clone(),
                    tags: None,
                    properties: json!({"publisher": kind.publisher(), "type": t, "typeHandlerVersion": if spec.os == OsFamily::Windows { "1.0" } else { "1.21" }, "autoUpgradeMinorVersion": true, "enableAutomaticUpgrade": true}),
                    state: ExtState::Done(Outcome::Succeeded),
                    status_time: start,
                });
                m.dcras.insert("dcra-baseline".into(), Dcra {
                    name: "dcra-baseline".into(),
                    properties: json!({"dataCollectionRuleId": dcr_ids[&spec.os], "description": "baseline"}),
                });
            }
            machines.push(m);
        }
        let by_id = machines
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((m.arm_id()?.to_ascii_lowercase(), i)))
            .collect();
        let ledger = Ledger::new(machines.len(), WS_PROD, start);
        let mut w = World {
            fleet,
            machines,
            by_id,
            workspaces,
            dcrs,
            dcr_names: BTreeMap::new(),
            ops: HashMap::new(),
            ledger,
            faults: FaultState::default(),
            lro: scenario.lro.clone(),
            rng,
            next_op: 0,
            etag_seq: 1,
        };
        for (i, m) in w.machines.iter().enumerate() {
            for ds in &m.produces {
                w.ledger.track(i, *ds, start);
            }
        }
        w.recompute_all(start);
        w.ledger.want_delivered();
        w
    }

    pub fn machine_index(&self, arm_id: &str) -> Option<usize> {
        self.by_id
            .get(&arm_id.trim_end_matches('/').to_ascii_lowercase())
            .copied()
    }

    /// Find a machine by ARM id or by name.
    pub fn find_machine(&self, key: &str) -> Option<usize> {
        self.machine_index(key).or_else(|| {
            self.machines
                .iter()
                .position(|m| m.name.eq_ignore_ascii_case(key))
        })
    }

    pub fn workspace_by_customer_id(&self, cid: &str) -> Option<usize> {
        self.workspaces
            .iter()
            .position(|w| w.spec.customer_id.eq_ignore_ascii_case(cid))
    }

    pub fn workspace_by_id(&self, id: &str) -> Option<usize> {
        self.workspaces.iter().position(|w| {
            w.served
                && w.spec
                    .resource_id()
                    .eq_ignore_ascii_case(id.trim_end_matches('/'))
        })
    }

    pub fn next_etag(&mut self) -> String {
        self.etag_seq += 1;
        format!(
            "\"{:08x}-0000-0000-0000-{:012x}\"",
            self.etag_seq, self.etag_seq
        )
    }

    pub fn new_op_id(&mut self) -> String {
        self.next_op += 1;
        let r: u64 = self.rng.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            self.next_op,
            r & 0xffff,
            (r >> 16) & 0xfff,
            (r >> 28) & 0xfff,
            r >> 40
        )
    }

    /// Streams machine `i` delivers right now.
    pub fn active_streams(&self, i: usize) -> BTreeSet<StreamKey> {
        let m = &self.machines[i];
        let mut out = BTreeSet::new();
        if !m.running {
            return out;
        }
        // Legacy agent: the extension's workspace (plus multi-homing) and in-guest installs.
        let mut legacy_ws: Vec<&str> = m.in_guest_legacy.iter().map(String::as_str).collect();
        if let Some(ext) = m
            .agent_extension(AgentKind::Legacy)
            .filter(|e| e.installed())
        {
            legacy_ws.extend(ext.workspace_id());
            legacy_ws.extend(m.multi_home_extra.iter().map(String::as_str));
        }
        for cid in legacy_ws {
            let Some(ws) = self.workspace_by_customer_id(cid) else {
                continue;
            };
            out.insert(StreamKey {
                ws,
                stream: Stream::Heartbeat,
                agent: Agent::Legacy,
            });
            let cfg = &self.workspaces[ws].legacy;
            for ds in &m.produces {
                if ds.os() == m.os && cfg.enables(*ds) {
                    out.insert(StreamKey {
                        ws,
                        stream: Stream::Data(*ds),
                        agent: Agent::Legacy,
                    });
                }
            }
        }
        // AMA: installed, identity usable, agent healthy, and per associated DCR.
        let ama_ok = m
            .agent_extension(AgentKind::Ama)
            .is_some_and(Extension::installed)
            && m.identity_usable()
            && !m.no_heartbeat;
        if ama_ok {
            for dcra in m.dcras.values() {
                let Some(rule) = dcra
                    .properties
                    .get("dataCollectionRuleId")
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                let Some(dcr) = self.dcrs.get(&rule.to_ascii_lowercase()) else {
                    continue;
                };
                for (ds, wsid) in &dcr.collects {
                    let Some(ws) = self.workspace_by_id(wsid) else {
                        continue;
                    };
                    out.insert(StreamKey {
                        ws,
                        stream: Stream::Heartbeat,
                        agent: Agent::Ama,
                    });
                    if ds.os() == m.os && m.produces.contains(ds) {
                        out.insert(StreamKey {
                            ws,
                            stream: Stream::Data(*ds),
                            agent: Agent::Ama,
                        });
                    }
                }
            }
        }
        out
    }

    pub fn recompute(&mut self, t: SimMillis, i: usize) {
        let active = self.active_streams(i);
        self.ledger.update(t, i, &active);
    }

    pub fn recompute_all(&mut self, t: SimMillis) {
        for i in 0..self.machines.len() {
            self.recompute(t, i);
        }
    }

    /// Apply every scheduled transition due by `now`, in time order, so the ledger sees each at its time.
    pub fn settle(&mut self, now: SimMillis) {
        let mut due: Vec<(SimMillis, usize, String)> = Vec::new();
        for (i, m) in self.machines.iter().enumerate() {
            for (k, e) in &m.extensions {
                let until = match &e.state {
                    ExtState::Transition { until: Some(u), .. }
                    | ExtState::Deleting { until: Some(u) } => *u,
                    _ => continue,
                };
                if until <= now {
                    due.push((until, i, k.clone()));
                }
            }
        }
        due.sort();
        for (t, i, k) in due {
            let m = &mut self.machines[i];
            let remove = match m.extensions.get_mut(&k) {
                Some(e) => match &e.state {
                    ExtState::Transition { outcome, .. } => {
                        e.state = ExtState::Done(outcome.clone());
                        e.status_time = t;
                        false
                    }
                    ExtState::Deleting { .. } => true,
                    ExtState::Done(_) => false,
                },
                None => false,
            };
            if remove {
                m.extensions.remove(&k);
            }
            self.recompute(t, i);
        }
    }

    /// Outcome for a new extension install on machine `i`, from the fault switches.
    pub fn install_outcome(&mut self, i: usize) -> Outcome {
        let name = self.machines[i].name.clone();
        let id = self.machines[i].arm_id().unwrap_or_default();
        let faults = self.faults.extension_failures.clone();
        for (machine, code, p) in faults {
            let applies = match &machine {
                Some(k) => k.eq_ignore_ascii_case(&name) || k.eq_ignore_ascii_case(&id),
                None => true,
            };
            if applies && (p >= 1.0 || self.rng.random_bool(p.clamp(0.0, 1.0))) {
                let (message, canceled) = extension_failure_message(&code);
                return if canceled {
                    Outcome::Canceled { code, message }
                } else {
                    Outcome::Failed { code, message }
                };
            }
        }
        Outcome::Succeeded
    }

    /// Create or replace an extension. Returns (created, operation id).
    pub fn put_extension(
        &mut self,
        now: SimMillis,
        i: usize,
        name: &str,
        location: String,
        tags: Option<Value>,
        mut properties: Value,
    ) -> Result<(bool, String), ArmError> {
        let key = name.to_ascii_lowercase();
        let m = &self.machines[i];
        if let Some(e) = m.extensions.get(&key)
            && matches!(e.state, ExtState::Deleting { .. })
        {
            return Err(ArmError::new(
                409,
                "OperationNotAllowed",
                format!(
                    "PUT Extension '{name}' is not allowed: the extension is marked for deletion. Only retry Delete of the extension is allowed."
                ),
            ));
        }
        if let Some(obj) = properties.as_object_mut() {
            obj.remove("protectedSettings");
            obj.remove("provisioningState");
            obj.remove("instanceView");
        }
        let created = !m.extensions.contains_key(&key);
        let ns = m.kind.map(namespace).unwrap_or("Microsoft.Compute");
        let (sub, loc, connected) = (m.subscription.clone(), m.location.clone(), m.running);
        // A newer operation on the same extension preempts one still running.
        let preempt: Vec<String> = self
            .ops
            .values()
            .filter(|o| {
                o.machine == i
                    && o.ext_key == key
                    && o.kind == OpKind::PutExtension
                    && o.end.is_none_or(|e| e > now)
            })
            .map(|o| o.id.clone())
            .collect();
        for id in preempt {
            if let Some(o) = self.ops.get_mut(&id) {
                o.end = Some(now);
                o.outcome = Outcome::Canceled {
                    code: "OperationPreempted".into(),
                    message: "Operation execution has been preempted by a more recent operation."
                        .into(),
                };
            }
        }
        let outcome = self.install_outcome(i);
        let until = connected.then_some(now + self.lro.extension_install_secs as SimMillis * 1000);
        let id = self.new_op_id();
        self.ops.insert(
            id.clone(),
            Operation {
                id: id.clone(),
                namespace: ns,
                kind: OpKind::PutExtension,
                machine: i,
                ext_key: key.clone(),
                subscription: sub,
                location: loc,
                start: now,
                end: until,
                outcome: outcome.clone(),
            },
        );
        let m = &mut self.machines[i];
        let verb = if created { "Creating" } else { "Updating" };
        m.extensions.insert(
            key,
            Extension {
                name: name.to_string(),
                location,
                tags,
                properties,
                state: ExtState::Transition {
                    verb,
                    until,
                    outcome,
                },
                status_time: now,
            },
        );
        self.recompute(now, i);
        Ok((created, id))
    }

    /// Start deleting an extension; `Ok(None)` when there is none.
    pub fn delete_extension(
        &mut self,
        now: SimMillis,
        i: usize,
        name: &str,
    ) -> Result<Option<String>, ArmError> {
        let key = name.to_ascii_lowercase();
        let m = &self.machines[i];
        let Some(e) = m.extensions.get(&key) else {
            return Ok(None);
        };
        if let ExtState::Deleting { .. } = e.state {
            // A repeated delete joins the one in progress.
            if let Some(op) = self
                .ops
                .values()
                .find(|o| o.machine == i && o.ext_key == key && o.kind == OpKind::DeleteExtension)
            {
                return Ok(Some(op.id.clone()));
            }
        }
        let ns = m.kind.map(namespace).unwrap_or("Microsoft.Compute");
        let (sub, loc) = (m.subscription.clone(), m.location.clone());
        let until = (m.running && !m.stuck_delete)
            .then_some(now + self.lro.extension_delete_secs as SimMillis * 1000);
        let id = self.new_op_id();
        self.ops.insert(
            id.clone(),
            Operation {
                id: id.clone(),
                namespace: ns,
                kind: OpKind::DeleteExtension,
                machine: i,
                ext_key: key.clone(),
                subscription: sub,
                location: loc,
                start: now,
                end: until,
                outcome: Outcome::Succeeded,
            },
        );
        if let Some(e) = self.machines[i].extensions.get_mut(&key) {
            e.state = ExtState::Deleting { until };
            e.status_time = now;
        }
        self.recompute(now, i);
        Ok(Some(id))
    }

    /// Apply a VM identity PATCH; returns the operation id.
    pub fn patch_identity(
        &mut self,
        now: SimMillis,
        i: usize,
        identity: &Value,
    ) -> Result<String, ArmError> {
        let ty = identity
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ArmError::bad_request("identity.type is required"))?;
        let lower = ty.to_ascii_lowercase().replace(' ', "");
        let (system, user) = match lower.as_str() {
            "none" => (false, false),
            "systemassigned" => (true, false),
            "userassigned" => (false, true),
            "systemassigned,userassigned" => (true, true),
            _ => {
                return Err(ArmError::bad_request(format!(
                    "identity.type '{ty}' is not one of SystemAssigned, UserAssigned, 'SystemAssigned, UserAssigned', None"
                )));
            }
        };
        let uamis: Vec<String> = identity
            .get("userAssignedIdentities")
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        if user && uamis.is_empty() {
            return Err(ArmError::bad_request(
                "identity.userAssignedIdentities must name at least one identity when the type includes UserAssigned",
            ));
        }
        let pid = guid(&mut self.rng);
        let until = now + self.lro.vm_update_secs as SimMillis * 1000;
        let m = &mut self.machines[i];
        if system && !m.identity.system {
            m.identity.principal_id = pid;
        }
        m.identity.system = system;
        m.identity.user = if user { uamis } else { Vec::new() };
        m.busy_until = until;
        let (sub, loc) = (m.subscription.clone(), m.location.clone());
        let id = self.new_op_id();
        self.ops.insert(
            id.clone(),
            Operation {
                id: id.clone(),
                namespace: "Microsoft.Compute",
                kind: OpKind::PatchVm,
                machine: i,
                ext_key: String::new(),
                subscription: sub,
                location: loc,
                start: now,
                end: Some(until),
                outcome: Outcome::Succeeded,
            },
        );
        self.recompute(now, i);
        Ok(id)
    }

    pub fn put_dcr(&mut self, now: SimMillis, id: &str, resource: Value) -> bool {
        let key = id.to_ascii_lowercase();
        let created = !self.dcrs.contains_key(&key);
        self.dcrs.insert(
            key,
            Dcr {
                collects: dcr_collects(&resource),
                resource,
            },
        );
        self.recompute_all(now);
        created
    }

    pub fn put_dcra(&mut self, now: SimMillis, i: usize, name: &str, properties: Value) -> bool {
        let created = self.machines[i]
            .dcras
            .insert(
                name.to_ascii_lowercase(),
                Dcra {
                    name: name.to_string(),
                    properties,
                },
            )
            .is_none();
        self.recompute(now, i);
        created
    }

    pub fn delete_dcra(&mut self, now: SimMillis, i: usize, name: &str) -> bool {
        let existed = self.machines[i]
            .dcras
            .remove(&name.to_ascii_lowercase())
            .is_some();
        self.recompute(now, i);
        existed
    }

    pub fn put_data_source(
        &mut self,
        now: SimMillis,
        ws: usize,
        name: &str,
        resource: Value,
    ) -> bool {
        let created = self.workspaces[ws]
            .data_sources
            .insert(name.to_ascii_lowercase(), resource)
            .is_none();
        self.workspaces[ws].refresh();
        self.recompute_all(now);
        created
    }

    pub fn delete_data_source(&mut self, now: SimMillis, ws: usize, name: &str) -> bool {
        let existed = self.workspaces[ws]
            .data_sources
            .remove(&name.to_ascii_lowercase())
            .is_some();
        self.workspaces[ws].refresh();
        self.recompute_all(now);
        existed
    }

    /// Power a VM on or off / connect or disconnect an Arc server.
    pub fn set_running(&mut self, now: SimMillis, i: usize, running: bool) {
        self.machines[i].running = running;
        self.recompute(now, i);
    }
}

pub fn namespace(kind: MachineKind) -> &'static str {
    match kind {
        MachineKind::AzureVM => "Microsoft.Compute",
        MachineKind::ArcServer => "Microsoft.HybridCompute",
    }
}

pub fn guid(rng: &mut StdRng) -> String {
    let a: u128 = rng.random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
