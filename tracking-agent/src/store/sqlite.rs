//! The embedded SQLite store: one file, nothing to install.
//!
//! The connection lives on one thread of its own (`worker`), which serves requests in order;
//! the async methods send it a closure and await the answer, so no async task ever blocks on
//! SQLite and no lock is shared with async code. Dropping the store ends the thread and closes
//! the file.
//!
//! - `key`: how a network is written (18 bytes that sort like networks).
//! - `migrations`: the schema and how a file is brought up to date.
//! - `index`: the bans table in memory, which makes syncing large lists cheap; `records`, the
//!   sorted vectors it keeps each source's records in.
//! - `sync`: writing the delta of a sync, many rows per statement.
//! - `worker`: the thread, and the requests about bans and the allowlist.
//! - `checkpoint`: a thread that copies what was committed into the database file, so that no
//!   request waits for it.
//! - `visitors`: visitor records, with the session rule as one SQL upsert.
//! - `ua_rules`: user-agent rules, keyed case-insensitively.
//!
//! Other processes may read the file while the agent writes (WAL), and even write to it (an
//! operator in the `sqlite3` shell): the worker notices and reads its index of bans again.

mod checkpoint;
mod error;
mod index;
mod key;
mod migrations;
mod plan;
mod query;
mod record;
mod records;
mod sync;
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

pub use self::error::SqliteError;
use self::{
    checkpoint::Checkpoints,
    worker::{Job, Worker},
};
use super::{BanPage, BanQuery, Result, Store, SyncReport};
use crate::{
    ban::{Allow, Ban, Effect, ListEntry},
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
    /// The checkpoint thread, which stops once the worker has; joined after it.
    checkpoint_thread: Option<JoinHandle<()>>,
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
                .map_err(|source| SqliteError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
        }
        let opening = |source| SqliteError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(opening)?;
        configure(&conn).map_err(opening)?;
        private(path);
        migrations::apply(&mut conn)?;
        let checkpointing = Connection::open(path).map_err(opening)?;
        configure(&checkpointing).map_err(opening)?;

        let (checkpoints, checkpoint_thread) = Checkpoints::start(checkpointing)?;
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tracking-sqlite".into())
            .spawn(move || Worker::new(conn, checkpoints).run(queue))
            .map_err(SqliteError::Thread)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            jobs,
            thread: Some(thread),
            checkpoint_thread: Some(checkpoint_thread),
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
        self.jobs.send(job).map_err(|_| SqliteError::Closed)?;
        // The worker outlives this handle, so a reply can only go missing if the job panicked.
        answer.await.map_err(|_| SqliteError::Aborted)?
    }
}

/// Makes the database and its journals readable by their owner only, files an earlier
/// version (or a looser umask) may have left readable by everyone.
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let journals = ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    });
    for file in std::iter::once(path.to_path_buf()).chain(journals) {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0
            && let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!("cannot make {} private: {e}", file.display());
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "{} can be read by other users; the agent keeps its database there (chmod 700)",
            dir.display()
        );
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
    // The checkpoint thread copies the WAL into the file after every write (see
    // `checkpoint.rs`); this is only the backstop for a thread that never gets to, in pages
    // (4 KiB): 256 MiB.
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
        // The worker's end hung up on the checkpoint thread, which closes the file last.
        if let Some(thread) = self.checkpoint_thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the SQLite checkpoint thread panicked");
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

    async fn sync_source(
        &self,
        source: String,
        entries: Vec<ListEntry>,
        now: Timestamp,
        admission: std::sync::Arc<dyn super::Admission>,
    ) -> Result<SyncReport> {
        self.call(move |w| w.sync_source(source, entries, now, &*admission))
            .await
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

    async fn bans_of(&self, networks: Vec<IpNet>, source: String) -> Result<Vec<Ban>> {
        self.call(move |w| query::bans_of(w.conn(), networks, &source))
            .await
    }

    async fn query_bans(&self, q: BanQuery) -> Result<BanPage> {
        self.call(move |w| query::query(w.conn(), q)).await
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
    use crate::store::StoreError;
    use rusqlite::params;

    use crate::store::suite::{
        Fixture, NOW, allow, at, ban, by, listed, net, record, rule, visit, visitor,
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
        crate::store::suite::store_suite!(async { super::Harness::new() });
    }

    #[tokio::test]
    async fn reopening_the_file_keeps_everything() {
        let h = Harness::new();
        let list = vec![listed("10.0.0.1/32", "SBL1"), listed("10.0.0.2/32", "")];
        h.store
            .sync_source(
                "drop".into(),
                list.clone(),
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited),
            )
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
            .sync_source(
                "drop".into(),
                list,
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited),
            )
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
        let list = vec![listed("10.0.0.1/32", ""), listed("10.0.0.2/32", "")];
        h.store
            .sync_source(
                "drop".into(),
                list.clone(),
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited),
            )
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
            .sync_source(
                "drop".into(),
                list,
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited),
            )
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
        assert!(
            matches!(err.backend(), Some(SqliteError::Open { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("tracking.db"), "{err}");
    }

    #[tokio::test]
    async fn a_request_that_fails_midway_changes_nothing() {
        let h = Harness::new();
        h.store
            .sync_source(
                "drop".into(),
                vec![listed("10.0.0.1/32", ""), listed("10.0.0.2/32", "")],
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited),
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

        // The sync deletes 10.0.0.2 and inserts 10.0.0.3 before the poison.
        let poisoned = vec![
            listed("10.0.0.1/32", ""),
            listed("10.0.0.3/32", ""),
            listed("10.0.0.4/32", "poison"),
            listed("10.0.0.5/32", ""),
        ];
        assert!(
            h.store
                .sync_source(
                    "drop".into(),
                    poisoned,
                    at(NOW),
                    std::sync::Arc::new(crate::store::Unlimited)
                )
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
                vec![listed("10.0.0.1/32", ""), listed("10.0.0.3/32", "")],
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited),
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
        assert!(matches!(err.backend(), Some(SqliteError::Aborted)), "{err}");
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
    async fn the_database_and_its_journals_are_readable_by_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracking.db");
        // A file an earlier version left readable by everyone.
        drop(Connection::open(&path).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::open(&path).unwrap();
        store
            .add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
            .await
            .unwrap();
        for file in ["tracking.db", "tracking.db-wal", "tracking.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
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
