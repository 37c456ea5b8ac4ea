//! The schema, as the ordered list of steps that build it.
//!
//! `tracking_migrations` has one row per step applied (not the usual `schema_migrations`, which
//! Rails and others keep with columns of their own, should the database be shared). Connecting
//! applies the missing steps, each in its own transaction together with its row (PostgreSQL's
//! DDL is transactional, so a step is all there or not at all). Every step first takes a
//! transaction-scoped advisory lock, so that the agents of a fleet starting at once line up:
//! the first applies the step, the others then find it done. A database with more steps than
//! this list was written by a newer agent and is refused rather than misread.
//!
//! Steps are append-only: once released, a step is never edited, only followed by another.

use tokio_postgres::Client;

use super::{MIGRATION_LOCK, PgStoreError, StoreError};
use crate::store::Result;

/// Every schema step, oldest first; the schema version of a database is how many it has had.
pub(super) const STEPS: &[&str] = &[
    // 1: bans and the allowlist, visitors and user-agent rules.
    //
    // Networks are `cidr` (see `net.rs`): they sort like `IpNet`, so `ORDER BY network` is the
    // primary key's order. Sources, visitor keys and keywords are `COLLATE "C"`: compared as
    // bytes, as Rust and SQLite compare them, whatever the database's default collation, and
    // so listed in the same order by both stores. Times are milliseconds since the epoch, as
    // in SQLite: the agent computes with them and never with the server's clock.
    //
    // `bans_by_expiry` finds expired records without a scan (the agents reap every few
    // seconds), and holds only the records that expire at all. No index by source: only a
    // sync looks records up by source, it joins a whole list against them, and a scan serves
    // that as well; an index would slow every insert of a million-record load by a third.
    //
    // `visitors.ip` is `inet`. No index on `last_page`: a B-tree entry cannot exceed about
    // 2.7 KB and a path can; counting one page's visitors scans the recent ones through
    // `visitors_by_update`, and the agent answers those counts from memory anyway.
    // `ua_rules` is keyed by the keyword lowercased (by Rust, like SQLite's store) and keeps
    // the spelling it was first added with.
    r#"CREATE TABLE bans (
        network    cidr   NOT NULL,
        source     text   COLLATE "C" NOT NULL,
        reason     text   NOT NULL DEFAULT '',
        created_ms bigint NOT NULL,
        expires_ms bigint,
        PRIMARY KEY (network, source)
    );
    CREATE INDEX bans_by_expiry ON bans (expires_ms) WHERE expires_ms IS NOT NULL;
    CREATE TABLE allows (
        network    cidr   NOT NULL PRIMARY KEY,
        note       text   NOT NULL DEFAULT '',
        created_ms bigint NOT NULL
    );
    CREATE TABLE visitors (
        key              text   COLLATE "C" NOT NULL PRIMARY KEY,
        session_key      text,
        ip               inet   NOT NULL,
        user_agent       text   NOT NULL,
        user_name        text,
        referrer         text,
        last_page        text   NOT NULL,
        page_views       bigint NOT NULL,
        session_start_ms bigint NOT NULL,
        last_update_ms   bigint NOT NULL
    );
    CREATE INDEX visitors_by_update ON visitors (last_update_ms);
    CREATE TABLE ua_rules (
        keyword_lower text   COLLATE "C" NOT NULL PRIMARY KEY,
        keyword       text   NOT NULL,
        note          text   NOT NULL DEFAULT '',
        created_ms    bigint NOT NULL
    );"#,
    // 2: the fleet. `ban_changes` is the log every change of bans or the allowlist appends to,
    // under the bans lock, so that positions are in commit order and without gaps: a row per
    // network whose effective ban changed (what the kernel must now hold for it), one for an
    // allowlist change (read it whole, it is small), one "bulk" row for a change too big to
    // list (a sync of a big list: reconcile whole). Agents apply exactly the changes after the
    // last position they applied. `fleet_hosts` is where each agent says how it is doing;
    // `synced_sources` who last synced each list.
    r#"CREATE TABLE ban_changes (
        position   bigint   NOT NULL PRIMARY KEY,
        kind       smallint NOT NULL,
        network    cidr,
        banned     boolean,
        expires_ms bigint,
        at_ms      bigint   NOT NULL
    );
    CREATE TABLE fleet_hosts (
        instance        text    COLLATE "C" NOT NULL PRIMARY KEY,
        host            text    NOT NULL,
        version         text    NOT NULL,
        interfaces      text    NOT NULL,
        started_ms      bigint  NOT NULL,
        heartbeat_ms    bigint  NOT NULL,
        heartbeat_every bigint  NOT NULL,
        applied         bigint  NOT NULL,
        bans_held       bigint  NOT NULL,
        left_out        bigint  NOT NULL,
        capacity_v4     bigint  NOT NULL,
        capacity_v6     bigint  NOT NULL,
        listening       boolean NOT NULL,
        last_error      text
    );
    CREATE TABLE synced_sources (
        source   text   COLLATE "C" NOT NULL PRIMARY KEY,
        host     text   NOT NULL,
        instance text   NOT NULL,
        at_ms    bigint NOT NULL,
        entries  bigint NOT NULL
    );"#,
    // 3: the source of a user-agent rule (`cli`, or `bots` for the imported bot list).
    r#"ALTER TABLE ua_rules ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT 'cli';"#,
];

/// The schema version this code writes.
#[cfg(test)]
pub(super) const VERSION: i64 = STEPS.len() as i64;

/// Brings the database up to [`VERSION`].
pub(super) async fn apply(client: &mut Client) -> Result<()> {
    apply_steps(client, STEPS).await
}

pub(super) async fn apply_steps(client: &mut Client, steps: &[&str]) -> Result<()> {
    let known = steps.len() as i64;
    loop {
        let tx = client.transaction().await?;
        // Held until this transaction ends: the next agent reads the version only after this
        // step is committed or rolled back.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS tracking_migrations (
                version    bigint      NOT NULL PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
        let found: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM tracking_migrations",
                &[],
            )
            .await?
            .get(0);
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        let Some(step) = steps.get(found as usize) else {
            tx.commit().await?;
            return Ok(());
        };
        let version = found + 1;
        let migrate = |source: tokio_postgres::Error| PgStoreError::Migrate {
            version,
            source: source.into(),
        };
        tx.batch_execute(step).await.map_err(migrate)?;
        tx.execute(
            "INSERT INTO tracking_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(migrate)?;
        tx.commit().await.map_err(migrate)?;
    }
}
