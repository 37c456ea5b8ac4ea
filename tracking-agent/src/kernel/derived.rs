//! The derived state the program consults before it probes a table: the source filters
//! (`V4_FILTER`: two bits per /24; `V6_FILTER`: one bit per hash of a /48) and the prefix-length
//! masks (`V4_LENS`: one word per /16; the `V6_LENS` configuration words). Without its bits a
//! ban held in a table is never looked for, so these functions are the whole difference
//! between "held" and "enforced".
//!
//! The writer keeps the rule of `super::maps`: a ban's bits are set after its entry is written
//! and cleared only once no held ban needs them.

use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::{IpNet, Ipv6Net};
use tracking_common::{
    hash::{filter_bit6, filter_pos4},
    layout::{
        FILTER4_EXACT, FILTER4_PREFIX, FILTER4_WORDS, FILTER6_MIN_ENUMERATED, FILTER6_PREFIX,
        V4_LENS_WORDS, len_bit4,
    },
};

use super::table::split6;

/// A word of a filter with the prefix bit of every /24 in it, or the exact bit.
const ALL_PREFIX: u64 = 0xaaaa_aaaa_aaaa_aaaa;
const ALL_EXACT: u64 = 0x5555_5555_5555_5555;

/// Calls `filter(word, bits)` for the filter bits of the IPv4 ban `addr/len` (its kind's bit in
/// every /24 it overlaps) and `lens(word, bits)` for its length bit in each /16 it overlaps.
pub fn cover4(
    addr: u32,
    len: u8,
    filter: &mut impl FnMut(usize, u64),
    lens: &mut impl FnMut(usize, u64),
) {
    let kind = if len == 32 {
        FILTER4_EXACT
    } else {
        FILTER4_PREFIX
    };
    let first = (addr >> 8) as usize;
    let count = 1usize << 24u8.saturating_sub(len);
    for slash24 in first..first + count.min(32 - first % 32) {
        let (word, shift) = filter_pos4((slash24 as u32) << 8);
        filter(word as usize, kind << shift);
    }
    // Whole words of 32 /24s at once for wide bans.
    if count > 32 - first % 32 {
        let pattern = if kind == FILTER4_EXACT {
            ALL_EXACT
        } else {
            ALL_PREFIX
        };
        let start = first.div_ceil(32);
        let end = (first + count) / 32;
        for word in start..end {
            filter(word, pattern);
        }
        for slash24 in end * 32..first + count {
            let (word, shift) = filter_pos4((slash24 as u32) << 8);
            filter(word as usize, kind << shift);
        }
    }
    let bit = len_bit4(len);
    let first16 = (addr >> 16) as usize;
    for w in first16..first16 + (1usize << 16u8.saturating_sub(len)) {
        lens(w, bit);
    }
}

/// Calls `filter(word, bits)` for the filter bits of an IPv6 ban, or sets `all` when the ban is
/// too wide to enumerate (the filter is then off for every IPv6 source).
pub fn cover6(net: &Ipv6Net, filter: &mut impl FnMut(usize, u64), all: &mut bool) {
    let len = net.prefix_len();
    let (hi, _) = split6(net.network());
    if len < FILTER6_MIN_ENUMERATED {
        *all = true;
        return;
    }
    let shift = 64 - FILTER6_PREFIX as u32;
    let top = hi >> shift;
    let count = 1u64 << FILTER6_PREFIX.saturating_sub(len);
    for k in 0..count {
        let bit = filter_bit6((top + k) << shift) as usize;
        filter(bit / 64, 1 << (bit % 64));
    }
}

/// Whether every filter and length bit of the IPv4 ban `addr/len` is set.
pub fn covered4(filter: &[AtomicU64], lens: &[AtomicU64], addr: u32, len: u8) -> bool {
    let mut filter_ok = true;
    let mut lens_ok = true;
    cover4(
        addr,
        len,
        &mut |w, bits| filter_ok &= filter[w].load(Ordering::Acquire) & bits == bits,
        &mut |w, bits| lens_ok &= lens[w].load(Ordering::Acquire) & bits == bits,
    );
    filter_ok && lens_ok
}

/// Whether the IPv6 filter lets every source of `net` through to its probes: the filter is off
/// (`filter_off`), or every bit `net` needs is set.
pub fn covered6(filter: &[AtomicU64], filter_off: bool, net: &Ipv6Net) -> bool {
    let mut all = true;
    let mut needs_off = false;
    cover6(
        net,
        &mut |w, bits| all &= filter[w].load(Ordering::Acquire) & bits == bits,
        &mut needs_off,
    );
    filter_off || (all && !needs_off)
}

/// Stores `new` into `words` where they differ; returns how many did.
pub fn publish(words: &[AtomicU64], new: &[u64]) -> usize {
    let mut changed = 0;
    for (w, &v) in words.iter().zip(new) {
        if w.load(Ordering::Relaxed) != v {
            w.store(v, Ordering::Release);
            changed += 1;
        }
    }
    changed
}

/// Derived bits of a big batch of additions, gathered before they are published.
pub struct Gathered {
    pub v4_filter: Vec<u64>,
    pub v4_lens: Vec<u64>,
    /// IPv6 additions are few next to IPv4 ones: kept as networks and covered one by one.
    pub v6: Vec<IpNet>,
}

impl Gathered {
    pub fn new() -> Self {
        Gathered {
            v4_filter: vec![0; FILTER4_WORDS as usize],
            v4_lens: vec![0; V4_LENS_WORDS as usize],
            v6: Vec::new(),
        }
    }

    pub fn cover(&mut self, net: &IpNet) {
        match net {
            IpNet::V4(n) => {
                let (f, l) = (&mut self.v4_filter, &mut self.v4_lens);
                cover4(
                    n.addr().to_bits(),
                    n.prefix_len(),
                    &mut |w, b| f[w] |= b,
                    &mut |w, b| l[w] |= b,
                );
            }
            IpNet::V6(_) => self.v6.push(*net),
        }
    }
}

impl Default for Gathered {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use ipnet::Ipv4Net;

    use super::*;

    #[test]
    fn an_ipv4_slash_16_sets_the_prefix_bit_of_its_256_slash_24s_and_one_lens_word() {
        for net in [
            "10.1.0.0/16",
            "10.1.0.0/23",
            "10.1.7.0/24",
            "10.0.0.0/8",
            "0.0.0.0/0",
        ] {
            let net: Ipv4Net = net.parse().unwrap();
            let mut filter = vec![0u64; FILTER4_WORDS as usize];
            let mut lens = Vec::new();
            cover4(
                net.addr().to_bits(),
                net.prefix_len(),
                &mut |w, b| filter[w] |= b,
                &mut |w, b| lens.push((w, b)),
            );
            let set: usize = filter
                .iter()
                .map(|w| (w & ALL_PREFIX).count_ones() as usize)
                .sum();
            assert_eq!(set, 1 << (24 - net.prefix_len().min(24)), "{net}");
            assert!(
                filter.iter().all(|w| w & ALL_EXACT == 0),
                "{net}: no exact bits"
            );
            let first = (net.network().to_bits() >> 8) as usize;
            assert_eq!(
                filter[first / 32] >> ((first % 32) * 2) & 3,
                FILTER4_PREFIX,
                "{net}: its first /24"
            );
            assert_eq!(lens.len(), 1 << (16 - net.prefix_len().min(16)), "{net}");
        }
    }

    #[test]
    fn an_exact_ban_sets_the_exact_bit_of_its_slash_24_only() {
        let net: Ipv4Net = "10.1.2.3/32".parse().unwrap();
        let mut filter = vec![0u64; FILTER4_WORDS as usize];
        cover4(
            net.addr().to_bits(),
            net.prefix_len(),
            &mut |w, b| filter[w] |= b,
            &mut |_, _| {},
        );
        let slash24 = 0x0a0102usize;
        assert_eq!(filter[slash24 / 32], FILTER4_EXACT << ((slash24 % 32) * 2));
        assert_eq!(filter.iter().filter(|w| **w != 0).count(), 1);
    }

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn a_ban_is_covered_only_when_every_bit_it_needs_is_set() {
        let filter = words(FILTER4_WORDS as usize);
        let lens = words(V4_LENS_WORDS as usize);
        let net: Ipv4Net = "10.1.0.0/15".parse().unwrap();
        let (addr, len) = (net.addr().to_bits(), net.prefix_len());
        assert!(!covered4(&filter, &lens, addr, len));
        let mut last = None;
        cover4(
            addr,
            len,
            &mut |w, b| {
                filter[w].fetch_or(b, Ordering::Relaxed);
                last = Some((w, b));
            },
            &mut |w, b| {
                lens[w].fetch_or(b, Ordering::Relaxed);
            },
        );
        assert!(covered4(&filter, &lens, addr, len));
        let (w, b) = last.unwrap();
        filter[w].fetch_and(!b, Ordering::Relaxed);
        assert!(
            !covered4(&filter, &lens, addr, len),
            "one /24's bit missing is not covered"
        );
    }

    #[test]
    fn a_wide_ipv6_ban_is_covered_only_while_the_filter_is_off() {
        let filter = words(tracking_common::layout::FILTER_WORDS as usize);
        let wide: Ipv6Net = "2001::/16".parse().unwrap();
        assert!(!covered6(&filter, false, &wide));
        assert!(covered6(&filter, true, &wide));
        let narrow: Ipv6Net = "2001:db8::/48".parse().unwrap();
        assert!(!covered6(&filter, false, &narrow));
        let mut all = false;
        cover6(
            &narrow,
            &mut |w, b| {
                filter[w].fetch_or(b, Ordering::Relaxed);
            },
            &mut all,
        );
        assert!(!all);
        assert!(covered6(&filter, false, &narrow));
    }
}
