//! The XDP program's verdicts on crafted frames, through BPF_PROG_TEST_RUN.
//!
//! Each test loads its own copy of the program with its own pins ([`Loaded`]), so tests run in
//! parallel. Needs root (loading BPF programs); the suite's `cargo xtask test` runs it as root.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use tests::{
    Loaded,
    frames::{self, Vlan},
    loaded::net,
    xdp::{XDP_DROP, XDP_PASS},
};
use tracking_agent::{ban::Effective, time::Timestamp};
use tracking_common::stats::Verdict;

#[test]
fn an_exact_ipv4_ban_drops_that_source_and_passes_others() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7"]);
    assert_eq!(f.verdict_of("192.0.2.7"), XDP_DROP);
    assert_eq!(f.verdict_of("192.0.2.8"), XDP_PASS);
    assert_eq!(f.verdict_of("10.0.0.1"), XDP_PASS);
    assert_eq!(f.counter(Verdict::Dropped), 1);
    assert_eq!(f.counter(Verdict::Passed), 2);
    assert_eq!(f.hits("192.0.2.7"), 1);
}

#[test]
fn an_exact_ipv6_ban_drops_that_source_and_passes_others() {
    let mut f = Loaded::new();
    f.ban(&["2001:db8::7"]);
    assert_eq!(f.verdict_of("2001:db8::7"), XDP_DROP);
    assert_eq!(f.verdict_of("2001:db8::8"), XDP_PASS);
    assert_eq!(f.verdict_of("2001:db9::7"), XDP_PASS);
    assert_eq!(f.hits("2001:db8::7"), 1);
}

#[test]
fn ipv4_prefix_bans_of_every_length_drop_their_whole_network() {
    for len in [0u8, 1, 7, 8, 15, 16, 17, 23, 24, 25, 31, 32] {
        let mut f = Loaded::new();
        let n = format!("203.0.113.77/{len}");
        f.ban(&[&n]);
        assert_eq!(
            f.verdict_of("203.0.113.77"),
            XDP_DROP,
            "/{len}, the address itself"
        );
        let first = net(&n).network().to_string();
        assert_eq!(
            f.verdict_of(&first),
            XDP_DROP,
            "/{len}, first address {first}"
        );
        if let IpNet::V4(v4) = net(&n)
            && len > 0
        {
            let outside = u32::from(v4.broadcast()).wrapping_add(1);
            let outside = std::net::Ipv4Addr::from(outside).to_string();
            assert_eq!(
                f.verdict_of(&outside),
                XDP_PASS,
                "/{len}, just outside: {outside}"
            );
        }
    }
}

#[test]
fn ipv6_prefix_bans_of_many_lengths_drop_their_whole_network() {
    for len in [0u8, 16, 27, 28, 32, 47, 48, 56, 64, 65, 96, 127, 128] {
        let mut f = Loaded::new();
        let n = format!("2001:db8:1234:5678:9abc:def0:1234:5678/{len}");
        f.ban(&[&n]);
        assert_eq!(
            f.verdict_of("2001:db8:1234:5678:9abc:def0:1234:5678"),
            XDP_DROP,
            "/{len}"
        );
        if let IpNet::V6(v6) = net(&n) {
            assert_eq!(
                f.verdict_of(&v6.network().to_string()),
                XDP_DROP,
                "/{len}, first address"
            );
            if len > 0 {
                let outside = u128::from(v6.broadcast()).wrapping_add(1);
                let outside = std::net::Ipv6Addr::from(outside).to_string();
                assert_eq!(
                    f.verdict_of(&outside),
                    XDP_PASS,
                    "/{len}, just outside: {outside}"
                );
            }
        }
    }
}

#[test]
fn the_longest_matching_ban_is_the_one_counted() {
    let mut f = Loaded::new();
    f.ban(&["10.1.0.0/16", "10.1.2.0/24", "10.1.2.3"]);
    assert_eq!(f.verdict_of("10.1.2.3"), XDP_DROP);
    assert_eq!(f.verdict_of("10.1.2.4"), XDP_DROP);
    assert_eq!(f.verdict_of("10.1.9.9"), XDP_DROP);
    assert_eq!(
        (
            f.hits("10.1.2.3"),
            f.hits("10.1.2.0/24"),
            f.hits("10.1.0.0/16")
        ),
        (1, 1, 1)
    );
}

/// `n` VLAN tags of priority only (VID 0), which the kernel strips and delivers behind,
/// alternating 802.1ad and 802.1Q.
fn priority_tags(n: usize) -> Vec<Vlan> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                Vlan::Dot1Ad(0)
            } else {
                Vlan::Dot1Q(0)
            }
        })
        .collect()
}

#[test]
fn frames_behind_up_to_eight_vlan_tags_are_filtered_like_untagged_ones() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7", "2001:db8::7"]);
    let mut tag_sets: Vec<Vec<Vlan>> = (1..=8).map(priority_tags).collect();
    tag_sets.push(vec![Vlan::Dot1Q(10)]);
    tag_sets.push(vec![Vlan::Dot1Ad(100), Vlan::Dot1Q(10)]);
    tag_sets.push(vec![Vlan::Dot1Q(1), Vlan::Dot1Q(2), Vlan::Dot1Q(3)]);
    for vlans in &tag_sets {
        let banned4 = frames::udp(
            "192.0.2.7".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            vlans,
        );
        let other4 = frames::udp(
            "192.0.2.8".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            vlans,
        );
        let banned6 = frames::udp(
            "2001:db8::7".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            vlans,
        );
        assert_eq!(f.run(&banned4), XDP_DROP, "{vlans:?}");
        assert_eq!(f.run(&other4), XDP_PASS, "{vlans:?}");
        assert_eq!(f.run(&banned6), XDP_DROP, "{vlans:?}");
    }
    assert_eq!(f.counter(Verdict::NotIp), 0);
}

#[test]
fn a_ninth_vlan_tag_is_beyond_the_program_passes_and_is_counted() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7"]);
    let nine = frames::udp(
        "192.0.2.7".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
        &priority_tags(9),
    );
    assert_eq!(f.run(&nine), XDP_PASS);
    assert_eq!(f.counter(Verdict::TooManyTags), 1);
    assert_eq!(f.counter(Verdict::NotIp), 0);
}

#[test]
fn an_ipv4_mapped_ipv6_source_is_judged_as_its_ipv4_address() {
    let mut f = Loaded::new();
    f.ban(&["10.0.0.5", "10.9.0.0/16", "2001:db8::7"]);
    let mapped = |s: &str| -> IpAddr {
        let v4: std::net::Ipv4Addr = s.parse().unwrap();
        IpAddr::V6(v4.to_ipv6_mapped())
    };
    assert_eq!(f.verdict_from(mapped("10.0.0.5")), XDP_DROP);
    assert_eq!(
        f.verdict_from(mapped("10.9.200.1")),
        XDP_DROP,
        "inside a prefix"
    );
    assert_eq!(f.verdict_from(mapped("10.0.0.6")), XDP_PASS);
    assert_eq!(f.hits("10.0.0.5"), 1);
    // The IPv4 allowlist covers the mapped form too.
    f.allow(&["10.9.8.0/24"]);
    assert_eq!(f.verdict_from(mapped("10.9.8.1")), XDP_PASS);
    assert_eq!(f.counter(Verdict::Allowed), 1);
    // The agent's own lookup says the same.
    let tables = f.program().maps.tables();
    assert!(tables.banned(mapped("10.0.0.5")).is_some());
    assert!(tables.banned(mapped("10.9.8.1")).is_none());
    // A ban given in the mapped form is the IPv4 ban.
    assert_eq!(net("::ffff:10.0.0.5"), net("10.0.0.5"));
}

#[test]
fn the_allowlist_wins_over_any_ban() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.0/24", "2001:db8::/32"]);
    f.allow(&["192.0.2.128/25", "2001:db8:aaaa::/48"]);
    assert_eq!(f.verdict_of("192.0.2.200"), XDP_PASS);
    assert_eq!(f.verdict_of("192.0.2.100"), XDP_DROP);
    assert_eq!(f.verdict_of("2001:db8:aaaa::1"), XDP_PASS);
    assert_eq!(f.verdict_of("2001:db8:bbbb::1"), XDP_DROP);
    assert_eq!(f.counter(Verdict::Allowed), 2);
    f.allow(&[]);
    assert_eq!(f.verdict_of("192.0.2.200"), XDP_DROP);
}

#[test]
fn a_ban_added_after_the_allowlist_still_yields_to_it() {
    let mut f = Loaded::new();
    f.allow(&["10.9.0.0/16", "2001:db8:aaaa::/48"]);
    f.ban(&[
        "10.9.8.7",
        "10.0.0.0/8",
        "2001:db8::/32",
        "2001:db8:aaaa::5",
    ]);
    assert_eq!(f.verdict_of("10.9.8.7"), XDP_PASS);
    assert_eq!(f.verdict_of("10.9.200.1"), XDP_PASS);
    assert_eq!(f.verdict_of("10.8.0.1"), XDP_DROP);
    assert_eq!(f.verdict_of("2001:db8:aaaa::5"), XDP_PASS);
    assert_eq!(f.verdict_of("2001:db8:bbbb::5"), XDP_DROP);
}

#[test]
fn each_allowlist_change_flags_exactly_the_bans_it_overlaps_narrow_or_wide() {
    let mut f = Loaded::new();
    f.ban(&[
        "10.0.0.0/8",
        "10.1.2.0/24",
        "10.1.2.3",
        "10.1.3.4",
        "192.0.2.1",
        "2001:db8::/32",
        "2001:db8:aaaa::5",
    ]);
    // Narrow networks: the bans inside and around them are looked up one by one.
    f.allow(&["10.1.2.0/24", "2001:db8:aaaa::/120"]);
    assert_eq!(f.verdict_of("10.1.2.3"), XDP_PASS);
    assert_eq!(f.verdict_of("10.1.2.200"), XDP_PASS);
    assert_eq!(f.verdict_of("10.1.3.4"), XDP_DROP);
    assert_eq!(f.verdict_of("10.5.5.5"), XDP_DROP);
    assert_eq!(f.verdict_of("2001:db8:aaaa::5"), XDP_PASS);
    assert_eq!(f.verdict_of("2001:db8:bbbb::5"), XDP_DROP);
    // One network replaced by another: the bans of the old one drop again.
    f.allow(&["10.1.3.0/24"]);
    assert_eq!(f.verdict_of("10.1.2.3"), XDP_DROP);
    assert_eq!(f.verdict_of("10.1.3.4"), XDP_PASS);
    assert_eq!(f.verdict_of("2001:db8:aaaa::5"), XDP_DROP);
    // Wide networks, with more candidates than bans: every ban is looked at.
    f.allow(&["8.0.0.0/5", "2001:db8:aaaa::/64"]);
    assert_eq!(f.verdict_of("10.1.2.3"), XDP_PASS);
    assert_eq!(f.verdict_of("10.200.0.1"), XDP_PASS);
    assert_eq!(f.verdict_of("192.0.2.1"), XDP_DROP);
    assert_eq!(f.verdict_of("2001:db8:aaaa::5"), XDP_PASS);
    f.allow(&[]);
    for banned in [
        "10.1.2.3",
        "10.1.3.4",
        "10.200.0.1",
        "192.0.2.1",
        "2001:db8:aaaa::5",
    ] {
        assert_eq!(f.verdict_of(banned), XDP_DROP, "{banned}");
    }
}

#[test]
fn an_expired_ban_stops_dropping_by_itself() {
    let mut f = Loaded::new();
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 1000);
    f.ban_until(&["192.0.2.1", "2001:db8::1"], Some(past));
    assert_eq!(f.verdict_of("192.0.2.1"), XDP_PASS);
    assert_eq!(f.verdict_of("2001:db8::1"), XDP_PASS);

    let soon = Timestamp::now().plus(Duration::from_millis(700));
    f.ban_until(&["192.0.2.2"], Some(soon));
    assert_eq!(f.verdict_of("192.0.2.2"), XDP_DROP);
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(
        f.verdict_of("192.0.2.2"),
        XDP_PASS,
        "still dropped after its expiry"
    );
}

#[test]
fn an_expired_longer_ban_lets_a_shorter_live_one_match() {
    let mut f = Loaded::new();
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 1000);
    f.ban_until(&["192.0.2.1"], Some(past));
    f.ban(&["192.0.2.0/24"]);
    assert_eq!(f.verdict_of("192.0.2.1"), XDP_DROP);
    assert_eq!(f.hits("192.0.2.0/24"), 1);
}

#[test]
fn monitor_mode_counts_matches_but_passes_them() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7"]);
    f.program().maps.set_monitor(true);
    assert_eq!(f.verdict_of("192.0.2.7"), XDP_PASS);
    assert_eq!(f.counter(Verdict::Monitored), 1);
    assert_eq!(f.counter(Verdict::Dropped), 0);
    assert_eq!(f.hits("192.0.2.7"), 1);
    f.program().maps.set_monitor(false);
    assert_eq!(f.verdict_of("192.0.2.7"), XDP_DROP);
}

#[test]
fn unbanning_restores_traffic_and_keeps_neighbours_banned() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7", "192.0.2.8", "192.0.2.0/28", "2001:db8::7"]);
    f.unban(&["192.0.2.7", "2001:db8::7"]);
    assert_eq!(f.verdict_of("192.0.2.7"), XDP_DROP, "still inside the /28");
    f.unban(&["192.0.2.0/28"]);
    assert_eq!(f.verdict_of("192.0.2.7"), XDP_PASS);
    assert_eq!(f.verdict_of("192.0.2.8"), XDP_DROP);
    assert_eq!(f.verdict_of("2001:db8::7"), XDP_PASS);
}

#[test]
fn non_ip_frames_pass_and_are_counted() {
    let mut f = Loaded::new();
    f.ban(&["0.0.0.0/0"]);
    assert_eq!(f.run(&frames::arp()), XDP_PASS);
    assert_eq!(f.counter(Verdict::NotIp), 1);
}

#[test]
fn every_truncation_of_every_frame_kind_passes_and_is_never_aborted() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7", "2001:db8::7"]);
    let eight = priority_tags(8);
    let tags: [&[Vlan]; 4] = [
        &[],
        &[Vlan::Dot1Q(10)],
        &[Vlan::Dot1Ad(100), Vlan::Dot1Q(10)],
        &eight,
    ];
    for vlans in tags {
        for v6 in [false, true] {
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (
                    "2001:db8::7".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                )
            } else {
                (
                    "192.0.2.7".parse().unwrap(),
                    "198.51.100.1".parse().unwrap(),
                )
            };
            let full = frames::udp(src, dst, vlans);
            let needed = frames::headers_len(vlans, v6);
            // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
            for len in 14..full.len() {
                let before = f.counter(Verdict::Malformed);
                let verdict = f.run(&full[..len]);
                if len < needed {
                    assert_eq!(verdict, XDP_PASS, "{vlans:?} v6={v6} len={len}");
                    assert_eq!(
                        f.counter(Verdict::Malformed),
                        before + 1,
                        "{vlans:?} v6={v6} len={len}"
                    );
                } else {
                    assert_eq!(
                        verdict, XDP_DROP,
                        "{vlans:?} v6={v6} len={len}: headers are whole"
                    );
                }
            }
        }
    }
}

#[test]
fn an_ipv4_header_with_a_bad_version_or_length_is_malformed() {
    let mut f = Loaded::new();
    f.ban(&["192.0.2.7"]);
    let good = frames::udp(
        "192.0.2.7".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
        &[],
    );
    for (byte, what) in [
        (0x44u8, "IHL 4"),
        (0x55, "version 5"),
        (0x4f, "IHL 15 beyond the frame"),
    ] {
        let mut bad = good.clone();
        bad[14] = byte;
        let before = f.counter(Verdict::Malformed);
        assert_eq!(f.run(&bad), XDP_PASS, "{what}");
        assert_eq!(f.counter(Verdict::Malformed), before + 1, "{what}");
    }
}

#[test]
fn the_agents_own_lookup_agrees_with_the_program_on_every_source() {
    let mut f = Loaded::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Bans and allowlist entries clustered in a few networks, so that probes hit all cases.
    let v4_base = [0x0a00_0000u32, 0xc000_0200, 0xcb00_7100];
    let v6_base = [0x2001_0db8_0000_0000u64, 0x2a00_1450_4000_0000];
    let random4 =
        |r: u64| std::net::Ipv4Addr::from(v4_base[(r % 3) as usize] | ((r >> 8) as u32 & 0xffff));
    let random6 = |r: u64, s: u64| {
        std::net::Ipv6Addr::from(
            ((v6_base[(r % 2) as usize] | (r >> 40) & 0xffff) as u128) << 64 | (s & 0xffff) as u128,
        )
    };
    let mut bans = Vec::new();
    for i in 0..300 {
        let r = rnd();
        let net = if i % 2 == 0 {
            IpNet::new(
                IpAddr::V4(random4(r)),
                [32, 32, 30, 28, 26, 24][(r >> 40) as usize % 6],
            )
            .unwrap()
        } else {
            IpNet::new(
                IpAddr::V6(random6(r, rnd())),
                [128, 128, 124, 120, 116, 112][(r >> 40) as usize % 6],
            )
            .unwrap()
        };
        let expired = r % 7 == 0;
        bans.push((net.trunc(), expired));
    }
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
    for (net, expired) in &bans {
        let expires = if *expired { Some(past) } else { None };
        f.program()
            .maps
            .apply(&[(*net, Effective::Banned { expires })])
            .unwrap();
    }
    let allow: Vec<IpNet> = (0..20)
        .map(|i| {
            let r = rnd();
            if i % 2 == 0 {
                IpNet::new(IpAddr::V4(random4(r)), 28).unwrap().trunc()
            } else {
                IpNet::new(IpAddr::V6(random6(r, rnd())), 124)
                    .unwrap()
                    .trunc()
            }
        })
        .collect();
    f.program().maps.set_allowlist(&allow).unwrap();
    let tables = f.program().maps.tables();
    let mut dropped = 0;
    for i in 0..3000 {
        let r = rnd();
        let (src, dst): (IpAddr, IpAddr) = if i % 2 == 0 {
            (IpAddr::V4(random4(r)), "198.51.100.1".parse().unwrap())
        } else {
            (
                IpAddr::V6(random6(r, rnd())),
                "2001:db8:ffff::1".parse().unwrap(),
            )
        };
        let kernel_drops = f.run(&frames::udp(src, dst, &[])) == XDP_DROP;
        assert_eq!(
            tables.banned(src).is_some(),
            kernel_drops,
            "{src}: agent and program disagree"
        );
        dropped += kernel_drops as u32;
    }
    assert!(
        dropped > 100 && dropped < 2900,
        "the probes should mix hits and misses ({dropped} dropped)"
    );
}

#[test]
fn removing_bans_leaves_the_filters_exactly_as_a_full_rebuild_would() {
    let mut f = Loaded::new();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Bans packed into one /12 so that removals share /24s and /16s with survivors.
    let random = |r: u64| std::net::Ipv4Addr::from(0x0ac0_0000 | (r as u32 & 0x000f_ffff));
    let mut held: Vec<IpNet> = Vec::new();
    for round in 0..20 {
        let mut effects = Vec::new();
        for _ in 0..200 {
            let r = rnd();
            let len = [32, 32, 32, 28, 24, 20, 16][(r >> 40) as usize % 7];
            let net = IpNet::new(IpAddr::V4(random(r)), len).unwrap().trunc();
            effects.push((net, Effective::Banned { expires: None }));
            held.push(net);
        }
        // Remove about a third of what is held.
        held.sort();
        held.dedup();
        let keep: Vec<IpNet> = held.iter().copied().filter(|_| rnd() % 3 != 0).collect();
        for gone in held.iter().filter(|n| !keep.contains(n)) {
            effects.push((*gone, Effective::Unbanned));
        }
        held = keep;
        // Removals and additions of the same network in one batch: the addition wins.
        effects.retain(|(n, e)| *e == Effective::Unbanned || held.contains(n));
        f.program().maps.apply(&effects).unwrap();
        let tables = f.program().maps.tables();
        let probes: Vec<IpAddr> = (0..2000).map(|_| IpAddr::V4(random(rnd()))).collect();
        let incremental: Vec<bool> = probes.iter().map(|ip| tables.candidate(*ip)).collect();
        f.program().maps.rebuild_derived();
        let rebuilt: Vec<bool> = probes.iter().map(|ip| tables.candidate(*ip)).collect();
        assert_eq!(
            incremental, rebuilt,
            "round {round}: filter bits differ from a rebuild"
        );
        for ip in &probes[..200] {
            let dst: IpAddr = "198.51.100.1".parse().unwrap();
            let kernel_drops = f.run(&frames::udp(*ip, dst, &[])) == XDP_DROP;
            assert_eq!(
                tables.banned(*ip).is_some(),
                kernel_drops,
                "round {round}: {ip}"
            );
            let expected = held.iter().any(|n| n.contains(ip));
            assert_eq!(
                kernel_drops, expected,
                "round {round}: {ip} dropped={kernel_drops}"
            );
        }
    }
}
