//! The records of one source in memory: for each family, a vector of (network, record) sorted
//! by network.
//!
//! A sorted vector rather than a tree, because of what a list sync does with a million records:
//! walk them in order beside the sorted list, and replace or patch them all at once. A vector is
//! walked sequentially, several times faster than a tree's nodes, in a third of the memory. The
//! price is that a change costs a pass over the vector, so changes come in batches (a request's
//! bans, a sync's delta) and each batch pays it once.
//!
//! Networks are kept as integers that sort like them: an IPv4 network as one `u64` (address,
//! then prefix length), an IPv6 one as its address and prefix length. Comparing these is several
//! times faster than comparing `IpNet`s, which matters for a million.

use std::{
    fmt::Debug,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::record::Record;

/// A network as an integer key of its family.
pub(super) trait Key: Copy + Ord + Debug {
    /// The network this is the key of.
    fn network(self) -> IpNet;
}

/// An IPv4 network: address, then prefix length, in one integer.
pub(super) type V4 = u64;

/// The key of `net`, whose host bits must be clear.
pub(super) fn v4(net: &Ipv4Net) -> V4 {
    (u64::from(net.addr().to_bits()) << 8) | u64::from(net.prefix_len())
}

impl Key for V4 {
    fn network(self) -> IpNet {
        let addr = Ipv4Addr::from_bits((self >> 8) as u32);
        IpNet::V4(Ipv4Net::new(addr, self as u8).expect("a key made by `v4`"))
    }
}

/// An IPv6 network: address, then prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct V6 {
    address: u128,
    prefix: u8,
}

/// The key of `net`, whose host bits must be clear.
pub(super) fn v6(net: &Ipv6Net) -> V6 {
    V6 {
        address: net.addr().to_bits(),
        prefix: net.prefix_len(),
    }
}

impl Key for V6 {
    fn network(self) -> IpNet {
        let addr = Ipv6Addr::from_bits(self.address);
        IpNet::V6(Ipv6Net::new(addr, self.prefix).expect("a key made by `v6`"))
    }
}

/// One record of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot<K> {
    pub(super) key: K,
    pub(super) record: Record,
}

/// The records of one source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Records {
    /// Sorted by key, one slot per network.
    pub(super) v4: Vec<Slot<V4>>,
    /// Sorted by key, one slot per network.
    pub(super) v6: Vec<Slot<V6>>,
}

impl Records {
    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record of `network` (host bits clear), if there is one.
    pub(super) fn get(&self, network: &IpNet) -> Option<Record> {
        match network {
            IpNet::V4(net) => find(&self.v4, v4(net)),
            IpNet::V6(net) => find(&self.v6, v6(net)),
        }
    }

    /// Every record in network order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (IpNet, Record)> + '_ {
        let v4 = self.v4.iter().map(|s| (s.key.network(), s.record));
        v4.chain(self.v6.iter().map(|s| (s.key.network(), s.record)))
    }

    /// Sets the record of each network of `changes` (host bits clear), adding those it does not
    /// have; of two changes of one network, the last wins.
    pub(super) fn upsert(&mut self, changes: &[(IpNet, Record)]) {
        let (mut v4s, mut v6s) = (Vec::new(), Vec::new());
        for &(network, record) in changes {
            match network {
                IpNet::V4(net) => v4s.push(Slot {
                    key: v4(&net),
                    record,
                }),
                IpNet::V6(net) => v6s.push(Slot {
                    key: v6(&net),
                    record,
                }),
            }
        }
        upsert(&mut self.v4, last_of_each(v4s));
        upsert(&mut self.v6, last_of_each(v6s));
    }

    /// Deletes the records of `networks` (host bits clear) it has.
    pub(super) fn remove(&mut self, networks: &[IpNet]) {
        let (mut v4s, mut v6s) = (Vec::new(), Vec::new());
        for network in networks {
            match network {
                IpNet::V4(net) => v4s.push(v4(net)),
                IpNet::V6(net) => v6s.push(v6(net)),
            }
        }
        v4s.sort_unstable();
        v6s.sort_unstable();
        remove(&mut self.v4, &v4s);
        remove(&mut self.v6, &v6s);
    }
}

/// The record of `key` in `table`.
fn find<K: Key>(table: &[Slot<K>], key: K) -> Option<Record> {
    let at = table.binary_search_by_key(&key, |slot| slot.key).ok()?;
    Some(table[at].record)
}

/// `slots` sorted by key, keeping the last of each key.
fn last_of_each<K: Key>(mut slots: Vec<Slot<K>>) -> Vec<Slot<K>> {
    // Stable, so the last of each run of equal keys is the last given.
    slots.sort_by_key(|slot| slot.key);
    let mut kept: Vec<Slot<K>> = Vec::with_capacity(slots.len());
    for slot in slots {
        match kept.last_mut() {
            Some(last) if last.key == slot.key => *last = slot,
            _ => kept.push(slot),
        }
    }
    kept
}

/// Merges `changes` (sorted, distinct keys) into `table`: records of keys it has are replaced,
/// the others inserted in order.
pub(super) fn upsert<K: Key>(table: &mut Vec<Slot<K>>, changes: Vec<Slot<K>>) {
    if table.is_empty() {
        *table = changes;
        return;
    }
    // Few changes to many records: find each, and move the records only to make room for the
    // new ones. Otherwise, one merge into a new vector.
    if changes.len() * 16 < table.len() {
        let mut new = Vec::new();
        for change in changes {
            match table.binary_search_by_key(&change.key, |slot| slot.key) {
                Ok(at) => table[at].record = change.record,
                Err(_) => new.push(change),
            }
        }
        insert(table, &new);
    } else {
        let mut merged = Vec::with_capacity(table.len() + changes.len());
        let mut changes = changes.into_iter().peekable();
        for slot in table.iter() {
            while let Some(change) = changes.next_if(|change| change.key < slot.key) {
                merged.push(change);
            }
            match changes.next_if(|change| change.key == slot.key) {
                Some(change) => merged.push(change),
                None => merged.push(*slot),
            }
        }
        merged.extend(changes);
        *table = merged;
    }
}

/// Inserts `new` (sorted, keys `table` does not have) into `table`, keeping it sorted: the
/// table grows once and each record moves once, from the back.
fn insert<K: Key>(table: &mut Vec<Slot<K>>, new: &[Slot<K>]) {
    let Some(&filler) = new.first() else {
        return;
    };
    let mut old = table.len();
    table.resize(old + new.len(), filler);
    let mut end = table.len();
    for change in new.iter().rev() {
        while old > 0 && table[old - 1].key > change.key {
            table[end - 1] = table[old - 1];
            old -= 1;
            end -= 1;
        }
        table[end - 1] = *change;
        end -= 1;
    }
}

/// Deletes the slots of `keys` (sorted) from `table`, in one pass.
pub(super) fn remove<K: Key>(table: &mut Vec<Slot<K>>, keys: &[K]) {
    if keys.is_empty() {
        return;
    }
    let mut keys = keys.iter().peekable();
    table.retain(|slot| {
        while keys.next_if(|key| **key < slot.key).is_some() {}
        keys.next_if_eq(&&slot.key).is_none()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn record(n: u64) -> Record {
        Record::synced(n)
    }

    fn records(of: &Records) -> Vec<(String, Record)> {
        of.iter().map(|(n, r)| (n.to_string(), r)).collect()
    }

    #[test]
    fn keys_sort_like_networks() {
        let mut nets: Vec<IpNet> = [
            "10.0.0.0/8",
            "9.255.0.0/16",
            "10.0.0.0/7",
            "10.0.0.0/32",
            "2001:db8::/32",
            "2001:db8::/48",
            "::/0",
        ]
        .iter()
        .map(|s| net(s).trunc())
        .collect();
        let mut table = Records::default();
        table.upsert(&nets.iter().map(|n| (*n, record(0))).collect::<Vec<_>>());
        nets.sort();
        let back: Vec<IpNet> = table.iter().map(|(n, _)| n).collect();
        assert_eq!(back, nets);
    }

    #[test]
    fn upserts_insert_in_order_and_replace_with_the_last_given() {
        let mut table = Records::default();
        table.upsert(&[
            (net("10.0.0.5/32"), record(1)),
            (net("10.0.0.1/32"), record(1)),
        ]);
        // Few changes to many records, and many: both ways must give the same.
        for many in [false, true] {
            let mut table = table.clone();
            let mut changes = vec![
                (net("10.0.0.3/32"), record(2)),
                (net("10.0.0.5/32"), record(2)),
                (net("10.0.0.3/32"), record(3)),
                (net("2001:db8::/32"), record(2)),
                (net("10.0.0.9/32"), record(2)),
            ];
            if !many {
                let filler: Vec<(IpNet, Record)> = (0..100u32)
                    .map(|i| {
                        (
                            IpNet::from(std::net::IpAddr::from(Ipv4Addr::from(0x0b00_0000 + i))),
                            record(0),
                        )
                    })
                    .collect();
                table.upsert(&filler);
                changes.truncate(4);
                changes.push((net("10.0.0.9/32"), record(2)));
            }
            table.upsert(&changes);
            let got: Vec<(String, Record)> = records(&table)
                .into_iter()
                .filter(|(n, _)| !n.starts_with("11."))
                .collect();
            assert_eq!(
                got,
                [
                    ("10.0.0.1/32".to_owned(), record(1)),
                    ("10.0.0.3/32".to_owned(), record(3)),
                    ("10.0.0.5/32".to_owned(), record(2)),
                    ("10.0.0.9/32".to_owned(), record(2)),
                    ("2001:db8::/32".to_owned(), record(2)),
                ],
                "many: {many}"
            );
        }
    }

    #[test]
    fn removing_deletes_only_what_is_there() {
        let mut table = Records::default();
        table.upsert(&[
            (net("10.0.0.1/32"), record(1)),
            (net("10.0.0.2/32"), record(1)),
            (net("2001:db8::/32"), record(1)),
        ]);
        table.remove(&[net("10.0.0.2/32"), net("10.0.0.7/32"), net("2001:db8::/32")]);
        assert_eq!(records(&table), [("10.0.0.1/32".to_owned(), record(1))]);
        assert_eq!(table.get(&net("10.0.0.1/32")), Some(record(1)));
        assert_eq!(table.get(&net("10.0.0.2/32")), None);
        assert_eq!(table.len(), 1);
    }
}
