//! The NIC-like sender: raw Ethernet frames handed to the client's veth end as XDP frames, the way
//! xdp-trafficgen sends. `BPF_PROG_TEST_RUN` in live-frames mode runs a program that redirects
//! every frame to the client's end ([`Redirect`]), which transmits it (`ndo_xdp_xmit`) into the
//! server end's receive ring. There the server's receive path takes the frame as from a NIC's
//! driver: XDP runs on it before any socket buffer exists; without XDP, the veth builds one around
//! the frame's page and passes it up the stack. No socket, no socket buffer and no copy on the
//! sending side, so sending costs a fraction of what a socket's `sendmmsg` does.
//!
//! The kernel runs the frames on the calling CPU, 64 to a batch, and the veth's receive path (its
//! NAPI poll) runs right after each batch in softirq on the same CPU, as with the socket sender.

use std::{
    ffi::CString,
    io,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{cpu, udp};
use crate::{Netns, bench::programs::Redirect};

/// Frames a test run: about 10 ms of sending here, so a flood stops within that of its end.
const CHUNK: u32 = 1 << 14;

/// A loaded redirect program, and the one frame it floods with.
pub struct Live {
    redirect: Redirect,
    frame: Vec<u8>,
}

impl Live {
    /// Floods out of `iface` in `client` with `frame`.
    pub fn new(client: &Netns, iface: &str, frame: Vec<u8>) -> anyhow::Result<Live> {
        let ifindex = client
            .run(|| ifindex(iface))
            .with_context(|| format!("the index of {iface}"))?;
        let redirect = Redirect::load(ifindex).context("loading the redirect program")?;
        Ok(Live { redirect, frame })
    }

    /// Like [`Live::new`], each frame from the next of `sources`, round and round. The UDP
    /// checksum, which covers the source, is left out (0: none, which IPv4 allows); the sender
    /// fixes the IP header's.
    pub fn varied(
        client: &Netns,
        iface: &str,
        mut frame: Vec<u8>,
        sources: &[std::net::Ipv4Addr],
    ) -> anyhow::Result<Live> {
        let ifindex = client
            .run(|| ifindex(iface))
            .with_context(|| format!("the index of {iface}"))?;
        frame[40..42].copy_from_slice(&[0, 0]);
        let redirect =
            Redirect::varied(ifindex, sources).context("loading the varying redirect program")?;
        Ok(Live { redirect, frame })
    }

    /// Sends for `duration`, from the calling thread, which must be in the client's namespace.
    pub fn flood(&self, duration: Duration) -> anyhow::Result<udp::Sent> {
        let cpu_before = cpu::this_thread()?;
        let started = Instant::now();
        let mut packets = 0u64;
        while started.elapsed() < duration {
            self.redirect
                .send(&self.frame, CHUNK)
                .context("a live-frames test run")?;
            packets += u64::from(CHUNK);
        }
        Ok(udp::Sent {
            packets,
            elapsed: started.elapsed(),
            cpu: cpu::this_thread()? - cpu_before,
        })
    }
}

fn ifindex(iface: &str) -> io::Result<u32> {
    let name = CString::new(iface)?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// The MAC address of `iface` in `netns`.
pub fn mac(netns: &Netns, iface: &str) -> anyhow::Result<[u8; 6]> {
    let link = netns.ip(["-o", "link", "show", "dev", iface])?;
    let text = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC address in {link}"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().with_context(|| format!("bad MAC {text}"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {text}"))?;
    }
    anyhow::ensure!(parts.next().is_none(), "bad MAC {text}");
    Ok(mac)
}

/// The 60-byte frame a socket would send for one flood datagram: Ethernet from `src_mac` to
/// `dst_mac`, IPv4 without options, UDP from `from` to `to` with [`udp::PAYLOAD`] bytes, both
/// checksums valid, so that the stack behind a filter accepts it like the socket's.
pub fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], from: SocketAddrV4, to: SocketAddrV4) -> Vec<u8> {
    let udp_len = 8 + udp::PAYLOAD;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    // Don't fragment, as Linux sends small datagrams.
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);

    let payload = [0x5au8; udp::PAYLOAD];
    let mut header = [0u8; 8];
    header[0..2].copy_from_slice(&from.port().to_be_bytes());
    header[2..4].copy_from_slice(&to.port().to_be_bytes());
    header[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    // The pseudo-header: addresses, protocol, UDP length.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&from.ip().octets());
    pseudo[4..8].copy_from_slice(&to.ip().octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = match checksum(&[&pseudo, &header, &payload]) {
        // 0 means "no checksum" in UDP over IPv4; a computed 0 is sent as all ones.
        0 => 0xffff,
        s => s,
    };
    header[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&header);
    f.extend_from_slice(&payload);
    f
}

/// The Internet checksum over `parts` laid end to end (each of even length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = parts
        .iter()
        .flat_map(|p| p.chunks(2))
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
    const CLIENT: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];

    fn flood_frame() -> Vec<u8> {
        frame(
            SERVER,
            CLIENT,
            "10.1.2.2:40000".parse().unwrap(),
            "10.1.2.1:9".parse().unwrap(),
        )
    }

    #[test]
    fn the_frame_is_the_smallest_ethernet_frame_to_the_server() {
        let f = flood_frame();
        assert_eq!(f.len(), 60);
        assert_eq!(f[0..6], SERVER);
        assert_eq!(f[6..12], CLIENT);
        assert_eq!(f[12..14], [0x08, 0x00]);
        // IPv4, UDP, from the banned source to the server, the lengths consistent.
        assert_eq!(f[14], 0x45);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46);
        assert_eq!(f[23], 17);
        assert_eq!(f[26..30], [10, 1, 2, 2]);
        assert_eq!(f[30..34], [10, 1, 2, 1]);
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 40000);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 9);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26);
    }

    #[test]
    fn both_checksums_verify() {
        let f = flood_frame();
        // A header with its checksum in place sums to all ones.
        assert_eq!(checksum(&[&f[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&f[26..34]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&f[38..40]);
        assert_ne!(u16::from_be_bytes([f[40], f[41]]), 0);
        assert_eq!(checksum(&[&pseudo, &f[34..]]), 0);
    }

    #[test]
    fn a_known_header_checksum() {
        // The example of RFC 1071's successors everywhere: 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&header]), 0xb861);
    }
}
