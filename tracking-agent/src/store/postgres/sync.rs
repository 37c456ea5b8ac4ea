//! Making the records of one source exactly a list, for lists of a million.
//!
//! Sending a million rows as statements would take minutes; `COPY ... FROM STDIN` in binary
//! form takes about a second. The list goes into a temporary table, and the server computes
//! the delta against the source's records, writing only what changed:
//!
//! 1. `sync_incoming`: the list, one row per network (the first of duplicates, as SQLite).
//! 2. `sync_diff`: one full join of the list with the source's records gives what is new, what
//!    differs and what the list no longer has, each row saying whether the network's effective
//!    ban may change (added, removed, new expiry: a new reason alone changes nothing the
//!    kernel sees).
//! 3. One insert, one update and one delete write the diff.
//! 4. The effects: the touched rows of the diff with the other sources' live records of the
//!    same networks, combined here, in network order.
//!
//! The temporary tables live on the transaction's connection and are dropped at commit or
//! rollback. They are analysed after loading: the planner knows nothing of a temporary table
//! otherwise, and guesses a plan for a thousand rows.
//!
//! The `speeds` test in `tests.rs` times a million-record sync; each sync logs how long its
//! steps took at debug level.

use std::{
    pin::pin,
    time::{Duration, Instant},
};

use bytes::{BufMut, BytesMut};
use deadpool_postgres::Object;
use futures_util::SinkExt;
use ipnet::IpNet;

use super::{
    bans::{Change, begin, effective, is_bulk, record},
    net::{self, Cidr},
};
use crate::{
    ban::{Effect, Effective, ListEntry},
    store::{Admission, Result, StoreError, SyncReport, SyncedBy},
    time::Timestamp,
};

/// From this many records added or removed, a sync has the planner's statistics of `bans`
/// brought up to date before it commits.
const ANALYZE_FROM: usize = 10_000;

/// Bytes of `COPY` data sent at a time.
const CHUNK: usize = 1 << 20;

/// The header of binary `COPY` data: signature, flags, no extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

pub(super) async fn sync_source(
    client: &mut Object,
    instance: &str,
    source: &str,
    entries: Vec<ListEntry>,
    now: Timestamp,
    admission: &dyn Admission,
) -> Result<SyncReport> {
    let mut phases = Phases::start();
    let listed = first_of_each_network(&entries);
    phases.done("sort");

    let tx = begin(client).await?;
    // For this transaction only: joins of a million rows want memory (a hash join that fits is
    // several times faster than one spilled to disk in batches); and the table was just read
    // whole, so its pages are in memory and a few thousand index lookups cost less than the
    // planner's default for a random read assumes (it would rather scan a million rows).
    tx.batch_execute(
        "SET LOCAL work_mem = '128MB';
         SET LOCAL random_page_cost = 1.1;
         CREATE TEMPORARY TABLE sync_incoming (
             network    cidr   NOT NULL,
             reason     text   NOT NULL,
             created_ms bigint NOT NULL,
             expires_ms bigint
         ) ON COMMIT DROP;
         CREATE TEMPORARY TABLE sync_diff (
             network    cidr    NOT NULL,
             reason     text,
             created_ms bigint,
             expires_ms bigint,
             added      boolean NOT NULL,
             removed    boolean NOT NULL,
             touched    boolean NOT NULL
         ) ON COMMIT DROP;",
    )
    .await?;

    let sink = tx
        .copy_in(
            "COPY sync_incoming (network, reason, created_ms, expires_ms)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let mut sink = pin!(sink);
    let mut buf = BytesMut::with_capacity(CHUNK + 1024);
    buf.put_slice(COPY_HEADER);
    for &(network, position) in &listed {
        write_row(&mut buf, &network, &entries[position as usize].reason, now);
        if buf.len() >= CHUNK {
            sink.send(buf.split().freeze()).await?;
        }
    }
    buf.put_i16(-1);
    sink.send(buf.split().freeze()).await?;
    sink.as_mut().finish().await?;
    tx.batch_execute("ANALYZE sync_incoming").await?;
    phases.done("copy");

    // One pass over the list and the source's records: what is new, what changed, what went.
    let diff = tx
        .execute(
            "INSERT INTO sync_diff
             SELECT coalesce(i.network, b.network), i.reason, i.created_ms, i.expires_ms,
                    b.network IS NULL,
                    i.network IS NULL,
                    b.network IS NULL OR i.network IS NULL
                        OR b.expires_ms IS DISTINCT FROM i.expires_ms
             FROM sync_incoming i
             FULL JOIN (SELECT network, reason, expires_ms FROM bans WHERE source = $1) b
                    ON b.network = i.network
             WHERE b.network IS NULL OR i.network IS NULL
                OR b.reason <> i.reason OR b.expires_ms IS DISTINCT FROM i.expires_ms",
            &[&source],
        )
        .await? as usize;
    phases.done("diff");
    let replaced = synced(&tx, instance, source, listed.len(), now).await?;
    if diff == 0 {
        tx.commit().await?;
        // The same list again, whoever synced it last: nothing to say.
        let _ = replaced;
        return Ok(SyncReport {
            unchanged: listed.len(),
            ..SyncReport::default()
        });
    }
    tx.batch_execute("ANALYZE sync_diff").await?;
    // Plain statements rather than one `INSERT ... ON CONFLICT DO UPDATE`: the diff already
    // says which records exist, and no other agent writes bans meanwhile (the bans lock), so
    // a conflict check would only cost time (a third more for a million new records).
    let added = tx
        .execute(
            "INSERT INTO bans (network, source, reason, created_ms, expires_ms)
             SELECT network, $1, reason, created_ms, expires_ms FROM sync_diff
             WHERE added
             ORDER BY network",
            &[&source],
        )
        .await? as usize;
    // `created` is kept for a record that only changes.
    let updated = tx
        .execute(
            "UPDATE bans b SET reason = d.reason, expires_ms = d.expires_ms
             FROM sync_diff d
             WHERE NOT d.added AND NOT d.removed AND b.network = d.network AND b.source = $1",
            &[&source],
        )
        .await? as usize;
    let removed = tx
        .execute(
            "DELETE FROM bans b USING sync_diff d
             WHERE d.removed AND b.network = d.network AND b.source = $1",
            &[&source],
        )
        .await? as usize;
    phases.done("write");
    if added + removed >= ANALYZE_FROM {
        // The planner's idea of `bans` is now off by this much; autovacuum would catch up
        // within a minute, but the agent reads everything back at once after a big sync.
        tx.batch_execute("ANALYZE bans").await?;
    }

    // The effect on each touched network: this source's new record (none if removed) with
    // the live records of the other sources, which the diff does not have. Those are read
    // grouped by network, usually few; joining every touched network against `bans` instead
    // would probe the table a million times on a first load.
    let rows = tx
        .query(
            "SELECT d.network, d.removed, d.expires_ms, o.live, o.forever, o.latest
             FROM sync_diff d
             LEFT JOIN (SELECT network, count(*) AS live, bool_or(expires_ms IS NULL) AS forever,
                               max(expires_ms) AS latest
                        FROM bans
                        WHERE source <> $1 AND (expires_ms IS NULL OR expires_ms > $2)
                        GROUP BY network) o
                    ON o.network = d.network
             WHERE d.touched",
            &[&source, &now.as_millis()],
        )
        .await?;
    let mut effects: Vec<Effect> = rows
        .iter()
        .map(|row| {
            let Cidr(network) = row.get(0);
            let own = Own {
                removed: row.get(1),
                expires_ms: row.get(2),
            };
            let others = Others {
                live: row.get::<_, Option<i64>>(3).unwrap_or(0),
                forever: row.get::<_, Option<bool>>(4).unwrap_or(false),
                latest: row.get(5),
            };
            (network, own.with(others, now))
        })
        .collect();
    effects.sort_unstable_by_key(|(network, _)| *network);
    phases.done("effects");
    // Dropping the transaction rolls it back.
    admission.admit(&effects).map_err(StoreError::Refused)?;
    let logged = record(&tx, instance, Change::Effects(&effects), now).await?;
    let report = SyncReport {
        bulk_at: is_bulk(effects.len()).then_some(logged),
        added,
        updated,
        removed,
        unchanged: listed.len() - added - updated,
        effects,
        replaced,
    };
    tx.commit().await?;
    phases.done("commit");
    tracing::debug!(
        source,
        listed = listed.len(),
        added = report.added,
        updated = report.updated,
        removed = report.removed,
        "sync: {phases}"
    );
    Ok(report)
}

/// Records that this host synced `source` now with `entries` networks, and returns who synced
/// it before when that was another host (whose list this one replaces).
async fn synced(
    tx: &deadpool_postgres::Transaction<'_>,
    instance: &str,
    source: &str,
    entries: usize,
    now: Timestamp,
) -> Result<Option<SyncedBy>> {
    let host = crate::store::host_name();
    let before = tx
        .query_opt(
            "SELECT host, instance, at_ms, entries FROM synced_sources WHERE source = $1",
            &[&source],
        )
        .await?
        .map(|row| SyncedBy {
            host: row.get(0),
            instance: row.get(1),
            at: Timestamp::from_millis(row.get(2)),
            entries: row.get::<_, i64>(3) as u64,
        });
    tx.execute(
        "INSERT INTO synced_sources (source, host, instance, at_ms, entries)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source) DO UPDATE
         SET host = excluded.host, instance = excluded.instance, at_ms = excluded.at_ms,
             entries = excluded.entries",
        &[
            &source,
            &host,
            &instance,
            &now.as_millis(),
            &(entries as i64),
        ],
    )
    .await?;
    Ok(before.filter(|b| b.instance != instance))
}

/// How long each step of a sync took, for the debug log.
struct Phases {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn done(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.done.push((phase, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, took)) in self.done.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{phase} {took:.1?}")?;
        }
        Ok(())
    }
}

/// This source's record of a touched network after the sync.
struct Own {
    /// The list no longer has the network.
    removed: bool,
    /// When the listed record expires, if it is listed.
    expires_ms: Option<i64>,
}

/// The other sources' live records of a network, as `bans::effects` aggregates them.
struct Others {
    live: i64,
    forever: bool,
    latest: Option<i64>,
}

impl Own {
    /// What the kernel must hold for the network, from this record and the others'.
    fn with(&self, others: Others, now: Timestamp) -> Effective {
        let live = !self.removed && self.expires_ms.is_none_or(|e| e > now.as_millis());
        let mine = |x: Option<i64>| if live { x } else { None };
        effective(
            others.live + i64::from(live),
            Some(others.forever || (live && self.expires_ms.is_none())),
            others.latest.max(mine(self.expires_ms)),
        )
    }
}

/// The networks of `entries` with host bits cleared, each with the position of its first entry,
/// in network order (the order the primary key is written in fastest).
fn first_of_each_network(entries: &[ListEntry]) -> Vec<(IpNet, u32)> {
    assert!(
        u32::try_from(entries.len()).is_ok(),
        "too many entries to sync"
    );
    let mut listed: Vec<(IpNet, u32)> = entries
        .iter()
        .enumerate()
        .map(|(position, entry)| (entry.network.trunc(), position as u32))
        .collect();
    listed.sort_unstable();
    listed.dedup_by_key(|(network, _)| *network);
    listed
}

/// Appends one row of `sync_incoming` in binary `COPY` form: the field count, then each field
/// as its length (-1 for NULL) and its bytes. A synced record is created at `now` and never
/// expires.
fn write_row(buf: &mut BytesMut, network: &IpNet, reason: &str, now: Timestamp) {
    buf.put_i16(4);
    buf.put_i32(net::len(network) as i32);
    net::write(network, buf);
    buf.put_i32(i32::try_from(reason.len()).expect("a reason under 2 GiB"));
    buf.put_slice(reason.as_bytes());
    buf.put_i32(8);
    buf.put_i64(now.as_millis());
    buf.put_i32(-1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(network: &str, reason: &str) -> ListEntry {
        ListEntry {
            network: network.parse().unwrap(),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_first_entry_of_a_network_counts_and_host_bits_are_cleared() {
        let entries = [
            entry("10.0.0.9/24", "first"),
            entry("2001:db8::/32", ""),
            entry("10.0.0.0/24", "second"),
            entry("9.0.0.0/8", ""),
        ];
        let listed = first_of_each_network(&entries);
        let expected: Vec<(IpNet, u32)> = vec![
            ("9.0.0.0/8".parse().unwrap(), 3),
            ("10.0.0.0/24".parse().unwrap(), 0),
            ("2001:db8::/32".parse().unwrap(), 1),
        ];
        assert_eq!(listed, expected);
    }
}
