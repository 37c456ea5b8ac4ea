//! The peers the packet and flood benchmarks measure the agent against give the verdicts their
//! bans call for, so that a comparison with them is a comparison of equals: the reference program
//! (kernel hash maps for addresses, LPM tries for networks) and xdp-filter loaded by its own
//! command. Needs root; run with `cargo xtask test`.

use std::net::IpAddr;

use tests::{
    Topology,
    bench::{reference::Reference, xdp_filter::XdpFilter},
    frames, require_root,
    xdp::{XDP_DROP, XDP_PASS},
};

fn nets(list: &[&str]) -> Vec<tests::IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn verdict(run: &tests::xdp::XdpRun, src: &str) -> u32 {
    run.run(&frames::udp_from(src.parse::<IpAddr>().unwrap()))
        .expect("a test run")
}

#[test]
fn the_reference_drops_banned_addresses_and_networks_of_both_families() {
    require_root();
    let reference = Reference::load(&nets(&[
        "192.0.2.7/32",
        "198.51.100.0/24",
        "2001:db8::7/128",
        "2001:db8:bad::/48",
    ]))
    .expect("load the reference program");
    for (src, want) in [
        ("192.0.2.7", XDP_DROP),
        ("192.0.2.8", XDP_PASS),
        ("198.51.100.200", XDP_DROP),
        ("198.51.101.1", XDP_PASS),
        ("2001:db8::7", XDP_DROP),
        ("2001:db8::8", XDP_PASS),
        ("2001:db8:bad:1::1", XDP_DROP),
        ("2001:db8:bae::1", XDP_PASS),
    ] {
        assert_eq!(verdict(&reference.run, src), want, "{src}");
    }
    assert_eq!(reference.dropped().unwrap(), 4);
}

#[test]
fn xdp_filter_drops_the_addresses_it_was_given_and_passes_the_rest() {
    require_root();
    let topology = Topology::new().unwrap();
    let bans: Vec<IpAddr> = ["192.0.2.7", "192.0.2.9", "2001:db8::7"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let filter = XdpFilter::load(topology.server(), topology.server_iface(), &bans)
        .expect("load xdp-filter");
    assert!(filter.capacity >= 10_000, "capacity {}", filter.capacity);
    for (src, want) in [
        ("192.0.2.7", XDP_DROP),
        ("192.0.2.9", XDP_DROP),
        ("192.0.2.8", XDP_PASS),
        ("2001:db8::7", XDP_DROP),
        ("2001:db8::8", XDP_PASS),
    ] {
        assert_eq!(verdict(&filter.run, src), want, "{src}");
    }
    assert_eq!(filter.dropped().unwrap(), 3);
    // More than its maps hold is refused, saying so.
    drop(filter);
    let too_many: Vec<IpAddr> = (0..10_001u32)
        .map(|i| IpAddr::V4((0x0b00_0000 + i).into()))
        .collect();
    let error = XdpFilter::load(topology.server(), topology.server_iface(), &too_many)
        .err()
        .expect("refused");
    assert!(format!("{error:#}").contains("at most"), "{error:#}");
}
