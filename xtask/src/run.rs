//! `cargo xtask run`: sets up, builds for release and replaces itself with the agent, running
//! as root on the interface of the default route.

use std::os::unix::process::CommandExt as _;

use anyhow::bail;

use crate::{build, process, route, setup};

/// Where the agent keeps its state unless told otherwise (it prints them too).
const DEFAULT_SOCKET: &str = "/run/tracking/tracking.sock";
const DEFAULT_DATABASE: &str = "/var/lib/tracking/tracking.db";
const DEFAULT_PINS: &str = "/sys/fs/bpf/tracking";

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
    args.extend(agent_args);

    println!("starting  {}", binary.display());
    println!("interface {iface}");
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
}
