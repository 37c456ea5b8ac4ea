//! The program against a reference: random frames (valid, VLAN-tagged, IPv4-mapped, with IPv4
//! options, truncated, garbage) and random ban and allowlist sets (both families, every prefix
//! length, expired and live bans), each verdict and the counter it lands in compared with a
//! plain reading of the rules written here from the documentation, not from the program or the
//! agent's tables. Through `BPF_PROG_TEST_RUN`; needs root.
//!
//! `TRACKING_FUZZ_CASES` sets the number of frames (the suite runs 20,000; more for a long
//! run); `TRACKING_FUZZ_SEED` replays a run. The number of cases run is printed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use tests::{
    Loaded,
    xdp::{XDP_DROP, XDP_PASS},
};
use tracking_agent::{ban::Effective, time::Timestamp};
use tracking_common::stats::{VERDICTS, Verdict};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const V4_BASES: [u32; 3] = [0x0a00_0000, 0xc000_0200, 0xcb00_7100];
const V6_BASES: [u128; 2] = [
    0x2001_0db8_0000_0000_0000_0000_0000_0000,
    0x2a00_1450_4000_0000_0000_0000_0000_0000,
];

/// An address near one of the bases, so that random bans and sources meet.
fn address(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        let base = V6_BASES[rng.below(2) as usize];
        let spread = rng.next() as u128 & 0xffff_ffff;
        IpAddr::V6(Ipv6Addr::from_bits(
            base | (spread & 0xffff) << 64 | spread >> 16,
        ))
    } else {
        let base = V4_BASES[rng.below(3) as usize];
        IpAddr::V4(Ipv4Addr::from_bits(
            base | (rng.next() as u32 & 0x0003_ffff),
        ))
    }
}

fn network(rng: &mut Rng, v6: bool) -> IpNet {
    let addr = address(rng, v6);
    // Every length occurs; the long ones most often, as in real lists.
    let max = if v6 { 128 } else { 32 };
    let len = if rng.chance(50) {
        max
    } else if rng.chance(2) {
        rng.below(4) as u8
    } else {
        max - rng.below(max as u64 / 2) as u8
    };
    IpNet::new(addr, len).unwrap().trunc()
}

/// One ban of the reference: the network and whether it is live.
struct Ban {
    net: IpNet,
    live: bool,
}

/// The rules, as the documentation gives them: look through Ethernet and up to eight VLAN
/// tags (802.1Q or 802.1ad) to an IPv4 or IPv6 header; a frame too short for the headers it
/// claims, or an IP header with the wrong version or an IPv4 header length below 20 or beyond
/// the frame, is malformed; an IPv4-mapped IPv6 source is its IPv4 address; a source inside a
/// live ban is dropped unless it is inside an allowlisted network.
fn reference(frame: &[u8], bans: &[Ban], allows: &[IpNet]) -> Verdict {
    let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let mut ethertype = be16(12);
    let mut offset = 14;
    let mut tags = 0;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        if tags == 8 {
            return Verdict::TooManyTags;
        }
        if frame.len() < offset + 4 {
            return Verdict::Malformed;
        }
        ethertype = be16(offset + 2);
        offset += 4;
        tags += 1;
    }
    let source = match ethertype {
        0x0800 => {
            if frame.len() < offset + 20 {
                return Verdict::Malformed;
            }
            let header = (frame[offset] & 0x0f) as usize * 4;
            if frame[offset] >> 4 != 4 || header < 20 || frame.len() < offset + header {
                return Verdict::Malformed;
            }
            let at = offset + 12;
            IpAddr::V4(Ipv4Addr::new(
                frame[at],
                frame[at + 1],
                frame[at + 2],
                frame[at + 3],
            ))
        }
        0x86dd => {
            if frame.len() < offset + 40 || frame[offset] >> 4 != 6 {
                return Verdict::Malformed;
            }
            let bytes: [u8; 16] = frame[offset + 8..offset + 24].try_into().unwrap();
            IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical()
        }
        _ => return Verdict::NotIp,
    };
    if !bans.iter().any(|b| b.live && b.net.contains(&source)) {
        Verdict::Passed
    } else if allows.iter().any(|a| a.contains(&source)) {
        Verdict::Allowed
    } else {
        Verdict::Dropped
    }
}

/// A random frame: mostly well formed, from a source near the bans, sometimes tagged, mapped,
/// with options, cut short or scrambled.
fn frame(rng: &mut Rng) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let tags = if rng.chance(70) {
        0
    } else {
        rng.below(11) as usize
    };
    for _ in 0..tags {
        let tpid: u16 = if rng.chance(50) { 0x8100 } else { 0x88a8 };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(rng.below(4096) as u16 * rng.below(2) as u16).to_be_bytes());
    }
    let kind = rng.below(100);
    if kind < 45 {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let IpAddr::V4(src) = address(rng, false) else {
            unreachable!()
        };
        let options = if rng.chance(20) {
            rng.below(11) as u8
        } else {
            0
        };
        let mut ip = vec![0u8; 20 + options as usize * 4];
        ip[0] = 0x45 + options;
        if rng.chance(3) {
            ip[0] = rng.next() as u8;
        }
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&[198, 51, 100, 1]);
        f.extend_from_slice(&ip);
    } else if kind < 90 {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let src = if rng.chance(20) {
            let IpAddr::V4(v4) = address(rng, false) else {
                unreachable!()
            };
            v4.to_ipv6_mapped()
        } else {
            let IpAddr::V6(v6) = address(rng, true) else {
                unreachable!()
            };
            v6
        };
        let mut ip = vec![0u8; 40];
        ip[0] = if rng.chance(3) {
            rng.next() as u8
        } else {
            0x60
        };
        ip[6] = 17;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src.octets());
        ip[24..40].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        f.extend_from_slice(&ip);
    } else {
        f.extend_from_slice(&(rng.next() as u16).to_be_bytes());
        for _ in 0..rng.below(60) {
            f.push(rng.next() as u8);
        }
    }
    f.extend_from_slice(b"payload!");
    if rng.chance(15) {
        // BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet header.
        let len = 14 + rng.below((f.len() - 13) as u64) as usize;
        f.truncate(len);
    }
    f
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn the_program_decides_every_random_frame_as_the_rules_say() {
    let cases = setting("TRACKING_FUZZ_CASES", 20_000);
    let seed = setting("TRACKING_FUZZ_SEED", 0x5eed_1234_abcd_0001) | 1;
    let mut rng = Rng(seed);
    let mut f = Loaded::new();
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
    let later = Timestamp::now().plus(std::time::Duration::from_secs(3600));
    let mut held: Vec<IpNet> = Vec::new();
    let mut seen = [0u64; VERDICTS as usize];
    let mut run = 0;
    let mut sets = 0;
    while run < cases {
        // A new set of bans and allowlist entries, replacing the last.
        let mut bans: Vec<Ban> = Vec::new();
        for _ in 0..20 + rng.below(300) {
            let v6 = rng.chance(50);
            let net = network(&mut rng, v6);
            if bans.iter().any(|b| b.net == net) || net.prefix_len() == 0 && rng.chance(80) {
                continue;
            }
            bans.push(Ban {
                net,
                live: !rng.chance(15),
            });
        }
        let allows: Vec<IpNet> = (0..rng.below(8))
            .map(|_| {
                let v6 = rng.chance(50);
                network(&mut rng, v6)
            })
            .collect();
        let mut effects: Vec<(IpNet, Effective)> = held
            .iter()
            .filter(|n| !bans.iter().any(|b| b.net == **n))
            .map(|n| (*n, Effective::Unbanned))
            .collect();
        effects.extend(bans.iter().map(|b| {
            let expires = match (b.live, rng.chance(50)) {
                (false, _) => Some(past),
                (true, true) => Some(later),
                (true, false) => None,
            };
            (b.net, Effective::Banned { expires })
        }));
        f.apply(&effects).expect("apply the bans");
        let mut allowed = allows.clone();
        allowed.sort();
        allowed.dedup();
        f.program().maps.set_allowlist(&allowed).expect("allowlist");
        held = bans.iter().map(|b| b.net).collect();
        sets += 1;

        for _ in 0..1000.min(cases - run) {
            let frame = frame(&mut rng);
            let want = reference(&frame, &bans, &allows);
            let before = f.program_ref().counters().unwrap();
            let verdict = f.run(&frame);
            let after = f.program_ref().counters().unwrap();
            let counted: Vec<Verdict> = Verdict::ALL
                .into_iter()
                .filter(|v| after[*v as usize].packets != before[*v as usize].packets)
                .collect();
            let expected = if want == Verdict::Dropped {
                XDP_DROP
            } else {
                XDP_PASS
            };
            assert!(
                verdict == expected && counted == [want],
                "case {run} (seed {seed:#x}): the program said {verdict} counted as {counted:?}, \
                 the rules say {want:?}\nframe {}\nbans {:?}\nallowlist {allows:?}",
                hex(&frame),
                bans.iter()
                    .map(|b| format!("{}{}", b.net, if b.live { "" } else { " (expired)" }))
                    .collect::<Vec<_>>(),
            );
            seen[want as usize] += 1;
            run += 1;
        }
    }
    println!(
        "{run} random frames against {sets} random ban sets agree with the rules (seed {seed:#x}): {}",
        Verdict::ALL
            .iter()
            .map(|v| format!("{} {}", seen[*v as usize], v.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for v in Verdict::ALL
        .into_iter()
        .filter(|v| *v != Verdict::Monitored)
    {
        assert!(seen[v as usize] > 0, "no case was {}", v.name());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
