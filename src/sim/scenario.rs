//! Seeded fleet generation: a `Scenario` (serde, JSON or YAML) is turned into a deterministic `Fleet`
//! of machines, subscriptions and workspaces, so the same seed always yields the same world.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::catalog::{DataSourceType, OsFamily};
use crate::inventory::MachineKind;

use super::faults::Fault;
use super::request_log::RequestLogLimits;
use super::throttle::ThrottleConfig;

/// Everything that shapes a simulated world. Every field has a default; `Scenario::default()` is a mixed
/// fleet of 500 machines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub seed: u64,
    /// Azure VMs and Arc servers in the plan's subscriptions.
    pub machines: usize,
    /// Subscriptions holding the machines (in the plan's scope).
    pub subscriptions: usize,
    /// Machines in one more subscription, outside the plan's scope, still reporting to the workspace.
    pub outside_subscription_machines: usize,
    /// On-premises computers with the legacy agent and no ARM id (visible only through Heartbeat).
    pub on_prem_computers: usize,
    pub regions: Vec<String>,
    pub resource_groups_per_subscription: usize,
    /// Share of Windows machines (the rest are Linux).
    pub windows_ratio: f64,
    /// Share of Arc servers (the rest are Azure VMs).
    pub arc_ratio: f64,
    /// Relative weights of the starting agent mix.
    pub agents: AgentMix,
    /// Share of machines whose legacy agent is installed in-guest (MSI), invisible to ARM.
    pub in_guest_legacy_ratio: f64,
    /// Share of legacy extensions (Windows) also reporting to a second workspace.
    pub multi_homed_ratio: f64,
    /// Share of Azure VMs without any managed identity.
    pub no_identity_ratio: f64,
    /// Share of Azure VMs with a user-assigned identity (the rest of those with one: system-assigned).
    pub user_assigned_ratio: f64,
    pub deallocated_ratio: f64,
    pub disconnected_ratio: f64,
    /// Share of Windows machines that need legacy-only sources (firewall, application and service logs).
    pub legacy_only_sources_ratio: f64,
    /// Share of machines running Sysmon.
    pub sysmon_ratio: f64,
    /// Simulated start time (ISO-8601 UTC).
    pub start: String,
    /// Simulated seconds per real second; 0 = the clock moves only when advanced.
    pub time_scale: f64,
    pub lro: LroConfig,
    pub throttle: ThrottleConfig,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
    /// How much traffic the request log keeps (records, bytes per body, bytes in all).
    pub request_log: RequestLogLimits,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentMix {
    pub legacy_only: f64,
    pub ama_only: f64,
    pub both: f64,
    pub none: f64,
}

impl Default for AgentMix {
    fn default() -> Self {
        Self {
            legacy_only: 0.6,
            ama_only: 0.1,
            both: 0.15,
            none: 0.15,
        }
    }
}

/// Long-running operation latencies, in simulated seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LroConfig {
    pub extension_install_secs: u64,
    pub extension_delete_secs: u64,
    pub vm_update_secs: u64,
    /// Longest simulated wait a `Retry-After` asks for.
    pub max_retry_after_secs: u64,
}

impl Default for LroConfig {
    fn default() -> Self {
        Self {
            extension_install_secs: 150,
            extension_delete_secs: 90,
            vm_update_secs: 30,
            max_retry_after_secs: 30,
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            seed: 42,
            machines: 500,
            subscriptions: 2,
            outside_subscription_machines: 10,
            on_prem_computers: 5,
            regions: vec!["westeurope".into(), "northeurope".into()],
            resource_groups_per_subscription: 3,
            windows_ratio: 0.6,
            arc_ratio: 0.25,
            agents: AgentMix::default(),
            in_guest_legacy_ratio: 0.05,
            multi_homed_ratio: 0.05,
            no_identity_ratio: 0.2,
            user_assigned_ratio: 0.3,
            deallocated_ratio: 0.03,
            disconnected_ratio: 0.05,
            legacy_only_sources_ratio: 0.05,
            sysmon_ratio: 0.1,
            start: "2025-06-02T08:00:00Z".into(),
            time_scale: 60.0,
            lro: LroConfig::default(),
            throttle: ThrottleConfig::default(),
            faults: Vec::new(),
            request_log: RequestLogLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario file {path} is not valid JSON or YAML for a Scenario: {message}")]
    Parse { path: String, message: String },
    #[error("scenario field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl Scenario {
    /// Read a scenario from a `.json`, `.yaml` or `.yml` file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: p.clone(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed: Result<Scenario, String> = if is_json {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_saphyr::from_str(&text).map_err(|e| e.to_string())
        };
        let s = parsed.map_err(|message| ScenarioError::Parse { path: p, message })?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let ratio = |field: &'static str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ScenarioError::Invalid {
                    field,
                    problem: format!("{v} is not a ratio in 0..=1"),
                })
            }
        };
        ratio("windowsRatio", self.windows_ratio)?;
        ratio("arcRatio", self.arc_ratio)?;
        ratio("inGuestLegacyRatio", self.in_guest_legacy_ratio)?;
        ratio("multiHomedRatio", self.multi_homed_ratio)?;
        ratio("noIdentityRatio", self.no_identity_ratio)?;
        ratio("userAssignedRatio", self.user_assigned_ratio)?;
        ratio("deallocatedRatio", self.deallocated_ratio)?;
        ratio("disconnectedRatio", self.disconnected_ratio)?;
        ratio("legacyOnlySourcesRatio", self.legacy_only_sources_ratio)?;
        ratio("sysmonRatio", self.sysmon_ratio)?;
        if self.subscriptions == 0 {
            return Err(ScenarioError::Invalid {
                field: "subscriptions",
                problem: "must be at least 1".into(),
            });
        }
        if self.regions.is_empty() {
            return Err(ScenarioError::Invalid {
                field: "regions",
                problem: "needs at least one region".into(),
            });
        }
        if self.resource_groups_per_subscription == 0 {
            return Err(ScenarioError::Invalid {
                field: "resourceGroupsPerSubscription",
                problem: "must be at least 1".into(),
            });
        }
        let a = &self.agents;
        if [a.legacy_only, a.ama_only, a.both, a.none]
            .iter()
            .any(|w| !w.is_finite() || *w < 0.0)
            || a.legacy_only + a.ama_only + a.both + a.none <= 0.0
        {
            return Err(ScenarioError::Invalid {
                field: "agents",
                problem: "weights must be non-negative and not all zero".into(),
            });
        }
        if super::clock::parse_iso(&self.start).is_none() {
            return Err(ScenarioError::Invalid {
                field: "start",
                problem: format!(
                    "{:?} is not an ISO-8601 UTC time like 2025-06-02T08:00:00Z",
                    self.start
                ),
            });
        }
        if !self.time_scale.is_finite() || self.time_scale < 0.0 {
            return Err(ScenarioError::Invalid {
                field: "timeScale",
                problem: "must be >= 0".into(),
            });
        }
        if self.request_log.max_records == 0 {
            return Err(ScenarioError::Invalid {
                field: "requestLog",
                problem: "maxRecords must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Generate the fleet. Deterministic in `seed`.
    pub fn generate(&self) -> Fleet {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let tenant_id = guid(&mut rng);
        let subscriptions: Vec<String> = (0..self.subscriptions).map(|_| guid(&mut rng)).collect();
        let outside_subscription = guid(&mut rng);
        let region0 = self.regions[0].clone();
        let ws = |name: &str, rng: &mut StdRng| WorkspaceSpec {
            subscription: subscriptions[0].clone(),
            resource_group: "rg-sentinel".into(),
            name: name.into(),
            location: region0.clone(),
            customer_id: guid(rng),
        };
        let workspace = ws("law-sentinel-prod", &mut rng);
        let test_workspace = ws("law-sentinel-test", &mut rng);
        let other_workspace = ws("law-ops-legacy", &mut rng);

        let mut machines = Vec::new();
        let total = self.machines + self.outside_subscription_machines;
        for i in 0..total {
            let outside = i >= self.machines;
            let sub = if outside {
                outside_subscription.clone()
            } else {
                subscriptions[i % subscriptions.len()].clone()
            };
            machines.push(self.machine(&mut rng, i, sub, outside));
        }
        for i in 0..self.on_prem_computers {
            let os = if rng.random_bool(self.windows_ratio) {
                OsFamily::Windows
            } else {
                OsFamily::Linux
            };
            let role = role_for(&mut rng, os);
            let mut spec = MachineSpec {
                name: format!("onprem-{}-{i:03}", role.short()),
                kind: None,
                os,
                subscription: String::new(),
                resource_group: String::new(),
                location: String::new(),
                tags: BTreeMap::new(),
                identity: IdentitySpec::None,
                running: true,
                legacy: LegacyInstall::InGuest,
                multi_homed: false,
                ama: false,
                produces: BTreeSet::new(),
                out_of_scope: true,
            };
            spec.produces = produces(&mut rng, self, os, role, false);
            machines.push(spec);
        }
        Fleet {
            tenant_id,
            subscriptions,
            outside_subscription,
            workspace,
            test_workspace,
            other_workspace,
            machines,
        }
    }

    fn machine(
        &self,
        rng: &mut StdRng,
        i: usize,
        subscription: String,
        outside: bool,
    ) -> MachineSpec {
        let os = if rng.random_bool(self.windows_ratio) {
            OsFamily::Windows
        } else {
            OsFamily::Linux
        };
        let kind = if rng.random_bool(self.arc_ratio) {
            MachineKind::ArcServer
        } else {
            MachineKind::AzureVM
        };
        let role = role_for(rng, os);
        let criticality = match role {
            Role::DomainController | Role::LogForwarder => "high",
            _ => ["low", "medium", "medium", "high"][rng.random_range(0..4)],
        };
        let rg_idx = rng.random_range(0..self.resource_groups_per_subscription);
        let location = self.regions[rng.random_range(0..self.regions.len())].clone();
        let prefix = match kind {
            MachineKind::AzureVM => "vm",
            MachineKind::ArcServer => "arc",
        };
        let mut tags = BTreeMap::new();
        tags.insert("criticality".to_string(), criticality.to_string());
        tags.insert("role".to_string(), role.tag().to_string());
        let identity = match kind {
            MachineKind::ArcServer => IdentitySpec::SystemAssigned,
            MachineKind::AzureVM => {
                if rng.random_bool(self.no_identity_ratio) {
                    IdentitySpec::None
                } else if rng.random_bool(self.user_assigned_ratio) {
                    IdentitySpec::UserAssigned
                } else {
                    IdentitySpec::SystemAssigned
                }
            }
        };
        let running = match kind {
            MachineKind::AzureVM => !rng.random_bool(self.deallocated_ratio),
            MachineKind::ArcServer => !rng.random_bool(self.disconnected_ratio),
        };
        let a = &self.agents;
        let pick = rng.random::<f64>() * (a.legacy_only + a.ama_only + a.both + a.none);
        let (legacy, ama) = if pick < a.legacy_only {
            (true, false)
        } else if pick < a.legacy_only + a.ama_only {
            (false, true)
        } else if pick < a.legacy_only + a.ama_only + a.both {
            (true, true)
        } else {
            (false, false)
        };
        let legacy = if !legacy {
            LegacyInstall::None
        } else if rng.random_bool(self.in_guest_legacy_ratio) {
            LegacyInstall::InGuest
        } else {
            LegacyInstall::Extension
        };
        let multi_homed = legacy == LegacyInstall::Extension
            && os == OsFamily::Windows
            && rng.random_bool(self.multi_homed_ratio);
        let legacy_only_sources =
            os == OsFamily::Windows && rng.random_bool(self.legacy_only_sources_ratio);
        MachineSpec {
            name: format!("{prefix}-{}-{i:04}", role.short()),
            kind: Some(kind),
            os,
            resource_group: format!("rg-{}-{rg_idx}", if outside { "other" } else { "workload" }),
            subscription,
            location,
            tags,
            identity,
            running,
            legacy,
            multi_homed,
            ama,
            produces: produces(rng, self, os, role, legacy_only_sources),
            out_of_scope: outside,
        }
    }
}

/// The generated world before it becomes mutable state.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    pub tenant_id: String,
    pub subscriptions: Vec<String>,
    pub outside_subscription: String,
    pub workspace: WorkspaceSpec,
    pub test_workspace: WorkspaceSpec,
    /// The second workspace multi-homed legacy agents also report to (not served as an ARM resource).
    pub other_workspace: WorkspaceSpec,
    pub machines: Vec<MachineSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub customer_id: String,
}

impl WorkspaceSpec {
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.OperationalInsights/workspaces/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum IdentitySpec {
    None,
    SystemAssigned,
    UserAssigned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LegacyInstall {
    None,
    /// The MMA/OMS extension, visible to ARM.
    Extension,
    /// Installed in-guest (MSI or script): invisible to ARM, visible in Heartbeat.
    InGuest,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    pub name: String,
    /// `None`: an on-premises computer unknown to ARM.
    pub kind: Option<MachineKind>,
    pub os: OsFamily,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub identity: IdentitySpec,
    /// VM running / Arc connected.
    pub running: bool,
    pub legacy: LegacyInstall,
    pub multi_homed: bool,
    pub ama: bool,
    pub produces: BTreeSet<DataSourceType>,
    pub out_of_scope: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    DomainController,
    LogForwarder,
    Web,
    App,
    Db,
    Dns,
}

impl Role {
    fn tag(self) -> &'static str {
        match self {
            Role::DomainController => "domain-controller",
            Role::LogForwarder => "log-forwarder",
            Role::Web => "web",
            Role::App => "app",
            Role::Db => "db",
            Role::Dns => "dns",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Role::DomainController => "dc",
            Role::LogForwarder => "fwd",
            Role::Web => "web",
            Role::App => "app",
            Role::Db => "db",
            Role::Dns => "dns",
        }
    }
}

fn role_for(rng: &mut StdRng, os: OsFamily) -> Role {
    let r: f64 = rng.random();
    match os {
        OsFamily::Windows if r < 0.06 => Role::DomainController,
        OsFamily::Windows if r < 0.10 => Role::Dns,
        OsFamily::Windows if r < 0.35 => Role::Web,
        OsFamily::Windows if r < 0.75 => Role::App,
        OsFamily::Windows => Role::Db,
        OsFamily::Linux if r < 0.10 => Role::LogForwarder,
        OsFamily::Linux if r < 0.35 => Role::Web,
        OsFamily::Linux if r < 0.75 => Role::App,
        OsFamily::Linux => Role::Db,
    }
}

fn produces(
    rng: &mut StdRng,
    s: &Scenario,
    os: OsFamily,
    role: Role,
    legacy_only: bool,
) -> BTreeSet<DataSourceType> {
    use DataSourceType as D;
    let mut p = BTreeSet::new();
    let sysmon = rng.random_bool(s.sysmon_ratio);
    match os {
        OsFamily::Windows => {
            p.extend([
                D::WindowsSecurityEvents,
                D::WindowsEventLogs,
                D::WindowsPerformanceCounters,
            ]);
            if matches!(role, Role::DomainController | Role::Dns) {
                p.insert(D::WindowsDnsLogs);
            }
            if role == Role::Web {
                p.insert(D::IisLogs);
            }
            if sysmon {
                p.insert(D::WindowsSysmon);
            }
            if legacy_only {
                p.extend([D::WindowsFirewallLogs, D::WindowsApplicationServiceLogs]);
            }
        }
        OsFamily::Linux => {
            p.extend([D::LinuxSyslog, D::LinuxPerformanceCounters]);
            if role == Role::LogForwarder {
                p.insert(D::LinuxCef);
            }
            if sysmon {
                p.insert(D::LinuxSysmon);
            }
        }
    }
    p
}

fn guid(rng: &mut StdRng) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_fleet_other_seed_other_fleet() {
        let s = Scenario {
            machines: 60,
            ..Scenario::default()
        };
        assert_eq!(s.generate(), s.generate());
        let t = Scenario {
            seed: 7,
            ..s.clone()
        };
        assert_ne!(s.generate().machines, t.generate().machines);
    }

    #[test]
    fn default_fleet_is_mixed() {
        let f = Scenario::default().generate();
        let ms = &f.machines;
        assert_eq!(ms.iter().filter(|m| !m.out_of_scope).count(), 500);
        assert!(ms.iter().any(|m| m.kind == Some(MachineKind::ArcServer)));
        assert!(ms.iter().any(|m| m.kind == Some(MachineKind::AzureVM)));
        assert!(ms.iter().any(|m| m.kind.is_none()));
        assert!(ms.iter().any(|m| m.os == OsFamily::Linux));
        assert!(
            ms.iter()
                .any(|m| m.legacy == LegacyInstall::InGuest && m.kind.is_some())
        );
        assert!(ms.iter().any(|m| m.multi_homed));
        assert!(ms.iter().any(|m| m.identity == IdentitySpec::None));
        assert!(ms.iter().any(|m| !m.running));
        assert!(
            ms.iter()
                .any(|m| m.produces.contains(&DataSourceType::WindowsFirewallLogs))
        );
        assert!(
            ms.iter()
                .any(|m| m.produces.contains(&DataSourceType::LinuxCef))
        );
        assert!(
            ms.iter()
                .any(|m| m.produces.contains(&DataSourceType::WindowsDnsLogs))
        );
        assert!(ms.iter().any(|m| m.legacy != LegacyInstall::None && m.ama));
        assert!(ms.iter().any(|m| m.out_of_scope && m.kind.is_some()));
    }

    #[test]
    fn scenario_files_load_from_yaml_and_json_and_unknown_fields_are_rejected() {
        let dir = std::env::temp_dir().join(format!("sim-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("s.yaml");
        std::fs::write(&yaml, "seed: 7\nmachines: 12\ntimeScale: 0\nagents:\n  legacyOnly: 1\n  amaOnly: 0\n  both: 0\n  none: 0\nfaults:\n  - kind: ServerErrors\n    count: 2\n").unwrap();
        let s = Scenario::from_file(&yaml).unwrap();
        assert_eq!((s.seed, s.machines, s.faults.len()), (7, 12, 1));
        let json = dir.join("s.json");
        std::fs::write(&json, r#"{"machines": 3, "bogus": true}"#).unwrap();
        let e = Scenario::from_file(&json).unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("s.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_scenarios_are_explained() {
        let bad = Scenario {
            arc_ratio: 1.5,
            ..Scenario::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("arcRatio"), "{e}");
        let bad = Scenario {
            start: "yesterday".into(),
            ..Scenario::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("start"));
    }
}
