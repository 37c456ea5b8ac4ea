//! Giving the server's veth end a receive path like a NIC's, the same for every method: NAPI,
//! with GRO.
//!
//! A veth hands a packet to NAPI (its ring and `veth_poll`, where XDP runs) only when its
//! receiving end has NAPI (an XDP program, or GRO on) and the packet is fit for GRO, which a
//! socket's packet is only when the sending end has TSO off. Attaching XDP turns TSO off on the
//! peer by itself; so with GRO on the server's end and TSO off on the client's, every method gets
//! the same NAPI path, and only the filter differs. Left alone, the other methods would get the
//! backlog path (`netif_rx`) instead. No XDP program on the peer is needed: that is only for
//! XDP_REDIRECT into a veth.
//!
//! Set with the legacy ethtool ioctls, which every kernel has; ethtool itself is not installed
//! everywhere.

use std::{io, os::fd::AsRawFd as _};

use crate::Netns;

/// `SIOCETHTOOL` from `linux/sockios.h`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_STSO` from `linux/ethtool.h`: TCP segmentation offload (all TSO kinds) on or off.
const ETHTOOL_STSO: u32 = 0x1f;
/// `ETHTOOL_SGRO`: generic receive offload on or off.
const ETHTOOL_SGRO: u32 = 0x2c;

/// The argument of the ethtool ioctls that set one value.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `ethtool -K <iface> gro on`.
pub fn gro_on(netns: &Netns, iface: &str) -> io::Result<()> {
    set(netns, iface, ETHTOOL_SGRO, 1)
}

/// `ethtool -K <iface> tso off`.
pub fn tso_off(netns: &Netns, iface: &str) -> io::Result<()> {
    set(netns, iface, ETHTOOL_STSO, 0)
}

fn set(netns: &Netns, iface: &str, cmd: u32, data: u32) -> io::Result<()> {
    netns.run(|| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let mut value = EthtoolValue { cmd, data };
        // SAFETY: a zeroed ifreq is valid; at most 15 bytes of the name are copied in, leaving
        // its NUL; ifr_data points at `value`, which outlives the call.
        let rc = unsafe {
            let mut req: libc::ifreq = std::mem::zeroed();
            for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes().take(15)) {
                *dst = src as libc::c_char;
            }
            req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
            libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut req)
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("ethtool command {cmd:#x} on {iface}: {e}"),
            ));
        }
        Ok(())
    })
}
