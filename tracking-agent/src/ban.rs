//! Bans and allowlist entries: what the store keeps and the kernel enforces.
//!
//! A ban is identified by its network *and* its source: the same network may be banned by hand
//! (`cli`) and by a synced list at once, and syncing that list must not lift the manual ban. What
//! the kernel enforces for a network is the union of its ban records, an [`Effective`] ban that
//! lasts as long as the longest of them.

use ipnet::IpNet;
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

/// Parses an address or network as typed by a person: `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`.
/// Returns the normalised network and whether host bits had to be cleared.
pub fn parse_network(s: &str) -> Result<(IpNet, bool), String> {
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
    Ok(normalise(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_addresses_become_host_networks() {
        assert_eq!(
            parse_network("192.0.2.1").unwrap(),
            ("192.0.2.1/32".parse().unwrap(), false)
        );
        assert_eq!(
            parse_network("2001:db8::1").unwrap(),
            ("2001:db8::1/128".parse().unwrap(), false)
        );
    }

    #[test]
    fn host_bits_are_cleared_and_reported() {
        assert_eq!(
            parse_network("192.0.2.77/24").unwrap(),
            ("192.0.2.0/24".parse().unwrap(), true)
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
