//! The reference peer, from user space: `tests/ebpf/src/reference.rs` loaded with its maps sized
//! for the bans it is given, the bans written one `BPF_MAP_UPDATE_ELEM` each (addresses into the
//! kernel hash maps, networks into the LPM tries), and the program run through
//! `BPF_PROG_TEST_RUN` or attached to an interface.

use std::net::IpAddr;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, Map, MapData, lpm_trie::Key},
    programs::XdpMode,
};
use ipnet::IpNet;

use super::programs::{REFERENCE, runner, xdp, xdp_mut};
use crate::xdp::XdpRun;

const PROGRAM: &str = "reference";

/// The reference program, loaded and filled.
pub struct Reference {
    ebpf: Ebpf,
    pub run: XdpRun,
    pub bans: usize,
}

impl Reference {
    /// Loads the program with maps just big enough for `bans` and writes them: a /32 or /128 into
    /// its family's hash map, any other network into its family's LPM trie.
    pub fn load(bans: &[IpNet]) -> anyhow::Result<Reference> {
        fn host(n: &IpNet) -> bool {
            n.prefix_len() == n.max_prefix_len()
        }
        let count = |f: fn(&IpNet) -> bool| bans.iter().filter(|n| f(n)).count().max(1) as u32;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("V4_ADDRS", count(|n| n.addr().is_ipv4() && host(n)))
            .map_max_entries("V6_ADDRS", count(|n| n.addr().is_ipv6() && host(n)))
            .map_max_entries("V4_NETS", count(|n| n.addr().is_ipv4() && !host(n)))
            .map_max_entries("V6_NETS", count(|n| n.addr().is_ipv6() && !host(n)))
            .load(REFERENCE)
            .context("the reference program's object")?;
        xdp_mut(&mut ebpf, PROGRAM)?
            .load()
            .context("verifying the reference program")?;
        let take = |ebpf: &mut Ebpf, name: &str| -> anyhow::Result<Map> {
            ebpf.take_map(name)
                .with_context(|| format!("the reference program has no map {name}"))
        };
        let mut v4_addrs: HashMap<MapData, [u8; 4], u64> =
            HashMap::try_from(take(&mut ebpf, "V4_ADDRS")?)?;
        let mut v6_addrs: HashMap<MapData, [u8; 16], u64> =
            HashMap::try_from(take(&mut ebpf, "V6_ADDRS")?)?;
        let mut v4_nets: LpmTrie<MapData, [u8; 4], u64> =
            LpmTrie::try_from(take(&mut ebpf, "V4_NETS")?)?;
        let mut v6_nets: LpmTrie<MapData, [u8; 16], u64> =
            LpmTrie::try_from(take(&mut ebpf, "V6_NETS")?)?;
        for net in bans {
            let len = u32::from(net.prefix_len());
            match (net.network(), host(net)) {
                (IpAddr::V4(a), true) => v4_addrs.insert(a.octets(), 0, 0),
                (IpAddr::V6(a), true) => v6_addrs.insert(a.octets(), 0, 0),
                (IpAddr::V4(a), false) => v4_nets.insert(&Key::new(len, a.octets()), 0, 0),
                (IpAddr::V6(a), false) => v6_nets.insert(&Key::new(len, a.octets()), 0, 0),
            }
            .with_context(|| format!("writing {net} into the reference's maps"))?;
        }
        // The maps stay alive with the program that uses them; the handles taken here can go.
        drop((v4_addrs, v6_addrs, v4_nets, v6_nets));
        let run = runner(&ebpf, PROGRAM)?;
        Ok(Reference {
            ebpf,
            run,
            bans: bans.len(),
        })
    }

    /// The kernel ids of the program's maps, for their memory (`bpftool map show`).
    pub fn map_ids(&self) -> anyhow::Result<Vec<u32>> {
        let info = xdp(&self.ebpf, PROGRAM)?.info()?;
        Ok(info.map_ids()?.unwrap_or_default())
    }

    /// Attaches the program to `iface` in native mode, from a thread in the interface's
    /// namespace; it stays attached while `self` lives.
    pub fn attach(&mut self, iface: &str) -> anyhow::Result<()> {
        xdp_mut(&mut self.ebpf, PROGRAM)?
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching the reference program to {iface}"))?;
        Ok(())
    }

    /// Packets the program dropped so far, summed over CPUs.
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let stats = self
            .ebpf
            .map("STATS")
            .context("the reference program has no STATS map")?;
        let stats: aya::maps::PerCpuArray<&MapData, [u64; 2]> =
            aya::maps::PerCpuArray::try_from(stats)?;
        Ok(stats.get(&1, 0)?.iter().map(|c| c[0]).sum())
    }
}
