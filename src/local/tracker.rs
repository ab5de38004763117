//! The migration tracker: where a fleet stands, computed from `MachineMigration` objects alone
//! (pure, no I/O), so `status`, `simulate` and the Kubernetes shell report it the same way.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::api::MachineMigration;
use crate::api::conditions::{self, types};
use crate::api::machine::{MachineStep, StepPhase};
use crate::api::plan::Agent;

/// Machine names listed per failure code or block reason (the rest are counted).
const EXAMPLES: usize = 5;

/// Which agents send (or, machine-wide, are present).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    LegacyOnly,
    AmaOnly,
    Both,
    None,
    /// Nothing observed yet.
    Unobserved,
}

impl AgentState {
    pub fn from_senders(senders: &[Agent]) -> Self {
        let legacy = senders.contains(&Agent::Legacy);
        let ama = senders.contains(&Agent::Ama);
        match (legacy, ama) {
            (true, true) => Self::Both,
            (true, false) => Self::LegacyOnly,
            (false, true) => Self::AmaOnly,
            (false, false) => Self::None,
        }
    }

    /// Parse the `status.agents` column (`Legacy`, `AMA`, `Legacy+AMA`, `None`).
    pub fn from_agents_label(label: &str) -> Self {
        let lower = label.to_ascii_lowercase();
        let parts: Vec<&str> = lower
            .split(['+', ',', ' '])
            .filter(|p| !p.is_empty())
            .collect();
        let legacy = parts.iter().any(|p| matches!(*p, "legacy" | "mma" | "oms"));
        let ama = parts.contains(&"ama");
        match (legacy, ama) {
            (true, true) => Self::Both,
            (true, false) => Self::LegacyOnly,
            (false, true) => Self::AmaOnly,
            (false, false) if parts.contains(&"none") => Self::None,
            (false, false) => Self::Unobserved,
        }
    }
}

/// Counts of machines per agent state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentCounts {
    pub legacy_only: u32,
    pub ama_only: u32,
    pub both: u32,
    pub none: u32,
    pub unobserved: u32,
}

impl AgentCounts {
    fn add(&mut self, state: AgentState) {
        match state {
            AgentState::LegacyOnly => self.legacy_only += 1,
            AgentState::AmaOnly => self.ama_only += 1,
            AgentState::Both => self.both += 1,
            AgentState::None => self.none += 1,
            AgentState::Unobserved => self.unobserved += 1,
        }
    }
}

/// One data source across the fleet: who should send it, who does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DataSourceCounts {
    pub desired_ama: u32,
    pub desired_legacy: u32,
    pub senders: AgentCounts,
    /// Machines whose observed senders are exactly the desired agent.
    pub on_target: u32,
}

/// Machines of one wave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaveCounts {
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    pub blocked: u32,
    pub in_progress: u32,
    pub pending: u32,
}

/// Failed machines sharing an ARM error code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    pub code: String,
    pub machines: u32,
    /// A message seen with this code.
    pub message: String,
    pub examples: Vec<String>,
}

/// Blocked machines sharing a reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockGroup {
    pub reason: String,
    pub machines: u32,
    pub message: String,
    pub examples: Vec<String>,
}

/// Where a set of machines stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackerSummary {
    pub machines: u32,
    pub completed: u32,
    pub failed: u32,
    pub blocked: u32,
    pub in_progress: u32,
    pub pending: u32,
    /// Agents present per machine (`status.agents`, else the union of observed senders).
    pub agents: AgentCounts,
    /// Per plan data source name.
    pub data_sources: BTreeMap<String, DataSourceCounts>,
    pub by_step: BTreeMap<MachineStep, u32>,
    pub by_wave: BTreeMap<String, WaveCounts>,
    /// Largest group first.
    pub failures: Vec<FailureGroup>,
    /// Largest group first.
    pub blocks: Vec<BlockGroup>,
}

/// Summarise machines (any set: one plan, one wave, a whole file).
pub fn summarize<'a>(machines: impl IntoIterator<Item = &'a MachineMigration>) -> TrackerSummary {
    let mut s = TrackerSummary::default();
    let mut failures: BTreeMap<String, FailureGroup> = BTreeMap::new();
    let mut blocks: BTreeMap<String, BlockGroup> = BTreeMap::new();
    for m in machines {
        let name = m.metadata.name.clone().unwrap_or_default();
        let status = m.status.clone().unwrap_or_default();
        let step = status.step.unwrap_or(MachineStep::Pending);
        s.machines += 1;
        *s.by_step.entry(step).or_default() += 1;
        let wave = s.by_wave.entry(m.spec.wave.clone()).or_default();
        wave.total += 1;
        match step.phase() {
            StepPhase::Pending => {
                s.pending += 1;
                wave.pending += 1;
            }
            StepPhase::InProgress => {
                s.in_progress += 1;
                wave.in_progress += 1;
            }
            StepPhase::Done => {
                s.completed += 1;
                wave.done += 1;
            }
            StepPhase::Failed => {
                s.failed += 1;
                wave.failed += 1;
                let (code, message) = status
                    .last_error
                    .as_ref()
                    .map(|e| (e.code.clone(), e.message.clone()))
                    .unwrap_or_else(|| ("Unknown".into(), String::new()));
                let group = failures.entry(code.clone()).or_insert(FailureGroup {
                    code,
                    machines: 0,
                    message,
                    examples: Vec::new(),
                });
                group.machines += 1;
                if group.examples.len() < EXAMPLES {
                    group.examples.push(name.clone());
                }
            }
            StepPhase::Blocked => {
                s.blocked += 1;
                wave.blocked += 1;
                let (reason, message) = conditions::find(&status.conditions, types::BLOCKED)
                    .filter(|c| c.status == conditions::status::TRUE)
                    .map(|c| (c.reason.clone(), c.message.clone()))
                    .unwrap_or_else(|| ("Unknown".into(), String::new()));
                let group = blocks.entry(reason.clone()).or_insert(BlockGroup {
                    reason,
                    machines: 0,
                    message,
                    examples: Vec::new(),
                });
                group.machines += 1;
                if group.examples.len() < EXAMPLES {
                    group.examples.push(name.clone());
                }
            }
        }

        let mut all_senders: Vec<Agent> = Vec::new();
        for ds in &m.spec.data_sources {
            let counts = s.data_sources.entry(ds.name.clone()).or_default();
            match ds.agent {
                Agent::Ama => counts.desired_ama += 1,
                Agent::Legacy => counts.desired_legacy += 1,
            }
            match status.observed_senders.iter().find(|o| o.name == ds.name) {
                Some(observed) => {
                    let state = AgentState::from_senders(&observed.senders);
                    counts.senders.add(state);
                    if observed.senders == [ds.agent] {
                        counts.on_target += 1;
                    }
                    all_senders.extend(&observed.senders);
                }
                None => counts.senders.add(AgentState::Unobserved),
            }
        }
        let present = match status.agents.as_deref() {
            Some(label) if AgentState::from_agents_label(label) != AgentState::Unobserved => {
                AgentState::from_agents_label(label)
            }
            _ if status.observed_senders.is_empty() => AgentState::Unobserved,
            _ => AgentState::from_senders(&all_senders),
        };
        s.agents.add(present);
    }
    s.failures = failures.into_values().collect();
    s.failures
        .sort_by(|a, b| b.machines.cmp(&a.machines).then(a.code.cmp(&b.code)));
    s.blocks = blocks.into_values().collect();
    s.blocks
        .sort_by(|a, b| b.machines.cmp(&a.machines).then(a.reason.cmp(&b.reason)));
    s
}

/// One table of grouped machines (failures by code, blocks by reason); nothing when empty.
fn push_group_table<'a, M: std::fmt::Display>(
    out: &mut String,
    title: &str,
    groups: impl ExactSizeIterator<Item = (&'a String, M, &'a String, &'a Vec<String>)>,
) {
    if groups.len() == 0 {
        return;
    }
    out.push('\n');
    let mut rows = vec![
        [title, "MACHINES", "MESSAGE", "EXAMPLES"]
            .map(String::from)
            .to_vec(),
    ];
    for (key, machines, message, examples) in groups {
        rows.push(vec![
            key.clone(),
            machines.to_string(),
            message.clone(),
            examples.join(", "),
        ]);
    }
    out.push_str(&render_columns(&rows));
}

/// Left-aligned columns, two spaces apart.
pub fn render_columns(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn agent_cells(c: &AgentCounts) -> [String; 5] {
    [
        c.legacy_only.to_string(),
        c.ama_only.to_string(),
        c.both.to_string(),
        c.none.to_string(),
        c.unobserved.to_string(),
    ]
}

/// The tracker as text tables (what `status` and `simulate` print).
pub fn render_table(s: &TrackerSummary) -> String {
    let mut out = format!(
        "Machines: {}  completed {}  in progress {}  pending {}  failed {}  blocked {}\n\n",
        s.machines, s.completed, s.in_progress, s.pending, s.failed, s.blocked
    );
    let header = ["LEGACY ONLY", "AMA ONLY", "BOTH", "NONE", "UNOBSERVED"];
    let mut rows = vec![
        std::iter::once("AGENTS".to_string())
            .chain(header.iter().map(|h| h.to_string()))
            .collect::<Vec<_>>(),
    ];
    rows.push(
        std::iter::once("machines".to_string())
            .chain(agent_cells(&s.agents))
            .collect(),
    );
    out.push_str(&render_columns(&rows));
    if !s.data_sources.is_empty() {
        out.push('\n');
        let mut rows = vec![
            ["DATA SOURCE", "WANT AMA", "WANT LEGACY", "ON TARGET"]
                .iter()
                .chain(header.iter())
                .map(|h| h.to_string())
                .collect::<Vec<_>>(),
        ];
        for (name, c) in &s.data_sources {
            rows.push(
                [
                    name.clone(),
                    c.desired_ama.to_string(),
                    c.desired_legacy.to_string(),
                    c.on_target.to_string(),
                ]
                .into_iter()
                .chain(agent_cells(&c.senders))
                .collect(),
            );
        }
        out.push_str(&render_columns(&rows));
    }
    if !s.by_wave.is_empty() {
        out.push('\n');
        let mut rows = vec![
            [
                "WAVE",
                "TOTAL",
                "DONE",
                "IN PROGRESS",
                "PENDING",
                "FAILED",
                "BLOCKED",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for (name, w) in &s.by_wave {
            rows.push(vec![
                name.clone(),
                w.total.to_string(),
                w.done.to_string(),
                w.in_progress.to_string(),
                w.pending.to_string(),
                w.failed.to_string(),
                w.blocked.to_string(),
            ]);
        }
        out.push_str(&render_columns(&rows));
    }
    if !s.by_step.is_empty() {
        let steps: Vec<String> = s
            .by_step
            .iter()
            .map(|(step, n)| format!("{step:?} {n}"))
            .collect();
        let _ = writeln!(out, "\nSteps: {}", steps.join(", "));
    }
    push_group_table(
        &mut out,
        "FAILED (CODE)",
        s.failures
            .iter()
            .map(|f| (&f.code, f.machines, &f.message, &f.examples)),
    );
    push_group_table(
        &mut out,
        "BLOCKED (REASON)",
        s.blocks
            .iter()
            .map(|b| (&b.reason, b.machines, &b.message, &b.examples)),
    );
    out
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
