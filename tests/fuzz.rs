//! Fuzz targets, run for a bounded time on every `cargo test` (CI included): proptest at scale
//! rather than cargo-fuzz, which needs a nightly toolchain this project does not use.
//!
//! - `plan_pipeline`: the shipped example plan and inventory mutated at random (any field set to
//!   any value, removed, duplicated, keys added; the text cut or spliced with junk), then read
//!   (`load_plan`, `input_files::read_inventory`), validated and planned, and the report rendered.
//!   Nothing may panic; every refusal names a field under `spec`.
//! - `kql`: the simulator's KQL parser and evaluator on the queries the product really sends
//!   (`tests/fuzz/kql_seeds.txt`, recorded from a `simulate` run) mutated at random, and on token
//!   soup. Nothing may panic; every refusal is a `KqlError`.
//!
//! Each target runs batches of cases until its time is up: `AMA_MIGRATOR_FUZZ_SECONDS` (default
//! 60). A failing case is shrunk and written to `tests/fuzz.proptest-regressions`, which is replayed
//! first on every later run; the crashes found along the way are also kept as named tests below.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ama_migrator::api::load::{PlanLoadError, load_plan};
use ama_migrator::catalog::LegacyConfig;
use ama_migrator::input_files::{read_data_sources, read_heartbeat, read_inventory};
use ama_migrator::inventory::HeartbeatSender;
use ama_migrator::plan::{PlanInput, PlanProgress, PlanReport, plan};
use ama_migrator::sim::kql::{self, KqlError, RowGroup};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::Value;

const PLAN: &str = include_str!("../examples/plan.yaml");
const INVENTORY: &str = include_str!("../examples/inventory.json");
const HEARTBEAT: &str = include_str!("../examples/heartbeat.json");
const DATA_SOURCES: &str = include_str!("../examples/datasources.json");
const KQL_SEEDS: &str = include_str!("fuzz/kql_seeds.txt");

fn budget() -> Duration {
    let secs = std::env::var("AMA_MIGRATOR_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Run `test` on values of `strategy` in batches until the budget is spent; the first failure
/// (shrunk, and persisted for replay) fails the test. Returns how many cases ran.
fn run_for<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u64
where
    S::Value: std::fmt::Debug,
{
    let start = Instant::now();
    let budget = budget();
    const BATCH: u32 = 64;
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: BATCH,
            source_file: Some(file!()),
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
                "proptest-regressions",
            ))),
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        cases += u64::from(BATCH);
        if start.elapsed() >= budget {
            break;
        }
    }
    println!(
        "{name}: {cases} cases in {:.1} s, no failure",
        start.elapsed().as_secs_f64()
    );
    cases
}

// ------------------------------------------------------------------------------------------
// Plans

/// Values a field can be set to: the plan's own vocabulary, the bounds, and junk.
fn json_value() -> impl Strategy<Value = Value> {
    let words = prop::sample::select(vec![
        "", "0s", "1s", "59m", "1h", "24h", "366d", "367d", "18446744073709551615s",
        "9999999999999999d", "1h1h1h", "00:00", "23:59", "24:00", "25:00", "06:60", "AMA",
        "Legacy", "Low", "Medium", "High", "AzureVM", "ArcServer", "Mon", "Sun",
        "WindowsSecurityEvents", "LinuxCef", "WindowsFirewallLogs", "Common", "All",
        "PreferNoGap", "PreferNoDuplicate", "AfterAllCovered", "Never", "WhenUnused",
        "/subscriptions/11111111-1111-1111-1111-111111111111",
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-sentinel/providers/Microsoft.OperationalInsights/workspaces/law-sentinel-poc",
        "/subscriptions//resourceGroups/x", "westeurope", "eastus", "canary", "low", "a-b",
        "💥", "\u{0}", "Ω≈ç√", "-", "*",
    ])
    .prop_map(|s| Value::String(s.to_string()));
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            32,
            33,
            64,
            65,
            100,
            101,
            10_000,
            10_001,
            65_536,
            1_000_001,
            i64::from(u32::MAX) + 1,
            i64::MIN,
            i64::MAX,
        ])
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        words,
        "\\PC{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, Value),
    Remove(usize),
    AddKey(usize, String, Value),
    Duplicate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => (any::<usize>(), "[a-zA-Z]{1,16}", json_value())
            .prop_map(|(i, k, v)| Mutation::AddKey(i, k, v)),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
    ]
}

/// Every JSON pointer in `doc` (the root excluded).
fn pointers(doc: &Value, at: String, out: &mut Vec<String>) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

fn split(pointer: &str) -> (&str, String) {
    let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    (parent, last.replace("~1", "/").replace("~0", "~"))
}

fn apply(doc: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    if all.is_empty() {
        return;
    }
    let pick = |i: usize| all[i % all.len()].clone();
    match m {
        Mutation::Set(i, v) => {
            if let Some(t) = doc.pointer_mut(&pick(*i)) {
                *t = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let p = pick(*i);
            let (parent, last) = split(&p);
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(k) = last.parse::<usize>()
                        && k < items.len()
                    {
                        items.remove(k);
                    }
                }
                _ => {}
            }
        }
        Mutation::AddKey(i, key, v) => match doc.pointer_mut(&pick(*i)) {
            Some(Value::Object(map)) => {
                map.insert(key.clone(), v.clone());
            }
            Some(Value::Array(items)) => items.push(v.clone()),
            _ => {}
        },
        Mutation::Duplicate(i) => {
            let p = pick(*i);
            let (parent, _) = split(&p);
            let copy = doc.pointer(&p).cloned();
            if let (Some(Value::Array(items)), Some(copy)) = (doc.pointer_mut(parent), copy) {
                items.push(copy);
            }
        }
    }
}

#[derive(Clone, Debug)]
enum PlanCase {
    /// Mutations of the plan and of the inventory, written as JSON (`yaml`: as YAML).
    Mutated {
        plan: Vec<Mutation>,
        inventory: Vec<Mutation>,
        yaml: bool,
    },
    /// The example's text cut at `cut` and `junk` spliced in at `at`.
    Text { cut: usize, at: usize, junk: String },
}

fn plan_case() -> impl Strategy<Value = PlanCase> {
    prop_oneof![
        6 => (
            prop::collection::vec(mutation(), 1..6),
            prop::collection::vec(mutation(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(plan, inventory, yaml)| PlanCase::Mutated { plan, inventory, yaml }),
        1 => (any::<usize>(), any::<usize>(), "\\PC{0,8}|[\\[\\]{}:&*!|>\\-'\" \\t\\n]{1,6}")
            .prop_map(|(cut, at, junk)| PlanCase::Text { cut, at, junk }),
    ]
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

struct Fixed {
    plan: Value,
    inventory: Value,
    heartbeat: Vec<HeartbeatSender>,
    legacy: LegacyConfig,
}

fn fixed() -> Fixed {
    Fixed {
        plan: serde_saphyr::from_str(PLAN).expect("the example plan parses"),
        inventory: serde_json::from_str(INVENTORY).expect("the example inventory parses"),
        heartbeat: read_heartbeat(HEARTBEAT).expect("the example Heartbeat export reads"),
        legacy: read_data_sources(DATA_SOURCES).expect("the example dataSources read"),
    }
}

fn check_plan_case(fx: &Fixed, case: PlanCase) -> Result<(), TestCaseError> {
    let (text, inventory_text) = match &case {
        PlanCase::Mutated {
            plan,
            inventory,
            yaml,
        } => {
            let mut doc = fx.plan.clone();
            for m in plan {
                apply(&mut doc, m);
            }
            let mut inv = fx.inventory.clone();
            for m in inventory {
                apply(&mut inv, m);
            }
            let text = if *yaml {
                serde_saphyr::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?
            } else {
                doc.to_string()
            };
            (text, inv.to_string())
        }
        PlanCase::Text { cut, at, junk } => {
            let cut = floor_boundary(PLAN, *cut % (PLAN.len() + 1));
            let mut text = PLAN[..cut].to_string();
            let at = floor_boundary(&text, *at % (text.len() + 1));
            text.insert_str(at, junk);
            (text, INVENTORY.to_string())
        }
    };
    let loaded = match load_plan(&text) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.trim().is_empty());
            // The schema check (what an API server enforces) catches everything the types would
            // refuse: a document it passes always deserializes.
            prop_assert!(!matches!(e, PlanLoadError::Shape(_)), "{msg}");
            if let PlanLoadError::Schema(v) = &e {
                prop_assert!(!v.is_empty());
                for v in v {
                    prop_assert!(!v.path.is_empty() && !v.problem.is_empty(), "{v}");
                }
            }
            return Ok(());
        }
    };
    let inventory = match read_inventory(&inventory_text) {
        Ok(i) => i,
        Err(e) => {
            prop_assert!(!e.to_string().trim().is_empty());
            return Ok(());
        }
    };
    let states = HashMap::new();
    let progress = PlanProgress::default();
    let input = PlanInput {
        plan_name: "fuzz",
        spec: &loaded.spec,
        inventory: &inventory,
        heartbeat: &fx.heartbeat,
        legacy: &fx.legacy,
        states: &states,
        progress: &progress,
        other_plans: &[],
        now: "2026-11-25T22:00:00Z".parse().expect("a timestamp"),
    };
    let outcome = plan(&input);
    for e in &outcome.errors {
        prop_assert!(e.field.starts_with("spec"), "{e}");
        prop_assert!(!e.fix.is_empty(), "{e}");
    }
    if outcome.refused() {
        prop_assert!(outcome.machines.iter().all(|m| m.actions.is_empty()));
    }
    // What `migrate` refuses on the spec alone, the planner refuses too.
    for e in ama_migrator::plan::spec_errors(&loaded.spec) {
        prop_assert!(outcome.errors.contains(&e), "{e}");
    }
    let report = PlanReport::build(&input, &outcome);
    let _ = report.to_table();
    serde_json::to_string(&report).map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

#[test]
fn fuzz_plan_pipeline() {
    let fx = fixed();
    let cases = run_for("plan pipeline", plan_case(), |case| {
        check_plan_case(&fx, case)
    });
    assert!(cases > 0);
}

// ------------------------------------------------------------------------------------------
// KQL

fn kql_groups() -> Vec<RowGroup> {
    let mut out = Vec::new();
    for (table, computer, category) in [
        ("Heartbeat", "vm-1", "Direct Agent"),
        ("Heartbeat", "vm-2", "Azure Monitor Agent"),
        ("SecurityEvent", "vm-1", ""),
        ("Syslog", "lx-1", ""),
    ] {
        let mut cols = BTreeMap::new();
        for (k, v) in [
            ("Computer", computer),
            (
                "_ResourceId",
                "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm-1",
            ),
            ("Category", category),
            ("OSType", "Windows"),
            ("EventLog", "System"),
        ] {
            cols.insert(k.to_string(), v.to_string());
        }
        out.push(RowGroup {
            table: table.into(),
            cols,
            first: 0,
            end: 600,
        });
    }
    out
}

#[derive(Clone, Debug)]
enum KqlEdit {
    Delete(usize, usize),
    Insert(usize, String),
    Swap(usize, usize),
    Repeat(usize, usize, u8),
}

const SOUP: &[&str] = &[
    "Heartbeat",
    "Event",
    "|",
    "where",
    "summarize",
    "count",
    "count()",
    "take",
    "limit",
    "by",
    "and",
    "or",
    "not",
    "(",
    ")",
    "((",
    "))",
    ",",
    "==",
    "!=",
    "=~",
    "!~",
    "=",
    ">",
    ">=",
    "<",
    "<=",
    "in",
    "in~",
    "!in",
    "!",
    "Computer",
    "_ResourceId",
    "Category",
    "TimeGenerated",
    "ago",
    "ago(",
    "now",
    "now()",
    "datetime(",
    "1d",
    "15m",
    "5",
    "99999999999999999999",
    "-1",
    "'a'",
    "\"b\"",
    "'",
    "\"",
    "\\",
    "max",
    "max(",
    "min",
    "dcount",
    "dcount(",
    "bin(",
    "union",
    "project",
    "extend",
    "n",
    "//",
    "\n",
    "é",
    "\u{0}",
    "💥",
    "datetime(2025-06-02T08:00:00Z)",
    "ago(1h)",
    "m",
    "s",
];

/// A KQL input: a product query with edits, token soup, unbalanced nesting, or any text.
#[derive(Clone, Debug)]
enum KqlCase {
    Seed(usize, Vec<KqlEdit>),
    Soup(Vec<&'static str>, bool),
    Nesting(usize, usize, &'static str),
    Text(String),
}

fn kql_case() -> impl Strategy<Value = KqlCase> {
    let edit = prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(a, n)| KqlEdit::Delete(a, n)),
        (
            any::<usize>(),
            prop_oneof![
                prop::sample::select(SOUP).prop_map(str::to_string),
                "\\PC{0,6}"
            ]
        )
            .prop_map(|(a, s)| KqlEdit::Insert(a, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| KqlEdit::Swap(a, b)),
        (any::<usize>(), 1usize..16, any::<u8>()).prop_map(|(a, n, k)| KqlEdit::Repeat(a, n, k)),
    ];
    prop_oneof![
        6 => (any::<usize>(), prop::collection::vec(edit, 0..6))
            .prop_map(|(i, e)| KqlCase::Seed(i, e)),
        2 => (prop::collection::vec(prop::sample::select(SOUP), 0..40), any::<bool>())
            .prop_map(|(t, spaced)| KqlCase::Soup(t, spaced)),
        1 => (0usize..5_000, 0usize..5_000, prop::sample::select(SOUP))
            .prop_map(|(open, close, mid)| KqlCase::Nesting(open, close, mid)),
        1 => any::<String>().prop_map(KqlCase::Text),
    ]
}

fn kql_text(case: &KqlCase, seeds: &[&str]) -> String {
    match case {
        KqlCase::Seed(i, edits) => edit_query(seeds[i % seeds.len()], edits),
        KqlCase::Soup(toks, spaced) => toks.join(if *spaced { " " } else { "" }),
        KqlCase::Nesting(open, close, mid) => format!(
            "Heartbeat | where {}Computer == 'a' {mid} {}",
            "(".repeat(*open),
            ")".repeat(*close)
        ),
        KqlCase::Text(t) => t.clone(),
    }
}

fn seeds() -> Vec<&'static str> {
    KQL_SEEDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn edit_query(seed: &str, edits: &[KqlEdit]) -> String {
    let mut q = seed.to_string();
    for e in edits {
        let at = |i: usize, q: &str| floor_boundary(q, i % (q.len() + 1));
        match e {
            KqlEdit::Delete(a, n) => {
                let s = at(*a, &q);
                let end = floor_boundary(&q, s + n);
                q.replace_range(s..end, "");
            }
            KqlEdit::Insert(a, s) => {
                let i = at(*a, &q);
                q.insert_str(i, s);
            }
            KqlEdit::Swap(a, b) => {
                let (i, j) = (at(*a, &q), at(*b, &q));
                let (i, j) = (i.min(j), i.max(j));
                let (head, rest) = q.split_at(i);
                let (mid, tail) = rest.split_at(j - i);
                q = format!("{head}{tail}{mid}");
            }
            KqlEdit::Repeat(a, n, k) => {
                let s = at(*a, &q);
                let end = floor_boundary(&q, s + n);
                let piece = q[s..end].repeat(usize::from(*k % 8) + 1);
                q.replace_range(s..end, &piece);
            }
        }
    }
    q
}

/// Parse, and when it parses evaluate over a few rows: an answer, never a panic; a refusal is a
/// `KqlError` (the simulator's 400), and nesting is refused at its bound.
fn parse_and_evaluate(q: &str, groups: &[RowGroup]) -> Result<(), TestCaseError> {
    match kql::parse(q) {
        Ok(parsed) => {
            let _ = kql::evaluate(
                &parsed,
                groups,
                36_000_000,
                &ama_migrator::sim::logs::schema,
            );
        }
        Err(KqlError::TooDeep { limit, .. }) => prop_assert_eq!(limit, kql::MAX_NESTING_DEPTH),
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn fuzz_kql() {
    let seeds = seeds();
    assert!(
        seeds.len() >= 3,
        "tests/fuzz/kql_seeds.txt holds the product's queries"
    );
    let groups = kql_groups();
    let cases = run_for("kql", kql_case(), |case| {
        let q = kql_text(&case, &seeds);
        parse_and_evaluate(&q, &groups)?;
        if matches!(case, KqlCase::Soup(..) | KqlCase::Text(_)) {
            parse_and_evaluate(&format!("Heartbeat | where {q}"), &groups)?;
        }
        Ok(())
    });
    assert!(cases > 0);
}

/// The crash that started the nesting bound: 3,000 nested parentheses (6 KB) overflowed the
/// parser's stack and killed the simulator.
#[test]
fn regression_3000_nested_parentheses_overflowed_the_stack() {
    let q = format!(
        "Heartbeat | where {}Computer == 'a'{} | count",
        "(".repeat(3_000),
        ")".repeat(3_000)
    );
    assert_eq!(
        kql::parse(&q).expect_err("too deep"),
        KqlError::TooDeep {
            pos: "Heartbeat | where ".len() + kql::MAX_NESTING_DEPTH,
            limit: kql::MAX_NESTING_DEPTH
        }
    );
}

/// Every seed is a query the simulator answers: the mutations start from valid ground.
#[test]
fn the_kql_seeds_are_valid() {
    let groups = kql_groups();
    for q in seeds() {
        let parsed = kql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        kql::evaluate(
            &parsed,
            &groups,
            36_000_000,
            &ama_migrator::sim::logs::schema,
        )
        .unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}
