//! The forward walk: eligibility → identity → AMA → associations → verify → cutover → done,
//! in the order the cutover policy asks for. Each stage is satisfied by what the observation
//! shows, so nothing already in place is written again.

use std::collections::BTreeMap;

use super::{
    Action, ActionError, AmaIdentity, Ctx, Decision, EventType, ExtensionState, Flow, add,
    association_name, reasons,
};
use crate::api::conditions::{reasons as creasons, status as cstatus, types as ctypes};
use crate::api::machine::MachineStep;
use crate::api::plan::{Agent, CutoverPolicy, IdentityPolicy, MachineKind, UninstallPolicy};
use crate::azure::error::Classification;
use crate::inventory::AgentKind;

/// What may happen to the legacy agent on this machine.
enum LegacyPlan {
    /// Not installed (any more).
    Absent,
    /// An ARM extension nothing else needs: the migrator may delete it.
    Removable(String),
    /// Being created or deleted by an operation we do not track.
    Transitioning {
        deleting: bool,
        name: Option<String>,
    },
    /// It stays; its moved sources stop when the workspace streams are switched off.
    Retained(&'static str, String),
}

/// A DCR the machine needs, with the moved sources it carries.
struct WantedDcr {
    id: String,
    association: String,
    sources: Vec<String>,
}

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl Ctx<'_> {
    /// Plan data source names assigned to AMA, in spec order.
    fn moved(&self) -> Vec<String> {
        self.spec
            .data_sources
            .iter()
            .filter(|d| d.agent == Agent::Ama)
            .map(|d| d.name.clone())
            .collect()
    }

    /// The DCRs to associate, by lower-cased id; association names are unique per machine.
    fn wanted_dcrs(&self) -> Vec<WantedDcr> {
        let mut by_id: BTreeMap<String, WantedDcr> = BTreeMap::new();
        for d in self
            .spec
            .data_sources
            .iter()
            .filter(|d| d.agent == Agent::Ama)
        {
            let Some(dcr) = &d.dcr else { continue };
            by_id
                .entry(dcr.to_ascii_lowercase())
                .or_insert_with(|| WantedDcr {
                    id: dcr.clone(),
                    association: association_name(dcr),
                    sources: Vec::new(),
                })
                .sources
                .push(d.name.clone());
        }
        let mut wanted: Vec<WantedDcr> = by_id.into_values().collect();
        // Two DCRs with the same name in different resource groups: disambiguate by id hash.
        let names: Vec<String> = wanted.iter().map(|w| w.association.clone()).collect();
        for w in &mut wanted {
            if names.iter().filter(|n| **n == w.association).count() > 1 {
                w.association = format!(
                    "{}-{:08x}",
                    w.association,
                    fnv1a(&w.id.to_ascii_lowercase())
                );
            }
        }
        wanted
    }

    fn associated(&self, dcr_id: &str) -> bool {
        self.obs
            .associations
            .iter()
            .any(|a| a.dcr_id.eq_ignore_ascii_case(dcr_id))
    }

    fn stuck(&self) -> bool {
        add(self.step_started(), self.policy.operation_timeout) <= self.now
    }

    /// `Some(decision)` when no write may be sent now (ineligible, or not admitted).
    fn gate(&mut self) -> Option<Decision> {
        if let Some((reason, msg)) = self.ineligible() {
            return Some(self.block(reason, msg));
        }
        if !self.spec.may_proceed {
            let msg = format!(
                "waiting for the plan to admit the machine (wave {}; plan paused or maintenance window closed) before {:?}",
                self.spec.wave,
                self.current_step()
            );
            self.cond(
                ctypes::PROGRESSING,
                cstatus::FALSE,
                reasons::NOT_ADMITTED,
                msg,
            );
            return Some(self.finish(Action::None));
        }
        None
    }

    fn send(&mut self, action: Action) -> Decision {
        match self.gate() {
            Some(d) => d,
            None => self.finish(action),
        }
    }

    /// A read (verification) needs the machine up, not admission.
    fn read(&mut self, action: Action) -> Decision {
        if let Some((reason, msg)) = self.ineligible() {
            return self.block(reason, msg);
        }
        self.finish(action)
    }

    fn wait_poll(&mut self) -> Decision {
        let t = add(self.now, self.policy.poll_interval);
        self.finish(Action::WaitUntil(t))
    }

    fn flow_to_decision(&mut self, f: Flow) -> Decision {
        match f {
            Flow::Return(d) => d,
            // Not counted because the machine is ineligible: say so.
            Flow::Continue => match self.ineligible() {
                Some((reason, msg)) => self.block(reason, msg),
                None => self.wait_poll(),
            },
        }
    }

    /// An extension in a transitional state nobody we know is driving: wait, and after the
    /// operation timeout count a failure (or re-send the delete a stuck `Deleting` needs).
    pub(super) fn transitioning(&mut self, deleting: bool, redelete: Option<Action>) -> Decision {
        let marked = self.s.last_error.as_ref().is_some_and(|e| {
            e.message
                .to_ascii_lowercase()
                .contains("marked for deletion")
        });
        if deleting
            && (marked || self.stuck())
            && let Some(a) = redelete
        {
            return self.send(a);
        }
        if self.stuck() {
            let e = ActionError {
                classification: Classification::Transient,
                code: "OperationTimedOut".into(),
                message: format!(
                    "the extension stayed {} for more than {}s",
                    if deleting {
                        "Deleting"
                    } else {
                        "Creating/Updating"
                    },
                    self.policy.operation_timeout.as_secs()
                ),
                http_status: None,
                retry_after: None,
            };
            let f = self.fail("waiting for the extension", &e);
            return self.flow_to_decision(f);
        }
        self.wait_poll()
    }

    pub(super) fn forward(&mut self) -> Decision {
        if self.current_step() == MachineStep::Pending && !self.spec.may_proceed {
            self.s.step = Some(MachineStep::Pending);
            self.cond(
                ctypes::PROGRESSING,
                cstatus::FALSE,
                reasons::NOT_ADMITTED,
                format!("waiting for wave {} to be admitted", self.spec.wave),
            );
            return self.finish(Action::None);
        }
        if let Some(d) = self
            .spec
            .data_sources
            .iter()
            .find(|d| d.agent == Agent::Ama && d.dcr.is_none())
        {
            let msg = format!(
                "data source {} is assigned AMA but has no DCR in the spec; the planner must set spec.dataSources[].dcr",
                d.name
            );
            return self.block(creasons::INVALID_SPEC, msg);
        }
        if self.current_step() == MachineStep::Pending || self.s.step.is_none() {
            self.enter(MachineStep::CheckEligibility);
        }
        if let Some((reason, msg)) = self.ineligible() {
            return self.block(reason, msg);
        }
        if !self.moved().is_empty() {
            if let Some(d) = self.ensure_identity() {
                return d;
            }
            if let Some(d) = self.ensure_ama() {
                return d;
            }
        }
        match self.policy.cutover {
            CutoverPolicy::PreferNoGap => self.no_gap(),
            CutoverPolicy::PreferNoDuplicate => self.no_duplicate(),
        }
    }

    fn ensure_identity(&mut self) -> Option<Decision> {
        if self.obs.identity.usable() {
            return None;
        }
        if self.spec.kind == MachineKind::ArcServer {
            return Some(self.block(
                reasons::ARC_MISSING_IDENTITY,
                "the Arc server reports no system-assigned identity (the Connected Machine agent creates it); reconnect the machine with azcmagent connect".into(),
            ));
        }
        if self.policy.identity == IdentityPolicy::RequireExisting {
            return Some(self.block(
                reasons::MISSING_IDENTITY,
                "the VM has no managed identity and the plan's identity policy is RequireExisting; assign a user-assigned identity or set spec.identity to EnableSystemAssigned".into(),
            ));
        }
        self.enter(MachineStep::EnsureIdentity);
        Some(self.send(Action::EnableSystemIdentity))
    }

    fn ama_identity(&self) -> AmaIdentity {
        if self.obs.identity.system_assigned {
            return AmaIdentity::SystemAssigned;
        }
        let mut uai = self.obs.identity.user_assigned.clone();
        uai.sort();
        uai.into_iter()
            .next()
            .map_or(AmaIdentity::SystemAssigned, AmaIdentity::UserAssigned)
    }

    fn ama_name(&self) -> String {
        self.obs
            .ama
            .name
            .clone()
            .unwrap_or_else(|| AgentKind::Ama.extension_type(self.spec.os).to_string())
    }

    fn ensure_ama(&mut self) -> Option<Decision> {
        let install = Action::InstallAma {
            extension_name: self.ama_name(),
            publisher: AgentKind::Ama.publisher(),
            extension_type: AgentKind::Ama.extension_type(self.spec.os),
            identity: self.ama_identity(),
        };
        match self.obs.ama.state.clone() {
            ExtensionState::Succeeded => None,
            ExtensionState::Absent => {
                self.enter(MachineStep::InstallAma);
                if let Some(d) = self.gate() {
                    return Some(d);
                }
                // Written with the intent, so a rollback also removes an install that failed.
                self.cond(
                    reasons::TYPE_AMA_INSTALLED_BY_MIGRATOR,
                    cstatus::TRUE,
                    reasons::AMA_INSTALLED,
                    "the migrator created the AMA extension; a rollback removes it",
                );
                Some(self.finish(install))
            }
            ExtensionState::Failed { .. } => {
                self.enter(MachineStep::InstallAma);
                Some(self.send(install))
            }
            ExtensionState::Provisioning => {
                self.enter(MachineStep::InstallAma);
                Some(self.transitioning(false, None))
            }
            ExtensionState::Deleting => {
                self.enter(MachineStep::InstallAma);
                let redelete = Action::RemoveAma {
                    extension_name: self.ama_name(),
                };
                Some(self.transitioning(true, Some(redelete)))
            }
        }
    }

    /// Removes our associations of DCRs the spec no longer wants, then associates the wanted
    /// DCRs `allowed` accepts (by their sources).
    fn associate(&mut self, allowed: &dyn Fn(&Self, &[String]) -> bool) -> Option<Decision> {
        let wanted = self.wanted_dcrs();
        let stale = self.obs.associations.iter().find(|a| {
            a.name.starts_with(super::ASSOCIATION_PREFIX)
                && !wanted.iter().any(|w| w.id.eq_ignore_ascii_case(&a.dcr_id))
        });
        if let Some(a) = stale {
            let action = Action::RemoveAssociation {
                association_name: a.name.clone(),
            };
            self.enter(MachineStep::AssociateDcrs);
            return Some(self.send(action));
        }
        for w in &wanted {
            if self.associated(&w.id) || !allowed(self, &w.sources) {
                continue;
            }
            let action = Action::Associate {
                dcr_id: w.id.clone(),
                association_name: w.association.clone(),
            };
            self.enter(MachineStep::AssociateDcrs);
            return Some(self.send(action));
        }
        None
    }

    /// `None` when AMA heartbeats and delivers every source in `sources`; otherwise the
    /// decision that gets a fresh verification, waits for one, or fails the attempt.
    fn verify(&mut self, sources: &[String]) -> Option<Decision> {
        self.enter(MachineStep::Verify);
        let started = self.step_started();
        let Some(v) = self.obs.verification.clone() else {
            return Some(self.read(Action::Verify));
        };
        let missing: Vec<&String> = sources.iter().filter(|s| !v.ama_delivers(s)).collect();
        if v.ama_heartbeat && missing.is_empty() {
            return None;
        }
        if v.observed_at < started {
            return Some(self.read(Action::Verify));
        }
        if add(started, self.policy.verify_timeout) <= self.now {
            let (code, message) = if !v.ama_heartbeat {
                (
                    "AmaHeartbeatMissing",
                    format!(
                        "no AMA heartbeat within {}s of installing; check the managed identity (AMA needs one to fetch its DCRs), IMDS reachability, and outbound access to *.handler.control.monitor.azure.com and the workspace's ods endpoint",
                        self.policy.verify_timeout.as_secs()
                    ),
                )
            } else {
                let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                (
                    "AmaDataMissing",
                    format!(
                        "AMA heartbeats but delivered no data for {} within {}s; check the DCR's data sources and destinations and that the machine produces that data",
                        names.join(", "),
                        self.policy.verify_timeout.as_secs()
                    ),
                )
            };
            let e = ActionError {
                classification: Classification::Transient,
                code: code.into(),
                message,
                http_status: None,
                retry_after: None,
            };
            let f = self.fail("verification", &e);
            return Some(self.flow_to_decision(f));
        }
        let next = add(v.observed_at, self.policy.verify_interval);
        if next <= self.now {
            Some(self.read(Action::Verify))
        } else {
            Some(self.finish(Action::WaitUntil(next)))
        }
    }

    fn verification_fails(&self, sources: &[String]) -> bool {
        self.obs
            .verification
            .as_ref()
            .is_some_and(|v| !(v.ama_heartbeat && sources.iter().all(|s| v.ama_delivers(s))))
    }

    fn legacy_plan(&self) -> LegacyPlan {
        let l = &self.obs.legacy;
        if !l.is_present() {
            return LegacyPlan::Absent;
        }
        let mut needs: Vec<String> = self
            .spec
            .data_sources
            .iter()
            .filter(|d| d.agent == Agent::Legacy)
            .map(|d| format!("data source {} is assigned Legacy", d.name))
            .collect();
        needs.extend(self.obs.legacy_needed_by.iter().cloned());
        if !needs.is_empty() {
            return LegacyPlan::Retained(
                reasons::LEGACY_STILL_NEEDED,
                format!(
                    "the legacy agent stays because {}; its moved sources stop when the workspace streams are switched off",
                    needs.join("; ")
                ),
            );
        }
        if l.in_guest_only {
            return LegacyPlan::Retained(
                reasons::LEGACY_IN_GUEST,
                "the legacy agent is installed in the guest (MSI or in-guest multi-homing) and is invisible to ARM, so the migrator cannot remove it; uninstall it on the machine (UpgradeCode {8E30469C-06DA-4B52-9F1E-EFC975E443EA} on Windows), its moved sources stop when the workspace streams are switched off".into(),
            );
        }
        if self.policy.uninstall == UninstallPolicy::Never {
            return LegacyPlan::Retained(
                reasons::LEGACY_UNINSTALL_NEVER,
                "the plan's legacy uninstall policy is Never; its moved sources stop when the workspace streams are switched off".into(),
            );
        }
        match (&l.state, &l.name) {
            (ExtensionState::Provisioning, name) => LegacyPlan::Transitioning {
                deleting: false,
                name: name.clone(),
            },
            (ExtensionState::Deleting, name) => LegacyPlan::Transitioning {
                deleting: true,
                name: name.clone(),
            },
            (_, Some(name)) => LegacyPlan::Removable(name.clone()),
            (_, None) => LegacyPlan::Retained(
                reasons::LEGACY_IN_GUEST,
                "the legacy agent extension was observed without a name, so it cannot be deleted through ARM; its moved sources stop when the workspace streams are switched off".into(),
            ),
        }
    }

    fn done(&mut self) -> Decision {
        if self.s.step != Some(MachineStep::Done) {
            self.event(
                EventType::Normal,
                reasons::COMPLETED,
                "every moved data source is delivered by AMA".into(),
            );
        }
        self.enter(MachineStep::Done);
        if self.s.completed_at.is_none() {
            self.s.completed_at = Some(self.now_time());
        }
        self.finish(Action::None)
    }

    /// No source moves to AMA: the legacy agent (if any) keeps everything.
    fn nothing_moves(&mut self) -> Decision {
        if self.obs.legacy.is_present() {
            self.cond(
                reasons::TYPE_LEGACY_RETAINED,
                cstatus::TRUE,
                reasons::LEGACY_STILL_NEEDED,
                "no data source of this machine moves to AMA; the legacy agent keeps sending them",
            );
        }
        self.done()
    }

    /// The legacy agent stays: done once every moved source's workspace stream is off.
    fn retained(&mut self, reason: &'static str, msg: String) -> Decision {
        self.cond(reasons::TYPE_LEGACY_RETAINED, cstatus::TRUE, reason, &msg);
        let unflipped: Vec<String> = self
            .moved()
            .into_iter()
            .filter(|s| !self.obs.flipped.contains(s))
            .collect();
        if unflipped.is_empty() {
            return self.done();
        }
        self.enter(MachineStep::WaitForFlip);
        self.cond(
            ctypes::PROGRESSING,
            cstatus::FALSE,
            reasons::WAITING_FOR_FLIP,
            format!(
                "AMA delivers the moved sources; the legacy agent still sends {} until the plan switches those workspace streams off ({msg})",
                unflipped.join(", ")
            ),
        );
        self.finish(Action::None)
    }

    /// New sender first: associate, verify AMA delivers every moved source, then stop legacy.
    fn no_gap(&mut self) -> Decision {
        if let Some(d) = self.associate(&|_, _| true) {
            return d;
        }
        let moved = self.moved();
        if moved.is_empty() {
            return self.nothing_moves();
        }
        let past_verify = matches!(
            self.current_step(),
            MachineStep::Cutover | MachineStep::WaitForFlip | MachineStep::Done
        );
        if (!past_verify || self.verification_fails(&moved))
            && let Some(d) = self.verify(&moved)
        {
            return d;
        }
        match self.legacy_plan() {
            LegacyPlan::Absent => self.done(),
            LegacyPlan::Retained(reason, msg) => self.retained(reason, msg),
            LegacyPlan::Removable(name) => {
                self.enter(MachineStep::Cutover);
                let covered = self
                    .obs
                    .verification
                    .as_ref()
                    .is_some_and(|v| moved.iter().all(|s| v.ama_delivers(s)));
                if !covered {
                    // Never stop the old sender before the new one is proven to deliver.
                    return self.read(Action::Verify);
                }
                self.send(Action::RemoveLegacy {
                    extension_name: name,
                })
            }
            LegacyPlan::Transitioning { deleting, name } => {
                self.enter(MachineStep::Cutover);
                let redelete = name.map(|n| Action::RemoveLegacy { extension_name: n });
                self.transitioning(deleting, redelete)
            }
        }
    }

    /// Old sender first: AMA heartbeats, legacy stops (removed or stream switched off), then
    /// the DCRs are associated and the data verified.
    fn no_duplicate(&mut self) -> Decision {
        if self.moved().is_empty() {
            if let Some(d) = self.associate(&|_, _| true) {
                return d;
            }
            return self.nothing_moves();
        }
        match self.legacy_plan() {
            LegacyPlan::Removable(name) => {
                if let Some(d) = self.verify(&[]) {
                    return d;
                }
                self.enter(MachineStep::Cutover);
                return self.send(Action::RemoveLegacy {
                    extension_name: name,
                });
            }
            LegacyPlan::Transitioning { deleting, name } => {
                self.enter(MachineStep::Cutover);
                let redelete = name.map(|n| Action::RemoveLegacy { extension_name: n });
                return self.transitioning(deleting, redelete);
            }
            LegacyPlan::Retained(reason, msg) => {
                self.cond(reasons::TYPE_LEGACY_RETAINED, cstatus::TRUE, reason, msg);
            }
            LegacyPlan::Absent => {}
        }
        let safe = |cx: &Self, sources: &[String]| {
            !cx.obs.legacy.is_present() || sources.iter().all(|s| cx.obs.flipped.contains(s))
        };
        if let Some(d) = self.associate(&safe) {
            return d;
        }
        let waiting: Vec<String> = self
            .wanted_dcrs()
            .iter()
            .filter(|w| !self.associated(&w.id))
            .flat_map(|w| w.sources.clone())
            .filter(|s| !self.obs.flipped.contains(s))
            .collect();
        if !waiting.is_empty() {
            self.enter(MachineStep::WaitForFlip);
            self.cond(
                ctypes::PROGRESSING,
                cstatus::FALSE,
                reasons::WAITING_FOR_FLIP,
                format!(
                    "the legacy agent stays on this machine, so AMA starts sending {} only after the plan switches those workspace streams off (PreferNoDuplicate)",
                    waiting.join(", ")
                ),
            );
            return self.finish(Action::None);
        }
        let moved = self.moved();
        let verified = self.current_step() == MachineStep::Done && !self.verification_fails(&moved);
        if !moved.is_empty()
            && !verified
            && let Some(d) = self.verify(&moved)
        {
            return d;
        }
        self.done()
    }
}
