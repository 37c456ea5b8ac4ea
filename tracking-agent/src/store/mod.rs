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

/// What a store call can fail with: a backend's own error, or what every backend refuses alike.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What went wrong inside a backend, in its own terms ([`sqlite::SqliteError`],
    /// [`postgres::PgStoreError`]), whose message names its own cause.
    #[error("{0}")]
    Backend(Box<dyn BackendError>),
    #[error(
        "the database schema is version {found}, newer than this agent knows ({known}); upgrade the agent"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("corrupt record in the database: {0}")]
    Corrupt(String),
    #[error("a list of {count} networks is more than a sync takes (at most {max})")]
    ListTooLong { count: usize, max: usize },
    /// The change was computed but not committed: what it would leave cannot be enforced.
    #[error("{0}")]
    Refused(String),
}

/// A backend's error type: it alone knows which of its failures may pass if tried again.
pub trait BackendError: std::error::Error + Send + Sync + 'static {
    /// Whether the same request may succeed later: the store is away, busy or out of space,
    /// rather than refusing the request itself.
    fn is_transient(&self) -> bool;
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether the same request may succeed later (see [`BackendError::is_transient`]). Writers
    /// of visits retry these for as long as it takes.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Backend(error) if error.is_transient())
    }

    /// The backend's error, when it is a `T`.
    pub fn backend<T: BackendError>(&self) -> Option<&T> {
        match self {
            StoreError::Backend(error) => {
                let error: &(dyn std::error::Error + 'static) = error.as_ref();
                error.downcast_ref()
            }
            _ => None,
        }
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
    /// Who synced this source before, when it was another agent: its list was replaced.
    pub replaced: Option<SyncedBy>,
    /// Where the change went in the fleet's log, when it went in as one bulk entry: the agent
    /// that made it has its effects in hand and need not reconcile whole for it.
    pub bulk_at: Option<Position>,
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

/// A place in the fleet's log of ban and allowlist changes (PostgreSQL): positions grow by one
/// with every change, in the order the changes committed.
pub type Position = i64;

/// One entry of the fleet's change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logged {
    /// What the kernel must now hold for one network.
    Ban(Effect),
    /// The allowlist changed: read it again.
    Allowlist,
    /// A change too big to list (a big sync): reconcile whole.
    Bulk,
}

/// The changes after a position, as far as the log still has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeLog {
    pub entries: Vec<(Position, Logged)>,
    /// False when changes right after the position were pruned from the log: whoever
    /// applied up to that position must reconcile whole.
    pub complete: bool,
}

/// What one agent of a fleet says of itself, every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostReport {
    /// The store instance's id: one per running agent.
    pub instance: String,
    pub host: String,
    pub version: String,
    pub interfaces: Vec<String>,
    pub started: Timestamp,
    pub heartbeat: Timestamp,
    /// How often it reports, in milliseconds: it is silent after a few missed.
    pub heartbeat_every_ms: u64,
    /// The last position of the change log it applied.
    pub applied: Position,
    /// Bans its kernel tables hold.
    pub bans_held: u64,
    /// Bans of the store its tables cannot hold.
    pub left_out: u64,
    pub capacity_v4: u64,
    pub capacity_v6: u64,
    /// Whether it hears the fleet's notifications now.
    pub listening: bool,
    /// The last failure of a reconcile or catch-up, if the last one failed.
    pub last_error: Option<String>,
}

/// The name of this host, as `uname -n` gives it: how the fleet's records name agents.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Who last synced a source, as the store remembers it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncedBy {
    pub host: String,
    /// The store instance of the agent that synced it (one host may run several agents).
    pub instance: String,
    pub at: Timestamp,
    pub entries: u64,
}

/// A page of ban records: those matching a query, after a cursor, in network then source
/// order.
#[derive(Clone, Debug, Default)]
pub struct BanQuery {
    /// Only the records of this source.
    pub source: Option<String>,
    /// Only the records whose network contains this address.
    pub contains: Option<std::net::IpAddr>,
    /// Only the records whose reason contains this text (case-insensitively).
    pub text: Option<String>,
    /// After this record (network, source): the `next` of the previous page.
    pub after: Option<(IpNet, String)>,
    pub limit: usize,
}

/// A page of [`BanQuery`]'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BanPage {
    pub bans: Vec<Ban>,
    /// Records matching the query in all, on every page.
    pub total: u64,
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

    /// A receiver of the highest change-log position the other agents announced (a fleet
    /// sharing one database), changed by each of their changes and whenever the connection
    /// that hears them is back after a loss, so this agent can catch up at once instead of at
    /// its next heartbeat. `None` when nobody else writes the store.
    fn ban_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Whether the fleet's announcements are heard now (always, without a fleet).
    fn listening(&self) -> bool {
        true
    }

    /// The store instance's id in the fleet, if it has one.
    fn instance(&self) -> Option<&str> {
        None
    }

    /// The last position of the change log (0 without a fleet).
    async fn head(&self) -> Result<Position> {
        Ok(0)
    }

    /// The changes after `since`, at most `limit`, in order.
    async fn changes_since(&self, since: Position, limit: usize) -> Result<ChangeLog> {
        let _ = (since, limit);
        Ok(ChangeLog {
            entries: Vec::new(),
            complete: true,
        })
    }

    /// Records how this agent is doing, for `tracking fleet`.
    async fn report_host(&self, report: HostReport) -> Result<()> {
        let _ = report;
        Ok(())
    }

    /// What every agent of the fleet last said of itself.
    async fn hosts(&self) -> Result<Vec<HostReport>> {
        Ok(Vec::new())
    }

    /// The records of `networks` (host bits cleared) of one source, as stored: what a change
    /// just wrote, without listing every ban.
    async fn bans_of(&self, networks: Vec<IpNet>, source: String) -> Result<Vec<Ban>>;

    /// A page of records matching `query`.
    async fn query_bans(&self, query: BanQuery) -> Result<BanPage>;

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
