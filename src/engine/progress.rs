//! Live progress on stderr with indicatif: a bar per wave, machines by step, and the ARM budget
//! (requests sent and throttled). Only shown when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::azure::ArmClient;

use super::run::{ProgressSink, Snapshot};

pub struct Bars {
    multi: MultiProgress,
    waves: Mutex<Vec<ProgressBar>>,
    steps: ProgressBar,
    budget: ProgressBar,
    client: ArmClient,
}

impl Bars {
    /// `None` when stderr is not a terminal (CI logs, pipes): nothing is drawn.
    pub fn for_stderr(client: ArmClient) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let line = ProgressStyle::with_template("{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let steps = multi.add(ProgressBar::new_spinner().with_style(line.clone()));
        let budget = multi.add(ProgressBar::new_spinner().with_style(line));
        Some(Self {
            multi,
            waves: Mutex::new(Vec::new()),
            steps,
            budget,
            client,
        })
    }

    pub fn finish(&self) {
        for b in self.waves.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            b.finish();
        }
        self.steps.finish();
        self.budget.finish();
        let _ = self.multi.clear();
    }
}

impl ProgressSink for Bars {
    fn update(&self, s: &Snapshot) {
        let mut waves = self.waves.lock().unwrap_or_else(|e| e.into_inner());
        while waves.len() < s.waves.len() {
            let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let i = waves.len();
            let bar = self.multi.insert(
                i,
                ProgressBar::new(0)
                    .with_style(style)
                    .with_prefix(s.waves[i].0.clone()),
            );
            waves.push(bar);
        }
        for (bar, (_, total, done)) in waves.iter().zip(&s.waves) {
            bar.set_length(*total as u64);
            bar.set_position(*done as u64);
        }
        let steps: Vec<String> = s.by_step.iter().map(|(k, v)| format!("{k} {v}")).collect();
        self.steps
            .set_message(format!("machines: {}", steps.join(" · ")));
        let m = self.client.metrics();
        self.budget.set_message(format!(
            "ARM: {} reads, {} writes, {} deletes, {} throttled, {} in flight; flipped: {}",
            m.reads,
            m.writes,
            m.deletes,
            m.throttled,
            s.in_flight,
            if s.flipped.is_empty() {
                "none".to_string()
            } else {
                s.flipped
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
}
