//! Benchmark 1: what the program costs a packet, through `BPF_PROG_TEST_RUN`, with a million
//! IPv4 bans, a hundred thousand IPv4 prefixes of mixed lengths and a hundred thousand IPv6 bans
//! loaded, against the floor of a program that only returns `XDP_PASS`. Every case runs in every
//! round next to the floor; rows are medians over rounds.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::Context as _;
use ipnet::{IpNet, Ipv4Net};
use tracking_agent::{
    ban::Effective,
    kernel::{
        Options, Program,
        program::{Floor, detach_all},
    },
};

use super::{Report, Row, Scale, Xorshift};
use crate::frames;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The loaded bans, and sources that land in each case.
pub struct Loaded {
    pub program: Program,
    pins: PathBuf,
    exact: Vec<Ipv4Addr>,
    prefixes: Vec<Ipv4Net>,
    v6: Vec<Ipv6Addr>,
    pub bans: usize,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = detach_all(&self.pins);
    }
}

/// Loads the program with the benchmark's bans: `n` exact IPv4, `n / 10` IPv4 prefixes of
/// every length from 8 to 31 and `n / 10` IPv6 addresses.
///
/// The prefixes are shaped like real block lists: one in a thousand is shorter than /16, the
/// rest spread evenly over /16 to /31. Evenly over all lengths, a hundred thousand prefixes
/// would include thousands of /8s, banning the whole IPv4 space and leaving no miss to measure.
pub fn load(n: usize) -> anyhow::Result<Loaded> {
    let pins = PathBuf::from(format!("/sys/fs/bpf/trk-bench-{}", std::process::id()));
    let _ = detach_all(&pins);
    let program = Program::load(&Options {
        pin_dir: pins.clone(),
        max_bans_v4: (n + n / 10 + 16) as u32,
        max_bans_v6: (n / 10 + 16) as u32,
        hash_key: None,
    })
    .context("loading the program")?;
    let mut rnd = Xorshift::new(0x5eed);
    let mut effects = Vec::with_capacity(n + n / 5);
    let mut exact = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::with_capacity(n + n / 5);
    while exact.len() < n {
        let a = Ipv4Addr::from(rnd.next() as u32);
        if seen.insert(IpNet::from(IpAddr::V4(a))) {
            exact.push(a);
        }
    }
    let mut prefixes = Vec::with_capacity(n / 10);
    while prefixes.len() < n / 10 {
        let len = if prefixes.len().is_multiple_of(1000) {
            8 + (rnd.next() % 8) as u8
        } else {
            16 + (rnd.next() % 16) as u8
        };
        let net = Ipv4Net::new(Ipv4Addr::from(rnd.next() as u32), len)
            .expect("valid")
            .trunc();
        if seen.insert(IpNet::V4(net)) {
            prefixes.push(net);
        }
    }
    let mut v6 = Vec::with_capacity(n / 10);
    while v6.len() < n / 10 {
        let a = Ipv6Addr::from(
            ((0x2001_0db8u128 | (rnd.next() as u128 & 0xffff) << 32) << 96) | rnd.next() as u128,
        );
        if seen.insert(IpNet::from(IpAddr::V6(a))) {
            v6.push(a);
        }
    }
    let banned = Effective::Banned { expires: None };
    effects.extend(exact.iter().map(|a| (IpNet::from(IpAddr::V4(*a)), banned)));
    effects.extend(prefixes.iter().map(|p| (IpNet::V4(*p), banned)));
    effects.extend(v6.iter().map(|a| (IpNet::from(IpAddr::V6(*a)), banned)));
    let mut loaded = Loaded {
        program,
        pins,
        exact,
        prefixes,
        v6,
        bans: effects.len(),
    };
    loaded
        .program
        .maps
        .apply(&effects)
        .context("loading the bans")?;
    // The allowlist case: an allowlisted /24 inside a banned /16.
    loaded
        .program
        .maps
        .apply(&[("203.0.0.0/16".parse().unwrap(), banned)])
        .context("the allowlisted case's ban")?;
    loaded
        .program
        .maps
        .set_allowlist(&["203.0.113.0/24".parse().unwrap()])?;
    Ok(loaded)
}

impl Loaded {
    /// A source of each case, checked against what the agent's own lookup says.
    fn cases(&self) -> anyhow::Result<Vec<(&'static str, IpAddr, u32)>> {
        let tables = self.program.maps.tables();
        let mut rnd = Xorshift::new(0xcafe);
        // A miss: an address no ban comes near, the common case the filter answers alone.
        let miss = (0..1_000_000)
            .map(|_| IpAddr::V4(Ipv4Addr::from(rnd.next() as u32)))
            .find(|a| !tables.candidate(*a))
            .context("no IPv4 address outside every ban's /24")?;
        // A miss that the filter lets through: an unbanned address next to an exact ban.
        let near = self
            .exact
            .iter()
            .map(|e| IpAddr::V4(Ipv4Addr::from(u32::from(*e) ^ 1)))
            .find(|a| tables.banned(*a).is_none())
            .context("no unbanned neighbour of an exact ban")?;
        let exact = IpAddr::V4(self.exact[self.exact.len() / 2]);
        let prefix = self
            .prefixes
            .iter()
            .skip(self.prefixes.len() / 2)
            .filter(|p| p.prefix_len() >= 16)
            .map(|p| IpAddr::V4(Ipv4Addr::from(u32::from(p.network()) + 1)))
            .find(|a| tables.banned(*a).is_some_and(|(n, _)| n.prefix_len() < 32))
            .context("no prefix hit")?;
        let v6_miss = IpAddr::V6("2a00:1450:4001::1".parse()?);
        let v6_hit = IpAddr::V6(self.v6[self.v6.len() / 2]);
        Ok(vec![
            ("IPv4 miss", miss, XDP_PASS),
            ("IPv4 miss next to a ban", near, XDP_PASS),
            ("IPv4 exact hit", exact, XDP_DROP),
            ("IPv4 prefix hit", prefix, XDP_DROP),
            (
                "IPv4 allowlisted hit",
                IpAddr::V4("203.0.113.9".parse()?),
                XDP_PASS,
            ),
            ("IPv6 miss", v6_miss, XDP_PASS),
            ("IPv6 hit", v6_hit, XDP_DROP),
        ])
    }
}

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let (n, repeat, rounds) = match scale {
        Scale::Full => (1_000_000, 10_000_000, 7),
        Scale::Quick => (100_000, 1_000_000, 7),
    };
    let started = std::time::Instant::now();
    let loaded = load(n)?;
    let load_time = started.elapsed();
    let floor = Floor::load().context("loading the floor program")?;
    let cases = loaded.cases()?;
    let dst4: IpAddr = "198.51.100.1".parse()?;
    let dst6: IpAddr = "2001:db8:ffff::1".parse()?;
    let frame = |src: IpAddr| frames::udp(src, if src.is_ipv4() { dst4 } else { dst6 }, &[]);
    let floor_frame = frame(cases[0].1);
    pin_to_one_cpu();
    let mut floor_ns = Vec::new();
    let mut samples = vec![Vec::new(); cases.len()];
    let mut ratios = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (name, src, expected)) in cases.iter().enumerate() {
            // The floor right before each case: the pair shares the machine's mood.
            let (_, f) = floor.test_run(&floor_frame, repeat)?;
            let (verdict, d) = loaded.program.test_run(&frame(*src), repeat)?;
            anyhow::ensure!(
                verdict == *expected,
                "{name} ({src}): verdict {verdict}, expected {expected}"
            );
            floor_ns.push(f.as_nanos() as f64);
            samples[i].push(d.as_nanos() as f64);
            ratios[i].push(d.as_nanos() as f64 / f.as_nanos().max(1) as f64);
        }
    }
    let floor_row = Row::new("floor: XDP_PASS only", "ns", floor_ns);
    let mut rows = vec![floor_row.clone()];
    for (((name, _, _), s), r) in cases.iter().zip(samples).zip(ratios) {
        let row = Row::new(*name, "ns", s).paired(&r, "floor");
        rows.push(match *name {
            "IPv4 miss" | "IPv4 exact hit" => row.ratio_at_most(1.5),
            "IPv4 prefix hit" => row.ratio_at_most(2.0),
            "IPv6 miss" | "IPv6 hit" => row.ratio_at_most(2.5),
            _ => row,
        });
    }
    Ok(Report {
        name: "packet",
        title: "Cost per packet".into(),
        method: format!(
            "`BPF_PROG_TEST_RUN` on one pinned CPU, {repeat} repeats a run, {rounds} rounds; in every round each \
             case runs right after the floor, and its ratio is the median of those pairs. Loaded: {} exact IPv4 bans, {} IPv4 prefixes of every length from 8 to 31 (one in a thousand shorter than /16), {} IPv6 bans (loaded into \
             the kernel tables in {:.0} ms), one allowlisted /24.",
            n,
            n / 10,
            n / 10,
            load_time.as_secs_f64() * 1000.0
        ),
        rows,
        notes: vec![],
    })
}

/// Keeps the benchmark on one CPU: `BPF_PROG_TEST_RUN` runs on the caller's CPU, and a floor and
/// its case should share it.
fn pin_to_one_cpu() {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // SAFETY: a zeroed cpu_set_t is valid; the set and its size are passed together.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}
