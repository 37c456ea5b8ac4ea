//! [`Topology`]: the standard test network. A server namespace (where the agent and the echo
//! server run) and a client namespace joined by one veth pair:
//!
//! ```text
//!  client netns                               server netns
//!  c<tag>: 10.x.y.2-4/24, fd00:x:y::2-4/64 <-> s<tag>: 10.x.y.1/24, fd00:x:y::1/64
//! ```
//!
//! The client has several addresses so that one test can send from a banned and from an
//! unbanned source.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    netns::Netns,
    unique,
    veth::{VethPair, VethSpec},
};

/// Host numbers of the client's addresses in the subnet (`.2`, `.3`, `.4`; `::2`, `::3`, `::4`).
const CLIENT_HOSTS: [u8; 3] = [2, 3, 4];

/// Server and client namespaces with a veth pair between them. Dropped in field order: the
/// pair, then the namespaces.
#[derive(Debug)]
pub struct Topology {
    veth: VethPair,
    server: Netns,
    client: Netns,
    server_v4: Ipv4Addr,
    server_v6: Ipv6Addr,
    client_v4: Vec<Ipv4Addr>,
    client_v6: Vec<Ipv6Addr>,
}

impl Topology {
    pub fn new() -> io::Result<Topology> {
        let (x, y) = unique::subnet();
        let v4 = |host: u8| Ipv4Addr::new(10, x, y, host);
        let v6 = |host: u8| Ipv6Addr::new(0xfd00, x.into(), y.into(), 0, 0, 0, 0, host.into());
        let server_v4 = v4(1);
        let server_v6 = v6(1);
        let client_v4: Vec<Ipv4Addr> = CLIENT_HOSTS.iter().map(|&host| v4(host)).collect();
        let client_v6: Vec<Ipv6Addr> = CLIENT_HOSTS.iter().map(|&host| v6(host)).collect();

        let server = Netns::new("srv")?;
        let client = Netns::new("cli")?;
        let tag = unique::tag();
        let server_addresses = [net(server_v4.into()), net(server_v6.into())];
        let client_addresses: Vec<IpNet> = client_v4
            .iter()
            .map(|&a| net(a.into()))
            .chain(client_v6.iter().map(|&a| net(a.into())))
            .collect();
        let veth = VethPair::new(
            VethSpec {
                netns: &server,
                name: &format!("s{tag}"),
                addresses: &server_addresses,
            },
            VethSpec {
                netns: &client,
                name: &format!("c{tag}"),
                addresses: &client_addresses,
            },
        )?;
        Ok(Topology {
            veth,
            server,
            client,
            server_v4,
            server_v6,
            client_v4,
            client_v6,
        })
    }

    /// Where the agent and the servers run.
    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// Where traffic comes from.
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The server's end of the cable: the interface the agent attaches to.
    pub fn server_iface(&self) -> &str {
        self.veth.a().name()
    }

    pub fn client_iface(&self) -> &str {
        self.veth.b().name()
    }

    pub fn veth(&self) -> &VethPair {
        &self.veth
    }

    pub fn server_v4(&self) -> Ipv4Addr {
        self.server_v4
    }

    pub fn server_v6(&self) -> Ipv6Addr {
        self.server_v6
    }

    /// The server's IPv4 and IPv6 addresses.
    pub fn server_addrs(&self) -> [IpAddr; 2] {
        [self.server_v4.into(), self.server_v6.into()]
    }

    /// The client's IPv4 addresses, `.2` first.
    pub fn client_v4(&self) -> &[Ipv4Addr] {
        &self.client_v4
    }

    /// The client's IPv6 addresses, `::2` first.
    pub fn client_v6(&self) -> &[Ipv6Addr] {
        &self.client_v6
    }

    /// Every client address, IPv4 first.
    pub fn client_addrs(&self) -> Vec<IpAddr> {
        let v4 = self.client_v4.iter().map(|&a| IpAddr::from(a));
        v4.chain(self.client_v6.iter().map(|&a| a.into())).collect()
    }

    /// Adds a further client source address (with the subnet's prefix length when it is in the
    /// subnet, else as a host address; the server reaches it only when it is in the subnet).
    pub fn add_client_address(&mut self, address: IpAddr) -> io::Result<()> {
        let in_subnet = match address {
            IpAddr::V4(a) => net(self.server_v4.into()).contains(&IpAddr::V4(a)),
            IpAddr::V6(a) => net(self.server_v6.into()).contains(&IpAddr::V6(a)),
        };
        let with_prefix = if in_subnet {
            net(address)
        } else {
            IpNet::from(address)
        };
        self.veth.b().add_address(with_prefix)?;
        match address {
            IpAddr::V4(a) => self.client_v4.push(a),
            IpAddr::V6(a) => self.client_v6.push(a),
        }
        Ok(())
    }
}

/// The address with the topology's prefix length: /24 for IPv4, /64 for IPv6.
fn net(address: IpAddr) -> IpNet {
    match address {
        IpAddr::V4(a) => Ipv4Net::new(a, 24)
            .expect("24 is a valid IPv4 prefix")
            .into(),
        IpAddr::V6(a) => Ipv6Net::new(a, 64)
            .expect("64 is a valid IPv6 prefix")
            .into(),
    }
}
