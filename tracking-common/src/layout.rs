//! The shape of every map value, and the words of the configuration map.
//!
//! Bans live in two open-addressed hash tables (one per family) held in mmap-able array maps.
//! The verifier inlines array lookups, so a probe costs a few instructions instead of the
//! out-of-line call and bucket walk of a kernel hash map, and the agent writes entries with
//! plain stores through its mapping instead of one syscall per ban. Each network has two
//! candidate buckets ([`crate::hash`], under a key drawn when the tables are made); the tables
//! are sized so that at their capacity they are at most half full. The rare network whose two
//! buckets are both full goes to a kernel hash map of its family (`V4_OVERFLOW`, `V6_OVERFLOW`),
//! which the program reads only while a flag says it holds something: whatever the list, the
//! configured number of bans fits. Why a lookup that runs while the agent writes is never
//! wrong is argued in the agent's `kernel/table.rs`.

/// Bumped whenever a map changes shape or meaning. The agent adopts pinned maps only when their
/// layout version (part of the pin directory name) equals its own.
pub const LAYOUT_VERSION: u32 = 3;

/// The IPv6 source filter is a bitmap of `2^FILTER_BITS` bits, one per hash of the upper
/// [`FILTER6_PREFIX`] bits of the source. A clear bit proves that no ban can match.
pub const FILTER_BITS: u32 = 24;
/// Number of `u64` words in the IPv6 filter (2 MiB).
pub const FILTER_WORDS: u32 = 1 << (FILTER_BITS - 6);
/// The IPv4 source filter has two bits per /24 ([`FILTER4_EXACT`], [`FILTER4_PREFIX`]), 32 /24s a
/// word (4 MiB). Both clear: no ban can match. The exact bit alone sends the source straight to a
/// /32 probe, so an exact hit needs neither the length mask nor a loop.
pub const FILTER4_WORDS: u32 = 1 << (24 - 5);
/// A /32 ban lies in this /24.
pub const FILTER4_EXACT: u64 = 0b01;
/// A shorter ban overlaps this /24.
pub const FILTER4_PREFIX: u64 = 0b10;
/// The IPv6 filter is keyed by this many leading bits of the source.
pub const FILTER6_PREFIX: u8 = 48;
/// An IPv6 ban shorter than this would set more than 2^20 filter bits; while one exists the IPv6
/// filter is switched off ([`FLAG_V6_ALL`]) and every IPv6 source is looked up.
pub const FILTER6_MIN_ENUMERATED: u8 = 28;

/// One word per IPv4 /16 in the `V4_LENS` map: bit `32 - len` is set when a ban of that prefix
/// length overlaps the /16, so a candidate probes only the lengths that can match.
pub const V4_LENS_WORDS: u32 = 1 << 16;

/// Entries in an IPv4 bucket: 8 x 8 bytes, one cache line.
pub const ENTRIES4: usize = 8;
/// Entries in an IPv6 bucket: 4 x 24 bytes.
pub const ENTRIES6: usize = 4;

/// Buckets in each allowlist table: room for 8192 IPv4 and 4096 IPv6 entries, of which the
/// agent uses at most 1024 of each family (2048 while one allowlist replaces another).
pub const ALLOW_BUCKETS: u32 = 1024;

/// A slot number is 24 bits wide in a tag.
pub const MAX_SLOTS: u32 = 1 << 24;

/// The tag of an IPv6 entry that was removed but may still be read by a program run that began
/// before the removal: not empty (nothing is written into it), never equal to a looked-up
/// length (those are 1 to 129). The agent empties it once no such run can be left.
pub const TAG_RETIRED: u32 = 0xff;

/// Most VLAN tags (802.1Q or 802.1ad, any mix) the program looks through to find the IP header.
/// The kernel itself delivers nothing behind more than eight: a frame with more passes,
/// counted as [`crate::stats::Verdict::TooManyTags`].
pub const MAX_VLAN_TAGS: usize = 8;

/// The low byte of a tag: the prefix length plus one.
pub const TAG_LEN_BITS: u32 = 0xff;

/// Prefix lengths an IPv6 network can have: /0 to /128.
pub const V6_PREFIX_LENGTHS: u32 = 129;

/// Tag of an entry: `slot << 8 | (prefix_len + 1)`; zero marks an empty entry.
#[inline(always)]
pub const fn tag(slot: u32, prefix_len: u8) -> u32 {
    (slot << 8) | (prefix_len as u32 + 1)
}

/// The slot named by a non-zero tag.
#[inline(always)]
pub const fn tag_slot(tag: u32) -> u32 {
    tag >> 8
}

/// The prefix length named by a non-zero tag.
#[inline(always)]
pub const fn tag_len(tag: u32) -> u8 {
    ((tag & TAG_LEN_BITS) as u8).wrapping_sub(1)
}

/// An IPv4 network in a ban or allow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry4 {
    /// Network address in host byte order, host bits cleared.
    pub addr: u32,
    /// See [`tag`].
    pub tag: u32,
}

/// One bucket of the IPv4 tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket4 {
    pub entries: [Entry4; ENTRIES4],
}

/// An IPv6 network in a ban or allow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry6 {
    /// Upper 64 bits of the network address as a host-order integer.
    pub hi: u64,
    /// Lower 64 bits of the network address as a host-order integer.
    pub lo: u64,
    /// See [`tag`].
    pub tag: u32,
    pub _pad: u32,
}

/// One bucket of the IPv6 tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket6 {
    pub entries: [Entry6; ENTRIES6],
}

/// The key of an IPv4 network in `V4_OVERFLOW`; the value is its slot (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OverflowKey4 {
    /// Network address in host byte order, host bits cleared.
    pub addr: u32,
    /// Prefix length.
    pub len: u32,
}

/// The key of an IPv6 network in `V6_OVERFLOW`; the value is its slot (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OverflowKey6 {
    pub hi: u64,
    pub lo: u64,
    /// Prefix length (a whole word, so that the key has no padding).
    pub len: u64,
}

/// Per-ban state, indexed by slot in the `SLOTS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotState {
    /// Bits 0..=62: when the ban stops dropping, in `CLOCK_MONOTONIC` nanoseconds (the clock of
    /// `bpf_ktime_get_coarse_ns`), zero for never; the program checks it itself so that a ban
    /// expires on time even while the agent is down. Bit 63: [`SLOT_CHECK_ALLOW`].
    pub control: u64,
    /// Packets that matched this ban (dropped, or counted in monitor mode). Shared by all CPUs
    /// and added to atomically: a per-CPU copy would cost `slots x CPUs x 8` bytes.
    pub hits: u64,
}

/// Set in [`SlotState::control`] when an allowlisted network overlaps the ban. Only then does a
/// match consult the allowlist: for every other ban no source inside it can be allowlisted, and
/// the hit path stays one table probe long.
pub const SLOT_CHECK_ALLOW: u64 = 1 << 63;
/// The deadline bits of [`SlotState::control`].
pub const SLOT_DEADLINE: u64 = !SLOT_CHECK_ALLOW;

/// Words of the `CONFIG` map.
pub mod config {
    /// Bit flags, see `FLAG_*`.
    pub const FLAGS: u32 = 0;
    /// Prefix lengths present in the IPv4 allowlist: bit `32 - len`.
    pub const ALLOW4_LENS: u32 = 1;
    /// Prefix lengths present among IPv6 bans: three words, bit `128 - len` counted across them.
    pub const V6_LENS: u32 = 2;
    /// Prefix lengths present in the IPv6 allowlist: three words like [`V6_LENS`].
    pub const ALLOW6_LENS: u32 = 5;
    /// The key of the tables' hash ([`crate::hash::hash4`]), never zero once the tables are
    /// made. The program is loaded with it as a constant; the word is how an agent that adopts
    /// pinned tables learns it.
    pub const HASH_KEY: u32 = 8;
    /// Number of words.
    pub const LEN: u32 = 9;
}

/// Count matches but pass them: for trying a block list safely.
pub const FLAG_MONITOR: u64 = 1 << 0;
/// Every IPv6 source is a candidate (an IPv6 ban shorter than [`FILTER6_MIN_ENUMERATED`]).
pub const FLAG_V6_ALL: u64 = 1 << 1;
/// Log every match through aya-log. Off by default: logging costs more than the filter.
pub const FLAG_LOG: u64 = 1 << 2;
/// `V4_OVERFLOW` holds at least one ban: a network missing from its buckets is looked up there.
pub const FLAG_V4_OVERFLOW: u64 = 1 << 3;
/// `V6_OVERFLOW` holds at least one ban.
pub const FLAG_V6_OVERFLOW: u64 = 1 << 4;

/// Bit of prefix length `len` in an IPv4 length mask.
#[inline(always)]
pub const fn len_bit4(len: u8) -> u64 {
    1 << (32 - len as u32)
}

/// Word index (0..3) and bit of prefix length `len` in an IPv6 length mask.
#[inline(always)]
pub const fn len_bit6(len: u8) -> (usize, u64) {
    let i = 128 - len as u32;
    ((i / 64) as usize, 1 << (i % 64))
}

#[cfg(feature = "user")]
mod pod {
    use super::{Bucket4, Bucket6, Entry4, Entry6, OverflowKey4, OverflowKey6, SlotState};

    // SAFETY: all are repr(C) structs of integers with no padding holes the kernel would read.
    unsafe impl aya::Pod for OverflowKey4 {}
    unsafe impl aya::Pod for OverflowKey6 {}
    unsafe impl aya::Pod for Entry4 {}
    unsafe impl aya::Pod for Bucket4 {}
    unsafe impl aya::Pod for Entry6 {}
    unsafe impl aya::Pod for Bucket6 {}
    unsafe impl aya::Pod for SlotState {}
}

const _: () = {
    assert!(core::mem::size_of::<Bucket4>() == 64);
    assert!(core::mem::size_of::<Bucket6>() == 96);
    assert!(core::mem::size_of::<SlotState>() == 16);
    assert!(core::mem::size_of::<OverflowKey4>() == 8);
    assert!(core::mem::size_of::<OverflowKey6>() == 24);
};
