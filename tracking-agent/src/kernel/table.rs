//! The agent's side of the program's open-addressed tables (`V4_BANS`, `V6_BANS`, `ALLOW4`,
//! `ALLOW6`): the same bucket choice as the program ([`tracking_common::hash`], under the
//! tables' key), seen through a shared mapping.
//!
//! # Why a lookup that runs while the agent writes is never wrong
//!
//! The program reads these tables at any instant, on any CPU, while the agent (one writer,
//! under the engine's lock) changes them. A lookup must find every network that is held for the
//! whole of the lookup (no miss), and must never report a network that is not held, or held
//! with another slot (no false match). What the writer does, and why each step keeps both:
//!
//! 1. **Adding.** The slot's state is stored before the entry, and in an entry the key words
//!    before the tag (the tag is what makes an entry match). An IPv4 entry is one 64-bit word,
//!    written and read in one access, so a lookup sees it whole or not at all. An IPv6 entry is
//!    three words: written address first, tag last; the program reads the tag first and the
//!    address after. A lookup that reads the new tag then reads the new address (stores become
//!    visible in order and loads are not reordered with earlier loads on x86-64, the
//!    architecture this agent is built and tested on; a weakly ordered CPU would need acquire
//!    loads in the program, which its toolchain cannot express yet).
//! 2. **Moving.** When both buckets of a new IPv4 network are full, one resident moves to make
//!    room, and only ever from its first bucket to its second, the order in which the program
//!    scans them: copy into the second, then empty the first. A lookup of that resident reads
//!    the first bucket, then the second. If it read the first before it was emptied, it found
//!    the resident there; if after, the copy was already in the second, which it reads later.
//!    A move the other way could slip between the two reads and is never made. An entry that is
//!    already in its second bucket stays where it is. IPv6 entries never move: the entry a
//!    move empties could only be reused after a grace period (point 3), too late for the
//!    insert that wanted it.
//! 3. **Removing.** An IPv4 entry is emptied in one store: a lookup sees the whole old entry or
//!    an empty one. An IPv6 entry is *retired*: its tag becomes [`TAG_RETIRED`], which matches
//!    no lookup, and nothing is written into it until a grace period has passed
//!    ([`super::grace`]), after which no lookup that may have read its old tag is still running.
//!    Without that, a lookup that read the old tag could read the address of the next network
//!    written there and pair them. Likewise a removed ban's slot is reused only after a grace
//!    period, so a lookup that took the slot number from the old entry never reads, or counts a
//!    hit against, the state of the ban that next gets the slot.
//! 4. **Overflowing.** A network whose two buckets are full and whose residents cannot move
//!    goes to the family's overflow hash map ([`super::overflow`]), which the kernel keeps safe
//!    for concurrent readers; entries never move between a table and its overflow map.
//!
//! Updating an expiry is one 64-bit store of the slot's control word. The derived state (source
//! filters, length masks) is the subject of `super::maps`: bits are set after an entry is
//! written and cleared only after the entries that needed them are gone.

use std::{
    marker::PhantomData,
    net::{Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU64, Ordering},
};

use ipnet::{Ipv4Net, Ipv6Net};
use tracking_common::{
    hash::{buckets4, buckets6},
    layout::{ENTRIES4, ENTRIES6, TAG_LEN_BITS, TAG_RETIRED, tag, tag_len, tag_slot},
};

use super::mmap::Words;

/// How one address family lays out its entries.
pub trait Family {
    type Net: Copy + Eq + std::hash::Hash + std::fmt::Debug;
    /// Entries per bucket.
    const ENTRIES: usize;
    /// 64-bit words per entry; the tag is in the last one.
    const ENTRY_WORDS: usize;
    /// Where the tag sits in the entry's last word.
    const TAG_SHIFT: u32;
    /// Whether a removed entry must wait for a grace period before it is written again (see
    /// the module's point 3).
    const RETIRES: bool;
    fn prefix_len(net: &Self::Net) -> u8;
    fn buckets(net: &Self::Net, key: u64, mask: u32) -> (u32, u32);
    /// Stores `net` with `tag` into an empty entry: key words first, tag last.
    fn write<C: Cells>(entry: Entry<'_, C>, net: &Self::Net, tag: u32);
    /// The network and tag of an entry, or `None` if it is empty or retired.
    fn read<C: Cells>(entry: Entry<'_, C>) -> Option<(Self::Net, u32)>;
    /// Removes an entry: empties it, or retires it where `RETIRES`.
    fn remove<C: Cells>(entry: Entry<'_, C>);
    /// The tag of `entry` if it holds `net`; compares raw words, without building a network.
    fn holds<C: Cells>(entry: Entry<'_, C>, net: &Self::Net) -> Option<u32>;
    /// The tag of an entry: zero when empty, [`TAG_RETIRED`] when retired.
    fn tag_of<C: Cells>(entry: Entry<'_, C>) -> u32 {
        (entry.get(Self::ENTRY_WORDS - 1) >> Self::TAG_SHIFT) as u32
    }
}

/// Where a table's words live: the shared mapping of a map ([`Words`]: loads acquire, stores
/// release), or, in the model tests, memory that records every store.
pub trait Cells {
    /// Number of words.
    fn count(&self) -> usize;
    fn load(&self, i: usize) -> u64;
    fn store(&self, i: usize, value: u64);
    /// Asks the CPU to start loading word `i`; a hint that does nothing by default.
    fn prefetch(&self, _i: usize) {}
}

impl Cells for Words {
    fn count(&self) -> usize {
        self.len()
    }

    fn load(&self, i: usize) -> u64 {
        self[i].load(Ordering::Acquire)
    }

    fn store(&self, i: usize, value: u64) {
        self[i].store(value, Ordering::Release);
    }

    fn prefetch(&self, i: usize) {
        prefetch(self[i..].as_ptr());
    }
}

/// One entry of a table: `ENTRY_WORDS` words from `start`.
pub struct Entry<'a, C> {
    cells: &'a C,
    start: usize,
}

impl<C> Clone for Entry<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Entry<'_, C> {}

impl<C: Cells> Entry<'_, C> {
    fn get(&self, k: usize) -> u64 {
        self.cells.load(self.start + k)
    }

    fn set(&self, k: usize, value: u64) {
        self.cells.store(self.start + k, value);
    }
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
    const RETIRES: bool = false;

    fn prefix_len(net: &Ipv4Net) -> u8 {
        net.prefix_len()
    }

    fn buckets(net: &Ipv4Net, key: u64, mask: u32) -> (u32, u32) {
        buckets4(net.addr().to_bits(), net.prefix_len(), key, mask)
    }

    fn write<C: Cells>(entry: Entry<'_, C>, net: &Ipv4Net, tag_: u32) {
        let word = net.addr().to_bits() as u64 | (tag_ as u64) << 32;
        entry.set(0, word);
    }

    fn read<C: Cells>(entry: Entry<'_, C>) -> Option<(Ipv4Net, u32)> {
        let word = entry.get(0);
        let tag_ = (word >> 32) as u32;
        if tag_ == 0 {
            return None;
        }
        let net = Ipv4Net::new(Ipv4Addr::from_bits(word as u32), tag_len(tag_)).ok()?;
        Some((net, tag_))
    }

    fn remove<C: Cells>(entry: Entry<'_, C>) {
        entry.set(0, 0);
    }

    fn holds<C: Cells>(entry: Entry<'_, C>, net: &Ipv4Net) -> Option<u32> {
        let word = entry.get(0);
        let key = net.addr().to_bits() as u64 | (net.prefix_len() as u64 + 1) << 32;
        (word & 0x0000_00ff_ffff_ffff == key).then_some((word >> 32) as u32)
    }
}

impl Family for V6 {
    type Net = Ipv6Net;
    const ENTRIES: usize = ENTRIES6;
    const ENTRY_WORDS: usize = 3;
    const TAG_SHIFT: u32 = 0;
    const RETIRES: bool = true;

    fn prefix_len(net: &Ipv6Net) -> u8 {
        net.prefix_len()
    }

    fn buckets(net: &Ipv6Net, key: u64, mask: u32) -> (u32, u32) {
        let (hi, lo) = split6(net.addr());
        buckets6(hi, lo, net.prefix_len(), key, mask)
    }

    fn write<C: Cells>(entry: Entry<'_, C>, net: &Ipv6Net, tag_: u32) {
        let (hi, lo) = split6(net.addr());
        entry.set(0, hi);
        entry.set(1, lo);
        entry.set(2, tag_ as u64);
    }

    fn read<C: Cells>(entry: Entry<'_, C>) -> Option<(Ipv6Net, u32)> {
        let tag_ = entry.get(2) as u32;
        if tag_ == 0 || tag_ == TAG_RETIRED {
            return None;
        }
        let net = Ipv6Net::new(join6(entry.get(0), entry.get(1)), tag_len(tag_)).ok()?;
        Some((net, tag_))
    }

    fn remove<C: Cells>(entry: Entry<'_, C>) {
        entry.set(2, TAG_RETIRED as u64);
    }

    fn holds<C: Cells>(entry: Entry<'_, C>, net: &Ipv6Net) -> Option<u32> {
        let tag_ = entry.get(2) as u32;
        if tag_ & TAG_LEN_BITS != net.prefix_len() as u32 + 1 {
            return None;
        }
        let (hi, lo) = split6(net.addr());
        (entry.get(0) == hi && entry.get(1) == lo).then_some(tag_)
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

/// What [`Table::insert_probed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The network is in the table.
    Placed {
        /// A resident moved from its first bucket to its second to make room.
        moved: bool,
    },
    /// Both candidate buckets are full and no resident could move out of the way.
    Full,
}

/// A ban or allow table of one family.
pub struct Table<F: Family, C: Cells = Words> {
    words: C,
    mask: u32,
    /// The hash key the program was loaded with.
    key: u64,
    _family: PhantomData<F>,
}

impl<F: Family> Table<F> {
    /// Wraps the mapping of a table map; its bucket count must be a power of two.
    pub fn new(words: Words, key: u64) -> Result<Self, super::KernelError> {
        let name = words.name();
        Table::with_cells(words, key).ok_or_else(|| {
            super::KernelError::Layout(format!(
                "map {name} does not hold a power-of-two number of buckets"
            ))
        })
    }

    /// A private copy of the table's words, to plan a change on.
    pub fn words_copy(&self) -> Result<Words, super::KernelError> {
        self.words.copy()
    }

    /// The raw words of the table, `ENTRY_WORDS` an entry, for scans that must be fast.
    pub fn words(&self) -> &[AtomicU64] {
        &self.words
    }
}

impl<F: Family, C: Cells> Table<F, C> {
    /// A table over `cells`, if they hold a power-of-two number of buckets.
    pub fn with_cells(cells: C, key: u64) -> Option<Self> {
        let words = cells.count();
        let buckets = words / (F::ENTRIES * F::ENTRY_WORDS);
        if !buckets.is_power_of_two() || buckets * F::ENTRIES * F::ENTRY_WORDS != words {
            return None;
        }
        Some(Table {
            words: cells,
            mask: buckets as u32 - 1,
            key,
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

    fn candidates(&self, net: &F::Net) -> (u32, u32) {
        F::buckets(net, self.key, self.mask)
    }

    fn start(bucket: u32, i: usize) -> usize {
        (bucket as usize * F::ENTRIES + i) * F::ENTRY_WORDS
    }

    fn entry(&self, bucket: u32, i: usize) -> Entry<'_, C> {
        Entry {
            cells: &self.words,
            start: Self::start(bucket, i),
        }
    }

    fn find_in(&self, bucket: u32, net: &F::Net) -> Option<(usize, u32)> {
        (0..F::ENTRIES).find_map(|i| F::holds(self.entry(bucket, i), net).map(|t| (i, t)))
    }

    fn free_in(&self, bucket: u32) -> Option<usize> {
        (0..F::ENTRIES).find(|&i| F::tag_of(self.entry(bucket, i)) == 0)
    }

    /// One pass over a bucket: where `net` is, how many entries are taken (retired ones
    /// included), the first free one.
    fn scan(&self, bucket: u32, net: &F::Net) -> (Option<(usize, u32)>, usize, Option<usize>) {
        let mut used = 0;
        let mut free = None;
        for i in 0..F::ENTRIES {
            let entry = self.entry(bucket, i);
            if let Some(t) = F::holds(entry, net) {
                return (Some((i, t)), 0, None);
            }
            if F::tag_of(entry) != 0 {
                used += 1;
            } else if free.is_none() {
                free = Some(i);
            }
        }
        (None, used, free)
    }

    /// The slot recorded for `net`, if present.
    pub fn get(&self, net: &F::Net) -> Option<u32> {
        let (b1, b2) = self.candidates(net);
        self.find_in(b1, net)
            .or_else(|| self.find_in(b2, net))
            .map(|(_, t)| tag_slot(t))
    }

    /// Asks the CPU to start loading both candidate buckets of `net`. A batch calls this a few
    /// networks ahead of the one it works on: in a table of many megabytes every bucket is a
    /// cache and TLB miss, which costs more than everything else an insert does.
    pub fn prefetch(&self, net: &F::Net) {
        let (b1, b2) = self.candidates(net);
        for b in [b1, b2] {
            self.words.prefetch(Self::start(b, 0));
        }
    }

    /// Looks `net` up and, when it is absent, notes where it would go: one pass over its two
    /// buckets serves both the lookup and a following [`Table::insert_probed`].
    pub fn probe(&self, net: &F::Net) -> Probe {
        let (b1, b2) = self.candidates(net);
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
    pub fn insert(&self, net: &F::Net, slot: u32) -> Inserted {
        let probe = self.probe(net);
        self.insert_probed(net, slot, &probe)
    }

    /// Adds `net`, absent according to `probe`, which was taken with no write in between.
    pub fn insert_probed(&self, net: &F::Net, slot: u32, probe: &Probe) -> Inserted {
        let tag_ = tag(slot, F::prefix_len(net));
        if let Some((bucket, i)) = probe.place {
            F::write(self.entry(bucket, i), net, tag_);
            return Inserted::Placed { moved: false };
        }
        if F::RETIRES {
            return Inserted::Full;
        }
        let (b1, b2) = probe.buckets;
        // Both full: a resident that sits in its first bucket moves to its second, the way the
        // program scans (the module's point 2).
        for bucket in [b1, b2] {
            for i in 0..F::ENTRIES {
                let Some((resident, resident_tag)) = F::read(self.entry(bucket, i)) else {
                    continue;
                };
                let (first, second) = self.candidates(&resident);
                if first != bucket || second == bucket {
                    continue;
                }
                let Some(j) = self.free_in(second) else {
                    continue;
                };
                F::write(self.entry(second, j), &resident, resident_tag);
                F::remove(self.entry(bucket, i));
                F::write(self.entry(bucket, i), net, tag_);
                return Inserted::Placed { moved: true };
            }
        }
        Inserted::Full
    }

    fn tag_word(&self, bucket: u32, i: usize) -> usize {
        Self::start(bucket, i) + F::ENTRY_WORDS - 1
    }

    /// Removes `net`: its slot, and the word of its retired tag where the family retires
    /// entries (to be reclaimed after a grace period, [`Table::reclaim`]).
    pub fn remove(&self, net: &F::Net) -> Option<(u32, Option<usize>)> {
        let (b1, b2) = self.candidates(net);
        for bucket in [b1, b2] {
            if let Some((i, tag_)) = self.find_in(bucket, net) {
                F::remove(self.entry(bucket, i));
                let retired = F::RETIRES.then(|| self.tag_word(bucket, i));
                return Some((tag_slot(tag_), retired));
            }
        }
        None
    }

    /// Empties a retired entry, once no lookup can still be reading it.
    pub fn reclaim(&self, tag_word: usize) {
        if self.words.load(tag_word) >> F::TAG_SHIFT == TAG_RETIRED as u64 {
            self.words.store(tag_word, 0);
        }
    }

    /// The tag words of retired entries, e.g. left by an agent that stopped.
    pub fn retired(&self) -> Vec<usize> {
        (0..self.buckets())
            .flat_map(|b| (0..F::ENTRIES).map(move |i| (b, i)))
            .filter(|&(b, i)| F::tag_of(self.entry(b, i)) == TAG_RETIRED)
            .map(|(b, i)| self.tag_word(b, i))
            .collect()
    }

    /// Every network in the table with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (F::Net, u32)> + '_ {
        (0..self.buckets())
            .flat_map(move |b| (0..F::ENTRIES).filter_map(move |i| F::read(self.entry(b, i))))
            .map(|(net, tag_)| (net, tag_slot(tag_)))
    }

    /// How many entries each bucket has taken, fullest first: for tests and the status.
    pub fn fullest(&self) -> usize {
        (0..self.buckets())
            .map(|b| {
                (0..F::ENTRIES)
                    .filter(|&i| F::tag_of(self.entry(b, i)) != 0)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table<F: Family>(buckets: usize, key: u64) -> Table<F> {
        let words = Words::anonymous("test", buckets * F::ENTRIES * F::ENTRY_WORDS).unwrap();
        Table::new(words, key).unwrap()
    }

    fn v4(addr: u32, len: u8) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from_bits(addr), len)
            .unwrap()
            .trunc()
    }

    /// Networks whose first bucket is `bucket` under `key`, from `start` upward.
    fn first_in(table: &Table<V4>, bucket: u32, start: u32, count: usize) -> Vec<Ipv4Net> {
        (start..)
            .map(|a| v4(a, 32))
            .filter(|n| table.candidates(n).0 == bucket && table.candidates(n).1 != bucket)
            .take(count)
            .collect()
    }

    #[test]
    fn a_table_sized_for_half_load_takes_consecutive_addresses_and_whole_networks() {
        // 2^16 buckets of 8 entries hold 2^18 networks at half load.
        let t = table::<V4>(1 << 16, 0x005e_ed0f_7ab1_e5a5);
        for (i, a) in (0x6440_0000u32..0x6440_0000 + (1 << 18)).enumerate() {
            assert!(
                matches!(t.insert(&v4(a, 32), i as u32), Inserted::Placed { .. }),
                "address {} of a run of consecutive ones",
                i
            );
        }
        assert!(t.fullest() < 8, "no bucket filled: {}", t.fullest());
    }

    #[test]
    fn a_resident_only_ever_moves_from_its_first_bucket_to_its_second() {
        let t = table::<V4>(64, 7);
        let crowd = first_in(&t, 5, 0x0a00_0000, 9);
        for (i, n) in crowd[..8].iter().enumerate() {
            t.insert(n, i as u32);
        }
        // Bucket 5 is full of networks whose first bucket it is; the ninth makes one move.
        let before: Vec<_> = t.iter().collect();
        let inserted = t.insert(&crowd[8], 8);
        assert!(
            matches!(inserted, Inserted::Placed { .. }),
            "{inserted:?}: the new one goes to its second bucket or a resident moves"
        );
        for (net, slot) in before {
            assert_eq!(t.get(&net), Some(slot), "{net} is still found");
            let (first, second) = t.candidates(&net);
            let at_first = t.find_in(first, &net).is_some();
            let at_second = t.find_in(second, &net).is_some();
            assert!(at_first ^ at_second, "{net} is in exactly one bucket");
        }
    }

    #[test]
    fn when_no_resident_can_move_the_insert_says_full() {
        let t = table::<V4>(2, 1);
        let mut slot = 0;
        let mut full = false;
        for a in 0x0a00_0000u32.. {
            match t.insert(&v4(a, 32), slot) {
                Inserted::Full => {
                    full = true;
                    break;
                }
                _ => slot += 1,
            }
        }
        assert!(full);
        assert_eq!(slot as usize, t.entries(), "every entry was used first");
    }

    #[test]
    fn a_removed_ipv6_entry_is_retired_until_reclaimed() {
        let t = table::<V6>(4, 3);
        let n: Ipv6Net = "2001:db8::1/128".parse().unwrap();
        assert_eq!(t.insert(&n, 9), Inserted::Placed { moved: false });
        let (slot, retired) = t.remove(&n).unwrap();
        assert_eq!(slot, 9);
        let word = retired.expect("IPv6 entries retire");
        assert_eq!(t.get(&n), None, "a retired entry matches nothing");
        assert_eq!(t.iter().count(), 0);
        assert_eq!(t.retired(), [word]);
        // Until it is reclaimed nothing is written into it.
        let (b1, b2) = t.candidates(&n);
        let taken = |b: u32| {
            (0..ENTRIES6)
                .filter(|&i| V6::tag_of(t.entry(b, i)) != 0)
                .count()
        };
        assert_eq!(taken(b1) + if b1 == b2 { 0 } else { taken(b2) }, 1);
        t.reclaim(word);
        assert!(t.retired().is_empty());
    }

    #[test]
    fn an_ipv4_removal_empties_its_entry_at_once() {
        let t = table::<V4>(4, 3);
        let n = v4(0x0a00_0001, 32);
        t.insert(&n, 1);
        assert_eq!(t.remove(&n), Some((1, None)));
        assert!(t.retired().is_empty());
        assert_eq!(t.get(&n), None);
    }

    #[test]
    fn the_key_decides_where_networks_go() {
        let a = table::<V4>(1 << 10, 1);
        let b = table::<V4>(1 << 10, 2);
        let nets: Vec<Ipv4Net> = (0..64).map(|i| v4(0x0a00_0000 + i, 32)).collect();
        let same = nets
            .iter()
            .filter(|n| a.candidates(n) == b.candidates(n))
            .count();
        assert!(same < 4, "{same} of 64 networks land alike under two keys");
    }
}

/// The module's argument, checked by exhaustion: the writer's stores are recorded, and a
/// reader is run against every way its loads could fall between them.
#[cfg(test)]
mod interleavings {
    use std::cell::RefCell;

    use super::*;

    /// Memory that records every store.
    struct Recorded {
        cells: RefCell<Vec<u64>>,
        log: RefCell<Vec<(usize, u64)>>,
    }

    impl Recorded {
        fn new(words: usize) -> Self {
            Recorded {
                cells: RefCell::new(vec![0; words]),
                log: RefCell::new(Vec::new()),
            }
        }

        /// The memory now, and the stores made from now on are recorded afresh.
        fn mark(&self) -> Vec<u64> {
            self.log.borrow_mut().clear();
            self.cells.borrow().clone()
        }

        /// Every state from `start` through the recorded stores: `states[k]` is the memory
        /// after the first `k` of them.
        fn states(&self, start: Vec<u64>) -> Vec<Vec<u64>> {
            let mut states = vec![start];
            for &(i, v) in self.log.borrow().iter() {
                let mut next = states.last().unwrap().clone();
                next[i] = v;
                states.push(next);
            }
            states
        }
    }

    impl Cells for Recorded {
        fn count(&self) -> usize {
            self.cells.borrow().len()
        }

        fn load(&self, i: usize) -> u64 {
            self.cells.borrow()[i]
        }

        fn store(&self, i: usize, value: u64) {
            self.cells.borrow_mut()[i] = value;
            self.log.borrow_mut().push((i, value));
        }
    }

    /// The program's scan of one IPv4 bucket in `state` (its `scan4`).
    fn scan4(state: &[u64], bucket: u32, net: &Ipv4Net) -> Option<u32> {
        let key = net.addr().to_bits() as u64 | (net.prefix_len() as u64 + 1) << 32;
        (0..ENTRIES4)
            .map(|i| state[bucket as usize * ENTRIES4 + i])
            .find(|w| w & 0x0000_00ff_ffff_ffff == key)
            .map(|w| tag_slot((w >> 32) as u32))
    }

    #[test]
    fn a_move_never_hides_a_resident_from_a_lookup_whatever_falls_between_its_two_buckets() {
        const BUCKETS: usize = 16;
        let t: Table<V4, Recorded> =
            Table::with_cells(Recorded::new(BUCKETS * ENTRIES4), 0x1234).unwrap();
        let mut held: Vec<(Ipv4Net, u32)> = Vec::new();
        let mut checked_moves = 0;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        // Churn near full: most inserts then find both buckets full, and some make a resident
        // move.
        for (slot, addr) in (0x0a00_0000u32..0x0a00_0000 + 4000).enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if held.len() > BUCKETS * ENTRIES4 * 7 / 8 {
                let (gone, _) = held.swap_remove(x as usize % held.len());
                t.remove(&gone).unwrap();
            }
            let net = Ipv4Net::new(Ipv4Addr::from_bits(addr), 32).unwrap();
            let before = t.words.mark();
            let inserted = t.insert(&net, slot as u32);
            if inserted == Inserted::Full {
                continue;
            }
            let states = t.words.states(before);
            if inserted == (Inserted::Placed { moved: true }) {
                checked_moves += 1;
                for (resident, slot) in &held {
                    let (b1, b2) = t.candidates(resident);
                    for i in 0..states.len() {
                        for later in &states[i..] {
                            let found = scan4(&states[i], b1, resident)
                                .or_else(|| scan4(later, b2, resident));
                            assert_eq!(found, Some(*slot), "{resident} missed");
                        }
                    }
                }
            }
            held.push((net, slot as u32));
        }
        assert!(
            checked_moves >= 20,
            "only {checked_moves} moves were checked"
        );
    }

    /// What a reader that loads one IPv6 entry's words in `order` (indexes into the entry)
    /// at the states `at` makes of it: the slot it would report for `net`.
    fn read6(states: &[Vec<u64>], at: [usize; 3], order: [usize; 3], net: &Ipv6Net) -> Option<u32> {
        let mut words = [0u64; 3];
        for (k, &word) in order.iter().enumerate() {
            words[word] = states[at[k]][word];
        }
        let (hi, lo) = split6(net.addr());
        let tag_ = words[2] as u32;
        (tag_ & TAG_LEN_BITS == net.prefix_len() as u32 + 1 && words[0] == hi && words[1] == lo)
            .then(|| tag_slot(tag_))
    }

    /// Every reader of the one entry of a one-bucket table while it goes from `x` to `y`:
    /// whether any reports a slot that its network never had. A reader may not span the
    /// grace period (`gap`, the number of stores before it) when `grace` holds.
    fn torn_reads(order: [usize; 3], grace: bool) -> usize {
        let t: Table<V6, Recorded> = Table::with_cells(Recorded::new(ENTRIES6 * 3), 9).unwrap();
        let x: Ipv6Net = "2001:db8::1/128".parse().unwrap();
        let y: Ipv6Net = "2001:db8::2/128".parse().unwrap();
        assert_eq!(t.insert(&x, 1), Inserted::Placed { moved: false });
        let start = t.words.mark();
        let (_, retired) = t.remove(&x).unwrap();
        let gap = t.words.log.borrow().len();
        t.reclaim(retired.unwrap());
        assert_eq!(t.insert(&y, 2), Inserted::Placed { moved: false });
        let states = t.words.states(start);
        let mut torn = 0;
        let n = states.len();
        for a in 0..n {
            for b in a..n {
                for c in b..n {
                    if grace && a < gap + 1 && c > gap {
                        continue;
                    }
                    for (net, slot) in [(x, 1), (y, 2)] {
                        if read6(&states, [a, b, c], order, &net).is_some_and(|s| s != slot) {
                            torn += 1;
                        }
                    }
                }
            }
        }
        torn
    }

    #[test]
    fn a_reused_ipv6_entry_is_never_read_as_the_old_address_with_the_new_tag() {
        // As the program reads: the tag, then the address; with the grace period.
        assert_eq!(torn_reads([2, 0, 1], true), 0);
        // Both premises matter: the address first, or no grace period, and some reader pairs
        // the old address with the new slot.
        assert!(torn_reads([0, 1, 2], true) > 0);
        assert!(torn_reads([2, 0, 1], false) > 0);
    }
}
