//! How a network is written in the database.
//!
//! A network is an 18-byte BLOB: the family (`4` or `6`), 16 address bytes, the prefix length.
//! An IPv4 address takes its IPv4-mapped form (`::ffff:a.b.c.d`), the standard way to write it in
//! 16 bytes; the family byte keeps it apart from the IPv6 network `::ffff:0:0/96`.
//!
//! Why a BLOB rather than text: SQLite compares BLOBs byte by byte, so this key sorts exactly like
//! [`IpNet`] does (IPv4 before IPv6, then by address, then a network before its longer
//! prefixes), and listings come out in numeric order straight from the primary key; as text,
//! `9.0.0.0/8` would sort after `10.0.0.0/8`. Every subnet of a network also lies in one key
//! range, which a containment query can use later. And the form is fixed and checked on the way
//! back, where an IPv6 text form has several spellings.

use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rusqlite::Row;

use crate::store::{Result, StoreError};

/// Length of an encoded network.
pub(super) const LEN: usize = 18;

/// The key of `net`, which must have its host bits cleared (the store clears them on the way in).
pub(super) fn encode(net: &IpNet) -> [u8; LEN] {
    let (family, octets) = match net {
        IpNet::V4(n) => (4, n.addr().to_ipv6_mapped().octets()),
        IpNet::V6(n) => (6, n.addr().octets()),
    };
    let mut key = [0; LEN];
    key[0] = family;
    key[1..17].copy_from_slice(&octets);
    key[17] = net.prefix_len();
    key
}

/// The network of a key, refusing anything [`encode`] would not have written.
pub(super) fn decode(key: &[u8]) -> std::result::Result<IpNet, String> {
    let bad = |why: &str| format!("network key {key:02x?}: {why}");
    let key: &[u8; LEN] = key
        .try_into()
        .map_err(|_| bad(&format!("{} bytes, not {LEN}", key.len())))?;
    let octets: [u8; 16] = key[1..17].try_into().expect("16 bytes");
    let prefix = key[17];
    let net = match key[0] {
        4 => {
            let addr = Ipv6Addr::from(octets)
                .to_ipv4_mapped()
                .ok_or_else(|| bad("IPv4 address not in IPv4-mapped form"))?;
            IpNet::V4(Ipv4Net::new(addr, prefix).map_err(|_| bad("prefix longer than /32"))?)
        }
        6 => IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(octets), prefix)
                .map_err(|_| bad("prefix longer than /128"))?,
        ),
        other => return Err(bad(&format!("unknown address family {other}"))),
    };
    if net.trunc() != net {
        return Err(bad("host bits set"));
    }
    Ok(net)
}

/// The network in column `i` of `row`.
pub(super) fn column(row: &Row<'_>, i: usize) -> Result<IpNet> {
    match row.get_ref(i)?.as_blob() {
        Ok(blob) => decode(blob).map_err(StoreError::Corrupt),
        Err(_) => Err(StoreError::Corrupt(format!(
            "network column holds {:?}, not a key",
            row.get_ref(i)?.data_type()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn every_kind_of_network_round_trips() {
        for s in [
            "0.0.0.0/0",
            "192.0.2.0/24",
            "192.0.2.1/32",
            "::/0",
            "::ffff:0:0/96",
            "2001:db8::/32",
            "2001:db8::1/128",
        ] {
            assert_eq!(decode(&encode(&net(s))), Ok(net(s)), "{s}");
        }
    }

    #[test]
    fn keys_sort_like_networks() {
        let mut nets: Vec<IpNet> = [
            "10.0.0.0/8",
            "9.0.0.0/8",
            "10.0.0.0/24",
            "10.0.0.1/32",
            "::/0",
            "255.255.255.255/32",
            "::ffff:0:0/96",
            "2001:db8::/32",
            "0.0.0.0/0",
        ]
        .iter()
        .map(|s| net(s))
        .collect();
        let mut keys: Vec<[u8; LEN]> = nets.iter().map(encode).collect();
        nets.sort();
        keys.sort();
        let decoded: Vec<IpNet> = keys.iter().map(|k| decode(k).unwrap()).collect();
        assert_eq!(decoded, nets);
        assert_eq!(decoded[0], net("0.0.0.0/0"));
        assert_eq!(decoded[1], net("9.0.0.0/8"));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = encode(&net("192.0.2.0/24"));
        assert!(decode(&good[..17]).unwrap_err().contains("17 bytes"));

        let mut family = good;
        family[0] = 5;
        assert!(decode(&family).unwrap_err().contains("family 5"));

        let mut unmapped = good;
        unmapped[11] = 0;
        assert!(decode(&unmapped).unwrap_err().contains("IPv4-mapped"));

        let mut long = good;
        long[17] = 33;
        assert!(decode(&long).unwrap_err().contains("/32"));

        let mut host_bits = good;
        host_bits[16] = 7;
        assert!(decode(&host_bits).unwrap_err().contains("host bits"));
    }
}
