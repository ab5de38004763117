//! DCRs the plan needs (catalog generation), the ETA under stated ARM quotas, and a
//! serialisable report for `ama-migrator plan`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::duration::{format_duration, parse_duration};
use crate::api::plan::Agent;
use crate::catalog::dcr::{DcrContext, SourceRequest, generate};
use crate::catalog::{Catalog, OsFamily};

use super::errors::{PlanError, PlanErrorKind};
use super::fleet::{Fleet, Lane};
use super::{DcrPlan, MachineAction, PlanInput, PlanOutcome, TransitionWindow};

/// Generate the plan's DCRs; errors name the plan data source.
pub(crate) fn dcrs_and_errors(
    input: &PlanInput<'_>,
    fleet: &Fleet,
    _outcome: &PlanOutcome,
) -> (Vec<DcrPlan>, Vec<PlanError>) {
    let spec = input.spec;
    let catalog = Catalog::with_overrides(&spec.catalog_overrides).unwrap_or_default();
    let mut errors = Vec::new();
    let ama: Vec<(usize, SourceRequest)> = spec
        .data_sources
        .iter()
        .enumerate()
        .filter(|(_, d)| d.agent == Agent::Ama && catalog.row(d.type_).ama.is_supported())
        .map(|(i, d)| (i, SourceRequest::new(d.type_, d.settings.clone())))
        .collect();
    let mut targets = vec![(spec.workspace.clone(), spec.location.clone(), false)];
    if let Some(tw) = &spec.test_workspace {
        targets.push((tw.resource_id.clone(), tw.location.clone(), true));
    }
    let mut out = Vec::new();
    for (ws, location, test) in targets {
        let ctx = DcrContext {
            plan_name: if test {
                format!("{}-test", input.plan_name)
            } else {
                input.plan_name.to_string()
            },
            workspace_resource_id: ws,
            location,
            workspace_location: Some(spec.location.clone()),
        };
        // Attribute errors to the plan's field by generating each source alone first.
        let mut ok = true;
        if !test {
            for (i, s) in &ama {
                if let Err(e) = generate(&catalog, &ctx, std::slice::from_ref(s)) {
                    ok = false;
                    errors.push(PlanError::new(
                        PlanErrorKind::InvalidField,
                        format!("spec.dataSources[{i}].settings"),
                        format!("{}: {}", e.location, e.problem),
                        e.fix,
                    ));
                }
            }
        }
        if !ok {
            continue;
        }
        let reqs: Vec<SourceRequest> = ama.iter().map(|(_, s)| s.clone()).collect();
        match generate(&catalog, &ctx, &reqs) {
            Ok(set) => {
                for r in set.rules {
                    let machines = fleet
                        .machines
                        .iter()
                        .filter(|m| m.os == Some(r.os) && m.blocked.is_empty())
                        .filter(|m| !test || m.legacy_here)
                        .count();
                    out.push(DcrPlan {
                        name: r.name.clone(),
                        os: r.os,
                        test_workspace: test,
                        data_sources: spec
                            .data_sources
                            .iter()
                            .filter(|d| d.agent == Agent::Ama && r.data_sources.contains(&d.type_))
                            .map(|d| d.name.clone())
                            .collect(),
                        machines,
                        body: serde_json::to_value(&r.rule).ok(),
                        notes: set
                            .requirements
                            .iter()
                            .filter(|q| q.data_source.is_none_or(|t| r.data_sources.contains(&t)))
                            .map(|q| q.message.clone())
                            .collect(),
                    });
                }
            }
            Err(e) => errors.push(PlanError::new(
                PlanErrorKind::InvalidField,
                "spec.dataSources",
                format!("{}: {}", e.location, e.problem),
                e.fix,
            )),
        }
    }
    (out, errors)
}

/// The quota model behind the ETA (domain.md B.2, B.3, B.10), printed with every estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtaAssumptions {
    pub arm_writes_per_second: f64,
    pub arm_reads_per_second: f64,
    pub compute_update_vm_per_minute: f64,
    pub reads_per_machine: f64,
    pub machine_duration_minutes: f64,
    pub note: &'static str,
}

impl Default for EtaAssumptions {
    fn default() -> Self {
        Self {
            arm_writes_per_second: 10.0,
            arm_reads_per_second: 25.0,
            compute_update_vm_per_minute: 500.0,
            reads_per_machine: 25.0,
            machine_duration_minutes: 30.0,
            note: "ARM token buckets per subscription+region+principal (writes 10/s, reads 25/s, deletes 10/s); Compute Update-VM 500/min per subscription+region (extension PUT/DELETE, identity PATCH); per machine: identity PATCH if needed, AMA install, one DCRA per DCR, legacy removal if unused, ~25 reads (LRO polls, checks); ~30 min end-to-end per machine (install, first data, verification, removal); soaks and parity windows added per wave; approvals not counted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveReport {
    pub name: String,
    pub canary: bool,
    pub machines: usize,
    pub low: usize,
    pub medium: usize,
    pub high: usize,
    pub windows_os: usize,
    pub linux_os: usize,
    pub blocked: usize,
    pub soak: Option<String>,
    pub gates: Vec<String>,
    pub eta_hours: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlipReport {
    pub data_source_type: String,
    pub workspace_settings: Vec<String>,
    pub may_flip_now: bool,
    pub never: Option<String>,
    pub preconditions: Vec<(String, bool)>,
    pub blocking_senders: Vec<String>,
    pub blocking_total: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedReport {
    pub machine: String,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DcrReport {
    pub name: String,
    pub os: OsFamily,
    pub test_workspace: bool,
    pub data_sources: Vec<String>,
    pub machines: usize,
    pub notes: Vec<String>,
}

/// What `ama-migrator plan` prints (JSON/YAML as is; the table renders it).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub plan: String,
    pub valid: bool,
    pub errors: Vec<String>,
    pub machines_in_scope: usize,
    pub waves: Vec<WaveReport>,
    pub keep_legacy: BTreeMap<String, usize>,
    pub blocked: Vec<BlockedReport>,
    pub blocked_total: usize,
    pub flips: Vec<FlipReport>,
    pub windows: Vec<TransitionWindow>,
    pub dcrs: Vec<DcrReport>,
    pub out_of_scope_senders: Vec<String>,
    pub warnings: Vec<String>,
    pub eta_hours: f64,
    pub eta_assumptions: EtaAssumptions,
    pub first_actions: BTreeMap<String, usize>,
}

impl PlanReport {
    pub fn build(input: &PlanInput<'_>, outcome: &PlanOutcome) -> Self {
        let spec = input.spec;
        let a = EtaAssumptions::default();
        let dcr_count = outcome
            .dcrs
            .iter()
            .filter(|d| !d.test_workspace)
            .count()
            .max(1) as f64;
        // Per subscription+region group: the busiest group bounds the wave.
        let mut waves = Vec::new();
        let mut total_eta = 0.0;
        for (w_idx, w) in spec.rollout.waves.iter().enumerate() {
            let mut groups: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
            let mut blocked = 0;
            for m in outcome.machines.iter().filter(|m| m.wave == Some(w_idx)) {
                if !m.blocked.is_empty() {
                    blocked += 1;
                    continue;
                }
                let inv = &input.inventory[m.index];
                let identity =
                    if inv.has_system_identity() || inv.identity_type.contains("UserAssigned") {
                        0.0
                    } else {
                        1.0
                    };
                let removal = if m.lane == Lane::DropLegacy { 1.0 } else { 0.0 };
                let e = groups
                    .entry((
                        inv.subscription_id.to_ascii_lowercase(),
                        inv.location.to_ascii_lowercase(),
                    ))
                    .or_default();
                e.0 += identity + 1.0 + dcr_count + removal; // ARM writes+deletes
                e.1 += identity + 1.0 + removal; // Compute Update-VM ops
            }
            let members = outcome
                .machines
                .iter()
                .filter(|m| m.wave == Some(w_idx))
                .count();
            let active = (members - blocked) as f64;
            let quota_h = groups
                .values()
                .map(|(writes, compute)| {
                    let reads =
                        0.0_f64.max(active) * a.reads_per_machine / groups.len().max(1) as f64;
                    (writes / (a.arm_writes_per_second * 3600.0))
                        .max(compute / (a.compute_update_vm_per_minute * 60.0))
                        .max(reads / (a.arm_reads_per_second * 3600.0))
                })
                .fold(0.0, f64::max);
            let concurrency_h = (active / spec.rollout.max_parallel.max(1) as f64).ceil()
                * a.machine_duration_minutes
                / 60.0;
            let soak_h = w
                .soak
                .as_deref()
                .and_then(|s| parse_duration(s).ok())
                .unwrap_or_default()
                .as_secs_f64()
                / 3600.0;
            let parity_h = w
                .gates
                .as_ref()
                .and_then(|g| g.parity_window.as_deref())
                .and_then(|s| parse_duration(s).ok())
                .unwrap_or_default()
                .as_secs_f64()
                / 3600.0;
            let eta = quota_h.max(concurrency_h) + soak_h.max(parity_h);
            total_eta += eta;
            let wp = &outcome.waves[w_idx];
            let mut gates = Vec::new();
            if let Some(g) = &w.gates {
                if let Some(r) = g.min_success_ratio {
                    gates.push(format!("success ≥ {:.0}%", r * 100.0));
                }
                if let (Some(p), Some(win)) = (g.parity_tolerance_percent, &g.parity_window) {
                    gates.push(format!("parity within {p}% over {win}"));
                }
                if g.manual_approval {
                    gates.push("manual approval".into());
                }
            }
            waves.push(WaveReport {
                name: w.name.clone(),
                canary: w.canary,
                machines: wp.members,
                low: wp.by_risk[0],
                medium: wp.by_risk[1],
                high: wp.by_risk[2],
                windows_os: wp.by_os[0],
                linux_os: wp.by_os[1],
                blocked: wp.blocked,
                soak: w.soak.clone(),
                gates,
                eta_hours: round2(eta),
            });
        }
        let mut keep_legacy = BTreeMap::new();
        let mut blocked = Vec::new();
        let mut blocked_total = 0;
        let mut first_actions = BTreeMap::new();
        for m in &outcome.machines {
            if let Lane::KeepLegacy(r) = m.lane {
                *keep_legacy.entry(r.to_string()).or_insert(0) += 1;
            }
            if !m.blocked.is_empty() {
                blocked_total += 1;
                if blocked.len() < 50 {
                    blocked.push(BlockedReport {
                        machine: input.inventory[m.index].name.clone(),
                        reasons: m.blocked.iter().map(|b| b.to_string()).collect(),
                    });
                }
            }
            for a in &m.actions {
                let k = match a {
                    MachineAction::EnableIdentity => "EnableIdentity".to_string(),
                    MachineAction::InstallAma => "InstallAma".to_string(),
                    MachineAction::Associate { ds, test } => {
                        format!("Associate {ds}{}", if *test { " (test)" } else { "" })
                    }
                    MachineAction::Dissociate { ds, test } => {
                        format!("Dissociate {ds}{}", if *test { " (test)" } else { "" })
                    }
                    MachineAction::RemoveLegacy => "RemoveLegacy".to_string(),
                };
                *first_actions.entry(k).or_insert(0) += 1;
            }
        }
        let mut errors: Vec<String> = outcome.errors.iter().map(|e| e.to_string()).collect();
        if outcome.machines.is_empty() {
            // As the engine does (`NoMachinesInScope`): nothing to migrate is a mistake in the
            // scope or the inventory, not a plan that is done.
            errors.push(format!(
                "spec.scope: selects none of the {} machine(s) in the inventory; fix: correct spec.scope (subscriptions, resourceGroups, tagSelector, kinds, excludes), or export the inventory from the subscriptions the plan names",
                input.inventory.len()
            ));
        }
        PlanReport {
            plan: input.plan_name.to_string(),
            valid: errors.is_empty(),
            errors,
            machines_in_scope: outcome.machines.len(),
            waves,
            keep_legacy,
            blocked,
            blocked_total,
            flips: outcome
                .flips
                .iter()
                .map(|f| FlipReport {
                    data_source_type: f.ds_type.to_string(),
                    workspace_settings: f.controls.clone(),
                    may_flip_now: f.may_flip_now,
                    never: f.never.clone(),
                    preconditions: f.preconditions.clone(),
                    blocking_senders: f.blocking_senders.clone(),
                    blocking_total: f.blocking_total,
                })
                .collect(),
            windows: outcome.windows.clone(),
            dcrs: outcome
                .dcrs
                .iter()
                .map(|d| DcrReport {
                    name: d.name.clone(),
                    os: d.os,
                    test_workspace: d.test_workspace,
                    data_sources: d.data_sources.clone(),
                    machines: d.machines,
                    notes: d.notes.clone(),
                })
                .collect(),
            out_of_scope_senders: outcome.out_of_scope_senders.clone(),
            warnings: outcome.warnings.clone(),
            eta_hours: round2(total_eta),
            eta_assumptions: a,
            first_actions,
        }
    }

    /// Human-readable rendering.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Plan {}: {} machines in scope — {}",
            self.plan,
            self.machines_in_scope,
            if self.valid { "VALID" } else { "REFUSED" }
        );
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
        let _ = writeln!(
            s,
            "\nWAVES\n  {:<12} {:>8} {:>5} {:>6} {:>5} {:>8} {:>6} {:>7} {:>8}  gates",
            "name", "machines", "low", "medium", "high", "windows", "linux", "blocked", "eta(h)"
        );
        for w in &self.waves {
            let _ = writeln!(
                s,
                "  {:<12} {:>8} {:>5} {:>6} {:>5} {:>8} {:>6} {:>7} {:>8.2}  {}{}{}",
                w.name,
                w.machines,
                w.low,
                w.medium,
                w.high,
                w.windows_os,
                w.linux_os,
                w.blocked,
                w.eta_hours,
                if w.canary { "canary; " } else { "" },
                w.soak
                    .as_deref()
                    .map(|x| format!("soak {x}; "))
                    .unwrap_or_default(),
                w.gates.join(", ")
            );
        }
        if !self.keep_legacy.is_empty() {
            let _ = writeln!(s, "\nMACHINES KEEPING THE LEGACY AGENT");
            for (r, n) in &self.keep_legacy {
                let _ = writeln!(s, "  {n:>6}  {r}");
            }
        }
        let _ = writeln!(s, "\nBLOCKED MACHINES ({})", self.blocked_total);
        for b in &self.blocked {
            let _ = writeln!(s, "  {}: {}", b.machine, b.reasons.join("; "));
        }
        let _ = writeln!(s, "\nLEGACY FLIPS");
        for f in &self.flips {
            let state = if let Some(n) = &f.never {
                format!("never: {n}")
            } else if f.may_flip_now {
                "may flip now".into()
            } else {
                "waiting".into()
            };
            let _ = writeln!(
                s,
                "  {} [{}] — {}",
                f.data_source_type,
                f.workspace_settings.join(", "),
                state
            );
            for (p, ok) in &f.preconditions {
                let _ = writeln!(s, "    [{}] {p}", if *ok { "x" } else { " " });
            }
            if f.blocking_total > 0 {
                let _ = writeln!(
                    s,
                    "    blocked by {} sender(s): {}",
                    f.blocking_total,
                    f.blocking_senders.join(", ")
                );
            }
        }
        let _ = writeln!(s, "\nDUPLICATE/GAP WINDOWS (worst case)");
        for w in &self.windows {
            let _ = writeln!(
                s,
                "  {:?} {} on {} machine(s): {}{}",
                w.kind,
                w.what,
                w.machines,
                format_duration(w.worst_case),
                w.bound
                    .map(|b| format!(" (bound {})", format_duration(b)))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(s, "\nDCRS");
        for d in &self.dcrs {
            let _ = writeln!(
                s,
                "  {} ({:?}{}) for {} machine(s): {}",
                d.name,
                d.os,
                if d.test_workspace {
                    ", test workspace"
                } else {
                    ""
                },
                d.machines,
                d.data_sources.join(", ")
            );
            for n in &d.notes {
                let _ = writeln!(s, "    note: {n}");
            }
        }
        if !self.out_of_scope_senders.is_empty() {
            let _ = writeln!(
                s,
                "\nLEGACY SENDERS OUTSIDE THE PLAN (gate the flips): {}",
                self.out_of_scope_senders.join(", ")
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(s, "\nFIRST STEPS NOW");
        for (a, n) in &self.first_actions {
            let _ = writeln!(s, "  {n:>6}  {a}");
        }
        let _ = writeln!(
            s,
            "\nETA ≈ {:.1} h under these assumptions: {}",
            self.eta_hours, self.eta_assumptions.note
        );
        s
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
