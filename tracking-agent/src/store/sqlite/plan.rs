//! Planning a sync: the list's entries sorted by network (a radix sort of 8-byte packed
//! entries for IPv4), walked beside the source's records, give the delta to write and the
//! effects for the kernel in primary-key order, without a lookup per entry.

use std::hash::{BuildHasher, RandomState};

use ipnet::IpNet;

use super::{
    record::{Live, Record},
    records::{self, Key, Records, Slot, V4, V6},
};
use crate::{
    ban::{Effect, Effective, ListEntry},
    radix,
    time::Timestamp,
};

/// How many entries a sync takes at most: a position in the list has 26 bits in the sort
/// (`Listing`). Far more than the kernel maps hold.
pub(super) const MAX_LISTED: usize = 1 << POSITION_BITS;

const POSITION_BITS: u32 = 26;

/// How to make the records of one source equal to a new list, and what that does.
#[derive(Debug, Default)]
pub(super) struct SyncPlan {
    /// The delta of the IPv4 records.
    pub(super) v4: Delta<V4>,
    /// The delta of the IPv6 records.
    pub(super) v6: Delta<V6>,
    /// Records already exactly as listed.
    pub(super) unchanged: usize,
    /// What the kernel must do once the sync is committed, in network order: listed networks
    /// added or no longer expiring are banned for good, removed ones are left to the other
    /// sources' records.
    pub(super) effects: Vec<Effect>,
}

/// The delta of one family's records, everything in network order.
#[derive(Debug)]
pub(super) struct Delta<K> {
    /// The listed records the source lacks or holds otherwise, as they will be.
    pub(super) changes: Vec<Slot<K>>,
    /// For each change, where its entry is in the list and whether the record is new (else it
    /// exists with another reason or expiry).
    pub(super) origins: Vec<Origin>,
    /// The networks the list no longer has.
    pub(super) removed: Vec<K>,
}

impl<K> Default for Delta<K> {
    fn default() -> Self {
        Delta {
            changes: Vec::new(),
            origins: Vec::new(),
            removed: Vec::new(),
        }
    }
}

/// Where a change comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    /// The entry's position in the list.
    pub(super) position: u32,
    /// Whether the record is new.
    pub(super) added: bool,
}

impl SyncPlan {
    pub(super) fn added(&self) -> usize {
        self.v4.added() + self.v6.added()
    }

    pub(super) fn updated(&self) -> usize {
        self.v4.changes.len() + self.v6.changes.len() - self.added()
    }

    pub(super) fn removed(&self) -> usize {
        self.v4.removed.len() + self.v6.removed.len()
    }
}

impl<K> Delta<K> {
    fn added(&self) -> usize {
        self.origins.iter().filter(|origin| origin.added).count()
    }
}

/// An IPv4 entry of the list in 64 bits, for sorting: address (32 bits), prefix length (6),
/// position in the list ([`POSITION_BITS`]).
fn pack(net: &ipnet::Ipv4Net, position: usize) -> u64 {
    (u64::from(net.addr().to_bits()) << 32)
        | (u64::from(net.prefix_len()) << POSITION_BITS)
        | position as u64
}

/// The key and position of a packed entry.
fn unpack(packed: u64) -> (V4, u32) {
    let key = ((packed >> 32) << 8) | ((packed >> POSITION_BITS) & 0x3f);
    (key, (packed & ((1 << POSITION_BITS) - 1)) as u32)
}

/// What a packed entry sorts by: its key, whose bytes a radix sort can skip when every entry
/// has the same (the prefix length of a list of addresses).
fn sort_key(packed: &u64) -> u64 {
    unpack(*packed).0
}

/// How to turn `old`, the records of one source, into `entries`, whose networks need not have
/// their host bits cleared yet; of two entries of one network, the first counts. `others` are
/// the records of the other sources, `reasons` the index's reason hasher, `scratch` its sort
/// buffers. At most [`MAX_LISTED`] entries.
pub(super) fn plan<'a>(
    old: &Records,
    others: impl Iterator<Item = &'a Records>,
    entries: &[ListEntry],
    reasons: &RandomState,
    scratch: &mut (Vec<u64>, Vec<u64>),
    now: Timestamp,
) -> SyncPlan {
    assert!(entries.len() <= MAX_LISTED, "too many entries to sync");
    let (mut listed, mut spare) = std::mem::take(scratch);
    listed.clear();
    let mut listed_v6: Vec<(V6, u32)> = Vec::new();
    // Which entries have a reason, a bit each. The walk visits the entries in network
    // order, all over the list: it reads an entry only for a reason this says it has.
    let mut reasoned = vec![0u64; entries.len().div_ceil(64)];
    for (position, entry) in entries.iter().enumerate() {
        if !entry.reason.is_empty() {
            reasoned[position / 64] |= 1 << (position % 64);
        }
        match entry.network.trunc() {
            IpNet::V4(net) => listed.push(pack(&net, position)),
            IpNet::V6(net) => listed_v6.push((records::v6(&net), position as u32)),
        }
    }
    // Stable: of two entries of one network, the first comes first.
    radix::sort_by_key_in(&mut listed, &mut spare, sort_key);
    listed_v6.sort_unstable();

    // Most entries of big lists have no reason: one hash does for all of them.
    let no_reason = reasons.hash_one("");
    let tag = |position: u32| {
        let position = position as usize;
        match reasoned[position / 64] >> (position % 64) & 1 {
            0 => no_reason,
            _ => reasons.hash_one(&*entries[position].reason),
        }
    };
    let mut plan = SyncPlan::default();
    let mut removals = Vec::new();
    plan.v4 = walk(
        &old.v4,
        listed.iter().map(|&packed| unpack(packed)),
        &tag,
        &mut plan,
        &mut removals,
    );
    plan.v6 = walk(
        &old.v6,
        listed_v6.iter().copied(),
        &tag,
        &mut plan,
        &mut removals,
    );
    *scratch = (listed, spare);

    // A removed network stays banned if another source has a live record of it.
    let now = now.as_millis();
    let mut lives = vec![Live::default(); removals.len()];
    for records in others {
        for ((_, network), live) in removals.iter().zip(&mut lives) {
            if let Some(record) = records.get(network) {
                live.add(&record, now);
            }
        }
    }
    for ((at, _), live) in removals.into_iter().zip(lives) {
        plan.effects[at].1 = live.effective();
    }
    plan
}

/// Walks the records `old` of one family beside `listed` (keys and positions, sorted by key
/// then position), and returns the delta; counts what is unchanged and pushes the effects
/// into `plan`, and for each removed network, where its effect is, into `removals`.
fn walk<K: Key>(
    old: &[Slot<K>],
    listed: impl Iterator<Item = (K, u32)>,
    tag: &impl Fn(u32) -> u64,
    plan: &mut SyncPlan,
    removals: &mut Vec<(usize, IpNet)>,
) -> Delta<K> {
    let mut delta = Delta::default();
    let mut remove = |key: K, plan: &mut SyncPlan, delta: &mut Delta<K>| {
        delta.removed.push(key);
        removals.push((plan.effects.len(), key.network()));
        plan.effects.push((key.network(), Effective::Unbanned));
    };
    let mut old = old.iter().peekable();
    let mut previous = None;
    for (key, position) in listed {
        if previous == Some(key) {
            continue;
        }
        previous = Some(key);
        while let Some(gone) = old.next_if(|slot| slot.key < key) {
            remove(gone.key, plan, &mut delta);
        }
        let record = Record::synced(tag(position));
        let change = |added| (Slot { key, record }, Origin { position, added });
        let (slot, origin) = match old.next_if(|slot| slot.key == key) {
            Some(held) if held.record == record => {
                plan.unchanged += 1;
                continue;
            }
            Some(held) => {
                if held.record.expires_ms().is_some() {
                    plan.effects
                        .push((key.network(), Effective::Banned { expires: None }));
                }
                change(false)
            }
            None => {
                plan.effects
                    .push((key.network(), Effective::Banned { expires: None }));
                change(true)
            }
        };
        delta.changes.push(slot);
        delta.origins.push(origin);
    }
    for gone in old {
        remove(gone.key, plan, &mut delta);
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_entries_sort_like_networks_then_positions() {
        let nets: Vec<ipnet::Ipv4Net> = [
            "10.0.0.0/8",
            "9.255.0.0/16",
            "10.0.0.0/7",
            "10.0.0.0/32",
            "0.0.0.0/0",
            "255.255.255.255/32",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut packed: Vec<u64> = nets.iter().enumerate().map(|(i, n)| pack(n, i)).collect();
        packed.push(pack(&nets[0], MAX_LISTED - 1));
        packed.sort_by_key(sort_key);
        let back: Vec<(IpNet, u32)> = packed
            .iter()
            .map(|&p| {
                let (key, position) = unpack(p);
                (key.network(), position)
            })
            .collect();
        let mut expected: Vec<(IpNet, u32)> = nets
            .iter()
            .enumerate()
            .map(|(i, n)| (IpNet::V4(*n), i as u32))
            .collect();
        expected.push((IpNet::V4(nets[0]), MAX_LISTED as u32 - 1));
        expected.sort();
        assert_eq!(back, expected);
    }
}
