//! The XDP peer an operator would pick for a ban list: `xdp-filter` from xdp-tools (Debian's
//! `xdp-tools`), loaded by its own command on an interface in a namespace, as its manual says:
//! `xdp-filter load <iface> -m native -f ipv4,ipv6` (policy `allow`: drop what matches, pass
//! the rest; only the IPv4 and IPv6 features, its smallest program for addresses, which it names
//! `xdpfilt_alw_ip`), then its addresses with `-m src`.
//!
//! Its program is found through the interface (`ip -d -j link show`) and run through
//! `BPF_PROG_TEST_RUN` by id like every other program of the benchmarks. Its bans are per-CPU
//! hash maps it pins by name under `/sys/fs/bpf/xdp-filter`, compiled with a fixed size (10,000
//! entries a family in 1.3.1; read from the map, not assumed). The first address goes in through
//! `xdp-filter ip <addr> -m src`; the rest are written straight into the pinned map with the value
//! that command writes (checked against it), since one process per address would take minutes.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    maps::{Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};

use crate::{Netns, command, xdp::XdpRun};

/// Where xdp-filter pins its maps: one place for the whole machine, whatever the namespace.
const PINS: &str = "/sys/fs/bpf/xdp-filter";
/// `MAP_FLAG_SRC` of xdp-filter's `common_kern_user.h`: the entry matches source addresses.
const MAP_FLAG_SRC: u64 = 1;
/// The program `xdp-filter load -f ipv4,ipv6` (policy allow) picks.
pub const PROGRAM: &str = "xdpfilt_alw_ip";

/// xdp-filter loaded on an interface of a namespace; unloaded on drop.
pub struct XdpFilter {
    pub run: XdpRun,
    /// The program's kernel id.
    pub id: u32,
    /// How many addresses a family's map holds.
    pub capacity: u32,
    /// Unloads it on drop, after the descriptor above is closed (fields drop in order).
    _guard: Unload,
}

impl XdpFilter {
    /// Loads xdp-filter on `iface` in `netns` and bans `bans`, single addresses of either family.
    pub fn load(netns: &Netns, iface: &str, bans: &[IpAddr]) -> anyhow::Result<XdpFilter> {
        ensure!(
            !Path::new(PINS).exists(),
            "{PINS} exists: an xdp-filter is already loaded on this machine, and a second one would \
             share its maps; unload it first (`xdp-filter unload <iface>` in its namespace)"
        );
        command::run(netns.command("xdp-filter").args([
            "load",
            iface,
            "-m",
            "native",
            "-f",
            "ipv4,ipv6",
        ]))
        .context("`xdp-filter load` (Debian's xdp-tools; `cargo xtask setup` installs it)")?;
        // From here on, dropping the guard unloads it.
        let guard = Unload {
            netns: netns.path().to_owned(),
            iface: iface.to_owned(),
        };
        let id = attached_id(netns, iface)?;
        let run = XdpRun::from_id(id).context("a descriptor of xdp-filter's program")?;
        let name = program_name(id)?;
        ensure!(
            name == PROGRAM,
            "xdp-filter loaded `{name}`, not `{PROGRAM}`: a different version picks its programs \
             differently, and the comparison would be with another program"
        );
        let mut filter = XdpFilter {
            run,
            id,
            capacity: 0,
            _guard: guard,
        };
        filter.capacity = filter.ban(netns, bans)?;
        Ok(filter)
    }

    /// Writes the bans, the first through the command; returns the maps' capacity.
    fn ban(&self, netns: &Netns, bans: &[IpAddr]) -> anyhow::Result<u32> {
        let first = bans.first().context("no bans to load")?;
        command::run(
            netns
                .command("xdp-filter")
                .args(["ip", &first.to_string(), "-m", "src"]),
        )?;
        let mut v4: PerCpuHashMap<MapData, [u8; 4], u64> = pinned_hash("filter_ipv4")?;
        let mut v6: PerCpuHashMap<MapData, [u8; 16], u64> = pinned_hash("filter_ipv6")?;
        let written = match first {
            IpAddr::V4(a) => v4.get(&a.octets(), 0)?,
            IpAddr::V6(a) => v6.get(&a.octets(), 0)?,
        };
        ensure!(
            written.iter().all(|v| *v == MAP_FLAG_SRC),
            "`xdp-filter ip {first} -m src` wrote {:?} per CPU, not {MAP_FLAG_SRC}: this version's \
             map format is not the one the benchmark writes",
            written.iter().collect::<Vec<_>>()
        );
        let capacity = map_capacity("filter_ipv4")?.min(map_capacity("filter_ipv6")?);
        for family in [true, false] {
            let n = bans.iter().filter(|a| a.is_ipv4() == family).count();
            ensure!(
                n <= capacity as usize,
                "xdp-filter holds at most {capacity} addresses a family (its maps are compiled \
                 that size); {n} were given"
            );
        }
        let value = || -> anyhow::Result<PerCpuValues<u64>> {
            Ok(PerCpuValues::try_from(vec![
                MAP_FLAG_SRC;
                nr_cpus()
                    .map_err(|(_, e)| e)?
            ])?)
        };
        for ban in &bans[1..] {
            match ban {
                IpAddr::V4(a) => v4.insert(a.octets(), value()?, 0),
                IpAddr::V6(a) => v6.insert(a.octets(), value()?, 0),
            }
            .with_context(|| format!("writing {ban} into xdp-filter's map"))?;
        }
        Ok(capacity)
    }

    /// Packets its program dropped so far: `XDP_DROP` in its per-CPU `xdp_stats_map`
    /// (`struct datarec { rx_packets, rx_bytes }` by action).
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let data = MapData::from_pin(Path::new(PINS).join("xdp_stats_map"))?;
        let stats: PerCpuArray<MapData, [u64; 2]> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
        const XDP_DROP: u32 = 1;
        Ok(stats.get(&XDP_DROP, 0)?.iter().map(|c| c[0]).sum())
    }

    /// The kernel ids of its maps, for their memory.
    pub fn map_ids(&self) -> anyhow::Result<Vec<u32>> {
        let program = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == self.id)
            .context("xdp-filter's program is gone")?;
        Ok(program.map_ids()?.unwrap_or_default())
    }
}

/// `xdp-filter unload <iface>` in the namespace, on drop.
struct Unload {
    netns: PathBuf,
    iface: String,
}

impl Drop for Unload {
    fn drop(&mut self) {
        if !self.netns.exists() {
            return;
        }
        let unload = command::run(
            crate::netns::command_in(&self.netns, "xdp-filter").args(["unload", &self.iface]),
        );
        if let Err(e) = unload {
            eprintln!(
                "bench: could not unload xdp-filter from {}: {e}",
                self.iface
            );
        }
    }
}

fn pinned_hash<K: aya::Pod, V: aya::Pod>(
    name: &str,
) -> anyhow::Result<PerCpuHashMap<MapData, K, V>> {
    let path = Path::new(PINS).join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("{}", path.display()))?;
    Ok(PerCpuHashMap::try_from(Map::PerCpuHashMap(data))?)
}

fn map_capacity(name: &str) -> anyhow::Result<u32> {
    let data = MapData::from_pin(Path::new(PINS).join(name))?;
    Ok(data.info()?.max_entries())
}

/// The id of the XDP program attached to `iface`, from `ip -d -j link show`.
fn attached_id(netns: &Netns, iface: &str) -> anyhow::Result<u32> {
    let out = netns.ip(["-d", "-j", "link", "show", "dev", iface])?;
    let links: serde_json::Value = serde_json::from_str(&out)?;
    let xdp = &links[0]["xdp"];
    let id = xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64());
    match id {
        Some(id) => Ok(u32::try_from(id)?),
        None => bail!("no XDP program on {iface} after `xdp-filter load`: {xdp}"),
    }
}

fn program_name(id: u32) -> anyhow::Result<String> {
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .with_context(|| format!("no loaded program with id {id}"))?;
    Ok(program.name_as_str().unwrap_or("?").to_string())
}
