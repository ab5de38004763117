//! Unit tests of the per-machine step function: one per step and per failure mode.

mod machine_support;

use std::time::Duration;

use ama_migrator::api::conditions::{find, status as cstatus, types as ctypes};
use ama_migrator::api::machine::{
    InFlightOperation, MachineMigrationStatus, MachineStep, OperationKind,
};
use ama_migrator::api::plan::{Agent, CutoverPolicy, IdentityPolicy, MachineKind, UninstallPolicy};
use ama_migrator::azure::error::Classification;
use ama_migrator::machine::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use machine_support::*;

fn none() -> Requests {
    Requests::default()
}

fn status_at(step: MachineStep) -> MachineMigrationStatus {
    MachineMigrationStatus {
        step: Some(step),
        step_started_at: Some(Time(t(0))),
        ..Default::default()
    }
}

fn writes(actions: &[Action]) -> Vec<&Action> {
    actions.iter().filter(|a| a.is_write()).collect()
}

fn cond_reason(s: &MachineMigrationStatus, type_: &str) -> Option<(String, String, String)> {
    find(&s.conditions, type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[test]
fn prefer_no_gap_happy_path_runs_every_step_in_order() {
    let mut world = World::new(two_sources(), legacy_vm());
    let mut status = MachineMigrationStatus::default();
    let (d, actions, _) = drive(
        &mut world,
        &mut status,
        &Policy::default(),
        none(),
        Reply::Lro,
        t(0),
        100,
    );
    assert_eq!(d.status.step, Some(MachineStep::Done));
    let w = writes(&actions);
    assert!(
        matches!(
            w[0],
            Action::InstallAma {
                extension_type: "AzureMonitorWindowsAgent",
                identity: AmaIdentity::SystemAssigned,
                ..
            }
        ),
        "{w:?}"
    );
    assert_eq!(
        w[1],
        &Action::Associate {
            dcr_id: dcr("dcr-sec"),
            association_name: "ama-migrator-dcr-sec".into()
        }
    );
    assert!(
        matches!(w[2], Action::Associate { association_name, .. } if association_name == "ama-migrator-dcr-sys")
    );
    assert_eq!(
        w[3],
        &Action::RemoveLegacy {
            extension_name: "MicrosoftMonitoringAgent".into()
        }
    );
    assert_eq!(w.len(), 4, "exactly four writes: {w:?}");
    // Verification ran between the last association and the legacy removal.
    let verify_at = actions.iter().position(|a| *a == Action::Verify).unwrap();
    let remove_at = actions
        .iter()
        .position(|a| matches!(a, Action::RemoveLegacy { .. }))
        .unwrap();
    let last_assoc = actions
        .iter()
        .rposition(|a| matches!(a, Action::Associate { .. }))
        .unwrap();
    assert!(last_assoc < verify_at && verify_at < remove_at);
    assert_eq!(d.status.agents.as_deref(), Some("AMA"));
    assert_eq!(
        cond_reason(&d.status, ctypes::READY).unwrap().0,
        cstatus::TRUE
    );
    assert!(d.status.completed_at.is_some() && d.status.started_at.is_some());
    assert!(d.status.operation.is_none());
    assert_eq!(
        cond_reason(&d.status, reasons::TYPE_LEGACY_REMOVED_BY_MIGRATOR)
            .unwrap()
            .0,
        cstatus::TRUE
    );
    // Done is stable: stepping again changes nothing and writes nothing.
    let again = run(
        &world.spec,
        &d.status,
        &world.obs,
        None,
        &Policy::default(),
        none(),
        t(9999),
    );
    assert_eq!(again.action, Action::None);
    assert_eq!(again.status.step, Some(MachineStep::Done));
    assert!(again.events.is_empty());
}

#[test]
fn prefer_no_duplicate_stops_legacy_before_associating() {
    let mut world = World::new(two_sources(), legacy_vm());
    let policy = Policy {
        cutover: CutoverPolicy::PreferNoDuplicate,
        ..Policy::default()
    };
    let mut status = MachineMigrationStatus::default();
    let (d, actions, _) = drive(
        &mut world,
        &mut status,
        &policy,
        none(),
        Reply::Sync,
        t(0),
        100,
    );
    assert_eq!(d.status.step, Some(MachineStep::Done));
    let w = writes(&actions);
    assert!(matches!(w[0], Action::InstallAma { .. }));
    assert!(matches!(w[1], Action::RemoveLegacy { .. }), "{w:?}");
    assert!(matches!(w[2], Action::Associate { .. }));
    assert!(matches!(w[3], Action::Associate { .. }));
    // The heartbeat was checked before the legacy agent went, the data after the associations.
    let first_verify = actions.iter().position(|a| *a == Action::Verify).unwrap();
    let remove = actions
        .iter()
        .position(|a| matches!(a, Action::RemoveLegacy { .. }))
        .unwrap();
    let last_verify = actions.iter().rposition(|a| *a == Action::Verify).unwrap();
    let last_assoc = actions
        .iter()
        .rposition(|a| matches!(a, Action::Associate { .. }))
        .unwrap();
    assert!(first_verify < remove && last_assoc < last_verify);
}

#[test]
fn prefer_no_duplicate_with_retained_legacy_associates_only_flipped_sources() {
    let s = spec(&[
        ("security", Agent::Ama, Some("dcr-sec")),
        ("firewall", Agent::Legacy, None),
    ]);
    let mut world = World::new(s, legacy_vm());
    let policy = Policy {
        cutover: CutoverPolicy::PreferNoDuplicate,
        ..Policy::default()
    };
    let mut status = MachineMigrationStatus::default();
    let (d, actions, now) = drive(
        &mut world,
        &mut status,
        &policy,
        none(),
        Reply::Sync,
        t(0),
        50,
    );
    assert_eq!(d.status.step, Some(MachineStep::WaitForFlip));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Associate { .. } | Action::RemoveLegacy { .. }))
    );
    let (_, reason, msg) = cond_reason(&d.status, ctypes::PROGRESSING).unwrap();
    assert_eq!(reason, reasons::WAITING_FOR_FLIP);
    assert!(msg.contains("security"), "{msg}");
    // The plan flips the security stream: now AMA may start sending it.
    world.obs.flipped.insert("security".into());
    let (d, actions, _) = drive(
        &mut world,
        &mut status,
        &policy,
        none(),
        Reply::Sync,
        now,
        50,
    );
    assert_eq!(d.status.step, Some(MachineStep::Done));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Associate { .. }))
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::RemoveLegacy { .. }))
    );
    assert_eq!(
        cond_reason(&d.status, reasons::TYPE_LEGACY_RETAINED)
            .unwrap()
            .1,
        reasons::LEGACY_STILL_NEEDED
    );
}

#[test]
fn deallocated_vm_blocks_and_resumes_by_itself() {
    let mut obs = legacy_vm();
    obs.power = Power::Deallocated;
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Blocked));
    assert_eq!(d.action, Action::None);
    let (st, reason, msg) = cond_reason(&d.status, ctypes::BLOCKED).unwrap();
    assert_eq!(
        (st.as_str(), reason.as_str()),
        (cstatus::TRUE, reasons::DEALLOCATED)
    );
    assert!(msg.contains("start the VM"), "{msg}");
    assert!(d.events.iter().any(|e| e.type_ == EventType::Warning));
    obs.power = Power::Ready;
    let d2 = run(
        &two_sources(),
        &d.status,
        &obs,
        None,
        &Policy::default(),
        none(),
        t(10),
    );
    assert!(matches!(d2.action, Action::InstallAma { .. }));
    assert_eq!(d2.status.step, Some(MachineStep::InstallAma));
    assert_eq!(
        cond_reason(&d2.status, ctypes::BLOCKED).unwrap().0,
        cstatus::FALSE
    );
}

#[test]
fn disconnected_arc_server_blocks() {
    let mut s = two_sources();
    s.kind = MachineKind::ArcServer;
    s.machine_id = ARC.into();
    let mut obs = legacy_vm();
    obs.power = Power::Disconnected;
    let d = run(
        &s,
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Blocked));
    assert_eq!(
        cond_reason(&d.status, ctypes::BLOCKED).unwrap().1,
        reasons::DISCONNECTED
    );
}

#[test]
fn missing_machine_blocks_with_the_fix() {
    let obs = Observation {
        exists: false,
        ..legacy_vm()
    };
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    let (_, reason, msg) = cond_reason(&d.status, ctypes::BLOCKED).unwrap();
    assert_eq!(reason, reasons::MACHINE_NOT_FOUND);
    assert!(msg.contains(VM));
}

#[test]
fn missing_identity_is_enabled_then_ama_installed() {
    let mut obs = legacy_vm();
    obs.identity = IdentityState::default();
    let mut world = World::new(two_sources(), obs);
    let mut status = MachineMigrationStatus::default();
    let (d, actions, _) = drive(
        &mut world,
        &mut status,
        &Policy::default(),
        none(),
        Reply::Lro,
        t(0),
        100,
    );
    assert_eq!(d.status.step, Some(MachineStep::Done));
    let w = writes(&actions);
    assert_eq!(w[0], &Action::EnableSystemIdentity);
    assert!(matches!(
        w[1],
        Action::InstallAma {
            identity: AmaIdentity::SystemAssigned,
            ..
        }
    ));
}

#[test]
fn missing_identity_blocks_when_the_plan_requires_an_existing_one() {
    let mut obs = legacy_vm();
    obs.identity = IdentityState::default();
    let policy = Policy {
        identity: IdentityPolicy::RequireExisting,
        ..Policy::default()
    };
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &policy,
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Blocked));
    let (_, reason, msg) = cond_reason(&d.status, ctypes::BLOCKED).unwrap();
    assert_eq!(reason, reasons::MISSING_IDENTITY);
    assert!(msg.contains("RequireExisting"));
}

#[test]
fn user_assigned_identity_is_used_without_a_patch() {
    let mut obs = legacy_vm();
    obs.identity = IdentityState {
        system_assigned: false,
        user_assigned: vec!["/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z".into(),
                            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a".into()],
    };
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    match d.action {
        Action::InstallAma {
            identity: AmaIdentity::UserAssigned(id),
            ..
        } => assert!(id.ends_with("/a")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn arc_server_without_identity_blocks() {
    let mut s = two_sources();
    s.kind = MachineKind::ArcServer;
    let mut obs = legacy_vm();
    obs.identity = IdentityState::default();
    let d = run(
        &s,
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(
        cond_reason(&d.status, ctypes::BLOCKED).unwrap().1,
        reasons::ARC_MISSING_IDENTITY
    );
}

#[test]
fn existing_ama_is_adopted_and_not_reinstalled_nor_rolled_back() {
    let mut obs = legacy_vm();
    obs.ama = AmaState {
        name: Some("AMAWindows".into()),
        state: ExtensionState::Succeeded,
    };
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert!(
        matches!(d.action, Action::Associate { .. }),
        "{:?}",
        d.action
    );
    assert!(cond_reason(&d.status, reasons::TYPE_AMA_INSTALLED_BY_MIGRATOR).is_none());
}

#[test]
fn failed_ama_is_reinstalled_under_its_own_name() {
    let mut obs = legacy_vm();
    obs.ama = AmaState {
        name: Some("AMAWindows".into()),
        state: ExtensionState::Failed {
            code: "VMExtensionProvisioningError".into(),
            message: "x".into(),
        },
    };
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert!(
        matches!(&d.action, Action::InstallAma { extension_name, .. } if extension_name == "AMAWindows")
    );
}

#[test]
fn existing_association_is_adopted_under_any_name() {
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Succeeded;
    obs.associations.push(Association {
        name: "sentinel-wizard-1".into(),
        dcr_id: dcr("DCR-SEC").to_uppercase(),
    });
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(
        d.action,
        Action::Associate {
            dcr_id: dcr("dcr-sys"),
            association_name: "ama-migrator-dcr-sys".into()
        }
    );
}

#[test]
fn association_names_are_deterministic_and_unique() {
    assert_eq!(association_name(&dcr("My-DCR")), "ama-migrator-my-dcr");
    let other_rg = "/subscriptions/s1/resourceGroups/rg2/providers/Microsoft.Insights/dataCollectionRules/dcr-sec";
    let mut s = two_sources();
    s.data_sources[1].dcr = Some(other_rg.into());
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Succeeded;
    let d1 = run(
        &s,
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    let Action::Associate {
        association_name: n1,
        dcr_id: id1,
    } = d1.action.clone()
    else {
        panic!()
    };
    obs.associations.push(Association {
        name: n1.clone(),
        dcr_id: id1,
    });
    let d2 = run(&s, &d1.status, &obs, None, &Policy::default(), none(), t(1));
    let Action::Associate {
        association_name: n2,
        ..
    } = d2.action
    else {
        panic!("{:?}", d2.action)
    };
    assert_ne!(n1, n2);
    assert!(n1.starts_with("ama-migrator-dcr-sec-") && n2.starts_with("ama-migrator-dcr-sec-"));
}

#[test]
fn lro_handle_is_recorded_in_the_decision_that_learns_it() {
    let obs = legacy_vm();
    let d0 = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    let install = d0.action.clone();
    assert!(matches!(install, Action::InstallAma { .. }));
    let mut h = handle("https://management.azure.com/op/1");
    h.retry_after_ms = Some(15_000);
    let outcome = Outcome::Submitted {
        action: install,
        operation: Some(h),
    };
    let mut after = obs.clone();
    after.ama.state = ExtensionState::Provisioning;
    let d1 = run(
        &two_sources(),
        &d0.status,
        &after,
        Some(&outcome),
        &Policy::default(),
        none(),
        t(1),
    );
    let op = d1.status.operation.clone().expect("operation persisted");
    assert_eq!(op.url, "https://management.azure.com/op/1");
    assert_eq!(op.kind, OperationKind::InstallAma);
    assert_eq!(d1.action, Action::WaitUntil(t(16)));
    // A restart (same status, no outcome) polls instead of sending the PUT again.
    let d2 = run(
        &two_sources(),
        &d1.status,
        &after,
        None,
        &Policy::default(),
        none(),
        t(20),
    );
    assert_eq!(d2.action, Action::PollOperation(op.clone()));
    // Even under hold, an operation already running is still polled.
    let held = Requests {
        hold: true,
        ..none()
    };
    let d3 = run(
        &two_sources(),
        &d1.status,
        &after,
        None,
        &Policy::default(),
        held,
        t(20),
    );
    assert_eq!(d3.action, Action::PollOperation(op));
}

#[test]
fn in_flight_operation_resolves_from_the_observation() {
    let mut status = status_at(MachineStep::InstallAma);
    status.operation = Some(InFlightOperation {
        url: "https://management.azure.com/op/2".into(),
        kind: OperationKind::InstallAma,
        started_at: Time(t(0)),
    });
    let mut obs = legacy_vm();
    obs.ama = AmaState {
        name: Some("AzureMonitorWindowsAgent".into()),
        state: ExtensionState::Succeeded,
    };
    let d = run(
        &two_sources(),
        &status,
        &obs,
        None,
        &Policy::default(),
        none(),
        t(60),
    );
    assert!(d.status.operation.is_none());
    assert!(matches!(d.action, Action::Associate { .. }));
}

#[test]
fn transient_errors_back_off_exponentially_then_fail_with_the_code() {
    let policy = Policy {
        max_attempts: 3,
        backoff_base: Duration::from_secs(10),
        ..Policy::default()
    };
    let s = two_sources();
    let obs = legacy_vm();
    let mut status = MachineMigrationStatus::default();
    let mut now = t(0);
    let mut waits = Vec::new();
    for i in 0..3 {
        let d = run(&s, &status, &obs, None, &policy, none(), now);
        let action = d.action.clone();
        assert!(
            matches!(action, Action::InstallAma { .. }),
            "attempt {i}: {action:?}"
        );
        let outcome = Outcome::Failed {
            action,
            error: err(
                Classification::Transient,
                503,
                "ServiceUnavailable",
                "try later",
            ),
        };
        let d = run(&s, &d.status, &obs, Some(&outcome), &policy, none(), now);
        status = d.status.clone();
        assert!(status.attempts <= 3);
        match d.action {
            Action::WaitUntil(until) => {
                waits.push(until.duration_since(now).as_secs());
                // An early call during the backoff does not resend.
                let early = run(&s, &status, &obs, None, &policy, none(), now);
                assert_eq!(early.action, Action::WaitUntil(until));
                now = until;
            }
            Action::None => {
                assert_eq!(i, 2);
                assert_eq!(status.step, Some(MachineStep::Failed));
                assert_eq!(
                    status.last_error.as_ref().unwrap().code,
                    "ServiceUnavailable"
                );
                let (st, reason, msg) = cond_reason(&status, ctypes::DEGRADED).unwrap();
                assert_eq!(
                    (st.as_str(), reason.as_str()),
                    (cstatus::TRUE, reasons::ARM_ERROR)
                );
                assert!(msg.contains("amamigrator.io/retry"), "{msg}");
                assert!(d.events.iter().any(|e| e.reason == reasons::FAILED));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, vec![10, 20]);
    // Failed is sticky without the retry annotation.
    let d = run(&s, &status, &obs, None, &policy, none(), now);
    assert_eq!(d.action, Action::None);
}

#[test]
fn throttling_honours_retry_after() {
    let s = two_sources();
    let obs = legacy_vm();
    let d = run(
        &s,
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    let mut e = err(
        Classification::Throttled,
        429,
        "SubscriptionRequestsThrottled",
        "slow down",
    );
    e.retry_after = Some(Duration::from_secs(303));
    let outcome = Outcome::Failed {
        action: d.action.clone(),
        error: e,
    };
    let d = run(
        &s,
        &d.status,
        &obs,
        Some(&outcome),
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.action, Action::WaitUntil(t(303)));
    assert_eq!(d.status.attempts, 1);
    assert_eq!(
        cond_reason(&d.status, ctypes::DEGRADED).unwrap().1,
        reasons::RETRYING
    );
}

#[test]
fn permanent_error_fails_at_once_with_the_arm_code() {
    let s = two_sources();
    let obs = legacy_vm();
    let d = run(
        &s,
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    let outcome = Outcome::Failed {
        action: d.action.clone(),
        error: err(
            Classification::Permanent,
            403,
            "RequestDisallowedByPolicy",
            "denied by policy deny-ext",
        ),
    };
    let d = run(
        &s,
        &d.status,
        &obs,
        Some(&outcome),
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Failed));
    assert_eq!(d.status.attempts, 1);
    assert_eq!(
        d.status.last_error.unwrap().code,
        "RequestDisallowedByPolicy"
    );
    assert_eq!(d.action, Action::None);
}

#[test]
fn error_on_a_machine_that_got_deallocated_blocks_instead_of_failing() {
    let s = two_sources();
    let mut obs = legacy_vm();
    let d = run(
        &s,
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    obs.power = Power::Deallocated;
    let outcome = Outcome::Failed {
        action: d.action.clone(),
        error: err(
            Classification::Permanent,
            409,
            "OperationNotAllowed",
            "VM is deallocated",
        ),
    };
    let d = run(
        &s,
        &d.status,
        &obs,
        Some(&outcome),
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Blocked));
    assert_eq!(d.status.attempts, 0);
}

#[test]
fn extension_provisioning_failure_is_retried_then_fails() {
    let s = two_sources();
    let policy = Policy {
        max_attempts: 2,
        ..Policy::default()
    };
    let mut world = World::new(s.clone(), legacy_vm());
    let mut status = MachineMigrationStatus::default();
    let (d, actions, _) = drive(
        &mut world,
        &mut status,
        &policy,
        none(),
        Reply::Error(err(
            Classification::Permanent,
            200,
            "VMExtensionProvisioningError",
            "Enable failed with exit code 52",
        )),
        t(0),
        50,
    );
    assert_eq!(d.status.step, Some(MachineStep::Failed));
    assert_eq!(d.status.attempts, 2);
    assert_eq!(writes(&actions).len(), 2, "retried once: {actions:?}");
    assert_eq!(
        d.status.last_error.unwrap().code,
        "VMExtensionProvisioningError"
    );
}

#[test]
fn non_transient_handler_error_fails_at_once() {
    let s = two_sources();
    let mut world = World::new(s.clone(), legacy_vm());
    let mut status = MachineMigrationStatus::default();
    let (d, actions, _) = drive(
        &mut world,
        &mut status,
        &Policy::default(),
        none(),
        Reply::Error(err(
            Classification::Permanent,
            200,
            "VMExtensionHandlerNonTransientError",
            "exit 51 Unsupported operating system",
        )),
        t(0),
        50,
    );
    assert_eq!(d.status.step, Some(MachineStep::Failed));
    assert_eq!(writes(&actions).len(), 1);
}

#[test]
fn failed_lro_poll_counts_an_attempt() {
    let s = two_sources();
    let mut status = status_at(MachineStep::Cutover);
    status.operation = Some(InFlightOperation {
        url: "https://management.azure.com/op/3".into(),
        kind: OperationKind::RemoveLegacy,
        started_at: Time(t(0)),
    });
    let mut obs = legacy_vm();
    obs.legacy.state = ExtensionState::Deleting;
    let outcome = Outcome::Polled(PollResult::Failed(err(
        Classification::Transient,
        200,
        "InternalError",
        "boom",
    )));
    let d = run(
        &s,
        &status,
        &obs,
        Some(&outcome),
        &Policy::default(),
        none(),
        t(60),
    );
    assert!(d.status.operation.is_none());
    assert_eq!(d.status.attempts, 1);
    assert!(matches!(d.action, Action::WaitUntil(_)));
}

#[test]
fn marked_for_deletion_conflict_retries_the_delete() {
    let s = two_sources();
    let mut obs = legacy_vm();
    obs.ama = AmaState {
        name: Some("AzureMonitorWindowsAgent".into()),
        state: ExtensionState::Deleting,
    };
    let status = status_at(MachineStep::InstallAma);
    let install = Action::InstallAma {
        extension_name: "AzureMonitorWindowsAgent".into(),
        publisher: "Microsoft.Azure.Monitor",
        extension_type: "AzureMonitorWindowsAgent",
        identity: AmaIdentity::SystemAssigned,
    };
    let outcome = Outcome::Failed {
        action: install,
        error: err(
            Classification::Permanent,
            409,
            "Conflict",
            "PUT Extension not allowed: extension AzureMonitorWindowsAgent is marked for deletion; only retry Delete",
        ),
    };
    let d = run(
        &s,
        &status,
        &obs,
        Some(&outcome),
        &Policy::default(),
        none(),
        t(10),
    );
    let Action::WaitUntil(until) = d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(d.status.step, Some(MachineStep::InstallAma));
    let d2 = run(&s, &d.status, &obs, None, &Policy::default(), none(), until);
    assert_eq!(
        d2.action,
        Action::RemoveAma {
            extension_name: "AzureMonitorWindowsAgent".into()
        }
    );
}

#[test]
fn delete_of_something_already_gone_is_success() {
    let s = two_sources();
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Succeeded;
    obs.associations = vec![
        Association {
            name: "ama-migrator-dcr-sec".into(),
            dcr_id: dcr("dcr-sec"),
        },
        Association {
            name: "ama-migrator-dcr-sys".into(),
            dcr_id: dcr("dcr-sys"),
        },
    ];
    let mut world = World::new(s.clone(), obs.clone());
    world.obs.verification = Some(world.verification(t(0)));
    let mut status = status_at(MachineStep::Cutover);
    let remove = Action::RemoveLegacy {
        extension_name: "MicrosoftMonitoringAgent".into(),
    };
    let outcome = Outcome::Failed {
        action: remove,
        error: err(Classification::Permanent, 404, "ResourceNotFound", "gone"),
    };
    world.obs.legacy.state = ExtensionState::Absent;
    let d = run(
        &s,
        &status,
        &world.obs,
        Some(&outcome),
        &Policy::default(),
        none(),
        t(5),
    );
    status = d.status;
    assert_eq!(status.step, Some(MachineStep::Done));
    assert_eq!(status.attempts, 0);
}

#[test]
fn verify_timeout_retries_then_fails_with_an_actionable_message() {
    let s = two_sources();
    let policy = Policy {
        max_attempts: 2,
        verify_timeout: Duration::from_secs(600),
        verify_interval: Duration::from_secs(120),
        backoff_base: Duration::from_secs(10),
        ..Policy::default()
    };
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Succeeded;
    obs.associations = vec![
        Association {
            name: "a".into(),
            dcr_id: dcr("dcr-sec"),
        },
        Association {
            name: "b".into(),
            dcr_id: dcr("dcr-sys"),
        },
    ];
    let mut status = MachineMigrationStatus::default();
    let mut now = t(0);
    let mut verifies = 0;
    for _ in 0..100 {
        let d = run(&s, &status, &obs, None, &policy, none(), now);
        status = d.status.clone();
        match d.action {
            Action::Verify => {
                verifies += 1;
                obs.verification = Some(Verification {
                    observed_at: now,
                    ama_heartbeat: false,
                    delivering: Default::default(),
                });
                now = now.saturating_add(Duration::from_secs(1)).unwrap();
            }
            Action::WaitUntil(u) => now = u,
            Action::None => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(status.step, Some(MachineStep::Failed));
    assert_eq!(
        status.last_error.as_ref().unwrap().code,
        "AmaHeartbeatMissing"
    );
    assert!(
        status
            .last_error
            .as_ref()
            .unwrap()
            .message
            .contains("managed identity")
    );
    // Each attempt re-queried every verify_interval within the 600 s window: ~5 per attempt.
    assert!((8..=14).contains(&verifies), "{verifies}");
}

#[test]
fn retained_legacy_waits_for_the_flip_and_is_never_removed() {
    for (case, mut obs, spec_, policy) in [
        (
            "legacy-only source",
            legacy_vm(),
            spec(&[
                ("security", Agent::Ama, Some("dcr-sec")),
                ("firewall", Agent::Legacy, None),
            ]),
            Policy::default(),
        ),
        (
            "multi-homed",
            {
                let mut o = legacy_vm();
                o.legacy_needed_by = vec!["multi-homed to workspace contoso-it".into()];
                o
            },
            two_sources(),
            Policy::default(),
        ),
        (
            "in-guest",
            {
                let mut o = legacy_vm();
                o.legacy = LegacyState {
                    name: None,
                    state: ExtensionState::Absent,
                    in_guest_only: true,
                };
                o
            },
            two_sources(),
            Policy::default(),
        ),
        (
            "uninstall never",
            legacy_vm(),
            two_sources(),
            Policy {
                uninstall: UninstallPolicy::Never,
                ..Policy::default()
            },
        ),
    ] {
        let mut world = World::new(spec_.clone(), obs.clone());
        let mut status = MachineMigrationStatus::default();
        let (d, actions, now) = drive(
            &mut world,
            &mut status,
            &policy,
            none(),
            Reply::Sync,
            t(0),
            60,
        );
        assert_eq!(d.status.step, Some(MachineStep::WaitForFlip), "{case}");
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::RemoveLegacy { .. })),
            "{case}"
        );
        let (st, reason, msg) = cond_reason(&d.status, reasons::TYPE_LEGACY_RETAINED).unwrap();
        assert_eq!(st, cstatus::TRUE, "{case}");
        match case {
            "multi-homed" => assert!(msg.contains("contoso-it")),
            "in-guest" => assert_eq!(reason, reasons::LEGACY_IN_GUEST),
            "uninstall never" => assert_eq!(reason, reasons::LEGACY_UNINSTALL_NEVER),
            _ => assert!(msg.contains("firewall")),
        }
        for src in spec_.data_sources.iter().filter(|d| d.agent == Agent::Ama) {
            world.obs.flipped.insert(src.name.clone());
        }
        let (d, actions, _) = drive(
            &mut world,
            &mut status,
            &policy,
            none(),
            Reply::Sync,
            now,
            60,
        );
        assert_eq!(d.status.step, Some(MachineStep::Done), "{case}");
        assert!(!actions.iter().any(|a| a.is_write()), "{case}: {actions:?}");
        obs.flipped.clear();
    }
}

#[test]
fn hold_starts_nothing_new() {
    let d = run(
        &two_sources(),
        &Default::default(),
        &legacy_vm(),
        None,
        &Policy::default(),
        Requests {
            hold: true,
            ..none()
        },
        t(0),
    );
    assert_eq!(d.action, Action::None);
    assert_eq!(
        cond_reason(&d.status, ctypes::PROGRESSING).unwrap().1,
        reasons::HELD
    );
}

#[test]
fn machine_not_admitted_stays_pending_and_mid_run_sends_no_write() {
    let mut s = two_sources();
    s.may_proceed = false;
    let d = run(
        &s,
        &Default::default(),
        &legacy_vm(),
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Pending));
    assert_eq!(d.action, Action::None);
    assert_eq!(
        cond_reason(&d.status, ctypes::PROGRESSING).unwrap().1,
        reasons::NOT_ADMITTED
    );
    let d = run(
        &s,
        &status_at(MachineStep::AssociateDcrs),
        &{
            let mut o = legacy_vm();
            o.ama.state = ExtensionState::Succeeded;
            o
        },
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.action, Action::None);
}

#[test]
fn retry_annotation_resumes_a_failed_machine_with_attempts_reset() {
    let mut status = status_at(MachineStep::Failed);
    status.attempts = 5;
    status.last_error = Some(ama_migrator::api::machine::ArmErrorStatus {
        code: "X".into(),
        message: "y".into(),
    });
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Succeeded;
    let d = run(
        &two_sources(),
        &status,
        &obs,
        None,
        &Policy::default(),
        none(),
        t(10),
    );
    assert_eq!(d.action, Action::None);
    let d = run(
        &two_sources(),
        &status,
        &obs,
        None,
        &Policy::default(),
        Requests {
            retry: true,
            ..none()
        },
        t(10),
    );
    assert!(
        matches!(d.action, Action::Associate { .. }),
        "{:?}",
        d.action
    );
    assert_eq!(d.status.attempts, 0);
    assert!(d.status.last_error.is_none());
    assert_eq!(d.status.step, Some(MachineStep::AssociateDcrs));
}

#[test]
fn rollback_removes_only_what_the_migrator_added() {
    // Migrate with PreferNoGap until legacy is the only thing left, under uninstall Never.
    let policy = Policy {
        uninstall: UninstallPolicy::Never,
        ..Policy::default()
    };
    let mut obs = legacy_vm();
    obs.associations.push(Association {
        name: "sentinel-own".into(),
        dcr_id: dcr("other"),
    });
    let mut world = World::new(two_sources(), obs);
    let mut status = MachineMigrationStatus::default();
    let (d, _, now) = drive(
        &mut world,
        &mut status,
        &policy,
        none(),
        Reply::Sync,
        t(0),
        60,
    );
    assert_eq!(d.status.step, Some(MachineStep::WaitForFlip));
    let rb = Requests {
        rollback: true,
        ..none()
    };
    let (d, actions, _) = drive(&mut world, &mut status, &policy, rb, Reply::Sync, now, 60);
    assert_eq!(d.status.step, Some(MachineStep::RollingBack));
    let w = writes(&actions);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        matches!(w[0], Action::RemoveAssociation { association_name } if association_name == "ama-migrator-dcr-sec")
    );
    assert!(
        matches!(w[1], Action::RemoveAssociation { association_name } if association_name == "ama-migrator-dcr-sys")
    );
    assert!(matches!(w[2], Action::RemoveAma { .. }));
    assert_eq!(
        world.obs.associations.len(),
        1,
        "the foreign association stays"
    );
    assert!(
        world.obs.legacy.is_present(),
        "legacy never removed by rollback"
    );
    assert_eq!(
        cond_reason(&d.status, ctypes::READY).unwrap().1,
        reasons::ROLLED_BACK
    );
}

#[test]
fn rollback_keeps_an_adopted_ama() {
    let mut obs = legacy_vm();
    obs.ama = AmaState {
        name: Some("AMA".into()),
        state: ExtensionState::Succeeded,
    };
    obs.associations.push(Association {
        name: "ama-migrator-dcr-sec".into(),
        dcr_id: dcr("dcr-sec"),
    });
    let mut world = World::new(two_sources(), obs);
    let mut status = status_at(MachineStep::AssociateDcrs);
    let rb = Requests {
        rollback: true,
        ..none()
    };
    let (_, actions, _) = drive(
        &mut world,
        &mut status,
        &Policy::default(),
        rb,
        Reply::Sync,
        t(0),
        20,
    );
    assert_eq!(writes(&actions).len(), 1);
    assert!(world.obs.ama.state.is_present());
}

#[test]
fn rollback_after_legacy_removal_refuses_to_leave_no_sender() {
    let mut world = World::new(two_sources(), legacy_vm());
    let mut status = MachineMigrationStatus::default();
    let (d, _, now) = drive(
        &mut world,
        &mut status,
        &Policy::default(),
        none(),
        Reply::Sync,
        t(0),
        60,
    );
    assert_eq!(d.status.step, Some(MachineStep::Done));
    let rb = Requests {
        rollback: true,
        ..none()
    };
    let (d, actions, _) = drive(
        &mut world,
        &mut status,
        &Policy::default(),
        rb,
        Reply::Sync,
        now,
        20,
    );
    assert!(writes(&actions).is_empty());
    let (st, reason, msg) = cond_reason(&d.status, ctypes::BLOCKED).unwrap();
    assert_eq!(
        (st.as_str(), reason.as_str()),
        (cstatus::TRUE, reasons::ROLLBACK_BLOCKED_NO_LEGACY)
    );
    assert!(msg.contains("out of scope"), "{msg}");
}

#[test]
fn rollback_waits_for_the_legacy_stream_under_prefer_no_gap() {
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Succeeded;
    obs.associations.push(Association {
        name: "ama-migrator-dcr-sec".into(),
        dcr_id: dcr("dcr-sec"),
    });
    obs.flipped.insert("security".into());
    let rb = Requests {
        rollback: true,
        ..none()
    };
    let d = run(
        &two_sources(),
        &status_at(MachineStep::WaitForFlip),
        &obs,
        None,
        &Policy::default(),
        rb,
        t(0),
    );
    assert_eq!(d.action, Action::None);
    assert_eq!(
        cond_reason(&d.status, ctypes::PROGRESSING).unwrap().1,
        reasons::ROLLBACK_WAITING_FOR_LEGACY
    );
    obs.flipped.clear();
    let d = run(
        &two_sources(),
        &d.status,
        &obs,
        None,
        &Policy::default(),
        rb,
        t(1),
    );
    assert!(matches!(d.action, Action::RemoveAssociation { .. }));
}

#[test]
fn our_association_of_a_dcr_no_longer_wanted_is_removed() {
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Succeeded;
    obs.associations.push(Association {
        name: "ama-migrator-old".into(),
        dcr_id: dcr("old"),
    });
    obs.associations.push(Association {
        name: "foreign".into(),
        dcr_id: dcr("foreign"),
    });
    let d = run(
        &two_sources(),
        &Default::default(),
        &obs,
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(
        d.action,
        Action::RemoveAssociation {
            association_name: "ama-migrator-old".into()
        }
    );
}

#[test]
fn operation_older_than_the_timeout_is_retried() {
    let policy = Policy {
        operation_timeout: Duration::from_secs(600),
        ..Policy::default()
    };
    let mut status = status_at(MachineStep::InstallAma);
    status.operation = Some(InFlightOperation {
        url: "https://management.azure.com/op/9".into(),
        kind: OperationKind::InstallAma,
        started_at: Time(t(0)),
    });
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Provisioning;
    let d = run(&two_sources(), &status, &obs, None, &policy, none(), t(601));
    assert!(d.status.operation.is_none());
    assert_eq!(d.status.attempts, 1);
    assert_eq!(d.status.last_error.unwrap().code, "OperationTimedOut");
}

#[test]
fn throttled_poll_keeps_the_operation() {
    let mut status = status_at(MachineStep::InstallAma);
    let op = InFlightOperation {
        url: "https://management.azure.com/op/4".into(),
        kind: OperationKind::InstallAma,
        started_at: Time(t(0)),
    };
    status.operation = Some(op.clone());
    let mut obs = legacy_vm();
    obs.ama.state = ExtensionState::Provisioning;
    let mut e = err(Classification::Throttled, 429, "TooManyRequests", "x");
    e.retry_after = Some(Duration::from_secs(60));
    let d = run(
        &two_sources(),
        &status,
        &obs,
        Some(&Outcome::Polled(PollResult::PollError(e))),
        &Policy::default(),
        none(),
        t(5),
    );
    assert_eq!(d.status.operation, Some(op));
    assert_eq!(d.action, Action::WaitUntil(t(65)));
    assert_eq!(d.status.attempts, 0);
}

#[test]
fn machine_with_nothing_to_move_writes_nothing() {
    let s = spec(&[("firewall", Agent::Legacy, None)]);
    let d = run(
        &s,
        &Default::default(),
        &legacy_vm(),
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Done));
    assert_eq!(d.action, Action::None);
}

#[test]
fn ama_source_without_dcr_is_an_invalid_spec() {
    let s = spec(&[("security", Agent::Ama, None)]);
    let d = run(
        &s,
        &Default::default(),
        &legacy_vm(),
        None,
        &Policy::default(),
        none(),
        t(0),
    );
    assert_eq!(d.status.step, Some(MachineStep::Blocked));
    assert!(
        cond_reason(&d.status, ctypes::BLOCKED)
            .unwrap()
            .2
            .contains("security")
    );
}

#[test]
fn backoff_is_exponential_and_capped() {
    let p = Policy {
        backoff_base: Duration::from_secs(30),
        backoff_cap: Duration::from_secs(100),
        ..Policy::default()
    };
    let v: Vec<u64> = (1..=5).map(|n| backoff(&p, n).as_secs()).collect();
    assert_eq!(v, vec![30, 60, 100, 100, 100]);
    assert_eq!(backoff(&p, 1000).as_secs(), 100);
}
