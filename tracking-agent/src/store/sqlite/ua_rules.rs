//! User-agent rules, keyed by the lowercased keyword so that `GoogleBot` and `googlebot` are
//! one rule; the spelling it was first added with is what listings show.
//!
//! Lowercasing is Rust's (`str::to_lowercase`, full Unicode), not SQLite's `lower()`, which
//! only knows ASCII, so that every backend keys a keyword alike.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::{store::Result, time::Timestamp, visit::UaRule};

/// Every rule, by lowercased keyword.
pub(super) fn list(conn: &Connection) -> Result<Vec<UaRule>> {
    let mut stmt = conn.prepare_cached(
        "SELECT keyword, note, created_ms, source FROM ua_rules ORDER BY keyword_lower",
    )?;
    let mut rows = stmt.query([])?;
    let mut rules = Vec::new();
    while let Some(row) = rows.next()? {
        rules.push(UaRule {
            keyword: row.get(0)?,
            note: row.get(1)?,
            created: Timestamp::from_millis(row.get(2)?),
            source: row.get(3)?,
        });
    }
    Ok(rules)
}

/// Adds `rules`; a keyword that exists in any case gets the new note and keeps the rest. A
/// rule added by hand takes over a keyword of another source; an import leaves the rules of
/// other sources alone.
pub(super) fn add(conn: &mut Connection, rules: Vec<UaRule>) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO ua_rules (keyword_lower, keyword, note, created_ms, source)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (keyword_lower) DO UPDATE SET note = excluded.note, source = excluded.source
             WHERE ua_rules.source = excluded.source OR excluded.source = 'cli'",
        )?;
        for rule in &rules {
            upsert.execute(params![
                rule.keyword.to_lowercase(),
                rule.keyword,
                rule.note,
                rule.created.as_millis(),
                rule.source,
            ])?;
        }
    }
    Ok(tx.commit()?)
}

/// Removes the rules of `keywords` in any case, returning those there were, by lowercased
/// keyword.
pub(super) fn remove(conn: &mut Connection, keywords: Vec<String>) -> Result<Vec<UaRule>> {
    let mut keys: Vec<String> = keywords.iter().map(|k| k.to_lowercase()).collect();
    keys.sort_unstable();
    keys.dedup();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut removed = Vec::new();
    {
        let mut delete = tx.prepare_cached(
            "DELETE FROM ua_rules WHERE keyword_lower = ?1
             RETURNING keyword, note, created_ms, source",
        )?;
        for key in &keys {
            let mut rows = delete.query([key])?;
            while let Some(row) = rows.next()? {
                removed.push(UaRule {
                    keyword: row.get(0)?,
                    note: row.get(1)?,
                    created: Timestamp::from_millis(row.get(2)?),
                    source: row.get(3)?,
                });
            }
        }
    }
    tx.commit()?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_of_a_file_from_before_sources_become_rules_added_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db")).unwrap();
        // Version 3: no source column yet.
        super::super::migrations::apply_up_to(&mut conn, 3).unwrap();
        conn.execute(
            "INSERT INTO ua_rules (keyword_lower, keyword, note, created_ms)
             VALUES ('googlebot', 'Googlebot', 'search', 1)",
            [],
        )
        .unwrap();
        super::super::migrations::apply(&mut conn).unwrap();
        assert_eq!(
            list(&conn).unwrap(),
            [UaRule {
                keyword: "Googlebot".into(),
                note: "search".into(),
                created: Timestamp::from_millis(1),
                source: "cli".into(),
            }]
        );
    }
}
