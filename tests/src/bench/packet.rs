//! Benchmark 1: what a packet costs, through `BPF_PROG_TEST_RUN`, measured against the real
//! peers in the same run, each on the same frames with the same bans:
//!
//! - `xdp-filter` (xdp-tools), loaded by its own command on a veth, run by id;
//! - the reference program (`tests/ebpf/src/reference.rs`): kernel `HASH` maps for addresses and
//!   `LPM_TRIE` maps for networks, what the design card literally says;
//! - the floor, a program that only passes, which every cost is taken beyond.
//!
//! Four parts: the three side by side at xdp-filter's capacity (10,000 addresses a family, its
//! maps are compiled that size); the agent and the reference with the full table (a million
//! exact IPv4 bans, a hundred thousand prefixes, a hundred thousand IPv6 bans); the cost as the
//! IPv4 list grows (hot, and cold: many sources, one run each); and IPv6 as the number of
//! distinct prefix lengths grows. See [`measure`] for hot and cold.

mod compare;
mod measure;
mod sets;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::Context as _;
use ipnet::IpNet;
use tracking_agent::{
    ban::Effective,
    kernel::{Options, Program, program::detach_all},
};

use self::compare::{Contender, Input, Measured, rows};
pub use self::sets::Table;
use super::{
    Report, Row, Scale, Xorshift, map_memory,
    programs::Floor,
    reference::Reference,
    report::{fmt, median},
    xdp_filter::XdpFilter,
};
use crate::{Topology, frames, unique, xdp::XdpRun};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The agent's program loaded with throwaway pins and a set of bans; unpinned on drop.
pub struct Loaded {
    pub program: Program,
    pins: PathBuf,
    pub bans: usize,
    pub run: XdpRun,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = detach_all(&self.pins);
    }
}

impl Loaded {
    /// The agent's program with tables for `v4` and `v6` bans, holding `nets`.
    pub fn new(nets: &[IpNet], v4: usize, v6: usize) -> anyhow::Result<Loaded> {
        let pins = PathBuf::from(format!("/sys/fs/bpf/trk-bench-{}", unique::tag()));
        let _ = detach_all(&pins);
        let program = Program::load(&Options {
            pin_dir: pins.clone(),
            max_bans_v4: v4 as u32,
            max_bans_v6: v6 as u32,
            hash_key: None,
        })
        .context("loading the program")?;
        let run = XdpRun::from_id(program.id()?).context("a descriptor of the program")?;
        let mut loaded = Loaded {
            program,
            pins,
            bans: nets.len(),
            run,
        };
        let banned = Effective::Banned { expires: None };
        let effects: Vec<(IpNet, Effective)> = nets.iter().map(|n| (*n, banned)).collect();
        loaded
            .program
            .maps
            .apply(&effects)
            .context("loading the bans")?;
        Ok(loaded)
    }

    fn banned(&self, a: IpAddr) -> bool {
        self.program.maps.tables().banned(a).is_some()
    }

    fn kernel_bytes(&self) -> anyhow::Result<u64> {
        map_memory::bytes(&self.program.map_ids())
    }
}

/// Loads the program with the full table: `n` exact IPv4, `n / 10` IPv4 prefixes of every
/// length from 8 to 31 and `n / 10` IPv6 addresses, and an allowlisted /24 inside a banned /16.
pub fn load(n: usize) -> anyhow::Result<Loaded> {
    let table = Table::new(n, n / 10, n / 10);
    let mut nets = table.nets();
    nets.push("203.0.0.0/16".parse().expect("valid"));
    let mut loaded = Loaded::new(&nets, n + n / 10 + 16, n / 10 + 16)?;
    loaded
        .program
        .maps
        .set_allowlist(&["203.0.113.0/24".parse().expect("valid")])?;
    Ok(loaded)
}

/// The sizes of a run.
struct Sizes {
    /// Runs a hot measurement.
    repeat: u32,
    rounds: usize,
    /// The full table's exact IPv4 bans (a tenth as many prefixes and IPv6 bans).
    full: usize,
    /// IPv4 list sizes for the cost as the list grows.
    scale: &'static [usize],
    /// Frames of a cold case.
    cold: usize,
    /// IPv6 bans of the length cases.
    v6: usize,
}

/// Bans of each family xdp-filter 1.3.1 holds (checked against its maps when loaded).
const PEERS: usize = 10_000;
/// Distinct prefix lengths of the IPv6 cases.
const V6_LENGTHS: [usize; 5] = [1, 8, 32, 64, 128];

const DST4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

fn frame(src: IpAddr) -> Vec<u8> {
    let dst = if src.is_ipv4() {
        IpAddr::V4(DST4)
    } else {
        IpAddr::V6(DST6)
    };
    frames::udp(src, dst, &[])
}

/// What the run collects besides the rows.
struct Run<'a> {
    sizes: &'a Sizes,
    floor: &'a Floor,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Floor costs, hot and cold, over all cases.
    floor_hot: Vec<f64>,
    floor_cold: Vec<f64>,
    /// Results kept for the notes: (label, contenders' names, measured).
    kept: Vec<(String, Vec<&'static str>, Measured)>,
}

impl Run<'_> {
    fn hot(
        &mut self,
        label: &str,
        contenders: &[Contender],
        src: IpAddr,
        verdict: u32,
        target: Option<(usize, f64)>,
        repeat: u32,
    ) -> anyhow::Result<()> {
        let f = frame(src);
        let input = Input::Hot { frame: &f, verdict };
        let m = compare::measure(
            &self.floor.run,
            contenders,
            label,
            &input,
            repeat,
            self.sizes.rounds,
        )
        .with_context(|| format!("{label} ({src})"))?;
        self.floor_hot.extend(&m.floor);
        self.rows.extend(rows(label, contenders, &m, target));
        self.kept
            .push((label.into(), contenders.iter().map(|c| c.name).collect(), m));
        Ok(())
    }

    fn cold(
        &mut self,
        label: &str,
        contenders: &[Contender],
        sources: &[IpAddr],
        banned: &dyn Fn(IpAddr) -> bool,
        target: Option<(usize, f64)>,
    ) -> anyhow::Result<()> {
        let frames: Vec<Vec<u8>> = sources.iter().map(|s| frame(*s)).collect();
        let drops = sources.iter().filter(|s| banned(**s)).count();
        let input = Input::Cold {
            frames: &frames,
            drops,
        };
        let m = compare::measure(
            &self.floor.run,
            contenders,
            label,
            &input,
            1,
            self.sizes.rounds,
        )?;
        self.floor_cold.extend(&m.floor);
        self.rows.extend(rows(label, contenders, &m, target));
        self.kept
            .push((label.into(), contenders.iter().map(|c| c.name).collect(), m));
        Ok(())
    }

    fn memory(&mut self, label: &str, each: &[(&str, u64, usize)]) {
        for (name, bytes, bans) in each {
            self.rows.push(Row::new(
                format!("{label}: {name}, kernel memory a ban"),
                "B",
                vec![*bytes as f64 / (*bans).max(1) as f64],
            ));
        }
    }

    /// The median total (floor included) of `who` in the case `label`.
    fn total(&self, label: &str, who: &str) -> Option<f64> {
        self.kept
            .iter()
            .find(|(l, _, _)| l == label)
            .and_then(|(_, names, m)| {
                let i = names.iter().position(|n| *n == who)?;
                Some(median(&m.total[i]))
            })
    }

    fn beyond(&self, label: &str, who: &str) -> Option<f64> {
        self.kept
            .iter()
            .find(|(l, _, _)| l == label)
            .and_then(|(_, names, m)| {
                let i = names.iter().position(|n| *n == who)?;
                Some(median(&m.beyond[i]))
            })
    }
}

const TRACKING: &str = "tracking";
const XDP_FILTER: &str = "xdp-filter";
const REFERENCE: &str = "reference (kernel hash + LPM trie)";

/// A source no ban comes near (the agent's filter turns it away alone), and an unbanned
/// neighbour of an exact ban (it passes the filter and probes the table).
fn misses(loaded: &Loaded, exact: &[Ipv4Addr]) -> anyhow::Result<(IpAddr, IpAddr)> {
    let tables = loaded.program.maps.tables();
    let mut rnd = Xorshift::new(0xcafe);
    let miss = (0..1_000_000)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rnd.next() as u32)))
        .find(|a| !tables.candidate(*a))
        .context("no IPv4 address outside every ban's /24")?;
    let near = exact
        .iter()
        .map(|e| IpAddr::V4(Ipv4Addr::from(u32::from(*e) ^ 1)))
        .find(|a| tables.banned(*a).is_none())
        .context("no unbanned neighbour of an exact ban")?;
    Ok((miss, near))
}

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let sizes = match scale {
        Scale::Full => Sizes {
            repeat: 5_000_000,
            rounds: 5,
            full: 1_000_000,
            scale: &[1_000, 100_000, 1_000_000, 4_000_000],
            cold: 65_536,
            v6: 10_000,
        },
        Scale::Quick => Sizes {
            repeat: 200_000,
            rounds: 3,
            full: 100_000,
            scale: &[1_000, 100_000],
            cold: 4_096,
            v6: 1_000,
        },
    };
    let _pinned = measure::pin_to_one_cpu();
    let floor = Floor::load()?;
    let mut run = Run {
        sizes: &sizes,
        floor: &floor,
        rows: Vec::new(),
        notes: Vec::new(),
        floor_hot: Vec::new(),
        floor_cold: Vec::new(),
        kept: Vec::new(),
    };
    let xdp_filter = peers(&mut run)?;
    let full_ms = full(&mut run)?;
    for &n in sizes.scale {
        grows(&mut run, n).with_context(|| format!("{n} IPv4 bans"))?;
    }
    for k in V6_LENGTHS {
        lengths(&mut run, k).with_context(|| format!("IPv6 bans of {k} lengths"))?;
    }
    let mut rows = vec![
        Row::new("floor: XDP_PASS only, hot", "ns", run.floor_hot.clone()),
        Row::new(
            "floor: XDP_PASS only, cold (one run a frame)",
            "ns",
            run.floor_cold.clone(),
        ),
    ];
    rows.append(&mut run.rows);
    let mut notes = std::mem::take(&mut run.notes);
    notes.extend(limits(&run, &sizes));
    Ok(Report {
        name: "packet",
        title: "Cost per packet, against xdp-filter and kernel maps".into(),
        method: method(&sizes, xdp_filter, full_ms),
        rows,
        notes,
    })
}

/// The three side by side at xdp-filter's capacity; returns xdp-filter's capacity.
fn peers(run: &mut Run) -> anyhow::Result<u32> {
    let table = Table::addresses(PEERS, PEERS);
    let nets = table.nets();
    let tracking = Loaded::new(&nets, PEERS + 16, PEERS + 16)?;
    let reference = Reference::load(&nets)?;
    let topology = Topology::new().context("a namespace for xdp-filter")?;
    let xdp_filter = XdpFilter::load(topology.server(), topology.server_iface(), &table.addrs())?;
    let all = [
        Contender {
            name: TRACKING,
            run: &tracking.run,
        },
        Contender {
            name: XDP_FILTER,
            run: &xdp_filter.run,
        },
        Contender {
            name: REFERENCE,
            run: &reference.run,
        },
    ];
    let (miss, near) = misses(&tracking, &table.exact)?;
    let exact = IpAddr::V4(table.exact[table.exact.len() / 2]);
    let v6_miss = IpAddr::V6("2a00:1450:4001::1".parse()?);
    let v6_hit = IpAddr::V6(table.v6[table.v6.len() / 2]);
    let repeat = run.sizes.repeat;
    let at = "10k";
    let half = Some((1, 0.5));
    run.hot(
        &format!("{at}, IPv4 miss"),
        &all,
        miss,
        XDP_PASS,
        half,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv4 miss next to a ban"),
        &all,
        near,
        XDP_PASS,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv4 exact hit"),
        &all,
        exact,
        XDP_DROP,
        half,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv6 miss"),
        &all,
        v6_miss,
        XDP_PASS,
        half,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv6 hit"),
        &all,
        v6_hit,
        XDP_DROP,
        half,
        repeat,
    )?;
    let banned = |a: IpAddr| tracking.banned(a);
    let sources = table.mixed_sources(run.sizes.cold, &banned);
    run.cold(&format!("{at}, cold mix"), &all, &sources, &banned, None)?;
    let bans = nets.len();
    run.memory(
        &format!("{at} IPv4 + {at} IPv6"),
        &[
            (TRACKING, tracking.kernel_bytes()?, bans),
            (XDP_FILTER, map_memory::bytes(&xdp_filter.map_ids()?)?, bans),
            (REFERENCE, map_memory::bytes(&reference.map_ids()?)?, bans),
        ],
    );
    Ok(xdp_filter.capacity)
}

/// The agent and the reference with the full table; returns how long the agent's tables took
/// to fill, in ms.
fn full(run: &mut Run) -> anyhow::Result<f64> {
    let n = run.sizes.full;
    let table = Table::new(n, n / 10, n / 10);
    let started = std::time::Instant::now();
    let mut nets = table.nets();
    // The allowlist case: an allowlisted /24 inside a banned /16.
    nets.push("203.0.0.0/16".parse()?);
    let mut tracking = Loaded::new(&nets, n + n / 10 + 16, n / 10 + 16)?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracking
        .program
        .maps
        .set_allowlist(&["203.0.113.0/24".parse()?])?;
    let reference = Reference::load(&nets)?;
    let both = [
        Contender {
            name: TRACKING,
            run: &tracking.run,
        },
        Contender {
            name: REFERENCE,
            run: &reference.run,
        },
    ];
    let (miss, near) = misses(&tracking, &table.exact)?;
    let tables = tracking.program.maps.tables();
    let exact = IpAddr::V4(table.exact[table.exact.len() / 2]);
    let prefix = table
        .prefixes
        .iter()
        .skip(table.prefixes.len() / 2)
        .filter(|p| p.prefix_len() >= 16)
        .map(|p| IpAddr::V4(Ipv4Addr::from(u32::from(p.network()) + 1)))
        .find(|a| tables.banned(*a).is_some_and(|(n, _)| n.prefix_len() < 32))
        .context("no prefix hit")?;
    let v6_miss = IpAddr::V6("2a00:1450:4001::1".parse()?);
    let v6_hit = IpAddr::V6(table.v6[table.v6.len() / 2]);
    let at = label_count(n);
    run.notes.push(prefix_probes(&table, prefix));
    let repeat = run.sizes.repeat;
    run.hot(
        &format!("{at}, IPv4 miss"),
        &both,
        miss,
        XDP_PASS,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv4 miss next to a ban"),
        &both,
        near,
        XDP_PASS,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv4 exact hit"),
        &both,
        exact,
        XDP_DROP,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv4 prefix hit ({} prefixes)", label_count(n / 10)),
        &both,
        prefix,
        XDP_DROP,
        Some((1, 0.25)),
        repeat,
    )?;
    // The reference has no allowlist: only the agent is measured here.
    run.hot(
        &format!("{at}, IPv4 allowlisted hit"),
        &both[..1],
        IpAddr::V4("203.0.113.9".parse()?),
        XDP_PASS,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv6 miss"),
        &both,
        v6_miss,
        XDP_PASS,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, IPv6 hit"),
        &both,
        v6_hit,
        XDP_DROP,
        None,
        repeat,
    )?;
    Ok(load_ms)
}

/// `n` exact IPv4 bans in the agent and the reference: a hit, a near miss and the cold mix.
fn grows(run: &mut Run, n: usize) -> anyhow::Result<()> {
    let table = Table::addresses(n, 0);
    let nets = table.nets();
    let tracking = Loaded::new(&nets, n + 16, 16)?;
    let reference = Reference::load(&nets)?;
    let both = [
        Contender {
            name: TRACKING,
            run: &tracking.run,
        },
        Contender {
            name: REFERENCE,
            run: &reference.run,
        },
    ];
    let (_, near) = misses(&tracking, &table.exact)?;
    let at = format!("{} IPv4 bans", label_count(n));
    let repeat = run.sizes.repeat;
    let hit = IpAddr::V4(table.exact[n / 2]);
    run.hot(
        &format!("{at}, exact hit"),
        &both,
        hit,
        XDP_DROP,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, miss next to a ban"),
        &both,
        near,
        XDP_PASS,
        None,
        repeat,
    )?;
    let banned = |a: IpAddr| tracking.banned(a);
    let sources = table.mixed_sources(run.sizes.cold, &banned);
    let target = (n == 1_000_000).then_some((1, 0.5));
    run.cold(&format!("{at}, cold mix"), &both, &sources, &banned, target)?;
    if Some(&n) == run.sizes.scale.last() {
        // The mix taken apart, to show which half costs what.
        let (hits, misses): (Vec<IpAddr>, Vec<IpAddr>) = sources.iter().partition(|s| banned(**s));
        run.cold(
            &format!("{at}, cold hits only"),
            &both,
            &hits,
            &banned,
            None,
        )?;
        run.cold(
            &format!("{at}, cold misses only"),
            &both,
            &misses,
            &banned,
            None,
        )?;
    }
    run.memory(
        &at,
        &[
            (TRACKING, tracking.kernel_bytes()?, n),
            (REFERENCE, map_memory::bytes(&reference.map_ids()?)?, n),
        ],
    );
    Ok(())
}

/// IPv6 bans over `k` distinct prefix lengths in the agent and the reference: a hit on the
/// shortest length (the last a longest-first lookup reaches) and a near miss.
fn lengths(run: &mut Run, k: usize) -> anyhow::Result<()> {
    let set = sets::Lengths::new(run.sizes.v6, k);
    let nets: Vec<IpNet> = set.nets.iter().map(|n| IpNet::V6(*n)).collect();
    let tracking = Loaded::new(&nets, 16, nets.len() + 16)?;
    let reference = Reference::load(&nets)?;
    let both = [
        Contender {
            name: TRACKING,
            run: &tracking.run,
        },
        Contender {
            name: REFERENCE,
            run: &reference.run,
        },
    ];
    let hit = set
        .shortest_hit()
        .context("no source hit only by the shortest ban")?;
    anyhow::ensure!(tracking.banned(IpAddr::V6(hit)), "{hit} should be banned");
    anyhow::ensure!(
        !tracking.banned(IpAddr::V6(sets::V6_NEAR_MISS)),
        "the near miss should not be banned"
    );
    let at = format!("IPv6, {} bans of {k} lengths", nets.len());
    // A lookup over many lengths costs up to a microsecond: fewer runs keep the time in bounds.
    let repeat = (run.sizes.repeat / 5).max(1);
    run.hot(
        &format!("{at}, hit on the shortest"),
        &both,
        IpAddr::V6(hit),
        XDP_DROP,
        None,
        repeat,
    )?;
    run.hot(
        &format!("{at}, near miss"),
        &both,
        IpAddr::V6(sets::V6_NEAR_MISS),
        XDP_PASS,
        None,
        repeat,
    )?;
    Ok(())
}

/// How many table probes the agent's program makes for the prefix hit: one per prefix length
/// present in the source's /16 (from `V4_LENS`), longest first, down to the one that matches.
fn prefix_probes(table: &Table, src: IpAddr) -> String {
    let IpAddr::V4(a) = src else {
        return String::new();
    };
    let slash16 = ipnet::Ipv4Net::new(a, 16).expect("valid").trunc();
    let mut lens: Vec<u8> = table
        .prefixes
        .iter()
        .filter(|p| p.contains(&slash16.network()) || slash16.contains(&p.network()))
        .map(|p| p.prefix_len())
        .collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.dedup();
    let hit = table
        .prefixes
        .iter()
        .filter(|p| p.contains(&a))
        .map(|p| p.prefix_len())
        .max()
        .unwrap_or(0);
    let probes = lens.iter().filter(|l| **l >= hit).count();
    format!(
        "The prefix hit ({src}, inside a /{hit}): the agent's program reads the source's filter word \
         and its /16's length mask, then probes its table once per prefix length present in that \
         /16, longest first: lengths {lens:?}, {probes} {} down to /{hit}. The reference's LPM \
         trie walks one path of its trie after a hash-map miss.",
        if probes == 1 { "probe" } else { "probes" },
    )
}

/// `1,000` as `1k`, `1,000,000` as `1M`.
fn label_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn method(sizes: &Sizes, capacity: u32, full_ms: f64) -> String {
    let n = sizes.full;
    format!(
        "`BPF_PROG_TEST_RUN` on one pinned CPU, {rounds} rounds; in every round each case runs the floor \
         (an XDP program that only passes) and then each program on the same frames, a different program \
         first each round. Costs are beyond that round's floor; ratios are medians of per-round ratios \
         of those costs. Hot: one 60-byte UDP frame run {repeat} times in one call, timed by the calling \
         thread's CPU clock over the call (the kernel's own mean is whole nanoseconds). Cold: {cold} \
         frames from distinct sources, half of them banned addresses and half random unbanned ones in \
         random order, each run once in a call of its own and timed by the kernel (one call repeats one \
         frame, live frames included), so that every lookup goes to another part of the tables. \
         The programs: `tracking`, the agent's; `xdp-filter` {version}, loaded by `xdp-filter load <veth> \
         -m native -f ipv4,ipv6` (policy allow: its program `{prog}`, per-CPU hash maps of {capacity} \
         addresses a family, compiled that size, which it looks up by destination and then by source), \
         its addresses written with `xdp-filter ip <addr> -m src` (the first; the rest straight into its \
         pinned maps with the value that command writes); `{REFERENCE}`, `tests/ebpf/src/reference.rs`: \
         a kernel `HASH` map of addresses looked up first, then an `LPM_TRIE` of networks, one of each a \
         family, a hit counter a ban and per-CPU verdict counters like the agent's. Every program is \
         given the same bans and must give every frame the verdict those bans call for. `10k`: \
         {PEERS} IPv4 and {PEERS} IPv6 addresses in all three. `{full}`: {n} exact IPv4 bans, {} IPv4 \
         prefixes of every length from 8 to 31 (one in a thousand shorter than /16), {} IPv6 bans and \
         a banned /16 with an allowlisted /24 (the agent's tables filled in {} ms); xdp-filter holds \
         neither networks nor that many addresses. `N IPv4 bans`: N random public-looking addresses. \
         `IPv6, k lengths`: about {} IPv6 networks spread over k distinct prefix lengths (128, then \
         every 128/k shorter), the hit only by a ban of the shortest length, the near miss next to a \
         banned /128 and banned by nothing; hot runs there are {} a call. Kernel memory: \
         `bytes_memlock` of the program's maps (`bpftool`), over the bans held.",
        n / 10,
        n / 10,
        fmt(full_ms),
        sizes.v6,
        (sizes.repeat / 5).max(1),
        rounds = sizes.rounds,
        repeat = sizes.repeat,
        cold = sizes.cold,
        version = xdp_filter_version(),
        prog = super::xdp_filter::PROGRAM,
        full = label_count(n),
    )
}

fn xdp_filter_version() -> String {
    crate::command::run(std::process::Command::new("xdp-filter").arg("--version"))
        .ok()
        .and_then(|v| {
            v.split_whitespace()
                .find(|w| w.starts_with('v'))
                .map(String::from)
        })
        .unwrap_or_else(|| "(version unknown)".into())
}

/// Notes that say what the totals are, and what limits a missed target.
fn limits(run: &Run, sizes: &Sizes) -> Vec<String> {
    let mut notes = Vec::new();
    let f = median(&run.floor_hot);
    let show = |label: &str| -> String {
        [TRACKING, XDP_FILTER, REFERENCE]
            .iter()
            .filter_map(|who| {
                run.total(label, who)
                    .map(|t| format!("{who} {} ns", fmt(t)))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    notes.push(format!(
        "Whole costs, floor included (the floor is {} ns hot): IPv4 miss at 10k: {}; IPv4 exact hit at \
         10k: {}; IPv6 hit at 10k: {}.",
        fmt(f),
        show("10k, IPv4 miss"),
        show("10k, IPv4 exact hit"),
        show("10k, IPv6 hit"),
    ));
    let curve = |case: &str| -> String {
        sizes
            .scale
            .iter()
            .map(|n| {
                let label = format!("{} IPv4 bans, {case}", label_count(*n));
                format!(
                    "{}: {} / {} ns",
                    label_count(*n),
                    run.beyond(&label, TRACKING).map_or("-".into(), fmt),
                    run.beyond(&label, REFERENCE).map_or("-".into(), fmt),
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    notes.push(format!(
        "As the IPv4 list grows, beyond the floor, tracking / reference: hot exact hit {}; cold mix {}.",
        curve("exact hit"),
        curve("cold mix"),
    ));
    let v6 = |case: &str| -> String {
        V6_LENGTHS
            .iter()
            .filter_map(|k| {
                let label = run
                    .kept
                    .iter()
                    .map(|(l, _, _)| l)
                    .find(|l| l.ends_with(&format!("of {k} lengths, {case}")))?;
                Some(format!(
                    "{k}: {} / {} ns",
                    run.beyond(label, TRACKING).map_or("-".into(), fmt),
                    run.beyond(label, REFERENCE).map_or("-".into(), fmt),
                ))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    notes.push(format!(
        "IPv6 by distinct prefix lengths, beyond the floor, tracking / reference: hit on the shortest \
         {}; near miss {}. The agent's program probes its table once per length present, longest \
         first (a bounded loop), so its cost grows with the number of lengths; an LPM trie walks one \
         path whatever the lengths.",
        v6("hit on the shortest"),
        v6("near miss"),
    ));
    notes
}
