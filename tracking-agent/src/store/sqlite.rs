//! The embedded SQLite store: one file, nothing to install.
//!
//! The connection lives on one thread of its own (`worker`), which serves requests in order;
//! the async methods send it a closure and await the answer, so no async task ever blocks on
//! SQLite and no lock is shared with async code. Dropping the store ends the thread and closes
//! the file.
//!
//! - `key`: how a network is written (18 bytes that sort like networks).
//! - `migrations`: the schema and how a file is brought up to date.
//! - `index`: the bans table in memory, which makes syncing large lists cheap.
//! - `worker`: the thread and every request it serves.
//!
//! Other processes may read the file while the agent writes (WAL), and even write to it (an
//! operator in the `sqlite3` shell): the worker notices and reads its index of bans again.

mod index;
mod key;
mod migrations;
mod worker;

use std::{
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use async_trait::async_trait;
use ipnet::IpNet;
use rusqlite::Connection;
use tokio::sync::oneshot;

use self::worker::{Job, Worker};
use super::{Result, Store, StoreError, SyncReport};
use crate::{
    ban::{Allow, Ban, Effect},
    time::Timestamp,
};

/// How long a statement waits for a lock another process holds (a reader checkpointing, a
/// backup) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the SQLite store; the connection itself is on the worker thread.
pub struct SqliteStore {
    /// The database file, for [`Store::describe`].
    path: PathBuf,
    /// Requests to the worker; once it is dropped, the worker finishes the queue and stops.
    jobs: mpsc::Sender<Job>,
    /// The worker, joined on drop so that the file is closed when the store is gone.
    thread: Option<JoinHandle<()>>,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and its directory, private to the agent) if
    /// needed, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            // Ban records and, later, visitor addresses: nobody else's business.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
        }
        let opening = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(opening)?;
        configure(&conn).map_err(opening)?;
        migrations::apply(&mut conn)?;

        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tracking-sqlite".into())
            .spawn(move || Worker::new(conn).run(queue))
            .map_err(StoreError::Thread)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            jobs,
            thread: Some(thread),
        })
    }

    /// Runs `request` on the worker thread and waits for its answer.
    async fn call<T, F>(&self, request: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Worker) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |worker| {
            // Nobody to tell if the caller gave up waiting; the work is done either way.
            let _ = reply.send(request(worker));
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        // The worker outlives this handle, so a reply can only go missing if the job panicked.
        answer.await.map_err(|_| StoreError::Aborted)?
    }
}

/// Settings of every connection.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers (the CLI, a backup) never block the agent's writes, and a commit is one
    // append. With WAL, NORMAL loses no integrity on power loss, at most the last commits, and
    // saves an fsync per commit.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite refused WAL mode; writes will block readers");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // The worker checkpoints whenever it is idle (see `Worker::checkpoint`); this is only the
    // backstop for a worker that never is, in pages (4 KiB): 256 MiB.
    conn.pragma_update(None, "wal_autocheckpoint", 65_536)?;
    Ok(())
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Hang up (a sender whose receiver is already gone takes its place), then wait for the
        // worker to finish the request in hand, if any, and close the file.
        drop(std::mem::replace(&mut self.jobs, mpsc::channel().0));
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the SQLite worker thread panicked");
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    async fn list_bans(&self) -> Result<Vec<Ban>> {
        self.call(Worker::list_bans).await
    }

    async fn effective_bans(&self, now: Timestamp) -> Result<Vec<(IpNet, Option<Timestamp>)>> {
        self.call(move |w| w.effective_bans(now)).await
    }

    async fn add_bans(&self, bans: Vec<Ban>, now: Timestamp) -> Result<Vec<Effect>> {
        self.call(move |w| w.add_bans(bans, now)).await
    }

    async fn remove_bans(
        &self,
        networks: Vec<IpNet>,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(Vec<Ban>, Vec<Effect>)> {
        self.call(move |w| w.remove_bans(networks, source, now))
            .await
    }

    /// The `source` of each ban is ignored: every record is stored under `source`.
    async fn sync_source(
        &self,
        source: String,
        bans: Vec<Ban>,
        now: Timestamp,
    ) -> Result<SyncReport> {
        self.call(move |w| w.sync_source(source, bans, now)).await
    }

    async fn remove_expired(&self, now: Timestamp) -> Result<Vec<Effect>> {
        self.call(move |w| w.remove_expired(now)).await
    }

    async fn list_allows(&self) -> Result<Vec<Allow>> {
        self.call(Worker::list_allows).await
    }

    async fn add_allows(&self, allows: Vec<Allow>) -> Result<()> {
        self.call(move |w| w.add_allows(allows)).await
    }

    async fn remove_allows(&self, networks: Vec<IpNet>) -> Result<Vec<Allow>> {
        self.call(move |w| w.remove_allows(networks)).await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tempfile::TempDir;

    use super::*;
    use crate::ban::Effective;

    /// A store in a directory of its own that does not exist yet, reopened at will.
    struct Harness {
        dir: TempDir,
        store: SqliteStore,
    }

    impl Harness {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("state/tracking.db")).unwrap();
            Harness { dir, store }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("state/tracking.db")
        }

        /// Closes the store, then opens the file again.
        fn reopen(self) -> Self {
            let Harness { dir, store } = self;
            drop(store);
            let store = SqliteStore::open(&dir.path().join("state/tracking.db")).unwrap();
            Harness { dir, store }
        }

        /// Asserts that the worker's in-memory index holds exactly what the table holds.
        async fn assert_index_matches_table(&self) {
            let (index, table) = self.store.call(Worker::index_and_table).await.unwrap();
            assert_eq!(index, table, "the in-memory index drifted from the table");
        }

        /// Runs SQL on a second connection, as another process would.
        fn sql(&self, sql: &str) {
            Connection::open(self.path())
                .unwrap()
                .execute_batch(sql)
                .unwrap();
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// The IPv4 address `n` as a host network.
    fn host(n: u32) -> IpNet {
        IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(n)))
    }

    /// A ban that never expires, created at `NOW`.
    fn ban(network: &str, source: &str, reason: &str) -> Ban {
        Ban {
            network: net(network),
            source: source.into(),
            reason: reason.into(),
            created: at(NOW),
            expires: None,
        }
    }

    /// `ban` expiring at `ms`.
    fn until(ms: i64, ban: Ban) -> Ban {
        Ban {
            expires: Some(at(ms)),
            ..ban
        }
    }

    fn banned(expires: Option<i64>) -> Effective {
        Effective::Banned {
            expires: expires.map(at),
        }
    }

    fn effect(network: &str, effective: Effective) -> Effect {
        (net(network), effective)
    }

    fn allow(network: &str, note: &str, created: i64) -> Allow {
        Allow {
            network: net(network),
            note: note.into(),
            created: at(created),
        }
    }

    #[tokio::test]
    async fn added_bans_are_listed_by_network_then_source() {
        let h = Harness::new();
        let effects = h
            .store
            .add_bans(
                vec![
                    ban("2001:db8::/32", "cli", ""),
                    ban("192.0.2.0/24", "cli", "scanner"),
                    ban("10.0.0.1/32", "cli", ""),
                    ban("10.0.0.1/32", "api", "from the app"),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        assert_eq!(
            effects,
            [
                effect("10.0.0.1/32", banned(None)),
                effect("192.0.2.0/24", banned(None)),
                effect("2001:db8::/32", banned(None)),
            ]
        );
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [
                ban("10.0.0.1/32", "api", "from the app"),
                ban("10.0.0.1/32", "cli", ""),
                ban("192.0.2.0/24", "cli", "scanner"),
                ban("2001:db8::/32", "cli", ""),
            ]
        );
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn host_bits_are_cleared_on_the_way_in() {
        let h = Harness::new();
        let effects = h
            .store
            .add_bans(vec![ban("192.0.2.77/24", "cli", "")], at(NOW))
            .await
            .unwrap();
        assert_eq!(effects, [effect("192.0.2.0/24", banned(None))]);
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [ban("192.0.2.0/24", "cli", "")]
        );
    }

    #[tokio::test]
    async fn adding_again_updates_reason_and_expiry_but_keeps_created() {
        let h = Harness::new();
        h.store
            .add_bans(
                vec![until(NOW + 60_000, ban("10.0.0.1/32", "cli", "first"))],
                at(NOW),
            )
            .await
            .unwrap();
        let again = Ban {
            created: at(NOW + 1_000),
            ..until(NOW + 120_000, ban("10.0.0.1/32", "cli", "second"))
        };
        let effects = h
            .store
            .add_bans(vec![again], at(NOW + 1_000))
            .await
            .unwrap();
        assert_eq!(
            effects,
            [effect("10.0.0.1/32", banned(Some(NOW + 120_000)))]
        );
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [until(NOW + 120_000, ban("10.0.0.1/32", "cli", "second"))],
            "created must stay at the first add"
        );

        h.store
            .add_bans(vec![ban("10.0.0.1/32", "cli", "second")], at(NOW))
            .await
            .unwrap();
        assert_eq!(
            h.store.effective_bans(at(NOW)).await.unwrap(),
            [(net("10.0.0.1/32"), None)],
            "an expiry can be lifted"
        );
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn a_network_banned_by_two_sources_is_banned_until_the_later_expiry() {
        let h = Harness::new();
        let network = "198.51.100.0/24";
        h.store
            .add_bans(vec![until(NOW + 100, ban(network, "cli", ""))], at(NOW))
            .await
            .unwrap();
        let effects = h
            .store
            .add_bans(vec![until(NOW + 500, ban(network, "api", ""))], at(NOW))
            .await
            .unwrap();
        assert_eq!(effects, [effect(network, banned(Some(NOW + 500)))]);
        assert_eq!(h.store.list_bans().await.unwrap().len(), 2, "two records");
        assert_eq!(
            h.store.effective_bans(at(NOW)).await.unwrap(),
            [(net(network), Some(at(NOW + 500)))]
        );

        // Lifting the longer ban leaves the shorter one in force.
        let (removed, effects) = h
            .store
            .remove_bans(vec![net(network)], Some("api".into()), at(NOW))
            .await
            .unwrap();
        assert_eq!(removed, [until(NOW + 500, ban(network, "api", ""))]);
        assert_eq!(effects, [effect(network, banned(Some(NOW + 100)))]);

        // Lifting the last one unbans the network.
        let (removed, effects) = h
            .store
            .remove_bans(vec![net(network)], Some("cli".into()), at(NOW))
            .await
            .unwrap();
        assert_eq!(removed, [until(NOW + 100, ban(network, "cli", ""))]);
        assert_eq!(effects, [effect(network, Effective::Unbanned)]);
        assert!(h.store.list_bans().await.unwrap().is_empty());
        assert!(h.store.effective_bans(at(NOW)).await.unwrap().is_empty());
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn a_record_that_never_expires_outlasts_every_other() {
        let h = Harness::new();
        let effects = h
            .store
            .add_bans(
                vec![
                    until(NOW + 500, ban("10.0.0.1/32", "api", "")),
                    ban("10.0.0.1/32", "cli", ""),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        assert_eq!(effects, [effect("10.0.0.1/32", banned(None))]);
    }

    #[tokio::test]
    async fn removing_without_a_source_removes_the_records_of_every_source() {
        let h = Harness::new();
        h.store
            .add_bans(
                vec![
                    ban("10.0.0.1/32", "cli", ""),
                    ban("10.0.0.1/32", "list", ""),
                    ban("10.0.0.2/32", "list", ""),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        let (removed, effects) = h
            .store
            .remove_bans(vec![net("10.0.0.1/32"), net("10.9.9.9/32")], None, at(NOW))
            .await
            .unwrap();
        assert_eq!(
            removed,
            [
                ban("10.0.0.1/32", "cli", ""),
                ban("10.0.0.1/32", "list", "")
            ]
        );
        // A network nobody banned has no effect to report.
        assert_eq!(effects, [effect("10.0.0.1/32", Effective::Unbanned)]);
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [ban("10.0.0.2/32", "list", "")]
        );
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn sync_makes_a_source_hold_exactly_the_list_and_leaves_other_sources_alone() {
        let h = Harness::new();
        h.store
            .add_bans(vec![ban("10.0.0.2/32", "cli", "by hand")], at(NOW))
            .await
            .unwrap();
        let first = h
            .store
            .sync_source(
                "drop".into(),
                vec![
                    ban("10.0.0.1/32", "drop", "SBL1"),
                    ban("10.0.0.2/32", "drop", "SBL2"),
                    until(NOW + 500, ban("10.0.0.3/32", "drop", "SBL3")),
                    ban("10.0.0.5/32", "drop", "SBL5"),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        assert_eq!(
            first,
            SyncReport {
                added: 4,
                updated: 0,
                removed: 0,
                unchanged: 0,
                effects: vec![
                    effect("10.0.0.1/32", banned(None)),
                    effect("10.0.0.2/32", banned(None)),
                    effect("10.0.0.3/32", banned(Some(NOW + 500))),
                    effect("10.0.0.5/32", banned(None)),
                ],
            }
        );

        let second = h
            .store
            .sync_source(
                "drop".into(),
                vec![
                    ban("10.0.0.4/32", "drop", "SBL4"),
                    ban("10.0.0.5/32", "drop", "SBL5"),
                    until(NOW + 900, ban("10.0.0.3/32", "drop", "SBL3")),
                    ban("10.0.0.1/32", "drop", "SBL1, renamed"),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        assert_eq!(
            second,
            SyncReport {
                added: 1,
                updated: 2,
                removed: 1,
                unchanged: 1,
                // A new reason alone changes nothing in the kernel; the manual ban of 10.0.0.2
                // keeps it banned although the list dropped it.
                effects: vec![
                    effect("10.0.0.2/32", banned(None)),
                    effect("10.0.0.3/32", banned(Some(NOW + 900))),
                    effect("10.0.0.4/32", banned(None)),
                ],
            }
        );
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [
                ban("10.0.0.1/32", "drop", "SBL1, renamed"),
                ban("10.0.0.2/32", "cli", "by hand"),
                until(NOW + 900, ban("10.0.0.3/32", "drop", "SBL3")),
                ban("10.0.0.4/32", "drop", "SBL4"),
                ban("10.0.0.5/32", "drop", "SBL5"),
            ]
        );
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn syncing_the_same_list_again_changes_nothing() {
        let h = Harness::new();
        let list = vec![
            ban("10.0.0.1/32", "drop", "SBL1"),
            until(NOW + 500, ban("10.0.0.3/32", "drop", "")),
        ];
        h.store
            .sync_source("drop".into(), list.clone(), at(NOW))
            .await
            .unwrap();
        let again = h
            .store
            .sync_source("drop".into(), list, at(NOW))
            .await
            .unwrap();
        assert_eq!(
            again,
            SyncReport {
                unchanged: 2,
                ..SyncReport::default()
            }
        );
    }

    #[tokio::test]
    async fn syncing_an_empty_list_removes_every_record_of_the_source() {
        let h = Harness::new();
        h.store
            .add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
            .await
            .unwrap();
        h.store
            .sync_source(
                "drop".into(),
                vec![
                    ban("10.0.0.1/32", "drop", ""),
                    ban("10.0.0.2/32", "drop", ""),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        let report = h
            .store
            .sync_source("drop".into(), vec![], at(NOW))
            .await
            .unwrap();
        assert_eq!(
            report,
            SyncReport {
                removed: 2,
                effects: vec![
                    effect("10.0.0.1/32", banned(None)),
                    effect("10.0.0.2/32", Effective::Unbanned),
                ],
                ..SyncReport::default()
            }
        );
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [ban("10.0.0.1/32", "cli", "")]
        );
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn a_list_is_stored_under_the_name_it_is_synced_as() {
        let h = Harness::new();
        h.store
            .sync_source(
                "drop".into(),
                vec![ban("10.0.0.1/32", "other", "")],
                at(NOW),
            )
            .await
            .unwrap();
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [ban("10.0.0.1/32", "drop", "")]
        );
    }

    #[tokio::test]
    async fn a_large_resync_touches_only_what_changed() {
        let h = Harness::new();
        let list: Vec<Ban> = (0..5_000u32)
            .map(|i| {
                let network = host(0x0a00_0000 + i * 7);
                Ban {
                    network,
                    ..ban("0.0.0.0/0", "big", "")
                }
            })
            .collect();
        let first = h
            .store
            .sync_source("big".into(), list.clone(), at(NOW))
            .await
            .unwrap();
        assert_eq!((first.added, first.effects.len()), (5_000, 5_000));

        // Every 100th record gets a reason, every 100th + 1 goes, and 50 new ones come.
        let mut changed = list.clone();
        for (i, ban) in changed.iter_mut().enumerate() {
            if i % 100 == 0 {
                ban.reason = "now with a reason".into();
            }
        }
        let mut changed: Vec<Ban> = changed
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 100 != 1)
            .map(|(_, ban)| ban)
            .collect();
        changed.extend((0..50u32).map(|i| Ban {
            network: host(0x0b00_0000 + i),
            ..ban("0.0.0.0/0", "big", "")
        }));
        changed.reverse();
        let second = h
            .store
            .sync_source("big".into(), changed, at(NOW))
            .await
            .unwrap();
        assert_eq!(
            (
                second.added,
                second.updated,
                second.removed,
                second.unchanged
            ),
            (50, 50, 50, 4_900)
        );
        assert_eq!(second.effects.len(), 100, "the added and the removed");
        assert_eq!(h.store.list_bans().await.unwrap().len(), 5_000);
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn expired_records_are_not_effective_and_are_reaped() {
        let h = Harness::new();
        h.store
            .add_bans(
                vec![
                    until(NOW + 10, ban("10.0.0.1/32", "cli", "")),
                    until(NOW + 10, ban("10.0.0.2/32", "cli", "")),
                    ban("10.0.0.2/32", "list", ""),
                    until(NOW + 20, ban("10.0.0.3/32", "cli", "")),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        // A record expiring at `now` is over.
        let later = at(NOW + 10);
        assert_eq!(
            h.store.effective_bans(later).await.unwrap(),
            [
                (net("10.0.0.2/32"), None),
                (net("10.0.0.3/32"), Some(at(NOW + 20)))
            ]
        );
        let effects = h.store.remove_expired(later).await.unwrap();
        assert_eq!(
            effects,
            [
                effect("10.0.0.1/32", Effective::Unbanned),
                effect("10.0.0.2/32", banned(None)),
            ]
        );
        assert_eq!(
            h.store.list_bans().await.unwrap(),
            [
                ban("10.0.0.2/32", "list", ""),
                until(NOW + 20, ban("10.0.0.3/32", "cli", "")),
            ]
        );
        assert!(h.store.remove_expired(later).await.unwrap().is_empty());
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn the_allowlist_is_added_listed_and_removed() {
        let h = Harness::new();
        h.store
            .add_allows(vec![
                allow("2001:db8::/48", "office v6", NOW),
                allow("203.0.113.7/32", "office", NOW),
            ])
            .await
            .unwrap();
        h.store
            .add_allows(vec![allow("203.0.113.7/32", "the office", NOW + 5)])
            .await
            .unwrap();
        assert_eq!(
            h.store.list_allows().await.unwrap(),
            [
                allow("203.0.113.7/32", "the office", NOW),
                allow("2001:db8::/48", "office v6", NOW),
            ],
            "ordered by network; a new note keeps the first created"
        );
        let removed = h
            .store
            .remove_allows(vec![net("2001:db8::/48"), net("192.0.2.1/32")])
            .await
            .unwrap();
        assert_eq!(removed, [allow("2001:db8::/48", "office v6", NOW)]);
        assert_eq!(
            h.store.list_allows().await.unwrap(),
            [allow("203.0.113.7/32", "the office", NOW)]
        );
    }

    #[tokio::test]
    async fn reopening_the_file_keeps_everything() {
        let h = Harness::new();
        let list = vec![
            ban("10.0.0.1/32", "drop", "SBL1"),
            until(NOW + 500, ban("10.0.0.2/32", "drop", "")),
        ];
        h.store
            .sync_source("drop".into(), list.clone(), at(NOW))
            .await
            .unwrap();
        h.store
            .add_bans(vec![ban("10.0.0.2/32", "cli", "")], at(NOW))
            .await
            .unwrap();
        h.store
            .add_allows(vec![allow("203.0.113.7/32", "office", NOW)])
            .await
            .unwrap();
        let bans = h.store.list_bans().await.unwrap();
        let effective = h.store.effective_bans(at(NOW)).await.unwrap();

        let h = h.reopen();
        assert_eq!(h.store.list_bans().await.unwrap(), bans);
        assert_eq!(h.store.effective_bans(at(NOW)).await.unwrap(), effective);
        assert_eq!(
            h.store.list_allows().await.unwrap(),
            [allow("203.0.113.7/32", "office", NOW)]
        );
        // The index read back from the file knows what the list already holds.
        let again = h
            .store
            .sync_source("drop".into(), list, at(NOW))
            .await
            .unwrap();
        assert_eq!(
            again,
            SyncReport {
                unchanged: 2,
                ..SyncReport::default()
            }
        );
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn a_change_made_by_another_process_is_seen() {
        let h = Harness::new();
        let list = vec![
            ban("10.0.0.1/32", "drop", ""),
            ban("10.0.0.2/32", "drop", ""),
        ];
        h.store
            .sync_source("drop".into(), list.clone(), at(NOW))
            .await
            .unwrap();
        // Someone in the `sqlite3` shell.
        h.sql("DELETE FROM bans WHERE network = (SELECT min(network) FROM bans)");
        assert_eq!(
            h.store.effective_bans(at(NOW)).await.unwrap(),
            [(net("10.0.0.2/32"), None)]
        );
        let again = h
            .store
            .sync_source("drop".into(), list, at(NOW))
            .await
            .unwrap();
        assert_eq!((again.added, again.unchanged), (1, 1));
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn a_file_from_a_newer_agent_is_refused() {
        let h = Harness::new();
        drop(h.store);
        let newer = migrations::VERSION + 1;
        Connection::open(h.dir.path().join("state/tracking.db"))
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let err = SqliteStore::open(&h.dir.path().join("state/tracking.db"))
            .err()
            .unwrap();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, known }
                if found == newer && known == migrations::VERSION),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracking.db");
        std::fs::write(
            &path,
            "not a database, just a text file that is long enough ".repeat(20),
        )
        .unwrap();
        let err = SqliteStore::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(err.to_string().contains("tracking.db"), "{err}");
    }

    #[tokio::test]
    async fn a_request_that_fails_midway_changes_nothing() {
        let h = Harness::new();
        h.store
            .sync_source(
                "drop".into(),
                vec![
                    ban("10.0.0.1/32", "drop", ""),
                    ban("10.0.0.2/32", "drop", ""),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        // A trigger makes SQLite refuse one record, as a full disk or a constraint would,
        // after the records before it were written.
        h.sql(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON bans WHEN NEW.reason = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned record'); END;",
        );
        let before = h.store.list_bans().await.unwrap();

        let err = h
            .store
            .add_bans(
                vec![
                    ban("10.0.0.3/32", "cli", ""),
                    ban("10.0.0.4/32", "cli", "poison"),
                    ban("10.0.0.5/32", "cli", ""),
                ],
                at(NOW),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("poisoned record"), "{err}");
        assert_eq!(h.store.list_bans().await.unwrap(), before);
        h.assert_index_matches_table().await;

        // In key order, the sync deletes 10.0.0.2 and inserts 10.0.0.3 before the poison.
        let poisoned = vec![
            ban("10.0.0.1/32", "drop", ""),
            ban("10.0.0.3/32", "drop", ""),
            ban("10.0.0.4/32", "drop", "poison"),
            ban("10.0.0.5/32", "drop", ""),
        ];
        assert!(
            h.store
                .sync_source("drop".into(), poisoned, at(NOW))
                .await
                .is_err()
        );
        assert_eq!(h.store.list_bans().await.unwrap(), before);
        h.assert_index_matches_table().await;

        // And the index still plans from the state before the failure.
        h.sql("DROP TRIGGER refuse_poison");
        let report = h
            .store
            .sync_source(
                "drop".into(),
                vec![
                    ban("10.0.0.1/32", "drop", ""),
                    ban("10.0.0.3/32", "drop", ""),
                ],
                at(NOW),
            )
            .await
            .unwrap();
        assert_eq!((report.added, report.removed, report.unchanged), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_request_that_panics_is_aborted_and_the_store_goes_on() {
        let h = Harness::new();
        h.store
            .add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
            .await
            .unwrap();
        let err = h
            .store
            .call(|_: &mut Worker| -> Result<()> { panic!("a bug") })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Aborted), "{err}");
        assert_eq!(
            h.store.effective_bans(at(NOW)).await.unwrap(),
            [(net("10.0.0.1/32"), None)]
        );
        h.assert_index_matches_table().await;
    }

    #[tokio::test]
    async fn opening_creates_a_private_directory() {
        let h = Harness::new();
        let mode = std::fs::metadata(h.dir.path().join("state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(h.store.describe(), format!("sqlite {}", h.path().display()));
    }

    #[tokio::test]
    async fn dropping_the_store_closes_the_file() {
        let h = Harness::new();
        h.store
            .add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
            .await
            .unwrap();
        let wal = h.dir.path().join("state/tracking.db-wal");
        assert!(wal.exists(), "WAL mode is on");
        drop(h.store);
        // The last connection to close checkpoints the WAL into the file and deletes it.
        assert!(!wal.exists(), "the connection is still open");
    }
}
