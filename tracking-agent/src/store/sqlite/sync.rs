//! Writing the delta of a sync: a million new records for a first load, a few thousand changes
//! for a re-sync.
//!
//! Rows are inserted and deleted [`ROWS`] at a time, by one statement run over and over. What
//! SQLite spends on running a statement (binding, starting, resetting) is more than what it
//! spends on a row, so a million single-row inserts take about twice as long.
//!
//! Everything is in network order, the primary key's, and removals and additions go together:
//! a batch of each covers the same stretch of the table. A re-sync's changes are spread over
//! the whole table, a row or two a page; done one kind after the other, every page is read,
//! changed and written out of SQLite's page cache (2 MB) twice, once for each kind. Together,
//! the pages of a stretch are still in the cache for the second batch.

use ipnet::IpNet;
use rusqlite::{Transaction, params};

use super::{
    key,
    plan::{Delta, SyncPlan},
    records::Key,
};
use crate::{ban::ListEntry, store::Result, time::Timestamp};

/// Rows per statement: past this, longer statements gain little.
const ROWS: usize = 64;

/// Writes `plan`, made for `entries`, into the records of `source`; new records are created at
/// `now`. A synced record never expires.
pub(super) fn write(
    tx: &Transaction<'_>,
    source: &str,
    entries: &[ListEntry],
    plan: &SyncPlan,
    now: Timestamp,
) -> Result<()> {
    let mut update = tx.prepare_cached(
        "UPDATE bans SET reason = ?3, expires_ms = NULL WHERE network = ?1 AND source = ?2",
    )?;
    for (network, reason) in
        changed(&plan.v4, entries, false).chain(changed(&plan.v6, entries, false))
    {
        update.execute(params![&key::encode(&network)[..], source, reason])?;
    }
    let removed = plan.v4.removed.iter().map(|key| key.network());
    let removed = removed.chain(plan.v6.removed.iter().map(|key| key.network()));
    let mut added = changed(&plan.v4, entries, true)
        .chain(changed(&plan.v6, entries, true))
        .map(|(network, reason)| (key::encode(&network), reason))
        .peekable();
    let mut deletes = Batches::new(|batch: &[[u8; key::LEN]]| delete(tx, source, batch));
    let mut inserts =
        Batches::new(|batch: &[([u8; key::LEN], &str)]| insert(tx, source, now, batch));
    // The additions keep pace with the removals: those before the next removed network go first.
    for network in removed {
        let network = key::encode(&network);
        while let Some(row) = added.next_if(|(key, _)| *key < network) {
            inserts.push(row)?;
        }
        deletes.push(network)?;
    }
    for row in added {
        inserts.push(row)?;
    }
    deletes.finish()?;
    inserts.finish()
}

/// The networks and reasons of the changes of `delta` that add records (`added`) or update them.
fn changed<'a, K: Key>(
    delta: &'a Delta<K>,
    entries: &'a [ListEntry],
    added: bool,
) -> impl Iterator<Item = (IpNet, &'a str)> + 'a {
    delta
        .changes
        .iter()
        .zip(&delta.origins)
        .filter(move |(_, origin)| origin.added == added)
        .map(|(slot, origin)| {
            (
                slot.key.network(),
                &*entries[origin.position as usize].reason,
            )
        })
}

/// Inserts `rows` (network, reason) as records of `source` created at `now`.
fn insert(
    tx: &Transaction<'_>,
    source: &str,
    now: Timestamp,
    rows: &[([u8; key::LEN], &str)],
) -> Result<()> {
    // `?1` is the source and `?2` the creation time of every row; then each row's network and
    // reason.
    let values: Vec<String> = (0..rows.len())
        .map(|i| format!("(?{}, ?1, ?{}, ?2, NULL)", 3 + 2 * i, 4 + 2 * i))
        .collect();
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO bans (network, source, reason, created_ms, expires_ms) VALUES {}",
        values.join(", ")
    ))?;
    stmt.raw_bind_parameter(1, source)?;
    stmt.raw_bind_parameter(2, now.as_millis())?;
    for (i, (network, reason)) in rows.iter().enumerate() {
        stmt.raw_bind_parameter(3 + 2 * i, &network[..])?;
        stmt.raw_bind_parameter(4 + 2 * i, *reason)?;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Deletes the records of `networks` for `source`.
fn delete(tx: &Transaction<'_>, source: &str, networks: &[[u8; key::LEN]]) -> Result<()> {
    let keys: Vec<String> = (0..networks.len()).map(|i| format!("?{}", 2 + i)).collect();
    let mut stmt = tx.prepare_cached(&format!(
        "DELETE FROM bans WHERE source = ?1 AND network IN ({})",
        keys.join(", ")
    ))?;
    stmt.raw_bind_parameter(1, source)?;
    for (i, network) in networks.iter().enumerate() {
        stmt.raw_bind_parameter(2 + i, &network[..])?;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Items run [`ROWS`] at a time as they come, and the rest one at a time at the end: one
/// statement for each batch size, so that only two are prepared.
struct Batches<T, F> {
    batch: Vec<T>,
    run: F,
}

impl<T, F: FnMut(&[T]) -> Result<()>> Batches<T, F> {
    fn new(run: F) -> Self {
        Batches {
            batch: Vec::with_capacity(ROWS),
            run,
        }
    }

    fn push(&mut self, item: T) -> Result<()> {
        self.batch.push(item);
        if self.batch.len() == ROWS {
            (self.run)(&self.batch)?;
            self.batch.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        for item in self.batch.chunks(1) {
            (self.run)(item)?;
        }
        Ok(())
    }
}
