//! [`VethPair`]: a virtual cable between two namespaces, each end with its addresses and up.

use std::io;

use ipnet::IpNet;

use crate::{command, netns::Netns, unique::IFNAME_MAX};

/// One end of a pair to create: where it goes, its name, and its addresses.
#[derive(Clone, Copy, Debug)]
pub struct VethSpec<'a> {
    pub netns: &'a Netns,
    /// At most 15 bytes (a Linux interface name).
    pub name: &'a str,
    /// Addresses with their prefix, e.g. `10.1.2.1/24`, `fd00:1:2::1/64`.
    pub addresses: &'a [IpNet],
}

/// One end of a [`VethPair`].
#[derive(Debug)]
pub struct VethEnd {
    /// The namespace's name; the end does not borrow the [`Netns`] so that a fixture can own
    /// both (declare the pair first so it is dropped first).
    netns: String,
    name: String,
}

impl VethEnd {
    /// The interface name inside its namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the namespace this end lives in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Adds an address, e.g. a further source address for a client. IPv6 addresses skip
    /// duplicate address detection (`nodad`), so they can be bound at once instead of after a
    /// second or two of "tentative".
    pub fn add_address(&self, address: IpNet) -> io::Result<()> {
        let address = address.to_string();
        let mut args = vec![
            "-n",
            &self.netns,
            "address",
            "add",
            &address,
            "dev",
            &self.name,
        ];
        if address.contains(':') {
            args.push("nodad");
        }
        command::ip(args).map(drop)
    }

    fn up(&self) -> io::Result<()> {
        command::ip(["-n", &self.netns, "link", "set", &self.name, "up"]).map(drop)
    }
}

/// A veth pair between two namespaces, both ends up with their addresses. Deleted on drop
/// (deleting one end deletes both; deleting either namespace does too).
#[derive(Debug)]
pub struct VethPair {
    a: VethEnd,
    b: VethEnd,
}

impl VethPair {
    /// Creates the pair directly in the two namespaces (the names never exist outside them, so
    /// they only need to be unique there), adds the addresses and brings both ends up.
    pub fn new(a: VethSpec<'_>, b: VethSpec<'_>) -> io::Result<VethPair> {
        for name in [a.name, b.name] {
            if name.is_empty() || name.len() > IFNAME_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("interface name {name:?} must have 1 to {IFNAME_MAX} bytes"),
                ));
            }
        }
        command::ip([
            "link",
            "add",
            a.name,
            "netns",
            a.netns.name(),
            "type",
            "veth",
            "peer",
            "name",
            b.name,
            "netns",
            b.netns.name(),
        ])?;
        // From here on a failure drops the guard, which deletes the pair.
        let pair = VethPair {
            a: VethEnd {
                netns: a.netns.name().to_owned(),
                name: a.name.to_owned(),
            },
            b: VethEnd {
                netns: b.netns.name().to_owned(),
                name: b.name.to_owned(),
            },
        };
        for (end, spec) in [(&pair.a, a), (&pair.b, b)] {
            for &address in spec.addresses {
                end.add_address(address)?;
            }
            end.up()?;
        }
        Ok(pair)
    }

    /// The end created from the first spec.
    pub fn a(&self) -> &VethEnd {
        &self.a
    }

    /// The end created from the second spec.
    pub fn b(&self) -> &VethEnd {
        &self.b
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Nothing to do when the namespace went first: the pair went with it.
        if !std::path::Path::new("/run/netns")
            .join(&self.a.netns)
            .exists()
        {
            return;
        }
        if let Err(error) = command::ip(["-n", &self.a.netns, "link", "del", &self.a.name]) {
            eprintln!("harness: could not delete veth {}: {error}", self.a.name);
        }
    }
}
