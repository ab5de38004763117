//! Scenario tests (issue 4): each runs the engine against the simulator on a small fleet and
//! asserts ledger figures (duplicate / gap minutes per machine and data source) and the plan's and
//! machines' conditions.

mod scenario_support;

use ama_migrator::api::conditions::{reasons, status as cstatus, types as ctypes};
use ama_migrator::api::machine::MachineStep;
use ama_migrator::api::plan::{AcceptedSender, IdentityPolicy};
use ama_migrator::catalog::DataSourceType as D;
use ama_migrator::engine::RunEnd;
use ama_migrator::sim::scenario::AgentMix;
use ama_migrator::sim::{Agent, Fault, Scenario};
use scenario_support::*;

fn legacy_only_start() -> AgentMix {
    AgentMix {
        legacy_only: 1.0,
        ama_only: 0.0,
        both: 0.0,
        none: 0.0,
    }
}

/// Machines outside the scope still sending: the flip waits, naming them, until they are covered
/// (scope widened) or accepted by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncovered_senders_block_the_flip_until_covered_or_accepted() {
    let world = Scenario {
        outside_subscription_machines: 3,
        on_prem_computers: 2,
        in_guest_legacy_ratio: 0.0,
        ..scenario(20)
    };
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    r.s.plan.spec.legacy.flip.accepted_uncovered_senders.clear();
    let pairs = r.ledger();
    let outside: Vec<String> = uniq(
        pairs
            .iter()
            .filter(|p| p.out_of_scope && !p.resource_id.is_empty())
            .map(|p| p.computer.clone()),
    );
    let on_prem: Vec<String> = uniq(
        pairs
            .iter()
            .filter(|p| p.out_of_scope && p.resource_id.is_empty())
            .map(|p| p.computer.clone()),
    );
    assert_eq!(
        (outside.len(), on_prem.len()),
        (3, 2),
        "{outside:?} {on_prem:?}"
    );

    // 1. Nobody accepted: the run stalls, the Blocked condition names every uncovered sender.
    let end = r.run(None).await;
    assert!(matches!(end, RunEnd::Stalled { .. }), "{end:?}");
    let c = r
        .plan_condition(ctypes::BLOCKED)
        .expect("Blocked condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (cstatus::TRUE, reasons::FLIP_WAITING_FOR_SENDERS)
    );
    for n in outside.iter().chain(&on_prem) {
        assert!(
            c.message.contains(n.as_str()),
            "{n} not named in {:?}",
            c.message
        );
    }
    assert!(r.s.report().flipped.is_empty());
    for p in r.ledger().iter().filter(|p| p.wanted) {
        assert_eq!(p.gap, 0, "no gap while the flip waits: {}", show(p));
    }

    // 2. Covered: the outside subscription joins the scope; only the on-prem hosts block now.
    let outside_sub = r.s.sim.outside_subscription();
    r.s.plan.spec.scope.subscriptions.push(outside_sub);
    let end = r.run(None).await;
    assert!(matches!(end, RunEnd::Stalled { .. }), "{end:?}");
    let c = r
        .plan_condition(ctypes::BLOCKED)
        .expect("Blocked condition");
    assert_eq!(c.status, cstatus::TRUE, "{c:?}");
    for n in &on_prem {
        assert!(
            c.message.contains(n.as_str()),
            "{n} not named in {:?}",
            c.message
        );
    }
    for n in &outside {
        assert!(
            !c.message.contains(n.as_str()),
            "{n} is covered now but named: {:?}",
            c.message
        );
    }

    // 3. Accepted: the on-prem hosts are named; the flips happen and the run completes.
    for n in &on_prem {
        r.s.plan
            .spec
            .legacy
            .flip
            .accepted_uncovered_senders
            .push(AcceptedSender {
                computer: n.clone(),
                data_sources: Vec::new(),
                reason: "decommissioned next month".into(),
            });
    }
    let end = r.run(None).await;
    assert_eq!(end, RunEnd::Completed);
    let report = r.s.report();
    assert!(
        report
            .flipped
            .contains(&"WindowsSecurityEvents".to_string())
            || report.flipped.contains(&"LinuxSyslog".to_string()),
        "{:?}",
        report.flipped
    );
    let c = r
        .plan_condition(ctypes::BLOCKED)
        .expect("Blocked condition");
    assert_eq!(c.status, cstatus::FALSE, "{c:?}");
    let ledger = r.ledger();
    // Only the sources the plan moves to AMA: a source the plan does not list (e.g. DNS logs on a
    // DNS server) stays with the legacy agent, which these machines keep.
    let moved_to_ama = |t: D| {
        r.s.plan
            .spec
            .data_sources
            .iter()
            .any(|d| d.type_ == t && d.agent == ama_migrator::api::plan::Agent::Ama)
    };
    for p in ledger
        .iter()
        .filter(|p| p.wanted && outside.contains(&p.computer) && moved_to_ama(p.ds))
    {
        assert_eq!(
            p.senders,
            vec![Agent::Ama],
            "covered outside machine moved to AMA: {}",
            show(p)
        );
        assert_eq!(p.gap, 0, "{}", show(p));
    }
    // The accepted loss is real and visible: their flipped streams have no sender any more.
    let lost: i64 = ledger
        .iter()
        .filter(|p| p.wanted && on_prem.contains(&p.computer))
        .map(|p| p.gap)
        .sum();
    assert!(
        lost > 0,
        "accepted on-prem senders lose their flipped streams"
    );
    for p in ledger
        .iter()
        .filter(|p| p.wanted && !on_prem.contains(&p.computer))
    {
        assert_eq!(p.gap, 0, "{}", show(p));
        assert_eq!(p.senders.len(), 1, "one sender per source: {}", show(p));
    }
    eprintln!(
        "uncovered senders: duplicates {} gaps {} (accepted loss {lost}) violations {}",
        report.duplicate_minutes, report.gap_minutes, report.violations
    );
}

fn uniq(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = it.collect();
    v.sort();
    v.dedup();
    v
}

/// Windows Firewall logs stay on the legacy agent: those machines keep it; their Security Events
/// move to AMA at the flip with no gap and no duplicate beyond `maxOverlap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_only_sources_keep_the_legacy_agent_and_security_events_move_at_the_flip() {
    let world = Scenario {
        windows_ratio: 1.0,
        legacy_only_sources_ratio: 0.5,
        in_guest_legacy_ratio: 0.0,
        agents: legacy_only_start(),
        ..scenario(20)
    };
    let fleet = world.generate();
    let keepers: Vec<String> = fleet
        .machines
        .iter()
        .filter(|m| !m.out_of_scope && m.produces.contains(&D::WindowsFirewallLogs))
        .map(|m| m.name.clone())
        .collect();
    let others: Vec<String> = fleet
        .machines
        .iter()
        .filter(|m| !m.out_of_scope && m.running && !m.produces.contains(&D::WindowsFirewallLogs))
        .map(|m| m.name.clone())
        .collect();
    assert!(!keepers.is_empty() && !others.is_empty());
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    let end = r.run(None).await;
    assert_eq!(end, RunEnd::Completed);
    let report = r.s.report();
    assert!(
        report
            .flipped
            .contains(&"WindowsSecurityEvents".to_string()),
        "{:?}",
        report.flipped
    );
    assert!(!report.flipped.contains(&"WindowsFirewallLogs".to_string()));
    let log = r.log();
    for m in &keepers {
        assert!(
            requests(&log, "DELETE", &[&format!("/{m}/extensions/")]).is_empty(),
            "{m}: legacy agent removed"
        );
        for p in r.pairs_of(m) {
            match p.ds {
                D::WindowsFirewallLogs | D::WindowsApplicationServiceLogs => {
                    assert_eq!(p.senders, vec![Agent::Legacy], "{}", show(&p));
                    assert_eq!((p.dup, p.gap), (0, 0), "{}", show(&p));
                }
                D::WindowsSecurityEvents => {
                    assert_eq!(p.senders, vec![Agent::Ama], "{}", show(&p));
                    assert_eq!(p.gap, 0, "{}", show(&p));
                    assert!(p.dup <= 120, "within maxOverlap 2h: {}", show(&p));
                }
                _ => {}
            }
        }
        assert_eq!(step(&r.machine(m)), Some(MachineStep::Done), "{m}");
    }
    // For the record: machines needing nothing from the legacy agent (printed, not asserted: the
    // workspace's legacy-kept streams may keep the agent everywhere).
    let removed = others
        .iter()
        .filter(|m| {
            !requests(
                &log,
                "DELETE",
                &[&format!("/{m}/extensions/microsoftmonitoringagent")],
            )
            .is_empty()
        })
        .count();
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
    eprintln!(
        "legacy-only sources: {} keepers, {removed} others lost the legacy agent; duplicates {} gaps {} violations {}",
        keepers.len(),
        report.duplicate_minutes,
        report.gap_minutes,
        report.violations
    );
}

/// A legacy agent that also reports to another workspace is never uninstalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_homed_legacy_agents_are_never_uninstalled() {
    let world = Scenario {
        windows_ratio: 1.0,
        multi_homed_ratio: 0.5,
        in_guest_legacy_ratio: 0.0,
        agents: legacy_only_start(),
        ..scenario(20)
    };
    let fleet = world.generate();
    let homed: Vec<String> = fleet
        .machines
        .iter()
        .filter(|m| m.multi_homed && m.running)
        .map(|m| m.name.clone())
        .collect();
    assert!(!homed.is_empty());
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    let end = r.run(None).await;
    assert_eq!(end, RunEnd::Completed);
    let log = r.log();
    for m in &homed {
        let deletes = requests(&log, "DELETE", &[&format!("/{m}/extensions/")]);
        assert!(
            deletes.is_empty(),
            "{m}: {:?}",
            deletes.iter().map(|d| &d.path).collect::<Vec<_>>()
        );
        for p in r.pairs_of(m).iter().filter(|p| p.wanted) {
            assert_eq!(p.gap, 0, "{}", show(p));
            assert_eq!(p.senders.len(), 1, "{}", show(p));
        }
    }
    let report = r.s.report();
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
    eprintln!(
        "multi-homed: {} machines kept their agent; duplicates {} gaps {}",
        homed.len(),
        report.duplicate_minutes,
        report.gap_minutes
    );
}

fn identity_world() -> Scenario {
    Scenario {
        arc_ratio: 0.0,
        no_identity_ratio: 0.5,
        in_guest_legacy_ratio: 0.0,
        agents: legacy_only_start(),
        ..scenario(20)
    }
}

/// `identity: EnableSystemAssigned`: VMs without identity get one (a VM PATCH), then migrate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_identity_is_enabled_when_the_plan_allows_it() {
    let world = identity_world();
    let bare: Vec<String> = world
        .generate()
        .machines
        .iter()
        .filter(|m| {
            m.identity == ama_migrator::sim::scenario::IdentitySpec::None
                && m.running
                && !m.out_of_scope
        })
        .map(|m| m.name.clone())
        .collect();
    assert!(!bare.is_empty());
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    r.s.plan.spec.identity = IdentityPolicy::EnableSystemAssigned;
    assert_eq!(r.run(None).await, RunEnd::Completed);
    let log = r.log();
    for m in &bare {
        let patches = requests(&log, "PATCH", &[&format!("/virtualmachines/{m}")]);
        assert!(
            patches.iter().any(|p| ok(p)
                && p.request_body
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains("SystemAssigned"))),
            "{m}: no identity PATCH"
        );
        let first_patch = patches.iter().map(|p| p.seq).min().unwrap_or(usize::MAX);
        let first_install = requests(&log, "PUT", &[&format!("/{m}/extensions/azuremonitor")])
            .iter()
            .map(|p| p.seq)
            .min()
            .expect("AMA installed");
        assert!(first_patch < first_install, "{m}: identity before AMA");
        assert_eq!(step(&r.machine(m)), Some(MachineStep::Done), "{m}");
    }
    let report = r.s.report();
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
    assert_eq!(report.gap_minutes, 0);
}

/// `identity: RequireExisting`: VMs without identity are Blocked, untouched, and keep the legacy
/// agent (so the flip waits for them: nobody loses data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_identity_blocks_the_machine_when_the_plan_forbids_enabling_it() {
    let world = identity_world();
    let bare: Vec<String> = world
        .generate()
        .machines
        .iter()
        .filter(|m| {
            m.identity == ama_migrator::sim::scenario::IdentitySpec::None
                && m.running
                && !m.out_of_scope
        })
        .map(|m| m.name.clone())
        .collect();
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    r.s.plan.spec.identity = IdentityPolicy::RequireExisting;
    let end = r.run(None).await;
    eprintln!("require-existing: end {end:?}");
    let log = r.log();
    assert!(
        requests(&log, "PATCH", &[]).is_empty(),
        "no identity change under RequireExisting"
    );
    for m in &bare {
        assert!(
            log.iter()
                .filter(|x| x.method != "GET" && x.method != "POST")
                .all(|x| !lpath(x).contains(&format!("/{m}/"))),
            "{m} was written to"
        );
        let mm = r.machine(m);
        assert_eq!(step(&mm), Some(MachineStep::Blocked), "{m}");
        let c = condition(&mm, ctypes::BLOCKED).expect("Blocked condition");
        assert_eq!(c.status, cstatus::TRUE);
        assert!(
            c.message.contains("managed identity") && c.message.contains("RequireExisting"),
            "{:?}",
            c.message
        );
        for p in r.pairs_of(m).iter().filter(|p| p.wanted) {
            assert_eq!(p.senders, vec![Agent::Legacy], "{}", show(p));
            assert_eq!((p.dup, p.gap), (0, 0), "{}", show(p));
        }
    }
    assert_eq!(r.s.report().gap_minutes, 0);
}

/// Extension installs that keep failing are retried up to the limit, then the machine is Failed
/// with the ARM code; past the failure budget the plan pauses and starts no new machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_failures_are_retried_then_failed_and_the_budget_pauses_the_plan() {
    let world = Scenario {
        agents: legacy_only_start(),
        in_guest_legacy_ratio: 0.0,
        faults: vec![Fault::ExtensionFailure {
            machine: None,
            code: "VMAgentStatusCommunicationError".into(),
            probability: 1.0,
        }],
        ..scenario(30)
    };
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    r.s.plan.spec.rollout.failure_budget.max_failed_percent = None;
    r.s.plan.spec.rollout.failure_budget.max_failed = Some(2);
    let end = r.run(None).await;
    let RunEnd::Stalled { reason } = &end else {
        panic!("{end:?}")
    };
    assert!(
        reason.contains("failure budget") || reason.contains("failed"),
        "{reason}"
    );
    let plan = r.plan();
    let st = plan.status.clone().expect("status");
    let c = st
        .conditions
        .iter()
        .find(|c| c.reason == reasons::FAILURE_BUDGET_EXCEEDED)
        .expect("FailureBudgetExceeded condition");
    assert_eq!(c.status, cstatus::TRUE);
    let log = r.log();
    let machines = r.machines();
    let failed: Vec<_> = machines
        .iter()
        .filter(|m| step(m) == Some(MachineStep::Failed))
        .collect();
    assert!(
        failed.len() > 2,
        "more than the budget failed: {}",
        failed.len()
    );
    for m in &failed {
        let n = name_of(m);
        let puts = requests(
            &log,
            "PUT",
            &[&format!(
                "/{}/extensions/azuremonitor",
                n.to_ascii_lowercase()
            )],
        );
        assert_eq!(puts.len(), 4, "{n}: retried up to max_attempts (4)");
        let err = m
            .status
            .as_ref()
            .and_then(|s| s.last_error.clone())
            .expect("last error");
        assert_eq!(err.code, "VMAgentStatusCommunicationError", "{n}");
        let c = condition(m, ctypes::DEGRADED).expect("Degraded");
        assert!(
            c.message.contains("VMAgentStatusCommunicationError"),
            "{:?}",
            c.message
        );
    }
    // The pause: machines of later waves were never started.
    let untouched = machines
        .iter()
        .filter(|m| {
            let n = format!("/{}/", name_of(m).to_ascii_lowercase());
            !log.iter()
                .any(|x| x.method != "GET" && x.method != "POST" && lpath(x).contains(&n))
        })
        .count();
    assert!(untouched > 0, "the budget stopped new starts");
    // Nothing flipped, nothing lost: failed machines keep the legacy agent.
    assert!(r.s.report().flipped.is_empty());
    for p in r.ledger().iter().filter(|p| p.wanted) {
        assert_eq!(p.gap, 0, "{}", show(p));
    }
    eprintln!(
        "extension failures: {} failed, {untouched} never started",
        failed.len()
    );
}

/// A 429 storm: the run completes, and the client backs off instead of hammering ARM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_storm_is_ridden_out_without_a_retry_storm() {
    let world = Scenario {
        agents: legacy_only_start(),
        ..scenario(20)
    };
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    // 2 h of simulated 429s (4.8 s of real time) from the first request on.
    r.s.sim
        .inject(Fault::ThrottleStorm { seconds: 7200 })
        .unwrap();
    let t = std::time::Instant::now();
    assert_eq!(r.run(None).await, RunEnd::Completed);
    let log = r.log();
    let throttled = log.iter().filter(|x| x.status == 429).count();
    let report = r.s.report();
    eprintln!(
        "429 storm: {throttled} x 429 over {} requests in {:.1}s",
        log.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(throttled > 0, "the storm was felt");
    // The storm lasts ~5 s of real time with Retry-After >= 1 s: a client that honours it sends
    // at most a few requests per concurrent caller per second.
    assert!(throttled <= 200, "retry storm: {throttled} x 429");
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
}

/// Deallocated VMs and disconnected Arc servers are Blocked with the reason; the rest completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocated_and_disconnected_machines_are_blocked_and_the_rest_completes() {
    let world = Scenario {
        deallocated_ratio: 0.25,
        disconnected_ratio: 0.25,
        arc_ratio: 0.5,
        ..scenario(24)
    };
    let off: Vec<(String, bool)> = world
        .generate()
        .machines
        .iter()
        .filter(|m| !m.running && !m.out_of_scope)
        .map(|m| {
            (
                m.name.clone(),
                m.kind == Some(ama_migrator::inventory::MachineKind::AzureVM),
            )
        })
        .collect();
    assert!(
        off.iter().any(|o| o.1) && off.iter().any(|o| !o.1),
        "{off:?}"
    );
    let mut r = start(world, None).await;
    r.s.plan.spec.rollout.max_parallel = 400;
    assert_eq!(r.run(None).await, RunEnd::Completed);
    let report = r.s.report();
    assert_eq!(report.blocked as usize, off.len());
    assert_eq!(report.failed, 0);
    assert_eq!(report.completed as usize, 24 - off.len());
    let log = r.log();
    for (m, vm) in &off {
        let mm = r.machine(m);
        assert_eq!(step(&mm), Some(MachineStep::Blocked), "{m}");
        let c = condition(&mm, ctypes::BLOCKED).expect("Blocked");
        let want = if *vm { "deallocated" } else { "disconnected" };
        assert!(c.message.contains(want), "{m}: {:?}", c.message);
        assert!(
            log.iter()
                .filter(|x| x.method != "GET" && x.method != "POST")
                .all(|x| !lpath(x).contains(&format!("/{m}/"))),
            "{m} was written to"
        );
    }
    assert_eq!(report.violations, 0, "{:?}", report.violation_examples);
}
