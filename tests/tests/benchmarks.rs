//! The benchmarks keep working: every one runs once at `--quick` sizes, through the `bench`
//! runner as `cargo xtask bench` runs it, and prints its table. Targets are not checked here
//! (quick sizes on a debug build say nothing about them), and quick runs write no results file.
//! Needs root; run with `cargo xtask test`.

use std::process::Command;

use tests::require_root;

/// The benchmarks the runner knows, from its usage line `usage: bench [a|b|all]... ...`.
fn benchmarks() -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--help")
        .output()
        .expect("the bench runner starts");
    let usage = String::from_utf8_lossy(&output.stdout).into_owned();
    let list = usage
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no list of benchmarks in `{usage}`"));
    list.split('|')
        .filter(|name| *name != "all")
        .map(String::from)
        .collect()
}

#[test]
fn every_benchmark_runs_at_quick_sizes_and_prints_its_table() {
    require_root();
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let before = std::fs::read(&results).ok();
    let names = benchmarks();
    assert!(names.len() >= 4, "benchmarks: {names:?}");

    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["all", "--quick"])
        .output()
        .expect("the bench runner starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench all --quick failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for name in &names {
        let heading = format!("({name})\ncase ");
        assert!(
            stdout.lines().any(|l| l.starts_with("== ")) && stdout.contains(&heading),
            "no table for `{name}` in:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert_eq!(
        std::fs::read(&results).ok(),
        before,
        "a quick run must not write {}",
        results.display()
    );
}
