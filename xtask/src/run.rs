//! `cargo xtask run`: sets up, builds for release and replaces itself with the agent, running
//! as root on the interface of the default route, with DB-IP City Lite for the map when
//! `cargo xtask setup --geoip` has fetched it.

use std::{os::unix::process::CommandExt as _, path::Path};

use anyhow::bail;

use crate::{build, geoip, process, route, setup};

/// Where the agent keeps its state unless told otherwise (it prints them too).
const DEFAULT_SOCKET: &str = "/run/tracking/tracking.sock";
const DEFAULT_DATABASE: &str = "/var/lib/tracking/tracking.db";
const DEFAULT_PINS: &str = "/sys/fs/bpf/tracking";
const DEFAULT_CONFIG: &str = "/etc/tracking/tracking.toml";

pub fn run(agent_args: Vec<String>) -> anyhow::Result<()> {
    if !process::is_root() {
        bail!(
            "the agent attaches an XDP program and pins maps in bpffs, which needs root: \
             run `cargo xtask run` as root"
        );
    }
    setup::run()?;
    let binary = build::agent(build::Profile::Release)?;

    let mut args = vec!["agent".to_owned(), "run".to_owned()];
    let iface = if names_iface(&agent_args) {
        "as given".to_owned()
    } else {
        let iface = route::default_interface()?;
        args.extend(["--iface".to_owned(), iface.clone()]);
        iface
    };
    let geoip = if chooses_geoip(&agent_args) {
        "as configured".to_owned()
    } else if let Some(files) = geoip::present() {
        args.extend(geoip::agent_args(&files));
        format!("DB-IP City Lite from {}", geoip::DIR)
    } else {
        "none (`cargo xtask setup --geoip` fetches DB-IP City Lite for the map)".to_owned()
    };
    args.extend(agent_args);

    println!("starting  {}", binary.display());
    println!("interface {iface}");
    println!("geoip     {geoip}");
    println!(
        "socket, database and pins at the agent's defaults unless given: \
         {DEFAULT_SOCKET}, {DEFAULT_DATABASE}, {DEFAULT_PINS}"
    );
    let mut agent = process::command(&binary);
    agent.args(&args);
    println!("$ {}", process::display(&agent));
    // exec only returns when it failed.
    let error = agent.exec();
    bail!("could not start {}: {error}", binary.display())
}

/// Whether the user chose the interface themselves (`--iface eth0` or `--iface=eth0`).
fn names_iface(agent_args: &[String]) -> bool {
    agent_args
        .iter()
        .any(|arg| arg == "--iface" || arg.starts_with("--iface="))
}

/// Whether the user chose the GeoIP databases themselves: a flag, the environment, or the
/// configuration file (which a flag would override).
fn chooses_geoip(agent_args: &[String]) -> bool {
    let config = agent_args
        .iter()
        .position(|arg| arg == "--config")
        .and_then(|at| agent_args.get(at + 1).cloned())
        .or_else(|| {
            agent_args
                .iter()
                .find_map(|arg| arg.strip_prefix("--config=").map(str::to_owned))
        })
        .or_else(|| std::env::var("TRACKING_CONFIG").ok())
        .unwrap_or_else(|| DEFAULT_CONFIG.to_owned());
    names_geoip(agent_args)
        || std::env::var_os("TRACKING_GEOIP_DB").is_some()
        || std::fs::read_to_string(Path::new(&config)).is_ok_and(|text| sets_geoip(&text))
}

fn names_geoip(agent_args: &[String]) -> bool {
    agent_args
        .iter()
        .any(|arg| arg == "--geoip-db" || arg.starts_with("--geoip-db="))
}

/// Whether a TOML configuration sets `geoip_db`.
fn sets_geoip(config: &str) -> bool {
    config.lines().any(|line| {
        line.trim_start()
            .strip_prefix("geoip_db")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|&word| word.to_owned()).collect()
    }

    #[test]
    fn an_interface_given_by_the_user_is_kept() {
        assert!(names_iface(&args(&["--iface", "eth1"])));
        assert!(names_iface(&args(&["--monitor", "--iface=eth1"])));
    }

    #[test]
    fn without_an_interface_the_default_route_is_used() {
        assert!(!names_iface(&args(&[])));
        assert!(!names_iface(&args(&["--interface-speed", "10"])));
    }

    #[test]
    fn geoip_databases_given_by_the_user_are_kept() {
        assert!(names_geoip(&args(&["--geoip-db", "/srv/City.mmdb"])));
        assert!(names_geoip(&args(&["--geoip-db=/srv/City.mmdb"])));
        assert!(!names_geoip(&args(&["--iface", "eth1"])));
        assert!(sets_geoip(
            "iface = [\"eth0\"]\ngeoip_db = \"/srv/City.mmdb\"\n"
        ));
        assert!(sets_geoip("  geoip_db=[\"a.mmdb\", \"b.mmdb\"]"));
        assert!(!sets_geoip(
            "# geoip_db = \"/srv/City.mmdb\"\ndatabase = \"x.db\""
        ));
        assert!(!sets_geoip("geoip_dbx = 1"));
    }
}
