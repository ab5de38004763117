//! Decisions: which waves are admitted, which legacy streams may flip, and per (machine, data
//! source) the desired sender now and the next steps. Rules (design.md §2): a stream flips only
//! when every legacy sender of it in the workspace is covered (or a named exception); a legacy
//! agent is removed only from a machine that needs it for nothing else; canary overlap goes to
//! the test workspace.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

use crate::api::duration::parse_duration;
use crate::api::plan::{Agent, CutoverPolicy, FlipWhen, MaintenanceWindow, Weekday};
use crate::catalog::{Catalog, DataSourceType, OsFamily};

use super::fleet::{Fleet, FleetMachine, Lane};
use super::waves::Membership;
use super::{
    Assignment, FlipDecision, MachineAction, MachineDecision, PlanAction, PlanInput, PlanOutcome,
    TypeSet, WavePlan,
};

/// What the machine delivers into the production workspace for `t` now: (legacy, AMA).
pub(crate) fn senders(m: &FleetMachine, t: DataSourceType, stream_on: TypeSet) -> (bool, bool) {
    (
        m.legacy_here && stream_on.contains(t),
        m.state.ama_installed && m.state.associated.contains(t),
    )
}

fn ama_types(input: &PlanInput<'_>, os: OsFamily) -> TypeSet {
    super::sources_for(input.spec, os)
        .filter(|(_, d)| d.agent == Agent::Ama)
        .map(|(_, d)| d.type_)
        .collect()
}

/// Some AMA source of `os` still streams through the workspace's legacy collection and waits
/// for its flip. The plan's DCR for `os` carries it together with every other AMA source of
/// `os`, so associating that DCR earlier — for a source the workspace never collected through
/// the legacy agent — would make AMA send the flip-controlled ones too, a duplicate the flip
/// stage exists to bound. Such sources join the others in the flip stage.
fn flip_pending(input: &PlanInput<'_>, fleet: &Fleet, os: OsFamily) -> bool {
    ama_types(input, os)
        .iter()
        .any(|t| fleet.stream_on.contains(t) && !fleet.not_in_data_sources.contains(t))
}

/// Whether the machine finished the part of the migration its wave gate waits for.
fn settled(input: &PlanInput<'_>, fleet: &Fleet, m: &FleetMachine, canary_test: bool) -> bool {
    if !m.blocked.is_empty() || m.state.failed {
        return true;
    }
    let Some(os) = m.os else { return true };
    let ama = ama_types(input, os);
    if ama.is_empty() {
        return true;
    }
    if canary_test && m.legacy_here {
        return m.state.ama_installed && ama.iter().all(|t| m.state.test_associated.contains(t));
    }
    if let Lane::KeepLegacy(_) = m.lane {
        // Flip-controlled sources wait for the flip (AMA is onboarded for them in the flip
        // stage); what AMA must carry before it has to be there already — unless its DCR would
        // bring flip-controlled sources along (`flip_pending`): then it waits with them.
        let needed: Vec<DataSourceType> = if flip_pending(input, fleet, os) {
            Vec::new()
        } else {
            ama.iter()
                .filter(|t| {
                    !fleet.stream_on.contains(*t) && !fleet.not_in_data_sources.contains(*t)
                })
                .collect()
        };
        return needed.is_empty()
            || (m.state.ama_installed && needed.iter().all(|t| m.state.associated.contains(*t)));
    }
    if !m.state.ama_installed {
        return false;
    }
    match m.lane {
        Lane::NoLegacy | Lane::OtherWorkspaceOnly => {
            ama.iter().all(|t| m.state.associated.contains(t))
        }
        // Becomes NoLegacy once removed; KeepLegacy is handled above.
        Lane::DropLegacy | Lane::KeepLegacy(_) => false,
    }
}

/// A machine that keeps its legacy agent and has nothing for AMA to carry before the workspace
/// flips its streams: AMA is onboarded in the flip stage, just before the flip (PreferNoGap),
/// so the overlap lasts one onboarding, not the whole rollout. Any AMA agent that would deliver
/// earlier (even through an association made outside the plan) would duplicate until the flip.
fn waits_for_flip(input: &PlanInput<'_>, fleet: &Fleet, m: &FleetMachine) -> bool {
    let Some(os) = m.os else { return false };
    matches!(m.lane, Lane::KeepLegacy(_))
        && ama_types(input, os).iter().all(|t| {
            fleet.not_in_data_sources.contains(t)
                || (input.legacy.enables(t) && !input.progress.flipped.contains(t))
        })
}

fn in_window(windows: &[MaintenanceWindow], now: Timestamp) -> bool {
    if windows.is_empty() {
        return true;
    }
    let z = now.to_zoned(TimeZone::UTC);
    let minute = i32::from(z.hour()) * 60 + i32::from(z.minute());
    let weekday = |d: k8s_openapi::jiff::civil::Weekday| match d {
        k8s_openapi::jiff::civil::Weekday::Monday => Weekday::Mon,
        k8s_openapi::jiff::civil::Weekday::Tuesday => Weekday::Tue,
        k8s_openapi::jiff::civil::Weekday::Wednesday => Weekday::Wed,
        k8s_openapi::jiff::civil::Weekday::Thursday => Weekday::Thu,
        k8s_openapi::jiff::civil::Weekday::Friday => Weekday::Fri,
        k8s_openapi::jiff::civil::Weekday::Saturday => Weekday::Sat,
        k8s_openapi::jiff::civil::Weekday::Sunday => Weekday::Sun,
    };
    let day = weekday(z.weekday());
    let yesterday = weekday(z.weekday().previous());
    let hm = |s: &str| -> Option<i32> {
        let (h, m) = s.split_once(':')?;
        Some(h.parse::<i32>().ok()? * 60 + m.parse::<i32>().ok()?)
    };
    windows.iter().any(|w| {
        let (Some(start), Some(end)) = (hm(&w.start), hm(&w.end)) else {
            return false;
        };
        let listed = |d: Weekday| w.days.is_empty() || w.days.contains(&d);
        if start < end {
            listed(day) && minute >= start && minute < end
        } else {
            // Spans midnight: the part after midnight belongs to the previous day's window.
            (listed(day) && minute >= start) || (listed(yesterday) && minute < end)
        }
    })
}

fn accepted(input: &PlanInput<'_>, name: &str, key: Option<&str>, t: DataSourceType) -> bool {
    input
        .spec
        .legacy
        .flip
        .accepted_uncovered_senders
        .iter()
        .any(|a| {
            let who = a.computer.eq_ignore_ascii_case(name)
                || key.is_some_and(|k| a.computer.eq_ignore_ascii_case(k));
            who && (a.data_sources.is_empty()
                || a.data_sources.iter().any(|n| {
                    input
                        .spec
                        .data_sources
                        .iter()
                        .any(|d| &d.name == n && d.type_ == t)
                }))
        })
}

pub(crate) fn decide(
    input: &PlanInput<'_>,
    _catalog: &Catalog,
    fleet: &Fleet,
    membership: &Membership,
) -> PlanOutcome {
    let spec = input.spec;
    let waves = &spec.rollout.waves;
    let policy = spec.rollout.cutover.policy;
    let flipped = input.progress.flipped;
    let has_test = spec.test_workspace.is_some();

    // ---- waves: gates and admission
    let mut wave_plans: Vec<WavePlan> = waves
        .iter()
        .map(|w| WavePlan {
            name: w.name.clone(),
            canary: w.canary,
            ..WavePlan::default()
        })
        .collect();
    let mut all_settled = vec![true; waves.len()];
    let mut gate_passed = vec![false; waves.len()];
    // Canary test phase depends on the wave's own gate; compute gates from settled-ness first.
    for (i, m) in fleet.machines.iter().enumerate() {
        let Some(w) = membership.wave_of[i] else {
            continue;
        };
        let wp = &mut wave_plans[w];
        wp.members += 1;
        wp.by_risk[m.risk as usize] += 1;
        if let Some(os) = m.os {
            wp.by_os[os as usize] += 1;
        }
        if !m.blocked.is_empty() {
            wp.blocked += 1;
        }
        if m.state.failed {
            wp.failed += 1;
        }
    }
    for (w_idx, w) in waves.iter().enumerate() {
        let canary_test = w.canary && has_test;
        let members = fleet
            .machines
            .iter()
            .enumerate()
            .filter(|(i, _)| membership.wave_of[*i] == Some(w_idx));
        let mut ok = 0usize;
        let mut eligible = 0usize;
        let prog = input.progress.waves.get(w_idx);
        // Latched: once the shell recorded the wave finished, later steps of its machines (the
        // canary leaving the test workspace, flip-stage onboarding) do not reopen its gate;
        // failures still count against the success ratio.
        let latched = prog.is_some_and(|p| p.finished_at.is_some());
        for (_, m) in members {
            let s = latched || settled(input, fleet, m, canary_test);
            all_settled[w_idx] &= s;
            if m.blocked.is_empty() {
                eligible += 1;
                if s && !m.state.failed {
                    ok += 1;
                }
            }
        }
        let gates = w.gates.clone().unwrap_or_default();
        let ratio_ok = eligible == 0
            || (ok as f64 / eligible as f64) >= gates.min_success_ratio.unwrap_or(0.0);
        let soak_ok = match w.soak.as_deref().map(parse_duration) {
            None => true,
            Some(Err(_)) => false,
            Some(Ok(d)) => prog.and_then(|p| p.finished_at).is_some_and(|f| {
                f.as_second().saturating_add(d.as_secs() as i64) <= input.now.as_second()
            }),
        };
        // Like the success ratio, parity has nothing to compare in a wave with no eligible
        // machine (the planner warns that the wave received none): it does not hold the rollout.
        let parity_ok = gates.parity_tolerance_percent.is_none()
            || eligible == 0
            || prog.and_then(|p| p.parity_ok) == Some(true);
        let approval_ok = !gates.manual_approval || prog.is_some_and(|p| p.approved);
        gate_passed[w_idx] = all_settled[w_idx] && ratio_ok && soak_ok && parity_ok && approval_ok;
    }
    let mut admitted = vec![false; waves.len()];
    for i in 0..waves.len() {
        admitted[i] = i == 0 || (admitted[i - 1] && gate_passed[i - 1]);
        wave_plans[i].admitted = admitted[i];
        wave_plans[i].gate_passed = gate_passed[i];
    }

    // ---- failure budget and global holds
    let failed_total = fleet.machines.iter().filter(|m| m.state.failed).count();
    let admitted_total = fleet
        .machines
        .iter()
        .enumerate()
        .filter(|(i, _)| membership.wave_of[*i].is_some_and(|w| admitted[w]))
        .count();
    let budget = &spec.rollout.failure_budget;
    let over_budget = match (budget.max_failed, budget.max_failed_percent) {
        (Some(n), _) => failed_total > n as usize,
        (None, Some(p)) => failed_total * 100 > admitted_total * p as usize,
        (None, None) => false,
    };
    let window_open = in_window(&spec.rollout.maintenance_windows, input.now);
    let may_start = !spec.paused && !spec.dry_run && window_open && !over_budget;

    let canary_test_phase = |w: Option<usize>| -> bool {
        w.is_some_and(|w| waves[w].canary && has_test && !gate_passed[w])
    };
    let can_act = |i: usize, m: &FleetMachine| -> bool {
        m.blocked.is_empty()
            && !m.state.failed
            && m.os.is_some()
            && membership.wave_of[i].is_some_and(|w| admitted[w])
    };

    // ---- legacy flips
    let mut flips = Vec::new();
    let mut plan_actions = Vec::new();
    let mut flip_ready = TypeSet::EMPTY;
    let ama_plan_types: Vec<DataSourceType> = {
        let mut v: Vec<DataSourceType> = spec
            .data_sources
            .iter()
            .filter(|d| d.agent == Agent::Ama)
            .map(|d| d.type_)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for &t in &ama_plan_types {
        let controls: Vec<String> = input
            .legacy
            .data_sources_for(t)
            .into_iter()
            .map(String::from)
            .collect();
        let is_flipped = flipped.contains(t);
        let never = if spec.legacy.flip.policy == FlipWhen::Never {
            Some("spec.legacy.flip.policy is Never".to_string())
        } else if fleet.not_in_data_sources.contains(t) {
            Some(format!(
                "{t} is not controlled by the workspace's dataSources; machines move it by removing the legacy agent"
            ))
        } else if !input.legacy.enables(t) && !is_flipped {
            Some(format!(
                "the workspace does not collect {t} through the legacy agent"
            ))
        } else {
            None
        };
        let mut blocking: Vec<String> = Vec::new();
        let mut blocking_total = 0usize;
        let mut candidates = 0usize;
        let mut candidates_associated = 0usize;
        let mut uncovered = |name: &str| {
            blocking_total += 1;
            if blocking.len() < 20 {
                blocking.push(name.to_string());
            }
        };
        for (i, m) in fleet.machines.iter().enumerate() {
            if !m.legacy_here || m.os != Some(t.os()) {
                continue;
            }
            if accepted(input, &m.name, Some(&m.key), t) {
                continue;
            }
            // PreferNoGap onboards flip-stage machines when the stream is ready and flips only
            // once all of them carry it, so they need not have AMA yet; PreferNoDuplicate flips
            // first and associates after, so AMA must already be installed.
            let onboarded = m.state.ama_installed
                || (policy == CutoverPolicy::PreferNoGap && waits_for_flip(input, fleet, m));
            let candidate = matches!(m.lane, Lane::KeepLegacy(_))
                && can_act(i, m)
                && onboarded
                && !canary_test_phase(membership.wave_of[i]);
            if candidate {
                candidates += 1;
                if m.state.ama_installed && m.state.associated.contains(t) {
                    candidates_associated += 1;
                }
            } else {
                uncovered(&m.name);
            }
        }
        for s in &fleet.out_of_scope {
            if s.os.is_some_and(|o| o != t.os()) {
                continue;
            }
            if accepted(input, &s.name, s.key.as_deref(), t) {
                continue;
            }
            uncovered(s.key.as_deref().unwrap_or(&s.name));
        }
        let ready = never.is_none() && blocking_total == 0;
        if ready {
            flip_ready.insert(t);
        }
        let all_associated = candidates_associated == candidates;
        let may_flip_now =
            ready && !is_flipped && (policy == CutoverPolicy::PreferNoDuplicate || all_associated);
        if may_flip_now {
            plan_actions.push(PlanAction::Flip(t));
        }
        // Restore when a sender became uncovered after the flip. PreferNoDuplicate restores
        // only once the AMA associations are gone (no duplicate); PreferNoGap restores first.
        if is_flipped && !ready {
            let associated_left = candidates_associated > 0;
            if policy == CutoverPolicy::PreferNoGap || !associated_left {
                plan_actions.push(PlanAction::Restore(t));
            }
        }
        let mut preconditions = vec![
            (
                "spec.legacy.flip.policy is AfterAllCovered".to_string(),
                spec.legacy.flip.policy == FlipWhen::AfterAllCovered,
            ),
            (
                format!(
                    "every legacy sender of {t} in the workspace (in scope or not, Heartbeat-only included) is covered by AMA or named in acceptedUncoveredSenders"
                ),
                blocking_total == 0,
            ),
        ];
        if policy == CutoverPolicy::PreferNoGap {
            preconditions.push((
                format!(
                    "AMA associated for {t} on every machine that keeps the legacy agent ({candidates_associated}/{candidates})"
                ),
                all_associated,
            ));
        }
        blocking.sort();
        flips.push(FlipDecision {
            ds_type: t,
            controls,
            flipped: is_flipped,
            ready,
            may_flip_now,
            preconditions,
            blocking_senders: blocking,
            blocking_total,
            never,
        });
    }

    // ---- per machine
    // In progress: started in an admitted wave and not settled. Machines waiting for the flip
    // and agents that were there before the plan hold no slot.
    let flip_stage_open = |m: &FleetMachine| -> bool {
        m.os.is_some_and(|os| {
            matches!(m.lane, Lane::KeepLegacy(_))
                && ama_types(input, os).iter().any(|t| {
                    flip_ready.contains(t)
                        && !flipped.contains(t)
                        && !(m.state.ama_installed && m.state.associated.contains(t))
                })
        })
    };
    let in_progress = fleet
        .machines
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            can_act(*i, m)
                && (m.state.ama_installed
                    || m.state.identity_enabled
                    || !m.state.associated.is_empty()
                    || !m.state.test_associated.is_empty())
                && (flip_stage_open(m)
                    || !settled(input, fleet, m, canary_test_phase(membership.wave_of[*i])))
        })
        .count();
    let mut start_slots = (spec.rollout.max_parallel as usize).saturating_sub(in_progress);
    let mut order: Vec<usize> = (0..fleet.machines.len()).collect();
    order.sort_by_key(|i| (membership.wave_of[*i].unwrap_or(usize::MAX), *i));
    let mut decisions: Vec<Option<MachineDecision>> = vec![None; fleet.machines.len()];
    let mut held_by_window = false;
    for i in order {
        let m = &fleet.machines[i];
        let wave = membership.wave_of[i];
        let act = can_act(i, m);
        let started = m.state.ama_installed || m.state.identity_enabled;
        let canary_test = canary_test_phase(wave) && m.legacy_here;
        // Flip stage not open yet: nothing to onboard, no slot taken.
        let defer = policy == CutoverPolicy::PreferNoGap
            && !m.state.ama_installed
            && !canary_test
            && waits_for_flip(input, fleet, m)
            && !flip_stage_open(m);
        let mut may_proceed = act && may_start;
        if may_proceed && !started && !defer {
            if start_slots == 0 {
                may_proceed = false;
            } else {
                start_slots -= 1;
            }
        }
        let mut assignments = Vec::new();
        let mut actions = Vec::new();
        let push = |a: MachineAction, actions: &mut Vec<MachineAction>| {
            if !actions.contains(&a) {
                actions.push(a);
            }
        };
        let Some(os) = m.os else {
            decisions[i] = Some(decision(m, wave, assignments, actions, false));
            continue;
        };
        let ama_all = ama_types(input, os);
        let installed = m.state.ama_installed;
        let mut remove_legacy_ok = matches!(m.lane, Lane::DropLegacy);
        for (ds_index, d) in super::sources_for(spec, os) {
            let t = d.type_;
            let (legacy_now, ama_now) = senders(m, t, fleet.stream_on);
            let mut a = Assignment {
                ds_index,
                ds_type: t,
                desired_now: if legacy_now {
                    Agent::Legacy
                } else {
                    Agent::Ama
                },
                target: d.agent,
                deliberate_overlap: false,
                unservable: None,
            };
            if d.agent == Agent::Legacy {
                a.desired_now = Agent::Legacy;
                if !legacy_now {
                    a.unservable = Some(
                        "no legacy agent delivers it to the workspace, and the plan keeps it on Legacy",
                    );
                }
                if m.state.associated.contains(t) {
                    push(
                        MachineAction::Dissociate { ds: t, test: false },
                        &mut actions,
                    );
                }
                assignments.push(a);
                continue;
            }
            // agent: AMA
            if m.state.failed || !act {
                // Not moving: keep (or restore) exactly one sender where possible.
                if legacy_now && ama_now {
                    push(
                        MachineAction::Dissociate { ds: t, test: false },
                        &mut actions,
                    );
                    a.desired_now = Agent::Legacy;
                } else if !legacy_now && !ama_now {
                    a.unservable = Some(if m.state.failed {
                        "machine failed after its legacy sender stopped; retry it"
                    } else if !m.blocked.is_empty() {
                        "machine is blocked and no legacy agent delivers it"
                    } else {
                        "no sender yet; its wave has not started"
                    });
                }
                if m.state.test_associated.contains(t) && m.state.failed {
                    push(
                        MachineAction::Dissociate { ds: t, test: true },
                        &mut actions,
                    );
                }
                assignments.push(a);
                continue;
            }
            if !installed {
                if !may_proceed || defer {
                    if !legacy_now {
                        a.unservable = Some("no sender yet; waiting for a start slot or window");
                    }
                } else if m.needs_identity {
                    push(MachineAction::EnableIdentity, &mut actions);
                } else {
                    push(MachineAction::InstallAma, &mut actions);
                }
                remove_legacy_ok = false;
                assignments.push(a);
                continue;
            }
            if canary_test {
                if !m.state.test_associated.contains(t) && may_proceed {
                    push(MachineAction::Associate { ds: t, test: true }, &mut actions);
                }
                if ama_now && legacy_now {
                    push(
                        MachineAction::Dissociate { ds: t, test: false },
                        &mut actions,
                    );
                }
                a.desired_now = Agent::Legacy;
                remove_legacy_ok = false;
                assignments.push(a);
                continue;
            }
            if m.state.test_associated.contains(t) {
                push(
                    MachineAction::Dissociate { ds: t, test: true },
                    &mut actions,
                );
            }
            match m.lane {
                Lane::NoLegacy | Lane::OtherWorkspaceOnly | Lane::DropLegacy => {
                    a.desired_now = Agent::Ama;
                    let assoc_allowed = policy == CutoverPolicy::PreferNoGap || !legacy_now;
                    if !m.state.associated.contains(t) {
                        remove_legacy_ok &= policy == CutoverPolicy::PreferNoDuplicate;
                        if assoc_allowed && may_proceed {
                            push(
                                MachineAction::Associate { ds: t, test: false },
                                &mut actions,
                            );
                        }
                    }
                }
                Lane::KeepLegacy(_) => {
                    if fleet.not_in_data_sources.contains(t) {
                        // No flip moves it and the agent stays: it ends on the legacy agent.
                        a.desired_now = Agent::Legacy;
                        a.target = Agent::Legacy;
                        a.unservable = if legacy_now {
                            None
                        } else {
                            Some("legacy agent stays and AMA cannot take over this source")
                        };
                        if ama_now && legacy_now {
                            push(
                                MachineAction::Dissociate { ds: t, test: false },
                                &mut actions,
                            );
                        }
                    } else if !input.legacy.enables(t) && !flipped.contains(t) {
                        // The workspace never collected it through the legacy agent.
                        a.desired_now = Agent::Ama;
                        if !m.state.associated.contains(t) {
                            if flip_pending(input, fleet, os) {
                                a.unservable = Some(
                                    "waits for the flip stage: its DCR also carries sources whose legacy flip is pending",
                                );
                            } else if may_proceed {
                                push(
                                    MachineAction::Associate { ds: t, test: false },
                                    &mut actions,
                                );
                            }
                        }
                    } else if flip_ready.contains(t) {
                        a.desired_now = Agent::Ama;
                        let assoc_allowed =
                            policy == CutoverPolicy::PreferNoGap || flipped.contains(t);
                        if !m.state.associated.contains(t) && assoc_allowed {
                            push(
                                MachineAction::Associate { ds: t, test: false },
                                &mut actions,
                            );
                        }
                    } else {
                        a.desired_now = Agent::Legacy;
                        // PreferNoGap: restore the stream first, then dissociate.
                        let restore_pending =
                            flipped.contains(t) && policy == CutoverPolicy::PreferNoGap;
                        if m.state.associated.contains(t) && !restore_pending {
                            push(
                                MachineAction::Dissociate { ds: t, test: false },
                                &mut actions,
                            );
                        }
                        if !legacy_now && !ama_now {
                            a.unservable = Some("legacy stream flipped and AMA not associated");
                        }
                    }
                }
            }
            assignments.push(a);
        }
        if remove_legacy_ok && m.legacy_here && installed && may_proceed && !canary_test {
            let all_assoc = ama_all.iter().all(|t| m.state.associated.contains(t));
            if policy == CutoverPolicy::PreferNoDuplicate || all_assoc {
                push(MachineAction::RemoveLegacy, &mut actions);
            }
        }
        let d = decision(m, wave, assignments, actions, may_proceed);
        held_by_window |= act && !window_open && !spec.paused && !spec.dry_run && !d.done;
        decisions[i] = Some(d);
    }
    let machines: Vec<MachineDecision> = decisions.into_iter().flatten().collect();
    for d in &machines {
        if let Some(w) = d.wave
            && d.done
        {
            wave_plans[w].done += 1;
        }
    }
    let mut warnings = membership.warnings.clone();
    for t in &fleet.unlisted {
        warnings.push(format!(
            "the workspace enables legacy {t}, which the plan does not list: machines sending it keep the legacy agent; add it to spec.dataSources"
        ));
    }
    if over_budget {
        warnings.push(format!(
            "failure budget exceeded ({failed_total} failed): no new machine starts until failures are retried or the budget is raised"
        ));
    }
    PlanOutcome {
        errors: Vec::new(),
        machines,
        waves: wave_plans,
        flips,
        plan_actions,
        windows: Vec::new(),
        dcrs: Vec::new(),
        out_of_scope_senders: fleet
            .out_of_scope
            .iter()
            .map(|s| s.key.clone().unwrap_or_else(|| s.name.clone()))
            .collect(),
        warnings,
        held_by_window,
    }
}

fn decision(
    m: &FleetMachine,
    wave: Option<usize>,
    assignments: Vec<Assignment>,
    actions: Vec<MachineAction>,
    may_proceed: bool,
) -> MachineDecision {
    let done = actions.is_empty()
        && m.blocked.is_empty()
        && !m.state.failed
        && m.os.is_some()
        && assignments.iter().all(|a| {
            // A source the plan keeps on Legacy on a machine without a legacy agent here is
            // outside what the plan can do (it installs no legacy agent): reported, not awaited.
            let not_ours = a.target == Agent::Legacy && !m.legacy_here;
            let (legacy, ama) = (a.desired_now == Agent::Legacy, a.desired_now == Agent::Ama);
            not_ours || (a.unservable.is_none() && a.target == a.desired_now && (legacy || ama))
        })
        && (!matches!(m.lane, Lane::DropLegacy));
    MachineDecision {
        index: m.index,
        key: m.key.clone(),
        os: m.os,
        risk: m.risk,
        wave,
        lane: m.lane,
        blocked: m.blocked.clone(),
        assignments,
        actions,
        may_proceed,
        done,
    }
}
