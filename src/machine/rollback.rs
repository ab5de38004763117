//! Rollback: remove only what the migrator added (its associations, AMA if it installed it) and
//! keep the legacy path. It never removes a legacy agent, and cannot reinstall one it removed.

use super::{Action, Ctx, Decision, EventType, ExtensionState, reasons};
use crate::api::conditions::{status as cstatus, types as ctypes};
use crate::api::machine::MachineStep;
use crate::api::plan::{Agent, CutoverPolicy};

impl Ctx<'_> {
    /// A rollback write: needs the machine up, not admission (people asked for it).
    fn rollback_send(&mut self, action: Action) -> Decision {
        if let Some((reason, msg)) = self.ineligible() {
            self.cond(ctypes::BLOCKED, cstatus::TRUE, reason, &msg);
            self.cond(ctypes::PROGRESSING, cstatus::FALSE, reason, msg);
            return self.finish(Action::None);
        }
        self.finish(action)
    }

    fn rollback_wait(&mut self, reason: &'static str, msg: String) -> Decision {
        self.cond(ctypes::PROGRESSING, cstatus::FALSE, reason, msg);
        self.finish(Action::None)
    }

    pub(super) fn rollback(&mut self) -> Decision {
        if self.s.step != Some(MachineStep::RollingBack) {
            self.event(
                EventType::Normal,
                reasons::ROLLING_BACK,
                "rollback requested: removing the migrator's DCR associations and AMA install"
                    .into(),
            );
            self.enter(MachineStep::RollingBack);
        }
        if self.requests.hold {
            return self.held();
        }
        if let Some(until) = self.backoff_until() {
            return self.finish(Action::WaitUntil(until));
        }
        let legacy_present = self.obs.legacy.is_present();
        let legacy_removed_by_us = self.marker(reasons::TYPE_LEGACY_REMOVED_BY_MIGRATOR);
        let mut ours: Vec<super::Association> = self
            .obs
            .associations
            .iter()
            .filter(|a| a.name.starts_with(super::ASSOCIATION_PREFIX))
            .cloned()
            .collect();
        ours.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(a) = ours.first() {
            let sources: Vec<String> = self
                .spec
                .data_sources
                .iter()
                .filter(|d| d.agent == Agent::Ama)
                .filter(|d| {
                    d.dcr
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(&a.dcr_id))
                })
                .map(|d| d.name.clone())
                .collect();
            if !legacy_present && legacy_removed_by_us && !sources.is_empty() {
                let msg = format!(
                    "removing association {} would leave {} with no sender: the migrator removed the legacy agent and reinstalling it is out of scope; reinstall MMA/OMS on the machine (the rollback then continues) or cancel the rollback",
                    a.name,
                    sources.join(", ")
                );
                self.cond(
                    ctypes::BLOCKED,
                    cstatus::TRUE,
                    reasons::ROLLBACK_BLOCKED_NO_LEGACY,
                    &msg,
                );
                return self.rollback_wait(reasons::ROLLBACK_BLOCKED_NO_LEGACY, msg);
            }
            let off: Vec<&String> = sources
                .iter()
                .filter(|s| self.obs.flipped.contains(*s))
                .collect();
            if legacy_present
                && self.policy.cutover == CutoverPolicy::PreferNoGap
                && !off.is_empty()
            {
                let names: Vec<&str> = off.iter().map(|s| s.as_str()).collect();
                let msg = format!(
                    "waiting for the plan to switch the workspace legacy stream of {} back on before removing association {} (PreferNoGap)",
                    names.join(", "),
                    a.name
                );
                return self.rollback_wait(reasons::ROLLBACK_WAITING_FOR_LEGACY, msg);
            }
            self.cond(ctypes::BLOCKED, cstatus::FALSE, reasons::ROLLING_BACK, "");
            return self.rollback_send(Action::RemoveAssociation {
                association_name: a.name.clone(),
            });
        }
        if self.marker(reasons::TYPE_AMA_INSTALLED_BY_MIGRATOR) && self.obs.ama.state.is_present() {
            let name = self.obs.ama.name.clone().unwrap_or_else(|| {
                crate::inventory::AgentKind::Ama
                    .extension_type(self.spec.os)
                    .into()
            });
            let remove = Action::RemoveAma {
                extension_name: name,
            };
            return match self.obs.ama.state {
                ExtensionState::Provisioning => self.transitioning(false, None),
                ExtensionState::Deleting => self.transitioning(true, Some(remove)),
                _ => self.rollback_send(remove),
            };
        }
        if !self.obs.ama.state.is_present() {
            self.cond(
                reasons::TYPE_AMA_INSTALLED_BY_MIGRATOR,
                cstatus::FALSE,
                reasons::ROLLED_BACK,
                "no AMA extension installed by the migrator remains",
            );
        }
        let mut msg = String::from(
            "rollback complete: the migrator's DCR associations and AMA install are removed and the legacy path is kept; the plan restores switched-off workspace streams",
        );
        if legacy_removed_by_us && !legacy_present {
            msg.push_str(
                "; the migrator had removed the legacy agent and reinstalling it is out of scope: reinstall MMA/OMS on this machine if it must send through the legacy path",
            );
        }
        let newly = crate::api::conditions::find(&self.s.conditions, ctypes::READY)
            .is_none_or(|c| c.reason != reasons::ROLLED_BACK);
        if newly {
            self.event(EventType::Normal, reasons::ROLLED_BACK, msg.clone());
        }
        self.cond(ctypes::READY, cstatus::FALSE, reasons::ROLLED_BACK, &msg);
        self.cond(ctypes::BLOCKED, cstatus::FALSE, reasons::ROLLED_BACK, "");
        self.rollback_wait(reasons::ROLLED_BACK, msg)
    }
}
