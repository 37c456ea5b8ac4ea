//! `cargo xtask bench [NAME...] [--quick] [--out FILE]`: the benchmarks, on release builds.
//! Setup first (wrk, bpftool, PostgreSQL come from Debian), then the agent and the `bench`
//! runner in release, then the runner with the agent named in `TRACKING_BIN`, so that it never
//! measures a stale or a debug build. The runner prints the tables and, for full runs or with
//! `--out`, writes them to `docs/benchmarks.md` (or FILE).

use std::{ffi::OsString, path::PathBuf};

use anyhow::{Context as _, bail};

use crate::{
    build, geoip,
    process::{self, cargo, command, execute, target_dir},
    setup,
};

pub fn run(names: Vec<String>, quick: bool, out: Option<PathBuf>) -> anyhow::Result<()> {
    if !process::is_root() {
        bail!(
            "the benchmarks need root: they load XDP programs, create network namespaces and \
             pin maps in bpffs. Run `cargo xtask bench` as root"
        );
    }
    setup::run()?;
    // The active-counts benchmark times the map with the real files.
    geoip::fetch()?;
    let agent = build::agent(build::Profile::Release)?;
    execute(cargo().args([
        "build",
        "--release",
        "--package",
        "tests",
        "--bin",
        "bench",
        "--bin",
        "bench-floor",
    ]))?;
    let mut bench = command(target_dir().join("release").join("bench"));
    bench
        .args(runner_args(names, quick, out))
        .env("TRACKING_BIN", &agent)
        .env("TRACKING_DBIP_DIR", geoip::DIR)
        .env("TRACKING_DJANGO_VENVS", crate::django::venvs_dir());
    execute(&mut bench).context("benchmarks failed")
}

/// The runner's arguments: the names as given, then the flags.
fn runner_args(names: Vec<String>, quick: bool, out: Option<PathBuf>) -> Vec<OsString> {
    let mut args: Vec<OsString> = names.into_iter().map(OsString::from).collect();
    if quick {
        args.push("--quick".into());
    }
    if let Some(out) = out {
        args.push("--out".into());
        args.push(out.into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_reach_the_runner() {
        assert_eq!(
            runner_args(
                vec!["hook".into(), "memory".into()],
                true,
                Some("x.md".into())
            ),
            ["hook", "memory", "--quick", "--out", "x.md"].map(OsString::from)
        );
        assert!(runner_args(vec![], false, None).is_empty());
    }
}
