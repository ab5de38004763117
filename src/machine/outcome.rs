//! Folding the last action's outcome and the in-flight operation into the status: record a
//! started operation before any wait, resolve it from a poll or from the observation, and turn
//! failures into retries or `Failed`.

use k8s_openapi::jiff::Timestamp;

use super::{Action, ActionError, Ctx, ExtensionState, Flow, Outcome, PollResult, add, reasons};
use crate::api::conditions::{status as cstatus, types as ctypes};
use crate::api::machine::{InFlightOperation, OperationKind};
use crate::azure::error::Classification;

/// Extension provisioning failures that a new PUT often cures (field reports, domain.md §C.2);
/// the client classifies them Permanent because the same request fails the same way *at once*.
const RETRYABLE_EXTENSION_CODES: &[&str] = &[
    "VMExtensionProvisioningError",
    "VMExtensionProvisioningTimeout",
    "VMAgentStatusCommunicationError",
    "OperationPreempted",
    "ExtensionDownloadError",
    "Conflict",
    "OperationTimedOut",
];

/// How the step function treats a failure (the client's classification, widened for
/// extension provisioning failures that are worth another attempt).
pub(super) fn retry_class(e: &ActionError) -> Classification {
    if e.classification == Classification::Permanent
        && (RETRYABLE_EXTENSION_CODES
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&e.code))
            || is_marked_for_deletion(e))
    {
        return Classification::Transient;
    }
    e.classification
}

/// 409 "… marked for deletion … only retry Delete" (a delete timed out; the extension is stuck
/// in `Deleting` until the DELETE is sent again).
pub(super) fn is_marked_for_deletion(e: &ActionError) -> bool {
    e.message
        .to_ascii_lowercase()
        .contains("marked for deletion")
}

fn is_delete(kind: OperationKind) -> bool {
    matches!(kind, OperationKind::RemoveLegacy | OperationKind::RemoveAma)
}

/// A human label for what failed.
fn label(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::EnableIdentity => "enabling the system-assigned identity",
        OperationKind::InstallAma => "installing the AMA extension",
        OperationKind::RemoveLegacy => "removing the legacy agent extension",
        OperationKind::RemoveAma => "removing the AMA extension",
        OperationKind::Other => "the operation",
    }
}

fn action_label(a: &Action) -> &'static str {
    match a {
        Action::Associate { .. } => "associating a DCR",
        Action::RemoveAssociation { .. } => "removing a DCR association",
        Action::Verify => "the verification query",
        other => label(other.operation_kind()),
    }
}

impl Ctx<'_> {
    /// What the observation shows about an operation of `kind`: `Some(Ok)` done, `Some(Err)`
    /// failed, `None` still running.
    fn observed_result(&self, kind: OperationKind) -> Option<Result<(), ActionError>> {
        match kind {
            OperationKind::EnableIdentity => self.obs.identity.system_assigned.then_some(Ok(())),
            OperationKind::InstallAma => match &self.obs.ama.state {
                ExtensionState::Succeeded => Some(Ok(())),
                ExtensionState::Failed { code, message } => Some(Err(ActionError {
                    classification: Classification::Permanent,
                    code: code.clone(),
                    message: message.clone(),
                    http_status: None,
                    retry_after: None,
                })),
                _ => None,
            },
            OperationKind::RemoveLegacy => (!self.obs.legacy.state.is_present()).then_some(Ok(())),
            OperationKind::RemoveAma => (!self.obs.ama.state.is_present()).then_some(Ok(())),
            OperationKind::Other => Some(Ok(())),
        }
    }

    /// Applies the known effect of a successful operation to the working observation.
    fn apply_success(&mut self, kind: OperationKind) {
        match kind {
            OperationKind::EnableIdentity => self.obs.identity.system_assigned = true,
            OperationKind::InstallAma => self.obs.ama.state = ExtensionState::Succeeded,
            OperationKind::RemoveLegacy => {
                self.obs.legacy.state = ExtensionState::Absent;
                self.obs.legacy.name = None;
                self.cond(
                    reasons::TYPE_LEGACY_REMOVED_BY_MIGRATOR,
                    cstatus::TRUE,
                    reasons::LEGACY_REMOVED,
                    "the migrator removed the legacy agent extension; a rollback cannot reinstall it",
                );
                self.event(
                    super::EventType::Normal,
                    reasons::LEGACY_REMOVED,
                    "legacy agent extension removed".into(),
                );
            }
            OperationKind::RemoveAma => {
                self.obs.ama.state = ExtensionState::Absent;
                self.obs.ama.name = None;
            }
            OperationKind::Other => {}
        }
    }

    /// Applies a synchronous action's effect (associations, or an LRO that finished at once).
    fn apply_action_success(&mut self, action: &Action) {
        match action {
            Action::Associate {
                dcr_id,
                association_name,
            } => {
                if !self
                    .obs
                    .associations
                    .iter()
                    .any(|a| a.name.eq_ignore_ascii_case(association_name))
                {
                    self.obs.associations.push(super::Association {
                        name: association_name.clone(),
                        dcr_id: dcr_id.clone(),
                    });
                }
            }
            Action::RemoveAssociation { association_name } => self
                .obs
                .associations
                .retain(|a| !a.name.eq_ignore_ascii_case(association_name)),
            Action::InstallAma { extension_name, .. } => {
                self.obs.ama.name = Some(extension_name.clone());
                self.apply_success(OperationKind::InstallAma);
            }
            other => self.apply_success(other.operation_kind()),
        }
    }

    fn record_operation(&mut self, url: String, kind: OperationKind) {
        self.s.operation = Some(InFlightOperation {
            url,
            kind,
            started_at: self.now_time(),
        });
    }

    fn operation_expired(&self, op: &InFlightOperation) -> bool {
        add(op.started_at.0, self.policy.operation_timeout) <= self.now
    }

    fn timeout_error(&self, kind: OperationKind) -> ActionError {
        ActionError {
            classification: Classification::Transient,
            code: "OperationTimedOut".into(),
            message: format!(
                "{} did not finish within {}s",
                label(kind),
                self.policy.operation_timeout.as_secs()
            ),
            http_status: None,
            retry_after: None,
        }
    }

    fn poll_later(&self, retry_after: Option<std::time::Duration>) -> Timestamp {
        add(
            self.now,
            retry_after
                .unwrap_or(self.policy.poll_interval)
                .max(std::time::Duration::from_secs(1)),
        )
    }

    /// Folds the last outcome in. Records a started operation in the status in this very
    /// decision, so a restart polls it instead of sending the write again.
    pub(super) fn resolve_outcome(&mut self) -> Flow {
        let Some(outcome) = self.outcome else {
            return Flow::Continue;
        };
        match outcome {
            Outcome::Submitted {
                action,
                operation: Some(handle),
            } => {
                let kind = action.operation_kind();
                if let Action::InstallAma { extension_name, .. } = action {
                    self.obs.ama.name = Some(extension_name.clone());
                }
                self.record_operation(handle.poll_url.clone(), kind);
                self.cond(
                    ctypes::PROGRESSING,
                    cstatus::TRUE,
                    reasons::STEP_RUNNING,
                    format!("{} started; polling", label(kind)),
                );
                let first = handle.retry_after_ms.map(std::time::Duration::from_millis);
                Flow::Return(self.finish(Action::WaitUntil(self.poll_later(first))))
            }
            Outcome::Submitted {
                action,
                operation: None,
            } => {
                self.apply_action_success(action);
                Flow::Continue
            }
            Outcome::Failed { action, error } => {
                if matches!(action, Action::Verify) {
                    // A failed query proves nothing about the machine: ask again later.
                    return Flow::Return(
                        self.finish(Action::WaitUntil(self.poll_later(error.retry_after))),
                    );
                }
                let delete = matches!(
                    action,
                    Action::RemoveAssociation { .. }
                        | Action::RemoveLegacy { .. }
                        | Action::RemoveAma { .. }
                );
                if delete && error.http_status == Some(404) {
                    // Deleting what is already gone is success.
                    self.apply_action_success(action);
                    return Flow::Continue;
                }
                let what = action_label(action);
                self.fail(what, error)
            }
            Outcome::Polled(result) => {
                let Some(op) = self.s.operation.clone() else {
                    return Flow::Continue; // a stale poll result: nothing in flight
                };
                match result {
                    PollResult::Running { retry_after } => {
                        if self.operation_expired(&op) {
                            self.s.operation = None;
                            let e = self.timeout_error(op.kind);
                            return self.fail(label(op.kind), &e);
                        }
                        Flow::Return(self.finish(Action::WaitUntil(self.poll_later(*retry_after))))
                    }
                    PollResult::Succeeded => {
                        self.s.operation = None;
                        self.apply_success(op.kind);
                        Flow::Continue
                    }
                    PollResult::Failed(e) => {
                        self.s.operation = None;
                        if is_delete(op.kind) && e.http_status == Some(404) {
                            self.apply_success(op.kind);
                            return Flow::Continue;
                        }
                        self.fail(label(op.kind), e)
                    }
                    PollResult::PollError(e) => {
                        if retry_class(e) == Classification::Permanent {
                            // The status URL is gone or refused: let the observation decide.
                            self.s.operation = None;
                            return Flow::Continue;
                        }
                        Flow::Return(self.finish(Action::WaitUntil(self.poll_later(e.retry_after))))
                    }
                }
            }
        }
    }

    /// An operation still in flight: resolve it from the observation, or poll it.
    pub(super) fn resolve_in_flight(&mut self) -> Flow {
        let Some(op) = self.s.operation.clone() else {
            return Flow::Continue;
        };
        match self.observed_result(op.kind) {
            Some(Ok(())) => {
                self.s.operation = None;
                self.apply_success(op.kind);
                Flow::Continue
            }
            Some(Err(e)) => {
                self.s.operation = None;
                self.fail(label(op.kind), &e)
            }
            None if self.operation_expired(&op) => {
                self.s.operation = None;
                let e = self.timeout_error(op.kind);
                self.fail(label(op.kind), &e)
            }
            None => Flow::Return(self.finish(Action::PollOperation(op))),
        }
    }
}
