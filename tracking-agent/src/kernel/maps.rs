//! The writer of the program's maps: bans, allowlist, filters and configuration.
//!
//! The tables are the agent's only copy of what the kernel enforces: a restarted agent reads
//! them back from the pinned maps, hit counters included, checks the derived state against
//! them, and nothing else needs to survive.
//!
//! Every change is all or nothing. [`Maps::apply`] first checks that the bans left after it fit
//! the configured capacity ([`Tables::admit`], the same check the engine makes before the
//! store commits) and only then writes; placement itself cannot fail, because a network whose
//! buckets are full goes to the overflow map. The allowlist is planned on a copy of its tables
//! before anything is written.
//!
//! Derived state (the source filters and the prefix-length masks) must cover every ban at every
//! instant. Adding a ban only sets bits, after its entry is written; removing bans clears their
//! entries first and then clears only the bits no remaining ban needs. A word rewritten that
//! way still has every bit the untouched bans need, so no unchanged ban is ever unenforced
//! during an update. The entries themselves are written as `super::table` explains.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use ipnet::{IpNet, Ipv4Net};
use tracking_common::{
    hash::filter_pos4,
    layout::{
        FILTER_WORDS, FILTER4_EXACT, FILTER4_PREFIX, FILTER4_WORDS, FLAG_LOG, FLAG_MONITOR,
        FLAG_V4_OVERFLOW, FLAG_V6_ALL, FLAG_V6_OVERFLOW, SLOT_DEADLINE, V4_LENS_WORDS, config,
        len_bit4, len_bit6, tag_len, tag_slot,
    },
};

use super::{
    KernelError,
    allow_index::AllowIndex,
    clock::Clock,
    derived::{Gathered, cover4, cover6, publish},
    grace::{Reclaim, Retired},
    mmap::Words,
    near4::Near4,
    overflow::Overflow,
    table::{Family, Inserted, Probe, Table, V4, V6},
    tables::Tables,
};
use crate::ban::Effective;

/// What an [`Maps::apply`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    /// Residents moved from their first bucket to their second to make room.
    pub moved: usize,
    /// Bans placed in an overflow map.
    pub overflowed: usize,
    /// Words of derived state that did not cover the bans held and were repaired.
    pub repaired: usize,
}

/// The most allowlisted networks of each family. The allow tables have room for twice as many
/// (an allowlist replaced by another is briefly both), at most half full.
pub const MAX_ALLOWS: usize = 1024;

/// Batches adding more bans than this gather their derived bits before publishing them.
const BULK: usize = 4096;
/// Removals touching more /24s than this have their IPv4 bits recomputed from the table.
const UNCOVER_AT_MOST: u64 = 1 << 16;
/// How many effects ahead a batch prefetches the buckets it will touch.
const PREFETCH_AHEAD: usize = 8;

/// Mappings of every array map, in the order [`Maps::new`] takes them.
pub struct Mappings {
    pub config: Words,
    pub v4_filter: Words,
    pub v4_lens: Words,
    pub v6_filter: Words,
    pub v4_bans: Words,
    pub v6_bans: Words,
    pub slots: Words,
    pub allow4: Words,
    pub allow6: Words,
}

/// The writer of the maps: [`Tables`] plus the slot allocator, what waits to be reclaimed, and
/// the indexes that make removals cheap. Reads go through `Deref` to the tables.
pub struct Maps {
    tables: Arc<Tables>,
    /// Slots free for a new ban now, lowest on top.
    free: Vec<u32>,
    /// Slots and IPv6 entries freed but perhaps still read by a running program.
    reclaim: Reclaim,
    /// The allowlist, indexed to tell which bans it overlaps.
    allowed: AllowIndex,
    /// The IPv4 bans, indexed to tell which derived bits a removal leaves needed.
    near4: Near4,
}

impl std::ops::Deref for Maps {
    type Target = Tables;

    fn deref(&self) -> &Tables {
        &self.tables
    }
}

/// Where [`Maps::place`] put a ban.
enum Placed {
    Table { moved: bool },
    Overflow,
}

impl Maps {
    /// Takes over the mappings and the overflow maps of tables hashed with `key`: reads back
    /// the bans and slots in use, reclaims what an earlier agent retired, and repairs derived
    /// state that does not cover the bans held (an agent killed in the middle of a batch).
    pub fn new(
        m: Mappings,
        overflow: Overflow,
        key: u64,
        max_v4: usize,
        max_v6: usize,
    ) -> Result<Self, KernelError> {
        let tables = Tables {
            config: m.config,
            v4_filter: m.v4_filter,
            v4_lens: m.v4_lens,
            v6_filter: m.v6_filter,
            v4: Table::new(m.v4_bans, key)?,
            v6: Table::new(m.v6_bans, key)?,
            slots: m.slots,
            allow4: Table::new(m.allow4, key)?,
            allow6: Table::new(m.allow6, key)?,
            overflow,
            max_v4,
            max_v6,
            held_v4: AtomicUsize::new(0),
            held_v6: AtomicUsize::new(0),
            overflow_v4: AtomicUsize::new(0),
            overflow_v6: AtomicUsize::new(0),
            clock: Clock::new(),
        };
        let reclaim =
            Reclaim::new().map_err(|e| KernelError::Grace(format!("cannot start: {e}")))?;
        let overflowed = tables.overflow.entries()?;
        let slot_count = tables.slots.len() / 2;
        let mut used = vec![false; slot_count];
        let mut mark = |slot: u32| {
            if let Some(u) = used.get_mut(slot as usize) {
                *u = true;
            }
        };
        let mut exact_and_prefixes = Vec::new();
        let mut held_v4 = 0;
        for w in tables.v4.words() {
            let word = w.load(Ordering::Relaxed);
            let t = (word >> 32) as u32;
            if t != 0 {
                mark(tag_slot(t));
                exact_and_prefixes.push((word as u32, tag_len(t)));
                held_v4 += 1;
            }
        }
        let mut held_v6 = 0;
        for (_, slot) in tables.v6.iter() {
            mark(slot);
            held_v6 += 1;
        }
        let (mut overflow_v4, mut overflow_v6) = (0, 0);
        for (net, slot) in &overflowed {
            mark(*slot);
            match net {
                IpNet::V4(n) => {
                    overflow_v4 += 1;
                    exact_and_prefixes.push((n.addr().to_bits(), n.prefix_len()));
                }
                IpNet::V6(_) => overflow_v6 += 1,
            }
        }
        tables
            .held_v4
            .store(held_v4 + overflow_v4, Ordering::Release);
        tables
            .held_v6
            .store(held_v6 + overflow_v6, Ordering::Release);
        tables.overflow_v4.store(overflow_v4, Ordering::Release);
        tables.overflow_v6.store(overflow_v6, Ordering::Release);
        let free = (0..slot_count as u32)
            .rev()
            .filter(|&s| !used[s as usize])
            .collect();
        // Entries an agent retired before it stopped: a grace period has surely passed since,
        // but waiting for one costs milliseconds and makes it certain.
        let retired_bans = tables.v6.retired();
        let retired_allows = tables.allow6.retired();
        if !retired_bans.is_empty() || !retired_allows.is_empty() {
            reclaim
                .wait_now()
                .map_err(|e| KernelError::Grace(e.to_string()))?;
            retired_bans.iter().for_each(|w| tables.v6.reclaim(*w));
            retired_allows
                .iter()
                .for_each(|w| tables.allow6.reclaim(*w));
        }
        let allowed = AllowIndex::new(&tables.allowlist());
        let maps = Maps {
            tables: Arc::new(tables),
            free,
            reclaim,
            allowed,
            near4: Near4::new(exact_and_prefixes.into_iter()),
        };
        maps.set_flag(FLAG_V4_OVERFLOW, overflow_v4 > 0);
        maps.set_flag(FLAG_V6_OVERFLOW, overflow_v6 > 0);
        let repaired = maps.rebuild(true, true);
        if repaired > 0 {
            tracing::warn!(
                "{repaired} words of the filters did not match the bans held (an agent stopped \
                 in the middle of a change?); repaired"
            );
        }
        Ok(maps)
    }

    /// The read side, for lookups that must not wait for the writer.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.clone()
    }

    /// Puts back what no running program can still be reading.
    fn recycle(&mut self, items: Vec<Retired>) {
        for item in items {
            match item {
                Retired::Slot(slot) => self.free.push(slot),
                Retired::Ban6(word) => self.tables.v6.reclaim(word),
                Retired::Allow6(word) => self.tables.allow6.reclaim(word),
            }
        }
    }

    /// Waits for a grace period and puts back everything freed until now.
    fn reclaim_all(&mut self) -> Result<(), KernelError> {
        let items = self
            .reclaim
            .wait_all()
            .map_err(|e| KernelError::Grace(e.to_string()))?;
        self.recycle(items);
        Ok(())
    }

    /// Applies effects in one batch, all or nothing: new bans are enforced, removed ones stop,
    /// and bans not named are never unenforced meanwhile. A batch whose bans would not fit the
    /// capacity changes nothing. One effect a network: removals go first.
    pub fn apply(&mut self, effects: &[(IpNet, Effective)]) -> Result<Applied, KernelError> {
        let ready = self.reclaim.collect();
        self.recycle(ready);
        self.tables
            .admit(effects)
            .map_err(KernelError::OverCapacity)?;
        let adds = effects
            .iter()
            .filter(|(_, e)| *e != Effective::Unbanned)
            .count();
        if self.free.len() < adds && self.reclaim.pending() {
            self.reclaim_all()?;
        }
        let mut applied = Applied::default();
        let removed_v4 = self.remove_bans(effects, &mut applied)?;
        // Derived bits of the additions: set one by one for a small batch; for a big one,
        // gathered here and published once, a word at a time (the new bans start to match
        // when their words land, the others never stop). Published whatever happens below.
        let mut bulk = (adds > BULK).then(Gathered::new);
        let mut added_v4 = Vec::new();
        let added = self.add_bans(effects, &mut applied, &mut bulk, &mut added_v4);
        if let Some(gathered) = bulk {
            self.publish_gathered(gathered);
        }
        self.near4.update(added_v4, &removed_v4);
        // Bits of a few narrow bans are cleared one by one; wide ones touch so many /24s that
        // recomputing every word from the table is cheaper.
        let slash24s: u64 = removed_v4
            .iter()
            .map(|n| 1u64 << 24u8.saturating_sub(n.prefix_len()))
            .sum();
        if slash24s > UNCOVER_AT_MOST {
            self.rebuild(true, false);
        } else {
            self.uncover4(&removed_v4);
        }
        if applied.removed > removed_v4.len() {
            self.rebuild(false, true);
        }
        self.reclaim.end_batch();
        added.map(|()| applied)
    }

    /// The removals of a batch, first: a batch that swaps bans never needs more than the
    /// capacity. Returns the IPv4 networks removed.
    fn remove_bans(
        &mut self,
        effects: &[(IpNet, Effective)],
        applied: &mut Applied,
    ) -> Result<Vec<Ipv4Net>, KernelError> {
        let mut removed_v4 = Vec::new();
        for (i, (net, effect)) in effects.iter().enumerate() {
            if let Some((ahead, Effective::Unbanned)) = effects.get(i + PREFETCH_AHEAD) {
                self.prefetch(ahead);
            }
            if *effect != Effective::Unbanned {
                continue;
            }
            let in_table = match net {
                IpNet::V4(n) => self.tables.v4.remove(n).map(|(slot, _)| slot),
                IpNet::V6(n) => self.tables.v6.remove(n).map(|(slot, retired)| {
                    self.reclaim
                        .retire(Retired::Ban6(retired.expect("IPv6 entries retire")));
                    slot
                }),
            };
            let slot = match in_table {
                Some(slot) => Some(slot),
                None if self.overflowing(net) => {
                    let slot = self.tables.overflow.remove(net)?;
                    if slot.is_some() {
                        self.overflow_count(net).fetch_sub(1, Ordering::AcqRel);
                    }
                    slot
                }
                None => None,
            };
            let Some(slot) = slot else { continue };
            self.reclaim.retire(Retired::Slot(slot));
            self.held(net).fetch_sub(1, Ordering::AcqRel);
            applied.removed += 1;
            if let IpNet::V4(n) = net {
                removed_v4.push(*n);
            }
        }
        // Readers stop looking in an overflow map only once it is empty.
        if self.tables.overflow_v4.load(Ordering::Acquire) == 0 {
            self.set_flag(FLAG_V4_OVERFLOW, false);
        }
        if self.tables.overflow_v6.load(Ordering::Acquire) == 0 {
            self.set_flag(FLAG_V6_OVERFLOW, false);
        }
        Ok(removed_v4)
    }

    /// The additions and updates of a batch, after its removals.
    fn add_bans(
        &mut self,
        effects: &[(IpNet, Effective)],
        applied: &mut Applied,
        bulk: &mut Option<Gathered>,
        added_v4: &mut Vec<Ipv4Net>,
    ) -> Result<(), KernelError> {
        let now = self.tables.clock.snapshot();
        for (i, (net, effect)) in effects.iter().enumerate() {
            if let Some((ahead, _)) = effects.get(i + PREFETCH_AHEAD) {
                self.prefetch(ahead);
            }
            let Effective::Banned { expires } = *effect else {
                continue;
            };
            let control = now.to_mono(expires) | self.allowed.flag(net);
            let probe = match net {
                IpNet::V4(n) => self.tables.v4.probe(n),
                IpNet::V6(n) => self.tables.v6.probe(n),
            };
            let existing = match probe.existing {
                Some(slot) => Some(slot),
                None if self.overflowing(net) => self.tables.overflow.get(net)?,
                None => None,
            };
            if let Some(slot) = existing {
                let word = &self.tables.slots[slot as usize * 2];
                if !now.same_deadline(word.load(Ordering::Acquire) & SLOT_DEADLINE, expires) {
                    word.store(control, Ordering::Release);
                    applied.updated += 1;
                }
                continue;
            }
            let slot = self.free.pop().ok_or_else(|| {
                KernelError::Layout("no free slot although the change was admitted".into())
            })?;
            // State before entry: the program may match the entry as soon as it is written.
            self.tables.slots[slot as usize * 2].store(control, Ordering::Release);
            self.tables.slots[slot as usize * 2 + 1].store(0, Ordering::Release);
            match self.place(net, slot, &probe) {
                Ok(Placed::Table { moved }) => applied.moved += usize::from(moved),
                Ok(Placed::Overflow) => applied.overflowed += 1,
                Err(e) => {
                    // Nothing refers to the slot: it is free at once.
                    self.free.push(slot);
                    return Err(e);
                }
            }
            self.held(net).fetch_add(1, Ordering::AcqRel);
            if let IpNet::V4(n) = net {
                added_v4.push(*n);
            }
            match bulk {
                Some(gathered) => gathered.cover(net),
                None => self.cover(net),
            }
            applied.added += 1;
        }
        Ok(())
    }

    /// Puts a new ban in its table, or in the overflow map when its buckets are full.
    fn place(&mut self, net: &IpNet, slot: u32, probe: &Probe) -> Result<Placed, KernelError> {
        match net {
            IpNet::V4(n) => {
                if let Inserted::Placed { moved } = self.tables.v4.insert_probed(n, slot, probe) {
                    return Ok(Placed::Table { moved });
                }
            }
            // A retired entry in the way becomes free after a grace period; the writer does not
            // wait for one here (milliseconds for every such insert) and the ban goes to the
            // overflow map instead. At the tables' half load this does not happen.
            IpNet::V6(n) => {
                if let Inserted::Placed { moved } = self.tables.v6.insert_probed(n, slot, probe) {
                    return Ok(Placed::Table { moved });
                }
            }
        }
        let (flag, count) = match net {
            IpNet::V4(_) => (FLAG_V4_OVERFLOW, &self.tables.overflow_v4),
            IpNet::V6(_) => (FLAG_V6_OVERFLOW, &self.tables.overflow_v6),
        };
        // The flag before the entry: a reader that finds the entry's bits set must look there.
        self.set_flag(flag, true);
        self.tables.overflow.insert(net, slot)?;
        count.fetch_add(1, Ordering::AcqRel);
        Ok(Placed::Overflow)
    }

    fn prefetch(&self, net: &IpNet) {
        match net {
            IpNet::V4(n) => self.tables.v4.prefetch(n),
            IpNet::V6(n) => self.tables.v6.prefetch(n),
        }
    }

    fn held(&self, net: &IpNet) -> &AtomicUsize {
        match net {
            IpNet::V4(_) => &self.tables.held_v4,
            IpNet::V6(_) => &self.tables.held_v6,
        }
    }

    fn overflow_count(&self, net: &IpNet) -> &AtomicUsize {
        match net {
            IpNet::V4(_) => &self.tables.overflow_v4,
            IpNet::V6(_) => &self.tables.overflow_v6,
        }
    }

    fn overflowing(&self, net: &IpNet) -> bool {
        self.overflow_count(net).load(Ordering::Acquire) > 0
    }

    /// Sets the derived bits a newly added ban needs.
    fn cover(&self, net: &IpNet) {
        let t = &self.tables;
        match net {
            IpNet::V4(n) => {
                cover4(
                    n.addr().to_bits(),
                    n.prefix_len(),
                    &mut |w, bits| {
                        t.v4_filter[w].fetch_or(bits, Ordering::Release);
                    },
                    &mut |w, bits| {
                        t.v4_lens[w].fetch_or(bits, Ordering::Release);
                    },
                );
            }
            IpNet::V6(n) => {
                let mut all = false;
                cover6(
                    n,
                    &mut |w, bits| {
                        t.v6_filter[w].fetch_or(bits, Ordering::Release);
                    },
                    &mut all,
                );
                let (w, bit) = len_bit6(n.prefix_len());
                t.config[(config::V6_LENS as usize) + w].fetch_or(bit, Ordering::Release);
                if all {
                    self.set_flag(FLAG_V6_ALL, true);
                }
            }
        }
    }

    /// Publishes the bits a big batch gathered.
    fn publish_gathered(&self, gathered: Gathered) {
        for (shared, bits) in [
            (&self.tables.v4_filter, &gathered.v4_filter),
            (&self.tables.v4_lens, &gathered.v4_lens),
        ] {
            for (w, b) in shared.iter().zip(bits) {
                if *b != 0 && w.load(Ordering::Relaxed) & b != *b {
                    w.fetch_or(*b, Ordering::Release);
                }
            }
        }
        for net in &gathered.v6 {
            self.cover(net);
        }
    }

    /// Clears the filter and length bits that only the `removed` bans needed.
    fn uncover4(&self, removed: &[Ipv4Net]) {
        let mut slash24s = HashSet::new();
        let mut lens = HashSet::new();
        for n in removed {
            let addr = n.addr().to_bits();
            let len = n.prefix_len();
            let first = addr >> 8;
            for x in first..first + (1u32 << 24u8.saturating_sub(len)) {
                slash24s.insert((x, len == 32));
            }
            let first16 = addr >> 16;
            for w in first16..first16 + (1u32 << 16u8.saturating_sub(len)) {
                lens.insert((w, len));
            }
        }
        for (x, exact) in slash24s {
            let base = x << 8;
            let (kind, still) = if exact {
                (FILTER4_EXACT, self.near4.exact_in(base, base | 0xff))
            } else {
                (FILTER4_PREFIX, self.near4.prefix_overlaps(base, 24))
            };
            if !still {
                let (word, shift) = filter_pos4(base);
                self.tables.v4_filter[word as usize].fetch_and(!(kind << shift), Ordering::Release);
            }
        }
        for (w, len) in lens {
            if !self.near4.length_in_slash16(w << 16, len) {
                self.tables.v4_lens[w as usize].fetch_and(!len_bit4(len), Ordering::Release);
            }
        }
    }

    /// Recomputes filters and length masks from the tables and publishes the words that
    /// differ; returns how many did.
    pub fn rebuild_derived(&self) -> usize {
        self.rebuild(true, true)
    }

    /// [`Maps::rebuild_derived`] for the families named. The tables are scanned as raw words.
    fn rebuild(&self, v4: bool, v6: bool) -> usize {
        let t = &self.tables;
        let overflowed = if t.overflow_v4.load(Ordering::Acquire) > 0
            || t.overflow_v6.load(Ordering::Acquire) > 0
        {
            t.overflow.entries().unwrap_or_else(|e| {
                tracing::error!("reading the overflow maps: {e}");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let mut changed = 0;
        if v4 {
            let mut f4 = vec![0u64; FILTER4_WORDS as usize];
            let mut l4 = vec![0u64; V4_LENS_WORDS as usize];
            let mut cover = |addr: u32, len: u8| {
                cover4(addr, len, &mut |w, bits| f4[w] |= bits, &mut |w, bits| {
                    l4[w] |= bits
                })
            };
            for w in t.v4.words() {
                let word = w.load(Ordering::Relaxed);
                let tag = (word >> 32) as u32;
                if tag != 0 {
                    cover(word as u32, tag_len(tag));
                }
            }
            for (net, _) in &overflowed {
                if let IpNet::V4(n) = net {
                    cover(n.addr().to_bits(), n.prefix_len());
                }
            }
            changed += publish(&t.v4_filter, &f4) + publish(&t.v4_lens, &l4);
        }
        if v6 {
            let mut f6 = vec![0u64; FILTER_WORDS as usize];
            let mut l6 = [0u64; 3];
            let mut all6 = false;
            let overflowed6 = overflowed.iter().filter_map(|(net, _)| match net {
                IpNet::V6(n) => Some(*n),
                IpNet::V4(_) => None,
            });
            for n in t.v6.iter().map(|(n, _)| n).chain(overflowed6) {
                cover6(&n, &mut |w, bits| f6[w] |= bits, &mut all6);
                let (w, bit) = len_bit6(n.prefix_len());
                l6[w] |= bit;
            }
            // Switch the filter off before publishing a filter that no longer covers a wide
            // ban, and on only after.
            if all6 {
                self.set_flag(FLAG_V6_ALL, true);
            }
            changed += publish(&t.v6_filter, &f6);
            let lens = &t.config[config::V6_LENS as usize..config::V6_LENS as usize + 3];
            changed += publish(lens, &l6);
            if !all6 {
                self.set_flag(FLAG_V6_ALL, false);
            }
        }
        changed
    }

    /// Checks that the allowlist can be made exactly `nets` without changing anything: at most
    /// [`MAX_ALLOWS`] of each family, and every one placed in a copy of the allow tables.
    pub fn check_allowlist(&mut self, nets: &[IpNet]) -> Result<(), KernelError> {
        for (family, count) in [
            ("IPv4", nets.iter().filter(|n| n.addr().is_ipv4()).count()),
            ("IPv6", nets.iter().filter(|n| n.addr().is_ipv6()).count()),
        ] {
            if count > MAX_ALLOWS {
                return Err(KernelError::AllowlistFull {
                    family,
                    count,
                    max: MAX_ALLOWS,
                });
            }
        }
        if self.reclaim.pending() {
            self.reclaim_all()?;
        }
        // The real change adds before it removes, so the copy must hold both lists at once.
        let (add, _) = self.allowlist_delta(nets);
        let key = self.allow_key();
        let copy4 = Table::<V4>::new(self.tables.allow4.words_copy()?, key)?;
        let copy6 = Table::<V6>::new(self.tables.allow6.words_copy()?, key)?;
        for net in &add {
            let placed = match net {
                IpNet::V4(n) => place_in_copy(&copy4, n),
                IpNet::V6(n) => place_in_copy(&copy6, n),
            };
            if !placed {
                return Err(KernelError::AllowlistFull {
                    family: if net.addr().is_ipv4() { "IPv4" } else { "IPv6" },
                    count: nets.len(),
                    max: MAX_ALLOWS,
                });
            }
        }
        Ok(())
    }

    /// What to add to and remove from the allow tables to make them `nets`.
    fn allowlist_delta(&self, nets: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
        let want: HashSet<IpNet> = nets.iter().copied().collect();
        let have: HashSet<IpNet> = self.tables.allowlist().into_iter().collect();
        (
            want.difference(&have).copied().collect(),
            have.difference(&want).copied().collect(),
        )
    }

    fn allow_key(&self) -> u64 {
        self.tables.config[config::HASH_KEY as usize].load(Ordering::Acquire)
    }

    /// Makes the allowlist exactly `nets`, all or nothing (see [`Maps::check_allowlist`]).
    pub fn set_allowlist(&mut self, nets: &[IpNet]) -> Result<(), KernelError> {
        let (add, remove) = self.allowlist_delta(nets);
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        self.check_allowlist(nets)?;
        // Additions first: an address that moves from one allowed network to another stays
        // allowed throughout.
        for net in &add {
            let placed = match net {
                IpNet::V4(n) => matches!(self.tables.allow4.insert(n, 0), Inserted::Placed { .. }),
                IpNet::V6(n) => matches!(self.tables.allow6.insert(n, 0), Inserted::Placed { .. }),
            };
            if !placed {
                // The plan on a copy said it fits; the tables changed behind the writer.
                return Err(KernelError::Layout(format!(
                    "the allowlist table could not take {net} although a copy could"
                )));
            }
            let (word, bit) = match net {
                IpNet::V4(n) => (config::ALLOW4_LENS as usize, len_bit4(n.prefix_len())),
                IpNet::V6(n) => {
                    let (w, bit) = len_bit6(n.prefix_len());
                    (config::ALLOW6_LENS as usize + w, bit)
                }
            };
            self.tables.config[word].fetch_or(bit, Ordering::Release);
        }
        for net in &remove {
            match net {
                IpNet::V4(n) => {
                    self.tables.allow4.remove(n);
                }
                IpNet::V6(n) => {
                    if let Some((_, Some(word))) = self.tables.allow6.remove(n) {
                        self.reclaim.retire(Retired::Allow6(word));
                    }
                }
            }
        }
        self.reclaim.end_batch();
        let mut l4 = 0u64;
        let mut l6 = [0u64; 3];
        for (n, _) in self.tables.allow4.iter() {
            l4 |= len_bit4(n.prefix_len());
        }
        for (n, _) in self.tables.allow6.iter() {
            let (w, bit) = len_bit6(n.prefix_len());
            l6[w] |= bit;
        }
        self.tables.config[config::ALLOW4_LENS as usize].store(l4, Ordering::Release);
        let words =
            &self.tables.config[config::ALLOW6_LENS as usize..config::ALLOW6_LENS as usize + 3];
        publish(words, &l6);
        // Flag the bans the allowlist now overlaps, and unflag the others. Only a ban that
        // overlaps a network added or removed can change; those are looked up one by one, so
        // that an allowlist change costs the same with a million bans held as with none, unless
        // a wide network has more candidates than a scan of every ban would read.
        self.allowed = AllowIndex::new(nets);
        let changed: Vec<IpNet> = add.iter().chain(&remove).copied().collect();
        let (v4, v6) = self.tables.counts();
        match overlapping(&changed, (v4 + v6).max(SCAN_AT_LEAST)) {
            Some(candidates) => {
                for net in candidates {
                    if let Some(slot) = self.tables.slot_of(&net) {
                        self.flag_allowed(&net, slot);
                    }
                }
            }
            None => {
                for (net, ban) in self.tables.bans() {
                    self.flag_allowed(&net, ban.slot);
                }
            }
        }
        Ok(())
    }

    /// Sets or clears [`SLOT_CHECK_ALLOW`] on the ban `net` in `slot`, as the allowlist says.
    fn flag_allowed(&self, net: &IpNet, slot: u32) {
        let word = &self.tables.slots[slot as usize * 2];
        let control = word.load(Ordering::Acquire);
        let wanted = (control & SLOT_DEADLINE) | self.allowed.flag(net);
        if control != wanted {
            word.store(wanted, Ordering::Release);
        }
    }

    /// Turns monitor mode (count matches, drop nothing) on or off.
    pub fn set_monitor(&self, on: bool) {
        self.set_flag(FLAG_MONITOR, on);
    }

    /// Turns logging of every match through aya-log on or off.
    pub fn set_log_matches(&self, on: bool) {
        self.set_flag(FLAG_LOG, on);
    }

    fn set_flag(&self, flag: u64, on: bool) {
        let word = &self.tables.config[config::FLAGS as usize];
        if on {
            word.fetch_or(flag, Ordering::Release);
        } else {
            word.fetch_and(!flag, Ordering::Release);
        }
    }
}

/// Lookups below which a scan of every ban is not worth it: a scan reads the whole tables,
/// whatever number of bans they hold.
const SCAN_AT_LEAST: usize = 1 << 16;

/// Every network a ban overlapping one of `changed` could be: the networks containing it (one
/// a prefix length) and the networks inside it. `None` when there are more than `limit`.
fn overlapping(changed: &[IpNet], limit: usize) -> Option<Vec<IpNet>> {
    let mut out = Vec::new();
    for net in changed {
        let (len, max) = (net.prefix_len(), net.max_prefix_len());
        // 2 + 4 + ... + 2^(max - len) networks inside, and len + 1 containing it.
        let inside = 1usize
            .checked_shl(u32::from(max - len) + 1)
            .filter(|&n| n != 0)?
            - 2;
        if out.len() + inside + usize::from(len) + 1 > limit {
            return None;
        }
        for shorter in 0..=len {
            out.push(
                IpNet::new(net.addr(), shorter)
                    .expect("a shorter length")
                    .trunc(),
            );
        }
        for longer in len + 1..=max {
            out.extend(net.subnets(longer).expect("a longer length"));
        }
    }
    Some(out)
}

/// Places `net` in a private copy of an allow table, as the real insert would.
fn place_in_copy<F: Family>(copy: &Table<F>, net: &F::Net) -> bool {
    matches!(copy.insert(net, 0), Inserted::Placed { .. })
}
