//! The flood benchmark's NIC-like sender: redirects every frame it is given to one interface.
//!
//! Run under `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, each frame it redirects is
//! transmitted for real by that interface's `ndo_xdp_xmit`. Aimed at one end of a veth pair, the
//! frames arrive at the other end as raw XDP frames, the way a NIC's driver sees them, with no
//! socket buffer made on the way (the technique of xdp-trafficgen).
//!
//! [`redirect_varied`] does the same after writing the next of a list of IPv4 sources into the
//! frame (and its header checksum), so that a flood comes from many sources, as a real one does.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated::bpf_redirect,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// The sources [`redirect_varied`] cycles through, as they stand in the header (network byte
/// order); the loader sizes and fills it.
#[map]
static SOURCES: Array<u32> = Array::with_max_entries(1, 0);
/// Which source is next, on each CPU.
#[map]
static NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// How many sources `SOURCES` holds. Set by the loader.
#[unsafe(no_mangle)]
static SOURCE_COUNT: u32 = 1;

const ETH_HLEN: usize = 14;

/// Where every frame goes: an interface index in the namespace the test run is made from. Set
/// by the loader; 0 (no interface) until then, which makes every redirect fail.
#[unsafe(no_mangle)]
static TARGET_IFINDEX: u32 = 0;

#[xdp]
pub fn redirect(_ctx: XdpContext) -> u32 {
    send()
}

#[inline(always)]
fn send() -> u32 {
    // SAFETY: a plain read of a constant the loader patched; volatile so that the compiler does
    // not fold the placeholder value.
    let ifindex = unsafe { core::ptr::read_volatile(&TARGET_IFINDEX) };
    // SAFETY: a helper call with plain integer arguments. It returns XDP_REDIRECT, or XDP_ABORTED
    // when the flags are invalid (they are not).
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// Writes the next source into the IPv4 frame, fixes its header checksum, and redirects it.
#[xdp]
pub fn redirect_varied(ctx: XdpContext) -> u32 {
    vary(&ctx);
    send()
}

#[inline(always)]
fn vary(ctx: &XdpContext) {
    let start = ctx.data();
    if start + ETH_HLEN + 20 > ctx.data_end() {
        return;
    }
    let Some(next) = NEXT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a plain read of a constant the loader patched, as above.
    let count = unsafe { core::ptr::read_volatile(&SOURCE_COUNT) }.max(1);
    // SAFETY: a per-CPU value: nothing else writes it while this program runs here.
    let index = unsafe {
        let i = *next;
        *next = if i + 1 >= count { 0 } else { i + 1 };
        i
    };
    let Some(source) = SOURCES.get(index) else {
        return;
    };
    let header = (start + ETH_HLEN) as *mut u16;
    // SAFETY: the 20-byte header lies inside the frame (checked above); the source is its
    // 13th to 16th bytes, the checksum its 11th and 12th.
    unsafe {
        (header.add(6) as *mut u32).write_unaligned(*source);
        header.add(5).write(0);
        let mut sum = 0u32;
        let mut i = 0;
        while i < 10 {
            sum += u32::from(header.add(i).read());
            i += 1;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        header.add(5).write(!(sum as u16));
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
