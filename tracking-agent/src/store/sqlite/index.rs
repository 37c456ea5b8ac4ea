//! What the worker remembers of the `bans` table: for each source, each network it bans, when
//! that ends, and a fingerprint of the reason.
//!
//! This is what makes a sync cheap: the new list is diffed against memory and only the delta
//! touches SQLite, and the effects of a change are computed without a query. The worker keeps
//! it equal to the table: it applies a change only once its transaction has committed, reads
//! the table again when another connection has written to it, and drops the index if a request
//! dies halfway.
//!
//! Choices that come from measuring a million-record sync on a small, busy virtual machine,
//! where a random memory access costs hundreds of nanoseconds and a fresh page of memory
//! microseconds:
//! - Each source's records are sorted vectors of compact keys (`records.rs`). A sync sorts the
//!   list's keys with a radix sort (a few passes over 8 bytes an entry; `plan.rs`), walks them beside the
//!   source's records, and patches the vectors with the delta: no random lookups, and the
//!   delta comes out in primary-key order, the order SQLite writes fastest.
//! - A record is 16 bytes: the reason is kept as a keyed 63-bit hash, not as text. The diff only
//!   needs to know whether a reason changed; with a secret random key, a change goes unnoticed
//!   with a chance of 2^-63, and then only the reason shown in listings is stale. Expiries,
//!   which decide what the kernel drops, are compared exactly.
//! - A synced record never expires, so the effect of listing a network is known without
//!   looking at the other sources; only the networks a sync removes are looked up there.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
};

use ipnet::IpNet;
use rusqlite::Connection;

pub(super) use super::plan::{MAX_LISTED, SyncPlan};
use super::{
    key, plan,
    record::{Live, Record},
    records::{self, Key, Records, Slot},
};
use crate::{
    ban::{Ban, Effect, Effective, ListEntry},
    store::Result,
    time::Timestamp,
};

/// The records of every source.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Source name to its records; a source with no record left has no entry, so looking a
    /// network up costs one search per source that holds anything.
    by_source: HashMap<String, Records>,
    /// The key of the reason hashes, random for each index so nobody can craft a collision.
    reasons: RandomState,
    /// The buffers a sync sorts the list in, kept from one sync to the next: a million-entry
    /// list needs 16 MB, and fresh memory costs more to touch than the sort itself.
    scratch: (Vec<u64>, Vec<u64>),
}

impl Index {
    /// Reads the whole table.
    pub(super) fn load(conn: &Connection) -> Result<Self> {
        Self::load_keyed(conn, RandomState::new())
    }

    /// Reads the whole table, hashing reasons with `reasons`.
    pub(super) fn load_keyed(conn: &Connection, reasons: RandomState) -> Result<Self> {
        // A plain scan reads the table in the order it is stored, by network, so the records
        // of each source come sorted, ready to append.
        let mut stmt = conn.prepare("SELECT source, network, reason, expires_ms FROM bans")?;
        let mut rows = stmt.query([])?;
        let mut index = Index {
            reasons,
            ..Index::default()
        };
        while let Some(row) = rows.next()? {
            let source = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let network = key::column(row, 1)?;
            let reason = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
            let record = index.record(reason, row.get(3)?);
            let records = match index.by_source.get_mut(source) {
                Some(records) => records,
                None => index.by_source.entry(source.to_owned()).or_default(),
            };
            match network {
                IpNet::V4(net) => records.v4.push(Slot {
                    key: records::v4(&net),
                    record,
                }),
                IpNet::V6(net) => records.v6.push(Slot {
                    key: records::v6(&net),
                    record,
                }),
            }
        }
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

    /// Sets the records of `changes` (networks with host bits clear) for `source`; of two of
    /// one network, the last wins.
    pub(super) fn upsert(&mut self, source: &str, changes: &[(IpNet, Record)]) {
        if changes.is_empty() {
            return;
        }
        match self.by_source.get_mut(source) {
            Some(records) => records.upsert(changes),
            None => self
                .by_source
                .entry(source.to_owned())
                .or_default()
                .upsert(changes),
        }
    }

    /// Deletes the records of `networks` (host bits clear) for `source`, those it has.
    pub(super) fn remove(&mut self, source: &str, networks: &[IpNet]) {
        let Some(records) = self.by_source.get_mut(source) else {
            return;
        };
        records.remove(networks);
        if records.is_empty() {
            self.by_source.remove(source);
        }
    }

    /// What the kernel must do about `network` at `now`, from the records of every source.
    pub(super) fn effective(&self, network: &IpNet, now: Timestamp) -> Effective {
        let mut live = Live::default();
        for records in self.by_source.values() {
            if let Some(record) = records.get(network) {
                live.add(&record, now.as_millis());
            }
        }
        live.effective()
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
        let mut all =
            Vec::with_capacity(self.by_source.values().map(Records::len).max().unwrap_or(0));
        merge_live(
            self.by_source.values().map(|r| &r.v4[..]).collect(),
            now,
            &mut all,
        );
        merge_live(
            self.by_source.values().map(|r| &r.v6[..]).collect(),
            now,
            &mut all,
        );
        all
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
                    .map(|(network, _)| network)
                    .collect();
                (!networks.is_empty()).then(|| (source.clone(), networks))
            })
            .collect()
    }

    /// How to turn the records of `source` into `entries`, whose networks need not have their
    /// host bits cleared yet; of two entries of one network, the first counts. At most
    /// [`MAX_LISTED`] entries.
    pub(super) fn plan_sync(
        &mut self,
        source: &str,
        entries: &[ListEntry],
        now: Timestamp,
    ) -> SyncPlan {
        let empty = Records::default();
        let old = self.by_source.get(source).unwrap_or(&empty);
        let others = self
            .by_source
            .iter()
            .filter(|(name, _)| *name != source)
            .map(|(_, records)| records);
        plan::plan(old, others, entries, &self.reasons, &mut self.scratch, now)
    }

    /// Applies a plan made by [`Index::plan_sync`], once it is committed.
    pub(super) fn apply_sync(&mut self, source: &str, plan: SyncPlan) {
        let records = self.by_source.entry(source.to_owned()).or_default();
        records::remove(&mut records.v4, &plan.v4.removed);
        records::remove(&mut records.v6, &plan.v6.removed);
        records::upsert(&mut records.v4, plan.v4.changes);
        records::upsert(&mut records.v6, plan.v6.changes);
        if records.is_empty() {
            self.by_source.remove(source);
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
                    .map(|(network, record)| (source.clone(), network, record))
            })
            .collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }
}

/// Appends to `out`, in order, every network with a live record in one of `tables` (the
/// records of one family, a table per source), with its latest expiry.
fn merge_live<K: Key>(
    tables: Vec<&[Slot<K>]>,
    now_ms: i64,
    out: &mut Vec<(IpNet, Option<Timestamp>)>,
) {
    let mut at = vec![0; tables.len()];
    loop {
        let next = tables
            .iter()
            .zip(&at)
            .filter_map(|(table, &i)| table.get(i).map(|slot| slot.key))
            .min();
        let Some(key) = next else {
            return;
        };
        let mut live = Live::default();
        for (table, i) in tables.iter().zip(&mut at) {
            if let Some(slot) = table.get(*i).filter(|slot| slot.key == key) {
                live.add(&slot.record, now_ms);
                *i += 1;
            }
        }
        if let Effective::Banned { expires } = live.effective() {
            out.push((key.network(), expires));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn entry(network: &str, reason: &str) -> ListEntry {
        ListEntry {
            network: net(network),
            reason: reason.into(),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_millis(1_000)
    }

    /// Sets records of `source` as `add_bans` would.
    fn set(index: &mut Index, source: &str, records: &[(&str, &str, Option<i64>)]) {
        let changes: Vec<(IpNet, Record)> = records
            .iter()
            .map(|&(network, reason, expires)| (net(network), index.record(reason, expires)))
            .collect();
        index.upsert(source, &changes);
    }

    /// The changes of a plan, as `+position`, `~position` and `-network`, each family in
    /// network order, adds and updates before removals.
    fn changes(plan: &SyncPlan) -> Vec<String> {
        let origins = plan.v4.origins.iter().chain(&plan.v6.origins);
        let mut shown: Vec<String> = origins
            .map(|o| format!("{}{}", if o.added { "+" } else { "~" }, o.position))
            .collect();
        shown.extend(plan.v4.removed.iter().map(|k| format!("-{}", k.network())));
        shown.extend(plan.v6.removed.iter().map(|k| format!("-{}", k.network())));
        shown
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
        set(
            &mut index,
            "list",
            &[
                ("10.0.0.3/32", "same", None),
                ("10.0.0.1/32", "old reason", None),
                ("10.0.0.5/32", "gone", None),
                ("10.0.0.2/32", "", Some(10)),
                ("2001:db8::/32", "gone too", None),
            ],
        );
        let new = [
            entry("2001:db8::1/128", "new"),
            entry("10.0.0.4/32", "new"),
            entry("10.0.0.2/32", ""),
            entry("10.0.0.1/32", "new reason"),
            entry("10.0.0.3/32", "same"),
            entry("10.0.0.0/32", "new"),
        ];
        let plan = index.plan_sync("list", &new, now());
        assert_eq!(
            changes(&plan),
            [
                "+5",
                "~3",
                "~2",
                "+1",
                "+0",
                "-10.0.0.5/32",
                "-2001:db8::/32"
            ]
        );
        assert_eq!(
            (plan.added(), plan.updated(), plan.removed(), plan.unchanged),
            (3, 2, 2, 1)
        );
        // A new reason alone changes nothing the kernel sees; a lifted expiry does.
        let banned = Effective::Banned { expires: None };
        assert_eq!(
            plan.effects,
            [
                (net("10.0.0.0/32"), banned),
                (net("10.0.0.2/32"), banned),
                (net("10.0.0.4/32"), banned),
                (net("10.0.0.5/32"), Effective::Unbanned),
                (net("2001:db8::/32"), Effective::Unbanned),
                (net("2001:db8::1/128"), banned),
            ]
        );
    }

    #[test]
    fn a_removed_network_another_source_holds_stays_banned() {
        let mut index = Index::default();
        set(
            &mut index,
            "list",
            &[("10.0.0.1/32", "", None), ("10.0.0.2/32", "", None)],
        );
        set(
            &mut index,
            "cli",
            &[
                ("10.0.0.1/32", "", Some(5_000)),
                ("10.0.0.2/32", "", Some(500)),
            ],
        );
        let plan = index.plan_sync("list", &[], now());
        assert_eq!(
            plan.effects,
            [
                (
                    net("10.0.0.1/32"),
                    Effective::Banned {
                        expires: Some(Timestamp::from_millis(5_000))
                    }
                ),
                (net("10.0.0.2/32"), Effective::Unbanned),
            ]
        );
    }

    #[test]
    fn a_plan_clears_host_bits_and_keeps_the_first_of_two_entries() {
        let mut index = Index::default();
        let new = [
            entry("10.0.0.0/24", "first"),
            entry("10.0.0.7/24", "second"),
        ];
        let plan = index.plan_sync("list", &new, now());
        assert_eq!(changes(&plan), ["+0"]);
        assert_eq!(plan.v4.changes[0].key.network(), net("10.0.0.0/24"));
    }

    #[test]
    fn a_big_list_plans_like_a_small_one() {
        let host = |n: usize| ListEntry {
            network: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(n as u32))),
            reason: "".into(),
        };
        // Big enough for the radix sort, in reverse so that it has work to do; host n - 1
        // comes first, and again last with another reason, which must be ignored.
        let n = 10_000;
        let mut index = Index::default();
        let mut old: Vec<(IpNet, Record)> = (1..n)
            .map(|i| (host(i).network, index.record("", None)))
            .collect();
        old[6].1 = index.record("old", None);
        old.push((host(n + 5).network, index.record("", None)));
        index.upsert("list", &old);

        let mut new: Vec<ListEntry> = (0..n).rev().map(host).collect();
        new.push(ListEntry {
            reason: "duplicate".into(),
            ..host(n - 1)
        });
        let plan = index.plan_sync("list", &new, now());
        assert_eq!(
            (plan.added(), plan.updated(), plan.removed(), plan.unchanged),
            (1, 1, 1, n - 2)
        );
        assert_eq!(
            changes(&plan),
            [
                format!("+{}", n - 1),
                format!("~{}", n - 8),
                format!("-{}", host(n + 5).network)
            ]
        );
    }

    #[test]
    fn applying_a_plan_gives_the_new_list() {
        for old in [
            vec![],
            vec![
                ("10.0.0.1/32", "a", None),
                ("10.0.0.9/32", "", None),
                ("2001:db8::/32", "", Some(7)),
            ],
        ] {
            let mut index = Index::default();
            set(&mut index, "list", &old);
            set(&mut index, "cli", &[("10.0.0.9/32", "", None)]);
            let new = [
                entry("10.0.0.2/32", "b"),
                entry("10.0.0.1/32", "c"),
                entry("2001:db8::/32", ""),
            ];
            let plan = index.plan_sync("list", &new, now());
            index.apply_sync("list", plan);

            let mut expected = Index {
                reasons: index.reasons(),
                ..Index::default()
            };
            set(
                &mut expected,
                "list",
                &[
                    ("10.0.0.2/32", "b", None),
                    ("10.0.0.1/32", "c", None),
                    ("2001:db8::/32", "", None),
                ],
            );
            set(&mut expected, "cli", &[("10.0.0.9/32", "", None)]);
            assert_eq!(index.records(), expected.records());
        }
    }

    #[test]
    fn the_effective_expiry_is_the_longest_live_one() {
        let mut index = Index::default();
        let network = "192.0.2.0/24";
        let now = Timestamp::from_millis(100);
        assert_eq!(index.effective(&net(network), now), Effective::Unbanned);

        set(&mut index, "a", &[(network, "", Some(50))]);
        assert_eq!(
            index.effective(&net(network), now),
            Effective::Unbanned,
            "expired"
        );
        assert_eq!(index.effective_all(now), []);

        set(&mut index, "b", &[(network, "", Some(200))]);
        set(&mut index, "c", &[(network, "", Some(150))]);
        let until_200 = Effective::Banned {
            expires: Some(Timestamp::from_millis(200)),
        };
        assert_eq!(index.effective(&net(network), now), until_200);
        assert_eq!(
            index.effective_all(now),
            [(net(network), Some(Timestamp::from_millis(200)))]
        );

        set(&mut index, "d", &[(network, "", None)]);
        assert_eq!(
            index.effective(&net(network), now),
            Effective::Banned { expires: None }
        );
        assert_eq!(index.effective_all(now), [(net(network), None)]);
    }

    #[test]
    fn every_source_counts_in_the_effective_bans_in_network_order() {
        let mut index = Index::default();
        set(
            &mut index,
            "a",
            &[
                ("10.0.0.3/32", "", None),
                ("10.0.0.1/32", "", Some(500)),
                ("2001:db8::/32", "", None),
            ],
        );
        set(
            &mut index,
            "b",
            &[
                ("10.0.0.2/32", "", None),
                ("10.0.0.1/32", "", Some(900)),
                ("10.0.0.4/32", "", Some(50)),
            ],
        );
        assert_eq!(
            index.effective_all(Timestamp::from_millis(100)),
            [
                (net("10.0.0.1/32"), Some(Timestamp::from_millis(900))),
                (net("10.0.0.2/32"), None),
                (net("10.0.0.3/32"), None),
                (net("2001:db8::/32"), None),
            ]
        );
    }

    #[test]
    fn a_source_without_records_is_forgotten() {
        let mut index = Index::default();
        set(&mut index, "list", &[("10.0.0.1/32", "", None)]);
        index.remove("list", &[net("10.0.0.1/32")]);
        assert!(index.by_source.is_empty());
        index.remove("list", &[net("10.0.0.1/32")]);
        let plan = index.plan_sync("list", &[], now());
        index.apply_sync("list", plan);
        assert!(index.by_source.is_empty());
    }
}
