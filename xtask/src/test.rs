//! `cargo xtask test`: the whole suite as CI runs it. Formatting and import cycles first
//! (cheap), then setup (DB-IP City Lite included, for the map tests with real data), clippy, a
//! build of the agent, every test of the workspace as root, the Django package's pytest suite in
//! each of its environments, and each fuzz target for a few seconds.
//!
//! The suite attaches XDP programs, creates network namespaces and pins maps in bpffs, so it
//! needs root; without root it stops and says so instead of skipping those tests.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::{
    build, cycles, django, fuzz, geoip,
    process::{self, cargo, execute},
    setup,
};

/// Host crates only: `tracking-ebpf` is built for `bpfel-unknown-none` by the agent's build
/// script (and its host build would also collide with the agent's `tracking` binary), and
/// `tracking-bench-ebpf` by the tests crate's.
const WORKSPACE: [&str; 5] = [
    "--workspace",
    "--exclude",
    "tracking-ebpf",
    "--exclude",
    "tracking-bench-ebpf",
];

pub fn run(cargo_args: Vec<String>) -> anyhow::Result<()> {
    if !process::is_root() {
        bail!(
            "the test suite needs root: its tests attach XDP programs, create network \
             namespaces and pin maps in bpffs. Run `cargo xtask test` as root; no test is \
             skipped instead"
        );
    }

    execute(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("the code is not formatted: run `cargo fmt --all`")?;
    cycles::run()?;
    released_binary_has_no_test_code()?;
    setup::run()?;
    geoip::fetch()?;
    execute(
        cargo()
            .arg("clippy")
            .args(WORKSPACE)
            .args(["--all-targets", "--", "-D", "warnings"]),
    )
    .context("clippy found problems: fix them before running the tests")?;

    // Cargo builds the agent's binary under target/ only for `cargo build`; the harness starts
    // exactly this one, never a stale one from an earlier build.
    let agent = build::agent(build::Profile::Debug)?;

    let mut test = cargo();
    // Every failing test binary is reported, not only the first: one CI run shows them all.
    test.args(["test", "--no-fail-fast"]);
    if !selects_packages(&cargo_args) {
        test.args(WORKSPACE);
    }
    test.args(&cargo_args)
        .env("TRACKING_TEST_ROOT", "1")
        .env("TRACKING_DBIP_DIR", geoip::DIR)
        .env("TRACKING_BIN", Path::new(&agent))
        .env("TRACKING_DJANGO_VENVS", django::venvs_dir());
    execute(&mut test).context("tests failed")?;
    // The whole suite includes the Python one and the fuzzers; a run narrowed by arguments is
    // someone looking at those tests.
    if cargo_args.is_empty() {
        django::test(&agent)?;
        fuzz::run(&[], fuzz::SUITE_SECONDS).context("fuzzing found a problem")?;
    }
    Ok(())
}

/// Crates only tests use: the operator's build of the agent must not depend on them.
const TEST_ONLY_CRATES: [&str; 1] = ["tempfile"];

/// The agent as an operator builds it (no `test-support`) depends on no test-only crate.
fn released_binary_has_no_test_code() -> anyhow::Result<()> {
    let tree = process::probe(cargo().args([
        "tree",
        "--edges",
        "normal",
        "--package",
        "tracking-agent",
        "--prefix",
        "none",
    ]))
    .context("cargo tree of the agent")?;
    let found: Vec<&str> = tree
        .lines()
        .filter(|line| {
            TEST_ONLY_CRATES
                .iter()
                .any(|name| line.split(' ').next() == Some(*name))
        })
        .collect();
    if !found.is_empty() {
        bail!(
            "the agent's own build depends on test-only crates: {}",
            found.join(", ")
        );
    }
    Ok(())
}

/// Whether the extra arguments choose packages themselves, which `--workspace` would override.
fn selects_packages(cargo_args: &[String]) -> bool {
    cargo_args
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "-p" || arg.starts_with("--package") || arg.starts_with("-p"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|&word| word.to_owned()).collect()
    }

    #[test]
    fn a_package_given_by_the_user_replaces_the_whole_workspace() {
        assert!(selects_packages(&args(&["-p", "tests"])));
        assert!(selects_packages(&args(&["--package=tests"])));
        assert!(selects_packages(&args(&["-ptests"])));
    }

    #[test]
    fn test_binary_arguments_do_not_select_packages() {
        assert!(!selects_packages(&args(&[])));
        assert!(!selects_packages(&args(&["--", "-p"])));
        assert!(!selects_packages(&args(&[
            "--release",
            "--",
            "--nocapture"
        ])));
    }
}
