//! `cargo xtask build`: builds the agent. Its build script builds the XDP program with nightly
//! and bpf-linker (always optimised, whatever the agent's profile), which is why `setup` runs
//! first.

use std::path::PathBuf;

use crate::process::{cargo, execute, target_dir};

/// The cargo profile the agent is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    /// The directory under `target/` that holds this profile's binaries.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// Builds `tracking` and returns the path of the binary.
pub fn agent(profile: Profile) -> anyhow::Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "--package", "tracking-agent", "--bin", "tracking"]);
    if profile == Profile::Release {
        build.arg("--release");
    }
    execute(&mut build)?;
    Ok(target_dir().join(profile.dir()).join("tracking"))
}
