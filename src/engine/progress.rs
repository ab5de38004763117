//! Live progress on stderr: on a terminal, indicatif bars (a bar per wave, machines by step, the
//! ARM budget); otherwise plain lines ([`Lines`]): one per wave phase change and a summary at a
//! fixed interval, so a log or a pipe shows the run while it runs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use k8s_openapi::jiff::Timestamp;

use crate::api::plan::WavePhase;
use crate::azure::{ArmClient, MetricsSnapshot};

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
            flipped_list(s)
        ));
    }
}

/// The progress display on stderr: bars on a terminal, plain lines otherwise (CI logs, pipes,
/// `migrate ... 2>&1 | tee run.log`).
pub enum StderrProgress {
    Bars(Bars),
    Lines(Lines),
}

impl StderrProgress {
    /// Bars when stderr is a terminal; otherwise [`Lines`] with a summary every `summary_every`.
    pub fn new(client: ArmClient, summary_every: Duration) -> Self {
        match Bars::for_stderr(client.clone()) {
            Some(bars) => Self::Bars(bars),
            None => Self::Lines(Lines::start(
                client,
                summary_every,
                Box::new(std::io::stderr()),
            )),
        }
    }

    pub fn finish(&self) {
        match self {
            Self::Bars(b) => b.finish(),
            Self::Lines(l) => l.finish(),
        }
    }
}

impl ProgressSink for StderrProgress {
    fn update(&self, s: &Snapshot) {
        match self {
            Self::Bars(b) => b.update(s),
            Self::Lines(l) => l.update(s),
        }
    }
}

/// Plain progress lines for a log: one when a wave changes phase (as soon as the engine's pass
/// sees it) and a summary of the latest pass every `summary_every` (from a timer thread, so a
/// line comes even while a long pass runs), and a last summary at [`Lines::finish`].
pub struct Lines {
    shared: Arc<Mutex<LinesState>>,
    /// Dropped by `finish` to end the timer thread.
    stop: Mutex<Option<mpsc::Sender<()>>>,
    timer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct LinesState {
    out: Box<dyn Write + Send>,
    client: ArmClient,
    /// Each wave's phase as last reported (a wave not seen yet is `Pending`).
    phases: BTreeMap<String, WavePhase>,
    last: Option<Snapshot>,
}

impl LinesState {
    fn write(&mut self, line: &str) {
        // Progress is best effort: a closed stderr must not stop the migration.
        let _ = writeln!(self.out, "{} {line}", now_secs());
        let _ = self.out.flush();
    }

    fn summary(&mut self) {
        let arm = self.client.metrics();
        let line = match &self.last {
            Some(s) => summary_line(s, &arm),
            // The first pass (discovery of a large inventory) can take minutes.
            None => format!(
                "machines: not counted yet (first pass: discovery); ARM: {} reads, {} writes, {} deletes, {} throttled",
                arm.reads, arm.writes, arm.deletes, arm.throttled
            ),
        };
        self.write(&line);
    }
}

fn now_secs() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn lock(m: &Mutex<LinesState>) -> std::sync::MutexGuard<'_, LinesState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lines {
    /// Start the summary timer; lines go to `out`.
    pub fn start(client: ArmClient, summary_every: Duration, out: Box<dyn Write + Send>) -> Self {
        let shared = Arc::new(Mutex::new(LinesState {
            out,
            client,
            phases: BTreeMap::new(),
            last: None,
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let every = summary_every.max(Duration::from_millis(100));
        let timer_state = shared.clone();
        let timer = std::thread::Builder::new()
            .name("progress-lines".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    lock(&timer_state).summary();
                }
            })
            .ok();
        Self {
            shared,
            stop: Mutex::new(Some(stop)),
            timer: Mutex::new(timer),
        }
    }

    /// Stop the timer and print the last summary.
    pub fn finish(&self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(t) = self.timer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        lock(&self.shared).summary();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl ProgressSink for Lines {
    fn update(&self, s: &Snapshot) {
        let mut st = lock(&self.shared);
        for line in wave_changes(&mut st.phases, s) {
            st.write(&line);
        }
        st.last = Some(s.clone());
    }
}

/// One line per wave whose phase differs from `seen` (updated to the snapshot's phases).
pub fn wave_changes(seen: &mut BTreeMap<String, WavePhase>, s: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, phase) in &s.wave_phases {
        let before = seen.get(name).copied().unwrap_or(WavePhase::Pending);
        if before == *phase {
            continue;
        }
        seen.insert(name.clone(), *phase);
        let (members, finished) = s
            .waves
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or((0, 0), |(_, m, f)| (*m, *f));
        let what = match phase {
            WavePhase::Pending => "is pending again".to_string(),
            WavePhase::Progressing => "started".to_string(),
            WavePhase::Soaking => "finished its machines and is soaking".to_string(),
            WavePhase::AwaitingApproval => format!(
                "waits for approval: run again with `--approve {name}` (operator: annotation amamigrator.io/approve-wave={name})"
            ),
            WavePhase::Completed => "completed".to_string(),
            WavePhase::Failed => {
                "failed its gates (success ratio): retry or fix its failed machines".to_string()
            }
            WavePhase::RolledBack => "was rolled back".to_string(),
        };
        lines.push(format!(
            "wave {name} {what} ({finished}/{members} machines finished)"
        ));
    }
    lines
}

/// Machines by step, done of total, and the ARM requests so far.
pub fn summary_line(s: &Snapshot, arm: &MetricsSnapshot) -> String {
    let done = s.by_step.get("Done").copied().unwrap_or(0);
    let steps: Vec<String> = s.by_step.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "machines: {done}/{} done; by step: {}; in flight {}; ARM: {} reads, {} writes, {} deletes, {} throttled; flipped: {}",
        s.machines,
        if steps.is_empty() {
            "none yet".to_string()
        } else {
            steps.join(", ")
        },
        s.in_flight,
        arm.reads,
        arm.writes,
        arm.deletes,
        arm.throttled,
        flipped_list(s)
    )
}

/// The legacy streams switched off so far, for a progress line (`none` before the first).
fn flipped_list(s: &Snapshot) -> String {
    if s.flipped.is_empty() {
        "none".to_string()
    } else {
        s.flipped
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(phases: &[(&str, WavePhase)]) -> Snapshot {
        Snapshot {
            machines: 4,
            by_step: [("Done".to_string(), 3), ("InstallAma".to_string(), 1)]
                .into_iter()
                .collect(),
            waves: phases.iter().map(|(n, _)| (n.to_string(), 2, 1)).collect(),
            wave_phases: phases.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            in_flight: 1,
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_wave_line_comes_once_per_phase_change() {
        let mut seen = BTreeMap::new();
        let first = wave_changes(
            &mut seen,
            &snap(&[
                ("canary", WavePhase::Progressing),
                ("rest", WavePhase::Pending),
            ]),
        );
        assert_eq!(first, vec!["wave canary started (1/2 machines finished)"]);
        assert!(
            wave_changes(
                &mut seen,
                &snap(&[
                    ("canary", WavePhase::Progressing),
                    ("rest", WavePhase::Pending)
                ])
            )
            .is_empty()
        );
        let next = wave_changes(
            &mut seen,
            &snap(&[
                ("canary", WavePhase::AwaitingApproval),
                ("rest", WavePhase::Pending),
            ]),
        );
        assert_eq!(next.len(), 1);
        assert!(
            next[0]
                .starts_with("wave canary waits for approval: run again with `--approve canary`"),
            "{next:?}"
        );
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_print_a_summary_per_interval_from_their_timer_and_a_last_one_at_finish() {
        let endpoints = crate::azure::Endpoints {
            arm: "http://127.0.0.1:9/".parse().unwrap(),
            log_analytics: "http://127.0.0.1:9/".parse().unwrap(),
        };
        let client = ArmClient::new(crate::azure::ClientConfig::new(
            endpoints,
            crate::azure::CredentialConfig::None,
        ))
        .unwrap();
        let out = Captured::default();
        let lines = Lines::start(client, Duration::from_millis(100), Box::new(out.clone()));
        // Before any pass: the timer still says something.
        std::thread::sleep(Duration::from_millis(150));
        lines.update(&snap(&[("canary", WavePhase::Progressing)]));
        std::thread::sleep(Duration::from_millis(250));
        lines.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let body: Vec<&str> = text
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest))
            .collect();
        assert!(
            body[0].starts_with("machines: not counted yet (first pass: discovery); ARM: 0 reads"),
            "{text}"
        );
        assert!(
            body.contains(&"wave canary started (1/2 machines finished)"),
            "{text}"
        );
        let summaries = body
            .iter()
            .filter(|l| l.starts_with("machines: 3/4 done"))
            .count();
        // Two or three from the timer in 250 ms at 100 ms, one from finish.
        assert!(summaries >= 3, "{text}");
        let after = text.lines().count();
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            String::from_utf8(out.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .count(),
            after,
            "the timer stopped at finish"
        );
    }

    #[test]
    fn the_summary_counts_steps_done_and_arm_requests() {
        let arm = MetricsSnapshot {
            reads: 10,
            writes: 4,
            deletes: 1,
            throttled: 2,
            ..MetricsSnapshot::default()
        };
        assert_eq!(
            summary_line(&snap(&[]), &arm),
            "machines: 3/4 done; by step: Done 3, InstallAma 1; in flight 1; ARM: 10 reads, 4 writes, 1 deletes, 2 throttled; flipped: none"
        );
    }
}
