//! The fleet as the planner sees it: which machines are in scope, their risk, whether they are
//! blocked, whether their legacy agent reports to the workspace, and whether it may be removed.

use std::collections::{HashMap, HashSet};

use crate::api::plan::{
    Agent, IdentityPolicy, MigrationPlanSpec, Risk, RiskRule, Scope, UninstallPolicy,
};
use crate::catalog::legacy::LegacyState;
use crate::catalog::{Catalog, DataSourceType, LegacyConfig, OsFamily};
use crate::inventory::{AgentKind, CATEGORY_LEGACY, InventoryMachine, MachineKind};

use super::{MachineState, PlanInput, TypeSet};

/// Why a machine cannot migrate now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReason {
    UnknownOs(String),
    UnknownKind(String),
    Deallocated,
    Disconnected,
    /// No managed identity and `spec.identity: RequireExisting`.
    MissingIdentity,
    /// Another plan's scope also selects it.
    ClaimedByOtherPlan(String),
    Held,
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownOs(os) => write!(f, "unknown OS {os:?} (expected Windows or Linux)"),
            Self::UnknownKind(t) => write!(f, "unknown resource type {t:?}"),
            Self::Deallocated => f.write_str("VM is deallocated/stopped: extensions cannot be installed; start it or exclude it"),
            Self::Disconnected => f.write_str("Arc server is disconnected: extension operations cannot complete; reconnect it or exclude it"),
            Self::MissingIdentity => f.write_str("no managed identity and spec.identity is RequireExisting; assign an identity or set identity: EnableSystemAssigned"),
            Self::ClaimedByOtherPlan(p) => write!(f, "also in the scope of plan {p:?}; exclude it from one plan"),
            Self::Held => f.write_str("held by annotation amamigrator.io/hold"),
        }
    }
}

/// What happens to the legacy agent on a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// No legacy agent reports to the workspace (none installed, or removed).
    NoLegacy,
    /// A legacy agent is installed but reports only to other workspaces: left alone.
    OtherWorkspaceOnly,
    /// The legacy agent is removed once AMA covers everything it sends here.
    DropLegacy,
    /// The legacy agent stays; AMA-bound sources move when the workspace stream flips.
    KeepLegacy(KeepReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// A plan source stays on the legacy agent (e.g. AMA-unsupported).
    LegacySource(DataSourceType),
    /// It also reports to another workspace (multi-homed).
    MultiHomed,
    /// The workspace enables a legacy source the plan does not list.
    UnlistedSource(DataSourceType),
    /// `spec.legacy.uninstall: Never`.
    UninstallNever,
    /// Seen in Heartbeat but not installed as an extension: ARM cannot remove it.
    NotAnExtension,
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LegacySource(t) => write!(f, "needs the legacy agent for {t}"),
            Self::MultiHomed => f.write_str("legacy agent also reports to another workspace"),
            Self::UnlistedSource(t) => write!(
                f,
                "workspace enables legacy {t}, which the plan does not list"
            ),
            Self::UninstallNever => f.write_str("spec.legacy.uninstall is Never"),
            Self::NotAnExtension => {
                f.write_str("legacy agent not installed as an extension (seen only in Heartbeat)")
            }
        }
    }
}

/// One in-scope machine.
#[derive(Clone, Debug)]
pub(crate) struct FleetMachine {
    pub index: usize,
    pub key: String,
    pub name: String,
    pub os: Option<OsFamily>,
    pub risk: Risk,
    pub blocked: Vec<BlockReason>,
    /// A legacy agent on it reports to this workspace now.
    pub legacy_here: bool,
    pub lane: Lane,
    pub needs_identity: bool,
    pub state: MachineState,
}

/// A legacy sender to the workspace that the plan does not migrate.
#[derive(Clone, Debug)]
pub(crate) struct OutSender {
    pub name: String,
    pub key: Option<String>,
    pub os: Option<OsFamily>,
}

pub(crate) struct Fleet {
    pub machines: Vec<FleetMachine>,
    pub out_of_scope: Vec<OutSender>,
    /// Legacy streams on now (per type), taking the plan's flips into account.
    pub stream_on: TypeSet,
    /// Types controlled outside the workspace's dataSources.
    pub not_in_data_sources: TypeSet,
    pub unlisted: Vec<DataSourceType>,
}

/// Does `scope` select machine `m`?
pub(crate) fn in_scope(scope: &Scope, m: &InventoryMachine, key: &str) -> bool {
    if !scope.kinds.is_empty() {
        match m.kind() {
            Some(k) if scope.kinds.iter().any(|s| *s == k.into()) => {}
            _ => return false,
        }
    }
    if !scope.subscriptions.is_empty()
        && !scope
            .subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&m.subscription_id))
    {
        return false;
    }
    if !scope.resource_groups.is_empty() {
        let rg = format!(
            "/subscriptions/{}/resourcegroups/{}",
            m.subscription_id, m.resource_group
        );
        if !scope
            .resource_groups
            .iter()
            .any(|g| g.trim_end_matches('/').eq_ignore_ascii_case(&rg))
        {
            return false;
        }
    }
    for (k, v) in &scope.tag_selector {
        if tag(m, k) != Some(v.as_str()) {
            return false;
        }
    }
    !scope
        .excludes
        .iter()
        .any(|e| e.eq_ignore_ascii_case(key) || e.eq_ignore_ascii_case(&m.name))
}

fn tag<'a>(m: &'a InventoryMachine, key: &str) -> Option<&'a str> {
    m.tags
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// First matching rule wins.
pub(crate) fn classify(
    rules: &[RiskRule],
    default: Risk,
    m: &InventoryMachine,
    os: Option<OsFamily>,
) -> Risk {
    for r in rules {
        let mm = &r.match_;
        let ok = mm.tags.iter().all(|(k, v)| tag(m, k) == Some(v.as_str()))
            && mm.os.is_none_or(|o| Some(o) == os)
            && mm.role.as_deref().is_none_or(|v| tag(m, "role") == Some(v))
            && mm
                .criticality
                .as_deref()
                .is_none_or(|v| tag(m, "criticality") == Some(v));
        if ok {
            return r.risk;
        }
    }
    default
}

/// Whether the legacy agent would deliver `t` from a machine that reports to the workspace.
pub(crate) fn legacy_state_on(legacy: &LegacyConfig, t: DataSourceType, flipped: TypeSet) -> bool {
    if flipped.contains(t) {
        return false;
    }
    match legacy.state(t) {
        LegacyState::Enabled | LegacyState::NotInDataSources => true,
        LegacyState::Disabled => false,
    }
}

impl Fleet {
    pub fn build(input: &PlanInput<'_>, _catalog: &Catalog) -> Fleet {
        let spec = input.spec;
        let mut stream_on = TypeSet::EMPTY;
        let mut not_in_ds = TypeSet::EMPTY;
        for t in DataSourceType::ALL {
            if legacy_state_on(input.legacy, t, input.progress.flipped) {
                stream_on.insert(t);
            }
            if input.legacy.state(t) == LegacyState::NotInDataSources {
                not_in_ds.insert(t);
            }
        }
        let listed: TypeSet = spec.data_sources.iter().map(|d| d.type_).collect();
        let unlisted: Vec<DataSourceType> = DataSourceType::ALL
            .into_iter()
            .filter(|t| input.legacy.enables(*t) && !listed.contains(*t))
            .collect();

        // Heartbeat: which resource IDs send through the legacy agent here.
        let mut hb_legacy: HashSet<&str> = HashSet::new();
        for s in input.heartbeat {
            if s.category.eq_ignore_ascii_case(CATEGORY_LEGACY)
                && let Some(rid) = &s.resource_id
            {
                hb_legacy.insert(rid.as_str());
            }
        }
        let have_heartbeat = !input.heartbeat.is_empty();
        let cid = spec
            .workspace_customer_id
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());

        let claims: Vec<&super::OtherPlan> = input
            .other_plans
            .iter()
            .filter(|o| o.name != input.plan_name)
            .collect();

        let mut machines = Vec::new();
        let mut out_of_scope = Vec::new();
        let mut in_scope_keys: HashMap<String, ()> = HashMap::new();
        for (index, m) in input.inventory.iter().enumerate() {
            let key = m.id.to_ascii_lowercase();
            let os = m.os();
            let state = input.states.get(&key).cloned().unwrap_or_default();
            let legacy_exts: Vec<&str> = m
                .agents(AgentKind::Legacy)
                .map(|e| e.workspace_id.trim())
                .collect();
            let hb_here = hb_legacy.contains(key.as_str());
            let ext_present = !legacy_exts.is_empty();
            let legacy_present = (ext_present || hb_here) && !state.legacy_removed;
            let ext_here = match cid {
                Some(c) => legacy_exts.iter().any(|w| w.eq_ignore_ascii_case(c)),
                None => ext_present,
            };
            let reports_here = legacy_present && (hb_here || ext_here);
            let other_ws = match cid {
                Some(c) => legacy_exts
                    .iter()
                    .any(|w| !w.is_empty() && !w.eq_ignore_ascii_case(c)),
                None => have_heartbeat && ext_present && !hb_here,
            };
            if !in_scope(&spec.scope, m, &key) {
                if reports_here {
                    out_of_scope.push(OutSender {
                        name: m.name.clone(),
                        key: Some(key),
                        os,
                    });
                }
                continue;
            }
            in_scope_keys.insert(key.clone(), ());

            let mut blocked = Vec::new();
            if os.is_none() {
                blocked.push(BlockReason::UnknownOs(m.os_type.clone()));
            }
            if m.kind().is_none() {
                blocked.push(BlockReason::UnknownKind(m.resource_type.clone()));
            }
            if m.kind() == Some(MachineKind::AzureVM) && m.is_deallocated() {
                blocked.push(BlockReason::Deallocated);
            }
            if m.is_disconnected() {
                blocked.push(BlockReason::Disconnected);
            }
            let has_identity = m.identity_type.contains("SystemAssigned")
                || m.identity_type.contains("UserAssigned")
                || state.identity_enabled;
            let needs_identity = !has_identity && m.kind() == Some(MachineKind::AzureVM);
            if needs_identity && spec.identity == IdentityPolicy::RequireExisting {
                blocked.push(BlockReason::MissingIdentity);
            }
            for o in &claims {
                if in_scope(&o.scope, m, &key) {
                    blocked.push(BlockReason::ClaimedByOtherPlan(o.name.clone()));
                }
            }
            if state.held {
                blocked.push(BlockReason::Held);
            }

            let lane = if !legacy_present {
                Lane::NoLegacy
            } else if !reports_here {
                Lane::OtherWorkspaceOnly
            } else {
                keep_reason(spec, os, stream_on, &unlisted, other_ws, ext_present)
                    .map_or(Lane::DropLegacy, Lane::KeepLegacy)
            };
            let risk = classify(&spec.rollout.risk_rules, spec.rollout.default_risk, m, os);
            machines.push(FleetMachine {
                index,
                key,
                name: m.name.clone(),
                os,
                risk,
                blocked,
                legacy_here: reports_here,
                lane,
                needs_identity,
                state,
            });
        }

        // Heartbeat-only legacy senders (on-premises, MSI installs outside the inventory).
        let inventory_keys: HashSet<String> = input
            .inventory
            .iter()
            .map(|m| m.id.to_ascii_lowercase())
            .collect();
        let mut seen = HashSet::new();
        for s in input.heartbeat {
            if !s.category.eq_ignore_ascii_case(CATEGORY_LEGACY) {
                continue;
            }
            let known = s
                .resource_id
                .as_deref()
                .is_some_and(|r| inventory_keys.contains(r));
            if known {
                continue; // counted above, in scope or out
            }
            let id = s.resource_id.clone().unwrap_or_else(|| s.computer.clone());
            if seen.insert(id.to_ascii_lowercase()) {
                out_of_scope.push(OutSender {
                    name: s.computer.clone(),
                    key: s.resource_id.clone(),
                    os: s.os,
                });
            }
        }
        Fleet {
            machines,
            out_of_scope,
            stream_on,
            not_in_data_sources: not_in_ds,
            unlisted,
        }
    }
}

fn keep_reason(
    spec: &MigrationPlanSpec,
    os: Option<OsFamily>,
    stream_on: TypeSet,
    unlisted: &[DataSourceType],
    other_ws: bool,
    ext_present: bool,
) -> Option<KeepReason> {
    if !ext_present {
        return Some(KeepReason::NotAnExtension);
    }
    if spec.legacy.uninstall == UninstallPolicy::Never {
        return Some(KeepReason::UninstallNever);
    }
    if other_ws {
        return Some(KeepReason::MultiHomed);
    }
    let os = os?;
    if let Some(d) = spec
        .data_sources
        .iter()
        .find(|d| d.type_.os() == os && d.agent == Agent::Legacy && stream_on.contains(d.type_))
    {
        return Some(KeepReason::LegacySource(d.type_));
    }
    unlisted
        .iter()
        .find(|t| t.os() == os)
        .map(|t| KeepReason::UnlistedSource(*t))
}
