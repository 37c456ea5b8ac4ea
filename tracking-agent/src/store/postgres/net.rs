//! Networks as PostgreSQL's `cidr`, in its binary wire form.
//!
//! Why `cidr` rather than text or bytes: it refuses a network with host bits set, it sorts
//! exactly like [`IpNet`] for the networks the store keeps (IPv4 first, then by address, then a
//! network before its longer prefixes: PostgreSQL compares the common prefix, then the prefix
//! length), so listings come out in order straight from the primary key, and an operator reads
//! and queries it in `psql` as `192.0.2.0/24`. tokio-postgres has no `cidr` support without
//! pulling in another crate's network type, and the wire form is eight lines, so it lives here.
//!
//! The form (PostgreSQL's `network_send`): family (2 for IPv4, 3 for IPv6), prefix length, a
//! "is cidr" flag, the address length (4 or 16), the address bytes.

use std::{
    error::Error,
    net::{Ipv4Addr, Ipv6Addr},
};

use bytes::{BufMut, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// PostgreSQL's own family numbers, which are not the operating system's.
const FAMILY_V4: u8 = 2;
const FAMILY_V6: u8 = 3;

/// A network bound to or read from a `cidr` column. Host bits must be clear: the server refuses
/// them in a `cidr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cidr(pub(super) IpNet);

/// Appends the wire form of `net` (what [`Cidr`] sends) to `out`.
pub(super) fn write(net: &IpNet, out: &mut BytesMut) {
    match net {
        IpNet::V4(n) => {
            out.put_slice(&[FAMILY_V4, n.prefix_len(), 1, 4]);
            out.put_slice(&n.addr().octets());
        }
        IpNet::V6(n) => {
            out.put_slice(&[FAMILY_V6, n.prefix_len(), 1, 16]);
            out.put_slice(&n.addr().octets());
        }
    }
}

/// Length of the wire form of `net`.
pub(super) fn len(net: &IpNet) -> usize {
    match net {
        IpNet::V4(_) => 8,
        IpNet::V6(_) => 20,
    }
}

/// Reads the wire form of a `cidr` (or `inet`) value.
fn read(raw: &[u8]) -> Result<IpNet, String> {
    let bad = |why: &str| format!("network value {raw:02x?}: {why}");
    let [family, prefix, _is_cidr, size, address @ ..] = raw else {
        return Err(bad("too short"));
    };
    if usize::from(*size) != address.len() {
        return Err(bad("address length does not match"));
    }
    let net = match (*family, address.len()) {
        (FAMILY_V4, 4) => {
            let octets: [u8; 4] = address.try_into().expect("4 bytes");
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(octets), *prefix)
                    .map_err(|_| bad("prefix longer than /32"))?,
            )
        }
        (FAMILY_V6, 16) => {
            let octets: [u8; 16] = address.try_into().expect("16 bytes");
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(octets), *prefix)
                    .map_err(|_| bad("prefix longer than /128"))?,
            )
        }
        _ => return Err(bad("unknown family")),
    };
    Ok(net)
}

impl ToSql for Cidr {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        write(&self.0, out);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::CIDR
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Cidr {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cidr(read(raw)?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::CIDR
    }
}

/// `nets` as bind values for a `cidr[]` parameter.
pub(super) fn array(nets: &[IpNet]) -> Vec<Cidr> {
    nets.iter().copied().map(Cidr).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_round_trips() {
        for s in [
            "0.0.0.0/0",
            "192.0.2.0/24",
            "192.0.2.1/32",
            "::/0",
            "2001:db8::/32",
        ] {
            let net: IpNet = s.parse().unwrap();
            let mut out = BytesMut::new();
            write(&net, &mut out);
            assert_eq!(out.len(), len(&net));
            assert_eq!(read(&out), Ok(net), "{s}");
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(read(&[2, 24, 1]).unwrap_err().contains("too short"));
        assert!(
            read(&[2, 24, 1, 16, 0, 0, 0, 0])
                .unwrap_err()
                .contains("length")
        );
        assert!(
            read(&[7, 24, 1, 4, 0, 0, 0, 0])
                .unwrap_err()
                .contains("family")
        );
        assert!(
            read(&[2, 33, 1, 4, 0, 0, 0, 0])
                .unwrap_err()
                .contains("/32")
        );
    }
}
