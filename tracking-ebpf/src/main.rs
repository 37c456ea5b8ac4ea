//! The XDP ban filter: drop every packet whose source address is banned.
//!
//! The whole data path, top to bottom:
//! 1. [`parse::source`] reads the source address (Ethernet, up to eight VLAN tags, IPv4 or
//!    IPv6; an IPv4-mapped IPv6 source counts as its IPv4 address), checking bounds before
//!    every read.
//! 2. [`lookup`] asks the source filter whether any ban can match; most traffic stops here after
//!    one load. Candidates probe the ban table once per prefix length present near them, and a
//!    match is then checked against its expiry and the allowlist.
//! 3. [`tracking`] records the verdict in a per-CPU counter and returns it: the single exit.
//!
//! Non-IP and malformed frames always pass: a filter for banned sources has no business dropping
//! what it cannot read, and it never returns `XDP_ABORTED` on traffic.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the BPF target has no CAS for AtomicU64"
)]

mod lookup;
mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use tracking_common::{
    layout::{FLAG_LOG, FLAG_MONITOR},
    stats::Verdict,
};

use crate::parse::Source;

#[xdp]
pub fn tracking(ctx: XdpContext) -> u32 {
    let verdict = classify(&ctx);
    maps::count(verdict, (ctx.data_end() - ctx.data()) as u64);
    match verdict {
        Verdict::Dropped => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let source = parse::source(ctx);
    let matched = match source {
        Source::NotIp => return Verdict::NotIp,
        Source::Malformed => return Verdict::Malformed,
        Source::TooManyTags => return Verdict::TooManyTags,
        Source::V4(addr) => lookup::ban4(addr),
        // IPv6 needs the flags first: a very wide IPv6 ban turns its filter off.
        Source::V6(hi, lo) => lookup::ban6(hi, lo, maps::flags()),
    };
    let Some(slot) = matched else {
        return Verdict::Passed;
    };
    if slot.check_allowlist() {
        let allowed = match source {
            Source::V4(addr) => lookup::allowed4(addr),
            Source::V6(hi, lo) => lookup::allowed6(hi, lo),
            _ => false,
        };
        if allowed {
            return Verdict::Allowed;
        }
    }
    slot.hit();
    // The flags are read only once something matched: the common path never needs them.
    let flags = maps::flags();
    if flags & FLAG_LOG != 0 {
        log_match(ctx, &source, slot.index);
    }
    if flags & FLAG_MONITOR != 0 {
        Verdict::Monitored
    } else {
        Verdict::Dropped
    }
}

/// Logs a match through aya-log (only with `--log-matches`), at info level so that the flag
/// alone shows them.
#[inline(never)]
fn log_match(ctx: &XdpContext, source: &Source, slot: u32) {
    match *source {
        Source::V4(addr) => aya_log_ebpf::info!(ctx, "ban match {:i} slot {}", addr, slot),
        Source::V6(hi, lo) => {
            let bytes = (((hi as u128) << 64) | lo as u128).to_be_bytes();
            aya_log_ebpf::info!(ctx, "ban match {:i} slot {}", bytes, slot)
        }
        _ => {}
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible, as required by the helpers aya-log uses.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
