//! Hashing shared by the program (to look up) and the agent (to place).
//!
//! A network is identified by its masked address and its prefix length, so a /24 ban and a /32
//! ban on the same address are different keys. `mix64` is the 64-bit finaliser of MurmurHash3:
//! two multiplies, a good avalanche, and no table, which suits the BPF instruction set. The ban
//! and allow tables hash with a secret key ([`hash4`]); the source filter does not need one, as
//! a filter bit that many sources share only costs them a table probe.

/// MurmurHash3's 64-bit finaliser.
#[inline(always)]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The 64-bit hash of an IPv4 network under the table's `key`. The key is drawn at random when
/// the tables are created and kept in the pinned configuration map, so nobody can choose a list
/// whose networks pile up in a few buckets: for one who does not know the key, consecutive
/// addresses, whole /12s and crafted lists all spread like random ones.
#[inline(always)]
pub const fn hash4(addr: u32, len: u8, key: u64) -> u64 {
    mix64((((len as u64) << 32) | addr as u64) ^ key)
}

/// Both candidate buckets of an IPv4 network, for a table of `mask + 1` buckets: the low and
/// the high half of one [`hash4`]. The program scans the first, then the second.
#[inline(always)]
pub const fn buckets4(addr: u32, len: u8, key: u64, mask: u32) -> (u32, u32) {
    let h = hash4(addr, len, key);
    ((h as u32) & mask, ((h >> 32) as u32) & mask)
}

/// The two candidate buckets of an IPv6 network, for a table of `mask + 1` buckets, under the
/// table's `key` (see [`hash4`]).
#[inline(always)]
pub const fn buckets6(hi: u64, lo: u64, len: u8, key: u64, mask: u32) -> (u32, u32) {
    let h = mix64(hi ^ mix64(lo ^ ((len as u64) << 56) ^ key));
    ((h as u32) & mask, ((h >> 32) as u32) & mask)
}

/// Where the two filter bits of an IPv4 source's /24 are: word index and shift.
#[inline(always)]
pub const fn filter_pos4(addr: u32) -> (u32, u32) {
    let slash24 = addr >> 8;
    (slash24 >> 5, (slash24 & 31) * 2)
}

/// Filter bit of an IPv6 source: a hash of its upper [`crate::layout::FILTER6_PREFIX`] bits.
#[inline(always)]
pub const fn filter_bit6(hi: u64) -> u32 {
    (mix64(hi >> (64 - crate::layout::FILTER6_PREFIX as u32)) >> (64 - crate::layout::FILTER_BITS))
        as u32
}

/// `addr` with all but the leading `len` bits cleared.
#[inline(always)]
pub const fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - len as u32))
    }
}

/// `(hi, lo)` with all but the leading `len` bits cleared.
#[inline(always)]
pub const fn mask6(hi: u64, lo: u64, len: u8) -> (u64, u64) {
    if len == 0 {
        (0, 0)
    } else if len <= 64 {
        (hi & (u64::MAX << (64 - len as u32)), 0)
    } else if len == 128 {
        (hi, lo)
    } else {
        (hi, lo & (u64::MAX << (128 - len as u32)))
    }
}
