//! The Django package's test environments: one virtual environment per supported Django
//! (`integrations/django/requirements/django-<version>.txt`, every version pinned), made with
//! Debian's `/usr/bin/python3` (the `python3` on `PATH` may be a pyenv shim), the package
//! installed into each in editable mode. `setup` makes or refreshes them; `test` runs the
//! package's pytest suite in each. An environment whose requirements and `pyproject.toml` have
//! not changed since it was made is left alone: a stamp file holds what it was made from.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::process::{command, execute, target_dir, workspace_root};

/// The environments, by the name of their requirements file.
pub const VENVS: [&str; 2] = ["django-4.2", "django-5.2"];
/// The interpreter the environments are made with.
const PYTHON: &str = "/usr/bin/python3";
const STAMP: &str = "tracking-requirements.stamp";

/// `integrations/django`.
pub fn package_dir() -> PathBuf {
    workspace_root().join("integrations").join("django")
}

/// Where the environments are: `target/django/`.
pub fn venvs_dir() -> PathBuf {
    target_dir().join("django")
}

/// What an environment is made from: its requirements and the package's build description.
fn made_from(name: &str) -> anyhow::Result<String> {
    let requirements = package_dir()
        .join("requirements")
        .join(format!("{name}.txt"));
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    Ok(format!(
        "{}\n--- pyproject.toml\n{}",
        read(&requirements)?,
        read(&package_dir().join("pyproject.toml"))?
    ))
}

/// Makes every environment that is missing or out of date.
pub fn setup() -> anyhow::Result<()> {
    if !Path::new(PYTHON).is_file() {
        bail!("{PYTHON} is missing: install Debian's python3 and python3-venv");
    }
    for name in VENVS {
        let dir = venvs_dir().join(name);
        let wanted = made_from(name)?;
        if std::fs::read_to_string(dir.join(STAMP)).ok().as_deref() == Some(wanted.as_str()) {
            println!("  found    Python environment {name} ({})", dir.display());
            continue;
        }
        println!("  missing  Python environment {name} (the Django package's tests)");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the old {}", dir.display()))?;
        }
        execute(command(PYTHON).arg("-m").arg("venv").arg(&dir))?;
        let pip = dir.join("bin").join("pip");
        execute(
            command(&pip)
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(
                    package_dir()
                        .join("requirements")
                        .join(format!("{name}.txt")),
                ),
        )?;
        // Editable, so that the tests see the sources as they are; without build isolation,
        // with the pinned setuptools just installed.
        execute(
            command(&pip)
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                ])
                .args(["--no-build-isolation", "--editable"])
                .arg(package_dir()),
        )?;
        std::fs::write(dir.join(STAMP), wanted)?;
        println!("  installed Python environment {name}");
    }
    Ok(())
}

/// The package's pytest suite in every environment, against the agent at `agent`.
pub fn test(agent: &Path) -> anyhow::Result<()> {
    for name in VENVS {
        let python = venvs_dir().join(name).join("bin").join("python");
        execute(
            command(&python)
                .args(["-m", "pytest", "-q"])
                .current_dir(package_dir())
                .env("TRACKING_BIN", agent)
                .env("PYTHONDONTWRITEBYTECODE", "1"),
        )
        .with_context(|| format!("the Django package's tests failed with {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_environment_has_its_pinned_requirements() {
        for name in VENVS {
            let text = made_from(name).unwrap();
            let version = name.trim_start_matches("django-");
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("Django=={version}."))),
                "{name}: no pinned Django {version}"
            );
            for tool in ["gunicorn==", "pytest==", "pytest-django==", "setuptools=="] {
                assert!(text.lines().any(|l| l.starts_with(tool)), "{name}: {tool}");
            }
            for line in text.lines().take_while(|l| !l.starts_with("---")) {
                let line = line.trim();
                assert!(
                    line.is_empty() || line.starts_with('#') || line.contains("=="),
                    "{name}: `{line}` is not pinned"
                );
            }
        }
    }

    #[test]
    fn the_tests_harness_looks_for_the_same_environments() {
        let harness =
            std::fs::read_to_string(workspace_root().join("tests/src/django.rs")).unwrap();
        assert!(
            harness.contains(&format!("{VENVS:?}")),
            "tests/src/django.rs VENVS"
        );
    }
}
