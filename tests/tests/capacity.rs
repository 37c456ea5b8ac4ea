//! What the kernel tables hold, and what they refuse: the documented capacity for any list
//! (consecutive addresses, a whole /12, lists crafted to collide), all-or-nothing batches,
//! far-future expiries, and derived state repaired when pinned tables are adopted. Through the
//! agent's kernel layer and `BPF_PROG_TEST_RUN`; needs root.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tests::{
    Loaded,
    loaded::net,
    xdp::{XDP_DROP, XDP_PASS},
};
use tracking_agent::{
    ban::Effective,
    kernel::{KernelError, mmap::Words},
    time::Timestamp,
};
use tracking_common::{
    hash::{buckets4, buckets6},
    layout::SLOT_DEADLINE,
    maps as names,
};

const BAN: Effective = Effective::Banned { expires: None };

fn host4(addr: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from_bits(addr), 32).unwrap())
}

/// Every `step`th ban of `nets` through the program: all must be dropped.
fn assert_all_dropped(f: &Loaded, nets: &[IpNet], step: usize) {
    for n in nets.iter().step_by(step) {
        assert_eq!(f.verdict_from(n.addr()), XDP_DROP, "{n} passes");
    }
}

#[test]
fn a_batch_the_tables_cannot_hold_changes_nothing_and_says_how_many_fit() {
    let mut f = Loaded::new();
    let first: Vec<IpNet> = (0..4096).map(|i| host4(0x0a00_0000 + i)).collect();
    let effects: Vec<_> = first.iter().map(|n| (*n, BAN)).collect();
    assert_eq!(f.apply(&effects).unwrap().added, 4096);

    let more = vec![(host4(0x0b00_0000), BAN)];
    let err = f.apply(&more).unwrap_err();
    assert!(matches!(err, KernelError::OverCapacity(_)), "{err}");
    let message = err.to_string();
    for part in ["at most 4,096 IPv4 bans", "needs 4,097", "--max-bans-v4"] {
        assert!(message.contains(part), "{message}");
    }
    let tables = f.program().maps.tables();
    assert_eq!(tables.counts(), (4096, 0));
    assert!(tables.get(&more[0].0).is_none());
    assert_eq!(f.verdict_of("11.0.0.0"), XDP_PASS);
    assert_all_dropped(&f, &first, 7);

    // A batch that swaps bans fits, removals counted first.
    let mut swap: Vec<_> = first[..100]
        .iter()
        .map(|n| (*n, Effective::Unbanned))
        .collect();
    swap.extend((0..100).map(|i| (host4(0x0c00_0000 + i), BAN)));
    let applied = f.apply(&swap).unwrap();
    assert_eq!((applied.added, applied.removed), (100, 100));
    assert_eq!(tables.counts(), (4096, 0));
    assert_eq!(f.verdict_of("12.0.0.99"), XDP_DROP);
    assert_eq!(f.verdict_of("10.0.0.99"), XDP_PASS);
}

#[test]
fn the_default_capacity_holds_a_million_consecutive_addresses_and_a_whole_slash_12() {
    let mut f = Loaded::with(1 << 20, 1 << 17, None);
    let tables = f.program().maps.tables();
    let consecutive: Vec<IpNet> = (0..1_000_000).map(|i| host4(0x6440_0000 + i)).collect();
    let effects: Vec<_> = consecutive.iter().map(|n| (*n, BAN)).collect();
    let applied = f.apply(&effects).unwrap();
    assert_eq!(applied.added, 1_000_000);
    assert_eq!(tables.counts(), (1_000_000, 0));
    assert_eq!(tables.overflow_counts(), (0, 0), "nothing overflowed");
    for n in consecutive.iter().step_by(97) {
        assert!(tables.get(n).unwrap().enforced, "{n}");
    }
    assert_all_dropped(&f, &consecutive, 211);

    let unban: Vec<_> = consecutive
        .iter()
        .map(|n| (*n, Effective::Unbanned))
        .collect();
    f.apply(&unban).unwrap();
    assert_eq!(tables.counts(), (0, 0));

    // Every address of 10.16.0.0/12: exactly the capacity.
    let slash12: Vec<IpNet> = (0..1u32 << 20).map(|i| host4(0x0a10_0000 + i)).collect();
    let effects: Vec<_> = slash12.iter().map(|n| (*n, BAN)).collect();
    assert_eq!(f.apply(&effects).unwrap().added, 1 << 20);
    assert_eq!(tables.counts(), (1 << 20, 0));
    assert_all_dropped(&f, &slash12, 509);
    let err = f.apply(&[(host4(0x0b00_0000), BAN)]).unwrap_err();
    assert!(err.to_string().contains("1,048,577"), "{err}");
}

/// The hash key these tests fix, to build lists that fill chosen buckets.
const KEY: u64 = 0x0123_4567_89ab_cdef;

/// `count` IPv4 addresses from `start` up whose two candidate buckets (of `buckets`) are both
/// among the first four: under `key` they can only share 32 entries.
fn colliding4(key: u64, buckets: u32, count: usize) -> Vec<IpNet> {
    (0x0a00_0000u32..)
        .filter(|&a| {
            let (b1, b2) = buckets4(a, 32, key, buckets - 1);
            b1 < 4 && b2 < 4
        })
        .take(count)
        .map(host4)
        .collect()
}

fn colliding6(key: u64, buckets: u32, count: usize) -> Vec<IpNet> {
    (0u64..)
        .map(|i| (0x2001_0db8_0000_0000u64, i))
        .filter(|&(hi, lo)| {
            let (b1, b2) = buckets6(hi, lo, 128, key, buckets - 1);
            b1 < 4 && b2 < 4
        })
        .take(count)
        .map(|(hi, lo)| {
            let addr = Ipv6Addr::from_bits((hi as u128) << 64 | lo as u128);
            IpNet::V6(Ipv6Net::new(addr, 128).unwrap())
        })
        .collect()
}

#[test]
fn lists_crafted_to_collide_overflow_their_buckets_and_are_still_enforced() {
    // 4096 IPv4 bans: 1024 buckets; 1024 IPv6 bans: 512 buckets.
    let mut f = Loaded::with(4096, 1024, Some(KEY));
    let v4 = colliding4(KEY, 1024, 64);
    let v6 = colliding6(KEY, 512, 32);
    let effects: Vec<_> = v4.iter().chain(&v6).map(|n| (*n, BAN)).collect();
    let applied = f.apply(&effects).unwrap();
    assert_eq!(applied.added, 96);
    let tables = f.program().maps.tables();
    // Four buckets hold 32 IPv4 and 16 IPv6 entries; the rest had to go elsewhere.
    let (o4, o6) = tables.overflow_counts();
    assert_eq!((o4, o6), (32, 16), "{applied:?}");
    for n in v4.iter().chain(&v6) {
        assert!(tables.get(n).unwrap().enforced, "{n}");
        assert_eq!(f.verdict_from(n.addr()), XDP_DROP, "{n}");
    }
    assert_eq!(f.verdict_of("10.255.255.254"), XDP_PASS);

    // Removing them empties the overflow maps; the rest stay enforced.
    let gone: Vec<_> = v4[..40]
        .iter()
        .chain(&v6[..20])
        .map(|n| (*n, Effective::Unbanned))
        .collect();
    f.apply(&gone).unwrap();
    for n in v4[..40].iter().chain(&v6[..20]) {
        assert_eq!(f.verdict_from(n.addr()), XDP_PASS, "{n} was unbanned");
    }
    for n in v4[40..].iter().chain(&v6[20..]) {
        assert_eq!(f.verdict_from(n.addr()), XDP_DROP, "{n}");
    }
    assert_eq!(tables.counts(), (24, 12));

    // Under a key nobody chose, the same list spreads like any other.
    let mut g = Loaded::with(4096, 1024, None);
    g.apply(&effects).unwrap();
    assert_eq!(g.program().maps.tables().overflow_counts(), (0, 0));
}

#[test]
fn an_expiry_beyond_what_the_kernel_holds_never_wraps_or_drifts() {
    let mut f = Loaded::new();
    let now = Timestamp::now();
    let years = |y: u64| now.plus(Duration::from_secs(y * 365 * 86_400));
    let cases = [
        ("10.0.0.1", years(99)),
        ("10.0.0.2", years(293)),
        ("10.0.0.3", years(600)),
        (
            "10.0.0.4",
            Timestamp::parse("9999-12-31T00:00:00Z").unwrap(),
        ),
        ("10.0.0.5", Timestamp::from_millis(i64::MAX)),
    ];
    for (addr, expires) in cases {
        f.apply(&[(
            net(addr),
            Effective::Banned {
                expires: Some(expires),
            },
        )])
        .unwrap();
    }
    let tables = f.program().maps.tables();
    for (addr, expires) in cases {
        let held = tables.get(&net(addr)).unwrap();
        assert!(held.enforced, "{addr}");
        assert!(
            held.deadline_ns <= SLOT_DEADLINE,
            "{addr}: the deadline spills"
        );
        assert!(
            held.expires.unwrap() > years(98),
            "{addr}: held until {:?}",
            held.expires
        );
        assert_eq!(f.verdict_of(addr), XDP_DROP, "{addr}");
        // Applying the same again finds nothing to change.
        let again = f
            .apply(&[(
                net(addr),
                Effective::Banned {
                    expires: Some(expires),
                },
            )])
            .unwrap();
        assert_eq!(again.updated, 0, "{addr} looks like drift");
    }
    let want: Vec<_> = cases.iter().map(|(a, e)| (net(a), Some(*e))).collect();
    assert!(tables.drift(&want).is_empty());
}

#[test]
fn adopted_tables_whose_filters_miss_bans_are_repaired_before_they_count_as_enforced() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7", "198.51.100.0/24", "2001:db8::7"]);
    // What an agent killed between writing entries and publishing their bits leaves.
    let program = f.program_ref();
    let pins = program.pin_dir().join(program.generation());
    for name in [names::V4_FILTER, names::V6_FILTER] {
        let data = aya::maps::MapData::from_pin(pins.join(name)).unwrap();
        let words = Words::map(name, &data).unwrap();
        for w in words.iter() {
            w.store(0, std::sync::atomic::Ordering::Release);
        }
    }
    let tables = f.program().maps.tables();
    for n in ["192.0.2.7", "198.51.100.0/24", "2001:db8::7"] {
        assert!(
            !tables.get(&net(n)).unwrap().enforced,
            "{n}: held, but not looked for"
        );
    }
    assert_eq!(f.verdict_of("192.0.2.7"), XDP_PASS);
    drop(tables);

    f.reload(4096, 1024);
    let tables = f.program().maps.tables();
    for n in ["192.0.2.7", "198.51.100.0/24", "2001:db8::7"] {
        assert!(tables.get(&net(n)).unwrap().enforced, "{n}");
    }
    for src in ["192.0.2.7", "198.51.100.9", "2001:db8::7"] {
        assert_eq!(f.verdict_of(src), XDP_DROP, "{src}");
    }
    assert!(
        tables
            .banned("198.51.100.9".parse::<IpAddr>().unwrap())
            .is_some(),
        "the agent's lookup agrees"
    );
}
