//! The schema, as the ordered list of steps that build it.
//!
//! `PRAGMA user_version` holds how many steps a file has had. Opening applies the missing ones,
//! each in its own transaction together with the new version number, so a crash leaves the file
//! at one version or the next, never in between. A file with more steps than this list was
//! written by a newer agent and is refused rather than misread.
//!
//! Steps are append-only: once released, a step is never edited, only followed by another.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::{Result, StoreError};

/// Every schema step, oldest first; the schema version of a file is how many it has had.
const STEPS: &[&str] = &[
    // 1: bans and the allowlist.
    //
    // Networks are 18-byte keys (see `key.rs`), times are milliseconds since the epoch.
    // `WITHOUT ROWID` makes the primary key the table itself: the records of one network are
    // adjacent and found by a key prefix, and a sorted bulk insert appends to the B-tree.
    // `bans_by_source` finds the records of one source (what a sync replaces) without a scan.
    // No index on `expires_ms`: the worker finds expired records in its in-memory index.
    "CREATE TABLE bans (
        network    BLOB    NOT NULL CHECK (length(network) = 18),
        source     TEXT    NOT NULL,
        reason     TEXT    NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER,
        PRIMARY KEY (network, source)
    ) WITHOUT ROWID;
    CREATE INDEX bans_by_source ON bans (source, network);
    CREATE TABLE allows (
        network    BLOB    NOT NULL PRIMARY KEY CHECK (length(network) = 18),
        note       TEXT    NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 2: visitors and user-agent rules.
    //
    // `visitors` is one row per session (see `visit.rs`), written by the upsert in
    // `visitors.rs`. `ip` is text in its canonical form (`192.0.2.1`, `2001:db8::1`): unlike a
    // ban key it is never compared by range, and text reads as-is in the `sqlite3` shell. It
    // keeps its rowid: a row (user agent, pages) is a few hundred bytes, too large to be its own
    // key's B-tree entry.
    // `visitors_by_update` serves the clean-up (oldest first), `visitors_since` (newest first)
    // and `count_visitors` on the whole site; `visitors_by_page` serves `count_visitors` on one
    // page. Both end with `user` so that counting registered visitors reads the index alone.
    // `ua_rules` is keyed by the lowercased keyword (rules compare case-insensitively) and
    // keeps the spelling it was first added with for display.
    "CREATE TABLE visitors (
        key              TEXT    NOT NULL PRIMARY KEY,
        session_key      TEXT,
        ip               TEXT    NOT NULL,
        user_agent       TEXT    NOT NULL,
        user             TEXT,
        referrer         TEXT,
        last_page        TEXT    NOT NULL,
        page_views       INTEGER NOT NULL,
        session_start_ms INTEGER NOT NULL,
        last_update_ms   INTEGER NOT NULL
    );
    CREATE INDEX visitors_by_update ON visitors (last_update_ms, user);
    CREATE INDEX visitors_by_page ON visitors (last_page, last_update_ms, user);
    CREATE TABLE ua_rules (
        keyword_lower TEXT    NOT NULL PRIMARY KEY,
        keyword       TEXT    NOT NULL,
        note          TEXT    NOT NULL DEFAULT '',
        created_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 3: no `bans_by_source`.
    //
    // Syncs are diffed against the worker's in-memory index, which is loaded with a plain scan
    // of `bans`; nothing reads the records of one source through the index any more, and
    // keeping it up to date doubled the cost of every insert and delete of a sync.
    "DROP INDEX IF EXISTS bans_by_source;",
    // 4: the source of a user-agent rule (`cli`, or `bots` for the imported bot list).
    "ALTER TABLE ua_rules ADD COLUMN source TEXT NOT NULL DEFAULT 'cli';",
];

/// The schema version this code writes.
#[cfg(test)]
pub(super) const VERSION: i64 = STEPS.len() as i64;

/// Brings the file up to [`VERSION`].
pub(super) fn apply(conn: &mut Connection) -> Result<()> {
    apply_steps(conn, STEPS)
}

/// Brings the file up to `version` only, as an older agent would have left it.
#[cfg(test)]
pub(super) fn apply_up_to(conn: &mut Connection, version: usize) -> Result<()> {
    apply_steps(conn, &STEPS[..version])
}

fn apply_steps(conn: &mut Connection, steps: &[&str]) -> Result<()> {
    let known = steps.len() as i64;
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two agents opening a
        // new file at once cannot both apply the same step.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        let Some(step) = steps.get(found as usize) else {
            return Ok(());
        };
        let version = found + 1;
        let migrate = |source| super::SqliteError::Migrate { version, source };
        tx.execute_batch(step).map_err(migrate)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migrate)?;
        tx.commit().map_err(migrate)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn steps_are_applied_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db")).unwrap();
        let steps = ["CREATE TABLE a (x)", "CREATE TABLE b (y)"];
        apply_steps(&mut conn, &steps[..1]).unwrap();
        assert_eq!(version(&conn), 1);
        apply_steps(&mut conn, &steps).unwrap();
        assert_eq!(version(&conn), 2);
        // Nothing left to do: applying again would fail on `CREATE TABLE`.
        apply_steps(&mut conn, &steps).unwrap();
        assert_eq!(version(&conn), 2);
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db")).unwrap();
        let steps = [
            "CREATE TABLE a (x)",
            "CREATE TABLE b (y); CREATE TABLE a (x)",
        ];
        let err = apply_steps(&mut conn, &steps).unwrap_err();
        assert!(
            matches!(
                err.backend(),
                Some(crate::store::sqlite::SqliteError::Migrate { version: 2, .. })
            ),
            "{err}"
        );
        assert_eq!(version(&conn), 1);
        let b_exists: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'b'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(!b_exists, "half a step was kept");
    }
}
