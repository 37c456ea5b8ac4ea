//! One topology per method, and one flood through it: what was sent, what the method's own
//! counter says it handled, and where the CPU time went.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use ipnet::IpNet;

use super::{cpu, live, offload, udp};
use crate::{
    Agent, AgentOptions, Topology,
    bench::{
        firewall::{IpSet, IptablesRule, NftTable, nft_counter_packets, run_in},
        lists,
        reference::Reference,
        xdp_filter::XdpFilter,
    },
    command,
};

/// Bans loaded in every filter: as many as xdp-filter holds (its maps are compiled for 10,000
/// addresses a family), so that every filter holds the same list.
pub const BANS: usize = 10_000;
/// Where the flood goes (the discard port).
const PORT: u16 = 9;
/// The live frames' source port (the socket's is whatever the kernel picked).
const LIVE_PORT: u16 = 40_000;
/// How long after the sender stops the counters are read: what is still in the veth's ring or
/// the socket is handled by then.
pub const SETTLE: Duration = Duration::from_millis(200);
/// A warm-up flood at setup, which resolves the neighbour and checks the counters move.
const WARM_UP: Duration = Duration::from_millis(200);
const SEED: u64 = 0xf100d;

/// The ways a flood ends, in the order the report shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The send path alone: the server's end is down, so every packet dies at the client's
    /// device (a static neighbour entry lets the sender send at all).
    Floor,
    /// The agent as it starts by default, tables sized for a million IPv4 bans.
    Xdp,
    /// The agent with tables sized for the list (`--max-bans-v4`), as the peers' are.
    XdpSized,
    /// xdp-filter (xdp-tools) attached by its own command.
    XdpFilter,
    /// The reference program: kernel hash maps and LPM tries.
    Reference,
    Nft,
    Iptables,
    /// No filter: a socket receives the flood.
    Open,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::Floor,
        Method::Xdp,
        Method::XdpSized,
        Method::XdpFilter,
        Method::Reference,
        Method::Nft,
        Method::Iptables,
        Method::Open,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Method::Floor => "floor (server end down)",
            Method::Xdp => "XDP (tracking)",
            Method::XdpSized => "XDP (tracking, tables sized for the list)",
            Method::XdpFilter => "XDP (xdp-filter)",
            Method::Reference => "XDP (reference: kernel hash + LPM trie)",
            Method::Nft => "nftables netdev ingress",
            Method::Iptables => "iptables raw + ipset",
            Method::Open => "no filter, socket",
        }
    }
}

/// How a flood is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// Raw frames into the client's veth end, like a NIC's: see [`live`].
    Live,
    /// The same, each frame from the next of the banned addresses, round and round.
    Varied,
    /// A UDP socket's `sendmmsg`: see [`udp`].
    Socket,
}

impl Sender {
    pub const ALL: [Sender; 3] = [Sender::Live, Sender::Varied, Sender::Socket];
}

/// What holds the bans in a site. Rules go before the sets they use.
enum Filter {
    Xdp(Box<Agent>),
    XdpFilter(XdpFilter),
    Reference(Box<Reference>),
    Nft(NftTable),
    Iptables {
        rule: IptablesRule,
        #[expect(dead_code, reason = "held for its drop, after the rule's")]
        set: IpSet,
    },
    None,
}

/// Where the flood runs.
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    /// The sender's CPU, where a veth runs the receive path too (in softirq).
    pub send: usize,
    /// Where the receiving socket's thread runs: the other CPU, if there is one.
    pub receive: usize,
    /// How long the sending CPU's idle softirq rate is taken before each flood.
    pub baseline: Duration,
    /// `ksoftirqd/<send>`.
    pub ksoftirqd: u32,
}

/// One topology with one method. Fields drop in order: the filter, the sockets, then the
/// namespaces.
pub struct Site {
    pub method: Method,
    filter: Filter,
    /// Bound behind the filter in every site: the open site's counter, the others' proof that
    /// nothing got through.
    receiver: UdpSocket,
    /// In the client namespace, bound to the banned source, connected to the receiver.
    sender: UdpSocket,
    /// The same datagram as a raw frame, sent out of the client's end.
    live: live::Live,
    /// The same frame from every banned address in turn.
    varied: live::Live,
    topology: Topology,
}

/// The bans in each method's format, in a temporary directory.
struct Lists {
    /// The addresses themselves, for the programs loaded from here.
    addresses: Vec<Ipv4Addr>,
    dir: tempfile::TempDir,
    tracking: PathBuf,
    elements: String,
    ipset_adds: String,
}

impl Lists {
    /// `BANS` addresses: the same random ones for every site, and `banned`.
    fn new(banned: Ipv4Addr) -> anyhow::Result<Lists> {
        let mut bans = lists::addresses(BANS - 1, SEED);
        bans.insert(BANS / 2, banned);
        let dir = tempfile::Builder::new().prefix("trk-flood-").tempdir()?;
        let tracking = dir.path().join("flood.txt");
        std::fs::write(&tracking, lists::tracking(&bans))?;
        Ok(Lists {
            elements: lists::nft_elements(&bans),
            addresses: bans.clone(),
            ipset_adds: lists::ipset_lines("add", "trkflood", &bans),
            tracking,
            dir,
        })
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Site {
    pub fn new(method: Method, binary: &Path, cpus: Cpus) -> anyhow::Result<Site> {
        let topology = Topology::new().context("the topology")?;
        let server = topology.server();
        let iface = topology.server_iface().to_owned();
        offload::gro_on(server, &iface)?;
        offload::tso_off(topology.client(), topology.client_iface())?;
        let to = SocketAddr::new(topology.server_v4().into(), PORT);
        let from = SocketAddr::new(topology.client_v4()[0].into(), 0);
        let receiver = server.run(|| udp::receiver(to))?;
        let sender = topology.client().run(|| udp::sender(from, to))?;
        let frame = live::frame(
            live::mac(server, &iface)?,
            live::mac(topology.client(), topology.client_iface())?,
            SocketAddrV4::new(topology.client_v4()[0], LIVE_PORT),
            SocketAddrV4::new(topology.server_v4(), PORT),
        );
        // Each topology has a subnet of its own: the bans differ only in the source.
        let lists = Lists::new(topology.client_v4()[0])?;
        let varied = live::Live::varied(
            topology.client(),
            topology.client_iface(),
            frame.clone(),
            &lists.addresses,
        )?;
        let live = live::Live::new(topology.client(), topology.client_iface(), frame)?;
        let filter = match method {
            Method::Floor => {
                floor(&topology)?;
                Filter::None
            }
            Method::Open => Filter::None,
            _ => filter(method, &topology, &lists, binary)?,
        };
        let site = Site {
            method,
            filter,
            receiver,
            sender,
            live,
            varied,
            topology,
        };
        // A first flood of each kind resolves the neighbour, and shows the counters work.
        for how in Sender::ALL {
            let warm = site.flood(how, WARM_UP, cpus)?;
            ensure!(
                warm.handled > 0,
                "{}: the warm-up flood of {} packets ({how:?}) was not counted",
                method.label(),
                warm.sent.packets
            );
        }
        Ok(site)
    }

    /// Packets the method's own counter says it dropped so far (0 for the floor and the open
    /// site, which have none).
    fn dropped(&self) -> anyhow::Result<u64> {
        match &self.filter {
            Filter::Xdp(agent) => {
                let out = cli(agent, &["stats", "--json"])?;
                let stats: serde_json::Value = serde_json::from_str(&out)?;
                stats["counters"]["dropped"]["packets"]
                    .as_u64()
                    .with_context(|| format!("no dropped counter in {out}"))
            }
            Filter::Nft(table) => {
                let (out, _) = run_in(
                    self.topology.server(),
                    "nft",
                    ["list", "counter", table.family(), table.name(), "dropped"],
                    None,
                )?;
                nft_counter_packets(&out).with_context(|| format!("no packets in {out}"))
            }
            Filter::Iptables { rule, .. } => rule.packets("match-set"),
            Filter::XdpFilter(filter) => filter.dropped(),
            Filter::Reference(reference) => reference.dropped(),
            Filter::None => Ok(0),
        }
    }

    /// Floods for `duration` and reads what happened.
    pub fn flood(&self, how: Sender, duration: Duration, cpus: Cpus) -> anyhow::Result<Sample> {
        let before = self.dropped()?;
        let line = format!("cpu{}", cpus.send);
        // The sending CPU's softirq time while nothing is sent (timers, RCU, other tenants'
        // disk and network), right before the flood, to subtract at its rate.
        let idle = cpu::Stat::read(&line)?;
        std::thread::sleep(cpus.baseline);
        let idle = idle.since(&cpu::Stat::read(&line)?).softirq.as_secs_f64()
            / cpus.baseline.as_secs_f64();
        let on_cpu = cpu::Stat::read(&line)?;
        let machine = cpu::Stat::read("cpu")?;
        let ksoftirqd = cpu::task(cpus.ksoftirqd)?;
        let started = Instant::now();
        let stop = AtomicBool::new(false);
        let (sent, received) = std::thread::scope(|s| {
            let receiving = s.spawn(|| {
                cpu::pin_this_thread(cpus.receive)?;
                udp::count(&self.receiver, &stop)
            });
            let sent = s
                .spawn(|| -> anyhow::Result<udp::Sent> {
                    match how {
                        Sender::Socket => {
                            cpu::pin_this_thread(cpus.send)?;
                            Ok(udp::flood(&self.sender, duration)?)
                        }
                        // The test run redirects in the calling thread's namespace.
                        Sender::Live => self.topology.client().run(|| {
                            cpu::pin_this_thread(cpus.send)?;
                            self.live.flood(duration)
                        }),
                        Sender::Varied => self.topology.client().run(|| {
                            cpu::pin_this_thread(cpus.send)?;
                            self.varied.flood(duration)
                        }),
                    }
                })
                .join();
            std::thread::sleep(SETTLE);
            stop.store(true, Ordering::Relaxed);
            (sent, receiving.join())
        });
        let sent = sent.map_err(|_| anyhow::anyhow!("the sender panicked"))??;
        let received = received.map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
        let ksoftirqd = cpu::task(cpus.ksoftirqd)? - ksoftirqd;
        let on_cpu = on_cpu.since(&cpu::Stat::read(&line)?);
        let machine = machine.since(&cpu::Stat::read("cpu")?);
        let wall = started.elapsed().as_secs_f64();
        let dropped = self.dropped()? - before;
        let label = self.method.label();
        let handled = match self.method {
            Method::Floor => {
                ensure!(
                    received.packets == 0,
                    "{label}: the socket received packets"
                );
                sent.packets
            }
            Method::Open => received.packets,
            _ => {
                ensure!(
                    received.packets == 0,
                    "{label}: {} of {} datagrams got past the filter",
                    received.packets,
                    sent.packets
                );
                dropped
            }
        };
        ensure!(
            handled <= sent.packets,
            "{label}: counted {handled} packets, but only {} were sent",
            sent.packets
        );
        Ok(Sample {
            handled,
            sent,
            ksoftirqd,
            received_cpu: received.cpu,
            softirq: Duration::from_secs_f64((on_cpu.softirq.as_secs_f64() - idle * wall).max(0.0)),
            others: (machine.busy.as_secs_f64()
                - sent.cpu.as_secs_f64()
                - received.cpu.as_secs_f64()
                - ksoftirqd.as_secs_f64())
                / wall,
            steal: machine.steal.as_secs_f64() / wall,
        })
    }

    /// How the agent attached, from `tracking status --json`.
    pub fn attach_mode(&self) -> anyhow::Result<String> {
        let Filter::Xdp(agent) = &self.filter else {
            bail!("not the XDP site");
        };
        let out = cli(agent, &["status", "--json"])?;
        let status: serde_json::Value = serde_json::from_str(&out)?;
        Ok(status["interfaces"][0]["mode"]
            .as_str()
            .unwrap_or("unknown")
            .to_string())
    }
}

/// Sets up one of the filters in the server namespace.
fn filter(
    method: Method,
    topology: &Topology,
    lists: &Lists,
    binary: &Path,
) -> anyhow::Result<Filter> {
    let server = topology.server();
    let iface = topology.server_iface();
    Ok(match method {
        Method::Xdp | Method::XdpSized => {
            let sized = (BANS + 16).to_string();
            let mut args = vec!["--http", "off", "--log", "warn"];
            if method == Method::XdpSized {
                args.extend(["--max-bans-v4", &sized, "--max-bans-v6", "16"]);
            }
            let options = AgentOptions::new(iface).binary(binary).args(args);
            let agent =
                std::panic::catch_unwind(AssertUnwindSafe(|| Agent::start(server, options)))
                    .map_err(|_| anyhow::anyhow!("the agent did not start (its log is above)"))??;
            let list = lists.tracking.to_string_lossy();
            cli(
                &agent,
                &["ban", "sync", "--source", "flood", "--file", &list],
            )?;
            Filter::Xdp(Box::new(agent))
        }
        Method::XdpFilter => {
            let addrs: Vec<IpAddr> = lists.addresses.iter().map(|a| IpAddr::V4(*a)).collect();
            Filter::XdpFilter(XdpFilter::load(server, iface, &addrs)?)
        }
        Method::Reference => {
            let nets: Vec<IpNet> = lists
                .addresses
                .iter()
                .map(|a| IpNet::from(IpAddr::V4(*a)))
                .collect();
            let mut reference = Box::new(Reference::load(&nets)?);
            server.run(|| reference.attach(iface))?;
            Filter::Reference(reference)
        }
        Method::Nft => {
            let table = NftTable::guard(server, "netdev", "trkflood");
            let script = lists.write(
                "flood.nft",
                &format!(
                    "table netdev trkflood {{\n\
                     \tcounter dropped {{ }}\n\
                     \tset banned {{ type ipv4_addr; elements = {{ {} }} }}\n\
                     \tchain ingress {{\n\
                     \t\ttype filter hook ingress device \"{iface}\" priority -500; policy accept;\n\
                     \t\tip saddr @banned counter name \"dropped\" drop\n\
                     \t}}\n}}\n",
                    lists.elements
                ),
            )?;
            run_in(server, "nft", [Path::new("-f"), &script], None)?;
            Filter::Nft(table)
        }
        Method::Iptables => {
            let set = IpSet::guard(server, "trkflood");
            let restore = lists.write(
                "flood.ipset",
                &format!(
                    "create trkflood hash:ip family inet hashsize 131072 maxelem 262144\n{}",
                    lists.ipset_adds
                ),
            )?;
            run_in(server, "ipset", ["restore"], Some(&restore))?;
            let rule = IptablesRule::append(
                server,
                "raw",
                "PREROUTING",
                &["-m", "set", "--match-set", "trkflood", "src", "-j", "DROP"],
            )?;
            Filter::Iptables { rule, set }
        }
        Method::Floor | Method::Open => Filter::None,
    })
}

/// Takes the server's end down, with a permanent neighbour entry for it on the client so the
/// sender still sends: every packet then dies at the client's device.
fn floor(topology: &Topology) -> anyhow::Result<()> {
    let server = topology.server();
    let link = server.ip(["-o", "link", "show", "dev", topology.server_iface()])?;
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC address in {link}"))?;
    let server_v4 = IpAddr::from(topology.server_v4()).to_string();
    topology.client().ip([
        "neigh",
        "replace",
        &server_v4,
        "lladdr",
        mac,
        "dev",
        topology.client_iface(),
        "nud",
        "permanent",
    ])?;
    server.ip(["link", "set", topology.server_iface(), "down"])?;
    Ok(())
}

/// `tracking <args>` against the agent; fails with its output.
fn cli(agent: &Agent, args: &[&str]) -> anyhow::Result<String> {
    let out = agent.cli(args);
    if !out.status.success() {
        bail!(
            "`tracking {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables --version`, which says whether it is the nf_tables or the legacy backend.
pub fn iptables_backend() -> String {
    command::run(std::process::Command::new("iptables").arg("--version"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "iptables".into())
}

/// One flood through one site.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Dropped by the filter, received by the socket, or (the floor) sent.
    pub handled: u64,
    pub sent: udp::Sent,
    /// `ksoftirqd` on the sending CPU: softirq work the sender's thread left to it.
    pub ksoftirqd: Duration,
    /// The receiving socket's thread.
    pub received_cpu: Duration,
    /// The sending CPU's softirq time by `/proc/stat`, beyond its idle rate.
    pub softirq: Duration,
    /// Cores' worth of CPU that others on this VM used meanwhile.
    pub others: f64,
    /// Cores' worth of CPU the hypervisor gave to other VMs meanwhile.
    pub steal: f64,
}

impl Sample {
    pub fn mpps(&self) -> f64 {
        self.handled as f64 / self.sent.elapsed.as_secs_f64() / 1e6
    }

    pub fn sent_mpps(&self) -> f64 {
        self.sent.packets as f64 / self.sent.elapsed.as_secs_f64() / 1e6
    }

    /// The sender thread's CPU a packet sent, in ns: the send path, plus the receive path it
    /// ran inline.
    pub fn sender_ns(&self) -> f64 {
        self.sent.cpu.as_nanos() as f64 / self.sent.packets.max(1) as f64
    }

    /// The receive side's CPU a packet handled, in ns (= ms per Mpkt), given what the send
    /// path alone costs a packet (`floor_ns`, the floor's [`Sample::sender_ns`]): the sender
    /// thread's time beyond that, plus ksoftirqd's and the receiving socket thread's.
    pub fn receive_ns(&self, floor_ns: f64) -> f64 {
        let inline =
            (self.sent.cpu.as_nanos() as f64 - floor_ns * self.sent.packets as f64).max(0.0);
        let total = inline + self.ksoftirqd.as_nanos() as f64 + self.received_cpu.as_nanos() as f64;
        total / self.handled.max(1) as f64
    }

    /// The same from `/proc/stat`'s softirq ticks on the sending CPU, plus the receiving
    /// socket thread's time.
    pub fn softirq_ns(&self) -> f64 {
        (self.softirq + self.received_cpu).as_nanos() as f64 / self.handled.max(1) as f64
    }
}
