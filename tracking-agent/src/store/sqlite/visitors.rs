//! Visitor records: the session rule as one SQL upsert, and the tracker's queries.
//!
//! None of this touches the ban index: the worker's own commits leave `PRAGMA data_version`
//! alone, so recording visits never makes it read the bans again.

use rusqlite::{Connection, Row, TransactionBehavior, params};

use crate::{
    store::{Result, StoreError},
    time::Timestamp,
    visit::{SESSION_IDLE, Visitor, VisitorDelta},
};

/// The columns [`visitor`] reads, in its order.
macro_rules! columns {
    () => {
        "key, session_key, ip, user_agent, user, referrer, last_page, page_views,
         session_start_ms, last_update_ms"
    };
}

/// [`VisitorDelta::apply_to`] in SQL, for a delta bound as `?1`..`?10` in the column order of
/// the insert, `?11` its `restart` flag and `?12` [`SESSION_IDLE`] in milliseconds.
///
/// In `DO UPDATE`, a bare column is the stored record and `excluded.` the delta (whose
/// `session_start_ms` is its `first_at` and `last_update_ms` its `last_at`); every expression
/// sees the record as it was before the update. The session starts over when `?11 OR
/// excluded.session_start_ms - last_update_ms > ?12`, and then every field comes from the
/// delta; otherwise views add up, referrer and start stay, and address, agent, user and page
/// come from the delta only if it is at least as recent (`excluded.last_update_ms >=
/// last_update_ms`).
const UPSERT: &str = "
INSERT INTO visitors (key, session_key, ip, user_agent, user, referrer, last_page,
                      page_views, session_start_ms, last_update_ms)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (key) DO UPDATE SET
    session_key = excluded.session_key,
    ip = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                 OR excluded.last_update_ms >= last_update_ms
              THEN excluded.ip ELSE ip END,
    user_agent = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                         OR excluded.last_update_ms >= last_update_ms
                      THEN excluded.user_agent ELSE user_agent END,
    user = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                   OR excluded.last_update_ms >= last_update_ms
                THEN excluded.user ELSE user END,
    last_page = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                        OR excluded.last_update_ms >= last_update_ms
                     THEN excluded.last_page ELSE last_page END,
    referrer = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                    THEN excluded.referrer ELSE referrer END,
    page_views = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                      THEN excluded.page_views ELSE page_views + excluded.page_views END,
    session_start_ms = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                            THEN excluded.session_start_ms ELSE session_start_ms END,
    last_update_ms = CASE WHEN ?11 OR excluded.session_start_ms - last_update_ms > ?12
                          THEN excluded.last_update_ms
                          ELSE max(last_update_ms, excluded.last_update_ms) END";

/// Applies `deltas` in one transaction.
pub(super) fn record(conn: &mut Connection, mut deltas: Vec<VisitorDelta>) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    // Key order visits the primary key's pages once each. Stable, so two deltas of one key
    // (a caller that did not merge) still apply in the order given.
    deltas.sort_by(|a, b| a.key.cmp(&b.key));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(UPSERT)?;
        let idle_ms = i64::try_from(SESSION_IDLE.as_millis()).expect("an hour fits");
        for delta in &deltas {
            upsert.execute(params![
                delta.key,
                delta.session_key,
                delta.ip.to_string(),
                delta.user_agent,
                delta.user,
                delta.referrer,
                delta.last_page,
                saturating_i64(delta.page_views),
                delta.first_at.as_millis(),
                delta.last_at.as_millis(),
                delta.restart,
                idle_ms,
            ])?;
        }
    }
    Ok(tx.commit()?)
}

/// Visitors last updated at or after `since`, newest first (of equal times, by key).
pub(super) fn since(conn: &Connection, since: Timestamp, limit: usize) -> Result<Vec<Visitor>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM visitors WHERE last_update_ms >= ?1
          ORDER BY last_update_ms DESC, key LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![since.as_millis(), saturating_i64(limit as u64)])?;
    let mut visitors = Vec::new();
    while let Some(row) = rows.next()? {
        visitors.push(visitor(row)?);
    }
    Ok(visitors)
}

pub(super) fn get(conn: &Connection, key: &str) -> Result<Option<Visitor>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM visitors WHERE key = ?1"
    ))?;
    let mut rows = stmt.query([key])?;
    rows.next()?.map(visitor).transpose()
}

/// Deletes at most `limit` of the visitors last updated before `before`, oldest first.
///
/// One statement, so one transaction that holds the write lock only for `limit` rows: the
/// clean-up calls it again and again, and visits recorded meanwhile wait at most that long.
pub(super) fn remove_before(conn: &Connection, before: Timestamp, limit: usize) -> Result<usize> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM visitors WHERE rowid IN (
             SELECT rowid FROM visitors WHERE last_update_ms < ?1
             ORDER BY last_update_ms LIMIT ?2)",
    )?;
    Ok(stmt.execute(params![before.as_millis(), saturating_i64(limit as u64)])?)
}

/// `(visitors, registered)` last updated at or after `since`, on `path` if given. Each query
/// reads one of the two indexes alone (both end with `user`).
pub(super) fn count(conn: &Connection, since: Timestamp, path: Option<&str>) -> Result<(u64, u64)> {
    let counts = |row: &Row<'_>| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?));
    let (visitors, registered) = match path {
        None => conn
            .prepare_cached(
                "SELECT count(*), count(user) FROM visitors WHERE last_update_ms >= ?1",
            )?
            .query_row(params![since.as_millis()], counts)?,
        Some(path) => conn
            .prepare_cached(
                "SELECT count(*), count(user) FROM visitors
                 WHERE last_page = ?2 AND last_update_ms >= ?1",
            )?
            .query_row(params![since.as_millis(), path], counts)?,
    };
    Ok((unsigned(visitors, "count")?, unsigned(registered, "count")?))
}

pub(super) fn page_views_total(conn: &Connection) -> Result<u64> {
    let total: i64 = conn
        .prepare_cached("SELECT coalesce(sum(page_views), 0) FROM visitors")?
        .query_row([], |row| row.get(0))?;
    unsigned(total, "page view total")
}

/// The visitor in a row of [`columns!`].
fn visitor(row: &Row<'_>) -> Result<Visitor> {
    let ip: String = row.get(2)?;
    Ok(Visitor {
        key: row.get(0)?,
        session_key: row.get(1)?,
        ip: ip
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("visitor address `{ip}`")))?,
        user_agent: row.get(3)?,
        user: row.get(4)?,
        referrer: row.get(5)?,
        last_page: row.get(6)?,
        page_views: unsigned(row.get(7)?, "page views")?,
        session_start: Timestamp::from_millis(row.get(8)?),
        last_update: Timestamp::from_millis(row.get(9)?),
    })
}

/// SQLite integers are signed; a count beyond `i64::MAX` is not a real one.
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative {what}: {n}")))
}
