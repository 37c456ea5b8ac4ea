//! Where bans, the allowlist, visitors and user-agent rules are kept: the source of truth that
//! the kernel maps and the agent's memory mirror.
//!
//! One trait, one module per backend. [`sqlite`] is the embedded default (one file, nothing to
//! install); [`postgres`] is one database shared by a fleet of agents. Every backend passes the
//! same test story, `suite` (compiled for tests only).
//!
//! Every mutating ban call returns the [`Effect`]s of the change, computed inside the same
//! transaction: for each network it touched, whether a live ban record is left and until when.
//! The agent applies exactly those to the kernel, so a change that only touched the records of
//! one source never disturbs a network that another source still bans.

pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub mod suite;

use async_trait::async_trait;
use ipnet::IpNet;

use crate::{
    ban::{Allow, Ban, Effect, ListEntry},
    time::Timestamp,
    visit::{UaRule, Visitor, VisitorDelta},
};

/// Errors of every backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database schema is version {found}, newer than this agent knows ({known}); upgrade the agent"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("cannot upgrade the database schema to version {version}: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt record in the database: {0}")]
    Corrupt(String),
    #[error("the store's worker thread has stopped")]
    Closed,
    #[error("cannot start the store's worker thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the store's worker failed on this request (a bug, see the log)")]
    Aborted,
    #[error("a list of {count} networks is more than a sync takes (at most {max})")]
    ListTooLong { count: usize, max: usize },
    #[error("{url} is not a PostgreSQL URL: {source}")]
    PostgresUrl {
        url: String,
        #[source]
        source: postgres::PgError,
    },
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: postgres::PgError,
    },
    #[error("cannot upgrade the PostgreSQL schema to version {version}: {source}")]
    PostgresMigrate {
        version: i64,
        #[source]
        source: postgres::PgError,
    },
    #[error("PostgreSQL: {0}")]
    Postgres(#[source] postgres::PgError),
    #[error("the task that listens for the fleet's changes stopped")]
    ListenerStopped,
    /// The change was computed but not committed: what it would leave cannot be enforced.
    #[error("{0}")]
    Refused(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether the same request may succeed later: the store is away, busy or out of space,
    /// rather than refusing the request itself. Writers of visits retry these for as long as
    /// it takes.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => sqlite_transient(e),
            StoreError::Postgres(e) | StoreError::Connect { source: e, .. } => match e.db_error() {
                // The server answered: only its resource and availability classes pass.
                Some(db) => {
                    let class = &db.code().code()[..2];
                    // 08 connection, 53 insufficient resources, 57 operator intervention
                    // (shutdown), 58 system error, 40 serialization/deadlock.
                    matches!(class, "08" | "53" | "57" | "58" | "40")
                }
                // No answer from the server: a lost connection, a pool timeout.
                None => true,
            },
            StoreError::Closed | StoreError::Aborted | StoreError::Thread(_) => true,
            _ => false,
        }
    }
}

fn sqlite_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(code) => matches!(
            code,
            DiskFull
                | DatabaseBusy
                | DatabaseLocked
                | SystemIoFailure
                | CannotOpen
                | ReadOnly
                | OutOfMemory
                | FileLockingProtocolFailed
        ),
        None => false,
    }
}

/// What `sync_source` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Records that did not exist for this source.
    pub added: usize,
    /// Records whose reason or expiry changed.
    pub updated: usize,
    /// Records of this source that the new list no longer has.
    pub removed: usize,
    /// Records left exactly as they were.
    pub unchanged: usize,
    /// Kernel-side consequences, one per network whose effective ban changed.
    pub effects: Vec<Effect>,
}

/// Decides, inside a change's transaction and before it commits, whether the change may be
/// made: the agent's answer is whether its kernel tables can hold what the change leaves
/// banned, so that a change they cannot hold changes nothing anywhere.
pub trait Admission: Send + Sync {
    /// `Err` with the reason refuses the change; the transaction is rolled back.
    fn admit(&self, effects: &[Effect]) -> std::result::Result<(), String>;
}

/// Admits every change: for a store used without kernel tables (its own tests, benchmarks).
pub struct Unlimited;

impl Admission for Unlimited {
    fn admit(&self, _: &[Effect]) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// The storage of bans, the allowlist, visitors and user-agent rules.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One line for `tracking status`, e.g. `sqlite /var/lib/tracking/tracking.db`.
    fn describe(&self) -> String;

    /// Every ban record, expired or not, ordered by network then source.
    async fn list_bans(&self) -> Result<Vec<Ban>>;

    /// For every network with at least one record live at `now`: the latest expiry among its
    /// live records (`None` if one of them never expires). This is what the kernel must hold.
    async fn effective_bans(&self, now: Timestamp) -> Result<Vec<(IpNet, Option<Timestamp>)>>;

    /// Inserts records, or updates reason and expiry of existing ones (same network and
    /// source; `created` of an existing record is kept). All or nothing.
    async fn add_bans(&self, bans: Vec<Ban>, now: Timestamp) -> Result<Vec<Effect>>;

    /// Removes the records of `networks`: those of `source` only, or of every source when `None`.
    /// Returns the removed records and the effects. All or nothing.
    async fn remove_bans(
        &self,
        networks: Vec<IpNet>,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(Vec<Ban>, Vec<Effect>)>;

    /// Makes the records of `source` exactly `entries`, in one transaction: adds what is
    /// missing (created at `now`), updates what changed (a reason, or an expiry: a synced record
    /// has none, so one that was given an expiry by hand loses it), removes what is gone.
    /// Records of other sources are untouched. Entries may come in any order; host bits are
    /// cleared, and of two entries of one network the first counts. `admission` sees the
    /// effects before the commit; a refusal leaves the store as it was.
    async fn sync_source(
        &self,
        source: String,
        entries: Vec<ListEntry>,
        now: Timestamp,
        admission: std::sync::Arc<dyn Admission>,
    ) -> Result<SyncReport>;

    /// Deletes the records that expired at or before `now`, returning the effects.
    async fn remove_expired(&self, now: Timestamp) -> Result<Vec<Effect>>;

    /// The allowlist, ordered by network.
    async fn list_allows(&self) -> Result<Vec<Allow>>;

    /// Adds networks to the allowlist (an existing one gets the new note). All or nothing.
    async fn add_allows(&self, allows: Vec<Allow>) -> Result<()>;

    /// Removes networks from the allowlist, returning those that were there.
    async fn remove_allows(&self, networks: Vec<IpNet>) -> Result<Vec<Allow>>;

    /// A receiver that changes whenever another agent changed the bans or the allowlist (a
    /// fleet sharing one database), so this agent can reconcile at once instead of at its next
    /// periodic pass. `None` when nobody else writes the store.
    fn ban_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Applies one delta per visitor (see [`VisitorDelta`] for the rule), in one transaction.
    async fn record_visits(&self, deltas: Vec<VisitorDelta>) -> Result<()>;

    /// Visitors last updated at or after `since`, most recent first, at most `limit`.
    async fn visitors_since(&self, since: Timestamp, limit: usize) -> Result<Vec<Visitor>>;

    /// The visitor with this key, if any.
    async fn visitor(&self, key: String) -> Result<Option<Visitor>>;

    /// Deletes at most `limit` visitors last updated before `before`, oldest first; returns
    /// how many it deleted (the clean-up calls it until fewer than `limit` go).
    async fn remove_visitors_before(&self, before: Timestamp, limit: usize) -> Result<usize>;

    /// `(visitors, registered)` last updated at or after `since`, on `path` when given: what a
    /// database query answers for `visitors_on_site` / `visitors_on_page`. The agent answers
    /// these from memory; this is for comparison and checks.
    async fn count_visitors(&self, since: Timestamp, path: Option<String>) -> Result<(u64, u64)>;

    /// Sum of page views over all visitor records.
    async fn page_views_total(&self) -> Result<u64>;

    /// The user-agent rules, ordered by keyword.
    async fn list_ua_rules(&self) -> Result<Vec<UaRule>>;

    /// Adds rules (keywords compare case-insensitively: adding `GoogleBot` when `googlebot`
    /// exists replaces its note). All or nothing.
    async fn add_ua_rules(&self, rules: Vec<UaRule>) -> Result<()>;

    /// Removes rules by keyword (case-insensitively), returning those that were there.
    async fn remove_ua_rules(&self, keywords: Vec<String>) -> Result<Vec<UaRule>>;
}
