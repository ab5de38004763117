//! Spec checks that refuse a plan before it acts: each names the field and the fix.

use crate::api::duration::parse_duration;
use crate::api::plan::{Agent, CutoverPolicy, FlipWhen, MigrationPlanSpec};
use crate::azure::ResourceId;
use crate::catalog::table::Support;
use crate::catalog::{Catalog, DataSourceType};

use super::PlanInput;
use super::errors::{PlanError, PlanErrorKind as K};
use super::fleet::{BlockReason, Fleet};

const WORKSPACE_TYPE: &str = "Microsoft.OperationalInsights/workspaces";

fn check_workspace_id(field: &str, id: &str, out: &mut Vec<PlanError>) {
    match ResourceId::parse(id) {
        Err(e) => out.push(PlanError::new(
            K::MalformedResourceId,
            field,
            e.to_string(),
            "copy the workspace's resource ID from its Properties page (JSON view)",
        )),
        Ok(rid) if !rid.is_type(WORKSPACE_TYPE) => out.push(PlanError::new(
            K::MalformedResourceId,
            field,
            format!(
                "{id:?} is not a Log Analytics workspace (type {:?})",
                rid.top_type().unwrap_or("none")
            ),
            format!("use an ID of type {WORKSPACE_TYPE}"),
        )),
        Ok(_) => {}
    }
}

fn check_duration(field: String, value: Option<&str>, out: &mut Vec<PlanError>) {
    if let Some(v) = value
        && let Err(e) = parse_duration(v)
    {
        out.push(PlanError::new(
            K::BadDuration,
            field,
            e.to_string(),
            "write e.g. 30m, 1h30m or 2d",
        ));
    }
}

/// Checks that need only the spec.
pub(crate) fn validate_spec(spec: &MigrationPlanSpec) -> Vec<PlanError> {
    let mut out = Vec::new();
    check_workspace_id("spec.workspace", &spec.workspace, &mut out);
    if let Some(tw) = &spec.test_workspace {
        check_workspace_id("spec.testWorkspace.resourceId", &tw.resource_id, &mut out);
        if tw.resource_id.eq_ignore_ascii_case(&spec.workspace) {
            out.push(PlanError::new(
                K::InvalidField,
                "spec.testWorkspace.resourceId",
                "the test workspace is the production workspace: canary data would duplicate there",
                "use a separate workspace for the proof of concept, or remove spec.testWorkspace",
            ));
        }
        if !norm_region(&tw.location).eq(&norm_region(&spec.location)) {
            out.push(PlanError::new(
                K::TestWorkspaceRegion,
                "spec.testWorkspace.location",
                format!(
                    "the test workspace is in {:?} but the workspace (spec.location) is in {:?}; a DCR must be in its destination workspace's region, so canary machines would need DCRs in two regions",
                    tw.location, spec.location
                ),
                format!("use a test workspace in {}", spec.location),
            ));
        }
    }
    for (i, rg) in spec.scope.resource_groups.iter().enumerate() {
        let ok = ResourceId::parse(rg)
            .map(|r| r.resource_group().is_some() && r.top_type().is_none())
            .unwrap_or(false);
        if !ok {
            out.push(PlanError::new(
                K::MalformedResourceId,
                format!("spec.scope.resourceGroups[{i}]"),
                format!("{rg:?} is not a resource group ID"),
                "write /subscriptions/<subscription-id>/resourceGroups/<name>",
            ));
        }
    }
    for (i, ex) in spec.scope.excludes.iter().enumerate() {
        if ex.starts_with('/')
            && let Err(e) = ResourceId::parse(ex)
        {
            out.push(PlanError::new(
                K::MalformedResourceId,
                format!("spec.scope.excludes[{i}]"),
                e.to_string(),
                "use the machine's resource ID or its plain name",
            ));
        }
    }
    for (i, d) in spec.data_sources.iter().enumerate() {
        if let Some(j) = spec.data_sources[..i].iter().position(|o| o.name == d.name) {
            out.push(PlanError::new(
                K::InvalidField,
                format!("spec.dataSources[{i}].name"),
                format!("{:?} is already the name of dataSources[{j}]", d.name),
                "give every data source a unique name",
            ));
        }
        if let Some(j) = spec.data_sources[..i]
            .iter()
            .position(|o| o.type_ == d.type_ && o.agent != d.agent)
        {
            out.push(PlanError::new(
                K::InvalidField,
                format!("spec.dataSources[{i}].agent"),
                format!(
                    "{} is also dataSources[{j}] with agent {}; the legacy stream is workspace-wide, so one type has one agent",
                    d.type_,
                    spec.data_sources[j].agent.as_str()
                ),
                "use the same agent for every entry of this type",
            ));
        }
    }
    let waves = &spec.rollout.waves;
    if waves.is_empty() {
        out.push(PlanError::new(
            K::EmptyWave,
            "spec.rollout.waves",
            "the plan has no wave",
            "add at least one wave, e.g. {name: all, maxRisk: High}",
        ));
    }
    for (i, w) in waves.iter().enumerate() {
        let f = format!("spec.rollout.waves[{i}]");
        if w.count == Some(0) || w.percent == Some(0) {
            out.push(PlanError::new(
                K::EmptyWave,
                format!(
                    "{f}.{}",
                    if w.count == Some(0) {
                        "count"
                    } else {
                        "percent"
                    }
                ),
                format!("wave {:?} has size 0", w.name),
                "give it a size of at least 1, or remove the wave",
            ));
        }
        if w.percent.is_some_and(|p| p > 100) {
            out.push(PlanError::new(
                K::InvalidField,
                format!("{f}.percent"),
                "a percent above 100",
                "use 1..100",
            ));
        }
        if w.count.is_some() && w.percent.is_some() {
            out.push(PlanError::new(
                K::InvalidField,
                f.clone(),
                "sets both count and percent",
                "keep one of count or percent",
            ));
        }
        if let Some(j) = waves[..i].iter().position(|p| p.name == w.name) {
            out.push(PlanError::new(
                K::InvalidField,
                format!("{f}.name"),
                format!("{:?} is also waves[{j}]", w.name),
                "give every wave a unique name",
            ));
        }
        if let Some(j) = waves[..i]
            .iter()
            .position(|p| p.count.is_none() && p.percent.is_none() && p.max_risk >= w.max_risk)
        {
            out.push(PlanError::new(
                K::UnreachableWave,
                f.clone(),
                format!(
                    "wave {:?} (maxRisk {}) can never receive a machine: waves[{j}] {:?} has no size limit and already takes every machine up to {}",
                    w.name,
                    w.max_risk.as_str(),
                    waves[j].name,
                    waves[j].max_risk.as_str()
                ),
                format!("give waves[{j}] a count or percent, raise this wave's maxRisk, or remove it"),
            ));
        }
        check_duration(format!("{f}.soak"), w.soak.as_deref(), &mut out);
        if let Some(g) = &w.gates {
            check_duration(
                format!("{f}.gates.parityWindow"),
                g.parity_window.as_deref(),
                &mut out,
            );
            if g.parity_tolerance_percent.is_some() != g.parity_window.is_some() {
                out.push(PlanError::new(
                    K::InvalidField,
                    format!("{f}.gates"),
                    "parityTolerancePercent and parityWindow go together",
                    "set both or neither",
                ));
            }
            if g.min_success_ratio
                .is_some_and(|r| !(0.0..=1.0).contains(&r))
            {
                out.push(PlanError::new(
                    K::InvalidField,
                    format!("{f}.gates.minSuccessRatio"),
                    "outside 0..1",
                    "write a ratio such as 0.95",
                ));
            }
        }
    }
    let c = &spec.rollout.cutover;
    check_duration(
        "spec.rollout.cutover.maxOverlap".into(),
        c.max_overlap.as_deref(),
        &mut out,
    );
    check_duration(
        "spec.rollout.cutover.maxGap".into(),
        c.max_gap.as_deref(),
        &mut out,
    );
    if c.policy == CutoverPolicy::PreferNoGap && c.max_gap.is_some() {
        out.push(PlanError::new(
            K::InvalidField,
            "spec.rollout.cutover.maxGap",
            "maxGap applies to PreferNoDuplicate",
            "use maxOverlap with PreferNoGap, or switch the policy",
        ));
    }
    if c.policy == CutoverPolicy::PreferNoDuplicate && c.max_overlap.is_some() {
        out.push(PlanError::new(
            K::InvalidField,
            "spec.rollout.cutover.maxOverlap",
            "maxOverlap applies to PreferNoGap",
            "use maxGap with PreferNoDuplicate, or switch the policy",
        ));
    }
    if spec.rollout.max_parallel == 0 {
        out.push(PlanError::new(
            K::InvalidField,
            "spec.rollout.maxParallel",
            "0 admits no machine",
            "use at least 1",
        ));
    }
    for (i, a) in spec
        .legacy
        .flip
        .accepted_uncovered_senders
        .iter()
        .enumerate()
    {
        for (j, n) in a.data_sources.iter().enumerate() {
            if !spec.data_sources.iter().any(|d| &d.name == n) {
                out.push(PlanError::new(
                    K::InvalidField,
                    format!("spec.legacy.flip.acceptedUncoveredSenders[{i}].dataSources[{j}]"),
                    format!("no plan data source is named {n:?}"),
                    "use a name from spec.dataSources",
                ));
            }
        }
    }
    out
}

fn norm_region(r: &str) -> String {
    r.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `agent: AMA` for a source AMA cannot collect (and the converse).
pub(crate) fn validate_support(spec: &MigrationPlanSpec, catalog: &Catalog) -> Vec<PlanError> {
    let mut out = Vec::new();
    for (i, d) in spec.data_sources.iter().enumerate() {
        let row = catalog.row(d.type_);
        if d.agent == Agent::Ama && row.ama == Support::Unsupported {
            out.push(PlanError::new(
                K::AmaUnsupportedSource,
                format!("spec.dataSources[{i}].agent"),
                format!("{} ({:?}) is Unsupported by AMA in the catalog (seed row {:?}): {}", d.type_, d.name, row.seed_label, row.note),
                format!("set agent: Legacy to keep it on the legacy agent, or add spec.catalogOverrides: [{{type: {}, amaSupport: CollectionOnly}}] if AMA now supports it", d.type_),
            ));
        }
        if d.agent == Agent::Legacy && row.legacy == Support::Unsupported {
            out.push(PlanError::new(
                K::InvalidField,
                format!("spec.dataSources[{i}].agent"),
                format!(
                    "{} is Unsupported by the legacy agent in the catalog",
                    d.type_
                ),
                "set agent: AMA",
            ));
        }
    }
    out
}

/// A source moving to AMA whose legacy flip would also stop another source: the workspace
/// dataSources that collect it collect the other one too (a syslog `user` or `*` facility carries
/// Linux Sysmon), and the plan keeps that one on the legacy agent or does not list it. The flip
/// would cut its data on every machine; the plan is refused until both move together.
pub(crate) fn validate_shared_streams(input: &PlanInput<'_>) -> Vec<PlanError> {
    let spec = input.spec;
    if spec.legacy.flip.policy == FlipWhen::Never {
        return Vec::new();
    }
    let moving = |t: DataSourceType| {
        spec.data_sources
            .iter()
            .any(|d| d.type_ == t && d.agent == Agent::Ama)
    };
    let mut out = Vec::new();
    for (i, d) in spec.data_sources.iter().enumerate() {
        let t = d.type_;
        if d.agent != Agent::Ama || input.progress.flipped.contains(t) {
            continue;
        }
        let controls = input.legacy.data_sources_for(t);
        for u in DataSourceType::ALL {
            if u == t || moving(u) || !input.legacy.enables(u) {
                continue;
            }
            let shared: Vec<&str> = input
                .legacy
                .data_sources_for(u)
                .into_iter()
                .filter(|n| controls.contains(n))
                .collect();
            if shared.is_empty() {
                continue;
            }
            let kept = match spec.data_sources.iter().position(|x| x.type_ == u) {
                Some(j) => format!("keeps on the legacy agent (spec.dataSources[{j}])"),
                None => "does not list".to_string(),
            };
            out.push(PlanError::new(
                K::SharedLegacyStream,
                format!("spec.dataSources[{i}].type"),
                format!(
                    "the workspace's legacy dataSource(s) {} collect both {t} and {u}; flipping {t} turns them off and would stop {u}, which this plan {kept}",
                    shared.join(", ")
                ),
                format!(
                    "list {u} in spec.dataSources with agent: AMA so both move together, or set spec.legacy.flip.policy: Never"
                ),
            ));
        }
    }
    out
}

/// Two plans claiming one machine.
pub(crate) fn validate_claims(input: &PlanInput<'_>, fleet: &Fleet) -> Vec<PlanError> {
    let mut by_plan: Vec<(String, Vec<&str>, usize)> = Vec::new();
    for m in &fleet.machines {
        for b in &m.blocked {
            if let BlockReason::ClaimedByOtherPlan(p) = b {
                match by_plan.iter_mut().find(|(n, _, _)| n == p) {
                    Some((_, names, count)) => {
                        *count += 1;
                        if names.len() < 5 {
                            names.push(&m.name);
                        }
                    }
                    None => by_plan.push((p.clone(), vec![&m.name], 1)),
                }
            }
        }
    }
    by_plan
        .into_iter()
        .map(|(p, names, count)| {
            PlanError::new(
                K::MachineClaimedTwice,
                "spec.scope",
                format!(
                    "{count} machine(s) are also in the scope of plan {p:?} (e.g. {}); two plans would fight over their agents",
                    names.join(", ")
                ),
                format!("add them to spec.scope.excludes of this plan or of {p:?}, or narrow one scope (tagSelector, resourceGroups)"),
            )
        })
        .take(input.other_plans.len().max(1))
        .collect()
}
