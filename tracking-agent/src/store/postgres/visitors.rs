//! Visitor records and user-agent rules: the same rules and orders as the SQLite store.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Object;
use tokio_postgres::Row;

use crate::{
    store::{Result, StoreError},
    time::Timestamp,
    visit::{SESSION_IDLE, UaRule, Visitor, VisitorDelta},
};

/// The columns [`visitor_of`] reads, in its order.
const COLUMNS: &str = "key, session_key, ip, user_agent, user_name, referrer, last_page, \
                       page_views, session_start_ms, last_update_ms";

/// [`VisitorDelta::apply_to`] in SQL, for many deltas at once: `$1`..`$10` are arrays of the
/// deltas' fields in the column order of the insert, `$11` whether they all restart their
/// session and `$12` [`SESSION_IDLE`] in milliseconds.
///
/// `restart` is not a column, so `DO UPDATE` cannot read it from `excluded`; a batch is
/// written with one statement for the deltas that restart and one for those that do not.
///
/// In `DO UPDATE`, `v.` is the stored record and `excluded.` the delta (whose
/// `session_start_ms` is its `first_at` and `last_update_ms` its `last_at`); every expression
/// sees the record as it was before the update. The session starts over when `$11 OR
/// excluded.session_start_ms - v.last_update_ms > $12`, and then every field comes from the
/// delta; otherwise views add up, referrer and start stay, and address, agent, user and page
/// come from the delta only if it is at least as recent.
const UPSERT: &str = "
INSERT INTO visitors AS v (key, session_key, ip, user_agent, user_name, referrer, last_page,
                           page_views, session_start_ms, last_update_ms)
SELECT * FROM unnest($1::text[], $2::text[], $3::inet[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::int8[], $9::int8[], $10::int8[])
ON CONFLICT (key) DO UPDATE SET
    session_key = excluded.session_key,
    ip = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                 OR excluded.last_update_ms >= v.last_update_ms
              THEN excluded.ip ELSE v.ip END,
    user_agent = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                         OR excluded.last_update_ms >= v.last_update_ms
                      THEN excluded.user_agent ELSE v.user_agent END,
    user_name = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                        OR excluded.last_update_ms >= v.last_update_ms
                     THEN excluded.user_name ELSE v.user_name END,
    last_page = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                        OR excluded.last_update_ms >= v.last_update_ms
                     THEN excluded.last_page ELSE v.last_page END,
    referrer = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                    THEN excluded.referrer ELSE v.referrer END,
    page_views = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                      THEN excluded.page_views ELSE v.page_views + excluded.page_views END,
    session_start_ms = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                            THEN excluded.session_start_ms ELSE v.session_start_ms END,
    last_update_ms = CASE WHEN $11 OR excluded.session_start_ms - v.last_update_ms > $12
                          THEN excluded.last_update_ms
                          ELSE greatest(v.last_update_ms, excluded.last_update_ms) END";

/// Applies `deltas` in one transaction.
pub(super) async fn record(client: &mut Object, deltas: Vec<VisitorDelta>) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let idle_ms = i64::try_from(SESSION_IDLE.as_millis()).expect("an hour fits");
    let tx = client.transaction().await?;
    let upsert = tx.prepare_cached(UPSERT).await?;
    for round in rounds(deltas) {
        for restart in [false, true] {
            let mut part: Vec<&VisitorDelta> =
                round.iter().filter(|d| d.restart == restart).collect();
            if part.is_empty() {
                continue;
            }
            // Key order: two agents writing overlapping batches lock rows in the same order,
            // so neither waits for the other in a cycle.
            part.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            let keys: Vec<&str> = part.iter().map(|d| d.key.as_str()).collect();
            let session_keys: Vec<Option<&str>> =
                part.iter().map(|d| d.session_key.as_deref()).collect();
            let ips: Vec<std::net::IpAddr> = part.iter().map(|d| d.ip).collect();
            let agents: Vec<&str> = part.iter().map(|d| d.user_agent.as_str()).collect();
            let users: Vec<Option<&str>> = part.iter().map(|d| d.user.as_deref()).collect();
            let referrers: Vec<Option<&str>> = part.iter().map(|d| d.referrer.as_deref()).collect();
            let pages: Vec<&str> = part.iter().map(|d| d.last_page.as_str()).collect();
            let views: Vec<i64> = part.iter().map(|d| saturating_i64(d.page_views)).collect();
            let firsts: Vec<i64> = part.iter().map(|d| d.first_at.as_millis()).collect();
            let lasts: Vec<i64> = part.iter().map(|d| d.last_at.as_millis()).collect();
            tx.execute(
                &upsert,
                &[
                    &keys,
                    &session_keys,
                    &ips,
                    &agents,
                    &users,
                    &referrers,
                    &pages,
                    &views,
                    &firsts,
                    &lasts,
                    &restart,
                    &idle_ms,
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// `deltas` in rounds with one delta per key each: the first delta of every key, then the
/// second of those that have one, and so on. `merge` gives one per key, so there is one round;
/// a caller that did not merge still gets its deltas applied in the order given, as SQLite
/// does, without a multi-row upsert touching a row twice (which PostgreSQL refuses).
fn rounds(deltas: Vec<VisitorDelta>) -> Vec<Vec<VisitorDelta>> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(deltas.len());
    if deltas.iter().all(|d| seen.insert(&d.key)) {
        return vec![deltas];
    }
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    let mut rounds: Vec<Vec<VisitorDelta>> = Vec::new();
    for delta in deltas {
        let n = occurrences.entry(delta.key.clone()).or_default();
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(delta);
        *n += 1;
    }
    rounds
}

/// Visitors last updated at or after `since`, newest first (of equal times, by key).
pub(super) async fn since(client: &Object, since: Timestamp, limit: usize) -> Result<Vec<Visitor>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM visitors WHERE last_update_ms >= $1
             ORDER BY last_update_ms DESC, key LIMIT $2"
        ))
        .await?;
    let rows = client
        .query(&stmt, &[&since.as_millis(), &saturating_i64(limit as u64)])
        .await?;
    rows.iter().map(visitor_of).collect()
}

pub(super) async fn get(client: &Object, key: &str) -> Result<Option<Visitor>> {
    let stmt = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM visitors WHERE key = $1"))
        .await?;
    client
        .query_opt(&stmt, &[&key])
        .await?
        .as_ref()
        .map(visitor_of)
        .transpose()
}

/// Deletes at most `limit` of the visitors last updated before `before`, oldest first.
///
/// Rows another transaction holds (a visit being recorded, another agent's clean-up) are
/// skipped rather than waited for: the clean-up of a fleet shares the work, and a visitor
/// being updated is not one to delete.
pub(super) async fn remove_before(
    client: &Object,
    before: Timestamp,
    limit: usize,
) -> Result<usize> {
    let stmt = client
        .prepare_cached(
            "WITH doomed AS (
                 SELECT key FROM visitors WHERE last_update_ms < $1
                 ORDER BY last_update_ms LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             DELETE FROM visitors v USING doomed d WHERE v.key = d.key",
        )
        .await?;
    let removed = client
        .execute(&stmt, &[&before.as_millis(), &saturating_i64(limit as u64)])
        .await?;
    Ok(removed as usize)
}

/// `(visitors, registered)` last updated at or after `since`, on `path` if given.
pub(super) async fn count(
    client: &Object,
    since: Timestamp,
    path: Option<&str>,
) -> Result<(u64, u64)> {
    let stmt = client
        .prepare_cached(
            "SELECT count(*), count(user_name) FROM visitors
             WHERE last_update_ms >= $1 AND ($2::text IS NULL OR last_page = $2)",
        )
        .await?;
    let row = client
        .query_one(&stmt, &[&since.as_millis(), &path])
        .await?;
    Ok((
        unsigned(row.get(0), "count")?,
        unsigned(row.get(1), "count")?,
    ))
}

pub(super) async fn page_views_total(client: &Object) -> Result<u64> {
    // `sum` of `bigint` is `numeric`; a total past `bigint` is not a real one, and the cast
    // says so with an error rather than a wrong number.
    let stmt = client
        .prepare_cached("SELECT coalesce(sum(page_views), 0)::bigint FROM visitors")
        .await?;
    unsigned(
        client.query_one(&stmt, &[]).await?.get(0),
        "page view total",
    )
}

/// The visitor in a row of [`COLUMNS`].
fn visitor_of(row: &Row) -> Result<Visitor> {
    Ok(Visitor {
        key: row.get(0),
        session_key: row.get(1),
        ip: row.get(2),
        user_agent: row.get(3),
        user: row.get(4),
        referrer: row.get(5),
        last_page: row.get(6),
        page_views: unsigned(row.get(7), "page views")?,
        session_start: Timestamp::from_millis(row.get(8)),
        last_update: Timestamp::from_millis(row.get(9)),
    })
}

/// Counts are `bigint`; one beyond `i64::MAX` is not a real one.
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative {what}: {n}")))
}

fn rule_of(row: &Row) -> UaRule {
    UaRule {
        keyword: row.get(0),
        note: row.get(1),
        created: Timestamp::from_millis(row.get(2)),
        source: row.get(3),
    }
}

/// Every rule, by lowercased keyword (bytewise, as the column's collation is "C").
pub(super) async fn list_ua_rules(client: &Object) -> Result<Vec<UaRule>> {
    let stmt = client
        .prepare_cached(
            "SELECT keyword, note, created_ms, source FROM ua_rules ORDER BY keyword_lower",
        )
        .await?;
    Ok(client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(rule_of)
        .collect())
}

/// Adds `rules`; a keyword that exists in any case gets the new note and keeps the rest. A
/// rule added by hand takes over a keyword of another source; an import leaves the rules of
/// other sources alone.
pub(super) async fn add_ua_rules(client: &mut Object, rules: Vec<UaRule>) -> Result<()> {
    // One per lowercased keyword, as applying them one by one gives: spelling and `created`
    // of the first, the note of the last.
    let mut by_key: HashMap<String, UaRule> = HashMap::new();
    for rule in rules {
        by_key
            .entry(rule.keyword.to_lowercase())
            .and_modify(|kept| {
                kept.note.clone_from(&rule.note);
                kept.source.clone_from(&rule.source);
            })
            .or_insert(rule);
    }
    if by_key.is_empty() {
        return Ok(());
    }
    let mut rules: Vec<(String, UaRule)> = by_key.into_iter().collect();
    rules.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let lowers: Vec<&str> = rules.iter().map(|(lower, _)| lower.as_str()).collect();
    let keywords: Vec<&str> = rules.iter().map(|(_, r)| r.keyword.as_str()).collect();
    let notes: Vec<&str> = rules.iter().map(|(_, r)| r.note.as_str()).collect();
    let created: Vec<i64> = rules.iter().map(|(_, r)| r.created.as_millis()).collect();
    let sources: Vec<&str> = rules.iter().map(|(_, r)| r.source.as_str()).collect();
    let tx = client.transaction().await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO ua_rules (keyword_lower, keyword, note, created_ms, source)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[])
             ON CONFLICT (keyword_lower) DO UPDATE SET note = excluded.note, source = excluded.source
             WHERE ua_rules.source = excluded.source OR excluded.source = 'cli'",
        )
        .await?;
    tx.execute(&upsert, &[&lowers, &keywords, &notes, &created, &sources])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes the rules of `keywords` in any case, returning those there were, by lowercased
/// keyword.
pub(super) async fn remove_ua_rules(
    client: &mut Object,
    keywords: Vec<String>,
) -> Result<Vec<UaRule>> {
    let mut keys: Vec<String> = keywords.iter().map(|k| k.to_lowercase()).collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = client
        .prepare_cached(
            "DELETE FROM ua_rules WHERE keyword_lower = ANY($1::text[])
             RETURNING keyword, note, created_ms, source, keyword_lower",
        )
        .await?;
    // One statement: a transaction of its own.
    let rows = client.query(&stmt, &[&keys]).await?;
    let mut removed: Vec<(String, UaRule)> =
        rows.iter().map(|row| (row.get(4), rule_of(row))).collect();
    removed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(removed.into_iter().map(|(_, rule)| rule).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(key: &str, page: &str) -> VisitorDelta {
        VisitorDelta {
            key: key.into(),
            session_key: None,
            ip: "192.0.2.1".parse().unwrap(),
            user_agent: String::new(),
            user: None,
            referrer: None,
            last_page: page.into(),
            page_views: 1,
            first_at: Timestamp::from_millis(0),
            last_at: Timestamp::from_millis(0),
            restart: false,
        }
    }

    fn pages(round: &[VisitorDelta]) -> Vec<&str> {
        round.iter().map(|d| d.last_page.as_str()).collect()
    }

    #[test]
    fn deltas_of_distinct_keys_are_one_round() {
        let rounds = rounds(vec![delta("a", "/1"), delta("b", "/2")]);
        assert_eq!(rounds.len(), 1);
        assert_eq!(pages(&rounds[0]), ["/1", "/2"]);
    }

    #[test]
    fn repeated_keys_go_in_later_rounds_in_the_order_given() {
        let rounds = rounds(vec![
            delta("a", "/a1"),
            delta("b", "/b1"),
            delta("a", "/a2"),
            delta("a", "/a3"),
        ]);
        let pages: Vec<Vec<&str>> = rounds.iter().map(|r| pages(r)).collect();
        assert_eq!(pages, [vec!["/a1", "/b1"], vec!["/a2"], vec!["/a3"]]);
    }
}
