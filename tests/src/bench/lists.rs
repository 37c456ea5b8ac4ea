//! The ban lists the flood and load benchmarks give every filter: random public-looking IPv4
//! addresses, the same ones for the agent and its peers, each written in its own input format
//! (a Spamhaus-style list for `tracking ban sync`, nft elements, `ipset restore` lines).
//!
//! Exact addresses only: with networks mixed in, nftables needs an interval set, which loads
//! several times slower, and the comparison would be against nftables at less than its best.

use std::{collections::HashSet, fmt::Write as _, net::Ipv4Addr};

use super::Xorshift;

/// Every how many lines the agent's list carries a Spamhaus-style `; SBLnnn` reason.
const REASON_EVERY: usize = 1000;

/// `n` distinct addresses, none in 0/8, 10/8, 127/8 or 224/3: the test networks are in 10/8,
/// and a list should not name loopback, multicast or reserved space a filter may treat apart.
pub fn addresses(n: usize, seed: u64) -> Vec<Ipv4Addr> {
    let mut rnd = Xorshift::new(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = Ipv4Addr::from(rnd.next() as u32);
        if public_looking(a) && seen.insert(a) {
            out.push(a);
        }
    }
    out
}

fn public_looking(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    !(first == 0 || first == 10 || first == 127 || first >= 224)
}

/// A list after a re-sync's worth of change.
#[derive(Clone, Debug)]
pub struct Change {
    /// Entries of the old list that are gone.
    pub removed: Vec<Ipv4Addr>,
    /// Entries that are new.
    pub added: Vec<Ipv4Addr>,
    /// The new list: the old one without `removed`, then `added`.
    pub list: Vec<Ipv4Addr>,
}

/// Changes `fraction` of `list`: half of it removed (spread evenly over the list), as many new
/// addresses added, so the list keeps its length.
pub fn change(list: &[Ipv4Addr], fraction: f64, seed: u64) -> Change {
    let k = ((list.len() as f64 * fraction / 2.0).round() as usize).clamp(1, list.len());
    let step = list.len() / k;
    let removed: Vec<Ipv4Addr> = (0..k).map(|i| list[i * step + step / 2]).collect();
    let gone: HashSet<Ipv4Addr> = removed.iter().copied().collect();
    let old: HashSet<Ipv4Addr> = list.iter().copied().collect();
    let mut rnd = Xorshift::new(seed);
    let mut added = Vec::with_capacity(k);
    let mut fresh = HashSet::with_capacity(k);
    while added.len() < k {
        let a = Ipv4Addr::from(rnd.next() as u32);
        if public_looking(a) && !old.contains(&a) && fresh.insert(a) {
            added.push(a);
        }
    }
    let mut new = Vec::with_capacity(list.len());
    new.extend(list.iter().filter(|a| !gone.contains(a)));
    new.extend(&added);
    Change {
        removed,
        added,
        list: new,
    }
}

/// The agent's list format, as Spamhaus publishes DROP: a `;` comment header, one entry a line,
/// and an `; SBLnnn` reason on some lines.
pub fn tracking(list: &[Ipv4Addr]) -> String {
    let mut out = String::with_capacity(list.len() * 16 + 64);
    out.push_str("; benchmark list: random public-looking IPv4 addresses\n");
    for (i, a) in list.iter().enumerate() {
        if i % REASON_EVERY == 0 {
            let _ = writeln!(out, "{a} ; SBL{}", 100_000 + i / REASON_EVERY);
        } else {
            let _ = writeln!(out, "{a}");
        }
    }
    out
}

/// The inside of an nft `elements = { ... }`: the addresses separated by commas.
pub fn nft_elements(list: &[Ipv4Addr]) -> String {
    let mut out = String::with_capacity(list.len() * 16);
    for (i, a) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{a}");
    }
    out
}

/// `ipset restore` lines: `<verb> <set> <address>`, e.g. `add banned 192.0.2.1`.
pub fn ipset_lines(verb: &str, set: &str, list: &[Ipv4Addr]) -> String {
    let mut out = String::with_capacity(list.len() * (verb.len() + set.len() + 18));
    for a in list {
        let _ = writeln!(out, "{verb} {set} {a}");
    }
    out
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;
    use tracking_agent::blocklist;

    use super::*;

    #[test]
    fn addresses_are_distinct_public_looking_and_repeatable() {
        let a = addresses(10_000, 7);
        assert_eq!(a.len(), 10_000);
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 10_000);
        assert!(a.iter().all(|a| public_looking(*a)));
        assert!(!a.iter().any(|a| a.octets()[0] == 10));
        assert_eq!(a, addresses(10_000, 7));
        assert_ne!(a, addresses(10_000, 8));
    }

    #[test]
    fn a_change_removes_and_adds_the_same_number_of_entries() {
        let list = addresses(10_000, 1);
        let c = change(&list, 0.01, 2);
        assert_eq!(c.removed.len(), 50);
        assert_eq!(c.added.len(), 50);
        assert_eq!(c.list.len(), list.len());
        let old: HashSet<_> = list.iter().collect();
        let new: HashSet<_> = c.list.iter().collect();
        assert_eq!(new.len(), c.list.len(), "no duplicates");
        assert!(
            c.removed
                .iter()
                .all(|a| old.contains(a) && !new.contains(a))
        );
        assert!(c.added.iter().all(|a| !old.contains(a) && new.contains(a)));
        assert_eq!(old.intersection(&new).count(), list.len() - 50);
    }

    #[test]
    fn the_agents_list_parses_to_the_same_addresses_with_reasons() {
        let list = addresses(2_500, 3);
        let parsed = blocklist::parse(&tracking(&list)).expect("the agent reads the list");
        assert_eq!(parsed.entries.len(), list.len());
        assert_eq!(parsed.duplicates, 0);
        for (entry, a) in parsed.entries.iter().zip(&list) {
            assert_eq!(entry.network, IpNet::from(std::net::IpAddr::V4(*a)));
        }
        let reasons: Vec<&str> = parsed
            .entries
            .iter()
            .map(|e| &*e.reason)
            .filter(|r| !r.is_empty())
            .collect();
        assert_eq!(reasons.len(), 3);
        assert!(reasons[0].contains("SBL100000"), "{reasons:?}");
    }

    #[test]
    fn peer_formats() {
        let list = [
            "192.0.2.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
        ];
        assert_eq!(nft_elements(&list), "192.0.2.1, 198.51.100.7");
        assert_eq!(
            ipset_lines("del", "b", &list),
            "del b 192.0.2.1\ndel b 198.51.100.7\n"
        );
    }
}
