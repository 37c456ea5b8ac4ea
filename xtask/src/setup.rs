//! `cargo xtask setup`: installs only what is missing, and says what it found and what it did,
//! so running it twice does nothing the second time.
//!
//! What the build needs: nightly with `rust-src` (the XDP program is built with
//! `-Z build-std=core`), and bpf-linker, which links against LLVM 22; cargo-fuzz for the fuzz
//! targets. What the test suite needs:
//! `ip` and `nsenter` for network namespaces, bpftool to inspect programs, a PostgreSQL server
//! and chromium for the tests that use them; crowdsec, fail2ban, prometheus (promtool) and
//! systemd (systemd-analyze) for the integrations' tests; wrk for the benchmarks; the Django package's
//! Python environments (see [`crate::django`]).

use anyhow::{Context as _, bail};

use crate::process::{self, cargo, command, execute, probe};

/// Debian packages, with why each is needed.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("libpolly-22-dev", "LLVM 22's link line names Polly"),
    ("libzstd-dev", "LLVM 22's link line names zstd"),
    ("zlib1g-dev", "LLVM 22's link line names zlib"),
    ("bpftool", "inspecting loaded programs and pinned maps"),
    (
        "iproute2",
        "`ip`: network namespaces and veth pairs in the tests",
    ),
    (
        "util-linux",
        "`nsenter`: starting the agent inside a test namespace",
    ),
    (
        "postgresql",
        "the PostgreSQL store's tests start a throwaway server",
    ),
    (
        "openssl",
        "the PostgreSQL TLS tests make a CA and a server certificate",
    ),
    ("chromium", "the admin and map pages' browser tests"),
    (
        "python3-venv",
        "the Django package's test environments (`/usr/bin/python3 -m venv`)",
    ),
    ("wrk", "the hook benchmark's HTTP load generator"),
    (
        "nftables",
        "the flood and load benchmarks compare with an nftables set",
    ),
    (
        "ipset",
        "the flood and load benchmarks compare with an ipset",
    ),
    (
        "iptables",
        "the flood benchmark's raw-table rule matching an ipset",
    ),
    (
        "crowdsec",
        "the CrowdSec bouncer's tests run a real Local API and cscli",
    ),
    (
        "fail2ban",
        "the fail2ban action's tests run a real fail2ban-server",
    ),
    ("prometheus", "`promtool check metrics` checks GET /metrics"),
    ("systemd", "`systemd-analyze verify` checks the unit"),
    (
        "xdp-tools",
        "the packet and flood benchmarks compare with xdp-filter",
    ),
];

/// Debian's crowdsec registers with CrowdSec's Central API while it installs, and fails
/// without a network unless this file has content already (its README.Debian: a file made in
/// advance disables the registration). The tests run a Local API of their own, without the
/// Central API.
const CROWDSEC_CAPI_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";

/// Where Debian's LLVM 22 lives; bpf-linker's build finds it only when told.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> anyhow::Result<()> {
    println!("setup: checking what the build and the tests need");
    debian_packages()?;
    rust_components()?;
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    crate::django::setup()?;
    println!("setup: everything is in place");
    Ok(())
}

fn found(what: &str) {
    println!("  found    {what}");
}

fn missing(what: &str) {
    println!("  missing  {what}");
}

/// Whether dpkg says the package is installed: its status is `<want> <flag> installed`
/// (`install ok installed`, or `hold ok installed` when pinned). A removed package whose
/// configuration files remain reads `deinstall ok config-files`.
fn is_installed_status(status: &str) -> bool {
    status.split_whitespace().nth(2) == Some("installed")
}

fn debian_package_installed(package: &str) -> anyhow::Result<bool> {
    let output = command("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("`dpkg-query` is not available: this is not a Debian system; install the equivalents of the packages listed in xtask/src/setup.rs yourself")?;
    // dpkg-query fails for a package it has never heard of, which means not installed.
    Ok(output.status.success() && is_installed_status(&String::from_utf8_lossy(&output.stdout)))
}

fn debian_packages() -> anyhow::Result<()> {
    let mut to_install = Vec::new();
    for &(package, why) in DEBIAN_PACKAGES {
        if debian_package_installed(package)? {
            found(package);
        } else {
            missing(&format!("{package} ({why})"));
            to_install.push(package);
        }
    }
    if to_install.is_empty() {
        return Ok(());
    }
    if !process::is_root() {
        bail!(
            "these Debian packages must be installed with apt-get, which needs root: {}\n\
             run `cargo xtask setup` as root, or `apt-get install {}` yourself",
            to_install.join(" "),
            to_install.join(" "),
        );
    }
    if to_install.contains(&"crowdsec") {
        crowdsec_offline()?;
        // A crowdsec left half-configured by a registration that failed is configured again.
        execute(command("dpkg").args(["--configure", "--pending"]))?;
    }
    execute(
        command("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    execute(
        command("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&to_install)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

/// Makes crowdsec's installation skip the Central API registration (see
/// [`CROWDSEC_CAPI_CREDENTIALS`]); an operator's own file is left as it is.
fn crowdsec_offline() -> anyhow::Result<()> {
    let path = std::path::Path::new(CROWDSEC_CAPI_CREDENTIALS);
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let dir = path.parent().expect("a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        path,
        "# Written by `cargo xtask setup`: no Central API registration on this machine \
         (see /usr/share/doc/crowdsec/README.Debian).\n",
    )
    .with_context(|| format!("writing {}", path.display()))?;
    println!("  wrote    {CROWDSEC_CAPI_CREDENTIALS} (crowdsec installs without the Central API)");
    Ok(())
}

/// `cargo fmt` and `cargo clippy` on the default toolchain: `cargo xtask test` runs both.
fn rust_components() -> anyhow::Result<()> {
    let mut to_add = Vec::new();
    for (component, subcommand) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        if probe(cargo().args([subcommand, "--version"])).is_some() {
            found(&format!("cargo {subcommand}"));
        } else {
            missing(&format!("cargo {subcommand}"));
            to_add.push(component);
        }
    }
    if !to_add.is_empty() {
        execute(command("rustup").args(["component", "add"]).args(&to_add))?;
    }
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let toolchains = probe(command("rustup").args(["toolchain", "list"]))
        .context("`rustup` is not available: install Rust with rustup (https://rustup.rs)")?;
    if !has_nightly(&toolchains) {
        missing("the nightly toolchain (builds the XDP program)");
        return execute(command("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    found("nightly toolchain");
    let installed = probe(command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if has_rust_src(&installed) {
        found("rust-src for nightly");
        return Ok(());
    }
    missing("rust-src for nightly (the XDP program is built with -Z build-std=core)");
    execute(command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// Whether `rustup toolchain list` names a plain `nightly` (what `rustup run nightly` uses).
fn has_nightly(toolchains: &str) -> bool {
    toolchains.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or_default();
        // `nightly-<host triple>`, not a dated `nightly-2025-01-01-<host triple>`.
        name == "nightly"
            || name
                .strip_prefix("nightly-")
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Whether `rustup component list --installed` names rust-src (listed without a target triple).
fn has_rust_src(components: &str) -> bool {
    components.lines().any(|line| line.trim() == "rust-src")
}

fn bpf_linker() -> anyhow::Result<()> {
    if let Some(version) = probe(command("bpf-linker").arg("--version")) {
        found(version.trim());
        return Ok(());
    }
    missing("bpf-linker (links the XDP program); building it takes a few minutes");
    // Try the versions bpf-linker was released with first; a newer lock can only help when
    // one of them stopped building.
    let install = |locked: bool| {
        let mut install = cargo();
        install.arg("install").arg("bpf-linker");
        if locked {
            install.arg("--locked");
        }
        install
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .env("PATH", llvm_first_path());
        install
    };
    if let Err(locked) = execute(&mut install(true)) {
        println!("setup: {locked:#}; trying again without --locked");
        execute(&mut install(false))?;
    }
    probe(command("bpf-linker").arg("--version"))
        .map(|version| println!("  installed {}", version.trim()))
        .context("bpf-linker was installed but does not run")
}

/// `cargo fuzz`, which builds and runs the agent's fuzz targets (`cargo xtask fuzz`).
fn cargo_fuzz() -> anyhow::Result<()> {
    if let Some(version) = probe(cargo().args(["fuzz", "--version"])) {
        found(version.trim());
        return Ok(());
    }
    missing("cargo-fuzz (runs the fuzz targets); building it takes a minute or two");
    execute(cargo().args(["install", "cargo-fuzz", "--locked"]))
}

/// `PATH` with LLVM 22's tools in front, so that llvm-sys finds `llvm-config` of LLVM 22.
fn llvm_first_path() -> std::ffi::OsString {
    let search = process::search_path();
    let mut dirs = vec![std::path::PathBuf::from(LLVM_PREFIX).join("bin")];
    dirs.extend(std::env::split_paths(&search));
    std::env::join_paths(dirs).unwrap_or(search)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_counts_as_installed_only_when_dpkg_says_installed() {
        assert!(is_installed_status("install ok installed"));
        assert!(is_installed_status("hold ok installed"));
        assert!(!is_installed_status("deinstall ok config-files"));
        assert!(!is_installed_status("install ok half-configured"));
        assert!(!is_installed_status(""));
    }

    #[test]
    fn nightly_is_recognised_in_the_toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
        // A dated nightly is not what `rustup run nightly` picks.
        assert!(!has_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu\n"
        ));
    }

    #[test]
    fn rust_src_is_recognised_among_installed_components() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_rust_src(list));
        assert!(!has_rust_src(
            "cargo-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-linux-gnu\n"
        ));
    }

    #[test]
    fn llvm_22_tools_come_first_when_building_bpf_linker() {
        let path = llvm_first_path();
        let first = std::env::split_paths(&path).next().unwrap();
        assert_eq!(first, std::path::Path::new("/usr/lib/llvm-22/bin"));
    }
}
