//! `cargo xtask fuzz`: the agent's parsers under libFuzzer (`cargo fuzz`, in
//! `tracking-agent/fuzz`): the visit hook's bodies (one visit and a batch), block lists, the
//! TOML configuration, times and durations. Each target starts from its checked-in corpus
//! (`tracking-agent/fuzz/corpus/<target>`), which a run reads and never writes: what it finds
//! goes to a temporary directory, a crash to the printed path. `cargo xtask test` runs every
//! target for [`SUITE_SECONDS`]; `cargo xtask fuzz --seconds N [targets]` runs longer.

use std::{path::Path, process::Stdio};

use anyhow::{Context as _, bail};

use crate::process::{command, display, workspace_root};

/// The targets, each a file in `tracking-agent/fuzz/fuzz_targets`.
pub const TARGETS: [&str; 5] = ["hook_visit", "hook_batch", "blocklist", "config", "times"];
/// Seconds each target runs in the test suite.
pub const SUITE_SECONDS: u64 = 15;

/// What one target's run did.
struct Outcome {
    target: &'static str,
    executions: u64,
    seconds: u64,
    corpus: usize,
    new_inputs: usize,
}

/// Runs `targets` (all when empty) for `seconds` each; fails on the first finding.
pub fn run(targets: &[String], seconds: u64) -> anyhow::Result<()> {
    let chosen: Vec<&'static str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        let mut chosen = Vec::new();
        for t in targets {
            let Some(known) = TARGETS.iter().find(|k| *k == t) else {
                bail!(
                    "no fuzz target `{t}`; the targets are {}",
                    TARGETS.join(", ")
                );
            };
            chosen.push(*known);
        }
        chosen
    };
    let dir = workspace_root().join("tracking-agent/fuzz");
    let mut build = command("cargo");
    build
        .args(["+nightly", "fuzz", "build", "--release"])
        .current_dir(&dir);
    crate::process::execute(&mut build).context("building the fuzz targets")?;
    let mut outcomes = Vec::new();
    for target in chosen {
        outcomes.push(run_one(&dir, target, seconds)?);
    }
    println!("\nfuzzing, {seconds} s a target:");
    println!(
        "{:<12} {:>12} {:>8} {:>8} {:>10} findings",
        "target", "executions", "seconds", "corpus", "new inputs"
    );
    for o in &outcomes {
        println!(
            "{:<12} {:>12} {:>8} {:>8} {:>10} 0",
            o.target, o.executions, o.seconds, o.corpus, o.new_inputs
        );
    }
    Ok(())
}

fn run_one(dir: &Path, target: &'static str, seconds: u64) -> anyhow::Result<Outcome> {
    let scratch = tempfile::Builder::new()
        .prefix(&format!("trk-fuzz-{target}-"))
        .tempdir()?;
    let found = scratch.path().join("found");
    let artifacts = scratch.path().join("artifacts");
    std::fs::create_dir_all(&found)?;
    std::fs::create_dir_all(&artifacts)?;
    let corpus = dir.join("corpus").join(target);
    let seeds = std::fs::read_dir(&corpus)
        .with_context(|| format!("the corpus of {target}: {}", corpus.display()))?
        .count();
    let mut fuzz = command("cargo");
    fuzz.args(["+nightly", "fuzz", "run", "--release", target])
        .arg(&found)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .current_dir(dir)
        .stdin(Stdio::null());
    println!("$ {}", display(&fuzz));
    let output = fuzz
        .output()
        .with_context(|| format!("running {}", display(&fuzz)))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let crashes: Vec<String> = std::fs::read_dir(&artifacts)?
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    if !output.status.success() || !crashes.is_empty() {
        // Keep what it found for the person reading this.
        let kept = scratch.keep();
        bail!(
            "fuzz target {target} found a problem ({}); the input is in {}:\n{}",
            output.status,
            kept.join("artifacts").display(),
            tail(&log, 40)
        );
    }
    let executions = stat(&log, "stat::number_of_executed_units:")
        .or_else(|| done_runs(&log))
        .with_context(|| {
            format!(
                "no execution count in the output of {target}:\n{}",
                tail(&log, 20)
            )
        })?;
    let new_inputs = std::fs::read_dir(&found)?.count();
    Ok(Outcome {
        target,
        executions,
        seconds,
        corpus: seeds,
        new_inputs,
    })
}

/// `stat::name: value` from libFuzzer's final stats.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix(name)?.trim().parse().ok())
}

/// `Done N runs in M second(s)`.
fn done_runs(log: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("Done ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_are_read_from_libfuzzers_final_words() {
        let log = "#1024 pulse cov: 10\nDone 4242 runs in 15 second(s)\n\
                   stat::number_of_executed_units: 4242\nstat::peak_rss_mb: 40\n";
        assert_eq!(stat(log, "stat::number_of_executed_units:"), Some(4242));
        assert_eq!(done_runs(log), Some(4242));
        assert_eq!(stat("", "stat::number_of_executed_units:"), None);
    }
}
