//! The thread that owns the connection, and every request it serves.
//!
//! Requests arrive as [`Job`]s, closures over the [`Worker`], so adding a kind of request is
//! adding a method here (or a function of the connection, for requests that leave the ban index
//! alone: `visitors.rs`, `ua_rules.rs`) and a call in the handle. Each mutating request
//! runs in one IMMEDIATE transaction (the write lock taken up front, so it cannot fail halfway
//! for want of it) and updates the in-memory [`Index`] only after the commit, so a failure
//! leaves both the file and the index as they were. When no request waits, the worker asks the
//! checkpoint thread (`checkpoint.rs`) to copy what was committed into the database file.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::mpsc::{Receiver, TryRecvError},
};

use ipnet::IpNet;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::{
    checkpoint::Checkpoints,
    index::{self, Index},
    key,
    record::Record,
    sync,
};
use crate::{
    ban::{self, Allow, Ban, Effect, ListEntry},
    store::{Admission, Result, StoreError, SyncReport},
    time::Timestamp,
};

/// The records of the index, then of the table, for tests.
#[cfg(test)]
pub(super) type IndexAndTable = (
    Vec<(String, IpNet, super::record::Record)>,
    Vec<(String, IpNet, super::record::Record)>,
);

/// One request for the worker thread.
pub(super) type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The state the worker thread owns.
pub(super) struct Worker {
    conn: Connection,
    /// The bans table in memory, read on first need (see `index.rs`); `None` until then and
    /// after a request panicked, when it may no longer match the table.
    index: Option<Index>,
    /// `PRAGMA data_version` when the index was last known to match the table. It changes when
    /// another connection commits (someone in the `sqlite3` shell, a second agent on the same
    /// file); the index is then read again rather than trusted.
    index_version: Option<i64>,
    /// What a request is done with but is costly to free (a million synced bans take tens of
    /// milliseconds): freed after the answer is sent rather than before.
    garbage: Vec<Box<dyn Send>>,
    /// The checkpoint thread, asked for a checkpoint whenever no request waits.
    checkpoints: Checkpoints,
}

impl Worker {
    pub(super) fn new(conn: Connection, checkpoints: Checkpoints) -> Self {
        Worker {
            conn,
            index: None,
            index_version: None,
            garbage: Vec::new(),
            checkpoints,
        }
    }

    /// Serves jobs until every sender is gone, then closes the connection.
    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {
                    self.checkpoints.request();
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
            };
            // A panicking request is a bug, but it must not take the store down with it. Its
            // transaction rolled back as it unwound; only the index may be half updated.
            if catch_unwind(AssertUnwindSafe(|| job(&mut self))).is_err() {
                tracing::error!("a store request panicked; reloading the ban index");
                self.index = None;
            }
            self.garbage.clear();
        }
    }

    /// The connection, for requests that have nothing to do with the ban index.
    pub(super) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The index, for a request that only reads it.
    fn index(&mut self) -> Result<&mut Index> {
        fresh_index(&self.conn, &mut self.index, &mut self.index_version)
    }

    /// A write transaction and the index as of its start. Until it ends nobody else can
    /// commit, so the index stays true to the table it writes.
    fn write(&mut self) -> Result<(Transaction<'_>, &mut Index)> {
        let tx = begin(&mut self.conn)?;
        let index = fresh_index(&tx, &mut self.index, &mut self.index_version)?;
        Ok((tx, index))
    }

    pub(super) fn list_bans(&mut self) -> Result<Vec<Ban>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT network, source, reason, created_ms, expires_ms FROM bans
             ORDER BY network, source",
        )?;
        let mut rows = stmt.query([])?;
        let mut bans = Vec::new();
        while let Some(row) = rows.next()? {
            bans.push(Ban {
                network: key::column(row, 0)?,
                source: row.get(1)?,
                reason: row.get(2)?,
                created: Timestamp::from_millis(row.get(3)?),
                expires: row.get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
            });
        }
        Ok(bans)
    }

    pub(super) fn effective_bans(
        &mut self,
        now: Timestamp,
    ) -> Result<Vec<(IpNet, Option<Timestamp>)>> {
        Ok(self.index()?.effective_all(now))
    }

    pub(super) fn add_bans(&mut self, mut bans: Vec<Ban>, now: Timestamp) -> Result<Vec<Effect>> {
        normalise(&mut bans);
        // Key order for the B-tree; stable, so of two bans of one record the last still wins.
        bans.sort_by(|a, b| (a.network, &a.source).cmp(&(b.network, &b.source)));
        let (tx, index) = self.write()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO bans (network, source, reason, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (network, source)
                 DO UPDATE SET reason = excluded.reason, expires_ms = excluded.expires_ms",
            )?;
            for ban in &bans {
                upsert.execute(params![
                    &key::encode(&ban.network)[..],
                    ban.source,
                    ban.reason,
                    ban.created.as_millis(),
                    ban.expires.map(Timestamp::as_millis),
                ])?;
            }
        }
        tx.commit()?;
        // The bans are in (network, source) order: gather each source's, in order.
        let mut by_source: Vec<(&str, Vec<(IpNet, Record)>)> = Vec::new();
        for ban in &bans {
            let record = index.record_of(ban);
            match by_source
                .iter_mut()
                .find(|(source, _)| *source == ban.source)
            {
                Some((_, changes)) => changes.push((ban.network, record)),
                None => by_source.push((&ban.source, vec![(ban.network, record)])),
            }
        }
        for (source, changes) in by_source {
            index.upsert(source, &changes);
        }
        let mut touched: Vec<IpNet> = bans.iter().map(|ban| ban.network).collect();
        touched.dedup();
        Ok(index.effects(&touched, now))
    }

    pub(super) fn remove_bans(
        &mut self,
        networks: Vec<IpNet>,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(Vec<Ban>, Vec<Effect>)> {
        let networks = ban::distinct_networks(networks);
        let (tx, index) = self.write()?;
        let mut removed = Vec::new();
        {
            // The table says which records there were (`RETURNING`), with the `created` that
            // the index does not keep.
            let mut delete = tx.prepare_cached(
                "DELETE FROM bans WHERE network = ?1 AND (?2 IS NULL OR source = ?2)
                 RETURNING source, reason, created_ms, expires_ms",
            )?;
            for network in &networks {
                let mut rows = delete.query(params![&key::encode(network)[..], source])?;
                while let Some(row) = rows.next()? {
                    removed.push(Ban {
                        network: *network,
                        source: row.get(0)?,
                        reason: row.get(1)?,
                        created: Timestamp::from_millis(row.get(2)?),
                        expires: row.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
                    });
                }
            }
        }
        tx.commit()?;
        removed.sort_by(|a, b| (&a.source, a.network).cmp(&(&b.source, b.network)));
        for of_source in removed.chunk_by(|a, b| a.source == b.source) {
            let networks: Vec<IpNet> = of_source.iter().map(|ban| ban.network).collect();
            index.remove(&of_source[0].source, &networks);
        }
        removed.sort_by(|a, b| (a.network, &a.source).cmp(&(b.network, &b.source)));
        let mut touched: Vec<IpNet> = removed.iter().map(|ban| ban.network).collect();
        touched.dedup();
        let effects = index.effects(&touched, now);
        Ok((removed, effects))
    }

    pub(super) fn sync_source(
        &mut self,
        source: String,
        entries: Vec<ListEntry>,
        now: Timestamp,
        admission: &dyn Admission,
    ) -> Result<SyncReport> {
        if entries.len() > index::MAX_LISTED {
            return Err(StoreError::ListTooLong {
                count: entries.len(),
                max: index::MAX_LISTED,
            });
        }
        let (tx, index) = self.write()?;
        let mut plan = index.plan_sync(&source, &entries, now);
        admission
            .admit(&plan.effects)
            .map_err(StoreError::Refused)?;
        sync::write(&tx, &source, &entries, &plan, now)?;
        tx.commit()?;
        let report = SyncReport {
            added: plan.added(),
            updated: plan.updated(),
            removed: plan.removed(),
            unchanged: plan.unchanged,
            effects: std::mem::take(&mut plan.effects),
            // One agent per file: nobody else's list to replace.
            replaced: None,
            bulk_at: None,
        };
        index.apply_sync(&source, plan);
        self.garbage.push(Box::new(entries));
        Ok(report)
    }

    pub(super) fn remove_expired(&mut self, now: Timestamp) -> Result<Vec<Effect>> {
        let (tx, index) = self.write()?;
        let expired = index.expired(now);
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM bans WHERE network = ?1 AND source = ?2")?;
            for (source, networks) in &expired {
                for network in networks {
                    delete.execute(params![&key::encode(network)[..], source])?;
                }
            }
        }
        tx.commit()?;
        let mut touched = Vec::new();
        for (source, networks) in expired {
            index.remove(&source, &networks);
            touched.extend(networks);
        }
        touched.sort_unstable();
        touched.dedup();
        Ok(index.effects(&touched, now))
    }

    pub(super) fn list_allows(&mut self) -> Result<Vec<Allow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT network, note, created_ms FROM allows ORDER BY network")?;
        let mut rows = stmt.query([])?;
        let mut allows = Vec::new();
        while let Some(row) = rows.next()? {
            allows.push(Allow {
                network: key::column(row, 0)?,
                note: row.get(1)?,
                created: Timestamp::from_millis(row.get(2)?),
            });
        }
        Ok(allows)
    }

    pub(super) fn add_allows(&mut self, allows: Vec<Allow>) -> Result<()> {
        let tx = begin(&mut self.conn)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO allows (network, note, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (network) DO UPDATE SET note = excluded.note",
            )?;
            for allow in &allows {
                upsert.execute(params![
                    &key::encode(&allow.network.trunc())[..],
                    allow.note,
                    allow.created.as_millis(),
                ])?;
            }
        }
        Ok(tx.commit()?)
    }

    pub(super) fn remove_allows(&mut self, networks: Vec<IpNet>) -> Result<Vec<Allow>> {
        let networks = ban::distinct_networks(networks);
        let tx = begin(&mut self.conn)?;
        let mut removed = Vec::new();
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM allows WHERE network = ?1 RETURNING note, created_ms",
            )?;
            for network in networks {
                let mut rows = delete.query(params![&key::encode(&network)[..]])?;
                while let Some(row) = rows.next()? {
                    removed.push(Allow {
                        network,
                        note: row.get(0)?,
                        created: Timestamp::from_millis(row.get(1)?),
                    });
                }
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// The records of the index as it is and as loaded afresh from the table, for tests that
    /// check the index never drifts from the table.
    #[cfg(test)]
    pub(super) fn index_and_table(&mut self) -> Result<IndexAndTable> {
        let index = fresh_index(&self.conn, &mut self.index, &mut self.index_version)?;
        let table = Index::load_keyed(&self.conn, index.reasons())?.records();
        Ok((index.records(), table))
    }
}

/// A transaction that holds the write lock from the start, so that it cannot fail halfway for
/// want of it.
fn begin(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// `index`, loaded or read again if the table changed behind it since `version`.
fn fresh_index<'a>(
    conn: &Connection,
    index: &'a mut Option<Index>,
    version: &mut Option<i64>,
) -> Result<&'a mut Index> {
    let now: i64 = conn.query_row("PRAGMA data_version", [], |row| row.get(0))?;
    if *version != Some(now) {
        *index = None;
    }
    if index.is_none() {
        *index = Some(Index::load(conn)?);
        *version = Some(now);
    }
    Ok(index.as_mut().expect("loaded above"))
}

/// Clears host bits, which the keys must not have.
fn normalise(bans: &mut [Ban]) {
    for ban in bans {
        ban.network = ban.network.trunc();
    }
}
