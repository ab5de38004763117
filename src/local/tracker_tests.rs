//! Tests of the tracker summary over hand-built MachineMigrations.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::api::conditions::{reasons, set_condition, status};
use crate::api::machine::{ArmErrorStatus, MachineDataSource, ObservedSenders};
use crate::catalog::DataSourceType;
use crate::local::tests::machine;

fn at(
    name: &str,
    wave: &str,
    step: Option<MachineStep>,
    agents: Option<&str>,
    observed: &[(&str, &[Agent])],
) -> MachineMigration {
    let mut m = machine(name, "p1");
    m.spec.wave = wave.into();
    m.spec.data_sources.push(MachineDataSource {
        name: "syslog".into(),
        type_: DataSourceType::LinuxSyslog,
        agent: Agent::Legacy,
        dcr: None,
    });
    if step.is_some() || agents.is_some() || !observed.is_empty() {
        let s = m.status.get_or_insert_with(Default::default);
        s.step = step;
        s.agents = agents.map(String::from);
        s.observed_senders = observed
            .iter()
            .map(|(n, senders)| ObservedSenders {
                name: n.to_string(),
                senders: senders.to_vec(),
                observed_at: None,
            })
            .collect();
    }
    m
}

fn failed(name: &str, code: &str) -> MachineMigration {
    let mut m = at(
        name,
        "wave-1",
        Some(MachineStep::Failed),
        Some("Legacy"),
        &[],
    );
    m.status.as_mut().unwrap().last_error = Some(ArmErrorStatus {
        code: code.into(),
        message: format!("{code} happened"),
    });
    m
}

fn fleet() -> Vec<MachineMigration> {
    use Agent::{Ama, Legacy};
    let mut blocked = at(
        "vm-blocked",
        "wave-1",
        Some(MachineStep::Blocked),
        None,
        &[],
    );
    let now = Time(Timestamp::from_second(0).unwrap());
    set_condition(
        &mut blocked.status.as_mut().unwrap().conditions,
        types::BLOCKED,
        status::TRUE,
        reasons::MISSING_IDENTITY,
        "no managed identity and the plan requires an existing one",
        None,
        now,
    );
    vec![
        at(
            "vm-done",
            "canary",
            Some(MachineStep::Done),
            Some("AMA+Legacy"),
            &[("security", &[Ama]), ("syslog", &[Legacy])],
        ),
        at(
            "vm-installing",
            "canary",
            Some(MachineStep::InstallAma),
            Some("Legacy"),
            &[("security", &[Legacy])],
        ),
        // No agents label: the union of observed senders says both.
        at(
            "vm-verifying",
            "wave-1",
            Some(MachineStep::Verify),
            None,
            &[("security", &[Legacy, Ama]), ("syslog", &[])],
        ),
        failed("vm-f1", "VMExtensionProvisioningError"),
        failed("vm-f2", "VMExtensionProvisioningError"),
        failed("vm-f3", "OperationNotAllowed"),
        blocked,
        at("vm-new", "wave-1", None, None, &[]),
    ]
}

#[test]
fn summary_counts_steps_agents_sources_waves_failures_and_blocks() {
    let s = summarize(&fleet());
    assert_eq!(s.machines, 8);
    assert_eq!(
        (s.completed, s.in_progress, s.pending, s.failed, s.blocked),
        (1, 2, 1, 3, 1)
    );
    assert_eq!(
        s.agents,
        AgentCounts {
            legacy_only: 4,
            ama_only: 0,
            both: 2,
            none: 0,
            unobserved: 2
        }
    );
    let security = &s.data_sources["security"];
    assert_eq!((security.desired_ama, security.desired_legacy), (8, 0));
    assert_eq!(
        security.senders,
        AgentCounts {
            legacy_only: 1,
            ama_only: 1,
            both: 1,
            none: 0,
            unobserved: 5
        }
    );
    assert_eq!(security.on_target, 1);
    let syslog = &s.data_sources["syslog"];
    assert_eq!((syslog.desired_ama, syslog.desired_legacy), (0, 8));
    assert_eq!((syslog.senders.legacy_only, syslog.senders.none), (1, 1));
    assert_eq!(syslog.on_target, 1);

    assert_eq!(s.by_step[&MachineStep::Failed], 3);
    assert_eq!(s.by_step[&MachineStep::Pending], 1);
    assert_eq!(s.by_step.values().sum::<u32>(), 8);
    assert_eq!(
        s.by_wave["canary"],
        WaveCounts {
            total: 2,
            done: 1,
            failed: 0,
            blocked: 0,
            in_progress: 1,
            pending: 0
        }
    );
    assert_eq!(s.by_wave["wave-1"].total, 6);

    assert_eq!(s.failures.len(), 2);
    assert_eq!(s.failures[0].code, "VMExtensionProvisioningError");
    assert_eq!(s.failures[0].machines, 2);
    assert_eq!(s.failures[0].examples, ["vm-f1", "vm-f2"]);
    assert_eq!(s.failures[1].code, "OperationNotAllowed");
    assert_eq!(s.blocks.len(), 1);
    assert_eq!(s.blocks[0].reason, reasons::MISSING_IDENTITY);
    assert_eq!(s.blocks[0].examples, ["vm-blocked"]);
}

#[test]
fn summary_of_nothing_is_zero_and_renders() {
    let s = summarize(&[]);
    assert_eq!(s, TrackerSummary::default());
    assert!(render_table(&s).starts_with("Machines: 0"));
}

#[test]
fn agents_label_parses_what_the_printer_column_shows() {
    use AgentState::*;
    for (label, want) in [
        ("Legacy", LegacyOnly),
        ("AMA", AmaOnly),
        ("Legacy+AMA", Both),
        ("ama+legacy", Both),
        ("MMA", LegacyOnly),
        ("None", None),
        ("", Unobserved),
        ("something", Unobserved),
    ] {
        assert_eq!(AgentState::from_agents_label(label), want, "{label}");
    }
}

#[test]
fn table_shows_every_section() {
    let text = render_table(&summarize(&fleet()));
    assert!(
        text.starts_with(
            "Machines: 8  completed 1  in progress 2  pending 1  failed 3  blocked 1\n"
        ),
        "{text}"
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("machines"), "machines 4 0 2 0 2");
    assert_eq!(line("security"), "security 8 0 1 1 1 1 0 5");
    assert_eq!(line("canary"), "canary 2 1 1 0 0 0");
    assert!(line("VMExtensionProvisioningError").contains("vm-f1, vm-f2"));
    assert!(line("MissingIdentity").contains("vm-blocked"));
    assert!(text.contains("Steps: Pending 1, InstallAma 1, Verify 1, Done 1, Failed 3, Blocked 1"));
}
