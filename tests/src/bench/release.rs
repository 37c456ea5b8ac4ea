//! The agent binary the end-to-end benchmarks run: a release build, never whichever build is
//! newest (a debug agent is many times slower and would make every number meaningless).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::binary;

/// `TRACKING_BIN` when set (the caller vouches for it), else `target/release/tracking`.
pub fn agent() -> anyhow::Result<PathBuf> {
    if std::env::var_os("TRACKING_BIN").is_some() {
        return Ok(binary::agent()?);
    }
    let path = binary::target_dir().join("release").join("tracking");
    anyhow::ensure!(
        path.is_file(),
        "no release agent at {}: build it with `cargo build --release -p tracking-agent` \
         (or name one in TRACKING_BIN)",
        path.display()
    );
    path.canonicalize()
        .with_context(|| format!("{}", path.display()))
}
