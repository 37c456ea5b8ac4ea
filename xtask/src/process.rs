//! Child processes: where the tools are found, how a step is shown before it runs, and what a
//! failure says.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a member directory of the workspace")
        .to_path_buf()
}

/// Where cargo puts its build output, as cargo itself decides it.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker. A CI shell or `sudo` may not have it
/// on `PATH`, and the agent's build script looks bpf-linker up by name.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `PATH` with [`cargo_bin_dir`] in front when it is not already on it.
pub fn search_path() -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.insert(0, bin);
    }
    env::join_paths(dirs).unwrap_or(current)
}

/// A command run from the workspace root with [`search_path`] as its `PATH` (std looks the
/// program up in the child's `PATH` when one is set).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command
        .env("PATH", search_path())
        .current_dir(workspace_root());
    command
}

/// `cargo`, through the rustup proxy on `PATH`, so that toolchain selection works as in a shell.
pub fn cargo() -> Command {
    command("cargo")
}

/// The command as a shell would show it.
pub fn display(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Shows the command, runs it with inherited stdio, and fails unless it exits with success.
pub fn execute(command: &mut Command) -> anyhow::Result<()> {
    let shown = display(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs the command quietly and returns its stdout when it succeeds; `None` when it cannot be
/// started or fails. For probing what is installed.
pub fn probe(command: &mut Command) -> Option<String> {
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cargo_bin_dir_is_on_the_path_given_to_children() {
        let bin = cargo_bin_dir().expect("HOME or CARGO_HOME is set");
        assert!(env::split_paths(&search_path()).any(|dir| dir == bin));
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn commands_are_shown_as_typed() {
        let mut command = Command::new("cargo");
        command.args(["build", "-p", "tracking-agent"]);
        assert_eq!(display(&command), "cargo build -p tracking-agent");
    }
}
