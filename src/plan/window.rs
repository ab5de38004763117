//! The worst-case duplicate or gap window the plan implies, from stated per-step durations, and
//! the refusal when a window exceeds the plan's declared bound.

use std::time::Duration;

use crate::api::duration::{format_duration, parse_duration};
use crate::api::plan::{CutoverPolicy, MigrationPlanSpec};
use crate::catalog::DataSourceType;

use super::PlanOutcome;
use super::errors::{PlanError, PlanErrorKind};
use super::fleet::{Fleet, Lane};

/// Stated assumptions (domain.md B.7): data reaches the workspace up to 5 min after a DCR is
/// associated; verification takes one 5-min query window; a legacy extension delete may take
/// until CRP's 15-min timeout; a DCRA PUT is synchronous (~1 min with retries); a workspace
/// setting change reaches the legacy agents within ~10 min (UNCONFIRMED).
pub const FIRST_DATA: Duration = Duration::from_secs(5 * 60);
pub const VERIFY: Duration = Duration::from_secs(5 * 60);
pub const UNINSTALL_WORST: Duration = Duration::from_secs(15 * 60);
pub const ASSOCIATE: Duration = Duration::from_secs(60);
pub const FLIP_PROPAGATION: Duration = Duration::from_secs(10 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum WindowKind {
    Overlap,
    Gap,
}

/// One class of transition and its worst case.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionWindow {
    pub kind: WindowKind,
    /// Which transition (per machine, flip stage of a source, canary).
    pub what: String,
    #[serde(serialize_with = "ser_dur")]
    pub worst_case: Duration,
    #[serde(serialize_with = "ser_opt_dur")]
    pub bound: Option<Duration>,
    pub machines: usize,
    pub examples: Vec<String>,
    /// How to bring it within the bound.
    pub fix: String,
}

fn ser_dur<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}
fn ser_opt_dur<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

impl TransitionWindow {
    pub fn within_bound(&self) -> bool {
        self.bound.is_none_or(|b| self.worst_case <= b)
    }
}

pub(crate) fn windows(
    spec: &MigrationPlanSpec,
    fleet: &Fleet,
    outcome: &PlanOutcome,
) -> Vec<TransitionWindow> {
    let c = &spec.rollout.cutover;
    let (kind, bound) = match c.policy {
        CutoverPolicy::PreferNoGap => (
            WindowKind::Overlap,
            c.max_overlap
                .as_deref()
                .and_then(|d| parse_duration(d).ok()),
        ),
        CutoverPolicy::PreferNoDuplicate => (
            WindowKind::Gap,
            c.max_gap.as_deref().and_then(|d| parse_duration(d).ok()),
        ),
    };
    let mut out = Vec::new();
    let examples = |pred: &dyn Fn(&super::fleet::FleetMachine) -> bool| -> (usize, Vec<String>) {
        let mut n = 0;
        let mut ex = Vec::new();
        for m in fleet.machines.iter().filter(|m| pred(m)) {
            n += 1;
            if ex.len() < 5 {
                ex.push(m.name.clone());
            }
        }
        (n, ex)
    };
    // Per machine: the legacy agent is removed after (NoGap) or before (NoDup) AMA takes over.
    let (n, ex) = examples(&|m| m.lane == Lane::DropLegacy && m.blocked.is_empty());
    if n > 0 {
        let worst = match kind {
            WindowKind::Overlap => FIRST_DATA + VERIFY + UNINSTALL_WORST,
            WindowKind::Gap => UNINSTALL_WORST + ASSOCIATE + FIRST_DATA,
        };
        out.push(TransitionWindow {
            kind,
            what: "per machine: legacy agent removal".into(),
            worst_case: worst,
            bound,
            machines: n,
            examples: ex,
            fix: format!(
                "raise spec.rollout.cutover.{} to at least {}, or switch spec.rollout.cutover.policy",
                if kind == WindowKind::Overlap { "maxOverlap" } else { "maxGap" },
                format_duration(worst)
            ),
        });
    }
    // Flip stage per source: machines that keep the legacy agent move when the stream flips.
    let max_parallel = spec.rollout.max_parallel.max(1) as usize;
    for f in outcome.flips.iter().filter(|f| f.never.is_none()) {
        let t: DataSourceType = f.ds_type;
        let (n, ex) = examples(&|m| {
            matches!(m.lane, Lane::KeepLegacy(_)) && m.legacy_here && m.os == Some(t.os())
        });
        if n == 0 {
            continue;
        }
        let batches = n.div_ceil(max_parallel) as u32;
        let worst = match kind {
            WindowKind::Overlap => ASSOCIATE * batches + FIRST_DATA + VERIFY + FLIP_PROPAGATION,
            WindowKind::Gap => FLIP_PROPAGATION + ASSOCIATE * batches + FIRST_DATA,
        };
        let fixed_part = worst.saturating_sub(ASSOCIATE * batches);
        let fix = match bound {
            Some(b) if b > fixed_part => {
                let max_batches =
                    ((b - fixed_part).as_secs() / ASSOCIATE.as_secs()).max(1) as usize;
                format!(
                    "raise spec.rollout.maxParallel to at least {} ({n} machines keep the legacy agent), or raise the bound to {}",
                    n.div_ceil(max_batches),
                    format_duration(worst)
                )
            }
            _ => format!("raise the bound to at least {}", format_duration(worst)),
        };
        out.push(TransitionWindow {
            kind,
            what: format!("flip stage of {t}: machines keeping the legacy agent"),
            worst_case: worst,
            bound,
            machines: n,
            examples: ex,
            fix,
        });
    }
    // Canary waves without a test workspace overlap deliberately in production during soak.
    if spec.test_workspace.is_none() && kind == WindowKind::Overlap {
        for (w_idx, w) in spec
            .rollout
            .waves
            .iter()
            .enumerate()
            .filter(|(_, w)| w.canary)
        {
            let members = outcome
                .machines
                .iter()
                .filter(|m| m.wave == Some(w_idx))
                .count();
            if members == 0 {
                continue;
            }
            let soak = w
                .soak
                .as_deref()
                .and_then(|d| parse_duration(d).ok())
                .unwrap_or_default();
            let parity = w
                .gates
                .as_ref()
                .and_then(|g| g.parity_window.as_deref())
                .and_then(|d| parse_duration(d).ok())
                .unwrap_or_default();
            let worst = soak.max(parity) + FIRST_DATA + VERIFY + UNINSTALL_WORST;
            out.push(TransitionWindow {
                kind,
                what: format!("canary wave {:?} in production (no testWorkspace)", w.name),
                worst_case: worst,
                bound,
                machines: members,
                examples: Vec::new(),
                fix: "set spec.testWorkspace so canary overlap goes there, or shorten the soak"
                    .into(),
            });
        }
    }
    out
}

pub(crate) fn bound_errors(spec: &MigrationPlanSpec, outcome: &PlanOutcome) -> Vec<PlanError> {
    let field = match spec.rollout.cutover.policy {
        CutoverPolicy::PreferNoGap => "spec.rollout.cutover.maxOverlap",
        CutoverPolicy::PreferNoDuplicate => "spec.rollout.cutover.maxGap",
    };
    outcome
        .windows
        .iter()
        .filter(|w| !w.within_bound())
        .map(|w| {
            PlanError::new(
                PlanErrorKind::WindowOutOfBounds,
                field,
                format!(
                    "{}: worst-case {:?} of {} exceeds the bound {} on {} machine(s) (e.g. {})",
                    w.what,
                    w.kind,
                    format_duration(w.worst_case),
                    w.bound.map(format_duration).unwrap_or_default(),
                    w.machines,
                    w.examples.join(", ")
                ),
                w.fix.clone(),
            )
        })
        .collect()
}
