//! Condition types and reasons as constants, and a setter that keeps `lastTransitionTime` honest
//! (it changes only when the status flips), so every shell reports conditions the same way.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of `MigrationPlan` and `MachineMigration`.
pub mod types {
    /// The resource reached its goal (plan: every machine done and every flip made; machine: done).
    pub const READY: &str = "Ready";
    /// Work is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something failed; the message says what and how to recover.
    pub const DEGRADED: &str = "Degraded";
    /// Progress waits on something outside the controller (a gate, an approval, an uncovered sender, a bad spec).
    pub const BLOCKED: &str = "Blocked";
}

/// Reasons (CamelCase, stable API).
pub mod reasons {
    pub const PLAN_ACCEPTED: &str = "PlanAccepted";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const OUT_OF_BOUNDS: &str = "CutoverWindowOutOfBounds";
    pub const UNSUPPORTED_SOURCE: &str = "AmaUnsupportedSource";
    pub const MACHINE_CLAIMED_TWICE: &str = "MachineClaimedByTwoPlans";
    pub const WAVE_IN_PROGRESS: &str = "WaveInProgress";
    pub const SOAKING: &str = "Soaking";
    pub const AWAITING_APPROVAL: &str = "AwaitingManualApproval";
    pub const GATE_FAILED: &str = "GateFailed";
    pub const FAILURE_BUDGET_EXCEEDED: &str = "FailureBudgetExceeded";
    pub const PAUSED: &str = "Paused";
    pub const OUTSIDE_MAINTENANCE_WINDOW: &str = "OutsideMaintenanceWindow";
    pub const FLIP_WAITING_FOR_SENDERS: &str = "LegacyFlipWaitingForSenders";
    pub const COMPLETED: &str = "Completed";
    pub const DRY_RUN: &str = "DryRun";
    // machine reasons
    pub const STEP_RUNNING: &str = "StepRunning";
    pub const RETRYING: &str = "Retrying";
    pub const ARM_ERROR: &str = "ArmError";
    pub const MISSING_IDENTITY: &str = "MissingIdentity";
    pub const DEALLOCATED: &str = "Deallocated";
    pub const DISCONNECTED: &str = "Disconnected";
    pub const WAITING_FOR_FLIP: &str = "WaitingForLegacyFlip";
    pub const HELD: &str = "Held";
}

/// `True` / `False` / `Unknown` as the API spells them.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}

/// Insert or update the condition of `type_`; `lastTransitionTime` moves only when `status` changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) {
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now;
        }
        c.status = status.to_string();
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = observed_generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation,
            last_transition_time: now,
        });
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0 = Time(Timestamp::from_second(1_000).unwrap());
        let t1 = Time(Timestamp::from_second(2_000).unwrap());
        let t2 = Time(Timestamp::from_second(3_000).unwrap());
        let mut cs = Vec::new();
        set_condition(
            &mut cs,
            types::READY,
            status::FALSE,
            reasons::WAVE_IN_PROGRESS,
            "wave 1",
            Some(1),
            t0.clone(),
        );
        set_condition(
            &mut cs,
            types::READY,
            status::FALSE,
            reasons::SOAKING,
            "soak",
            Some(2),
            t1,
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, t0);
        assert_eq!(cs[0].reason, reasons::SOAKING);
        set_condition(
            &mut cs,
            types::READY,
            status::TRUE,
            reasons::COMPLETED,
            "done",
            Some(2),
            t2.clone(),
        );
        assert_eq!(cs[0].last_transition_time, t2);
        assert_eq!(find(&cs, types::READY).unwrap().status, "True");
        assert!(find(&cs, types::BLOCKED).is_none());
    }
}
