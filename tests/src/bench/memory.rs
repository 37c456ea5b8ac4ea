//! Benchmark 6: memory. The kernel memory of the program's maps (`bytes_memlock` of each, as
//! `bpftool -j map show` reports it) with the packet benchmark's bans loaded and at the default
//! capacities with none, and the agent's peak RSS under the hook benchmark's load.

use std::path::PathBuf;

use anyhow::Context as _;
use tracking_agent::{
    config::{DEFAULT_MAX_BANS_V4, DEFAULT_MAX_BANS_V6},
    kernel::{Options, Program, program::detach_all},
};

use super::{Report, Row, Scale, hook, map_memory::maps, packet};

const MIB: f64 = (1 << 20) as f64;

/// What the README says the default capacities take.
const README_ESTIMATE_MIB: f64 = 45.0;

/// Total `bytes_memlock` of the maps `program` uses, and each map's share, largest first.
fn kernel_memory(program: &Program) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    let all = maps()?;
    let mut each = Vec::new();
    for id in program.map_ids() {
        let (name, bytes) = all
            .get(&id)
            .with_context(|| format!("bpftool does not show map {id}"))?;
        each.push((name.clone(), *bytes));
    }
    each.sort_by_key(|e| std::cmp::Reverse(e.1));
    Ok((each.iter().map(|(_, b)| b).sum(), each))
}

fn shares(each: &[(String, u64)]) -> String {
    each.iter()
        .filter(|(_, b)| *b as f64 >= MIB / 10.0)
        .map(|(n, b)| format!("{n} {:.1}", *b as f64 / MIB))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let n = match scale {
        Scale::Full => 1_000_000,
        Scale::Quick => 100_000,
    };
    let (loaded_bytes, loaded_each, bans, caps) = {
        let loaded = packet::load(n)?;
        let (total, each) = kernel_memory(&loaded.program)?;
        // The same capacities as `packet::load` asks for.
        (total, each, loaded.bans, (n + n / 10 + 16, n / 10 + 16))
    };

    let pins = PathBuf::from(format!("/sys/fs/bpf/trk-bench-mem-{}", std::process::id()));
    let _ = detach_all(&pins);
    let defaults = Program::load(&Options {
        pin_dir: pins.clone(),
        max_bans_v4: DEFAULT_MAX_BANS_V4,
        max_bans_v6: DEFAULT_MAX_BANS_V6,
        hash_key: None,
    })
    .context("loading the program at the default capacities");
    let measured = defaults.and_then(|p| kernel_memory(&p));
    let _ = detach_all(&pins);
    let (default_bytes, default_each) = measured?;

    let (agent, measured_now) = hook::sqlite_memory(scale)?;
    let default_mib = default_bytes as f64 / MIB;
    let rows = vec![
        Row::new(
            format!(
                "kernel maps, {bans} bans loaded (tables for {} IPv4, {} IPv6)",
                caps.0, caps.1
            ),
            "MiB",
            vec![loaded_bytes as f64 / MIB],
        ),
        Row::new(
            format!(
                "kernel maps, default capacities ({DEFAULT_MAX_BANS_V4} IPv4, {DEFAULT_MAX_BANS_V6} IPv6), no bans"
            ),
            "MiB",
            vec![default_mib],
        ),
        Row::new(
            "agent peak RSS under the hook's load (SQLite)",
            "MiB",
            vec![agent.peak as f64 / MIB],
        ),
    ];
    Ok(Report {
        name: "memory",
        title: "Memory".into(),
        method: format!(
            "Kernel memory: the sum of `bytes_memlock` (`bpftool -j map show`) over the maps the \
             program uses, once with the packet benchmark's bans loaded ({n} exact IPv4, {} IPv4 \
             prefixes, {} IPv6), once at the default capacities with no bans. The agent's RSS: `VmHWM` \
             of its process after {}.",
            n / 10,
            n / 10,
            if measured_now {
                "a short hook load on SQLite run for this measure"
            } else {
                "the hook benchmark's SQLite runs in this invocation"
            }
        ),
        rows,
        notes: vec![
            format!(
                "The README estimates about {README_ESTIMATE_MIB:.0} MiB of kernel memory at the default \
                 capacities; measured {default_mib:.1} MiB ({:+.0}%).",
                (default_mib / README_ESTIMATE_MIB - 1.0) * 100.0
            ),
            format!(
                "The tables are arrays sized at load: their memory depends on the capacities, not on \
                 how many bans they hold. Largest maps, MiB: with bans: {}; at the defaults: {}.",
                shares(&loaded_each),
                shares(&default_each)
            ),
            format!(
                "The agent's resident memory: {agent}. It maps the kernel tables to write them, \
                 and the pages it touched count as file-backed RSS: RSS and kernel memory overlap."
            ),
        ],
    })
}
