//! `cargo xtask install`: puts the agent in place for systemd: the binary in
//! `/usr/local/bin`, the unit in `/etc/systemd/system`, an example configuration in
//! `/etc/tracking` (an existing one is kept). `--prefix` stages all of it under another root
//! (a package build, a test); `--binary` installs a binary built already instead of building
//! one for release.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{build, process::workspace_root, setup};

/// Where each file goes, under the prefix.
pub const BINARY: &str = "usr/local/bin/tracking";
pub const UNIT: &str = "etc/systemd/system/tracking.service";
pub const CONFIG: &str = "etc/tracking/tracking.toml";

/// What to install where.
pub struct Plan {
    /// The root everything goes under: `/` on the host.
    pub prefix: PathBuf,
    /// The binary to install; `None` builds one for release.
    pub binary: Option<PathBuf>,
}

pub fn run(plan: Plan) -> anyhow::Result<()> {
    let binary = match &plan.binary {
        Some(binary) => {
            if !binary.is_file() {
                bail!("--binary {}: no such file", binary.display());
            }
            binary.clone()
        }
        None => {
            setup::run()?;
            build::agent(build::Profile::Release)?
        }
    };
    let installed = install(&plan.prefix, &binary, &workspace_root())?;
    for line in &installed {
        println!("install: {line}");
    }
    if plan.prefix == Path::new("/") {
        println!(
            "install: now `systemctl daemon-reload && systemctl enable --now tracking`; \
             `systemctl stop tracking` leaves the filter running, `tracking agent detach` removes it"
        );
    }
    Ok(())
}

/// Copies the files from the workspace at `root` under `prefix`; returns what it did, a line
/// each.
pub fn install(prefix: &Path, binary: &Path, root: &Path) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let unit = root.join("integrations/systemd/tracking.service");
    let config = root.join("integrations/systemd/tracking.toml");
    for source in [&unit, &config] {
        if !source.is_file() {
            bail!("{} is missing from the workspace", source.display());
        }
    }
    // Everything is checked before anything is written.
    let to_binary = prefix.join(BINARY);
    done.push(copy(binary, &to_binary, 0o755)?);
    done.push(copy(&unit, &prefix.join(UNIT), 0o644)?);
    let to_config = prefix.join(CONFIG);
    if to_config.exists() {
        done.push(format!("kept {} (it exists)", to_config.display()));
    } else {
        done.push(copy(&config, &to_config, 0o600)?);
    }
    // The configuration directory holds the CrowdSec key and tokens: root's alone.
    set_mode(to_config.parent().expect("a parent"), 0o700)?;
    Ok(done)
}

/// Copies `from` to `to` through a temporary file in the same directory, so that a running
/// binary is replaced, not overwritten in place.
fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<String> {
    let dir = to.parent().expect("a parent");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = dir.join(format!(
        ".{}.new",
        to.file_name().expect("a file name").to_string_lossy()
    ));
    fs::copy(from, &staging)
        .with_context(|| format!("copying {} to {}", from.display(), staging.display()))?;
    set_mode(&staging, mode)?;
    fs::rename(&staging, to)
        .with_context(|| format!("moving {} to {}", staging.display(), to.display()))?;
    Ok(format!("{} -> {} ({mode:o})", from.display(), to.display()))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_land_under_the_prefix_with_their_modes_and_a_configuration_is_kept() {
        let prefix = tempfile_dir();
        let binary = prefix.join("built-tracking");
        fs::write(&binary, b"#!/bin/sh\n").unwrap();
        let root = workspace_root();
        install(&prefix, &binary, &root).unwrap();
        assert_eq!(mode(&prefix.join(BINARY)), 0o755);
        assert_eq!(mode(&prefix.join(UNIT)), 0o644);
        assert_eq!(mode(&prefix.join(CONFIG)), 0o600);
        assert_eq!(mode(&prefix.join("etc/tracking")), 0o700);
        assert_eq!(
            fs::read(prefix.join(UNIT)).unwrap(),
            fs::read(root.join("integrations/systemd/tracking.service")).unwrap()
        );
        // A second install replaces the binary and the unit, and keeps the operator's
        // configuration.
        fs::write(prefix.join(CONFIG), "iface = [\"eth1\"]\n").unwrap();
        let done = install(&prefix, &binary, &root).unwrap();
        assert!(done.iter().any(|l| l.starts_with("kept ")), "{done:?}");
        assert_eq!(
            fs::read_to_string(prefix.join(CONFIG)).unwrap(),
            "iface = [\"eth1\"]\n"
        );
        fs::remove_dir_all(&prefix).unwrap();
    }

    #[test]
    fn a_missing_binary_is_named() {
        let err = run(Plan {
            prefix: PathBuf::from("/nonexistent-prefix"),
            binary: Some(PathBuf::from("/nonexistent/tracking")),
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--binary /nonexistent/tracking: no such file"
        );
    }

    /// A fresh directory under the target directory (xtask has no tempfile dependency).
    fn tempfile_dir() -> PathBuf {
        let dir = crate::process::target_dir().join(format!(
            "xtask-install-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
