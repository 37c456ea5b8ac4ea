//! The flood benchmark's NIC-like sender: redirects every frame it is given to one interface.
//!
//! Run under `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, each frame it redirects is
//! transmitted for real by that interface's `ndo_xdp_xmit`. Aimed at one end of a veth pair, the
//! frames arrive at the other end as raw XDP frames, the way a NIC's driver sees them, with no
//! socket buffer made on the way (the technique of xdp-trafficgen).
#![no_std]
#![no_main]

use aya_ebpf::{helpers::generated::bpf_redirect, macros::xdp, programs::XdpContext};

/// Where every frame goes: an interface index in the namespace the test run is made from. Set
/// by the loader; 0 (no interface) until then, which makes every redirect fail.
#[unsafe(no_mangle)]
static TARGET_IFINDEX: u32 = 0;

#[xdp]
pub fn redirect(_ctx: XdpContext) -> u32 {
    // SAFETY: a plain read of a constant the loader patched; volatile so that the compiler does
    // not fold the placeholder value.
    let ifindex = unsafe { core::ptr::read_volatile(&TARGET_IFINDEX) };
    // SAFETY: a helper call with plain integer arguments. It returns XDP_REDIRECT, or XDP_ABORTED
    // when the flags are invalid (they are not).
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
