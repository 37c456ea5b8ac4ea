//! Builds the XDP program (`tracking-ebpf`, for `bpfel-unknown-none` with nightly and
//! bpf-linker) and leaves it in `OUT_DIR`, where `src/kernel` embeds it with `include_bytes`.
//! `cargo xtask setup` installs what this needs.

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracking-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracking-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
