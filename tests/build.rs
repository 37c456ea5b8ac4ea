//! Builds the benchmarks' own XDP programs (`tests/ebpf`: the floor, the NIC-like sender and the
//! reference peer, for `bpfel-unknown-none` with nightly and bpf-linker) and leaves them in
//! `OUT_DIR`, where `src/bench/programs.rs` embeds them, exactly as the agent's build script builds
//! its own program. They live here so that the agent's binary carries none of them.
//! `cargo xtask setup` installs what this needs.

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracking-bench-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
