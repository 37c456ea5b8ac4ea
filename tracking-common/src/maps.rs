//! Map names. Each is also the file name of the map's pin (BPF names are at most 15 bytes).

/// `Array<u64>` of [`crate::layout::config`] words, mmap-able.
pub const CONFIG: &str = "CONFIG";
/// `PerCpuArray<Counter>` indexed by [`crate::stats::Verdict`].
pub const STATS: &str = "STATS";
/// `Array<u64>` IPv4 source filter bitmap, mmap-able.
pub const V4_FILTER: &str = "V4_FILTER";
/// `Array<u64>` IPv4 prefix lengths per /16, mmap-able.
pub const V4_LENS: &str = "V4_LENS";
/// `Array<Bucket4>` IPv4 bans, mmap-able.
pub const V4_BANS: &str = "V4_BANS";
/// `Array<u64>` IPv6 source filter bitmap, mmap-able.
pub const V6_FILTER: &str = "V6_FILTER";
/// `Array<Bucket6>` IPv6 bans, mmap-able.
pub const V6_BANS: &str = "V6_BANS";
/// `Array<SlotState>` per-ban expiry and hit count, mmap-able.
pub const SLOTS: &str = "SLOTS";
/// `Array<Bucket4>` IPv4 allowlist, mmap-able.
pub const ALLOW4: &str = "ALLOW4";
/// `Array<Bucket6>` IPv6 allowlist, mmap-able.
pub const ALLOW6: &str = "ALLOW6";
/// `HashMap<OverflowKey4, u32>` IPv4 bans whose two buckets were full, allocated as used.
pub const V4_OVERFLOW: &str = "V4_OVERFLOW";
/// `HashMap<OverflowKey6, u32>` IPv6 bans whose two buckets were full.
pub const V6_OVERFLOW: &str = "V6_OVERFLOW";

/// Every map the agent pins, in a fixed order.
pub const ALL: [&str; 12] = [
    CONFIG,
    STATS,
    V4_FILTER,
    V4_LENS,
    V4_BANS,
    V6_FILTER,
    V6_BANS,
    SLOTS,
    ALLOW4,
    ALLOW6,
    V4_OVERFLOW,
    V6_OVERFLOW,
];

/// Globals the loader sets before verification, so the verifier can fold them.
pub mod globals {
    /// `u32`: number of IPv4 ban buckets minus one (a power of two minus one).
    pub const V4_BUCKET_MASK: &str = "V4_BUCKET_MASK";
    /// `u32`: number of IPv6 ban buckets minus one.
    pub const V6_BUCKET_MASK: &str = "V6_BUCKET_MASK";
    /// `u64`: the tables' hash key, also kept in the `CONFIG` word `HASH_KEY`.
    pub const HASH_KEY: &str = "HASH_KEY";
}

/// `BPF_F_MMAPABLE`: lets the agent write tables through a shared mapping.
pub const F_MMAPABLE: u32 = 1 << 10;
/// `BPF_F_NO_PREALLOC`: a hash map that takes memory only for the entries it holds.
pub const F_NO_PREALLOC: u32 = 1 << 0;
