//! The program's maps as the agent keeps them: bans, allowlist, filters and configuration.
//!
//! The tables are the agent's only copy of what the kernel enforces: a restarted agent reads
//! them back from the pinned maps, hit counters included, and nothing else needs to survive.
//!
//! Derived state (the source filters and the prefix-length masks) must cover every ban at every
//! instant. Adding a ban only sets bits, after its entry is written; removing bans clears their
//! entries first and then rebuilds the derived words from the tables, publishing only words that
//! changed. A word rewritten that way still has every bit the untouched bans need, so no
//! unchanged ban is ever unenforced during an update.

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracking_common::{
    hash::{filter_bit6, filter_pos4},
    layout::{
        FILTER_WORDS, FILTER4_EXACT, FILTER4_PREFIX, FILTER4_WORDS, FILTER6_MIN_ENUMERATED,
        FILTER6_PREFIX, FLAG_LOG, FLAG_MONITOR, FLAG_V6_ALL, SLOT_CHECK_ALLOW, SLOT_DEADLINE,
        V4_LENS_WORDS, config, len_bit4, len_bit6, tag_len, tag_slot,
    },
};

use super::{
    KernelError,
    clock::{Clock, Snapshot},
    mmap::Words,
    table::{Table, V4, V6, split6},
};
use crate::{ban::Effective, time::Timestamp};

/// A ban as the kernel holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBan {
    /// Index of its state in `SLOTS`.
    pub slot: u32,
    /// When the program stops honouring it (`None`: never).
    pub expires: Option<Timestamp>,
    /// Packets it matched.
    pub hits: u64,
}

/// What an [`Maps::apply`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
}

/// Mapped views of every table, filter and configuration map: the read side, shared by the
/// writer ([`Maps`]) and lookups that must not wait for it (the visit hook's `banned`).
pub struct Tables {
    pub(super) config: Words,
    v4_filter: Words,
    v4_lens: Words,
    v6_filter: Words,
    v4: Table<V4>,
    v6: Table<V6>,
    slots: Words,
    allow4: Table<V4>,
    allow6: Table<V6>,
    /// Capacity of each family, as configured; the tables are sized for it at half load.
    max_v4: usize,
    max_v6: usize,
    clock: Clock,
}

/// The writer of the maps: [`Tables`] plus the slot allocator and the allowlist index. Reads
/// go through `Deref` to the tables.
pub struct Maps {
    tables: Arc<Tables>,
    /// Free slots, lowest on top.
    free: Vec<u32>,
    /// The allowlist, indexed to tell which bans it overlaps.
    allowed: AllowIndex,
    /// Bans held of each family.
    count_v4: usize,
    count_v6: usize,
    /// The IPv4 bans again, arranged to answer "is anything else still near here?" when
    /// bans go: exact bans as sorted addresses, shorter ones ordered by address. Removing a
    /// ban then clears just the filter and length bits nothing else needs, instead of
    /// rebuilding them from a scan of the whole table.
    exact4: Vec<u32>,
    prefix4: BTreeSet<(u32, u8)>,
}

/// Batches adding more bans than this gather their derived bits before publishing them.
const BULK: usize = 4096;
/// How many effects ahead a batch prefetches the buckets it will touch.
const PREFETCH_AHEAD: usize = 8;

impl std::ops::Deref for Maps {
    type Target = Tables;

    fn deref(&self) -> &Tables {
        &self.tables
    }
}

/// Mappings of every map, in the order [`Maps::new`] takes them.
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

impl Maps {
    /// Takes over the mappings, reading back the slots in use.
    pub fn new(m: Mappings, max_v4: usize, max_v6: usize) -> Result<Self, KernelError> {
        let tables = Tables {
            config: m.config,
            v4_filter: m.v4_filter,
            v4_lens: m.v4_lens,
            v6_filter: m.v6_filter,
            v4: Table::new(m.v4_bans)?,
            v6: Table::new(m.v6_bans)?,
            slots: m.slots,
            allow4: Table::new(m.allow4)?,
            allow6: Table::new(m.allow6)?,
            max_v4,
            max_v6,
            clock: Clock::new(),
        };
        let slot_count = tables.slots.len() / 2;
        let mut used = vec![false; slot_count];
        for (_, slot) in tables
            .v4
            .iter()
            .chain(tables.v6.iter().map(|(_, s)| (Ipv4Net::default(), s)))
        {
            if let Some(u) = used.get_mut(slot as usize) {
                *u = true;
            }
        }
        let free = (0..slot_count as u32)
            .rev()
            .filter(|&s| !used[s as usize])
            .collect();
        let allowed = AllowIndex::new(&tables.allowlist());
        let (count_v4, count_v6) = tables.counts();
        let mut exact4 = Vec::with_capacity(count_v4);
        let mut prefix4 = BTreeSet::new();
        for w in tables.v4.words() {
            let word = w.load(Ordering::Relaxed);
            let t = (word >> 32) as u32;
            match tag_len(t) {
                _ if t == 0 => {}
                32 => exact4.push(word as u32),
                len => {
                    prefix4.insert((word as u32, len));
                }
            }
        }
        exact4.sort_unstable();
        Ok(Maps {
            tables: Arc::new(tables),
            free,
            allowed,
            count_v4,
            count_v6,
            exact4,
            prefix4,
        })
    }

    /// The read side, for lookups that must not wait for the writer.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.clone()
    }
    /// Applies effects in one batch: new bans are enforced, removed ones stop, and bans not
    /// named are never unenforced meanwhile.
    pub fn apply(&mut self, effects: &[(IpNet, Effective)]) -> Result<Applied, KernelError> {
        let mut applied = Applied::default();
        let mut removed_v4 = Vec::new();
        let mut removed_v6 = false;
        // Removals first, so a batch that swaps bans never needs more than capacity.
        for (i, (net, effect)) in effects.iter().enumerate() {
            if let Some((ahead, Effective::Unbanned)) = effects.get(i + PREFETCH_AHEAD) {
                match ahead {
                    IpNet::V4(n) => self.v4.prefetch(n),
                    IpNet::V6(n) => self.v6.prefetch(n),
                }
            }
            if *effect != Effective::Unbanned {
                continue;
            }
            let slot = match net {
                IpNet::V4(n) => self.v4.remove(n).inspect(|_| removed_v4.push(*n)),
                IpNet::V6(n) => self.v6.remove(n).inspect(|_| removed_v6 = true),
            };
            if let Some(slot) = slot {
                self.free.push(slot);
                applied.removed += 1;
                match net {
                    IpNet::V4(_) => self.count_v4 -= 1,
                    IpNet::V6(_) => self.count_v6 -= 1,
                }
            }
        }
        // Derived bits of the additions: set one by one for a small batch; for a big one,
        // gathered here and published once, a word at a time (the new bans start to match
        // when their words land, the others never stop).
        let adds = effects
            .iter()
            .filter(|(_, e)| *e != Effective::Unbanned)
            .count();
        let mut bulk = (adds > BULK).then(Derived::new);
        let now = self.clock.snapshot();
        let mut added_exact4 = Vec::new();
        for (i, (net, effect)) in effects.iter().enumerate() {
            if let Some((ahead, _)) = effects.get(i + PREFETCH_AHEAD) {
                match ahead {
                    IpNet::V4(n) => self.v4.prefetch(n),
                    IpNet::V6(n) => self.v6.prefetch(n),
                }
            }
            let Effective::Banned { expires } = *effect else {
                continue;
            };
            let control = now.to_mono(expires) | self.allowed.flag(net);
            let probe = match net {
                IpNet::V4(n) => self.v4.probe(n),
                IpNet::V6(n) => self.v6.probe(n),
            };
            if let Some(slot) = probe.existing {
                let held = now
                    .to_wall(self.slots[slot as usize * 2].load(Ordering::Acquire) & SLOT_DEADLINE);
                if !same_expiry(held, expires) {
                    self.slots[slot as usize * 2].store(control, Ordering::Release);
                    applied.updated += 1;
                }
                continue;
            }
            let (count, max) = match net {
                IpNet::V4(_) => (self.count_v4, self.max_v4),
                IpNet::V6(_) => (self.count_v6, self.max_v6),
            };
            let full = KernelError::Full {
                network: *net,
                capacity: max,
            };
            if count >= max {
                return Err(full);
            }
            let slot = self.free.pop().ok_or(full)?;
            // State before entry: the program may match the entry as soon as it is written.
            self.slots[slot as usize * 2].store(control, Ordering::Release);
            self.slots[slot as usize * 2 + 1].store(0, Ordering::Release);
            let inserted = match net {
                IpNet::V4(n) => self.v4.insert_probed(n, slot, &probe),
                IpNet::V6(n) => self.v6.insert_probed(n, slot, &probe),
            };
            if inserted.is_err() {
                self.free.push(slot);
                return Err(KernelError::Full {
                    network: *net,
                    capacity: max,
                });
            }
            match net {
                IpNet::V4(n) if n.prefix_len() == 32 => {
                    self.count_v4 += 1;
                    added_exact4.push(n.addr().to_bits());
                }
                IpNet::V4(n) => {
                    self.count_v4 += 1;
                    self.prefix4.insert((n.addr().to_bits(), n.prefix_len()));
                }
                IpNet::V6(_) => self.count_v6 += 1,
            }
            match &mut bulk {
                Some(d) => d.cover(net),
                None => self.cover(net),
            }
            applied.added += 1;
        }
        if let Some(d) = bulk {
            d.or_into(self);
        }
        self.index_exact4(added_exact4, &removed_v4);
        for n in removed_v4.iter().filter(|n| n.prefix_len() < 32) {
            self.prefix4.remove(&(n.addr().to_bits(), n.prefix_len()));
        }
        self.uncover4(&removed_v4);
        if removed_v6 {
            self.rebuild(false, true);
        }
        Ok(applied)
    }

    /// Sets the derived bits a newly added ban needs.
    fn cover(&self, net: &IpNet) {
        match net {
            IpNet::V4(n) => {
                cover4(
                    n.addr().to_bits(),
                    n.prefix_len(),
                    &mut |w, bits| {
                        self.v4_filter[w].fetch_or(bits, Ordering::Release);
                    },
                    &mut |w, bits| {
                        self.v4_lens[w].fetch_or(bits, Ordering::Release);
                    },
                );
            }
            IpNet::V6(n) => {
                let mut all = false;
                cover6(
                    n,
                    &mut |w, bits| {
                        self.v6_filter[w].fetch_or(bits, Ordering::Release);
                    },
                    &mut all,
                );
                let (w, bit) = len_bit6(n.prefix_len());
                self.config[(config::V6_LENS as usize) + w].fetch_or(bit, Ordering::Release);
                if all {
                    self.config[config::FLAGS as usize].fetch_or(FLAG_V6_ALL, Ordering::Release);
                }
            }
        }
    }

    /// Brings the sorted exact IPv4 addresses up to date with a batch.
    fn index_exact4(&mut self, mut added: Vec<u32>, removed: &[Ipv4Net]) {
        let mut gone: Vec<u32> = removed
            .iter()
            .filter(|n| n.prefix_len() == 32)
            .map(|n| n.addr().to_bits())
            .collect();
        if !gone.is_empty() {
            gone.sort_unstable();
            // Both sorted: one walk, not a search per address.
            let mut next = gone.iter().peekable();
            self.exact4.retain(|a| {
                while next.next_if(|g| **g < *a).is_some() {}
                next.peek() != Some(&a)
            });
        }
        if !added.is_empty() {
            added.sort_unstable();
            let old = std::mem::take(&mut self.exact4);
            self.exact4 = merge_sorted(old, added);
        }
    }

    /// Whether an exact IPv4 ban lies in `first..=last`.
    fn exact4_in(&self, first: u32, last: u32) -> bool {
        let i = self.exact4.partition_point(|a| *a < first);
        self.exact4.get(i).is_some_and(|a| *a <= last)
    }

    /// Whether an IPv4 ban shorter than /32 overlaps `first..=last` (an aligned range of
    /// `2^(32 - len)` addresses): one inside it, or one containing it.
    fn prefix4_overlaps(&self, first: u32, len: u8) -> bool {
        let last = first | (u32::MAX >> len);
        if self.prefix4.range((first, 0)..=(last, 32)).next().is_some() {
            return true;
        }
        (0..len).any(|l| {
            self.prefix4
                .contains(&(first & !(u32::MAX.checked_shr(l as u32).unwrap_or(0)), l))
        })
    }

    /// Whether an IPv4 ban of length `len` overlaps the /16 `first`.
    fn length_in_slash16(&self, first: u32, len: u8) -> bool {
        if len == 32 {
            return self.exact4_in(first, first | 0xffff);
        }
        if len < 16 {
            return self.prefix4.contains(&(
                first & !(u32::MAX.checked_shr(len as u32).unwrap_or(0)),
                len,
            ));
        }
        self.prefix4
            .range((first, 0)..=(first | 0xffff, 32))
            .any(|(_, l)| *l == len)
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
                (FILTER4_EXACT, self.exact4_in(base, base | 0xff))
            } else {
                (FILTER4_PREFIX, self.prefix4_overlaps(base, 24))
            };
            if !still {
                let (word, shift) = filter_pos4(base);
                self.v4_filter[word as usize].fetch_and(!(kind << shift), Ordering::Release);
            }
        }
        for (w, len) in lens {
            if !self.length_in_slash16(w << 16, len) {
                self.v4_lens[w as usize].fetch_and(!len_bit4(len), Ordering::Release);
            }
        }
    }

    /// Recomputes filters and length masks from the tables and publishes the words that differ.
    pub fn rebuild_derived(&self) {
        self.rebuild(true, true);
    }

    /// [`Maps::rebuild_derived`] for the families named. The tables are scanned as raw words:
    /// at a million bans this runs after every batch that removes one.
    fn rebuild(&self, v4: bool, v6: bool) {
        if v4 {
            let mut f4 = vec![0u64; FILTER4_WORDS as usize];
            let mut l4 = vec![0u64; V4_LENS_WORDS as usize];
            for w in self.v4.words() {
                let word = w.load(Ordering::Relaxed);
                let t = (word >> 32) as u32;
                if t != 0 {
                    cover4(
                        word as u32,
                        tag_len(t),
                        &mut |w, bits| f4[w] |= bits,
                        &mut |w, bits| l4[w] |= bits,
                    );
                }
            }
            publish(&self.v4_filter, &f4);
            publish(&self.v4_lens, &l4);
        }
        if v6 {
            let mut f6 = vec![0u64; FILTER_WORDS as usize];
            let mut l6 = [0u64; 3];
            let mut all6 = false;
            for (n, _) in self.v6.iter() {
                cover6(&n, &mut |w, bits| f6[w] |= bits, &mut all6);
                let (w, bit) = len_bit6(n.prefix_len());
                l6[w] |= bit;
            }
            publish(&self.v6_filter, &f6);
            let lens = &self.config[config::V6_LENS as usize..config::V6_LENS as usize + 3];
            publish(lens, &l6);
            let flags = &self.config[config::FLAGS as usize];
            if all6 {
                flags.fetch_or(FLAG_V6_ALL, Ordering::Release);
            } else {
                flags.fetch_and(!FLAG_V6_ALL, Ordering::Release);
            }
        }
    }

    /// Makes the allowlist exactly `nets`.
    pub fn set_allowlist(&mut self, nets: &[IpNet]) -> Result<(), KernelError> {
        let want: HashSet<IpNet> = nets.iter().copied().collect();
        let have: HashSet<IpNet> = self.allowlist().into_iter().collect();
        // Additions first: an address that moves from one allowed network to another stays
        // allowed throughout.
        for net in want.difference(&have) {
            let ok = match net {
                IpNet::V4(n) => self.allow4.insert(n, 0),
                IpNet::V6(n) => self.allow6.insert(n, 0),
            };
            if ok.is_err() {
                let capacity = match net {
                    IpNet::V4(_) => self.allow4.entries(),
                    IpNet::V6(_) => self.allow6.entries(),
                };
                return Err(KernelError::Full {
                    network: *net,
                    capacity,
                });
            }
            let (word, bit) = match net {
                IpNet::V4(n) => (config::ALLOW4_LENS as usize, len_bit4(n.prefix_len())),
                IpNet::V6(n) => {
                    let (w, bit) = len_bit6(n.prefix_len());
                    (config::ALLOW6_LENS as usize + w, bit)
                }
            };
            self.config[word].fetch_or(bit, Ordering::Release);
        }
        for net in have.difference(&want) {
            match net {
                IpNet::V4(n) => self.allow4.remove(n),
                IpNet::V6(n) => self.allow6.remove(n),
            };
        }
        let mut l4 = 0u64;
        let mut l6 = [0u64; 3];
        for (n, _) in self.allow4.iter() {
            l4 |= len_bit4(n.prefix_len());
        }
        for (n, _) in self.allow6.iter() {
            let (w, bit) = len_bit6(n.prefix_len());
            l6[w] |= bit;
        }
        self.config[config::ALLOW4_LENS as usize].store(l4, Ordering::Release);
        let words = &self.config[config::ALLOW6_LENS as usize..config::ALLOW6_LENS as usize + 3];
        publish(words, &l6);
        // Flag the bans the allowlist now overlaps, and unflag the others.
        self.allowed = AllowIndex::new(nets);
        let v4 = self.v4.iter().map(|(n, s)| (IpNet::V4(n), s));
        for (net, slot) in v4.chain(self.v6.iter().map(|(n, s)| (IpNet::V6(n), s))) {
            let word = &self.slots[slot as usize * 2];
            let control = word.load(Ordering::Acquire);
            let wanted = (control & SLOT_DEADLINE) | self.allowed.flag(&net);
            if control != wanted {
                word.store(wanted, Ordering::Release);
            }
        }
        Ok(())
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
        let word = &self.config[config::FLAGS as usize];
        if on {
            word.fetch_or(flag, Ordering::Release);
        } else {
            word.fetch_and(!flag, Ordering::Release);
        }
    }
}

impl Tables {
    /// Number of IPv4 and IPv6 bans held.
    pub fn counts(&self) -> (usize, usize) {
        (self.v4.iter().count(), self.v6.iter().count())
    }

    /// Configured capacity of each family.
    pub fn capacity(&self) -> (usize, usize) {
        (self.max_v4, self.max_v6)
    }

    /// The ban held for `net`, if any.
    pub fn get(&self, net: &IpNet) -> Option<KernelBan> {
        let slot = match net {
            IpNet::V4(n) => self.v4.get(n),
            IpNet::V6(n) => self.v6.get(n),
        }?;
        Some(self.ban_at(slot))
    }

    fn ban_at(&self, slot: u32) -> KernelBan {
        self.ban_as_of(slot, &self.clock.snapshot())
    }

    fn ban_as_of(&self, slot: u32, now: &Snapshot) -> KernelBan {
        let expires_ns = self.slots[slot as usize * 2].load(Ordering::Relaxed) & SLOT_DEADLINE;
        let hits = self.slots[slot as usize * 2 + 1].load(Ordering::Relaxed);
        KernelBan {
            slot,
            expires: now.to_wall(expires_ns),
            hits,
        }
    }

    /// Every ban held.
    pub fn bans(&self) -> Vec<(IpNet, KernelBan)> {
        let now = self.clock.snapshot();
        let mut out = Vec::with_capacity(self.slots.len() / 2);
        for w in self.v4.words() {
            let word = w.load(Ordering::Relaxed);
            let t = (word >> 32) as u32;
            if t != 0 {
                let net = Ipv4Net::new(std::net::Ipv4Addr::from_bits(word as u32), tag_len(t))
                    .expect("a stored prefix length");
                out.push((IpNet::V4(net), self.ban_as_of(tag_slot(t), &now)));
            }
        }
        out.extend(
            self.v6
                .iter()
                .map(|(n, s)| (IpNet::V6(n), self.ban_as_of(s, &now))),
        );
        out
    }

    /// The allowlist held.
    pub fn allowlist(&self) -> Vec<IpNet> {
        let v4 = self.allow4.iter().map(|(n, _)| IpNet::V4(n));
        v4.chain(self.allow6.iter().map(|(n, _)| IpNet::V6(n)))
            .collect()
    }

    pub fn monitor(&self) -> bool {
        self.config[config::FLAGS as usize].load(Ordering::Acquire) & FLAG_MONITOR != 0
    }

    /// Whether the IPv6 filter is off because of a very wide IPv6 ban.
    pub fn v6_filter_off(&self) -> bool {
        self.config[config::FLAGS as usize].load(Ordering::Acquire) & FLAG_V6_ALL != 0
    }

    /// The ban that would drop a packet from `ip` right now, as the program decides it: the
    /// longest live ban matching it, unless the allowlist covers it. Monitor mode is not
    /// considered (the answer is what is banned, not what is dropped).
    pub fn banned(&self, ip: IpAddr) -> Option<(IpNet, KernelBan)> {
        let now = Clock::now_mono();
        let live = |slot: u32| {
            let deadline = self.slots[slot as usize * 2].load(Ordering::Acquire) & SLOT_DEADLINE;
            deadline == 0 || now < deadline
        };
        let found = match ip {
            IpAddr::V4(a) => {
                let bits = a.to_bits();
                let lens = self.v4_lens[(bits >> 16) as usize].load(Ordering::Acquire);
                lengths(&[lens], 32).find_map(|len| {
                    let net = Ipv4Net::new(a, len).expect("valid length").trunc();
                    self.v4
                        .get(&net)
                        .filter(|s| live(*s))
                        .map(|s| (IpNet::V4(net), s))
                })
            }
            IpAddr::V6(a) => {
                let words = self.words(config::V6_LENS);
                lengths(&words, 128).find_map(|len| {
                    let net = Ipv6Net::new(a, len).expect("valid length").trunc();
                    self.v6
                        .get(&net)
                        .filter(|s| live(*s))
                        .map(|s| (IpNet::V6(net), s))
                })
            }
        }?;
        if self.allowlisted(ip) {
            return None;
        }
        Some((found.0, self.ban_at(found.1)))
    }

    /// Whether the source filter lets `ip` through to the table probes (some ban is near it).
    pub fn candidate(&self, ip: IpAddr) -> bool {
        let (filter, bit) = match ip {
            IpAddr::V4(a) => {
                let (word, shift) = filter_pos4(a.to_bits());
                let bits = self.v4_filter[word as usize].load(Ordering::Acquire) >> shift;
                return bits & (FILTER4_EXACT | FILTER4_PREFIX) != 0;
            }
            IpAddr::V6(a) => {
                if self.config[config::FLAGS as usize].load(Ordering::Acquire) & FLAG_V6_ALL != 0 {
                    return true;
                }
                (&self.v6_filter, filter_bit6(split6(a).0))
            }
        };
        filter[bit as usize / 64].load(Ordering::Acquire) >> (bit % 64) & 1 == 1
    }

    /// Whether `ip` is inside an allowlisted network.
    pub fn allowlisted(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let lens = self.config[config::ALLOW4_LENS as usize].load(Ordering::Acquire);
                lengths(&[lens], 32).any(|len| {
                    self.allow4
                        .get(&Ipv4Net::new(a, len).expect("valid").trunc())
                        .is_some()
                })
            }
            IpAddr::V6(a) => {
                let words = self.words(config::ALLOW6_LENS);
                lengths(&words, 128).any(|len| {
                    self.allow6
                        .get(&Ipv6Net::new(a, len).expect("valid").trunc())
                        .is_some()
                })
            }
        }
    }

    fn words(&self, first: u32) -> [u64; 3] {
        let w = |i: u32| self.config[(first + i) as usize].load(Ordering::Acquire);
        [w(0), w(1), w(2)]
    }
}

/// Prefix lengths present in a length mask (bit `width - len`, counted across the words),
/// longest first: the order the program probes them in.
fn lengths(words: &[u64], width: u32) -> impl Iterator<Item = u8> + '_ {
    words.iter().enumerate().flat_map(move |(w, &word)| {
        (0..64u32)
            .filter(move |b| word >> b & 1 == 1)
            .map(move |b| (width - (w as u32 * 64 + b)) as u8)
    })
}

/// The allowlist, arranged to answer "does any allowlisted network overlap this ban?" with a
/// few hash lookups: either an allowlisted network contains the ban (some truncation of the ban
/// is allowlisted), or the ban contains one (the ban is a truncation of an allowlisted network).
#[derive(Default)]
struct AllowIndex {
    exact: HashSet<IpNet>,
    truncations: HashSet<IpNet>,
    lengths: Vec<u8>,
}

impl AllowIndex {
    fn new(nets: &[IpNet]) -> Self {
        let mut index = AllowIndex::default();
        for net in nets {
            index.exact.insert(*net);
            for len in 0..=net.prefix_len() {
                index.truncations.insert(truncate(net, len));
            }
            if !index.lengths.contains(&net.prefix_len()) {
                index.lengths.push(net.prefix_len());
            }
        }
        index
    }

    /// [`SLOT_CHECK_ALLOW`] if an allowlisted network overlaps `net`, else 0.
    fn flag(&self, net: &IpNet) -> u64 {
        if self.exact.is_empty() {
            return 0;
        }
        let contains_allowed = self.truncations.contains(net);
        let inside_allowed = self
            .lengths
            .iter()
            .any(|&len| len <= net.prefix_len() && self.exact.contains(&truncate(net, len)));
        if contains_allowed || inside_allowed {
            SLOT_CHECK_ALLOW
        } else {
            0
        }
    }
}

fn truncate(net: &IpNet, len: u8) -> IpNet {
    IpNet::new(net.addr(), len)
        .expect("shorter than the network")
        .trunc()
}

/// Whether two expiries are the same as far as the kernel can tell: its copy is a monotonic
/// deadline, which reads back to the wall clock within a few milliseconds.
pub fn same_expiry(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a.as_millis() - b.as_millis()).abs() < 1000,
        _ => false,
    }
}

/// Stores `new` into `words` where they differ.
fn publish(words: &[std::sync::atomic::AtomicU64], new: &[u64]) {
    for (w, &v) in words.iter().zip(new) {
        if w.load(Ordering::Relaxed) != v {
            w.store(v, Ordering::Release);
        }
    }
}

/// Calls `filter(word, bits)` for the filter bits of the IPv4 ban `addr/len` (its kind's bit in
/// every /24 it overlaps) and `lens(word, bits)` for its length bit in each /16 it overlaps.
fn cover4(
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
            0x5555_5555_5555_5555
        } else {
            0xaaaa_aaaa_aaaa_aaaa
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

/// Two sorted vectors as one.
fn merge_sorted(a: Vec<u32>, b: Vec<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Derived bits of a big batch of additions, gathered before they are published.
struct Derived {
    v4_filter: Vec<u64>,
    v4_lens: Vec<u64>,
    /// IPv6 additions are few next to IPv4 ones: kept as networks and covered one by one.
    v6: Vec<IpNet>,
}

impl Derived {
    fn new() -> Self {
        Derived {
            v4_filter: vec![0; FILTER4_WORDS as usize],
            v4_lens: vec![0; V4_LENS_WORDS as usize],
            v6: Vec::new(),
        }
    }

    fn cover(&mut self, net: &IpNet) {
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

    fn or_into(self, maps: &Maps) {
        for (shared, bits) in [
            (&maps.v4_filter, &self.v4_filter),
            (&maps.v4_lens, &self.v4_lens),
        ] {
            for (w, b) in shared.iter().zip(bits) {
                if *b != 0 && w.load(Ordering::Relaxed) & b != *b {
                    w.fetch_or(*b, Ordering::Release);
                }
            }
        }
        for net in &self.v6 {
            maps.cover(net);
        }
    }
}

/// Calls `filter(word, bits)` for the filter bits of an IPv6 ban, or sets `all` when the ban is
/// too wide to enumerate.
fn cover6(net: &Ipv6Net, filter: &mut impl FnMut(usize, u64), all: &mut bool) {
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

#[cfg(test)]
mod tests {
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
                .map(|w| (w & 0xaaaa_aaaa_aaaa_aaaa).count_ones() as usize)
                .sum();
            assert_eq!(set, 1 << (24 - net.prefix_len().min(24)), "{net}");
            assert!(
                filter.iter().all(|w| w & 0x5555_5555_5555_5555 == 0),
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
}
