//! The peers' firewall state inside a throwaway namespace, each piece a guard that removes it
//! on drop, also on panic: an nftables table, an ipset, an iptables rule. Deleting the namespace
//! would take them along, but removing them explicitly means nothing outlives a benchmark even
//! while its namespace still stands, and a removal that fails is said out loud.
//!
//! And [`run_in`]: a peer's program run inside a namespace and timed.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{command, netns, netns::Netns};

/// Runs `program args` inside `netns` and returns its stdout and how long it took, from spawn
/// to exit. The program is spawned from a thread that joined the namespace (a child inherits
/// its creator's network namespace), so no `nsenter` is timed along with it.
pub fn run_in<I, S>(
    netns: &Netns,
    program: &str,
    args: I,
    stdin: Option<&Path>,
) -> anyhow::Result<(String, Duration)>
where
    I: IntoIterator<Item = S> + Send,
    S: AsRef<OsStr>,
{
    netns.run(|| {
        let mut command = Command::new(program);
        command.args(args);
        match stdin {
            Some(path) => command
                .stdin(std::fs::File::open(path).with_context(|| format!("{}", path.display()))?),
            None => command.stdin(Stdio::null()),
        };
        let started = Instant::now();
        let out = command::run(&mut command)?;
        Ok((out, started.elapsed()))
    })
}

/// Runs a clean-up command inside the namespace at `netns`; an error that only says the thing
/// is already gone (`gone` is part of the message) is not one.
fn remove(netns: &Path, program: &str, args: &[&str], gone: &[&str]) -> anyhow::Result<()> {
    if !netns.exists() {
        // The namespace went first, and everything in it.
        return Ok(());
    }
    match command::run(netns::command_in(netns, program).args(args)) {
        Ok(_) => Ok(()),
        Err(e) if gone.iter().any(|g| e.to_string().contains(g)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An nftables table in a namespace, which may or may not exist yet: dropping the guard deletes
/// it if it does.
#[derive(Debug)]
pub struct NftTable {
    netns: PathBuf,
    family: &'static str,
    name: String,
}

impl NftTable {
    pub fn guard(netns: &Netns, family: &'static str, name: impl Into<String>) -> NftTable {
        NftTable {
            netns: netns.path().to_owned(),
            family,
            name: name.into(),
        }
    }

    pub fn family(&self) -> &'static str {
        self.family
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the table now, if it exists.
    pub fn remove(&self) -> anyhow::Result<()> {
        remove(
            &self.netns,
            "nft",
            &["delete", "table", self.family, &self.name],
            &["No such file or directory"],
        )
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("bench: could not delete nft table {}: {e:#}", self.name);
        }
    }
}

/// An ipset in a namespace, which may or may not exist yet: dropping the guard destroys it if
/// it does. A rule that uses the set must go first (declare its guard after this one's).
#[derive(Debug)]
pub struct IpSet {
    netns: PathBuf,
    name: String,
}

impl IpSet {
    pub fn guard(netns: &Netns, name: impl Into<String>) -> IpSet {
        IpSet {
            netns: netns.path().to_owned(),
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Destroys the set now, if it exists.
    pub fn remove(&self) -> anyhow::Result<()> {
        remove(
            &self.netns,
            "ipset",
            &["destroy", &self.name],
            &["does not exist"],
        )
    }
}

impl Drop for IpSet {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("bench: could not destroy ipset {}: {e:#}", self.name);
        }
    }
}

/// An iptables rule appended to a chain in a namespace; dropping the guard deletes it.
#[derive(Debug)]
pub struct IptablesRule {
    netns: PathBuf,
    table: &'static str,
    chain: &'static str,
    rule: Vec<String>,
}

impl IptablesRule {
    /// `iptables -t <table> -A <chain> <rule>` inside `netns`.
    pub fn append(
        netns: &Netns,
        table: &'static str,
        chain: &'static str,
        rule: &[&str],
    ) -> anyhow::Result<IptablesRule> {
        let guard = IptablesRule {
            netns: netns.path().to_owned(),
            table,
            chain,
            rule: rule.iter().map(|s| s.to_string()).collect(),
        };
        command::run(
            netns
                .command("iptables")
                .args(["-t", table, "-A", chain])
                .args(rule),
        )?;
        Ok(guard)
    }

    /// The rule's packet counter: `iptables -t <table> -L <chain> -v -x -n`, the first rule that
    /// mentions `marker` (the chain holds only this benchmark's rules).
    pub fn packets(&self, marker: &str) -> anyhow::Result<u64> {
        let listing = command::run(
            netns::command_in(&self.netns, "iptables")
                .args(["-t", self.table, "-L", self.chain, "-v", "-x", "-n"]),
        )?;
        iptables_packets(&listing, marker)
            .with_context(|| format!("no rule with `{marker}` in\n{listing}"))
    }
}

/// The packet count of the first rule line mentioning `marker` in `iptables -L -v -x` output.
fn iptables_packets(listing: &str, marker: &str) -> Option<u64> {
    listing
        .lines()
        .filter(|l| !l.starts_with("Chain") && l.contains(marker))
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let mut args = vec!["-t", self.table, "-D", self.chain];
        args.extend(self.rule.iter().map(String::as_str));
        if let Err(e) = remove(
            &self.netns,
            "iptables",
            &args,
            &["does a matching rule exist"],
        ) {
            eprintln!("bench: could not delete iptables rule: {e:#}");
        }
    }
}

/// The packet count of an nft named counter, from `nft list counter`: `packets N bytes M`.
pub fn nft_counter_packets(listing: &str) -> Option<u64> {
    let mut words = listing.split_whitespace();
    words.find(|w| *w == "packets")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_counters_are_read_from_the_rule_line() {
        let listing = "Chain PREROUTING (policy ACCEPT 12 packets, 900 bytes)\n    \
            pkts      bytes target     prot opt in     out     source               destination         \n 4242317 195146582 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0            match-set trkflood src\n";
        assert_eq!(iptables_packets(listing, "match-set"), Some(4_242_317));
        assert_eq!(iptables_packets(listing, "nothing"), None);
    }

    #[test]
    fn nft_counters_are_read_from_the_listing() {
        let listing =
            "table netdev t {\n\tcounter dropped {\n\t\tpackets 1234567 bytes 74074020\n\t}\n}\n";
        assert_eq!(nft_counter_packets(listing), Some(1_234_567));
        assert_eq!(nft_counter_packets("table netdev t {}"), None);
    }
}
