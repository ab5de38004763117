//! Shared fixtures of the machine step-function tests: a spec builder, and a small model of one
//! machine in Azure that executes actions the way ARM would (sync or long-running).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use ama_migrator::api::machine::{MachineDataSource, MachineMigrationSpec, MachineMigrationStatus};
use ama_migrator::api::plan::{Agent, MachineKind, Risk};
use ama_migrator::azure::error::Classification;
use ama_migrator::azure::lro::{LroMethod, OperationHandle, PollKind};
use ama_migrator::catalog::{DataSourceType, OsFamily};
use ama_migrator::machine::*;
use k8s_openapi::jiff::Timestamp;

pub const VM: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
pub const ARC: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/arc1";

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

pub fn dcr(name: &str) -> String {
    format!(
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/{name}"
    )
}

/// `(name, agent, dcr name)`; all sources are Windows security events (the type does not matter
/// to the step function).
pub fn spec(sources: &[(&str, Agent, Option<&str>)]) -> MachineMigrationSpec {
    MachineMigrationSpec {
        plan: "p".into(),
        machine_id: VM.into(),
        os: OsFamily::Windows,
        kind: MachineKind::AzureVM,
        wave: "w1".into(),
        risk: Risk::Low,
        data_sources: sources
            .iter()
            .map(|(n, a, d)| MachineDataSource {
                name: (*n).into(),
                type_: DataSourceType::WindowsSecurityEvents,
                agent: *a,
                dcr: d.map(dcr),
            })
            .collect(),
        may_proceed: true,
    }
}

/// Two sources moving to AMA through two DCRs.
pub fn two_sources() -> MachineMigrationSpec {
    spec(&[
        ("security", Agent::Ama, Some("dcr-sec")),
        ("syslog", Agent::Ama, Some("dcr-sys")),
    ])
}

/// A running VM with a system identity and the MMA extension, no AMA.
pub fn legacy_vm() -> Observation {
    Observation {
        identity: IdentityState {
            system_assigned: true,
            user_assigned: vec![],
        },
        legacy: LegacyState {
            name: Some("MicrosoftMonitoringAgent".into()),
            state: ExtensionState::Succeeded,
            in_guest_only: false,
        },
        ..Observation::default()
    }
}

pub fn handle(url: &str) -> OperationHandle {
    OperationHandle {
        method: LroMethod::Put,
        poll_kind: PollKind::AzureAsyncOperation,
        poll_url: url.into(),
        resource_url: format!("https://management.azure.com{VM}?api-version=x"),
        resource_id: VM.into(),
        started_at_ms: 0,
        retry_after_ms: None,
    }
}

pub fn err(class: Classification, status: u16, code: &str, message: &str) -> ActionError {
    ActionError {
        classification: class,
        code: code.into(),
        message: message.into(),
        http_status: Some(status),
        retry_after: None,
    }
}

/// One step with everything explicit.
pub fn run(
    spec: &MachineMigrationSpec,
    status: &MachineMigrationStatus,
    obs: &Observation,
    outcome: Option<&Outcome>,
    policy: &Policy,
    requests: Requests,
    now: Timestamp,
) -> Decision {
    step(&StepInput {
        spec,
        status,
        observation: obs,
        outcome,
        policy,
        requests,
        now,
    })
}

/// How the model answers a write.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Done at once (200/201).
    Sync,
    /// Accepted as a long-running operation (202 + Azure-AsyncOperation).
    Lro,
    Error(ActionError),
}

/// One machine in Azure: executes actions, reports observations.
#[derive(Clone, Debug)]
pub struct World {
    pub obs: Observation,
    /// The running operation: (poll URL, what it does when it finishes).
    pub pending: Option<(String, Action)>,
    pub next_op: u32,
    pub spec: MachineMigrationSpec,
    /// The world writes, in order (for "no needless repeat" checks).
    pub writes: Vec<Action>,
}

impl World {
    pub fn new(spec: MachineMigrationSpec, obs: Observation) -> Self {
        Self {
            obs,
            pending: None,
            next_op: 0,
            spec,
            writes: Vec::new(),
        }
    }

    fn effect(&mut self, a: &Action) {
        match a {
            Action::EnableSystemIdentity => self.obs.identity.system_assigned = true,
            Action::InstallAma { extension_name, .. } => {
                self.obs.ama.name = Some(extension_name.clone());
                self.obs.ama.state = ExtensionState::Succeeded;
            }
            Action::Associate {
                dcr_id,
                association_name,
            } => {
                self.obs
                    .associations
                    .retain(|x| x.name != *association_name);
                self.obs.associations.push(Association {
                    name: association_name.clone(),
                    dcr_id: dcr_id.clone(),
                });
            }
            Action::RemoveAssociation { association_name } => self
                .obs
                .associations
                .retain(|x| x.name != *association_name),
            Action::RemoveLegacy { .. } => {
                self.obs.legacy.state = ExtensionState::Absent;
                self.obs.legacy.name = None;
            }
            Action::RemoveAma { .. } => {
                self.obs.ama.state = ExtensionState::Absent;
                self.obs.ama.name = None;
            }
            _ => {}
        }
    }

    /// What the heartbeat and data queries would return now.
    pub fn verification(&self, now: Timestamp) -> Verification {
        let ama_up = self.obs.ama.state == ExtensionState::Succeeded && self.obs.identity.usable();
        let mut delivering = BTreeMap::new();
        for d in &self.spec.data_sources {
            let mut s = BTreeSet::new();
            let by_ama = ama_up
                && d.dcr.as_ref().is_some_and(|x| {
                    self.obs
                        .associations
                        .iter()
                        .any(|a| a.dcr_id.eq_ignore_ascii_case(x))
                });
            if by_ama {
                s.insert(Agent::Ama);
            }
            if self.obs.legacy.is_present() && !self.obs.flipped.contains(&d.name) {
                s.insert(Agent::Legacy);
            }
            delivering.insert(d.name.clone(), s);
        }
        Verification {
            observed_at: now,
            ama_heartbeat: ama_up,
            delivering,
        }
    }

    /// Executes `action`; `reply` says how a write goes. Returns the outcome to report.
    pub fn execute(&mut self, action: &Action, reply: Reply, now: Timestamp) -> Option<Outcome> {
        match action {
            Action::None | Action::WaitUntil(_) => None,
            Action::Verify => {
                self.obs.verification = Some(self.verification(now));
                None
            }
            Action::PollOperation(op) => match &self.pending {
                Some((url, a)) if *url == op.url => {
                    let a = a.clone();
                    match reply {
                        Reply::Error(e) => {
                            self.pending = None;
                            if let Action::InstallAma { .. } = a {
                                self.obs.ama.state = ExtensionState::Failed {
                                    code: e.code.clone(),
                                    message: e.message.clone(),
                                };
                            } else {
                                self.settle_transitional();
                            }
                            Some(Outcome::Polled(PollResult::Failed(e)))
                        }
                        Reply::Lro => {
                            Some(Outcome::Polled(PollResult::Running { retry_after: None }))
                        }
                        Reply::Sync => {
                            self.pending = None;
                            self.effect(&a);
                            Some(Outcome::Polled(PollResult::Succeeded))
                        }
                    }
                }
                _ => Some(Outcome::Polled(PollResult::PollError(err(
                    Classification::Permanent,
                    404,
                    "NotFound",
                    "no such operation",
                )))),
            },
            write => {
                self.writes.push(write.clone());
                match reply {
                    Reply::Error(e) => Some(Outcome::Failed {
                        action: write.clone(),
                        error: e,
                    }),
                    Reply::Sync => {
                        self.effect(write);
                        Some(Outcome::Submitted {
                            action: write.clone(),
                            operation: None,
                        })
                    }
                    Reply::Lro => {
                        let is_lro = matches!(
                            write,
                            Action::EnableSystemIdentity
                                | Action::InstallAma { .. }
                                | Action::RemoveLegacy { .. }
                                | Action::RemoveAma { .. }
                        );
                        if !is_lro {
                            self.effect(write);
                            return Some(Outcome::Submitted {
                                action: write.clone(),
                                operation: None,
                            });
                        }
                        self.next_op += 1;
                        let url =
                            format!("https://management.azure.com/operations/op{}", self.next_op);
                        match write {
                            Action::InstallAma { extension_name, .. } => {
                                self.obs.ama.name = Some(extension_name.clone());
                                self.obs.ama.state = ExtensionState::Provisioning;
                            }
                            Action::RemoveLegacy { .. } => {
                                self.obs.legacy.state = ExtensionState::Deleting
                            }
                            Action::RemoveAma { .. } => {
                                self.obs.ama.state = ExtensionState::Deleting
                            }
                            _ => {}
                        }
                        self.pending = Some((url.clone(), write.clone()));
                        Some(Outcome::Submitted {
                            action: write.clone(),
                            operation: Some(handle(&url)),
                        })
                    }
                }
            }
        }
    }

    /// A failed delete leaves the extension where it was.
    fn settle_transitional(&mut self) {
        if self.obs.legacy.state == ExtensionState::Deleting {
            self.obs.legacy.state = ExtensionState::Succeeded;
        }
        if self.obs.ama.state == ExtensionState::Deleting {
            self.obs.ama.state = ExtensionState::Succeeded;
        }
    }
}

/// Drives a machine through the model until `Action::None` (bounded), every write succeeding
/// as `reply` says. Returns the final decision and every action taken.
pub fn drive(
    world: &mut World,
    status: &mut MachineMigrationStatus,
    policy: &Policy,
    requests: Requests,
    reply: Reply,
    mut now: Timestamp,
    max_steps: usize,
) -> (Decision, Vec<Action>, Timestamp) {
    let mut outcome: Option<Outcome> = None;
    let mut actions = Vec::new();
    for _ in 0..max_steps {
        let spec = world.spec.clone();
        let d = run(
            &spec,
            status,
            &world.obs,
            outcome.as_ref(),
            policy,
            requests,
            now,
        );
        *status = d.status.clone();
        actions.push(d.action.clone());
        match &d.action {
            Action::None => return (d, actions, now),
            Action::WaitUntil(until) => {
                now = (*until).max(now);
                outcome = None;
            }
            a => {
                let r = if matches!(a, Action::PollOperation(_)) {
                    Reply::Sync
                } else {
                    reply.clone()
                };
                outcome = world.execute(a, r, now);
                now = now
                    .saturating_add(std::time::Duration::from_secs(1))
                    .unwrap();
            }
        }
    }
    panic!("no terminal decision within {max_steps} steps: {actions:?}");
}
