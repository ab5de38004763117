//! Wave membership: machines in rising risk, each wave taking its size from what is left up to
//! its maximum risk. The order inside a risk class is a stable hash of the resource ID, so
//! canaries spread across subscriptions and resource groups and membership is reproducible.

use crate::api::plan::{MigrationPlanSpec, Risk};

use super::errors::{PlanError, PlanErrorKind};
use super::fleet::Fleet;

pub(crate) struct Membership {
    /// Per fleet machine (same order as `Fleet::machines`).
    pub wave_of: Vec<Option<usize>>,
    pub errors: Vec<PlanError>,
    pub warnings: Vec<String>,
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn risk_idx(r: Risk) -> usize {
    match r {
        Risk::Low => 0,
        Risk::Medium => 1,
        Risk::High => 2,
    }
}

pub(crate) fn assign(spec: &MigrationPlanSpec, fleet: &Fleet) -> Membership {
    let total = fleet.machines.len();
    let mut buckets: [Vec<(u64, usize)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (i, m) in fleet.machines.iter().enumerate() {
        buckets[risk_idx(m.risk)].push((fnv(&m.key), i));
    }
    for b in &mut buckets {
        b.sort_unstable();
    }
    let mut cursor = [0usize; 3];
    let mut wave_of = vec![None; total];
    let mut warnings = Vec::new();
    for (w_idx, w) in spec.rollout.waves.iter().enumerate() {
        let max = risk_idx(w.max_risk);
        let eligible: usize = (0..=max).map(|r| buckets[r].len() - cursor[r]).sum();
        let size = match (w.count, w.percent) {
            (Some(c), _) => (c as usize).min(eligible),
            (None, Some(p)) => (total * p as usize).div_ceil(100).min(eligible),
            (None, None) => eligible,
        };
        let mut left = size;
        for r in 0..=max {
            while left > 0 && cursor[r] < buckets[r].len() {
                wave_of[buckets[r][cursor[r]].1] = Some(w_idx);
                cursor[r] += 1;
                left -= 1;
            }
        }
        if size == 0 && total > 0 {
            warnings.push(format!(
                "wave {:?} receives no machine from this inventory (no machine left up to risk {}): its success-ratio and parity gates pass with nothing measured; check spec.rollout.riskRules if it should have some",
                w.name,
                w.max_risk.as_str()
            ));
        }
    }
    let mut errors = Vec::new();
    let unassigned: Vec<usize> = (0..total).filter(|i| wave_of[*i].is_none()).collect();
    if !unassigned.is_empty() && !spec.rollout.waves.is_empty() {
        let highest = unassigned
            .iter()
            .map(|i| fleet.machines[*i].risk)
            .max()
            .unwrap_or(Risk::High);
        let names: Vec<&str> = unassigned
            .iter()
            .take(5)
            .map(|i| fleet.machines[*i].name.as_str())
            .collect();
        errors.push(PlanError::new(
            PlanErrorKind::MachinesWithoutWave,
            "spec.rollout.waves",
            format!(
                "{} machine(s) fall in no wave (e.g. {}; highest risk {}); they would never migrate and the legacy streams could never flip",
                unassigned.len(),
                names.join(", "),
                highest.as_str()
            ),
            format!(
                "end with a wave without count/percent and maxRisk: {}",
                highest.as_str()
            ),
        ));
    }
    Membership {
        wave_of,
        errors,
        warnings,
    }
}
