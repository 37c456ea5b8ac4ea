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
//! - `worker`: the thread, and the requests about bans and the allowlist.
//! - `visitors`: visitor records, with the session rule as one SQL upsert.
//! - `ua_rules`: user-agent rules, keyed case-insensitively.
//!
//! Other processes may read the file while the agent writes (WAL), and even write to it (an
//! operator in the `sqlite3` shell): the worker notices and reads its index of bans again.

mod index;
mod key;
mod migrations;
mod ua_rules;
mod visitors;
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
    visit::{UaRule, Visitor, VisitorDelta},
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

    async fn record_visits(&self, deltas: Vec<VisitorDelta>) -> Result<()> {
        self.call(move |w| visitors::record(w.conn(), deltas)).await
    }

    async fn visitors_since(&self, since: Timestamp, limit: usize) -> Result<Vec<Visitor>> {
        self.call(move |w| visitors::since(w.conn(), since, limit))
            .await
    }

    async fn visitor(&self, key: String) -> Result<Option<Visitor>> {
        self.call(move |w| visitors::get(w.conn(), &key)).await
    }

    async fn remove_visitors_before(&self, before: Timestamp, limit: usize) -> Result<usize> {
        self.call(move |w| visitors::remove_before(w.conn(), before, limit))
            .await
    }

    async fn count_visitors(&self, since: Timestamp, path: Option<String>) -> Result<(u64, u64)> {
        self.call(move |w| visitors::count(w.conn(), since, path.as_deref()))
            .await
    }

    async fn page_views_total(&self) -> Result<u64> {
        self.call(|w| visitors::page_views_total(w.conn())).await
    }

    async fn list_ua_rules(&self) -> Result<Vec<UaRule>> {
        self.call(|w| ua_rules::list(w.conn())).await
    }

    async fn add_ua_rules(&self, rules: Vec<UaRule>) -> Result<()> {
        self.call(move |w| ua_rules::add(w.conn(), rules)).await
    }

    async fn remove_ua_rules(&self, keywords: Vec<String>) -> Result<Vec<UaRule>> {
        self.call(move |w| ua_rules::remove(w.conn(), keywords))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tempfile::TempDir;

    use super::*;
    use rusqlite::params;

    use crate::store::suite::{
        Fixture, NOW, allow, at, ban, by, net, record, rule, until, visit, visitor,
    };

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

    #[async_trait]
    impl Fixture for Harness {
        fn store(&self) -> &dyn Store {
            &self.store
        }

        async fn check(&self) {
            self.assert_index_matches_table().await;
        }
    }

    /// Everything every backend must do, on a real file.
    mod suite {
        crate::store::suite::store_suite!(async { Some(super::Harness::new()) });
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
        record(&h.store, &[by("ann", visit("a", "/", NOW))]).await;
        h.store
            .add_ua_rules(vec![rule("GoogleBot", "search", NOW)])
            .await
            .unwrap();
        let bans = h.store.list_bans().await.unwrap();
        let effective = h.store.effective_bans(at(NOW)).await.unwrap();
        let ann = visitor(&h.store, "a").await;

        let h = h.reopen();
        assert_eq!(h.store.list_bans().await.unwrap(), bans);
        assert_eq!(h.store.effective_bans(at(NOW)).await.unwrap(), effective);
        assert_eq!(
            h.store.list_allows().await.unwrap(),
            [allow("203.0.113.7/32", "office", NOW)]
        );
        assert_eq!(visitor(&h.store, "a").await, ann);
        assert_eq!(
            h.store.list_ua_rules().await.unwrap(),
            [rule("GoogleBot", "search", NOW)]
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

    #[tokio::test]
    async fn a_version_1_file_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracking.db");
        {
            // What the first release left: bans and the allowlist, nothing of visitors.
            let mut conn = Connection::open(&path).unwrap();
            migrations::apply_up_to(&mut conn, 1).unwrap();
            conn.execute(
                "INSERT INTO bans (network, source, reason, created_ms) VALUES (?1, 'cli', '', ?2)",
                params![&key::encode(&net("192.0.2.0/24"))[..], NOW],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.list_bans().await.unwrap(),
            [ban("192.0.2.0/24", "cli", "")]
        );
        record(&store, &[visit("a", "/", NOW)]).await;
        assert_eq!(store.page_views_total().await.unwrap(), 1);
        drop(store);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, migrations::VERSION);
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

    /// Wall-clock and CPU time of one request, for [`visitor_store_speed`].
    struct Clock {
        wall: std::time::Instant,
        cpu: Duration,
    }

    impl Clock {
        /// Starts once the worker is idle: after a write it checkpoints, and the request timed
        /// would wait for that.
        async fn start(store: &SqliteStore) -> Self {
            store.visitor("s:settle".into()).await.unwrap();
            Clock {
                wall: std::time::Instant::now(),
                cpu: process_cpu_time(),
            }
        }

        fn stop(self) -> String {
            format!(
                "{:.1?} (CPU {:.1?})",
                self.wall.elapsed(),
                process_cpu_time() - self.cpu
            )
        }
    }

    /// CPU time of the whole process: the worker's, as the test waits meanwhile. On a busy
    /// machine it says what a request costs better than the wall clock does.
    fn process_cpu_time() -> Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec to write to, and the clock exists on Linux.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
        assert_eq!(ok, 0);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// The figures quoted for the visitor store: `cargo test -p tracking-agent --release --lib
    /// visitor_store_speed -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, not a check"]
    async fn visitor_store_speed() {
        use crate::visit::VisitorDelta;

        let h = Harness::new();
        // Visitor `n` (keys scattered) is first seen at `n` times 60 ms (17 new visitors a
        // second, 105 minutes for all), and comes back in round 1 a day later: a 32-character
        // session, a browser's user agent, one of 200 pages, one in five logged in.
        let delta = |n: u64, round: i64| {
            let id = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let seen = at(NOW + n as i64 * 60 + round * 86_400_000);
            VisitorDelta {
                key: format!("s:{id:032x}"),
                session_key: Some(format!("{id:032x}")),
                ip: std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n as u32)),
                user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like \
                             Gecko) Chrome/126.0.0.0 Safari/537.36"
                    .into(),
                user: n.is_multiple_of(5).then(|| format!("user{n}")),
                referrer: Some("https://www.example.org/some/article".into()),
                last_page: format!("/section/{}/page", (n + round as u64) % 200),
                page_views: 1,
                first_at: seen,
                last_at: seen,
                restart: false,
            }
        };
        let batch = |from: u64, round: i64| -> Vec<VisitorDelta> {
            (from..from + 5_000).map(|n| delta(n, round)).collect()
        };

        let clock = Clock::start(&h.store).await;
        h.store.record_visits(batch(0, 0)).await.unwrap();
        println!("5000 new visitors, empty table: {}", clock.stop());
        for b in 1..20 {
            h.store.record_visits(batch(b * 5_000, 0)).await.unwrap();
        }
        let clock = Clock::start(&h.store).await;
        h.store.record_visits(batch(100_000, 0)).await.unwrap();
        println!("5000 new visitors, 100k in the table: {}", clock.stop());
        let clock = Clock::start(&h.store).await;
        h.store.record_visits(batch(50_000, 1)).await.unwrap();
        println!(
            "5000 returning visitors, 105k in the table: {}",
            clock.stop()
        );

        // Minute 95 on: the last 10k first visits and the 5k returning ones.
        for (what, since) in [("all", at(0)), ("last 10 min", at(NOW + 95 * 60_000))] {
            let clock = Clock::start(&h.store).await;
            let site = h.store.count_visitors(since, None).await.unwrap();
            println!(
                "count_visitors ({what}), site: {site:?} in {}",
                clock.stop()
            );
            let clock = Clock::start(&h.store).await;
            let page = h
                .store
                .count_visitors(since, Some("/section/7/page".into()))
                .await
                .unwrap();
            println!(
                "count_visitors ({what}), page: {page:?} in {}",
                clock.stop()
            );
        }
        let clock = Clock::start(&h.store).await;
        let total = h.store.page_views_total().await.unwrap();
        println!("page_views_total: {total} in {}", clock.stop());
        let clock = Clock::start(&h.store).await;
        let listed = h.store.visitors_since(at(0), 100).await.unwrap().len();
        println!("visitors_since: {listed} in {}", clock.stop());

        for limit in [1_000, 5_000] {
            let clock = Clock::start(&h.store).await;
            let removed = h
                .store
                .remove_visitors_before(at(NOW + 60 * 60_000), limit)
                .await
                .unwrap();
            println!(
                "remove_visitors_before, limit {limit}: {removed} in {}",
                clock.stop()
            );
        }
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
