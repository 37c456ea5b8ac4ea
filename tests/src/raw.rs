//! Frames the socket API cannot send, put on the wire whole: UDP behind VLAN tags, or from an
//! IPv4-mapped IPv6 source. Built with the real MAC addresses and checksums, so the receiving
//! kernel delivers them as it would from a real peer, and sent from an `AF_PACKET` socket on
//! an interface of a test namespace.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::netns::Netns;

/// The MAC address of `iface` in `netns`.
pub fn mac(netns: &Netns, iface: &str) -> io::Result<[u8; 6]> {
    let shown = netns.ip(["-br", "link", "show", iface])?;
    let text = shown
        .split_whitespace()
        .nth(2)
        .ok_or_else(|| io::Error::other(format!("no address in `{shown}`")))?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte =
            u8::from_str_radix(part, 16).map_err(|e| io::Error::other(format!("`{text}`: {e}")))?;
    }
    Ok(mac)
}

/// A VLAN tag: its TPID (0x8100 for 802.1Q, 0x88a8 for 802.1ad) and VLAN id (0: priority only).
#[derive(Clone, Copy, Debug)]
pub struct Tag {
    pub tpid: u16,
    pub vid: u16,
}

/// `n` priority tags (VLAN id 0), 802.1ad and 802.1Q in turns: the kernel strips them and
/// delivers what is behind.
pub fn priority_tags(n: usize) -> Vec<Tag> {
    (0..n)
        .map(|i| Tag {
            tpid: if i % 2 == 0 { 0x88a8 } else { 0x8100 },
            vid: 0,
        })
        .collect()
}

/// A UDP datagram from `from` to `to` with `payload`, behind `tags`, as an Ethernet frame from
/// `src_mac` to `dst_mac`. The addresses may be of either family each only as IP allows: an
/// IPv6 datagram may come from an IPv4-mapped address (`::ffff:a.b.c.d`).
pub fn udp(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    from: SocketAddr,
    to: SocketAddr,
    tags: &[Tag],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(96 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    for tag in tags {
        f.extend_from_slice(&tag.tpid.to_be_bytes());
        f.extend_from_slice(&(tag.vid & 0x0fff).to_be_bytes());
    }
    let length = (8 + payload.len()) as u16;
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&from.port().to_be_bytes());
    udp.extend_from_slice(&to.port().to_be_bytes());
    udp.extend_from_slice(&length.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(20 + length).to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let pseudo = [
                &s.octets()[..],
                &d.octets(),
                &[0, 17],
                &length.to_be_bytes(),
            ]
            .concat();
            let sum = checksum(&[&pseudo, &udp]);
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (s, IpAddr::V6(d)) => {
            let s = match s {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&length.to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            let pseudo = [
                &s.octets()[..],
                &d.octets(),
                &(length as u32).to_be_bytes(),
                &[0, 0, 0, 17],
            ]
            .concat();
            let sum = checksum(&[&pseudo, &udp]);
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(_), IpAddr::V4(_)) => panic!("an IPv4 datagram cannot come from IPv6"),
    }
    f.extend_from_slice(&udp);
    f
}

/// The Internet checksum of the concatenated `parts`.
fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        // UDP sends an all-zero checksum as all ones.
        0 => 0xffff,
        sum => sum,
    }
}

/// Sends `frames` out of `iface` in `netns`, as they are.
pub fn send(netns: &Netns, iface: &str, frames: &[Vec<u8>]) -> io::Result<()> {
    let iface = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    netns.run(|| {
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket creation; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_ll is valid; the fields that matter are set.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        for frame in frames {
            // SAFETY: the buffer and address are valid for the lengths given.
            let sent = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&to as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

/// A dual-stack UDP socket in a namespace that counts what arrives, by source as the
/// application sees it (an IPv4-mapped source as its IPv4 address).
pub struct Sink {
    socket: std::net::UdpSocket,
}

impl Sink {
    /// Binds `[::]:0` in `netns`.
    pub fn bind(netns: &Netns) -> io::Result<Sink> {
        let socket = netns.run(|| -> io::Result<std::net::UdpSocket> {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_only_v6(false)?;
            socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())?;
            Ok(socket.into())
        })?;
        socket.set_read_timeout(Some(std::time::Duration::from_millis(300)))?;
        Ok(Sink { socket })
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The sources of what arrives until nothing has for 300 ms.
    pub fn drain(&self) -> Vec<IpAddr> {
        let mut buf = [0u8; 2048];
        let mut from = Vec::new();
        while let Ok((_, peer)) = self.socket.recv_from(&mut buf) {
            from.push(peer.ip().to_canonical());
        }
        from
    }
}
