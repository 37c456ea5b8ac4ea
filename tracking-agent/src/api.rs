//! The control API's request and response bodies (JSON), shared by the server in [`crate::control`]
//! and the CLI's client: the CLI takes every type it sends or reads from here. A user-agent rule
//! ([`UaRule`]) is its own wire form, the same record the stores keep.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

pub use crate::visit::UaRule;
use crate::{kernel::Attachment, time::Timestamp, visit::Visitor};

/// `POST /v1/bans`
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBans {
    /// Addresses or networks.
    pub networks: Vec<String>,
    #[serde(default)]
    pub reason: String,
    /// Source of the records; `cli` when absent.
    #[serde(default)]
    pub source: Option<String>,
    /// Lifetime in seconds; with `until`, the sooner wins; neither means permanent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// Allow banning everything (`0.0.0.0/0`, `::/0`) or networks overlapping the allowlist.
    #[serde(default)]
    pub force: bool,
}

/// A ban record as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BanView {
    pub network: String,
    pub source: String,
    pub reason: String,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    /// Seconds left, when it expires.
    pub expires_in_secs: Option<u64>,
    /// Packets the kernel matched against this network (shared by its records).
    pub hits: u64,
    /// Whether the kernel holds the network right now.
    pub enforced: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AddBansReply {
    pub bans: Vec<BanView>,
    pub warnings: Vec<String>,
}

/// `POST /v1/bans/remove`
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBans {
    pub networks: Vec<String>,
    /// Only the records of this source; all sources when absent.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RemoveBansReply {
    pub removed: Vec<BanView>,
    /// Networks that had no record to remove.
    pub not_found: Vec<String>,
}

/// Query of `POST /v1/bans/sync`; the body is the list itself (`text/plain`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    pub source: String,
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncReply {
    pub source: String,
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Lines naming a network already named earlier in the list.
    pub duplicates: usize,
    pub warnings: Vec<String>,
    /// Milliseconds from receiving the list to all of it enforced.
    pub took_ms: u64,
    /// Of which: reading the list.
    #[serde(default)]
    pub parse_ms: u64,
    /// Storing it.
    #[serde(default)]
    pub store_ms: u64,
    /// Writing the effects into the kernel tables.
    #[serde(default)]
    pub kernel_ms: u64,
    /// Whose list this one replaced, when another agent of the fleet synced the source last.
    #[serde(default)]
    pub replaced: Option<SyncedByView>,
}

/// Who synced a source before.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncedByView {
    pub host: String,
    pub instance: String,
    pub at: Timestamp,
    pub entries: u64,
}

/// Query of `GET /v1/bans`: a page of the records that match every filter given, in network
/// then source order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanListQuery {
    /// Only this source's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Only the networks that contain this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Only the records whose reason contains this text, in any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Records on the page (default [`BAN_PAGE`], at most [`MAX_BAN_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// Records on a page of `GET /v1/bans` unless `limit` says otherwise.
pub const BAN_PAGE: usize = 100;
/// The most records one page holds.
pub const MAX_BAN_PAGE: usize = 10_000;

/// `GET /v1/bans`
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BanList {
    pub bans: Vec<BanView>,
    /// Records matching the filters, on all pages.
    pub total: u64,
    /// Where the next page starts (`after=`), when there is one.
    pub next: Option<String>,
}

/// This host's place in the fleet (`GET /v1/status`), with a shared PostgreSQL store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FleetStatus {
    /// This agent's id in the fleet's records.
    pub instance: String,
    /// The last position of the fleet's change log known here.
    pub head: i64,
    /// The last position this host applied.
    pub applied: i64,
    /// Changes made elsewhere that this host has not applied yet.
    pub behind: u64,
    /// Whether it hears the fleet's announcements now (it catches up on its timer otherwise).
    pub listening: bool,
    /// The last failure to catch up or reconcile, if the last attempt failed.
    pub last_error: Option<String>,
}

/// One agent of the fleet, as `GET /v1/fleet` lists them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetHost {
    pub host: String,
    pub instance: String,
    pub version: String,
    pub interfaces: Vec<String>,
    pub started: Timestamp,
    /// Its last report.
    pub heartbeat: Timestamp,
    pub heartbeat_age_secs: u64,
    /// The last position of the change log it applied, and how far that is behind the end.
    pub applied: i64,
    pub lag: u64,
    /// Bans its kernel tables hold, and those of the store they cannot.
    pub bans_enforced: u64,
    pub left_out: u64,
    pub capacity_v4: u64,
    pub capacity_v6: u64,
    pub listening: bool,
    pub last_error: Option<String>,
    /// Its tables cannot hold the store's bans: it enforces a subset (see docs/filter.md).
    pub full: bool,
    /// It missed three reports in a row.
    pub silent: bool,
    /// It is behind the log at its last report, or its listener is down.
    pub lagging: bool,
    /// The agent that answered.
    pub this: bool,
}

/// An allowlist entry as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllowView {
    pub network: String,
    pub note: String,
    pub created: Timestamp,
}

/// `POST /v1/allow`
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddAllows {
    pub networks: Vec<String>,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AddAllowsReply {
    pub added: Vec<AllowView>,
    pub warnings: Vec<String>,
}

/// `POST /v1/allow/remove`
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveAllows {
    pub networks: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RemoveAllowsReply {
    pub removed: Vec<AllowView>,
    pub not_found: Vec<String>,
}

/// One verdict counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    pub packets: u64,
    pub bytes: u64,
}

/// A ban and how many packets it matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopBan {
    pub network: String,
    pub hits: u64,
}

/// `GET /v1/stats`
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatsView {
    /// Verdict name (`passed`, `dropped`, ...) to its counter, summed over CPUs.
    pub counters: BTreeMap<String, CounterView>,
    /// The bans that matched most, most first.
    pub top: Vec<TopBan>,
    pub bans_v4: usize,
    pub bans_v6: usize,
    pub monitor: bool,
    /// Visit tracking counters (absent from an agent without the tracker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visits: Option<VisitStats>,
    /// The map's GeoIP databases and their decode failures (absent without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub geoip: Vec<crate::geoip::DatabaseStats>,
}

/// Counters of the visit hook.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VisitStats {
    /// Visits tracked since the agent started.
    pub tracked: u64,
    /// Visits not tracked (user-agent rule or no-tracking prefix).
    pub untracked: u64,
    /// Visits written to the store.
    pub stored: u64,
    /// Visits answered 202 and not stored: given up because the store refused them on their
    /// own, or still waiting when the agent stopped with the store away. Each is logged.
    pub lost: u64,
    /// Visits answered 503 because too many waited for the store, or it was behind.
    #[serde(default)]
    pub refused: u64,
    /// Visits answered and waiting for the store now.
    #[serde(default)]
    pub queued: u64,
    /// How long the oldest of those has waited, in milliseconds.
    #[serde(default)]
    pub oldest_queued_ms: u64,
    /// Failed store transactions since start (retried).
    #[serde(default)]
    pub store_retries: u64,
    /// Whether the last store transaction succeeded.
    #[serde(default)]
    pub store_answers: bool,
    /// Page views summed over every visitor record in the store: what the store holds, to
    /// check against what was sent (visits tracked before a restart included). `None` while
    /// the store does not answer: the rest of the stats still does.
    #[serde(default)]
    pub page_views_total: Option<u64>,
    pub active: crate::active::Counts,
}

/// Usage of one kernel table.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct TableView {
    /// Bans the kernel tables hold.
    pub used: usize,
    /// Bans they can hold (`--max-bans-v4` / `--max-bans-v6`).
    pub capacity: usize,
    /// Of the held ones, those in the overflow map (both candidate buckets were full).
    #[serde(default)]
    pub overflow: usize,
    /// Bans of the store that the tables cannot hold and this host does not enforce, as of the
    /// last reconcile (a fleet whose store outgrew this host's tables).
    #[serde(default)]
    pub left_out: usize,
}

/// `GET /v1/status`
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub interfaces: Vec<Attachment>,
    pub monitor: bool,
    pub pin_dir: String,
    pub map_generation: String,
    /// Whether this agent adopted maps pinned by an earlier one.
    pub adopted: bool,
    pub bans_v4: TableView,
    pub bans_v6: TableView,
    pub allowlist: usize,
    /// IPv6 filter disabled by an IPv6 ban shorter than /28: every IPv6 packet is looked up.
    pub v6_filter_off: bool,
    pub store: String,
    pub socket: String,
    pub last_reconcile: Option<Timestamp>,
    /// With a fleet's shared store only.
    #[serde(default)]
    pub fleet: Option<FleetStatus>,
    /// The CrowdSec bouncer, when `--crowdsec-url` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<CrowdsecView>,
}

/// The CrowdSec bouncer's state, in `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrowdsecView {
    /// The Local API it pulls from.
    pub url: String,
    pub interval_ms: u64,
    /// When the last pull was tried, answered or not.
    pub last_pull: Option<Timestamp>,
    /// When a pull last succeeded and its decisions were applied.
    pub last_success: Option<Timestamp>,
    /// Pulls answered and applied; pulls that failed (the Local API away, a refusal).
    pub pulls: u64,
    pub failures: u64,
    /// Ban decisions of scope Ip or Range held now, and the networks they ban.
    pub decisions: usize,
    pub networks: usize,
    /// Decisions not applied: another type or scope, or a value or duration that cannot be a
    /// ban (each is logged).
    pub skipped: u64,
    /// Why the last pull failed, while pulls fail.
    pub last_error: Option<String>,
}

/// `POST /v1/ua/import`: adds a list the agent carries as user-agent rules of its own
/// source.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportUaRules {
    /// `bots`: the crawler user agents of [`crate::bots`].
    pub list: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ImportUaReply {
    /// The source the rules are kept under.
    pub source: String,
    /// The list and its version.
    pub list: String,
    /// Rules of the source before and after.
    pub before: usize,
    pub after: usize,
    /// Keywords of the list that were rules of another source already (added by hand), and
    /// stay theirs.
    pub kept: usize,
}

/// Body of every error answer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// One line per offending item (network, list line), when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// `POST /v1/ua`
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUaRules {
    pub keywords: Vec<String>,
    #[serde(default)]
    pub note: String,
}

/// `POST /v1/ua/remove`
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveUaRules {
    /// The keywords; with `source` and none given, every rule of that source.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Only rules of this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RemoveUaReply {
    pub removed: Vec<UaRule>,
    pub not_found: Vec<String>,
}

/// A visitor as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorView {
    pub key: String,
    pub ip: IpAddr,
    pub user: Option<String>,
    pub user_agent: String,
    pub referrer: Option<String>,
    pub last_page: String,
    pub page_views: u64,
    pub session_start: Timestamp,
    pub last_update: Timestamp,
    pub active: bool,
}

impl VisitorView {
    pub fn new(v: &Visitor, active: bool) -> Self {
        VisitorView {
            key: v.key.clone(),
            ip: v.ip,
            user: v.user.clone(),
            user_agent: v.user_agent.clone(),
            referrer: v.referrer.clone(),
            last_page: v.last_page.clone(),
            page_views: v.page_views,
            session_start: v.session_start,
            last_update: v.last_update,
            active,
        }
    }
}
