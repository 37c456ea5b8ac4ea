//! The reference peer: the ban filter a user would write from the design card, to measure the
//! agent's own tables against. Kernel `HASH` maps hold banned addresses, kernel `LPM_TRIE` maps
//! hold banned networks, one of each per family:
//!
//! 1. read the source (Ethernet, then IPv4 or IPv6; no VLAN tags);
//! 2. look the address up in the family's hash map; if absent, in its LPM trie;
//! 3. on a match, add one to that ban's hit counter (its map value) and drop; else pass;
//! 4. count the verdict in a per-CPU array, the single exit.
//!
//! It does the same work a packet as the agent's program where the two overlap (a hit counter a
//! ban, per-CPU verdict counters) and none of what only the agent's does (expiry, allowlist,
//! VLAN tags, IPv4-mapped sources). Maps are sized by the loader.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the BPF target has no CAS for AtomicU64"
)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action,
    cty::c_void,
    helpers::generated::bpf_map_lookup_elem,
    macros::{map, xdp},
    maps::{HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};

/// Banned IPv4 addresses, keyed as they stand in the header (network byte order); the value is
/// the ban's hit counter.
#[map]
static V4_ADDRS: HashMap<[u8; 4], u64> = HashMap::with_max_entries(1, 0);
/// Banned IPv6 addresses.
#[map]
static V6_ADDRS: HashMap<[u8; 16], u64> = HashMap::with_max_entries(1, 0);
/// Banned IPv4 networks (any prefix length).
#[map]
static V4_NETS: LpmTrie<[u8; 4], u64> = LpmTrie::with_max_entries(1, 0);
/// Banned IPv6 networks.
#[map]
static V6_NETS: LpmTrie<[u8; 16], u64> = LpmTrie::with_max_entries(1, 0);
/// Packets by verdict: 0 passed, 1 dropped.
#[map]
static STATS: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(2, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

#[xdp]
pub fn reference(ctx: XdpContext) -> u32 {
    let dropped = matched(&ctx).is_some_and(|hits| {
        // SAFETY: `hits` is a map value the lookup returned; other CPUs add to it too.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits, 1) };
        true
    });
    let verdict = u32::from(dropped);
    if let Some(counter) = STATS.get_ptr_mut(verdict) {
        // SAFETY: a per-CPU value: nothing else writes it while this program runs here.
        unsafe {
            (*counter)[0] += 1;
            (*counter)[1] += (ctx.data_end() - ctx.data()) as u64;
        }
    }
    if dropped {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The hit counter of the ban matching the frame's source, if one does.
#[inline(always)]
fn matched(ctx: &XdpContext) -> Option<*mut u64> {
    let proto = u16::from_be(read::<u16>(ctx, 12)?);
    match proto {
        ETH_P_IP => {
            let version_ihl = read::<u8>(ctx, ETH_HLEN)?;
            if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
                return None;
            }
            let src = read::<[u8; 4]>(ctx, ETH_HLEN + 12)?;
            if let Some(hits) = V4_ADDRS.get_ptr_mut(&src) {
                return Some(hits);
            }
            lpm(&V4_NETS as *const _ as *mut c_void, &Key::new(32, src))
        }
        ETH_P_IPV6 => {
            if read::<u8>(ctx, ETH_HLEN)? >> 4 != 6 {
                return None;
            }
            let src = read::<[u8; 16]>(ctx, ETH_HLEN + 8)?;
            if let Some(hits) = V6_ADDRS.get_ptr_mut(&src) {
                return Some(hits);
            }
            lpm(&V6_NETS as *const _ as *mut c_void, &Key::new(128, src))
        }
        _ => None,
    }
}

/// A longest-prefix lookup that returns the value writable (aya's `LpmTrie::get` only lends it).
#[inline(always)]
fn lpm<K>(map: *mut c_void, key: &Key<K>) -> Option<*mut u64> {
    // SAFETY: `map` is one of this program's LPM tries, `key` a key of its type.
    let value = unsafe { bpf_map_lookup_elem(map, (key as *const Key<K>).cast()) };
    (!value.is_null()).then_some(value.cast())
}

/// The `T` at `offset` into the frame, if the frame holds all of it.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    // A plain load, as in the agent's parser (`read_unaligned` would become byte loads): the
    // JIT'd load is fine unaligned on the architectures XDP runs on.
    // SAFETY: the bounds check above covers the whole value.
    Some(unsafe { ((start + offset) as *const T).read() })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
