//! Lookups that run while the agent rewrites the tables: the program, run through
//! `BPF_PROG_TEST_RUN` from threads of their own, must drop every source of a ban that stays
//! and pass every source never banned, while the writer churns tables kept near full with adds,
//! removes, moves, overflow and reuse of retired entries and slots. Needs root.
//!
//! `TRACKING_STRESS_LOOKUPS` sets how many lookups each kind of source gets (the suite runs
//! ten million of each; more for a long run).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tests::{Loaded, frames, xdp::XDP_DROP};
use tracking_agent::ban::Effective;
use tracking_common::{
    hash::{buckets4, buckets6},
    stats::Verdict,
};

/// The hash key the test fixes, so that it can pick networks that crowd a few buckets.
const KEY: u64 = 0x5eed_cafe_f00d_0042;
/// Frames a test run repeats; the verdict counters say what happened to every one. A run of
/// more than one costs the kernel two grace periods (it switches the XDP dispatcher), so the
/// runs are long: a few milliseconds of lookups of one source each.
const REPEAT: u32 = 50_000;
/// Batches the writer makes at least, while the lookups go on.
const MIN_BATCHES: usize = 1000;

/// A small xorshift generator: the same churn every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// IPv4 hosts whose two candidate buckets (of 1024) are both among the first 16.
fn crowded4(count: usize) -> Vec<IpNet> {
    (0x0a00_0000u32..)
        .filter(|&a| {
            let (b1, b2) = buckets4(a, 32, KEY, 1023);
            b1 < 16 && b2 < 16
        })
        .take(count)
        .map(|a| IpNet::V4(Ipv4Net::new(Ipv4Addr::from_bits(a), 32).unwrap()))
        .collect()
}

/// IPv6 hosts whose two candidate buckets (of 512) are both among the first 8.
fn crowded6(count: usize) -> Vec<IpNet> {
    (0u64..)
        .filter(|&lo| {
            let (b1, b2) = buckets6(0x2001_0db8_0000_0000, lo, 128, KEY, 511);
            b1 < 8 && b2 < 8
        })
        .take(count)
        .map(|lo| {
            let addr = Ipv6Addr::from_bits(0x2001_0db8_0000_0000u128 << 64 | lo as u128);
            IpNet::V6(Ipv6Net::new(addr, 128).unwrap())
        })
        .collect()
}

fn lookups() -> u64 {
    std::env::var("TRACKING_STRESS_LOOKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

#[test]
fn lookups_while_the_tables_churn_near_full_never_miss_a_ban_and_never_drop_a_stranger() {
    let mut f = Loaded::with(4096, 1024, Some(KEY));
    let v4 = crowded4(1600);
    let v6 = crowded6(600);
    // Those that stay banned throughout, those that come and go, those never banned. The
    // crowded buckets hold 128 IPv4 and 32 IPv6 entries; about twice that is banned at once.
    let stable: Vec<IpNet> = v4[..80].iter().chain(&v6[..20]).copied().collect();
    let strangers: Vec<IpNet> = v4[80..180].iter().chain(&v6[20..60]).copied().collect();
    let churn: Vec<IpNet> = v4[180..].iter().chain(&v6[60..]).copied().collect();
    let ban: Vec<_> = stable
        .iter()
        .map(|n| (*n, Effective::Banned { expires: None }))
        .collect();
    f.apply(&ban).unwrap();

    let target = lookups();
    // The readers go on until the writer has done enough batches too.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = |sources: Vec<IpNet>, runner: tests::xdp::XdpRun| {
        let stop = stop.clone();
        move || {
            let frames: Vec<Vec<u8>> = sources.iter().map(|n| frames::udp_from(n.addr())).collect();
            let mut sent = 0u64;
            let mut i = 0;
            while sent < target || !stop.load(Ordering::Acquire) {
                runner
                    .run_repeat(&frames[i % frames.len()], REPEAT)
                    .expect("test run");
                sent += REPEAT as u64;
                i += 1;
            }
            sent
        }
    };
    let started = Instant::now();
    let banned_reader = std::thread::spawn(reader(stable.clone(), f.runner()));
    let stranger_reader = std::thread::spawn(reader(strangers.clone(), f.runner()));

    // The writer: batches that remove some churned bans and add others, with the stable ones
    // moving out of the way whenever both buckets of a newcomer are full.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<IpNet> = Vec::new();
    let mut idle: Vec<IpNet> = churn.clone();
    let (mut batches, mut moved, mut overflowed, mut added, mut removed) = (0, 0, 0, 0, 0);
    let mut slots_seen = std::collections::HashSet::new();
    let mut slots_reused = 0;
    while !(banned_reader.is_finished() && stranger_reader.is_finished()) {
        if batches >= MIN_BATCHES {
            stop.store(true, Ordering::Release);
        }
        let mut effects = Vec::new();
        for _ in 0..1 + rng.below(6) {
            if !live.is_empty() && (live.len() > 260 || rng.below(2) == 0) {
                let n = live.swap_remove(rng.below(live.len()));
                effects.push((n, Effective::Unbanned));
                idle.push(n);
            } else if !idle.is_empty() {
                let n = idle.swap_remove(rng.below(idle.len()));
                effects.push((n, Effective::Banned { expires: None }));
                live.push(n);
            }
        }
        // One network once a batch: a network removed and added back in the same batch is
        // the store's business, not this test's.
        effects.sort_by_key(|(n, _)| *n);
        effects.dedup_by_key(|(n, _)| *n);
        let applied = f.apply(&effects).expect("a batch within capacity");
        batches += 1;
        moved += applied.moved;
        overflowed += applied.overflowed;
        added += applied.added;
        removed += applied.removed;
        let tables = f.program().maps.tables();
        for (n, e) in &effects {
            if *e != Effective::Unbanned {
                let slot = tables.get(n).expect("just added").slot;
                if !slots_seen.insert(slot) {
                    slots_reused += 1;
                }
            }
        }
    }
    let sent_banned = banned_reader.join().unwrap();
    let sent_strangers = stranger_reader.join().unwrap();
    let took = started.elapsed();

    let tables = f.program().maps.tables();
    let stable_hits: u64 = stable.iter().map(|n| tables.get(n).unwrap().hits).sum();
    let dropped = f.counter(Verdict::Dropped);
    let missed = sent_banned - stable_hits;
    let false_drops = dropped - stable_hits;
    println!(
        "{sent_banned} lookups of {} stable bans and {sent_strangers} of {} strangers in {took:.1?}, \
         while {batches} batches added {added}, removed {removed}, moved {moved}, overflowed \
         {overflowed} and reused {slots_reused} slots: {missed} missed, {false_drops} dropped falsely",
        stable.len(),
        strangers.len(),
    );
    assert_eq!(missed, 0, "lookups missed a ban that stayed");
    assert_eq!(false_drops, 0, "lookups dropped a source never banned");
    assert!(
        moved > 0,
        "the churn moved nothing: the test proves less than it says"
    );
    assert!(overflowed > 0, "the churn never overflowed");
    assert!(slots_reused > 0, "no slot was reused");
    for n in &stable {
        assert_eq!(f.verdict_from(n.addr()), XDP_DROP, "{n}");
    }
}
