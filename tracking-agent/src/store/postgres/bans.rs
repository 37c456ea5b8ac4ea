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
    store::Result,
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

/// Tells the other agents, once `tx` commits, that the bans or the allowlist changed.
pub(super) async fn notify(tx: &Transaction<'_>, instance: &str) -> Result<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &instance])
        .await?;
    Ok(())
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

pub(super) async fn effective_all(
    client: &Object,
    now: Timestamp,
) -> Result<Vec<(IpNet, Option<Timestamp>)>> {
    let stmt = client
        .prepare_cached(
            "SELECT network, count(*), bool_or(expires_ms IS NULL), max(expires_ms) FROM bans
             WHERE expires_ms IS NULL OR expires_ms > $1
             GROUP BY network
             ORDER BY network",
        )
        .await?;
    let rows = client.query(&stmt, &[&now.as_millis()]).await?;
    Ok(rows
        .iter()
        .map(effect_of)
        .filter_map(|(network, effective)| match effective {
            Effective::Banned { expires } => Some((network, expires)),
            Effective::Unbanned => None,
        })
        .collect())
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
    notify(&tx, instance).await?;
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
    notify(&tx, instance).await?;
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
    notify(&tx, instance).await?;
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

    let tx = client.transaction().await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO allows (network, note, created_ms)
             SELECT * FROM unnest($1::cidr[], $2::text[], $3::int8[])
             ON CONFLICT (network) DO UPDATE SET note = excluded.note",
        )
        .await?;
    tx.execute(&upsert, &[&array(&networks), &notes, &created])
        .await?;
    notify(&tx, instance).await?;
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
    let tx = client.transaction().await?;
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
    notify(&tx, instance).await?;
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
