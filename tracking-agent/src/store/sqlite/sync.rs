//! Writing the delta of a sync: a million new records for a first load, a few thousand changes
//! for a re-sync.
//!
//! Rows are inserted and deleted [`ROWS`] at a time, by one statement run over and over. What
//! SQLite spends on running a statement (binding, starting, resetting) is more than what it
//! spends on a row, so a million single-row inserts take about twice as long. Each part is in
//! network order, the primary key's: the table's pages are visited once each, in order.

use ipnet::IpNet;
use rusqlite::{CachedStatement, Transaction, params};

use super::{
    index::{Delta, SyncPlan},
    key,
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
    let removed = plan.v4.removed.iter().map(|key| key.network());
    delete(
        tx,
        source,
        removed.chain(plan.v6.removed.iter().map(|key| key.network())),
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE bans SET reason = ?3, expires_ms = NULL WHERE network = ?1 AND source = ?2",
    )?;
    for (network, reason) in
        changed(&plan.v4, entries, false).chain(changed(&plan.v6, entries, false))
    {
        update.execute(params![&key::encode(&network)[..], source, reason])?;
    }
    let added = changed(&plan.v4, entries, true).chain(changed(&plan.v6, entries, true));
    insert(tx, source, now, added)
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
fn insert<'a>(
    tx: &Transaction<'_>,
    source: &str,
    now: Timestamp,
    rows: impl Iterator<Item = (IpNet, &'a str)>,
) -> Result<()> {
    // `?1` is the source and `?2` the creation time of every row; then each row's network and
    // reason.
    let sql = |rows: usize| {
        let values: Vec<String> = (0..rows)
            .map(|i| format!("(?{}, ?1, ?{}, ?2, NULL)", 3 + 2 * i, 4 + 2 * i))
            .collect();
        format!(
            "INSERT INTO bans (network, source, reason, created_ms, expires_ms) VALUES {}",
            values.join(", ")
        )
    };
    let run = |stmt: &mut CachedStatement<'_>, batch: &[([u8; key::LEN], &str)]| -> Result<()> {
        stmt.raw_bind_parameter(1, source)?;
        stmt.raw_bind_parameter(2, now.as_millis())?;
        for (i, (network, reason)) in batch.iter().enumerate() {
            stmt.raw_bind_parameter(3 + 2 * i, &network[..])?;
            stmt.raw_bind_parameter(4 + 2 * i, *reason)?;
        }
        stmt.raw_execute()?;
        Ok(())
    };
    in_batches(
        rows.map(|(network, reason)| (key::encode(&network), reason)),
        |batch| {
            let mut stmt = tx.prepare_cached(&sql(batch.len()))?;
            run(&mut stmt, batch)
        },
    )
}

/// Deletes the records of `networks` for `source`.
fn delete(tx: &Transaction<'_>, source: &str, networks: impl Iterator<Item = IpNet>) -> Result<()> {
    let sql = |rows: usize| {
        let keys: Vec<String> = (0..rows).map(|i| format!("?{}", 2 + i)).collect();
        format!(
            "DELETE FROM bans WHERE source = ?1 AND network IN ({})",
            keys.join(", ")
        )
    };
    in_batches(networks.map(|network| key::encode(&network)), |batch| {
        let mut stmt = tx.prepare_cached(&sql(batch.len()))?;
        stmt.raw_bind_parameter(1, source)?;
        for (i, network) in batch.iter().enumerate() {
            stmt.raw_bind_parameter(2 + i, &network[..])?;
        }
        stmt.raw_execute()?;
        Ok(())
    })
}

/// Calls `run` on the items of `items` [`ROWS`] at a time, and on the rest one at a time (one
/// statement for each batch size, so that only two are prepared).
fn in_batches<T>(
    items: impl Iterator<Item = T>,
    mut run: impl FnMut(&[T]) -> Result<()>,
) -> Result<()> {
    let mut batch = Vec::with_capacity(ROWS);
    for item in items {
        batch.push(item);
        if batch.len() == ROWS {
            run(&batch)?;
            batch.clear();
        }
    }
    for item in batch.chunks(1) {
        run(item)?;
    }
    Ok(())
}
