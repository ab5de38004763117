//! Why a plan stalled, said as what a person must do: each cause names the senders or machines
//! that hold the plan and the plan field, annotation or command that releases them. Pure: the
//! engine calls it with the planner's outcome and its records when the stall timer fires.

use std::collections::BTreeMap;

use crate::api::MigrationPlanSpec;
use crate::plan::{FlipDecision, MachineDecision, PlanOutcome};

use super::record::MachineRecord;

/// Machines named per cause; the rest are counted (a flip's senders: all the planner names).
const NAMED: usize = 10;

/// What is known beyond the planner's outcome.
pub(super) struct StallFacts<'a> {
    pub spec: &'a MigrationPlanSpec,
    pub outcome: &'a PlanOutcome,
    pub records: &'a BTreeMap<String, MachineRecord>,
    /// Per wave of the spec: the last parity verdict (`None`: never measured).
    pub parity: &'a [Option<bool>],
    /// Waves that only wait for a manual approval (the caller says so first).
    pub awaiting_approval: &'a [String],
    /// A machine that reached its final state (see `run::machine_finished`).
    pub finished: fn(&MachineDecision) -> bool,
}

/// One sentence per cause, joined with "; " (`None`: no cause beyond the approvals found).
pub(super) fn stall_reason(f: &StallFacts<'_>) -> Option<String> {
    let mut why: Vec<String> = Vec::new();
    let flips_blocked: Vec<&FlipDecision> = f
        .outcome
        .flips
        .iter()
        .filter(|d| !d.flipped && d.never.is_none() && !d.ready)
        .collect();
    // Streams held by the same senders are one cause (a host usually sends several).
    let mut groups: Vec<(Vec<&FlipDecision>, &FlipDecision)> = Vec::new();
    for flip in &flips_blocked {
        match groups.iter_mut().find(|(_, first)| {
            first.blocking_senders == flip.blocking_senders
                && first.blocking_total == flip.blocking_total
        }) {
            Some((members, _)) => members.push(flip),
            None => groups.push((vec![flip], flip)),
        }
    }
    for (members, first) in &groups {
        why.push(flip_blocked(f, members, first));
    }
    if !groups.is_empty() {
        why.push(
            "for each sender named: cover it (bring it into spec.scope so it gets AMA — an on-premises computer must be Arc-enabled first — or fix the in-scope machine as its reason says), or accept losing those streams from it at the flip by naming it in spec.legacy.flip.acceptedUncoveredSenders (`{computer: NAME, reason: WHY}`, optionally `dataSources: [...]`)"
                .to_string(),
        );
    }
    for (i, w) in f.outcome.waves.iter().enumerate() {
        if !w.admitted || w.gate_passed || f.awaiting_approval.contains(&w.name) {
            continue;
        }
        why.push(wave_held(f, i));
    }
    let failed: Vec<&MachineRecord> = f.records.values().filter(|r| r.progress.failed).collect();
    if !failed.is_empty() {
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for r in &failed {
            let code = r
                .object
                .status
                .as_ref()
                .and_then(|s| s.last_error.as_ref())
                .map_or_else(|| "no ARM error recorded".to_string(), |e| e.code.clone());
            *codes.entry(code).or_default() += 1;
        }
        let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
        let over_budget = f
            .outcome
            .warnings
            .iter()
            .any(|w| w.starts_with("failure budget exceeded"));
        why.push(format!(
            "{} machine(s) failed ({}): {}; fix the cause (`ama-migrator status` shows each machine's error), then retry them: in Kubernetes set annotation amamigrator.io/retry to a new value on their MachineMigrations; locally run `migrate` again with `--retry-failed` (or `--retry MACHINE`){}",
            failed.len(),
            codes.join(", "),
            names(failed.iter().map(|r| short(&r.key()))),
            if over_budget {
                "; the failure budget is spent, so no new machine starts until then — or raise spec.rollout.failureBudget (maxFailed / maxFailedPercent)"
            } else {
                ""
            }
        ));
    }
    // Machines with work left that no cause above explains.
    let explained_by_waves = |d: &MachineDecision| {
        d.wave
            .and_then(|w| f.outcome.waves.get(w))
            .is_some_and(|w| !w.admitted)
    };
    let waits_for_flip = |d: &MachineDecision| {
        !flips_blocked.is_empty()
            && d.assignments
                .iter()
                .any(|a| flips_blocked.iter().any(|fl| fl.ds_type == a.ds_type))
    };
    let mut no_wave = Vec::new();
    let mut unexplained = Vec::new();
    for d in &f.outcome.machines {
        if (f.finished)(d)
            || !d.blocked.is_empty()
            || f.records.get(&d.key).is_some_and(|r| r.progress.failed)
        {
            continue;
        }
        if d.wave.is_none() {
            no_wave.push(short(&d.key));
        } else if !explained_by_waves(d) && !waits_for_flip(d) {
            unexplained.push(short(&d.key));
        }
    }
    if !no_wave.is_empty() {
        why.push(format!(
            "{} machine(s) fall into no wave: {}; add a wave that takes their risk level (spec.rollout.waves[].maxRisk, with no count or percent limit on the last wave)",
            no_wave.len(),
            names(no_wave.into_iter())
        ));
    }
    if !unexplained.is_empty() {
        why.push(format!(
            "{} machine(s) have work left that nothing lets start: {}; `ama-migrator status` shows their step and conditions",
            unexplained.len(),
            names(unexplained.into_iter())
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// When no cause was found.
pub(super) const NO_CAUSE: &str =
    "nothing can progress and no cause was found; `ama-migrator status` shows every machine's step";

/// Legacy streams whose workspace flip waits for the same senders, which nothing covers.
fn flip_blocked(f: &StallFacts<'_>, streams: &[&FlipDecision], flip: &FlipDecision) -> String {
    let types: Vec<String> = streams.iter().map(|d| d.ds_type.to_string()).collect();
    let outside_scope = |s: &str| {
        f.outcome
            .out_of_scope_senders
            .iter()
            .any(|o| o.eq_ignore_ascii_case(s))
    };
    let (outside, inside): (Vec<&String>, Vec<&String>) =
        flip.blocking_senders.iter().partition(|s| outside_scope(s));
    let mut parts = Vec::new();
    if !outside.is_empty() {
        parts.push(format!(
            "outside the plan's scope (not selected by spec.scope, or seen only in Heartbeat): {}",
            all_names(outside.iter().map(|s| s.to_string()))
        ));
    }
    if !inside.is_empty() {
        let described = inside.iter().map(|name| {
            let decision = f.outcome.machines.iter().find(|d| {
                d.key
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            });
            let why = match decision {
                Some(d) if !d.blocked.is_empty() => d.blocked[0].to_string(),
                Some(d) if f.records.get(&d.key).is_some_and(|r| r.progress.failed) => {
                    "failed".to_string()
                }
                _ => "not migrated".to_string(),
            };
            format!("{name} ({why})")
        });
        parts.push(format!("in scope but without AMA: {}", names(described)));
    }
    let unnamed = flip
        .blocking_total
        .saturating_sub(flip.blocking_senders.len());
    format!(
        "{} {} on the legacy agent for the whole workspace: switching {} legacy collection off would cut {} sender(s) nothing else covers — {}{}",
        types.join(", "),
        if types.len() == 1 { "stays" } else { "stay" },
        if types.len() == 1 { "its" } else { "their" },
        flip.blocking_total,
        parts.join("; "),
        if unnamed > 0 {
            format!(" and {unnamed} more (the planner names the first 20)")
        } else {
            String::new()
        }
    )
}

/// An admitted wave whose gates do not pass (and that does not only wait for an approval).
fn wave_held(f: &StallFacts<'_>, i: usize) -> String {
    let w = &f.outcome.waves[i];
    let gates = f
        .spec
        .rollout
        .waves
        .get(i)
        .and_then(|d| d.gates.clone())
        .unwrap_or_default();
    let field = format!("spec.rollout.waves[{i}].gates");
    let eligible = w.members.saturating_sub(w.blocked);
    if let Some(ratio) = gates.min_success_ratio
        && w.failed > 0
        && eligible > 0
        && ((eligible - w.failed.min(eligible)) as f64 / eligible as f64) < ratio
    {
        return format!(
            "wave {} is below its success ratio: {} of its {eligible} eligible machine(s) failed, {field}.minSuccessRatio is {ratio}; retry its failed machines (below) or lower the ratio — the next wave starts only after this one passes",
            w.name, w.failed
        );
    }
    if gates.parity_tolerance_percent.is_some() {
        return match f.parity.get(i).copied().flatten() {
            Some(false) => format!(
                "wave {} failed its parity gate: the test workspace did not receive within {field}.parityTolerancePercent of what production received from the same machines; check the test DCR associations (`ama-migrator status`) or raise the tolerance",
                w.name
            ),
            _ => format!(
                "wave {} waits for its parity gate, which was never measured: give the test workspace's customer ID in the plan annotation amamigrator.io/test-workspace-customer-id, or remove {field}.parityTolerancePercent",
                w.name
            ),
        };
    }
    format!(
        "wave {} has not passed its gates ({field}); `ama-migrator status` shows its machines",
        w.name
    )
}

/// The last path segment of a resource ID (the machine's name).
fn short(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_string()
}

/// Up to [`NAMED`] names, then how many more.
fn names(it: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = it.collect();
    let mut out = all
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMED {
        out.push_str(&format!(" and {} more", all.len() - NAMED));
    }
    out
}

/// Every name (for lists the planner already capped).
fn all_names(it: impl Iterator<Item = String>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MachineMigration;
    use crate::api::plan::Risk;
    use crate::catalog::DataSourceType;
    use crate::plan::{BlockReason, Lane, WavePlan};

    fn spec() -> MigrationPlanSpec {
        serde_json::from_value(serde_json::json!({
            "workspace": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws",
            "location": "westeurope",
            "dataSources": [{"name": "security", "type": "WindowsSecurityEvents", "agent": "AMA"}],
            "rollout": {"waves": [{"name": "all", "maxRisk": "High", "gates": {"minSuccessRatio": 0.9}}]}
        }))
        .unwrap()
    }

    fn key(name: &str) -> String {
        format!(
            "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/{name}"
        )
    }

    fn decision(name: &str, blocked: Vec<BlockReason>) -> MachineDecision {
        MachineDecision {
            index: 0,
            key: key(name),
            os: None,
            risk: Risk::Low,
            wave: Some(0),
            lane: Lane::DropLegacy,
            blocked,
            assignments: Vec::new(),
            actions: Vec::new(),
            may_proceed: true,
            done: false,
        }
    }

    fn outcome(flips: Vec<FlipDecision>, machines: Vec<MachineDecision>) -> PlanOutcome {
        PlanOutcome {
            errors: Vec::new(),
            machines,
            waves: vec![WavePlan {
                name: "all".into(),
                members: 10,
                admitted: true,
                gate_passed: true,
                ..WavePlan::default()
            }],
            flips,
            plan_actions: Vec::new(),
            windows: Vec::new(),
            dcrs: Vec::new(),
            out_of_scope_senders: vec!["onprem-1".into(), key("outside-vm")],
            warnings: Vec::new(),
            held_by_window: false,
        }
    }

    fn record(name: &str, failed: bool) -> (String, MachineRecord) {
        let object: MachineMigration = serde_json::from_value(serde_json::json!({
            "apiVersion": "amamigrator.io/v1alpha1",
            "kind": "MachineMigration",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"plan": "p", "machineId": key(name), "os": "Windows", "kind": "AzureVM",
                     "wave": "all", "risk": "Low", "dataSources": []},
            "status": {"lastError": {"code": "VMAgentStatusCommunicationError", "message": "m"}}
        }))
        .unwrap();
        let mut r = MachineRecord::from_object(object);
        r.progress.failed = failed;
        (r.key(), r)
    }

    fn reason(
        spec: &MigrationPlanSpec,
        o: &PlanOutcome,
        records: &BTreeMap<String, MachineRecord>,
    ) -> String {
        stall_reason(&StallFacts {
            spec,
            outcome: o,
            records,
            parity: &[None],
            awaiting_approval: &[],
            finished: |d| d.done,
        })
        .unwrap_or_default()
    }

    #[test]
    fn a_blocked_flip_names_each_sender_by_where_it_is_and_the_two_ways_out() {
        let flip = FlipDecision {
            ds_type: DataSourceType::WindowsSecurityEvents,
            controls: vec!["SecurityEventCollectionConfiguration".into()],
            flipped: false,
            ready: false,
            may_flip_now: false,
            preconditions: Vec::new(),
            blocking_senders: vec![key("outside-vm"), "onprem-1".into(), "vm-off".into()],
            blocking_total: 4,
            never: None,
        };
        let mut off = decision("vm-off", vec![BlockReason::Deallocated]);
        off.done = false;
        let o = outcome(vec![flip], vec![off]);
        let text = reason(&spec(), &o, &BTreeMap::new());
        assert!(
            text.starts_with(
                "WindowsSecurityEvents stays on the legacy agent for the whole workspace"
            ),
            "{text}"
        );
        assert!(text.contains("outside the plan's scope (not selected by spec.scope, or seen only in Heartbeat): /subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/outside-vm, onprem-1"), "{text}");
        assert!(
            text.contains("in scope but without AMA: vm-off (VM is deallocated/stopped"),
            "{text}"
        );
        assert!(
            text.contains("and 1 more (the planner names the first 20)"),
            "{text}"
        );
        assert!(
            text.contains("spec.legacy.flip.acceptedUncoveredSenders"),
            "{text}"
        );
        assert!(text.contains("bring it into spec.scope"), "{text}");
        for internal in ["may_proceed", "actions=", "desired_now", "target Ama"] {
            assert!(!text.contains(internal), "{internal} in {text}");
        }
    }

    #[test]
    fn failed_machines_are_named_with_their_error_and_the_retry_annotation() {
        let mut o = outcome(
            Vec::new(),
            vec![decision("vm-1", Vec::new()), decision("vm-2", Vec::new())],
        );
        o.waves[0].gate_passed = false;
        o.waves[0].failed = 2;
        o.warnings
            .push("failure budget exceeded (2 failed): no new machine starts".into());
        let records: BTreeMap<_, _> = [record("vm-1", true), record("vm-2", true)]
            .into_iter()
            .collect();
        let text = reason(&spec(), &o, &records);
        assert!(text.starts_with("wave all is below its success ratio: 2 of its 10 eligible machine(s) failed, spec.rollout.waves[0].gates.minSuccessRatio is 0.9"), "{text}");
        assert!(
            text.contains("2 machine(s) failed (VMAgentStatusCommunicationError ×2): vm-1, vm-2"),
            "{text}"
        );
        assert!(text.contains("amamigrator.io/retry"), "{text}");
        assert!(text.contains("spec.rollout.failureBudget"), "{text}");
        assert!(
            !text.contains("have work left"),
            "failed machines are explained: {text}"
        );
    }

    #[test]
    fn machines_in_no_wave_are_named_with_the_field_to_change() {
        let mut stray = decision("vm-9", Vec::new());
        stray.wave = None;
        let o = outcome(Vec::new(), vec![stray]);
        let text = reason(&spec(), &o, &BTreeMap::new());
        assert!(
            text.starts_with("1 machine(s) fall into no wave: vm-9; add a wave"),
            "{text}"
        );
    }
}
