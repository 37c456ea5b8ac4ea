//! [`Site`]: the standard fixture of the filter tests. A server namespace running the agent
//! (XDP on its end of the veth pair) and an echo server, a client namespace with several
//! addresses, and assertions on whether TCP and UDP from a client address get through.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::{Agent, AgentOptions, EchoServer, Topology, require_root, traffic};

/// How long an exchange that should succeed may take.
pub const PASS: Duration = Duration::from_secs(3);
/// How long to wait before calling an exchange dropped.
pub const DROP: Duration = Duration::from_millis(700);

/// A server namespace running the agent and an echo server, and a client namespace.
pub struct Site {
    // Dropped first: the agent detaches before the namespaces go.
    pub agent: Agent,
    pub echo: EchoServer,
    pub topology: Topology,
}

impl Site {
    pub fn new() -> Site {
        Site::with_args(&[])
    }

    pub fn with_args(args: &[&str]) -> Site {
        Site::with_options(|options| options.args(args))
    }

    /// A site whose agent starts with the options `options` makes of the standard ones (the
    /// interface set), e.g. another `--database`.
    pub fn with_options(options: impl FnOnce(AgentOptions) -> AgentOptions) -> Site {
        require_root();
        let topology = Topology::new().expect("topology");
        let echo =
            EchoServer::start(topology.server(), "[::]:0".parse().unwrap()).expect("echo server");
        let agent = Agent::start(
            topology.server(),
            options(AgentOptions::new(topology.server_iface())),
        )
        .expect("agent");
        Site {
            agent,
            echo,
            topology,
        }
    }

    pub fn banned_v4(&self) -> IpAddr {
        self.topology.client_v4()[0].into()
    }

    pub fn other_v4(&self) -> IpAddr {
        self.topology.client_v4()[1].into()
    }

    pub fn banned_v6(&self) -> IpAddr {
        self.topology.client_v6()[0].into()
    }

    pub fn other_v6(&self) -> IpAddr {
        self.topology.client_v6()[1].into()
    }

    pub fn server_for(&self, from: IpAddr) -> SocketAddr {
        let server: IpAddr = if from.is_ipv4() {
            self.topology.server_v4().into()
        } else {
            self.topology.server_v6().into()
        };
        SocketAddr::new(server, self.echo.port())
    }

    /// Whether TCP from `from` gets an echo.
    pub fn tcp(&self, from: IpAddr, timeout: Duration) -> bool {
        let to = self.server_for(from);
        self.topology
            .client()
            .run(|| traffic::tcp_connects(from, to, timeout))
    }

    /// Whether UDP from `from` gets an echo.
    pub fn udp(&self, from: IpAddr, timeout: Duration) -> bool {
        let to = self.server_for(from);
        self.topology
            .client()
            .run(|| traffic::udp_roundtrip(from, to, timeout))
    }

    pub fn assert_passes(&self, from: IpAddr) {
        assert!(
            self.tcp(from, PASS),
            "TCP from {from} should pass\n{}",
            self.agent.log_tail()
        );
        assert!(
            self.udp(from, PASS),
            "UDP from {from} should pass\n{}",
            self.agent.log_tail()
        );
    }

    pub fn assert_dropped(&self, from: IpAddr) {
        assert!(
            !self.tcp(from, DROP),
            "TCP from {from} should be dropped\n{}",
            self.agent.log_tail()
        );
        assert!(
            !self.udp(from, DROP),
            "UDP from {from} should be dropped\n{}",
            self.agent.log_tail()
        );
    }

    pub fn cli_fails(&self, args: &[&str]) -> String {
        let out = self.agent.cli(args);
        assert!(
            !out.status.success(),
            "`tracking {}` should fail",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.agent.cli_ok(["stats", "--json"])).expect("stats JSON")
    }

    pub fn bans(&self) -> Vec<serde_json::Value> {
        let list: serde_json::Value =
            serde_json::from_str(&self.agent.cli_ok(["ban", "ls", "--json"])).expect("ban ls JSON");
        list["bans"].as_array().expect("a list of bans").clone()
    }

    pub fn hits(&self, network: &str) -> u64 {
        self.bans()
            .iter()
            .find(|b| b["network"] == network)
            .unwrap_or_else(|| panic!("{network} not in ban ls"))["hits"]
            .as_u64()
            .unwrap()
    }
}

impl Default for Site {
    fn default() -> Self {
        Site::new()
    }
}

impl Site {
    /// The program filtering the server's end now, for `BPF_PROG_TEST_RUN`, found through the
    /// agent's pinned link.
    pub fn attached(&self) -> crate::xdp::XdpRun {
        let links = self.agent.pin_dir().join("links");
        let link = std::fs::read_dir(&links)
            .expect("the agent's links")
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}@", self.topology.server_iface()))
            })
            .unwrap_or_else(|| panic!("no link pinned in {}", links.display()));
        crate::xdp::XdpRun::attached_at(&link.path()).expect("the attached program")
    }

    /// Sends UDP datagrams from the client to the server's `port` as raw frames: from `from`
    /// (an IPv4 source sent to the server's IPv6 address becomes IPv4-mapped), behind `tags`.
    pub fn send_raw(
        &self,
        from: IpAddr,
        v6: bool,
        port: u16,
        tags: &[crate::raw::Tag],
        count: usize,
    ) {
        let dst_mac = crate::raw::mac(self.topology.server(), self.topology.server_iface())
            .expect("server MAC");
        let src_mac = crate::raw::mac(self.topology.client(), self.topology.client_iface())
            .expect("client MAC");
        let to: IpAddr = if v6 {
            self.topology.server_v6().into()
        } else {
            self.topology.server_v4().into()
        };
        let frames: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                crate::raw::udp(
                    dst_mac,
                    src_mac,
                    SocketAddr::new(from, 40000 + i as u16),
                    SocketAddr::new(to, port),
                    tags,
                    b"raw tracking test",
                )
            })
            .collect();
        crate::raw::send(
            self.topology.client(),
            self.topology.client_iface(),
            &frames,
        )
        .expect("send raw frames");
    }
}

pub fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}
