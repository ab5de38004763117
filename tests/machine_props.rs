//! Property tests of the step function over random machines, policies, replies, perturbations and
//! restarts: it never writes what is already in place, never removes a legacy agent that is still
//! needed (nor, under PreferNoGap, before AMA delivers every moved source), records every started
//! operation in the decision that learns of it, keeps polling it across restarts, and never
//! exceeds the attempt limit.

mod machine_support;

use std::collections::BTreeSet;
use std::time::Duration;

use ama_migrator::api::conditions::find;
use ama_migrator::api::machine::{MachineMigrationSpec, MachineMigrationStatus, MachineStep};
use ama_migrator::api::plan::{Agent, CutoverPolicy, IdentityPolicy, UninstallPolicy};
use ama_migrator::azure::error::Classification;
use ama_migrator::machine::*;
use k8s_openapi::jiff::Timestamp;
use machine_support::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Scenario {
    spec: MachineMigrationSpec,
    obs: Observation,
    policy: Policy,
}

fn arb_spec() -> impl Strategy<Value = MachineMigrationSpec> {
    let source = (0..4u8, 0..3u8);
    (prop::collection::vec(source, 1..4), any::<bool>()).prop_map(|(srcs, may_proceed)| {
        let names = ["security", "syslog", "perf", "firewall"];
        let mut seen = BTreeSet::new();
        let mut v = Vec::new();
        for (i, d) in srcs {
            let name = names[i as usize];
            if !seen.insert(name) {
                continue;
            }
            let legacy = name == "firewall";
            let dcr_name = ["dcr-a", "dcr-b", "dcr-c"][d as usize];
            v.push((
                name,
                if legacy { Agent::Legacy } else { Agent::Ama },
                if legacy { None } else { Some(dcr_name) },
            ));
        }
        let mut s = spec(&v);
        // Mostly admitted: a few runs check that nothing is written while not admitted.
        s.may_proceed = may_proceed || v.len() > 1;
        s
    })
}

fn arb_ext(absent_weight: u32) -> impl Strategy<Value = ExtensionState> {
    prop_oneof![
        absent_weight => Just(ExtensionState::Absent),
        3 => Just(ExtensionState::Succeeded),
        1 => Just(ExtensionState::Provisioning),
        1 => Just(ExtensionState::Deleting),
        1 => Just(ExtensionState::Failed { code: "VMExtensionProvisioningError".into(), message: "exit 52".into() }),
    ]
}

fn arb_obs() -> impl Strategy<Value = Observation> {
    (
        (0..3u8, 0..8u8),
        arb_ext(6),
        arb_ext(1),
        (any::<bool>(), any::<bool>()),
        prop::collection::vec((0..3u8, any::<bool>()), 0..3),
    )
        .prop_map(|((ident, power), ama, legacy, (in_guest, multi), assocs)| {
            let mut o = Observation {
                identity: match ident {
                    0 => IdentityState::default(),
                    1 => IdentityState {
                        system_assigned: true,
                        user_assigned: vec![],
                    },
                    _ => IdentityState {
                        system_assigned: false,
                        user_assigned: vec!["/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u".into()],
                    },
                },
                power: match power {
                    0 => Power::Deallocated,
                    1 => Power::Disconnected,
                    _ => Power::Ready,
                },
                ..Observation::default()
            };
            if ama.is_present() {
                o.ama = AmaState {
                    name: Some("AzureMonitorWindowsAgent".into()),
                    state: ama,
                };
            }
            if legacy.is_present() {
                o.legacy = LegacyState {
                    name: Some("MicrosoftMonitoringAgent".into()),
                    state: legacy,
                    in_guest_only: false,
                };
            } else if in_guest && multi {
                o.legacy.in_guest_only = true;
            }
            if multi && !in_guest {
                o.legacy_needed_by = vec!["multi-homed to workspace other".into()];
            }
            for (d, ours) in assocs {
                let name = ["dcr-a", "dcr-b", "dcr-z"][d as usize];
                o.associations.push(Association {
                    name: if ours {
                        association_name(&dcr(name))
                    } else {
                        format!("foreign-{name}")
                    },
                    dcr_id: dcr(name),
                });
            }
            o
        })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), any::<bool>(), any::<bool>(), 1..6u32).prop_map(|(nd, req, never, max)| {
        Policy {
            cutover: if nd {
                CutoverPolicy::PreferNoDuplicate
            } else {
                CutoverPolicy::PreferNoGap
            },
            identity: if req {
                IdentityPolicy::RequireExisting
            } else {
                IdentityPolicy::EnableSystemAssigned
            },
            uninstall: if never {
                UninstallPolicy::Never
            } else {
                UninstallPolicy::WhenUnused
            },
            max_attempts: max,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(300),
            verify_timeout: Duration::from_secs(900),
            verify_interval: Duration::from_secs(120),
            poll_interval: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(1800),
        }
    })
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (arb_spec(), arb_obs(), arb_policy()).prop_map(|(spec, obs, policy)| Scenario {
        spec,
        obs,
        policy,
    })
}

fn reply_for(choice: u8) -> Reply {
    match choice % 24 {
        0 => Reply::Error(err(
            Classification::Transient,
            503,
            "ServiceUnavailable",
            "later",
        )),
        1 => Reply::Error(ActionError {
            retry_after: Some(Duration::from_secs(60)),
            ..err(
                Classification::Throttled,
                429,
                "SubscriptionRequestsThrottled",
                "slow down",
            )
        }),
        2 => Reply::Error(err(
            Classification::Permanent,
            403,
            "AuthorizationFailed",
            "no role",
        )),
        3 => Reply::Error(err(
            Classification::Permanent,
            409,
            "Conflict",
            "extension is marked for deletion; only retry Delete",
        )),
        4 => Reply::Error(err(
            Classification::Permanent,
            200,
            "VMExtensionProvisioningError",
            "exit 52",
        )),
        5..=11 => Reply::Lro,
        _ => Reply::Sync,
    }
}

/// One call of the step function, as the test saw it.
struct Call<'a> {
    status_in: &'a MachineMigrationStatus,
    obs: &'a Observation,
    outcome: Option<&'a Outcome>,
    requests: Requests,
    /// The poll URL of the operation Azure is still running, if any.
    world_pending: Option<&'a str>,
    now: Timestamp,
}

/// Checks one decision against the world it was made for.
fn check(sc: &Scenario, c: &Call<'_>, d: &Decision) -> Result<(), TestCaseError> {
    let (status_in, obs, outcome, requests, world_pending, now) = (
        c.status_in,
        c.obs,
        c.outcome,
        c.requests,
        c.world_pending,
        c.now,
    );
    let p = &sc.policy;
    prop_assert!(
        d.status.attempts <= p.max_attempts,
        "attempts {} > {}",
        d.status.attempts,
        p.max_attempts
    );
    if let Some(Outcome::Submitted {
        operation: Some(h), ..
    }) = outcome
    {
        let op = d.status.operation.as_ref();
        prop_assert_eq!(
            op.map(|o| o.url.as_str()),
            Some(h.poll_url.as_str()),
            "handle not recorded"
        );
    }
    // A recorded operation is polled, never forgotten, while Azure still runs it.
    if let (Some(op), None, Some(url)) = (&status_in.operation, outcome, world_pending) {
        let expired = op.started_at.0.saturating_add(p.operation_timeout).unwrap() <= now;
        if op.url == url && !expired && status_in.step != Some(MachineStep::Failed) {
            prop_assert_eq!(&d.action, &Action::PollOperation(op.clone()));
        }
    }
    if !d.action.is_write() {
        return Ok(());
    }
    prop_assert!(!requests.hold, "write under hold: {:?}", d.action);
    prop_assert!(
        d.status.operation.is_none(),
        "write while an operation runs"
    );
    prop_assert!(
        obs.exists && obs.power == Power::Ready,
        "write on an ineligible machine"
    );
    if !requests.rollback {
        prop_assert!(sc.spec.may_proceed, "write while not admitted");
    }
    let moved: Vec<&str> = sc
        .spec
        .data_sources
        .iter()
        .filter(|s| s.agent == Agent::Ama)
        .map(|s| s.name.as_str())
        .collect();
    match &d.action {
        Action::EnableSystemIdentity => {
            prop_assert!(!obs.identity.usable());
            prop_assert_eq!(p.identity, IdentityPolicy::EnableSystemAssigned);
        }
        Action::InstallAma { .. } => prop_assert!(
            matches!(
                obs.ama.state,
                ExtensionState::Absent | ExtensionState::Failed { .. }
            ),
            "install over {:?}",
            obs.ama.state
        ),
        Action::Associate { dcr_id, .. } => {
            prop_assert!(
                !obs.associations
                    .iter()
                    .any(|a| a.dcr_id.eq_ignore_ascii_case(dcr_id))
            );
            prop_assert!(!requests.rollback);
        }
        Action::RemoveAssociation { association_name } => {
            prop_assert!(association_name.starts_with(ASSOCIATION_PREFIX));
            prop_assert!(obs.associations.iter().any(|a| a.name == *association_name));
        }
        Action::RemoveLegacy { .. } => {
            prop_assert!(
                !requests.rollback,
                "rollback never removes the legacy agent"
            );
            prop_assert!(obs.legacy.state.is_present() && !obs.legacy.in_guest_only);
            prop_assert!(
                obs.legacy_needed_by.is_empty(),
                "legacy still needed (multi-homed)"
            );
            prop_assert!(
                !sc.spec
                    .data_sources
                    .iter()
                    .any(|s| s.agent == Agent::Legacy),
                "legacy source assigned"
            );
            prop_assert_eq!(p.uninstall, UninstallPolicy::WhenUnused);
            prop_assert!(!moved.is_empty());
            if p.cutover == CutoverPolicy::PreferNoGap {
                let v = obs.verification.as_ref();
                prop_assert!(
                    v.is_some_and(|v| moved.iter().all(|m| v.ama_delivers(m))),
                    "RemoveLegacy before AMA delivers every moved source"
                );
            }
        }
        Action::RemoveAma { .. } => {
            prop_assert!(obs.ama.state.is_present());
            let ours = find(
                &status_in.conditions,
                reasons::TYPE_AMA_INSTALLED_BY_MIGRATOR,
            )
            .is_some_and(|c| c.status == "True");
            prop_assert!(
                obs.ama.state == ExtensionState::Deleting || (requests.rollback && ours),
                "RemoveAma of an AMA we did not install"
            );
        }
        _ => {}
    }
    Ok(())
}

fn simulate(
    sc: &Scenario,
    choices: &[(u8, u8, u8)],
) -> Result<(World, MachineMigrationStatus), TestCaseError> {
    let mut world = World::new(sc.spec.clone(), sc.obs.clone());
    let mut status = MachineMigrationStatus::default();
    let mut outcome: Option<Outcome> = None;
    let mut now = t(0);
    for &(reply, req, perturb) in choices {
        let requests = Requests {
            hold: req % 29 == 0,
            retry: req % 7 == 0,
            rollback: req >= 250,
        };
        match perturb % 20 {
            0 => world.obs.power = Power::Ready,
            1 => world.obs.power = Power::Deallocated,
            2 => {
                if let Some(s) = sc.spec.data_sources.get(perturb as usize % 3) {
                    world.obs.flipped.insert(s.name.clone());
                }
            }
            3 => world.obs.verification = None,
            // Azure finishes a running operation on its own (seen at the next observation).
            4 | 5 => {
                if let Some((url, _)) = world.pending.clone() {
                    let op = ama_migrator::api::machine::InFlightOperation {
                        url,
                        kind: ama_migrator::api::machine::OperationKind::Other,
                        started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                    };
                    world.execute(&Action::PollOperation(op), Reply::Sync, now);
                }
            }
            // A restart: the outcome of the last action is lost, the status was persisted.
            6 => outcome = None,
            // The orchestrator re-ran the queries on its own schedule.
            7 => world.obs.verification = Some(world.verification(now)),
            // AMA stopped delivering (e.g. its identity was removed).
            8 => {
                world.obs.verification = Some(Verification {
                    observed_at: now,
                    ama_heartbeat: false,
                    delivering: Default::default(),
                })
            }
            _ => {}
        }
        let pending = world.pending.as_ref().map(|(u, _)| u.clone());
        let d = run(
            &sc.spec,
            &status,
            &world.obs,
            outcome.as_ref(),
            &sc.policy,
            requests,
            now,
        );
        let call = Call {
            status_in: &status,
            obs: &world.obs,
            outcome: outcome.as_ref(),
            requests,
            world_pending: pending.as_deref(),
            now,
        };
        check(sc, &call, &d)?;
        status = d.status.clone();
        outcome = None;
        match &d.action {
            Action::None => now = now.saturating_add(Duration::from_secs(60)).unwrap(),
            Action::WaitUntil(u) => {
                prop_assert!(*u >= now, "wait into the past");
                now = (*u).max(now.saturating_add(Duration::from_secs(1)).unwrap());
            }
            a => {
                outcome = world.execute(a, reply_for(reply), now);
                now = now.saturating_add(Duration::from_secs(5)).unwrap();
            }
        }
    }
    Ok((world, status))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn safety_under_random_faults_restarts_and_requests(
        sc in arb_scenario(),
        choices in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..80),
    ) {
        simulate(&sc, &choices)?;
    }

    /// Focus on the cutover: a removable legacy agent under PreferNoGap, with faults, restarts,
    /// lost verification data and AMA dropping out.
    #[test]
    fn prefer_no_gap_never_removes_legacy_before_ama_delivers(
        mut sc in arb_scenario(),
        choices in prop::collection::vec((any::<u8>(), 0..250u8, any::<u8>()), 20..120),
    ) {
        sc.policy.cutover = CutoverPolicy::PreferNoGap;
        sc.policy.uninstall = UninstallPolicy::WhenUnused;
        sc.spec.may_proceed = true;
        sc.spec.data_sources.retain(|d| d.agent == Agent::Ama);
        prop_assume!(!sc.spec.data_sources.is_empty());
        sc.obs.legacy = LegacyState {
            name: Some("MicrosoftMonitoringAgent".into()),
            state: ExtensionState::Succeeded,
            in_guest_only: false,
        };
        sc.obs.legacy_needed_by.clear();
        let (world, _) = simulate(&sc, &choices)?;
        let _ = world;
    }

    /// Without faults, a ready machine finishes (Done or waiting for the flip) without
    /// repeating any write, and the legacy agent is gone exactly when nothing needs it.
    #[test]
    fn fault_free_runs_finish_without_repeated_writes(mut sc in arb_scenario(), lro in any::<bool>()) {
        sc.spec.may_proceed = true;
        sc.obs.power = Power::Ready;
        sc.policy.identity = IdentityPolicy::EnableSystemAssigned;
        // Nobody else drives operations in this model: start from settled extension states.
        for st in [&mut sc.obs.ama.state, &mut sc.obs.legacy.state] {
            match st {
                ExtensionState::Provisioning => *st = ExtensionState::Succeeded,
                ExtensionState::Deleting => *st = ExtensionState::Absent,
                _ => {}
            }
        }
        if !sc.obs.legacy.state.is_present() {
            sc.obs.legacy.name = None;
        }
        let mut world = World::new(sc.spec.clone(), sc.obs.clone());
        let mut status = MachineMigrationStatus::default();
        let reply = if lro { Reply::Lro } else { Reply::Sync };
        let (d, actions, _) = drive(&mut world, &mut status, &sc.policy, Requests::default(), reply, t(0), 400);
        let step = d.status.step.unwrap();
        prop_assert!(matches!(step, MachineStep::Done | MachineStep::WaitForFlip), "{:?} {:?}", step, actions);
        let writes: Vec<&Action> = world.writes.iter().collect();
        for (i, w) in writes.iter().enumerate() {
            prop_assert!(!writes[i + 1..].contains(w), "repeated write {:?} in {:?}", w, writes);
        }
        // At most: the identity, the install, one removal per association of ours the plan no
        // longer wants, one association per planned DCR, the legacy removal.
        let planned: std::collections::BTreeSet<&str> =
            sc.spec.data_sources.iter().filter_map(|d| d.dcr.as_deref()).collect();
        let stale = sc
            .obs
            .associations
            .iter()
            .filter(|a| !planned.contains(a.dcr_id.as_str()))
            .count();
        prop_assert!(writes.len() <= 3 + stale + planned.len(), "{:?}", writes);
        let moved = sc.spec.data_sources.iter().any(|s| s.agent == Agent::Ama);
        let needed = !sc.obs.legacy_needed_by.is_empty()
            || sc.spec.data_sources.iter().any(|s| s.agent == Agent::Legacy)
            || sc.obs.legacy.in_guest_only
            || sc.policy.uninstall == UninstallPolicy::Never;
        if moved && !needed && step == MachineStep::Done {
            prop_assert!(!world.obs.legacy.state.is_present(), "legacy left although unused");
        }
        if needed {
            prop_assert!(!writes.iter().any(|w| matches!(w, Action::RemoveLegacy { .. })), "{:?}", writes);
        }
    }
}

/// The safety property is not vacuous: over a fixed sample, every write kind is exercised and
/// machines end in every kind of state.
#[test]
fn random_runs_exercise_every_write_and_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (
        arb_scenario(),
        prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 40..80),
    );
    let mut kinds = BTreeSet::new();
    let mut steps = BTreeSet::new();
    for _ in 0..400 {
        let (sc, choices) = strategy.new_tree(&mut runner).unwrap().current();
        let (world, status) = simulate(&sc, &choices).unwrap();
        for w in &world.writes {
            kinds.insert(
                format!("{w:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        steps.insert(format!("{:?}", status.step));
    }
    for k in [
        "EnableSystemIdentity",
        "InstallAma",
        "Associate",
        "RemoveAssociation",
        "RemoveLegacy",
        "RemoveAma",
    ] {
        assert!(kinds.contains(k), "{k} never emitted: {kinds:?}");
    }
    for s in [
        "Some(Done)",
        "Some(Failed)",
        "Some(Blocked)",
        "Some(RollingBack)",
        "Some(WaitForFlip)",
    ] {
        assert!(steps.contains(s), "{s} never reached: {steps:?}");
    }
}
