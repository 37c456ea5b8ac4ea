//! What the kernel says BPF maps take (`bytes_memlock`, as `bpftool -j map show` reports it):
//! the memory benchmark's figures, and the packet benchmark's bytes a ban.

use std::{collections::HashMap, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// `bytes_memlock` and name of every map the kernel has, by id.
pub(super) fn maps() -> anyhow::Result<HashMap<u32, (String, u64)>> {
    let output = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .context("running bpftool (a Debian package; `cargo xtask setup` installs it)")?;
    if !output.status.success() {
        bail!(
            "bpftool map show failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let all: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    Ok(all
        .iter()
        .filter_map(|m| {
            Some((
                u32::try_from(m["id"].as_u64()?).ok()?,
                (
                    m["name"].as_str().unwrap_or("?").to_string(),
                    m["bytes_memlock"].as_u64()?,
                ),
            ))
        })
        .collect())
}

/// Total `bytes_memlock` of the maps with these ids.
pub(super) fn bytes(ids: &[u32]) -> anyhow::Result<u64> {
    let all = maps()?;
    ids.iter()
        .map(|id| {
            all.get(id)
                .map(|(_, b)| *b)
                .with_context(|| format!("bpftool does not show map {id}"))
        })
        .sum()
}
