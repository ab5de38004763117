//! The ingestion ledger (design.md §2): which agent delivers which stream from which machine into which
//! workspace, kept as intervals between state changes, and per (machine, data source) of the plan's
//! workspace the count of duplicate minutes (2 senders) and gap minutes (0 senders while wanted).
//!
//! A simulated minute `k` (starting at `k × 60 s`) takes the state in force at its first instant, so an
//! interval `[a, b)` covers the minutes whose start lies in it. Nothing loops per minute.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::DataSourceType;

#[cfg(test)]
use super::clock::MINUTE_MS;
use super::clock::SimMillis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Agent {
    Legacy,
    Ama,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Stream {
    Data(DataSourceType),
    Heartbeat,
}

/// A stream one agent sends from one machine into one workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub ws: usize,
    pub stream: Stream,
    pub agent: Agent,
}

/// Minutes whose start lies in `[a, b)`.
pub fn minutes_between(a: SimMillis, b: SimMillis) -> i64 {
    if b <= a {
        return 0;
    }
    super::clock::ceil_minute(b) - super::clock::ceil_minute(a)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairCounts {
    /// Wanted minutes with two senders.
    pub duplicate_minutes: i64,
    /// Wanted minutes with no sender.
    pub gap_minutes: i64,
    /// Wanted minutes with exactly one sender.
    pub single_minutes: i64,
    /// Minutes delivered while the pair was not wanted.
    pub unwanted_minutes: i64,
    pub legacy_minutes: i64,
    pub ama_minutes: i64,
}

impl PairCounts {
    fn add(&mut self, wanted: bool, legacy: bool, ama: bool, minutes: i64) {
        if minutes <= 0 {
            return;
        }
        let n = legacy as u8 + ama as u8;
        if wanted {
            match n {
                0 => self.gap_minutes += minutes,
                1 => self.single_minutes += minutes,
                _ => self.duplicate_minutes += minutes,
            }
        } else if n > 0 {
            self.unwanted_minutes += minutes;
        }
        if legacy {
            self.legacy_minutes += minutes;
        }
        if ama {
            self.ama_minutes += minutes;
        }
    }
    fn merge(&mut self, o: &PairCounts) {
        self.duplicate_minutes += o.duplicate_minutes;
        self.gap_minutes += o.gap_minutes;
        self.single_minutes += o.single_minutes;
        self.unwanted_minutes += o.unwanted_minutes;
        self.legacy_minutes += o.legacy_minutes;
        self.ama_minutes += o.ama_minutes;
    }
}

#[derive(Clone, Debug)]
struct PairState {
    wanted: bool,
    since: SimMillis,
    legacy: bool,
    ama: bool,
    counts: PairCounts,
}

impl PairState {
    fn counts_at(&self, now: SimMillis) -> PairCounts {
        let mut c = self.counts;
        c.add(
            self.wanted,
            self.legacy,
            self.ama,
            minutes_between(self.since, now),
        );
        c
    }
}

/// A closed interval of one stream.
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub machine: usize,
    pub key: StreamKey,
    pub start: SimMillis,
    pub end: SimMillis,
}

#[derive(Debug)]
pub struct Ledger {
    /// The plan's (production) workspace, whose pairs are counted.
    prod_ws: usize,
    started: SimMillis,
    open: Vec<BTreeMap<StreamKey, SimMillis>>,
    closed: Vec<Interval>,
    pairs: BTreeMap<(usize, DataSourceType), PairState>,
}

/// One (machine, data source) of the production workspace.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairReport {
    pub machine: usize,
    pub data_source: DataSourceType,
    pub wanted: bool,
    /// Agents delivering right now.
    pub senders: Vec<Agent>,
    #[serde(flatten)]
    pub counts: PairCounts,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerTotals {
    pub pairs: usize,
    pub wanted_pairs: usize,
    pub pairs_with_duplicates: usize,
    pub pairs_with_gaps: usize,
    pub pairs_with_unwanted: usize,
    pub currently_duplicated: usize,
    pub currently_missing: usize,
    #[serde(flatten)]
    pub counts: PairCounts,
}

impl Ledger {
    pub fn new(machines: usize, prod_ws: usize, start: SimMillis) -> Self {
        Self {
            prod_ws,
            started: start,
            open: vec![BTreeMap::new(); machines],
            closed: Vec::new(),
            pairs: BTreeMap::new(),
        }
    }

    pub fn started(&self) -> SimMillis {
        self.started
    }

    /// Register a (machine, data source) the machine produces (so its minutes are tracked).
    pub fn track(&mut self, machine: usize, ds: DataSourceType, t: SimMillis) {
        self.pairs.entry((machine, ds)).or_insert(PairState {
            wanted: false,
            since: t,
            legacy: false,
            ama: false,
            counts: PairCounts::default(),
        });
    }

    /// Set the machine's active streams as of time `t`.
    pub fn update(&mut self, t: SimMillis, machine: usize, active: &BTreeSet<StreamKey>) {
        let open = &mut self.open[machine];
        let ended: Vec<StreamKey> = open
            .keys()
            .filter(|k| !active.contains(k))
            .copied()
            .collect();
        for key in ended {
            if let Some(start) = open.remove(&key) {
                self.closed.push(Interval {
                    machine,
                    key,
                    start,
                    end: t,
                });
            }
        }
        for key in active {
            open.entry(*key).or_insert(t);
        }
        let prod = self.prod_ws;
        for ((_, ds), st) in self.pairs.range_mut(
            (machine, DataSourceType::ALL[0])
                ..=(machine, DataSourceType::ALL[DataSourceType::ALL.len() - 1]),
        ) {
            let has = |agent| {
                active.contains(&StreamKey {
                    ws: prod,
                    stream: Stream::Data(*ds),
                    agent,
                })
            };
            let (legacy, ama) = (has(Agent::Legacy), has(Agent::Ama));
            if (legacy, ama) != (st.legacy, st.ama) {
                st.counts
                    .add(st.wanted, st.legacy, st.ama, minutes_between(st.since, t));
                st.since = t;
                st.legacy = legacy;
                st.ama = ama;
            }
        }
    }

    /// Mark every tracked pair that is delivered now as wanted (scenario start).
    pub fn want_delivered(&mut self) {
        for st in self.pairs.values_mut() {
            st.wanted = st.legacy || st.ama;
        }
    }

    /// Mark a pair wanted or not from `t` on; false if the machine does not produce it.
    pub fn set_wanted(
        &mut self,
        t: SimMillis,
        machine: usize,
        ds: DataSourceType,
        wanted: bool,
    ) -> bool {
        match self.pairs.get_mut(&(machine, ds)) {
            Some(st) => {
                st.counts
                    .add(st.wanted, st.legacy, st.ama, minutes_between(st.since, t));
                st.since = t;
                st.wanted = wanted;
                true
            }
            None => false,
        }
    }

    pub fn pair_reports(&self, now: SimMillis) -> Vec<PairReport> {
        self.pairs
            .iter()
            .map(|((m, ds), st)| PairReport {
                machine: *m,
                data_source: *ds,
                wanted: st.wanted,
                senders: [(st.legacy, Agent::Legacy), (st.ama, Agent::Ama)]
                    .into_iter()
                    .filter(|x| x.0)
                    .map(|x| x.1)
                    .collect(),
                counts: st.counts_at(now),
            })
            .collect()
    }

    pub fn totals(&self, now: SimMillis) -> (LedgerTotals, BTreeMap<DataSourceType, PairCounts>) {
        let mut t = LedgerTotals::default();
        let mut by_ds: BTreeMap<DataSourceType, PairCounts> = BTreeMap::new();
        for p in self.pair_reports(now) {
            t.pairs += 1;
            t.wanted_pairs += p.wanted as usize;
            t.pairs_with_duplicates += (p.counts.duplicate_minutes > 0) as usize;
            t.pairs_with_gaps += (p.counts.gap_minutes > 0) as usize;
            t.pairs_with_unwanted += (p.counts.unwanted_minutes > 0) as usize;
            t.currently_duplicated += (p.wanted && p.senders.len() > 1) as usize;
            t.currently_missing += (p.wanted && p.senders.is_empty()) as usize;
            t.counts.merge(&p.counts);
            by_ds.entry(p.data_source).or_default().merge(&p.counts);
        }
        (t, by_ds)
    }

    /// Every interval of workspace `ws` (open ones end at `now`).
    pub fn intervals(&self, ws: usize, now: SimMillis) -> Vec<Interval> {
        let mut out: Vec<Interval> = self
            .closed
            .iter()
            .filter(|i| i.key.ws == ws)
            .copied()
            .collect();
        for (machine, open) in self.open.iter().enumerate() {
            for (key, start) in open {
                if key.ws == ws && *start < now {
                    out.push(Interval {
                        machine,
                        key: *key,
                        start: *start,
                        end: now,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(agent: Agent) -> StreamKey {
        StreamKey {
            ws: 0,
            stream: Stream::Data(DataSourceType::LinuxSyslog),
            agent,
        }
    }

    #[test]
    fn minutes_count_minute_starts_in_interval() {
        assert_eq!(minutes_between(0, 60_000), 1);
        assert_eq!(minutes_between(0, 60_001), 2);
        assert_eq!(minutes_between(1, 60_000), 0);
        assert_eq!(minutes_between(30_000, 200_000), 3);
    }

    #[test]
    fn duplicates_and_gaps_are_integrated_over_intervals() {
        let mut l = Ledger::new(1, 0, 0);
        l.track(0, DataSourceType::LinuxSyslog, 0);
        l.update(0, 0, &[key(Agent::Legacy)].into());
        l.want_delivered();
        l.update(
            10 * MINUTE_MS,
            0,
            &[key(Agent::Legacy), key(Agent::Ama)].into(),
        );
        l.update(15 * MINUTE_MS, 0, &BTreeSet::new());
        let r = &l.pair_reports(18 * MINUTE_MS)[0];
        assert_eq!(r.counts.single_minutes, 10);
        assert_eq!(r.counts.duplicate_minutes, 5);
        assert_eq!(r.counts.gap_minutes, 3);
        assert_eq!(r.counts.legacy_minutes, 15);
        assert_eq!(r.counts.ama_minutes, 5);
        assert_eq!(l.intervals(0, 18 * MINUTE_MS).len(), 2);
        l.set_wanted(18 * MINUTE_MS, 0, DataSourceType::LinuxSyslog, false);
        assert_eq!(l.pair_reports(30 * MINUTE_MS)[0].counts.gap_minutes, 3);
    }
}
