//! `ama-migrator migrate` run as a log or a pipe sees it (stderr not a terminal): progress lines
//! while it runs, and a stall that ends the run at `--stall-after` with what a person must do.
//! The real binary against the simulator over HTTP, as `tests/cli_migrate.rs` runs it.

mod scenario_support;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ama_migrator::engine::simulate::default_plan;
use ama_migrator::sim::{Scenario, Simulator};
use scenario_support::{migrate_command, scenario, workdir};

/// Each stderr line as it arrives.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_into_a_pipe_prints_wave_changes_and_summaries_while_it_runs() {
    let sim = Simulator::start(
        Scenario {
            time_scale: 600.0,
            ..scenario(8)
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let mut plan = default_plan(&sim).unwrap();
    // One wave with a manual approval: the run cannot end before a person approves (or the
    // 10-minute stall timer fires), so every line below is read while it still runs.
    plan.spec.rollout.waves = serde_json::from_value(serde_json::json!(
        [{"name": "all", "maxRisk": "High", "gates": {"manualApproval": true}}]
    ))
    .unwrap();
    let (dir, plan_path, state) = workdir("ama-cli-progress", &plan);
    let mut child = migrate_command(&sim, &plan_path, &state)
        .args(["--progress-interval-seconds", "1", "--stall-after", "10m"])
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let t = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let wanted = |seen: &[String]| {
        let has = |needle: &str| seen.iter().any(|l| l.contains(needle));
        has("wave all started")
            && has("machines: ")
            && has("wave all waits for approval: run again with `--approve all`")
    };
    while !wanted(&seen) && t.elapsed() < Duration::from_secs(120) {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "migrate ended before its progress lines were seen:\n{}",
            seen.join("\n")
        );
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(running, "the run ended early");
    assert!(
        wanted(&seen),
        "after {:?}:\n{}",
        t.elapsed(),
        seen.join("\n")
    );
    let summary = seen.iter().find(|l| l.contains("machines: ")).unwrap();
    // `2026-12-07T21:33:02Z machines: 6/8 done; by step: ...; ARM: 46 reads, 15 writes, ...`
    let (stamp, rest) = summary.split_once(' ').unwrap();
    assert!(
        stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{summary}"
    );
    assert!(
        rest.starts_with("machines: ") && rest.contains("/8 done; by step: "),
        "{summary}"
    );
    assert!(
        rest.contains(" reads, ") && rest.contains(" writes, ") && rest.contains(" throttled"),
        "{summary}"
    );
    eprintln!(
        "{} progress lines in {:.1}s, e.g.\n{}",
        seen.len(),
        t.elapsed().as_secs_f64(),
        seen.iter().take(6).cloned().collect::<Vec<_>>().join("\n")
    );
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_run_ends_at_stall_after_with_exit_1_naming_the_senders_and_the_fix() {
    let sim = Simulator::start(
        Scenario {
            time_scale: 600.0,
            outside_subscription_machines: 2,
            on_prem_computers: 2,
            in_guest_legacy_ratio: 0.0,
            ..scenario(8)
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let outside: Vec<String> = {
        let mut v: Vec<String> = sim
            .ledger_pairs(None, None)
            .into_iter()
            .filter(|p| p.out_of_scope)
            .map(|p| p.computer)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(outside.len(), 4, "{outside:?}");
    let mut plan = default_plan(&sim).unwrap();
    plan.spec.legacy.flip.accepted_uncovered_senders.clear();
    plan.spec.rollout.waves = serde_json::from_value(serde_json::json!(
        [{"name": "all", "maxRisk": "High"}]
    ))
    .unwrap();
    let (dir, plan_path, state) = workdir("ama-cli-stall", &plan);
    let t = Instant::now();
    let mut child = migrate_command(&sim, &plan_path, &state)
        .args(["--stall-after", "5s"])
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the stalled run did not end within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = t.elapsed();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let end: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(end["end"], "stalled", "{stdout}");
    let reason = end["reason"].as_str().unwrap();
    let lower = reason.to_ascii_lowercase();
    for n in &outside {
        assert!(
            lower.contains(&n.to_ascii_lowercase()),
            "{n} not named: {reason}"
        );
    }
    assert!(
        reason.contains("outside the plan's scope")
            && reason.contains("bring it into spec.scope")
            && reason.contains("spec.legacy.flip.acceptedUncoveredSenders"),
        "{reason}"
    );
    for internal in ["may_proceed", "actions=", " now Legacy target"] {
        assert!(!reason.contains(internal), "planner internals: {reason}");
    }
    // Without a terminal the last progress summary is on stderr.
    assert!(stderr.contains(" machines: "), "{stderr}");

    // `status` shows the same plan's conditions with their full messages.
    let status = Command::new(env!("CARGO_BIN_EXE_ama-migrator"))
        .args(["status", "--output", "json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let conditions = doc["plans"][0]["conditions"].as_array().unwrap();
    let blocked = conditions
        .iter()
        .find(|c| c["type"] == "Blocked")
        .unwrap_or_else(|| panic!("{conditions:?}"));
    assert_eq!(blocked["status"], "True");
    assert_eq!(blocked["reason"], "LegacyFlipWaitingForSenders");
    let message = blocked["message"].as_str().unwrap().to_ascii_lowercase();
    for n in &outside {
        assert!(message.contains(&n.to_ascii_lowercase()), "{n}: {message}");
    }
    eprintln!("stalled after {:.1}s: {reason}", elapsed.as_secs_f64());
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
