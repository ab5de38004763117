//! A corpus of bad inputs run through the real binary, as a person would hand them over: plans,
//! inventories, Heartbeat exports and dataSources lists (`tests/bad_inputs/cases.yaml`). Each
//! case asserts the exit status (1 for a refused plan or input file, 2 for a usage mistake), that
//! nothing panicked, and that stderr names the field, line or entry that is wrong — and how to
//! fix it when the case says so.
//!
//! A case is the shipped example with one change (a JSON pointer set or removed, a text
//! replacement), a raw text, or a generated input (a plan with 100,000 waves, …). Every case runs
//! under a 20 s guard (a hang fails the case); the slowest cases' times are printed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

const CASES: &str = include_str!("bad_inputs/cases.yaml");
const GUARD: Duration = Duration::from_secs(20);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// plan, inventory, heartbeat or datasources: which file is bad.
    input: String,
    /// `plan` (default), `migrate`, `simulate`, `dcr` (`dcr from-workspace`) or `bare` (only
    /// `args`): the command the bad file is given to.
    #[serde(default)]
    command: Option<String>,
    /// JSON pointer → value, applied to the example document.
    #[serde(default)]
    set: Vec<(String, Value)>,
    /// JSON pointers removed from the example document.
    #[serde(default)]
    remove: Vec<String>,
    /// Text replacements on the example file (each must match).
    #[serde(default)]
    replace: Vec<(String, String)>,
    /// The whole file.
    #[serde(default)]
    text: Option<String>,
    /// A generated input (see `generate`).
    #[serde(default)]
    generate: Option<String>,
    /// Extra command-line arguments (usage cases).
    #[serde(default)]
    args: Vec<String>,
    exit: i32,
    /// Substrings the output (stderr, or a refused plan's report on stdout) must contain.
    expect: Vec<String>,
}

fn example(input: &str) -> &'static str {
    match input {
        "plan" => include_str!("../examples/plan.yaml"),
        "inventory" => include_str!("../examples/inventory.json"),
        "heartbeat" => include_str!("../examples/heartbeat.json"),
        "datasources" => include_str!("../examples/datasources.json"),
        other => panic!("unknown input kind {other:?}"),
    }
}

fn parse_example(input: &str) -> Value {
    let text = example(input);
    if input == "plan" {
        serde_saphyr::from_str(text).expect("the example plan parses")
    } else {
        serde_json::from_str(text).expect("the example parses")
    }
}

/// Ensure every parent of `pointer` exists, then set it.
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').expect("a JSON pointer");
    let target = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the example"));
    match target {
        Value::Object(map) => {
            map.insert(last.replace("~1", "/").replace("~0", "~"), value);
        }
        Value::Array(items) => {
            let i: usize = last.parse().expect("an index");
            if i == items.len() {
                items.push(value);
            } else {
                items[i] = value;
            }
        }
        other => panic!("{parent} is {other}, not an object or list"),
    }
}

fn remove_pointer(doc: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').expect("a JSON pointer");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(last).unwrap_or_else(|| panic!("no {pointer}"));
        }
        Some(Value::Array(items)) => {
            items.remove(last.parse::<usize>().expect("an index"));
        }
        _ => panic!("no {parent} in the example"),
    }
}

fn generate(what: &str) -> String {
    let mut plan = parse_example("plan");
    let (kind, n) = what.rsplit_once('-').expect("generator-N");
    let n: usize = n.parse().expect("a count");
    match kind {
        "waves" => {
            let wave = plan["spec"]["rollout"]["waves"][1].clone();
            let waves: Vec<Value> = (0..n)
                .map(|i| {
                    let mut w = wave.clone();
                    w["name"] = Value::String(format!("w{i}"));
                    w
                })
                .collect();
            plan["spec"]["rollout"]["waves"] = Value::Array(waves);
            serde_json::to_string(&plan).unwrap()
        }
        "datasources" => {
            let ds = plan["spec"]["dataSources"][0].clone();
            plan["spec"]["dataSources"] = Value::Array(vec![ds; n]);
            serde_json::to_string(&plan).unwrap()
        }
        "nesting" => format!("{}1{}", "[".repeat(n), "]".repeat(n)),
        "long-name" => {
            plan["metadata"]["name"] = Value::String("x".repeat(n));
            plan["spec"]["dataSources"][0]["name"] = Value::String("y".repeat(n));
            serde_json::to_string(&plan).unwrap()
        }
        "inventory-rows" => {
            let mut inv = parse_example("inventory");
            let row = inv["data"][0].clone();
            let rows: Vec<Value> = (0..n)
                .map(|i| {
                    let mut r = row.clone();
                    r["id"] = Value::String(format!(
                        "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm{i}"
                    ));
                    r
                })
                .collect();
            inv["data"] = Value::Array(rows);
            inv["totalRecords"] = Value::from(n);
            // `count` is left at the example's 16: the file says it holds fewer rows.
            serde_json::to_string(&inv).unwrap()
        }
        other => panic!("unknown generator {other:?}"),
    }
}

fn build(case: &Case) -> String {
    if let Some(text) = &case.text {
        return text.clone();
    }
    if let Some(g) = &case.generate {
        return generate(g);
    }
    if !case.replace.is_empty() {
        let mut text = example(&case.input).to_string();
        for (from, to) in &case.replace {
            assert!(
                text.contains(from.as_str()),
                "case {:?}: {from:?} is not in the example",
                case.name
            );
            text = text.replacen(from.as_str(), to, 1);
        }
        return text;
    }
    let mut doc = parse_example(&case.input);
    for (pointer, value) in &case.set {
        set_pointer(&mut doc, pointer, value.clone());
    }
    for pointer in &case.remove {
        remove_pointer(&mut doc, pointer);
    }
    serde_json::to_string_pretty(&doc).unwrap()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn command(case: &Case, file: &Path, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ama-migrator"));
    let ex = examples_dir();
    let pick = |kind: &str, name: &str| {
        if case.input == kind {
            file.to_path_buf()
        } else {
            ex.join(name)
        }
    };
    match case.command.as_deref().unwrap_or("plan") {
        "plan" => {
            c.arg("plan")
                .arg("--plan")
                .arg(pick("plan", "plan.yaml"))
                .arg("--inventory")
                .arg(pick("inventory", "inventory.json"))
                .arg("--heartbeat")
                .arg(pick("heartbeat", "heartbeat.json"))
                .arg("--datasources")
                .arg(pick("datasources", "datasources.json"));
        }
        "migrate" => {
            c.arg("migrate")
                .arg("--plan")
                .arg(file)
                .arg("--state")
                .arg(dir.join("state.db"))
                .args(["--credential", "none"])
                .args(["--arm-endpoint", "http://127.0.0.1:9"])
                .args(["--log-analytics-endpoint", "http://127.0.0.1:9/"]);
        }
        "simulate" => {
            c.args(["simulate", "--machines", "4", "--plan"]).arg(file);
        }
        "dcr" => {
            c.args(["dcr", "from-workspace", "--datasources"]).arg(file);
        }
        "bare" => {}
        other => panic!("unknown command {other:?}"),
    }
    c.args(&case.args)
        .env_remove("AMA_MIGRATOR_STATE")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

struct Ran {
    code: Option<i32>,
    /// stderr, then stdout.
    output: String,
    took: Duration,
}

fn run(mut c: Command) -> Ran {
    let start = Instant::now();
    let mut child = c.spawn().expect("the binary starts");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > GUARD {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    // `plan` prints a refused plan's report (its errors with their paths) on stdout; everything
    // else refuses on stderr.
    let stderr = reader.join().unwrap_or_default();
    let stdout = out_reader.join().unwrap_or_default();
    Ran {
        code,
        output: format!("{stderr}{stdout}"),
        took,
    }
}

#[test]
fn every_bad_input_is_refused_with_its_place_and_no_panic() {
    let cases: Vec<Case> = serde_saphyr::from_str(CASES).expect("cases.yaml parses");
    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());
    let dir = std::env::temp_dir().join(format!("bad-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    let mut times = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, case) in cases.iter().enumerate() {
        assert!(names.insert(&case.name), "case name {:?} twice", case.name);
        let file = dir.join(format!("case-{i}"));
        std::fs::write(&file, build(case)).unwrap();
        let ran = run(command(case, &file, &dir));
        times.push((ran.took, case.name.clone()));
        let mut wrong = Vec::new();
        match ran.code {
            None => wrong.push(format!("no exit status within {GUARD:?} (hang or signal)")),
            Some(code) if code != case.exit => {
                wrong.push(format!("exit {code}, expected {}", case.exit))
            }
            _ => {}
        }
        if ran.output.contains("panicked") || ran.code == Some(101) {
            wrong.push("panicked".into());
        }
        for want in &case.expect {
            if !ran.output.contains(want.as_str()) {
                wrong.push(format!("output lacks {want:?}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "case {i} {:?}: {}\n--- output:\n{}",
                case.name,
                wrong.join("; "),
                ran.output.chars().take(1500).collect::<String>()
            ));
        }
        let _ = std::fs::remove_file(dir.join("state.db"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    let slowest: Vec<String> = times
        .iter()
        .rev()
        .take(5)
        .map(|(t, n)| format!("{n} {:.2} s", t.as_secs_f64()))
        .collect();
    println!(
        "{} bad inputs run; slowest: {}",
        cases.len(),
        slowest.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
