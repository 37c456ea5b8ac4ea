//! The maps shared with the agent. Sizes here are placeholders for the ones the agent sets at
//! load time (`EbpfLoader::map_max_entries`), except for the fixed-size ones.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use tracking_common::{
    Bucket4, Bucket6, SlotState,
    layout::{
        ALLOW_BUCKETS, FILTER_WORDS, FILTER4_WORDS, OverflowKey4, OverflowKey6, V4_LENS_WORDS,
        config,
    },
    maps::{F_MMAPABLE, F_NO_PREALLOC},
    stats::{Counter, VERDICTS, Verdict},
};

#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(config::LEN, F_MMAPABLE);
#[map]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(VERDICTS, 0);
#[map]
pub static V4_FILTER: Array<u64> = Array::with_max_entries(FILTER4_WORDS, F_MMAPABLE);
#[map]
pub static V4_LENS: Array<u64> = Array::with_max_entries(V4_LENS_WORDS, F_MMAPABLE);
#[map]
pub static V4_BANS: Array<Bucket4> = Array::with_max_entries(2, F_MMAPABLE);
#[map]
pub static V6_FILTER: Array<u64> = Array::with_max_entries(FILTER_WORDS, F_MMAPABLE);
#[map]
pub static V6_BANS: Array<Bucket6> = Array::with_max_entries(2, F_MMAPABLE);
#[map]
pub static SLOTS: Array<SlotState> = Array::with_max_entries(1, F_MMAPABLE);
#[map]
pub static ALLOW4: Array<Bucket4> = Array::with_max_entries(ALLOW_BUCKETS, F_MMAPABLE);
#[map]
pub static ALLOW6: Array<Bucket6> = Array::with_max_entries(ALLOW_BUCKETS, F_MMAPABLE);
// Without preallocation: memory only for what they hold (nearly always nothing), and an entry
// removed is freed after every program run that may read it has ended.
#[map]
pub static V4_OVERFLOW: HashMap<OverflowKey4, u32> = HashMap::with_max_entries(1, F_NO_PREALLOC);
#[map]
pub static V6_OVERFLOW: HashMap<OverflowKey6, u32> = HashMap::with_max_entries(1, F_NO_PREALLOC);

/// Number of IPv4 ban buckets minus one; set by the loader to match `V4_BANS`.
#[unsafe(no_mangle)]
static V4_BUCKET_MASK: u32 = 1;
/// Number of IPv6 ban buckets minus one; set by the loader to match `V6_BANS`.
#[unsafe(no_mangle)]
static V6_BUCKET_MASK: u32 = 1;
/// The tables' hash key; set by the loader to the one the tables were filled with.
#[unsafe(no_mangle)]
static HASH_KEY: u64 = 0;

#[inline(always)]
pub fn v4_bucket_mask() -> u32 {
    // SAFETY: a plain read of a constant the loader may have patched; volatile so that the
    // compiler does not fold the placeholder value.
    unsafe { core::ptr::read_volatile(&V4_BUCKET_MASK) }
}

#[inline(always)]
pub fn v6_bucket_mask() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&V6_BUCKET_MASK) }
}

#[inline(always)]
pub fn hash_key() -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&HASH_KEY) }
}

/// A configuration word, zero if out of range.
#[inline(always)]
pub fn config(word: u32) -> u64 {
    match CONFIG.get(word) {
        Some(v) => *v,
        None => 0,
    }
}

#[inline(always)]
pub fn flags() -> u64 {
    config(config::FLAGS)
}

/// Adds one packet of `bytes` to the verdict's per-CPU counter.
#[inline(always)]
pub fn count(verdict: Verdict, bytes: u64) {
    if let Some(c) = STATS.get_ptr_mut(verdict as u32) {
        // SAFETY: per-CPU value, nobody else writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
