//! What the worker remembers of the `bans` table: for each source, each network it bans, when
//! that ends, and a fingerprint of the reason.
//!
//! This is what makes a sync cheap: the new list is diffed against memory and only the delta
//! touches SQLite, and the effects of a change are computed without a query. The worker keeps
//! it equal to the table: it applies a change only once its transaction has committed, reads
//! the table again when another connection has written to it, and drops the index if a request
//! dies halfway.
//!
//! Two choices come from measuring a million-record sync on a small virtual machine, where a
//! random memory access costs hundreds of nanoseconds:
//! - Each source is a `BTreeMap`, walked in order beside the sorted new list: no random lookups,
//!   and the delta comes out in primary-key order, the order SQLite inserts fastest. Hash map
//!   lookups were several times slower there, and a hash map takes twice the memory.
//! - A record is 16 bytes: the reason is kept as a keyed 63-bit hash, not as text. The diff only
//!   needs to know whether a reason changed; with a secret random key, a change goes unnoticed
//!   with a chance of 2^-63, and then only the reason shown in listings is stale. Expiries,
//!   which decide what the kernel drops, are compared exactly.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    net::Ipv4Addr,
};

use ipnet::{IpNet, Ipv4Net};
use rusqlite::Connection;

use super::key;
use crate::{
    ban::{Ban, Effect, Effective},
    store::Result,
    time::Timestamp,
};

/// One ban record, as far as effects and diffs need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    /// The reason's hash shifted left by one, and in bit 0 whether the record expires.
    tag: u64,
    /// When it expires, in milliseconds since the epoch; 0 if it never does.
    expires_ms: i64,
}

impl Record {
    fn new(reason_hash: u64, expires_ms: Option<i64>) -> Self {
        Record {
            tag: (reason_hash << 1) | u64::from(expires_ms.is_some()),
            expires_ms: expires_ms.unwrap_or(0),
        }
    }

    /// When it expires; `None` for never.
    pub(super) fn expires_ms(&self) -> Option<i64> {
        (self.tag & 1 == 1).then_some(self.expires_ms)
    }

    fn is_live(&self, now_ms: i64) -> bool {
        self.expires_ms().is_none_or(|e| e > now_ms)
    }
}

/// The longer of two expiries, where `None` (never) outlasts everything.
fn longest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    Some(a?.max(b?))
}

/// The records of every source.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Source name to its records; a source with no record left has no entry, so looking a
    /// network up costs one probe per source that holds anything.
    by_source: HashMap<String, BTreeMap<IpNet, Record>>,
    /// The key of the reason hashes, random for each index so nobody can craft a collision.
    reasons: RandomState,
}

/// How to make the records of one source equal to a new list.
#[derive(Debug, Default)]
pub(super) struct SyncPlan {
    /// What to write, in network order: the table is visited once, page after page.
    pub(super) changes: Vec<Change>,
    /// How many changes add, update and remove records.
    pub(super) added: usize,
    pub(super) updated: usize,
    pub(super) removed: usize,
    /// Records already exactly as listed.
    pub(super) unchanged: usize,
    /// Networks whose effective ban may change, in order: added, removed, or with a new expiry.
    pub(super) touched: Vec<IpNet>,
}

/// One record to write for a sync. `position` is where the ban is in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// The source does not have this record yet.
    Add {
        network: IpNet,
        position: usize,
        record: Record,
    },
    /// The source has it with another reason or expiry.
    Update {
        network: IpNet,
        position: usize,
        record: Record,
    },
    /// The list no longer has it.
    Remove(IpNet),
}

/// A listed ban reduced to what the diff needs, small so that sorting a million is quick.
#[derive(Clone, Copy)]
struct Listed<N> {
    network: N,
    record: Record,
    /// In the list; `u32` keeps this 32 bytes for IPv4 (a list of 4 billion bans would not fit
    /// in memory anyway).
    position: u32,
}

/// Listed bans, IPv4 and IPv6 apart (every IPv4 network sorts first), each sorted.
#[derive(Default)]
struct Listing {
    v4: Vec<Listed<u64>>,
    v6: Vec<Listed<IpNet>>,
}

/// From this many bans, a sync lists them on two threads.
const PARALLEL_FROM: usize = 100_000;

/// Two sorted runs as one, in (network, position) order.
fn merged<'a, N: Ord + Copy>(
    a: &'a [Listed<N>],
    b: &'a [Listed<N>],
) -> impl Iterator<Item = Listed<N>> + 'a {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    std::iter::from_fn(move || {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if (y.network, y.position) < (x.network, x.position) => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        };
        next.copied()
    })
}

/// An IPv4 network as one integer that sorts like the network: address, then prefix length.
/// Comparing these is several times faster than comparing `IpNet`s.
fn ipv4_key(net: &Ipv4Net) -> u64 {
    (u64::from(net.addr().to_bits()) << 8) | u64::from(net.prefix_len())
}

fn ipv4_of_key(key: u64) -> IpNet {
    let addr = Ipv4Addr::from_bits((key >> 8) as u32);
    IpNet::V4(Ipv4Net::new(addr, key as u8).expect("a key made by ipv4_key"))
}

impl SyncPlan {
    fn remove(&mut self, network: IpNet) {
        self.removed += 1;
        self.changes.push(Change::Remove(network));
        self.touched.push(network);
    }
}

impl Index {
    /// Reads the whole table.
    pub(super) fn load(conn: &Connection) -> Result<Self> {
        Self::load_keyed(conn, RandomState::new())
    }

    /// Reads the whole table, hashing reasons with `reasons`.
    pub(super) fn load_keyed(conn: &Connection, reasons: RandomState) -> Result<Self> {
        // A plain scan reads the table in the order it is stored, by network, so the records
        // of each source come sorted, ready to build its map in one go. (Reading by source,
        // through `bans_by_source`, would look every row up in the table.)
        let mut stmt = conn.prepare("SELECT source, network, reason, expires_ms FROM bans")?;
        let mut rows = stmt.query([])?;
        let mut index = Index {
            by_source: HashMap::new(),
            reasons,
        };
        let mut grouped: HashMap<String, Vec<(IpNet, Record)>> = HashMap::new();
        while let Some(row) = rows.next()? {
            let source = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let network = key::column(row, 1)?;
            let reason = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
            let record = index.record(reason, row.get(3)?);
            match grouped.get_mut(source) {
                Some(records) => records.push((network, record)),
                None => {
                    grouped.insert(source.to_owned(), vec![(network, record)]);
                }
            }
        }
        index.by_source = grouped
            .into_iter()
            .map(|(source, records)| (source, records.into_iter().collect()))
            .collect();
        Ok(index)
    }

    /// The record of a ban with this reason and expiry.
    pub(super) fn record(&self, reason: &str, expires_ms: Option<i64>) -> Record {
        Record::new(self.reasons.hash_one(reason), expires_ms)
    }

    /// The record of `ban`.
    pub(super) fn record_of(&self, ban: &Ban) -> Record {
        self.record(&ban.reason, ban.expires.map(Timestamp::as_millis))
    }

    /// Sets the record of `network` for `source`.
    pub(super) fn insert(&mut self, source: &str, network: IpNet, record: Record) {
        match self.by_source.get_mut(source) {
            Some(records) => {
                records.insert(network, record);
            }
            None => {
                self.by_source
                    .insert(source.to_owned(), BTreeMap::from([(network, record)]));
            }
        }
    }

    /// Deletes the record of `network` for `source`, if there is one.
    pub(super) fn remove(&mut self, source: &str, network: &IpNet) -> Option<Record> {
        let records = self.by_source.get_mut(source)?;
        let record = records.remove(network);
        if records.is_empty() {
            self.by_source.remove(source);
        }
        record
    }

    /// What the kernel must do about `network` at `now`, from the records of every source.
    pub(super) fn effective(&self, network: &IpNet, now: Timestamp) -> Effective {
        let now = now.as_millis();
        let mut live = self
            .by_source
            .values()
            .filter_map(|records| records.get(network))
            .filter(|record| record.is_live(now))
            .map(Record::expires_ms);
        match live.next() {
            None => Effective::Unbanned,
            Some(first) => Effective::Banned {
                expires: live.fold(first, longest).map(Timestamp::from_millis),
            },
        }
    }

    /// The effect on each of `networks`.
    pub(super) fn effects(&self, networks: &[IpNet], now: Timestamp) -> Vec<Effect> {
        networks
            .iter()
            .map(|network| (*network, self.effective(network, now)))
            .collect()
    }

    /// Every network with a record live at `now`, in order, with its latest expiry.
    pub(super) fn effective_all(&self, now: Timestamp) -> Vec<(IpNet, Option<Timestamp>)> {
        let now = now.as_millis();
        let mut live: Vec<(IpNet, Option<i64>)> = self
            .by_source
            .values()
            .flat_map(|records| records.iter())
            .filter(|(_, record)| record.is_live(now))
            .map(|(network, record)| (*network, record.expires_ms()))
            .collect();
        // One sorted run per source: the sort only merges them.
        live.sort_by_key(|&(network, _)| network);
        let mut effective: Vec<(IpNet, Option<i64>)> = Vec::with_capacity(live.len());
        for (network, expires) in live {
            match effective.last_mut() {
                Some(last) if last.0 == network => last.1 = longest(last.1, expires),
                _ => effective.push((network, expires)),
            }
        }
        effective
            .into_iter()
            .map(|(network, expires)| (network, expires.map(Timestamp::from_millis)))
            .collect()
    }

    /// The records that expired at or before `now`, as networks grouped by source.
    pub(super) fn expired(&self, now: Timestamp) -> Vec<(String, Vec<IpNet>)> {
        let now = now.as_millis();
        self.by_source
            .iter()
            .filter_map(|(source, records)| {
                let networks: Vec<IpNet> = records
                    .iter()
                    .filter(|(_, record)| !record.is_live(now))
                    .map(|(network, _)| *network)
                    .collect();
                (!networks.is_empty()).then(|| (source.clone(), networks))
            })
            .collect()
    }

    /// How to turn the records of `source` into `bans`, whose networks need not have their
    /// host bits cleared yet. Of two bans of the same network, the first counts.
    pub(super) fn plan_sync(&self, source: &str, bans: &[Ban]) -> SyncPlan {
        assert!(u32::try_from(bans.len()).is_ok(), "too many bans to sync");
        // Listing a million bans is most of the work of a sync that changes little, and it
        // splits in two: each half listed and sorted on its own thread, then merged in walking.
        let (first, second) = match bans.len() {
            ..PARALLEL_FROM => (self.listed(bans, 0), Listing::default()),
            len => {
                let (left, right) = bans.split_at(len / 2);
                std::thread::scope(|scope| {
                    let helper = std::thread::Builder::new()
                        .name("tracking-sqlite-sort".into())
                        .spawn_scoped(scope, || self.listed(right, left.len()));
                    let first = self.listed(left, 0);
                    let second = match helper {
                        Ok(helper) => helper.join().expect("listing does not panic"),
                        // No thread to be had: do it here.
                        Err(_) => self.listed(right, left.len()),
                    };
                    (first, second)
                })
            }
        };
        let listed = merged(&first.v4, &second.v4)
            .map(|l| (ipv4_of_key(l.network), l.record, l.position))
            .chain(merged(&first.v6, &second.v6).map(|l| (l.network, l.record, l.position)));

        let mut plan = SyncPlan::default();
        let mut old = self.by_source.get(source).into_iter().flatten().peekable();
        let mut previous = None;
        for (network, record, position) in listed {
            if previous == Some(network) {
                continue;
            }
            previous = Some(network);
            while let Some((gone, _)) = old.next_if(|(old_network, _)| **old_network < network) {
                plan.remove(*gone);
            }
            let position = position as usize;
            match old.next_if(|(old_network, _)| **old_network == network) {
                None => {
                    plan.added += 1;
                    plan.changes.push(Change::Add {
                        network,
                        position,
                        record,
                    });
                    plan.touched.push(network);
                }
                Some((_, old_record)) if *old_record == record => plan.unchanged += 1,
                Some((_, old_record)) => {
                    plan.updated += 1;
                    plan.changes.push(Change::Update {
                        network,
                        position,
                        record,
                    });
                    if old_record.expires_ms() != record.expires_ms() {
                        plan.touched.push(network);
                    }
                }
            }
        }
        for (gone, _) in old {
            plan.remove(*gone);
        }
        plan
    }

    /// `bans`, the first of which is at `offset` in the whole list, reduced to what the diff
    /// needs and sorted.
    fn listed(&self, bans: &[Ban], offset: usize) -> Listing {
        let mut listing = Listing {
            v4: Vec::with_capacity(bans.len()),
            v6: Vec::new(),
        };
        // Big lists give most lines no reason, or the same one: hash each run of equal
        // reasons once.
        let mut reason: (&str, u64) = ("", self.reasons.hash_one(""));
        for (position, ban) in bans.iter().enumerate() {
            if ban.reason != reason.0 {
                reason = (&ban.reason, self.reasons.hash_one(ban.reason.as_str()));
            }
            let record = Record::new(reason.1, ban.expires.map(Timestamp::as_millis));
            let position = (offset + position) as u32;
            match ban.network.trunc() {
                IpNet::V4(net) => listing.v4.push(Listed {
                    network: ipv4_key(&net),
                    record,
                    position,
                }),
                net @ IpNet::V6(_) => listing.v6.push(Listed {
                    network: net,
                    record,
                    position,
                }),
            }
        }
        // The position breaks ties, so the first of two duplicates comes first.
        listing
            .v4
            .sort_unstable_by_key(|listed| (listed.network, listed.position));
        listing
            .v6
            .sort_unstable_by_key(|listed| (listed.network, listed.position));
        listing
    }

    /// Applies a plan made by [`Index::plan_sync`], once it is committed.
    pub(super) fn apply_sync(&mut self, source: &str, plan: &SyncPlan) {
        if !self.by_source.contains_key(source) {
            // A first load, only additions in order: build the map in one pass rather than
            // insert them one by one.
            let records: BTreeMap<IpNet, Record> = plan
                .changes
                .iter()
                .filter_map(|change| match *change {
                    Change::Add {
                        network, record, ..
                    } => Some((network, record)),
                    _ => None,
                })
                .collect();
            if !records.is_empty() {
                self.by_source.insert(source.to_owned(), records);
            }
            return;
        }
        for change in &plan.changes {
            match *change {
                Change::Add {
                    network, record, ..
                }
                | Change::Update {
                    network, record, ..
                } => self.insert(source, network, record),
                Change::Remove(network) => {
                    self.remove(source, &network);
                }
            }
        }
    }

    /// A reader of the table that hashes reasons like this index, to compare the two.
    #[cfg(test)]
    pub(super) fn reasons(&self) -> RandomState {
        self.reasons.clone()
    }

    /// Every record, as `(source, network, record)` in that order, to compare indexes.
    #[cfg(test)]
    pub(super) fn records(&self) -> Vec<(String, IpNet, Record)> {
        let mut all: Vec<_> = self
            .by_source
            .iter()
            .flat_map(|(source, records)| {
                records
                    .iter()
                    .map(|(network, record)| (source.clone(), *network, *record))
            })
            .collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ban(network: &str, reason: &str, expires: Option<i64>) -> Ban {
        Ban {
            network: net(network),
            source: "list".into(),
            reason: reason.into(),
            created: Timestamp::from_millis(0),
            expires: expires.map(Timestamp::from_millis),
        }
    }

    fn insert_all(index: &mut Index, source: &str, bans: &[Ban]) {
        for b in bans {
            index.insert(source, b.network, index.record_of(b));
        }
    }

    /// The changes of a plan, as `+position`, `~position` and `-network` in that order.
    fn changes(plan: &SyncPlan) -> Vec<String> {
        plan.changes
            .iter()
            .map(|change| match change {
                Change::Add { position, .. } => format!("+{position}"),
                Change::Update { position, .. } => format!("~{position}"),
                Change::Remove(network) => format!("-{network}"),
            })
            .collect()
    }

    #[test]
    fn ipv4_keys_sort_like_networks() {
        let mut nets: Vec<Ipv4Net> = ["10.0.0.0/8", "9.255.0.0/16", "10.0.0.0/7", "10.0.0.0/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut keys: Vec<u64> = nets.iter().map(ipv4_key).collect();
        nets.sort();
        keys.sort();
        let back: Vec<IpNet> = keys.into_iter().map(ipv4_of_key).collect();
        let nets: Vec<IpNet> = nets.into_iter().map(IpNet::V4).collect();
        assert_eq!(back, nets);
    }

    #[test]
    fn a_record_tells_a_changed_reason_or_expiry() {
        let index = Index::default();
        let record = index.record("SBL1", None);
        assert_eq!(record, index.record("SBL1", None));
        assert_ne!(record, index.record("SBL2", None));
        assert_ne!(record, index.record("SBL1", Some(0)));
        assert_eq!(index.record("", Some(0)).expires_ms(), Some(0));
        assert_eq!(index.record("", None).expires_ms(), None);
    }

    #[test]
    fn a_plan_sorts_the_delta_by_network() {
        let mut index = Index::default();
        insert_all(
            &mut index,
            "list",
            &[
                ban("10.0.0.3/32", "same", None),
                ban("10.0.0.1/32", "old reason", None),
                ban("10.0.0.5/32", "gone", None),
                ban("10.0.0.2/32", "", Some(10)),
                ban("2001:db8::/32", "gone too", None),
            ],
        );
        let new = [
            ban("2001:db8::1/128", "new", None),
            ban("10.0.0.4/32", "new", None),
            ban("10.0.0.2/32", "", Some(20)),
            ban("10.0.0.1/32", "new reason", None),
            ban("10.0.0.3/32", "same", None),
            ban("10.0.0.0/32", "new", None),
        ];
        let plan = index.plan_sync("list", &new);
        assert_eq!(
            changes(&plan),
            [
                "+5",
                "~3",
                "~2",
                "+1",
                "-10.0.0.5/32",
                "-2001:db8::/32",
                "+0"
            ]
        );
        assert_eq!(
            (plan.added, plan.updated, plan.removed, plan.unchanged),
            (3, 2, 2, 1)
        );
        // A new reason alone changes nothing the kernel sees.
        let touched: Vec<IpNet> = [
            "10.0.0.0/32",
            "10.0.0.2/32",
            "10.0.0.4/32",
            "10.0.0.5/32",
            "2001:db8::/32",
            "2001:db8::1/128",
        ]
        .iter()
        .map(|s| net(s))
        .collect();
        assert_eq!(plan.touched, touched);
    }

    #[test]
    fn a_plan_clears_host_bits_and_keeps_the_first_of_two_bans() {
        let index = Index::default();
        let new = [
            ban("10.0.0.0/24", "first", None),
            ban("10.0.0.7/24", "second", None),
        ];
        let plan = index.plan_sync("list", &new);
        assert_eq!(changes(&plan), ["+0"]);
        assert!(matches!(
            plan.changes[0],
            Change::Add { network, .. } if network == net("10.0.0.0/24")
        ));
    }

    #[test]
    fn two_sorted_runs_merge_in_network_then_position_order() {
        let listed = |network: u64, position: u32| Listed {
            network,
            record: Record::new(0, None),
            position,
        };
        let a = [listed(1, 0), listed(3, 1), listed(5, 2)];
        let b = [listed(2, 3), listed(3, 4), listed(9, 5)];
        let order: Vec<(u64, u32)> = merged(&a, &b).map(|l| (l.network, l.position)).collect();
        assert_eq!(order, [(1, 0), (2, 3), (3, 1), (3, 4), (5, 2), (9, 5)]);
        assert_eq!(merged(&a, &[]).count(), 3);
        assert_eq!(merged(&[], &b).count(), 3);
    }

    #[test]
    fn a_list_big_enough_to_be_split_plans_like_a_small_one() {
        let host = |n: usize| {
            let network = IpNet::from(std::net::IpAddr::from(Ipv4Addr::from(n as u32)));
            Ban {
                network,
                ..ban("0.0.0.0/0", "", None)
            }
        };
        let n = PARALLEL_FROM + 1_000;
        let mut index = Index::default();
        let mut old: Vec<Ban> = (1..n).map(host).collect();
        old[6].reason = "old".into();
        old.push(host(n + 5));
        insert_all(&mut index, "list", &old);

        // In reverse, so the halves interleave; host n - 1 comes first, and again last with
        // another reason, which must be ignored.
        let mut new: Vec<Ban> = (0..n).rev().map(host).collect();
        new.push(Ban {
            reason: "duplicate".into(),
            ..host(n - 1)
        });
        let plan = index.plan_sync("list", &new);
        assert_eq!(
            (plan.added, plan.updated, plan.removed, plan.unchanged),
            (1, 1, 1, n - 2)
        );
        let changes: Vec<Change> = plan.changes.clone();
        assert!(matches!(changes[0], Change::Add { position, .. } if position == n - 1));
        assert!(matches!(changes[1], Change::Update { position, .. } if position == n - 8));
        assert_eq!(changes[2], Change::Remove(host(n + 5).network));
    }

    #[test]
    fn applying_a_plan_gives_the_new_list() {
        for old in [
            vec![],
            vec![ban("10.0.0.1/32", "a", None), ban("10.0.0.9/32", "", None)],
        ] {
            let mut index = Index::default();
            insert_all(&mut index, "list", &old);
            insert_all(&mut index, "cli", &[ban("10.0.0.9/32", "", None)]);
            let new = [
                ban("10.0.0.2/32", "b", Some(5)),
                ban("10.0.0.1/32", "c", None),
            ];
            let plan = index.plan_sync("list", &new);
            index.apply_sync("list", &plan);

            let mut expected = Index {
                reasons: index.reasons(),
                ..Index::default()
            };
            insert_all(&mut expected, "list", &new);
            insert_all(&mut expected, "cli", &[ban("10.0.0.9/32", "", None)]);
            assert_eq!(index.records(), expected.records());
        }
    }

    #[test]
    fn the_effective_expiry_is_the_longest_live_one() {
        let mut index = Index::default();
        let network = net("192.0.2.0/24");
        let now = Timestamp::from_millis(100);
        assert_eq!(index.effective(&network, now), Effective::Unbanned);

        index.insert("a", network, index.record("", Some(50)));
        assert_eq!(
            index.effective(&network, now),
            Effective::Unbanned,
            "expired"
        );

        index.insert("b", network, index.record("", Some(200)));
        index.insert("c", network, index.record("", Some(150)));
        let until_200 = Effective::Banned {
            expires: Some(Timestamp::from_millis(200)),
        };
        assert_eq!(index.effective(&network, now), until_200);
        assert_eq!(
            index.effective_all(now),
            [(network, Some(Timestamp::from_millis(200)))]
        );

        index.insert("d", network, index.record("", None));
        assert_eq!(
            index.effective(&network, now),
            Effective::Banned { expires: None }
        );
        assert_eq!(index.effective_all(now), [(network, None)]);
    }

    #[test]
    fn a_source_without_records_is_forgotten() {
        let mut index = Index::default();
        insert_all(&mut index, "list", &[ban("10.0.0.1/32", "", None)]);
        assert!(index.remove("list", &net("10.0.0.1/32")).is_some());
        assert!(index.by_source.is_empty());
        assert!(index.remove("list", &net("10.0.0.1/32")).is_none());
    }
}
