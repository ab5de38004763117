//! The pure per-machine step function (design.md §5): (spec, status, observation, last outcome,
//! policy, requests, now) → `Decision` (next status, one action, events). No I/O, no clock.
//!
//! It is level-based: every call recomputes the first unmet step from the observation, so each
//! step is idempotent and a restart resumes where Azure actually is. The status only carries what
//! the observation cannot show: the in-flight operation (persisted before any wait), attempts and
//! the last error (for backoff and `Failed`), and marker conditions for what the migrator added.
//!
//! Contract with the orchestrator:
//! * persist `Decision::status` before executing `Decision::action`;
//! * execute the action, then call `step` again with its `Outcome` and an observation taken after;
//! * `Action::WaitUntil(t)`: call again at `t`; `Action::None`: call again when something changes.

mod forward;
mod outcome;
pub mod reasons;
mod rollback;
mod types;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{self, status as cstatus, types as ctypes};
use crate::api::machine::{
    ArmErrorStatus, MachineMigrationSpec, MachineMigrationStatus, MachineStep, ObservedSenders,
};
use crate::api::plan::Agent;
use crate::azure::error::Classification;

pub use types::*;

/// Prefix of every DCR association the migrator creates; rollback removes only these.
pub const ASSOCIATION_PREFIX: &str = "ama-migrator-";

/// Deterministic association name for a DCR: `ama-migrator-<dcr name>`, lower-cased.
pub fn association_name(dcr_id: &str) -> String {
    let name = dcr_id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(dcr_id);
    format!("{ASSOCIATION_PREFIX}{}", name.to_ascii_lowercase())
}

/// Everything one step decides on.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    pub spec: &'a MachineMigrationSpec,
    pub status: &'a MachineMigrationStatus,
    pub observation: &'a Observation,
    /// What the previous decision's action returned (`None` on a plain re-evaluation).
    pub outcome: Option<&'a Outcome>,
    pub policy: &'a Policy,
    pub requests: Requests,
    pub now: Timestamp,
}

/// The step function. Pure and total: it never panics on any input.
pub fn step(input: &StepInput<'_>) -> Decision {
    Ctx::new(input).run()
}

/// Exponential backoff after `attempts` failures: `base * 2^(attempts-1)`, capped.
pub fn backoff(policy: &Policy, attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(30);
    policy
        .backoff_base
        .saturating_mul(1u32 << shift)
        .min(policy.backoff_cap)
}

pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// Whether control returns a decision now or continues to the next stage (a transient value,
/// returned once per stage, never stored: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Flow {
    Return(Decision),
    Continue,
}

/// Working state of one call.
struct Ctx<'a> {
    spec: &'a MachineMigrationSpec,
    policy: &'a Policy,
    requests: Requests,
    outcome: Option<&'a Outcome>,
    now: Timestamp,
    s: MachineMigrationStatus,
    /// The observation with the outcome's known effects applied (it may predate them).
    obs: Observation,
    events: Vec<Event>,
}

impl<'a> Ctx<'a> {
    fn new(i: &StepInput<'a>) -> Self {
        Self {
            spec: i.spec,
            policy: i.policy,
            requests: i.requests,
            outcome: i.outcome,
            now: i.now,
            s: i.status.clone(),
            obs: i.observation.clone(),
            events: Vec::new(),
        }
    }

    fn run(mut self) -> Decision {
        if self.s.step == Some(MachineStep::Failed) {
            if self.requests.retry {
                self.s.attempts = 0;
                self.s.last_error = None;
                self.event(
                    EventType::Normal,
                    reasons::RETRY_REQUESTED,
                    "retry requested: resuming from where Azure is, attempts reset".into(),
                );
                // Resume from Pending: the level-based walk finds the step that failed.
                self.s.step = Some(MachineStep::Pending);
            } else if !self.requests.rollback || self.rollback_failed() {
                // A failed rollback also waits for the retry annotation (no endless restarts).
                return self.finish(Action::None);
            }
        }
        if let Flow::Return(d) = self.resolve_outcome() {
            return d;
        }
        if let Flow::Return(d) = self.resolve_in_flight() {
            return d;
        }
        if self.requests.rollback {
            return self.rollback();
        }
        if self.requests.hold {
            return self.held();
        }
        if let Some(until) = self.backoff_until() {
            return self.finish(Action::WaitUntil(until));
        }
        self.forward()
    }

    fn rollback_failed(&self) -> bool {
        conditions::find(&self.s.conditions, ctypes::DEGRADED)
            .is_some_and(|c| c.status == cstatus::TRUE && c.reason == reasons::ROLLBACK_FAILED)
    }

    fn now_time(&self) -> Time {
        Time(self.now)
    }

    fn step_started(&self) -> Timestamp {
        self.s.step_started_at.as_ref().map_or(self.now, |t| t.0)
    }

    fn current_step(&self) -> MachineStep {
        self.s.step.unwrap_or(MachineStep::Pending)
    }

    fn event(&mut self, type_: EventType, reason: &'static str, message: String) {
        self.events.push(Event {
            type_,
            reason,
            message,
        });
    }

    fn cond(&mut self, type_: &str, status: &str, reason: &str, message: impl Into<String>) {
        let gen_ = self.s.observed_generation;
        let now = self.now_time();
        conditions::set_condition(
            &mut self.s.conditions,
            type_,
            status,
            reason,
            message,
            gen_,
            now,
        );
    }

    fn marker(&self, type_: &str) -> bool {
        conditions::find(&self.s.conditions, type_).is_some_and(|c| c.status == cstatus::TRUE)
    }

    /// Moves to `step`; a different step starts fresh (attempts and last error reset).
    fn enter(&mut self, step: MachineStep) {
        let prev = self.current_step();
        if self.s.step == Some(step) {
            return;
        }
        self.s.step = Some(step);
        self.s.step_started_at = Some(self.now_time());
        if step != MachineStep::Failed {
            self.s.attempts = 0;
            self.s.last_error = None;
        }
        if self.s.started_at.is_none() && step != MachineStep::Pending {
            self.s.started_at = Some(self.now_time());
        }
        self.event(
            EventType::Normal,
            reasons::STEP_CHANGED,
            format!("step {prev:?} -> {step:?}"),
        );
    }

    /// The time before which the current step must not be retried.
    fn backoff_until(&self) -> Option<Timestamp> {
        if self.s.attempts == 0 || self.s.last_error.is_none() {
            return None;
        }
        let until = add(self.step_started(), backoff(self.policy, self.s.attempts));
        (self.now < until).then_some(until)
    }

    /// Why no write or verification can happen now, if so.
    fn ineligible(&self) -> Option<(&'static str, String)> {
        if !self.obs.exists {
            return Some((
                reasons::MACHINE_NOT_FOUND,
                format!(
                    "{} no longer exists in ARM; remove it from the plan's scope or delete this MachineMigration",
                    self.spec.machine_id
                ),
            ));
        }
        match self.obs.power {
            Power::Ready => None,
            Power::Deallocated => Some((
                reasons::DEALLOCATED,
                "the VM is deallocated or stopped, so extension operations fail with OperationNotAllowed; start the VM and the migration resumes by itself".into(),
            )),
            Power::Disconnected => Some((
                reasons::DISCONNECTED,
                "the Arc server is disconnected, so extension operations cannot complete; restore the Connected Machine agent's connectivity (azcmagent show / azcmagent check) and the migration resumes by itself".into(),
            )),
        }
    }

    /// Counts a failure of the current step: retry with backoff, or `Failed` with the ARM code.
    fn fail(&mut self, what: &str, error: &ActionError) -> Flow {
        if self.ineligible().is_some() {
            // The error is explained by a deallocated/disconnected machine: block, do not count.
            return Flow::Continue;
        }
        let class = outcome::retry_class(error);
        let max = self.policy.max_attempts.max(1);
        self.s.attempts = (self.s.attempts + 1).min(max);
        self.s.last_error = Some(ArmErrorStatus {
            code: error.code.clone(),
            message: truncate(&error.message, 1024),
        });
        self.s.step_started_at = Some(self.now_time());
        let step = self.current_step();
        let failed_reason = if step == MachineStep::RollingBack {
            reasons::ROLLBACK_FAILED
        } else {
            reasons::ARM_ERROR
        };
        if class == Classification::Permanent || self.s.attempts >= max {
            let why = if class == Classification::Permanent {
                "a permanent error"
            } else {
                "the last allowed attempt"
            };
            let msg = format!(
                "{what} failed in step {step:?} with {why} ({} of {max} attempts): {}: {}. Fix the cause, then set annotation amamigrator.io/retry to a new value to resume from this step",
                self.s.attempts,
                error.code,
                truncate(&error.message, 512)
            );
            self.enter(MachineStep::Failed);
            self.cond(ctypes::DEGRADED, cstatus::TRUE, failed_reason, &msg);
            self.event(EventType::Warning, reasons::FAILED, msg);
            return Flow::Return(self.finish(Action::None));
        }
        let delay =
            backoff(self.policy, self.s.attempts).max(error.retry_after.unwrap_or_default());
        let msg = format!(
            "{what} failed in step {step:?} (attempt {} of {max}): {}: {}; retrying in {}s",
            self.s.attempts,
            error.code,
            truncate(&error.message, 512),
            delay.as_secs()
        );
        self.cond(ctypes::DEGRADED, cstatus::TRUE, reasons::RETRYING, &msg);
        self.event(EventType::Warning, reasons::RETRYING, msg);
        Flow::Return(self.finish(Action::WaitUntil(add(self.now, delay))))
    }

    /// Blocks the machine until the observation changes.
    fn block(&mut self, reason: &'static str, message: String) -> Decision {
        if self.s.step != Some(MachineStep::Blocked) {
            self.event(EventType::Warning, reason, message.clone());
        }
        self.enter(MachineStep::Blocked);
        self.cond(ctypes::BLOCKED, cstatus::TRUE, reason, &message);
        self.cond(ctypes::PROGRESSING, cstatus::FALSE, reason, &message);
        self.finish(Action::None)
    }

    fn held(&mut self) -> Decision {
        self.cond(
            ctypes::PROGRESSING,
            cstatus::FALSE,
            reasons::HELD,
            "held by annotation amamigrator.io/hold; remove it to continue",
        );
        self.finish(Action::None)
    }

    /// Final bookkeeping: summary fields and the standard conditions for the step.
    fn finish(&mut self, action: Action) -> Decision {
        self.s.agents = Some(agents_summary(&self.obs));
        if let Some(v) = &self.obs.verification {
            self.s.observed_senders = self
                .spec
                .data_sources
                .iter()
                .map(|d| ObservedSenders {
                    name: d.name.clone(),
                    senders: v
                        .delivering
                        .get(&d.name)
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default(),
                    observed_at: Some(Time(v.observed_at)),
                })
                .collect();
        }
        let step = self.current_step();
        match step {
            MachineStep::Done => {
                self.cond(ctypes::READY, cstatus::TRUE, reasons::COMPLETED, "migrated");
                self.cond(
                    ctypes::PROGRESSING,
                    cstatus::FALSE,
                    reasons::COMPLETED,
                    "migrated",
                );
                self.cond(ctypes::BLOCKED, cstatus::FALSE, reasons::COMPLETED, "");
                self.cond(ctypes::DEGRADED, cstatus::FALSE, reasons::COMPLETED, "");
            }
            MachineStep::Failed => {
                self.cond(
                    ctypes::READY,
                    cstatus::FALSE,
                    reasons::FAILED,
                    "failed; see Degraded",
                );
                self.cond(
                    ctypes::PROGRESSING,
                    cstatus::FALSE,
                    reasons::FAILED,
                    "failed; see Degraded",
                );
            }
            MachineStep::Blocked => {
                self.cond(
                    ctypes::READY,
                    cstatus::FALSE,
                    reasons::BLOCKED,
                    "blocked; see Blocked",
                );
            }
            MachineStep::RollingBack => {
                // The rollback sets Ready/Blocked itself; here only "work under way".
                if !matches!(action, Action::None) {
                    self.cond(
                        ctypes::PROGRESSING,
                        cstatus::TRUE,
                        reasons::ROLLING_BACK,
                        "removing what the migrator added",
                    );
                }
            }
            _ => {
                let msg = format!("step {step:?}");
                self.cond(ctypes::READY, cstatus::FALSE, reasons::STEP_RUNNING, &msg);
                // Whoever chose `Action::None` set Progressing=False with its own reason.
                if !matches!(action, Action::None) {
                    self.cond(
                        ctypes::PROGRESSING,
                        cstatus::TRUE,
                        reasons::STEP_RUNNING,
                        &msg,
                    );
                }
                self.cond(ctypes::BLOCKED, cstatus::FALSE, reasons::STEP_RUNNING, "");
                if self.s.last_error.is_none() {
                    self.cond(ctypes::DEGRADED, cstatus::FALSE, reasons::STEP_RUNNING, "");
                }
            }
        }
        Decision {
            status: std::mem::take(&mut self.s),
            action,
            events: std::mem::take(&mut self.events),
        }
    }
}

/// `Legacy+AMA`, `AMA`, `Legacy` or `None`, for the printer column.
pub fn agents_summary(obs: &Observation) -> String {
    let ama = obs.ama.state.is_present();
    let legacy = obs.legacy.is_present();
    match (legacy, ama) {
        (true, true) => format!("{}+{}", Agent::Legacy.as_str(), Agent::Ama.as_str()),
        (true, false) => Agent::Legacy.as_str().into(),
        (false, true) => Agent::Ama.as_str().into(),
        (false, false) => "None".into(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
