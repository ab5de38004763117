//! The figures of a `MigrationPlan`'s status — `summary`, `currentWave` and `waves[]` — built in
//! one place from the machines' records, so every status write shows counts that agree with the
//! machines' steps and with the wave phases written beside them (pure, no I/O).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::machine::{MachineStep, StepPhase};
use crate::api::plan::{FleetSummary, MigrationPlanStatus, WavePhase, WaveStatus};
use crate::local::tracker::AgentState;

/// One machine of the plan as the status counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineView<'a> {
    /// The wave it belongs to (`""`: none).
    pub wave: &'a str,
    pub step: MachineStep,
    /// `status.agents` (`Legacy`, `AMA`, `Legacy+AMA`, `None`), if observed.
    pub agents: Option<&'a str>,
    /// It keeps the legacy agent because a source it needs has no AMA support.
    pub keeps_legacy_unsupported: bool,
}

impl<'a> MachineView<'a> {
    /// From a stored MachineMigration alone (it carries no lane: `keeps_legacy_unsupported` is
    /// false).
    pub fn of(m: &'a crate::api::MachineMigration) -> Self {
        let status = m.status.as_ref();
        Self {
            wave: &m.spec.wave,
            step: status.and_then(|s| s.step).unwrap_or(MachineStep::Pending),
            agents: status.and_then(|s| s.agents.as_deref()),
            keeps_legacy_unsupported: false,
        }
    }
}

/// Machines of one wave by where their step stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaveCounts {
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    pub in_progress: u32,
    pub blocked: u32,
}

/// Every count of the status, from one pass over the machines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub summary: FleetSummary,
    pub waves: BTreeMap<String, WaveCounts>,
}

impl Tally {
    fn wave(&self, name: &str) -> WaveCounts {
        self.waves.get(name).copied().unwrap_or_default()
    }
}

/// The count a step adds to: done, failed, blocked, under way, or none when not started
/// (pending or rolled back — on the legacy path as before the migration).
fn bucket(step: MachineStep) -> Option<fn(&mut WaveCounts) -> &mut u32> {
    match step.phase() {
        StepPhase::Done => Some(|c| &mut c.done),
        StepPhase::Failed => Some(|c| &mut c.failed),
        StepPhase::Blocked => Some(|c| &mut c.blocked),
        StepPhase::Pending => None,
        StepPhase::InProgress => Some(|c| &mut c.in_progress),
    }
}

/// Count the plan's machines: the fleet summary and per-wave counts. `out_of_scope_senders` is
/// the planner's figure (legacy senders to the workspace outside the plan's scope).
pub fn tally<'a>(
    machines: impl IntoIterator<Item = &'a MachineView<'a>>,
    out_of_scope_senders: u32,
) -> Tally {
    let mut t = Tally::default();
    let mut all = WaveCounts::default();
    for m in machines {
        let wave = t.waves.entry(m.wave.to_string()).or_default();
        wave.total += 1;
        all.total += 1;
        if let Some(field) = bucket(m.step) {
            *field(wave) += 1;
            *field(&mut all) += 1;
        }
        match m.agents.map(AgentState::from_agents_label) {
            Some(AgentState::LegacyOnly) => t.summary.legacy_only += 1,
            Some(AgentState::AmaOnly) => t.summary.ama_only += 1,
            Some(AgentState::Both) => t.summary.both += 1,
            _ => {}
        }
        if m.keeps_legacy_unsupported {
            t.summary.blocked_unsupported += 1;
        }
    }
    t.waves.remove("");
    t.summary.total = all.total;
    t.summary.done = all.done;
    t.summary.failed = all.failed;
    t.summary.out_of_scope_senders = out_of_scope_senders;
    t
}

/// Write the counts into a status whose wave phases are already set (a wave the tally does not
/// know has no machine: zeros).
pub fn apply_counts(st: &mut MigrationPlanStatus, t: &Tally) {
    for w in &mut st.waves {
        let c = t.wave(&w.name);
        w.total = c.total;
        w.done = c.done;
        w.failed = c.failed;
        w.in_progress = c.in_progress;
        w.blocked = c.blocked;
    }
    st.summary = Some(t.summary.clone());
}

/// One wave of the spec with the planner's and the engine's progress of it.
#[derive(Clone, Debug, PartialEq)]
pub struct WaveView<'a> {
    pub name: &'a str,
    /// The planner admitted it (every earlier wave passed its gates).
    pub admitted: bool,
    /// The planner passed its gates (the next wave may start).
    pub gate_passed: bool,
    /// When every machine of it settled (unix seconds, engine clock).
    pub finished_at: Option<i64>,
    /// Its soak period in seconds (0: none).
    pub soak_secs: i64,
    pub manual_approval: bool,
    pub approved: bool,
    /// `gates.minSuccessRatio`.
    pub min_success_ratio: Option<f64>,
}

/// The phase of a wave from its progress and its machines' counts, at `now_s`.
pub fn wave_phase(w: &WaveView<'_>, c: &WaveCounts, now_s: i64) -> WavePhase {
    if w.gate_passed {
        return WavePhase::Completed;
    }
    if !w.admitted {
        return WavePhase::Pending;
    }
    let Some(finished) = w.finished_at else {
        return WavePhase::Progressing;
    };
    // Every machine settled: the success ratio is what it will be until someone retries.
    let eligible = c.total.saturating_sub(c.blocked);
    let ratio_failed = eligible > 0
        && w.min_success_ratio.is_some_and(|min| {
            f64::from(eligible.saturating_sub(c.failed)) / f64::from(eligible) < min
        });
    if ratio_failed {
        WavePhase::Failed
    } else if finished.saturating_add(w.soak_secs) > now_s {
        WavePhase::Soaking
    } else if w.manual_approval && !w.approved {
        WavePhase::AwaitingApproval
    } else {
        // Soaked and approved: the parity gate is still being measured.
        WavePhase::Soaking
    }
}

/// The status's figures: per-wave phases and counts, the current wave, the fleet summary.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusFigures {
    pub waves: Vec<WaveStatus>,
    pub current_wave: Option<String>,
    pub summary: FleetSummary,
}

/// Build the figures from the waves' progress and the machines' records in one pass, so a wave's
/// phase and its counts come from the same machines. The current wave is the first admitted wave
/// whose gates have not passed (progressing, soaking, awaiting approval or failed — with or
/// without machines); once every admitted wave passed, the last admitted wave (its machines may
/// still wait for a legacy flip); none once the plan is completed. `previous` keeps the waves'
/// start and completion times.
pub fn build(
    waves: &[WaveView<'_>],
    machines: &[MachineView<'_>],
    out_of_scope_senders: u32,
    previous: &[WaveStatus],
    plan_completed: bool,
    now: Timestamp,
) -> StatusFigures {
    let t = tally(machines, out_of_scope_senders);
    let now_s = now.as_second();
    let mut out = Vec::with_capacity(waves.len());
    let mut current = None;
    let mut last_admitted = None;
    for w in waves {
        let c = t.wave(w.name);
        let phase = wave_phase(w, &c, now_s);
        if w.admitted {
            last_admitted = Some(w.name);
            if !w.gate_passed && current.is_none() {
                current = Some(w.name);
            }
        }
        let prev = previous.iter().find(|p| p.name == w.name);
        out.push(WaveStatus {
            name: w.name.to_string(),
            phase,
            total: c.total,
            done: c.done,
            failed: c.failed,
            in_progress: c.in_progress,
            blocked: c.blocked,
            started_at: prev
                .and_then(|p| p.started_at.clone())
                .or_else(|| w.admitted.then_some(Time(now))),
            soak_until: w
                .finished_at
                .filter(|_| w.soak_secs > 0)
                .and_then(|f| Timestamp::from_second(f.saturating_add(w.soak_secs)).ok())
                .map(Time),
            completed_at: prev
                .and_then(|p| p.completed_at.clone())
                .or_else(|| w.gate_passed.then_some(Time(now))),
        });
    }
    let current_wave = if plan_completed {
        None
    } else {
        current.or(last_admitted).map(str::to_string)
    };
    StatusFigures {
        waves: out,
        current_wave,
        summary: t.summary,
    }
}

impl StatusFigures {
    pub fn apply(self, st: &mut MigrationPlanStatus) {
        st.waves = self.waves;
        st.current_wave = self.current_wave;
        st.summary = Some(self.summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn machine(wave: &str, step: MachineStep) -> MachineView<'_> {
        MachineView {
            wave,
            step,
            agents: None,
            keeps_legacy_unsupported: false,
        }
    }

    fn wave(name: &str) -> WaveView<'_> {
        WaveView {
            name,
            admitted: false,
            gate_passed: false,
            finished_at: None,
            soak_secs: 0,
            manual_approval: false,
            approved: false,
            min_success_ratio: None,
        }
    }

    #[test]
    fn the_summary_counts_every_machine_by_step_and_agents() {
        let mut ms = vec![
            machine("canary", MachineStep::Done),
            machine("canary", MachineStep::Done),
            machine("canary", MachineStep::Failed),
            machine("broad", MachineStep::Blocked),
            machine("broad", MachineStep::InstallAma),
            machine("broad", MachineStep::WaitForFlip),
            machine("broad", MachineStep::Pending),
            machine("", MachineStep::Blocked),
        ];
        ms[0].agents = Some("AMA");
        ms[1].agents = Some("Legacy+AMA");
        ms[1].keeps_legacy_unsupported = true;
        ms[2].agents = Some("Legacy");
        ms[3].agents = Some("Legacy");
        ms[4].agents = Some("None");
        let waves = [
            WaveView {
                admitted: true,
                gate_passed: true,
                ..wave("canary")
            },
            WaveView {
                admitted: true,
                ..wave("broad")
            },
        ];
        let f = build(&waves, &ms, 3, &[], false, at(1_000));
        assert_eq!(
            f.summary,
            FleetSummary {
                total: 8,
                legacy_only: 2,
                ama_only: 1,
                both: 1,
                done: 2,
                failed: 1,
                blocked_unsupported: 1,
                out_of_scope_senders: 3,
            }
        );
        let broad = &f.waves[1];
        assert_eq!(
            (
                broad.total,
                broad.done,
                broad.failed,
                broad.in_progress,
                broad.blocked
            ),
            (4, 0, 0, 2, 1)
        );
        assert_eq!(f.current_wave.as_deref(), Some("broad"));
        // The status gets all of it, summary included (the printer columns read summary.done
        // and summary.total).
        let mut st = MigrationPlanStatus::default();
        f.apply(&mut st);
        let json = serde_json::to_value(&st).unwrap_or_default();
        assert_eq!(json.pointer("/summary/done"), Some(&serde_json::json!(2)));
        assert_eq!(json.pointer("/summary/total"), Some(&serde_json::json!(8)));
        assert_eq!(
            json.pointer("/currentWave"),
            Some(&serde_json::json!("broad"))
        );
    }

    #[test]
    fn an_empty_wave_soaking_or_awaiting_approval_is_the_current_wave() {
        let ms = [
            machine("canary", MachineStep::Done),
            machine("broad", MachineStep::Pending),
        ];
        let empty = WaveView {
            admitted: true,
            finished_at: Some(1_000),
            soak_secs: 3_600,
            manual_approval: true,
            ..wave("empty")
        };
        let waves = [
            WaveView {
                admitted: true,
                gate_passed: true,
                ..wave("canary")
            },
            empty.clone(),
            wave("broad"),
        ];
        let f = build(&waves, &ms, 0, &[], false, at(2_000));
        assert_eq!(f.current_wave.as_deref(), Some("empty"));
        assert_eq!(f.waves[1].phase, WavePhase::Soaking);
        assert_eq!(f.waves[1].total, 0);
        assert_eq!(
            f.waves[1].soak_until.as_ref().map(|t| t.0.as_second()),
            Some(4_600)
        );
        // Soaked, not approved: still the current wave, now waiting for a person.
        let f = build(&waves, &ms, 0, &[], false, at(5_000));
        assert_eq!(f.current_wave.as_deref(), Some("empty"));
        assert_eq!(f.waves[1].phase, WavePhase::AwaitingApproval);
        assert_eq!(f.waves[2].phase, WavePhase::Pending);
    }

    #[test]
    fn the_current_wave_is_the_last_admitted_one_until_the_plan_completes() {
        let ms = [machine("canary", MachineStep::WaitForFlip)];
        let waves = [WaveView {
            admitted: true,
            gate_passed: true,
            finished_at: Some(10),
            ..wave("canary")
        }];
        let f = build(&waves, &ms, 0, &[], false, at(20));
        assert_eq!(f.current_wave.as_deref(), Some("canary"));
        let f = build(&waves, &ms, 0, &[], true, at(20));
        assert_eq!(f.current_wave, None);
    }

    #[test]
    fn a_completed_waves_counts_are_its_machines_steps() {
        // The planner's own `done` counts only machines with nothing left at all (4 of 10 here);
        // the machines' records say all 10 are Done, and the status must say so.
        let ms: Vec<MachineView<'_>> = (0..10)
            .map(|_| machine("broad", MachineStep::Done))
            .collect();
        let waves = [WaveView {
            admitted: true,
            gate_passed: true,
            finished_at: Some(10),
            ..wave("broad")
        }];
        let f = build(&waves, &ms, 0, &[], false, at(20));
        let w = &f.waves[0];
        assert_eq!(w.phase, WavePhase::Completed);
        assert_eq!((w.total, w.done, w.in_progress), (10, 10, 0));
        assert!(w.completed_at.is_some());
        // A later write that changes no phase still recounts from the records.
        let mut st = MigrationPlanStatus::default();
        f.apply(&mut st);
        let mut later = ms.clone();
        later[0].step = MachineStep::Failed;
        apply_counts(&mut st, &tally(&later, 0));
        assert_eq!((st.waves[0].done, st.waves[0].failed), (9, 1));
        assert_eq!(
            st.summary.as_ref().map(|s| (s.done, s.failed)),
            Some((9, 1))
        );
    }

    #[test]
    fn a_settled_wave_below_its_success_ratio_has_failed() {
        let ms = [
            machine("canary", MachineStep::Done),
            machine("canary", MachineStep::Failed),
            machine("canary", MachineStep::Blocked),
        ];
        let w = WaveView {
            admitted: true,
            finished_at: Some(10),
            min_success_ratio: Some(0.9),
            ..wave("canary")
        };
        let f = build(std::slice::from_ref(&w), &ms, 0, &[], false, at(20));
        assert_eq!(f.waves[0].phase, WavePhase::Failed);
        assert_eq!(f.current_wave.as_deref(), Some("canary"));
        let ok = WaveView {
            min_success_ratio: Some(0.5),
            ..w
        };
        let f = build(&[ok], &ms, 0, &[], false, at(20));
        assert_eq!(f.waves[0].phase, WavePhase::Soaking);
    }

    #[test]
    fn start_and_completion_times_are_kept() {
        let waves = [WaveView {
            admitted: true,
            gate_passed: true,
            ..wave("canary")
        }];
        let first = build(&waves, &[], 0, &[], false, at(100));
        let again = build(&waves, &[], 0, &first.waves, false, at(900));
        assert_eq!(again.waves[0].started_at, first.waves[0].started_at);
        assert_eq!(again.waves[0].completed_at, first.waves[0].completed_at);
        assert_eq!(
            again.waves[0]
                .completed_at
                .as_ref()
                .map(|t| t.0.as_second()),
            Some(100)
        );
    }
}
