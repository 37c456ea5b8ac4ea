//! The PostgreSQL store: one database shared by a fleet of agents, so that a ban made on one
//! host is enforced on all of them.
//!
//! - `url`: the connection URL as it may be shown (password hidden).
//! - `net`: networks as `cidr` values.
//! - `migrations`: the schema and how a database is brought up to date.
//! - `bans`: bans and the allowlist, and the effects of each change.
//! - `sync`: replacing the records of one source with a list, a million at a time.
//! - `visitors`: the session rule as a multi-row upsert, the tracker's queries, user-agent rules.
//! - `listen`: one connection that hears the fleet's changes.
//! - `tls`: TLS with rustls, as the URL's `sslmode` and `sslrootcert` ask.
//! - `fleet`: what each agent says of itself.
//! - [`test_server`]: a throwaway server and a fresh database each, for the tests here and the
//!   benchmarks of the `tests` crate.
//!
//! Every mutating call is one transaction. Those that change bans or the allowlist take one
//! advisory lock first, so that the changes of the fleet are applied one after the other and
//! the effects each returns are those of the database as it commits (two agents adding
//! overlapping bans at once could otherwise also deadlock on each other's rows). Each appends
//! its effects to the change log (`ban_changes`) at the next positions, and `NOTIFY
//! tracking_bans` with this store's instance id and the new end of the log, delivered only if
//! it commits; every agent's `listen` connection hears it and the agent applies exactly the
//! changes after the last position it applied.
//!
//! Connections are plain TCP or a Unix socket, or TLS when the URL says `sslmode=require`,
//! `verify-ca` or `verify-full` (with `sslrootcert`).
//!
//! The tables have plain names (`bans`, `allows`, `visitors`, `ua_rules`) in the connection's
//! schema: give the agents a database of their own, or a schema of their own through the URL
//! (`?options=-csearch_path%3Dtracking`) when the database is shared with an application.

mod bans;
mod error;
mod fleet;
mod listen;
mod migrations;
mod net;
mod sync;
#[cfg(any(test, feature = "test-support"))]
pub mod test_server;
#[cfg(test)]
mod tests;
pub mod tls;
mod url;
mod visitors;

use std::{
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use ipnet::IpNet;
use tokio::{sync::watch, task::AbortHandle};
use tokio_postgres::NoTls;

pub use self::{
    error::{PgError, PgStoreError},
    url::redacted,
};
use super::{
    BanPage, BanQuery, ChangeLog, HostReport, Position, Result, Store, StoreError, SyncReport,
};
use crate::{
    ban::{Allow, Ban, Effect, ListEntry},
    time::Timestamp,
    visit::{UaRule, Visitor, VisitorDelta},
};

/// Connections the pool keeps at most: the agent's requests are few at a time (its writes are
/// serialised by the engine), but reads (status, listings, the map) may overlap them.
const POOL_SIZE: usize = 8;

/// How long a request waits for a free connection before it fails.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How long one connection attempt may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The channel every ban or allowlist change is announced on.
const CHANNEL: &str = "tracking_bans";

/// Advisory lock keys ("trackmig", "trackban" in ASCII): the first serialises schema upgrades,
/// the second every change to the bans. Advisory locks belong to one database, so other
/// applications' keys elsewhere on the server do not matter.
const MIGRATION_LOCK: i64 = 0x7472_6163_6b6d_6967;
const BANS_LOCK: i64 = 0x7472_6163_6b62_616e;

/// A handle on the PostgreSQL store.
pub struct PgStore {
    /// The URL with its password hidden, for [`Store::describe`].
    shown: String,
    /// Connections for requests.
    pool: Pool,
    /// Sent with every notification this store makes, so that its own listener ignores them.
    instance: String,
    /// The highest change-log position heard (see [`Store::ban_changes`]).
    changes: watch::Receiver<u64>,
    /// Whether the listener hears the fleet now.
    listening: Arc<AtomicBool>,
    /// The listener task, stopped when the store is dropped.
    listener: AbortHandle,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`, or a
    /// Unix socket directory as the percent-encoded host), brings its schema up to date and
    /// starts listening for the other agents' changes.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redacted(url);
        let (plain, settings) = tls::split(url).map_err(|e| PgStoreError::Tls {
            url: shown.clone(),
            source: e,
        })?;
        let (tls, ssl_mode) = settings.connector().map_err(|e| PgStoreError::Tls {
            url: shown.clone(),
            source: e,
        })?;
        let mut config: tokio_postgres::Config =
            plain
                .parse()
                .map_err(|source: tokio_postgres::Error| PgStoreError::Url {
                    url: shown.clone(),
                    source: source.into(),
                })?;
        config.ssl_mode(ssl_mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            // What `pg_stat_activity` shows the operator.
            config.application_name("tracking-agent");
        }
        // A connection that broke is noticed by its first failing query; checking each one
        // with a round trip before every request is not worth its latency.
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            tls::Tls::Plain => Manager::from_config(config.clone(), NoTls, recycling()),
            tls::Tls::Rustls(connector) => {
                Manager::from_config(config.clone(), connector.clone(), recycling())
            }
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .expect("a pool with a runtime accepts timeouts");
        let mut client = pool.get().await.map_err(|source| PgStoreError::Connect {
            url: shown.clone(),
            source: source.into(),
        })?;
        migrations::apply(&mut client).await?;
        drop(client);

        let instance = instance_id();
        let heard = listen::start(config, tls, instance.clone()).await?;
        Ok(PgStore {
            shown,
            pool,
            instance,
            changes: heard.positions,
            listening: heard.listening,
            listener: heard.task,
        })
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A name for this store among the fleet's: the process id and 64 random bits.
fn instance_id() -> String {
    let random = RandomState::new().hash_one(SystemTime::now());
    format!("{}-{random:016x}", std::process::id())
}

#[async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        format!("postgresql {}", self.shown)
    }

    async fn list_bans(&self) -> Result<Vec<Ban>> {
        bans::list(&self.client().await?).await
    }

    async fn effective_bans(&self, now: Timestamp) -> Result<Vec<(IpNet, Option<Timestamp>)>> {
        bans::effective_all(&self.client().await?, now).await
    }

    async fn add_bans(&self, bans: Vec<Ban>, now: Timestamp) -> Result<Vec<Effect>> {
        bans::add(&mut self.client().await?, &self.instance, bans, now).await
    }

    async fn remove_bans(
        &self,
        networks: Vec<IpNet>,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(Vec<Ban>, Vec<Effect>)> {
        bans::remove(
            &mut self.client().await?,
            &self.instance,
            networks,
            source,
            now,
        )
        .await
    }

    async fn sync_source(
        &self,
        source: String,
        entries: Vec<ListEntry>,
        now: Timestamp,
        admission: std::sync::Arc<dyn super::Admission>,
    ) -> Result<SyncReport> {
        sync::sync_source(
            &mut self.client().await?,
            &self.instance,
            &source,
            entries,
            now,
            &*admission,
        )
        .await
    }

    async fn remove_expired(&self, now: Timestamp) -> Result<Vec<Effect>> {
        bans::remove_expired(&mut self.client().await?, &self.instance, now).await
    }

    async fn list_allows(&self) -> Result<Vec<Allow>> {
        bans::list_allows(&self.client().await?).await
    }

    async fn add_allows(&self, allows: Vec<Allow>) -> Result<()> {
        bans::add_allows(&mut self.client().await?, &self.instance, allows).await
    }

    async fn remove_allows(&self, networks: Vec<IpNet>) -> Result<Vec<Allow>> {
        bans::remove_allows(&mut self.client().await?, &self.instance, networks).await
    }

    fn ban_changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }

    fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn instance(&self) -> Option<&str> {
        Some(&self.instance)
    }

    async fn head(&self) -> Result<Position> {
        bans::head(&self.client().await?).await
    }

    async fn changes_since(&self, since: Position, limit: usize) -> Result<ChangeLog> {
        bans::changes_since(&self.client().await?, since, limit).await
    }

    async fn report_host(&self, report: HostReport) -> Result<()> {
        fleet::report(&self.client().await?, &report).await
    }

    async fn hosts(&self) -> Result<Vec<HostReport>> {
        fleet::hosts(&self.client().await?).await
    }

    async fn bans_of(&self, networks: Vec<IpNet>, source: String) -> Result<Vec<Ban>> {
        bans::bans_of(&self.client().await?, networks, source).await
    }

    async fn query_bans(&self, query: BanQuery) -> Result<BanPage> {
        bans::query(&self.client().await?, query).await
    }

    async fn record_visits(&self, deltas: Vec<VisitorDelta>) -> Result<()> {
        visitors::record(&mut self.client().await?, deltas).await
    }

    async fn visitors_since(&self, since: Timestamp, limit: usize) -> Result<Vec<Visitor>> {
        visitors::since(&self.client().await?, since, limit).await
    }

    async fn visitor(&self, key: String) -> Result<Option<Visitor>> {
        visitors::get(&self.client().await?, &key).await
    }

    async fn remove_visitors_before(&self, before: Timestamp, limit: usize) -> Result<usize> {
        visitors::remove_before(&self.client().await?, before, limit).await
    }

    async fn count_visitors(&self, since: Timestamp, path: Option<String>) -> Result<(u64, u64)> {
        visitors::count(&self.client().await?, since, path.as_deref()).await
    }

    async fn page_views_total(&self) -> Result<u64> {
        visitors::page_views_total(&self.client().await?).await
    }

    async fn list_ua_rules(&self) -> Result<Vec<UaRule>> {
        visitors::list_ua_rules(&self.client().await?).await
    }

    async fn add_ua_rules(&self, rules: Vec<UaRule>) -> Result<()> {
        visitors::add_ua_rules(&mut self.client().await?, rules).await
    }

    async fn remove_ua_rules(&self, keywords: Vec<String>) -> Result<Vec<UaRule>> {
        visitors::remove_ua_rules(&mut self.client().await?, keywords).await
    }
}
