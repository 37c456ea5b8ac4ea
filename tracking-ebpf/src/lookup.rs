//! Ban and allowlist lookups.
//!
//! A source is first checked against the family's filter bitmap: a clear bit proves that no ban
//! can match, which is the answer for nearly all traffic. A candidate then probes the ban table
//! once per prefix length that can match it, longest first (IPv4: the lengths present in its /16,
//! from `V4_LENS`; IPv6: the lengths present among all IPv6 bans). Each probe reads at most two
//! buckets, first then second (the agent only ever moves an entry that way), and the family's
//! overflow map while it holds anything. A found ban that has expired is skipped, so a shorter
//! live ban can still match.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_coarse_ns, bpf_loop},
    maps::Array,
};
use tracking_common::{
    Bucket4, Bucket6, SlotState,
    hash::{buckets6, filter_bit6, filter_pos4, hash4, mask4, mask6},
    layout::{
        ALLOW_BUCKETS, ENTRIES4, ENTRIES6, FILTER4_EXACT, FILTER4_PREFIX, FLAG_V4_OVERFLOW,
        FLAG_V6_ALL, FLAG_V6_OVERFLOW, OverflowKey4, OverflowKey6, SLOT_CHECK_ALLOW, SLOT_DEADLINE,
        TAG_LEN_BITS, V6_PREFIX_LENGTHS, config, len_bit4, len_bit6, tag_slot,
    },
};

use crate::maps::{
    ALLOW4, ALLOW6, SLOTS, V4_BANS, V4_FILTER, V4_LENS, V4_OVERFLOW, V6_BANS, V6_FILTER,
    V6_OVERFLOW, config, flags, hash_key, v4_bucket_mask, v6_bucket_mask,
};

/// A live ban that matched.
pub struct Slot {
    pub index: u32,
    state: *mut SlotState,
    control: u64,
}

impl Slot {
    /// Counts a packet against this ban.
    #[inline(always)]
    pub fn hit(&self) {
        // The BPF target has no compare-and-swap, so `AtomicU64::fetch_add` is unavailable; the
        // intrinsic lowers to the BPF atomic add that the target does have.
        // SAFETY: `state` points into the SLOTS array value, which lives as long as the map;
        // other CPUs add to the same counter, hence the atomic.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*self.state).hits, 1)
        };
    }

    /// Whether an allowlisted network overlaps this ban, so the source must be checked.
    #[inline(always)]
    pub fn check_allowlist(&self) -> bool {
        self.control & SLOT_CHECK_ALLOW != 0
    }
}

/// The ban in `slot`, unless it has expired.
#[inline(always)]
fn live(index: u32) -> Option<Slot> {
    let state = SLOTS.get_ptr_mut(index)?;
    // SAFETY: pointer from a successful array lookup.
    let control = unsafe { (*state).control };
    let deadline = control & SLOT_DEADLINE;
    // SAFETY: a helper without arguments.
    if deadline != 0 && unsafe { bpf_ktime_get_coarse_ns() } >= deadline {
        return None;
    }
    Some(Slot {
        index,
        state,
        control,
    })
}

#[inline(always)]
fn bit_set(filter: &Array<u64>, bit: u32) -> bool {
    match filter.get(bit >> 6) {
        Some(word) => (*word >> (bit & 63)) & 1 != 0,
        None => false,
    }
}

/// de Bruijn table for the index of an isolated bit: BPF has no count-trailing-zeros instruction,
/// and a table load has no branches for the verifier to explore.
static DEBRUIJN: [u8; 64] = [
    0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4, 62, 55, 59, 36, 53, 51, 43, 22, 45,
    39, 33, 30, 24, 18, 12, 5, 63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11, 46,
    26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6,
];

/// Index of the lowest set bit of a non-zero word.
#[inline(always)]
fn lowest_bit(x: u64) -> u32 {
    let isolated = x & x.wrapping_neg();
    let i = (isolated.wrapping_mul(0x03f7_9d71_b4cb_0a89) >> 58) as usize;
    // Volatile because LLVM recognises a de Bruijn table lookup as count-trailing-zeros and
    // would emit `cttz`, which BPF has no instruction for; the load keeps it a table lookup.
    // SAFETY: i < 64 by the shift above.
    unsafe { core::ptr::read_volatile(DEBRUIJN.as_ptr().add(i)) as u32 }
}

/// Prefix lengths present in a mask of up to three words (bit `width - len` counted across
/// them), longest first.
struct Lengths {
    words: [u64; 3],
    base: u32,
    width: u32,
}

impl Lengths {
    #[inline(always)]
    fn v4(mask: u64) -> Self {
        Lengths {
            words: [mask, 0, 0],
            base: 0,
            width: 32,
        }
    }

    #[inline(always)]
    fn v6(first_word: u32) -> Self {
        Lengths {
            words: [
                config(first_word),
                config(first_word + 1),
                config(first_word + 2),
            ],
            base: 0,
            width: 128,
        }
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        if self.words[0] == 0 {
            self.words = [self.words[1], self.words[2], 0];
            self.base += 64;
            if self.words[0] == 0 {
                self.words = [self.words[1], 0, 0];
                self.base += 64;
                if self.words[0] == 0 {
                    return None;
                }
            }
        }
        let bit = lowest_bit(self.words[0]);
        self.words[0] &= self.words[0] - 1;
        Some((self.width - (self.base + bit)) as u8)
    }
}

/// The slot of network `addr/len` in an IPv4 table, if present: its first bucket, then its
/// second.
#[inline(always)]
fn find4(table: &Array<Bucket4>, mask: u32, addr: u32, len: u8) -> Option<u32> {
    let h = hash4(addr, len, hash_key());
    let want = len as u32 + 1;
    if let Some(slot) = scan4(table.get((h as u32) & mask)?, addr, want) {
        return Some(slot);
    }
    scan4(table.get(((h >> 32) as u32) & mask)?, addr, want)
}

/// The slot of the IPv4 ban `addr/len`, if held: in its buckets, else in the overflow map.
#[inline(always)]
fn ban_slot4(mask: u32, addr: u32, len: u8) -> Option<u32> {
    if let Some(slot) = find4(&V4_BANS, mask, addr, len) {
        return Some(slot);
    }
    if flags() & FLAG_V4_OVERFLOW == 0 {
        return None;
    }
    let key = OverflowKey4 {
        addr,
        len: len as u32,
    };
    // SAFETY: a hash map without preallocation frees a removed value only after every program
    // run that may hold it has ended.
    unsafe { V4_OVERFLOW.get(&key) }.copied()
}

#[inline(always)]
fn scan4(bucket: &Bucket4, addr: u32, want: u32) -> Option<u32> {
    // An entry is one little-endian word: address, then tag. Comparing the address and the
    // tag's length byte in one 64-bit operation keeps the key in a register and needs one load
    // an entry, which also reads the entry whole: never half of an old and half of a new one.
    let key = (want as u64) << 32 | addr as u64;
    // The address (low 32 bits) and the tag's length byte (the next 8), not its slot.
    const ADDRESS_AND_LENGTH: u64 = (TAG_LEN_BITS as u64) << 32 | u32::MAX as u64;
    let words = bucket.entries.as_ptr().cast::<u64>();
    let mut i = 0;
    while i < ENTRIES4 {
        // SAFETY: a Bucket4 is ENTRIES4 entries of 8 bytes, 8-aligned.
        let word = unsafe { words.add(i).read() };
        if word & ADDRESS_AND_LENGTH == key {
            return Some(tag_slot((word >> 32) as u32));
        }
        i += 1;
    }
    None
}

/// The slot of network `hi:lo/len` in an IPv6 table, if present: its first bucket, then its
/// second.
#[inline(always)]
fn find6(table: &Array<Bucket6>, mask: u32, hi: u64, lo: u64, len: u8) -> Option<u32> {
    let (b1, b2) = buckets6(hi, lo, len, hash_key(), mask);
    let want = len as u32 + 1;
    for b in [b1, b2] {
        let bucket = table.get(b)?;
        let mut i = 0;
        while i < ENTRIES6 {
            let e = &bucket.entries[i];
            // The tag first, then the address, each read once: an entry is three words, and the
            // agent writes a reused one address first, tag last (see its kernel/table.rs).
            // SAFETY: plain reads of a map value; volatile keeps them in this order.
            let tag = unsafe { core::ptr::read_volatile(&e.tag) };
            if tag & TAG_LEN_BITS == want {
                // SAFETY: as above.
                let (ehi, elo) = unsafe {
                    (
                        core::ptr::read_volatile(&e.hi),
                        core::ptr::read_volatile(&e.lo),
                    )
                };
                if (ehi ^ hi) | (elo ^ lo) == 0 {
                    return Some(tag_slot(tag));
                }
            }
            i += 1;
        }
    }
    None
}

/// The slot of the IPv6 ban `hi:lo/len`, if held: in its buckets, else in the overflow map.
#[inline(always)]
fn ban_slot6(mask: u32, hi: u64, lo: u64, len: u8) -> Option<u32> {
    if let Some(slot) = find6(&V6_BANS, mask, hi, lo, len) {
        return Some(slot);
    }
    if flags() & FLAG_V6_OVERFLOW == 0 {
        return None;
    }
    let key = OverflowKey6 {
        hi,
        lo,
        len: len as u64,
    };
    // SAFETY: as in `ban_slot4`.
    unsafe { V6_OVERFLOW.get(&key) }.copied()
}

/// The live ban matching an IPv4 source, longest prefix first.
#[inline(always)]
pub fn ban4(src: u32) -> Option<Slot> {
    let (word, shift) = filter_pos4(src);
    let near = (*V4_FILTER.get(word)? >> shift) & (FILTER4_EXACT | FILTER4_PREFIX);
    if near == 0 {
        return None;
    }
    let mask = v4_bucket_mask();
    if near & FILTER4_EXACT != 0 {
        if let Some(slot) = ban_slot4(mask, src, 32).and_then(live) {
            return Some(slot);
        }
    }
    if near & FILTER4_PREFIX == 0 {
        return None;
    }
    // Shorter bans: the lengths present in this /16, /32 already done.
    let mut lens = Lengths::v4(*V4_LENS.get(src >> 16)? & !len_bit4(32));
    // At most one pass per possible length, which also bounds the loop for the verifier.
    let mut pass = 0;
    while pass < 32 {
        let len = lens.next()?;
        if let Some(index) = ban_slot4(mask, mask4(src, len), len) {
            if let Some(slot) = live(index) {
                return Some(slot);
            }
        }
        pass += 1;
    }
    None
}

/// The live ban matching an IPv6 source, longest prefix first.
#[inline(always)]
pub fn ban6(hi: u64, lo: u64, flags: u64) -> Option<Slot> {
    if flags & FLAG_V6_ALL == 0 && !bit_set(&V6_FILTER, filter_bit6(hi)) {
        return None;
    }
    let mask = v6_bucket_mask();
    let mut lens = Lengths::v6(config::V6_LENS);
    // Most IPv6 bans are single addresses: probe /128 inline, and leave the loop for the rest.
    let (word, bit) = len_bit6(128);
    if lens.words[word] & bit != 0 {
        lens.words[word] &= !bit;
        if let Some(index) = ban_slot6(mask, hi, lo, 128) {
            if let Some(slot) = live(index) {
                return Some(slot);
            }
        }
    }
    let mut probe = Probe6 {
        hi,
        lo,
        lens,
        bans: true,
        mask,
        found: None,
    };
    probe.run();
    live(probe.found?)
}

/// State of an IPv6 lookup driven by `bpf_loop`. IPv6 has [`V6_PREFIX_LENGTHS`] prefix lengths; an
/// unrolled loop over them is more than the verifier will walk, while a `bpf_loop` callback is
/// verified once. IPv4, with 33 lengths and the tightest budget, keeps its plain loop.
struct Probe6 {
    hi: u64,
    lo: u64,
    lens: Lengths,
    /// The bans (expired ones skipped, the overflow map read) or the allowlist.
    bans: bool,
    mask: u32,
    found: Option<u32>,
}

impl Probe6 {
    #[inline(always)]
    fn run(&mut self) {
        // Not `== [0, 0, 0]`, which LLVM turns into a call to memcmp.
        if self.lens.words[0] | self.lens.words[1] | self.lens.words[2] == 0 {
            return;
        }
        // SAFETY: the callback receives `self` back as its context and is done with it when
        // bpf_loop returns.
        unsafe {
            bpf_loop(
                V6_PREFIX_LENGTHS,
                probe6_step as *mut c_void,
                (self as *mut Probe6).cast(),
                0,
            )
        };
    }
}

/// One prefix length of a [`Probe6`]: 0 to go on, 1 to stop.
extern "C" fn probe6_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Probe6` passed to bpf_loop by `Probe6::run`.
    let probe = unsafe { &mut *ctx.cast::<Probe6>() };
    let Some(len) = probe.lens.next() else {
        return 1;
    };
    let (hi, lo) = mask6(probe.hi, probe.lo, len);
    let found = if probe.bans {
        ban_slot6(probe.mask, hi, lo, len).filter(|index| live(*index).is_some())
    } else {
        find6(&ALLOW6, probe.mask, hi, lo, len)
    };
    match found {
        Some(index) => {
            probe.found = Some(index);
            1
        }
        None => 0,
    }
}

/// Whether an IPv4 source is inside an allowlisted network.
#[inline(always)]
pub fn allowed4(src: u32) -> bool {
    let mut lens = Lengths::v4(config(config::ALLOW4_LENS));
    let mut pass = 0;
    while pass <= 32 {
        let Some(len) = lens.next() else { return false };
        if find4(&ALLOW4, ALLOW_BUCKETS - 1, mask4(src, len), len).is_some() {
            return true;
        }
        pass += 1;
    }
    false
}

/// Whether an IPv6 source is inside an allowlisted network.
#[inline(always)]
pub fn allowed6(hi: u64, lo: u64) -> bool {
    let mut probe = Probe6 {
        hi,
        lo,
        lens: Lengths::v6(config::ALLOW6_LENS),
        bans: false,
        mask: ALLOW_BUCKETS - 1,
        found: None,
    };
    probe.run();
    probe.found.is_some()
}
