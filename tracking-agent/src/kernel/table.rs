//! The agent's side of the program's open-addressed tables (`V4_BANS`, `V6_BANS`, `ALLOW4`,
//! `ALLOW6`): the same bucket choice as the program ([`tracking_common::hash`]), seen through a
//! shared mapping.
//!
//! Publication order is what keeps lookups exact while the agent writes: an entry's key words are
//! stored before its tag, and a removal clears the tag first. When both candidate buckets of a new
//! network are full, one resident entry moves to its other bucket by copy-then-clear, so at every
//! instant it is present in at least one of the buckets the program reads.

use std::{
    marker::PhantomData,
    net::{Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU64, Ordering},
};

use ipnet::{Ipv4Net, Ipv6Net};
use tracking_common::{
    hash::{buckets4, buckets6},
    layout::{ENTRIES4, ENTRIES6, tag, tag_len, tag_slot},
};

use super::mmap::Words;

/// How one address family lays out its entries.
pub trait Family {
    type Net: Copy + Eq + std::hash::Hash + std::fmt::Debug;
    /// Entries per bucket.
    const ENTRIES: usize;
    /// 64-bit words per entry; the tag is in the last one.
    const ENTRY_WORDS: usize;
    fn prefix_len(net: &Self::Net) -> u8;
    fn buckets(net: &Self::Net, mask: u32) -> (u32, u32);
    /// Stores `net` with `tag` into an empty entry: key words first, tag last.
    fn write(entry: &[AtomicU64], net: &Self::Net, tag: u32);
    /// The network and tag of an entry, or `None` if it is empty.
    fn read(entry: &[AtomicU64]) -> Option<(Self::Net, u32)>;
    /// Empties an entry by clearing its tag.
    fn clear(entry: &[AtomicU64]);
    /// The tag of `entry` if it holds `net`; compares raw words, without building a network.
    fn holds(entry: &[AtomicU64], net: &Self::Net) -> Option<u32>;
    /// Whether an entry holds anything.
    fn used(entry: &[AtomicU64]) -> bool {
        entry[Self::ENTRY_WORDS - 1].load(Ordering::Acquire) >> Self::TAG_SHIFT != 0
    }
    /// Where the tag sits in the entry's last word.
    const TAG_SHIFT: u32;
}

/// IPv4: `addr | tag << 32` in one word (`Entry4` on a little-endian machine).
pub enum V4 {}
/// IPv6: `hi`, `lo`, `tag` (`Entry6`).
pub enum V6 {}

impl Family for V4 {
    type Net = Ipv4Net;
    const ENTRIES: usize = ENTRIES4;
    const ENTRY_WORDS: usize = 1;
    const TAG_SHIFT: u32 = 32;

    fn prefix_len(net: &Ipv4Net) -> u8 {
        net.prefix_len()
    }

    fn buckets(net: &Ipv4Net, mask: u32) -> (u32, u32) {
        buckets4(net.addr().to_bits(), net.prefix_len(), mask)
    }

    fn write(entry: &[AtomicU64], net: &Ipv4Net, tag_: u32) {
        let word = net.addr().to_bits() as u64 | (tag_ as u64) << 32;
        entry[0].store(word, Ordering::Release);
    }

    fn read(entry: &[AtomicU64]) -> Option<(Ipv4Net, u32)> {
        let word = entry[0].load(Ordering::Acquire);
        let tag_ = (word >> 32) as u32;
        if tag_ == 0 {
            return None;
        }
        let net = Ipv4Net::new(Ipv4Addr::from_bits(word as u32), tag_len(tag_)).ok()?;
        Some((net, tag_))
    }

    fn clear(entry: &[AtomicU64]) {
        entry[0].store(0, Ordering::Release);
    }

    fn holds(entry: &[AtomicU64], net: &Ipv4Net) -> Option<u32> {
        let word = entry[0].load(Ordering::Acquire);
        let key = net.addr().to_bits() as u64 | (net.prefix_len() as u64 + 1) << 32;
        (word & 0x0000_00ff_ffff_ffff == key).then_some((word >> 32) as u32)
    }
}

impl Family for V6 {
    type Net = Ipv6Net;
    const ENTRIES: usize = ENTRIES6;
    const ENTRY_WORDS: usize = 3;
    const TAG_SHIFT: u32 = 0;

    fn prefix_len(net: &Ipv6Net) -> u8 {
        net.prefix_len()
    }

    fn buckets(net: &Ipv6Net, mask: u32) -> (u32, u32) {
        let (hi, lo) = split6(net.addr());
        buckets6(hi, lo, net.prefix_len(), mask)
    }

    fn write(entry: &[AtomicU64], net: &Ipv6Net, tag_: u32) {
        let (hi, lo) = split6(net.addr());
        entry[0].store(hi, Ordering::Relaxed);
        entry[1].store(lo, Ordering::Relaxed);
        entry[2].store(tag_ as u64, Ordering::Release);
    }

    fn read(entry: &[AtomicU64]) -> Option<(Ipv6Net, u32)> {
        let tag_ = entry[2].load(Ordering::Acquire) as u32;
        if tag_ == 0 {
            return None;
        }
        let hi = entry[0].load(Ordering::Relaxed);
        let lo = entry[1].load(Ordering::Relaxed);
        let net = Ipv6Net::new(join6(hi, lo), tag_len(tag_)).ok()?;
        Some((net, tag_))
    }

    fn clear(entry: &[AtomicU64]) {
        entry[2].store(0, Ordering::Release);
    }

    fn holds(entry: &[AtomicU64], net: &Ipv6Net) -> Option<u32> {
        let tag_ = entry[2].load(Ordering::Acquire) as u32;
        if tag_ & 0xff != net.prefix_len() as u32 + 1 {
            return None;
        }
        let (hi, lo) = split6(net.addr());
        (entry[0].load(Ordering::Relaxed) == hi && entry[1].load(Ordering::Relaxed) == lo)
            .then_some(tag_)
    }
}

/// An IPv6 address as the program reads it: two host-order halves.
pub fn split6(addr: Ipv6Addr) -> (u64, u64) {
    let bits = addr.to_bits();
    ((bits >> 64) as u64, bits as u64)
}

pub fn join6(hi: u64, lo: u64) -> Ipv6Addr {
    Ipv6Addr::from_bits((hi as u128) << 64 | lo as u128)
}

#[cfg(target_arch = "x86_64")]
fn prefetch<T>(p: *const T) {
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch<T>(_: *const T) {}

/// Where a network is in a table, or where it would go.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// Its slot, when present.
    pub existing: Option<u32>,
    /// A free entry in the emptier candidate bucket, when absent and one is free.
    place: Option<(u32, usize)>,
    buckets: (u32, u32),
}

/// Both candidate buckets of a network are full and no resident could move out of the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// A ban or allow table of one family.
pub struct Table<F: Family> {
    words: Words,
    mask: u32,
    _family: PhantomData<F>,
}

impl<F: Family> Table<F> {
    /// Wraps the mapping of a table map; its bucket count must be a power of two.
    pub fn new(words: Words) -> Result<Self, super::KernelError> {
        let buckets = words.len() / (F::ENTRIES * F::ENTRY_WORDS);
        if !buckets.is_power_of_two() || buckets * F::ENTRIES * F::ENTRY_WORDS != words.len() {
            return Err(super::KernelError::Layout(format!(
                "map {} has {} words, not a power-of-two number of buckets",
                words.name(),
                words.len()
            )));
        }
        Ok(Table {
            words,
            mask: buckets as u32 - 1,
            _family: PhantomData,
        })
    }

    /// Number of buckets.
    pub fn buckets(&self) -> u32 {
        self.mask + 1
    }

    /// Number of entries the table can physically hold.
    pub fn entries(&self) -> usize {
        self.buckets() as usize * F::ENTRIES
    }

    fn entry(&self, bucket: u32, i: usize) -> &[AtomicU64] {
        let start = (bucket as usize * F::ENTRIES + i) * F::ENTRY_WORDS;
        &self.words[start..start + F::ENTRY_WORDS]
    }

    fn find_in(&self, bucket: u32, net: &F::Net) -> Option<(usize, u32)> {
        (0..F::ENTRIES).find_map(|i| F::holds(self.entry(bucket, i), net).map(|t| (i, t)))
    }

    fn free_in(&self, bucket: u32) -> Option<usize> {
        (0..F::ENTRIES).find(|&i| !F::used(self.entry(bucket, i)))
    }

    /// One pass over a bucket: where `net` is, how many entries are used, the first free one.
    fn scan(&self, bucket: u32, net: &F::Net) -> (Option<(usize, u32)>, usize, Option<usize>) {
        let mut used = 0;
        let mut free = None;
        for i in 0..F::ENTRIES {
            let entry = self.entry(bucket, i);
            if let Some(t) = F::holds(entry, net) {
                return (Some((i, t)), 0, None);
            }
            if F::used(entry) {
                used += 1;
            } else if free.is_none() {
                free = Some(i);
            }
        }
        (None, used, free)
    }

    /// The slot recorded for `net`, if present.
    pub fn get(&self, net: &F::Net) -> Option<u32> {
        let (b1, b2) = F::buckets(net, self.mask);
        self.find_in(b1, net)
            .or_else(|| self.find_in(b2, net))
            .map(|(_, t)| tag_slot(t))
    }

    /// Asks the CPU to start loading both candidate buckets of `net`. A batch calls this a few
    /// networks ahead of the one it works on: in a table of many megabytes every bucket is a
    /// cache and TLB miss, which costs more than everything else an insert does.
    pub fn prefetch(&self, net: &F::Net) {
        let (b1, b2) = F::buckets(net, self.mask);
        for b in [b1, b2] {
            let entry = self.entry(b, 0);
            prefetch(entry.as_ptr());
        }
    }

    /// Looks `net` up and, when it is absent, notes where it would go: one pass over its two
    /// buckets serves both the lookup and a following [`Table::insert_probed`].
    pub fn probe(&self, net: &F::Net) -> Probe {
        let (b1, b2) = F::buckets(net, self.mask);
        let (found1, used1, free1) = self.scan(b1, net);
        if let Some((_, t)) = found1 {
            return Probe {
                existing: Some(tag_slot(t)),
                place: None,
                buckets: (b1, b2),
            };
        }
        let (found2, used2, free2) = self.scan(b2, net);
        if let Some((_, t)) = found2 {
            return Probe {
                existing: Some(tag_slot(t)),
                place: None,
                buckets: (b1, b2),
            };
        }
        // Two choices, the emptier wins: keeps the fullest bucket near the average.
        let place = match (free1, free2) {
            (Some(i), Some(j)) => Some(if used2 < used1 { (b2, j) } else { (b1, i) }),
            (Some(i), None) => Some((b1, i)),
            (None, Some(j)) => Some((b2, j)),
            (None, None) => None,
        };
        Probe {
            existing: None,
            place,
            buckets: (b1, b2),
        }
    }

    /// Adds `net` with `slot`. The caller makes sure it is not present yet.
    pub fn insert(&self, net: &F::Net, slot: u32) -> Result<(), TableFull> {
        let probe = self.probe(net);
        self.insert_probed(net, slot, &probe)
    }

    /// Adds `net`, absent according to `probe`, which was taken with no write in between.
    pub fn insert_probed(&self, net: &F::Net, slot: u32, probe: &Probe) -> Result<(), TableFull> {
        let tag_ = tag(slot, F::prefix_len(net));
        if let Some((bucket, i)) = probe.place {
            F::write(self.entry(bucket, i), net, tag_);
            return Ok(());
        }
        let (b1, b2) = probe.buckets;
        // Both full: move one resident to its other bucket, copy first, then clear.
        for bucket in [b1, b2] {
            for i in 0..F::ENTRIES {
                let Some((resident, resident_tag)) = F::read(self.entry(bucket, i)) else {
                    continue;
                };
                let (r1, r2) = F::buckets(&resident, self.mask);
                let other = if r1 == bucket { r2 } else { r1 };
                if other == bucket {
                    continue;
                }
                if let Some(j) = self.free_in(other) {
                    F::write(self.entry(other, j), &resident, resident_tag);
                    F::clear(self.entry(bucket, i));
                    F::write(self.entry(bucket, i), net, tag_);
                    return Ok(());
                }
            }
        }
        Err(TableFull)
    }

    /// Removes `net`, returning its slot.
    pub fn remove(&self, net: &F::Net) -> Option<u32> {
        let (b1, b2) = F::buckets(net, self.mask);
        for bucket in [b1, b2] {
            if let Some((i, tag_)) = self.find_in(bucket, net) {
                F::clear(self.entry(bucket, i));
                return Some(tag_slot(tag_));
            }
        }
        None
    }

    /// The raw words of the table, `ENTRY_WORDS` an entry, for scans that must be fast.
    pub fn words(&self) -> &[AtomicU64] {
        &self.words
    }

    /// Every network in the table with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (F::Net, u32)> + '_ {
        (0..self.buckets())
            .flat_map(move |b| (0..F::ENTRIES).filter_map(move |i| F::read(self.entry(b, i))))
            .map(|(net, tag_)| (net, tag_slot(tag_)))
    }

    /// Empties the table.
    pub fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Release);
        }
    }
}
