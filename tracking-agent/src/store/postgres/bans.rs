//! Bans and the allowlist: the same records and the same effects as the SQLite store.
//!
//! Where SQLite keeps the bans in memory to compute effects, here the effects are a query: for
//! each network a change touched, its live records across every source, read in the same
//! transaction after the change, so they are what the database holds once it commits.

use std::collections::HashMap;

use deadpool_postgres::{Object, Transaction};
use ipnet::IpNet;
use tokio_postgres::Row;

use super::{BANS_LOCK, CHANNEL, net::Cidr, net::array};
use crate::{
    ban::{self, Allow, Ban, Effect, Effective},
    store::{BanPage, BanQuery, ChangeLog, Logged, Position, Result},
    time::Timestamp,
};

/// A transaction that changes bans: it holds the bans lock from the start (see the module map
/// of `postgres.rs`).
pub(super) async fn begin(client: &mut Object) -> Result<Transaction<'_>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BANS_LOCK])
        .await?;
    Ok(tx)
}

/// A change bigger than this goes in the log as one "bulk" entry: the others reconcile whole
/// rather than read a million rows of it.
const LOG_AT_MOST: usize = 10_000;
/// Entries the log keeps: an agent further behind reconciles whole.
const LOG_KEEPS: i64 = 200_000;
/// The log is pruned every this many positions.
const PRUNE_EVERY: i64 = 1_000;

/// What a change appends to the log.
pub(super) enum Change<'a> {
    Effects(&'a [Effect]),
    Allowlist,
}

/// Whether a change of `effects` goes in the log as one bulk entry.
pub(super) fn is_bulk(effects: usize) -> bool {
    effects > LOG_AT_MOST
}

const KIND_BAN: i16 = 0;
const KIND_ALLOWLIST: i16 = 1;
const KIND_BULK: i16 = 2;

/// Appends a change to the fleet's log and tells the other agents, once `tx` commits, where
/// the log now ends. `tx` holds the bans lock, so positions follow the commit order.
pub(super) async fn record(
    tx: &Transaction<'_>,
    instance: &str,
    change: Change<'_>,
    now: Timestamp,
) -> Result<Position> {
    let head: i64 = tx
        .query_one("SELECT coalesce(max(position), 0) FROM ban_changes", &[])
        .await?
        .get(0);
    let at = now.as_millis();
    let last = match change {
        Change::Effects([]) => return Ok(head),
        Change::Effects(effects) if is_bulk(effects.len()) => {
            tx.execute(
                "INSERT INTO ban_changes (position, kind, at_ms) VALUES ($1, $2, $3)",
                &[&(head + 1), &KIND_BULK, &at],
            )
            .await?;
            head + 1
        }
        Change::Effects(effects) => {
            let positions: Vec<i64> = (1..=effects.len() as i64).map(|i| head + i).collect();
            let networks: Vec<IpNet> = effects.iter().map(|(n, _)| *n).collect();
            let banned: Vec<bool> = effects
                .iter()
                .map(|(_, e)| matches!(e, Effective::Banned { .. }))
                .collect();
            let expires: Vec<Option<i64>> = effects
                .iter()
                .map(|(_, e)| match e {
                    Effective::Banned { expires } => expires.map(Timestamp::as_millis),
                    Effective::Unbanned => None,
                })
                .collect();
            let insert = tx
                .prepare_cached(
                    "INSERT INTO ban_changes (position, kind, network, banned, expires_ms, at_ms)
                     SELECT p, 0, n, b, e, $5
                     FROM unnest($1::int8[], $2::cidr[], $3::bool[], $4::int8[]) AS t (p, n, b, e)",
                )
                .await?;
            tx.execute(
                &insert,
                &[&positions, &array(&networks), &banned, &expires, &at],
            )
            .await?;
            head + effects.len() as i64
        }
        Change::Allowlist => {
            tx.execute(
                "INSERT INTO ban_changes (position, kind, at_ms) VALUES ($1, $2, $3)",
                &[&(head + 1), &KIND_ALLOWLIST, &at],
            )
            .await?;
            head + 1
        }
    };
    if last / PRUNE_EVERY != head / PRUNE_EVERY {
        tx.execute(
            "DELETE FROM ban_changes WHERE position <= $1",
            &[&(last - LOG_KEEPS)],
        )
        .await?;
    }
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &format!("{instance} {last}")],
    )
    .await?;
    Ok(last)
}

/// The last position of the log.
pub(super) async fn head(client: &Object) -> Result<Position> {
    Ok(client
        .query_one("SELECT coalesce(max(position), 0) FROM ban_changes", &[])
        .await?
        .get(0))
}

/// The log after `since`, at most `limit` entries.
pub(super) async fn changes_since(
    client: &Object,
    since: Position,
    limit: usize,
) -> Result<ChangeLog> {
    let stmt = client
        .prepare_cached(
            "SELECT position, kind, network, banned, expires_ms FROM ban_changes
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .await?;
    let rows = client.query(&stmt, &[&since, &(limit as i64)]).await?;
    let entries: Vec<(Position, Logged)> = rows
        .iter()
        .map(|row| {
            let position: i64 = row.get(0);
            let logged = match row.get::<_, i16>(1) {
                KIND_BAN => {
                    let Cidr(network) = row.get(2);
                    let effective = if row.get::<_, bool>(3) {
                        Effective::Banned {
                            expires: row.get::<_, Option<i64>>(4).map(Timestamp::from_millis),
                        }
                    } else {
                        Effective::Unbanned
                    };
                    Logged::Ban((network, effective))
                }
                KIND_ALLOWLIST => Logged::Allowlist,
                _ => Logged::Bulk,
            };
            (position, logged)
        })
        .collect();
    // Complete when the first entry follows `since` (or nothing came after it at all and the
    // head is not past it).
    let complete = match entries.first() {
        Some((first, _)) => *first == since + 1,
        None => head(client).await? <= since,
    };
    Ok(ChangeLog { entries, complete })
}

/// What the kernel must hold for a network, from its live records: how many there are,
/// whether one of them never expires, and the latest expiry.
pub(super) fn effective(live: i64, forever: Option<bool>, latest: Option<i64>) -> Effective {
    match (live, forever) {
        (0, _) => Effective::Unbanned,
        (_, Some(true)) => Effective::Banned { expires: None },
        _ => Effective::Banned {
            expires: latest.map(Timestamp::from_millis),
        },
    }
}

/// The effects on `networks` (sorted, distinct) as the transaction sees the bans now.
pub(super) async fn effects(
    tx: &Transaction<'_>,
    networks: &[IpNet],
    now: Timestamp,
) -> Result<Vec<Effect>> {
    if networks.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = tx
        .prepare_cached(
            "SELECT t.network, count(b.network), bool_or(b.expires_ms IS NULL), max(b.expires_ms)
             FROM unnest($1::cidr[]) AS t (network)
             LEFT JOIN bans b
                    ON b.network = t.network AND (b.expires_ms IS NULL OR b.expires_ms > $2)
             GROUP BY t.network
             ORDER BY t.network",
        )
        .await?;
    let rows = tx
        .query(&stmt, &[&array(networks), &now.as_millis()])
        .await?;
    Ok(rows.iter().map(effect_of).collect())
}

/// An effect from a row of `network, live, forever, latest`.
pub(super) fn effect_of(row: &Row) -> Effect {
    let Cidr(network) = row.get(0);
    (network, effective(row.get(1), row.get(2), row.get(3)))
}

fn ban_of(row: &Row) -> Ban {
    let Cidr(network) = row.get(0);
    Ban {
        network,
        source: row.get(1),
        reason: row.get(2),
        created: Timestamp::from_millis(row.get(3)),
        expires: row.get::<_, Option<i64>>(4).map(Timestamp::from_millis),
    }
}

pub(super) async fn list(client: &Object) -> Result<Vec<Ban>> {
    let stmt = client
        .prepare_cached(
            "SELECT network, source, reason, created_ms, expires_ms FROM bans
             ORDER BY network, source",
        )
        .await?;
    Ok(client.query(&stmt, &[]).await?.iter().map(ban_of).collect())
}

pub(super) async fn bans_of(
    client: &Object,
    networks: Vec<IpNet>,
    source: String,
) -> Result<Vec<Ban>> {
    let networks = ban::distinct_networks(networks);
    let stmt = client
        .prepare_cached(
            "SELECT network, source, reason, created_ms, expires_ms FROM bans
             WHERE network = ANY($1::cidr[]) AND source = $2
             ORDER BY network, source",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&array(&networks), &source])
        .await?
        .iter()
        .map(ban_of)
        .collect())
}

/// A page of the records matching `query`, and how many match in all.
pub(super) async fn query(client: &Object, query: BanQuery) -> Result<BanPage> {
    let contains = query.contains.map(|ip| Cidr(IpNet::from(ip)));
    let text = query.text.as_deref().map(|t| {
        format!(
            "%{}%",
            t.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let (after_network, after_source) = match &query.after {
        Some((n, s)) => (Some(Cidr(*n)), Some(s.clone())),
        None => (None, None),
    };
    let filter = "($1::text IS NULL OR source = $1)
                  AND ($2::cidr IS NULL OR network >>= $2)
                  AND ($3::text IS NULL OR reason ILIKE $3)";
    let page = client
        .prepare_cached(&format!(
            "SELECT network, source, reason, created_ms, expires_ms FROM bans
             WHERE {filter}
               AND ($4::cidr IS NULL OR (network, source) > ($4, $5::text))
             ORDER BY network, source LIMIT $6"
        ))
        .await?;
    let rows = client
        .query(
            &page,
            &[
                &query.source,
                &contains,
                &text,
                &after_network,
                &after_source,
                &(query.limit as i64),
            ],
        )
        .await?;
    let count = client
        .prepare_cached(&format!("SELECT count(*) FROM bans WHERE {filter}"))
        .await?;
    let total: i64 = client
        .query_one(&count, &[&query.source, &contains, &text])
        .await?
        .get(0);
    Ok(BanPage {
        bans: rows.iter().map(ban_of).collect(),
        total: total as u64,
    })
}

/// Rows of a whole read converted between two yields to the runtime.
const ROWS_BETWEEN_YIELDS: usize = 4096;

/// Every live ban, one per network: a million rows for a whole reconcile. They are converted
/// as they stream in, yielding every few thousand, so that the runtime's other tasks (the
/// fleet's next change among them) never wait for the whole read.
pub(super) async fn effective_all(
    client: &Object,
    now: Timestamp,
) -> Result<Vec<(IpNet, Option<Timestamp>)>> {
    use futures_util::TryStreamExt as _;
    let stmt = client
        .prepare_cached(
            "SELECT network, count(*), bool_or(expires_ms IS NULL), max(expires_ms) FROM bans
             WHERE expires_ms IS NULL OR expires_ms > $1
             GROUP BY network
             ORDER BY network",
        )
        .await?;
    let rows = client.query_raw(&stmt, [now.as_millis()]).await?;
    let mut rows = std::pin::pin!(rows);
    let mut out = Vec::new();
    let mut read = 0usize;
    while let Some(row) = rows.try_next().await? {
        if let (network, Effective::Banned { expires }) = effect_of(&row) {
            out.push((network, expires));
        }
        read += 1;
        if read.is_multiple_of(ROWS_BETWEEN_YIELDS) {
            tokio::task::yield_now().await;
        }
    }
    Ok(out)
}

/// `bans` with host bits cleared, one per (network, source) in that order. Of several bans of
/// one record, the result is what applying them one by one gives (as SQLite does): `created`
/// of the first, reason and expiry of the last. A multi-row upsert must not touch a row twice.
fn one_per_record(bans: Vec<Ban>) -> Vec<Ban> {
    let mut bans: Vec<Ban> = bans
        .into_iter()
        .map(|ban| Ban {
            network: ban.network.trunc(),
            ..ban
        })
        .collect();
    // Stable: duplicates stay in the order given.
    bans.sort_by(|a, b| (a.network, &a.source).cmp(&(b.network, &b.source)));
    let mut out: Vec<Ban> = Vec::with_capacity(bans.len());
    for ban in bans {
        match out.last_mut() {
            Some(last) if last.network == ban.network && last.source == ban.source => {
                last.reason = ban.reason;
                last.expires = ban.expires;
            }
            _ => out.push(ban),
        }
    }
    out
}

pub(super) async fn add(
    client: &mut Object,
    instance: &str,
    bans: Vec<Ban>,
    now: Timestamp,
) -> Result<Vec<Effect>> {
    let bans = one_per_record(bans);
    if bans.is_empty() {
        return Ok(Vec::new());
    }
    let networks: Vec<IpNet> = bans.iter().map(|ban| ban.network).collect();
    let sources: Vec<&str> = bans.iter().map(|ban| ban.source.as_str()).collect();
    let reasons: Vec<&str> = bans.iter().map(|ban| ban.reason.as_str()).collect();
    let created: Vec<i64> = bans.iter().map(|ban| ban.created.as_millis()).collect();
    let expires: Vec<Option<i64>> = bans
        .iter()
        .map(|ban| ban.expires.map(Timestamp::as_millis))
        .collect();

    let tx = begin(client).await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO bans (network, source, reason, created_ms, expires_ms)
             SELECT * FROM unnest($1::cidr[], $2::text[], $3::text[], $4::int8[], $5::int8[])
             ON CONFLICT (network, source)
             DO UPDATE SET reason = excluded.reason, expires_ms = excluded.expires_ms",
        )
        .await?;
    tx.execute(
        &upsert,
        &[&array(&networks), &sources, &reasons, &created, &expires],
    )
    .await?;
    let mut touched = networks;
    touched.dedup();
    let effects = effects(&tx, &touched, now).await?;
    record(&tx, instance, Change::Effects(&effects), now).await?;
    tx.commit().await?;
    Ok(effects)
}

pub(super) async fn remove(
    client: &mut Object,
    instance: &str,
    networks: Vec<IpNet>,
    source: Option<String>,
    now: Timestamp,
) -> Result<(Vec<Ban>, Vec<Effect>)> {
    let networks = ban::distinct_networks(networks);
    if networks.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let tx = begin(client).await?;
    let delete = tx
        .prepare_cached(
            "DELETE FROM bans WHERE network = ANY($1::cidr[]) AND ($2::text IS NULL OR source = $2)
             RETURNING network, source, reason, created_ms, expires_ms",
        )
        .await?;
    let rows = tx.query(&delete, &[&array(&networks), &source]).await?;
    let mut removed: Vec<Ban> = rows.iter().map(ban_of).collect();
    if removed.is_empty() {
        // Nothing changed: nothing to tell anyone. Dropping the transaction rolls it back.
        return Ok((removed, Vec::new()));
    }
    removed.sort_by(|a, b| (a.network, &a.source).cmp(&(b.network, &b.source)));
    let mut touched: Vec<IpNet> = removed.iter().map(|ban| ban.network).collect();
    touched.dedup();
    let effects = effects(&tx, &touched, now).await?;
    record(&tx, instance, Change::Effects(&effects), now).await?;
    tx.commit().await?;
    Ok((removed, effects))
}

pub(super) async fn remove_expired(
    client: &mut Object,
    instance: &str,
    now: Timestamp,
) -> Result<Vec<Effect>> {
    let tx = begin(client).await?;
    let delete = tx
        .prepare_cached(
            "WITH gone AS (DELETE FROM bans WHERE expires_ms <= $1 RETURNING network)
             SELECT DISTINCT network FROM gone ORDER BY network",
        )
        .await?;
    let rows = tx.query(&delete, &[&now.as_millis()]).await?;
    if rows.is_empty() {
        // The common case, every few seconds on every agent: no commit, no notification.
        return Ok(Vec::new());
    }
    let touched: Vec<IpNet> = rows.iter().map(|row| row.get::<_, Cidr>(0).0).collect();
    let effects = effects(&tx, &touched, now).await?;
    record(&tx, instance, Change::Effects(&effects), now).await?;
    tx.commit().await?;
    Ok(effects)
}

fn allow_of(row: &Row) -> Allow {
    let Cidr(network) = row.get(0);
    Allow {
        network,
        note: row.get(1),
        created: Timestamp::from_millis(row.get(2)),
    }
}

pub(super) async fn list_allows(client: &Object) -> Result<Vec<Allow>> {
    let stmt = client
        .prepare_cached("SELECT network, note, created_ms FROM allows ORDER BY network")
        .await?;
    Ok(client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(allow_of)
        .collect())
}

pub(super) async fn add_allows(
    client: &mut Object,
    instance: &str,
    allows: Vec<Allow>,
) -> Result<()> {
    // One per network, as applying them one by one gives: `created` of the first, the note of
    // the last.
    let mut by_network: HashMap<IpNet, Allow> = HashMap::new();
    for allow in allows {
        let network = allow.network.trunc();
        by_network
            .entry(network)
            .and_modify(|kept| kept.note.clone_from(&allow.note))
            .or_insert(Allow { network, ..allow });
    }
    if by_network.is_empty() {
        return Ok(());
    }
    let mut allows: Vec<Allow> = by_network.into_values().collect();
    allows.sort_by_key(|allow| allow.network);
    let networks: Vec<IpNet> = allows.iter().map(|allow| allow.network).collect();
    let notes: Vec<&str> = allows.iter().map(|allow| allow.note.as_str()).collect();
    let created: Vec<i64> = allows
        .iter()
        .map(|allow| allow.created.as_millis())
        .collect();

    // The bans lock too: allowlist changes take their place in the same log.
    let tx = begin(client).await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO allows (network, note, created_ms)
             SELECT * FROM unnest($1::cidr[], $2::text[], $3::int8[])
             ON CONFLICT (network) DO UPDATE SET note = excluded.note",
        )
        .await?;
    tx.execute(&upsert, &[&array(&networks), &notes, &created])
        .await?;
    record(&tx, instance, Change::Allowlist, Timestamp::now()).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn remove_allows(
    client: &mut Object,
    instance: &str,
    networks: Vec<IpNet>,
) -> Result<Vec<Allow>> {
    let networks = ban::distinct_networks(networks);
    if networks.is_empty() {
        return Ok(Vec::new());
    }
    let tx = begin(client).await?;
    let delete = tx
        .prepare_cached(
            "DELETE FROM allows WHERE network = ANY($1::cidr[]) RETURNING network, note, created_ms",
        )
        .await?;
    let rows = tx.query(&delete, &[&array(&networks)]).await?;
    let mut removed: Vec<Allow> = rows.iter().map(allow_of).collect();
    if removed.is_empty() {
        return Ok(removed);
    }
    removed.sort_by_key(|allow| allow.network);
    record(&tx, instance, Change::Allowlist, Timestamp::now()).await?;
    tx.commit().await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(network: &str, source: &str, reason: &str, created: i64) -> Ban {
        Ban {
            network: network.parse().unwrap(),
            source: source.into(),
            reason: reason.into(),
            created: Timestamp::from_millis(created),
            expires: None,
        }
    }

    #[test]
    fn several_bans_of_one_record_fold_as_if_applied_in_turn() {
        let folded = one_per_record(vec![
            ban("10.0.0.9/24", "cli", "first", 1),
            ban("10.0.0.1/32", "cli", "", 5),
            ban("10.0.0.0/24", "cli", "second", 2),
            ban("10.0.0.0/24", "api", "other source", 3),
        ]);
        assert_eq!(
            folded,
            [
                ban("10.0.0.0/24", "api", "other source", 3),
                ban("10.0.0.0/24", "cli", "second", 1),
                ban("10.0.0.1/32", "cli", "", 5),
            ]
        );
    }

    #[test]
    fn the_effective_ban_is_the_longest_live_record() {
        assert_eq!(effective(0, None, None), Effective::Unbanned);
        assert_eq!(
            effective(2, Some(true), Some(5)),
            Effective::Banned { expires: None }
        );
        assert_eq!(
            effective(2, Some(false), Some(5)),
            Effective::Banned {
                expires: Some(Timestamp::from_millis(5))
            }
        );
    }
}
