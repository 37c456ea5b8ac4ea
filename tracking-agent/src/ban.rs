//! Bans and allowlist entries: what the store keeps and the kernel enforces.
//!
//! A ban is identified by its network *and* its source: the same network may be banned by hand
//! (`cli`) and by a synced list at once, and syncing that list must not lift the manual ban. What
//! the kernel enforces for a network is the union of its ban records, an [`Effective`] ban that
//! lasts as long as the longest of them.

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Source of bans added one by one from the CLI.
pub const SOURCE_CLI: &str = "cli";

/// One ban record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The banned network, host bits cleared (a single address is a /32 or /128).
    pub network: IpNet,
    /// Who asked for it: `cli`, `api`, `admin`, or the name a block list was synced under.
    pub source: String,
    /// Free text shown in listings (a Spamhaus SBL id, "scanner", ...); may be empty.
    #[serde(default)]
    pub reason: String,
    /// When the record was first created.
    pub created: Timestamp,
    /// When it stops applying; `None` for never.
    pub expires: Option<Timestamp>,
}

impl Ban {
    /// Whether the record still applies at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// One network of a synced list (`tracking ban sync`), as the store is given it: the source is
/// the list's, and a synced record is created by the sync and never expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The listed network; a store clears host bits the caller left.
    pub network: IpNet,
    /// The line's comment, often empty: a `Box<str>` holds an empty one without allocating,
    /// which matters for a million of them.
    pub reason: Box<str>,
}

/// An allowlisted network: never dropped, whatever bans say (lockout protection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allow {
    pub network: IpNet,
    /// Why it is allowlisted; may be empty.
    #[serde(default)]
    pub note: String,
    pub created: Timestamp,
}

/// What the kernel should do about one network after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effective {
    /// Drop it until `expires` (`None`: until unbanned).
    Banned { expires: Option<Timestamp> },
    /// No live ban record is left.
    Unbanned,
}

/// The kernel-side consequence of a store change for one network.
pub type Effect = (IpNet, Effective);

/// `net` with its host bits cleared, and whether any were set.
pub fn normalise(net: IpNet) -> (IpNet, bool) {
    let trunc = net.trunc();
    (trunc, trunc != net)
}

/// `networks` with host bits cleared, sorted, each once: the keys a removal looks up.
pub fn distinct_networks(mut networks: Vec<IpNet>) -> Vec<IpNet> {
    for network in &mut networks {
        *network = network.trunc();
    }
    networks.sort_unstable();
    networks.dedup();
    networks
}

/// Whether `net` covers every address of its family (0.0.0.0/0 or ::/0).
pub fn is_everything(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

/// Whether `a` and `b` share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// How [`parse_network`] changed what it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Normalised {
    /// Host bits were set and are cleared: `192.0.2.77/24` is `192.0.2.0/24`.
    pub host_bits_cleared: bool,
    /// An IPv4-mapped IPv6 network became the IPv4 network it names: `::ffff:192.0.2.7` is
    /// `192.0.2.7`, which is how the filter judges such a source.
    pub unmapped: bool,
}

impl Normalised {
    /// A warning for `given`, now `net`, if anything changed.
    pub fn warning(self, given: &str, net: &IpNet) -> Option<String> {
        if self.unmapped {
            Some(format!(
                "{given} is an IPv4-mapped address; using {net}, as which the filter judges it"
            ))
        } else if self.host_bits_cleared {
            Some(format!("{given} has host bits set; using {net}"))
        } else {
            None
        }
    }
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it names, and whether it was
/// one: the program matches an IPv4-mapped source against the IPv4 bans and allowlist.
pub fn unmap(net: IpNet) -> (IpNet, bool) {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = n.addr().to_ipv4_mapped()
    {
        let len = n.prefix_len() - 96;
        return (
            IpNet::V4(Ipv4Net::new(v4, len).expect("at most 32 bits")),
            true,
        );
    }
    (net, false)
}

/// Parses an address or network as typed by a person: `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`.
/// Returns the normalised network and what normalising changed.
pub fn parse_network(s: &str) -> Result<(IpNet, Normalised), String> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| format!("`{s}` is not an IP address or network"))?
    } else {
        let addr: std::net::IpAddr = s
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or network"))?;
        IpNet::from(addr)
    };
    let (net, unmapped) = unmap(net);
    let (net, host_bits_cleared) = normalise(net);
    Ok((
        net,
        Normalised {
            host_bits_cleared,
            unmapped,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEARED: Normalised = Normalised {
        host_bits_cleared: true,
        unmapped: false,
    };
    const UNMAPPED: Normalised = Normalised {
        host_bits_cleared: false,
        unmapped: true,
    };

    #[test]
    fn single_addresses_become_host_networks() {
        assert_eq!(
            parse_network("192.0.2.1").unwrap(),
            ("192.0.2.1/32".parse().unwrap(), Normalised::default())
        );
        assert_eq!(
            parse_network("2001:db8::1").unwrap(),
            ("2001:db8::1/128".parse().unwrap(), Normalised::default())
        );
    }

    #[test]
    fn host_bits_are_cleared_and_reported() {
        assert_eq!(
            parse_network("192.0.2.77/24").unwrap(),
            ("192.0.2.0/24".parse().unwrap(), CLEARED)
        );
    }

    #[test]
    fn an_ipv4_mapped_address_or_network_becomes_its_ipv4_one() {
        assert_eq!(
            parse_network("::ffff:10.0.0.5").unwrap(),
            ("10.0.0.5/32".parse().unwrap(), UNMAPPED)
        );
        assert_eq!(
            parse_network("::ffff:10.0.0.0/104").unwrap(),
            ("10.0.0.0/8".parse().unwrap(), UNMAPPED)
        );
        // Wider than the mapped range: an IPv6 network like any other.
        assert_eq!(
            parse_network("::ffff:0:0/95").unwrap().0,
            "::fffe:0:0/95".parse::<IpNet>().unwrap()
        );
        let (net, how) = parse_network("::ffff:10.0.0.5").unwrap();
        assert_eq!(
            how.warning("::ffff:10.0.0.5", &net).unwrap(),
            "::ffff:10.0.0.5 is an IPv4-mapped address; using 10.0.0.5/32, as which the filter judges it"
        );
    }

    #[test]
    fn garbage_is_named() {
        assert_eq!(
            parse_network("300.1.1.1").unwrap_err(),
            "`300.1.1.1` is not an IP address or network"
        );
        assert!(parse_network("10.0.0.0/33").is_err());
    }
}
