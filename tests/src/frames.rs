//! Hand-built Ethernet frames, for `BPF_PROG_TEST_RUN`: the verdict tests and the per-packet
//! benchmark feed these to the program.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A VLAN tag in front of the payload's EtherType.
#[derive(Clone, Copy, Debug)]
pub enum Vlan {
    /// 802.1Q (C-tag), TPID 0x8100.
    Dot1Q(u16),
    /// 802.1ad (S-tag), TPID 0x88a8.
    Dot1Ad(u16),
}

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn ethernet(vlans: &[Vlan], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for v in vlans {
        let (tpid, id) = match *v {
            Vlan::Dot1Q(id) => (0x8100u16, id),
            Vlan::Dot1Ad(id) => (0x88a8u16, id),
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A UDP datagram from `src` to `dst` (same family) with a small payload, behind `vlans`.
pub fn udp(src: IpAddr, dst: IpAddr, vlans: &[Vlan]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => udp4(s, d, vlans),
        (IpAddr::V6(s), IpAddr::V6(d)) => udp6(s, d, vlans),
        _ => panic!("source and destination of different families"),
    }
}

/// A UDP datagram from `src` to a fixed documentation address of its family, untagged.
pub fn udp_from(src: IpAddr) -> Vec<u8> {
    let dst: IpAddr = if src.is_ipv4() {
        Ipv4Addr::new(198, 51, 100, 1).into()
    } else {
        Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1).into()
    };
    udp(src, dst, &[])
}

/// IPv4/UDP, 20-byte header without options.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, vlans: &[Vlan]) -> Vec<u8> {
    let payload = b"tracking";
    let mut f = ethernet(vlans, 0x0800);
    let total = 20 + 8 + payload.len();
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp_header(payload.len()));
    f.extend_from_slice(payload);
    f
}

/// IPv6/UDP.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, vlans: &[Vlan]) -> Vec<u8> {
    let payload = b"tracking";
    let mut f = ethernet(vlans, 0x86dd);
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp_header(payload.len()));
    f.extend_from_slice(payload);
    f
}

/// An ARP request: not IP.
pub fn arp() -> Vec<u8> {
    let mut f = ethernet(&[], 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[192, 0, 2, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[192, 0, 2, 1]);
    f
}

/// Length of the headers a frame needs for its source to be readable: Ethernet and tags plus
/// the fixed IP header.
pub fn headers_len(vlans: &[Vlan], v6: bool) -> usize {
    14 + 4 * vlans.len() + if v6 { 40 } else { 20 }
}

fn udp_header(payload: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&53u16.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    h
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
