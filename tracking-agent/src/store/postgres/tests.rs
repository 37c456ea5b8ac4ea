//! What only the PostgreSQL store has to show: its schema upgrades, its transactions, the
//! fleet hearing one another's changes, a hidden password, and syncs large enough to need
//! `COPY`. The behaviours every store shares are in `suite`, run here on a real server that
//! `test_server` starts.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_postgres::NoTls;

use super::{PgStore, PgStoreError, migrations, test_server};
use crate::{
    ban::{Ban, Effect, Effective},
    store::{
        ChangeLog, HostReport, Logged, Store, StoreError, SyncReport,
        suite::{Fixture, NOW, at, ban, banned, entries, host, listed, net, until},
    },
    visit::{VisitorDelta, merge},
};

/// A store on a fresh database of its own.
struct PgFixture {
    store: PgStore,
}

impl PgFixture {
    async fn new() -> Self {
        PgFixture {
            store: PgStore::connect(&test_server::database()).await.unwrap(),
        }
    }
}

#[async_trait]
impl Fixture for PgFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

mod suite {
    crate::store::suite::store_suite!(super::PgFixture::new());
}

/// Runs `sql` on the database at `url` on a connection of its own, as an operator in `psql`.
async fn sql(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// The first value of the first row of `query`.
async fn scalar(url: &str, query: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let value = client.query_one(query, &[]).await.unwrap().get(0);
    drop(client);
    let _ = driver.await;
    value
}

#[tokio::test]
async fn agents_starting_together_upgrade_the_schema_once() {
    let url = test_server::database();
    let (a, b, c) = tokio::join!(
        PgStore::connect(&url),
        PgStore::connect(&url),
        PgStore::connect(&url)
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        scalar(&url, "SELECT count(*) FROM tracking_migrations").await,
        migrations::VERSION
    );
    a.add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
        .await
        .unwrap();
    drop(a);
    // Connecting to an up-to-date database changes nothing and loses nothing.
    let again = PgStore::connect(&url).await.unwrap();
    assert_eq!(
        again.list_bans().await.unwrap(),
        [ban("10.0.0.1/32", "cli", "")]
    );
    assert_eq!(
        scalar(&url, "SELECT max(version) FROM tracking_migrations").await,
        migrations::VERSION
    );
}

#[tokio::test]
async fn a_schema_of_its_own_can_be_chosen_in_the_url() {
    let url = test_server::database();
    sql(
        &url,
        "CREATE SCHEMA tracking; CREATE TABLE public.bans (app_column int)",
    )
    .await;
    let store = PgStore::connect(&format!("{url}?options=-csearch_path%3Dtracking"))
        .await
        .unwrap();
    store
        .add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
        .await
        .unwrap();
    assert_eq!(
        scalar(&url, "SELECT count(*) FROM tracking.bans").await,
        1,
        "the application's own `bans` is left alone"
    );
}

#[tokio::test]
async fn schema_steps_are_applied_once_in_order_and_a_failing_one_is_not_kept() {
    let url = test_server::database();
    let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let steps = ["CREATE TABLE a (x int)", "CREATE TABLE b (y int)"];
    migrations::apply_steps(&mut client, &steps[..1])
        .await
        .unwrap();
    migrations::apply_steps(&mut client, &steps).await.unwrap();
    // Nothing left to do: applying again would fail on `CREATE TABLE`.
    migrations::apply_steps(&mut client, &steps).await.unwrap();

    let broken = [
        steps[0],
        steps[1],
        "CREATE TABLE c (z int); CREATE TABLE a (x int)",
    ];
    let err = migrations::apply_steps(&mut client, &broken)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.backend(),
            Some(PgStoreError::Migrate { version: 3, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    drop(client);
    let _ = driver.await;
    assert_eq!(
        scalar(&url, "SELECT max(version) FROM tracking_migrations").await,
        2
    );
    assert_eq!(
        scalar(&url, "SELECT count(*) FROM pg_tables WHERE tablename = 'c'").await,
        0,
        "half a step was kept"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_agent_is_refused() {
    let url = test_server::database();
    drop(PgStore::connect(&url).await.unwrap());
    let newer = migrations::VERSION + 1;
    sql(
        &url,
        &format!("INSERT INTO tracking_migrations (version) VALUES ({newer})"),
    )
    .await;
    let err = PgStore::connect(&url).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, known }
            if found == newer && known == migrations::VERSION),
        "{err}"
    );
}

#[tokio::test]
async fn a_request_that_fails_midway_changes_nothing() {
    let url = test_server::database();
    let store = PgStore::connect(&url).await.unwrap();
    store
        .sync_source(
            "drop".into(),
            vec![listed("10.0.0.1/32", ""), listed("10.0.0.2/32", "")],
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    // The server refuses one record, as a full disk or a constraint would, after the records
    // before it were written.
    sql(
        &url,
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.reason = 'poison' THEN RAISE EXCEPTION 'poisoned record'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON bans
         FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .await;
    let before = store.list_bans().await.unwrap();
    let changes = store.ban_changes().unwrap();
    let other = PgStore::connect(&url).await.unwrap();
    let mut heard = other.ban_changes().unwrap();

    let err = store
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
    assert_eq!(store.list_bans().await.unwrap(), before);

    // The sync deletes 10.0.0.2 and inserts 10.0.0.3 besides the poison.
    let poisoned = vec![
        listed("10.0.0.1/32", ""),
        listed("10.0.0.3/32", ""),
        listed("10.0.0.4/32", "poison"),
        listed("10.0.0.5/32", ""),
    ];
    assert!(
        store
            .sync_source(
                "drop".into(),
                poisoned,
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited)
            )
            .await
            .is_err()
    );
    assert_eq!(store.list_bans().await.unwrap(), before);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !heard.has_changed().unwrap(),
        "a change that was rolled back was announced"
    );

    // The connection the failures happened on goes back to the pool in a usable state.
    sql(&url, "DROP TRIGGER refuse_poison ON bans").await;
    let report = store
        .sync_source(
            "drop".into(),
            vec![listed("10.0.0.1/32", ""), listed("10.0.0.3/32", "")],
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    assert_eq!((report.added, report.removed, report.unchanged), (1, 1, 1));
    changed_soon(&mut heard).await;
    assert!(
        !changes.has_changed().unwrap(),
        "an agent heard its own change"
    );
}

/// Waits at most a couple of seconds for `changes` to change.
async fn changed_soon(changes: &mut watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(3), changes.changed())
        .await
        .expect("the change was not heard within 3 s")
        .unwrap();
}

/// Asserts that `changes` has not changed, after giving a notification time to arrive.
async fn still(changes: &watch::Receiver<u64>, what: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!changes.has_changed().unwrap(), "{what}");
}

#[tokio::test]
async fn an_agent_hears_the_ban_changes_of_the_others_but_not_its_own() {
    let url = test_server::database();
    let a = PgStore::connect(&url).await.unwrap();
    let b = PgStore::connect(&url).await.unwrap();
    let mut heard_by_a = a.ban_changes().unwrap();
    let mut heard_by_b = b.ban_changes().unwrap();

    a.add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
        .await
        .unwrap();
    changed_soon(&mut heard_by_b).await;
    still(&heard_by_a, "an agent heard its own change").await;

    b.add_allows(vec![crate::store::suite::allow("10.0.0.0/8", "", NOW)])
        .await
        .unwrap();
    changed_soon(&mut heard_by_a).await;

    b.sync_source(
        "list".into(),
        vec![listed("10.0.0.2/32", "")],
        at(NOW),
        std::sync::Arc::new(crate::store::Unlimited),
    )
    .await
    .unwrap();
    changed_soon(&mut heard_by_a).await;
    a.remove_bans(vec![net("10.0.0.1/32")], None, at(NOW))
        .await
        .unwrap();
    changed_soon(&mut heard_by_b).await;

    // What changes nothing is not announced: every agent reaps every few seconds.
    a.remove_expired(at(NOW)).await.unwrap();
    a.remove_bans(vec![net("192.0.2.1/32")], None, at(NOW))
        .await
        .unwrap();
    a.sync_source(
        "list".into(),
        vec![listed("10.0.0.2/32", "")],
        at(NOW),
        std::sync::Arc::new(crate::store::Unlimited),
    )
    .await
    .unwrap();
    still(&heard_by_b, "a change that changed nothing was announced").await;

    // Visits are not ban changes.
    let visit = crate::store::suite::visit("s1", "/", NOW);
    a.record_visits(merge(&[visit])).await.unwrap();
    still(&heard_by_b, "a visit was announced as a ban change").await;
}

#[tokio::test]
async fn the_listener_comes_back_after_losing_its_connection_and_says_so() {
    let url = test_server::database();
    let a = PgStore::connect(&url).await.unwrap();
    let b = PgStore::connect(&url).await.unwrap();
    let mut heard_by_b = b.ban_changes().unwrap();

    // An administrator (or a server restart) ends every listening connection.
    sql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .await;
    // What was announced meanwhile is lost, so coming back counts as a change.
    changed_soon(&mut heard_by_b).await;
    a.add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
        .await
        .unwrap();
    changed_soon(&mut heard_by_b).await;
}

#[tokio::test]
async fn the_password_is_never_shown() {
    let url = test_server::database();
    // The test server trusts local connections, so any password will do.
    let with_password = url.replacen("postgres@", "postgres:s3cret@", 1);
    let store = PgStore::connect(&with_password).await.unwrap();
    let shown = store.describe();
    assert!(
        shown.starts_with("postgresql postgresql://postgres:***@"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
    let debug = format!("{store:?}");
    assert!(!debug.contains("s3cret"), "{debug}");

    // Nor when the server cannot be reached.
    let err = PgStore::connect("postgresql://u:s3cret@%2Fnowhere%2Fat%2Fall:5432/db")
        .await
        .unwrap_err();
    assert!(
        matches!(err.backend(), Some(PgStoreError::Connect { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("u:***@"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
}

#[tokio::test]
async fn two_agents_writing_overlapping_bans_at_once_both_succeed() {
    let url = test_server::database();
    let a = PgStore::connect(&url).await.unwrap();
    let b = PgStore::connect(&url).await.unwrap();
    let bans = |source: &str, reverse: bool| -> Vec<Ban> {
        let mut bans: Vec<Ban> = (0..200)
            .map(|i| Ban {
                network: host(0x0a00_0000 + i),
                ..ban("0.0.0.0/0", source, "")
            })
            .collect();
        if reverse {
            bans.reverse();
        }
        bans
    };
    let (ra, rb, rs) = tokio::join!(
        a.add_bans(bans("cli", false), at(NOW)),
        b.add_bans(bans("cli", true), at(NOW)),
        b.sync_source(
            "list".into(),
            entries(&bans("list", true)),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited)
        ),
    );
    assert_eq!(ra.unwrap().len(), 200);
    assert_eq!(rb.unwrap().len(), 200);
    assert_eq!(rs.unwrap().added, 200);
    assert_eq!(a.list_bans().await.unwrap().len(), 400);
}

#[tokio::test]
async fn deltas_of_one_visitor_in_one_batch_apply_in_turn() {
    let url = test_server::database();
    let store = PgStore::connect(&url).await.unwrap();
    let first = merge(&[crate::store::suite::visit("s1", "/a", NOW)]);
    let second = merge(&[crate::store::suite::visit("s1", "/b", NOW + 1_000)]);
    let expected = second[0].apply_to(&first[0].as_new_visitor());
    let deltas: Vec<VisitorDelta> = first.into_iter().chain(second).collect();
    store.record_visits(deltas).await.unwrap();
    assert_eq!(
        store.visitor(expected.key.clone()).await.unwrap(),
        Some(expected)
    );
}

/// `n` IPv4 host bans of `source`, spread out so that they are not one range.
fn list(source: &str, n: u32) -> Vec<Ban> {
    (0..n)
        .map(|i| Ban {
            network: host(0x0a00_0000 + i * 7),
            source: source.into(),
            reason: format!("SBL{i}"),
            created: at(NOW),
            expires: None,
        })
        .collect()
}

/// `list` with one record in a hundred changed: every 100th gets a new reason, every 100th + 2
/// goes, and as many new ones come; shuffled (reversed).
fn one_percent_changed(list: &[Ban]) -> Vec<Ban> {
    let mut changed: Vec<Ban> = Vec::with_capacity(list.len());
    for (i, ban) in list.iter().enumerate() {
        match i % 100 {
            0 => changed.push(Ban {
                reason: "renamed".into(),
                ..ban.clone()
            }),
            2 => {}
            _ => changed.push(ban.clone()),
        }
    }
    let new = list.len().div_ceil(100) as u32;
    changed.extend((0..new).map(|i| Ban {
        network: host(0x0b00_0000 + i),
        ..ban("0.0.0.0/0", &list[0].source, "new")
    }));
    changed.reverse();
    changed
}

#[tokio::test]
async fn a_large_sync_writes_and_reports_exactly_the_delta() {
    let url = test_server::database();
    let store = PgStore::connect(&url).await.unwrap();
    let n = 20_000;
    let first = list("big", n);
    // Another source bans one listed network for a while: syncing must not unban it.
    store
        .add_bans(
            vec![until(NOW + 5_000, ban("10.0.0.14/32", "cli", ""))],
            at(NOW),
        )
        .await
        .unwrap();
    let report = store
        .sync_source(
            "big".into(),
            entries(&first),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            report.added,
            report.updated,
            report.removed,
            report.unchanged
        ),
        (n as usize, 0, 0, 0)
    );
    let expected: Vec<Effect> = first.iter().map(|b| (b.network, banned(None))).collect();
    assert_eq!(report.effects, expected);
    // Every 100th + 1 record is given an expiry by hand, which the next sync lifts.
    let expiring: Vec<Ban> = first
        .iter()
        .skip(1)
        .step_by(100)
        .map(|b| until(NOW + 60_000, b.clone()))
        .collect();
    store.add_bans(expiring, at(NOW)).await.unwrap();

    let second = one_percent_changed(&first);
    let report = store
        .sync_source(
            "big".into(),
            entries(&second),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    let changed = n as usize / 100;
    assert_eq!(
        (
            report.added,
            report.updated,
            report.removed,
            report.unchanged
        ),
        (changed, 2 * changed, changed, n as usize - 3 * changed)
    );
    // Effects: the lifted expiries, the removed and the added, in network order; a new reason
    // alone is not one. 10.0.0.14 (the third record) is removed from the list but still
    // banned by `cli`.
    let mut effects: Vec<Effect> = Vec::new();
    for (i, ban) in first.iter().enumerate() {
        match i % 100 {
            1 => effects.push((ban.network, banned(None))),
            2 if ban.network == net("10.0.0.14/32") => {
                effects.push((ban.network, banned(Some(NOW + 5_000))))
            }
            2 => effects.push((ban.network, Effective::Unbanned)),
            _ => {}
        }
    }
    effects.extend((0..changed as u32).map(|i| (host(0x0b00_0000 + i), banned(None))));
    assert_eq!(report.effects, effects);

    let mut stored: Vec<Ban> = store
        .list_bans()
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.source == "big")
        .collect();
    let mut expected = second;
    expected.sort_by_key(|b| b.network);
    stored.sort_by_key(|b| b.network);
    assert_eq!(stored, expected);

    let again = store
        .sync_source(
            "big".into(),
            entries(&expected),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        SyncReport {
            unchanged: expected.len(),
            ..SyncReport::default()
        }
    );
}

#[tokio::test]
async fn every_change_takes_the_next_positions_of_the_log_and_a_pruned_log_says_so() {
    let url = test_server::database();
    let a = PgStore::connect(&url).await.unwrap();
    let b = PgStore::connect(&url).await.unwrap();
    let mut heard_by_b = b.ban_changes().unwrap();
    assert_eq!(b.head().await.unwrap(), 0);

    a.add_bans(
        vec![ban("10.0.0.2/32", "cli", ""), ban("10.0.0.1/32", "cli", "")],
        at(NOW),
    )
    .await
    .unwrap();
    a.add_allows(vec![crate::store::suite::allow("192.0.2.0/24", "", NOW)])
        .await
        .unwrap();
    b.remove_bans(vec![net("10.0.0.1/32")], None, at(NOW))
        .await
        .unwrap();
    changed_soon(&mut heard_by_b).await;
    assert_eq!(
        *heard_by_b.borrow(),
        3,
        "the notification says where the log ends"
    );
    assert_eq!(b.head().await.unwrap(), 4);
    assert_eq!(
        b.changes_since(0, 100).await.unwrap(),
        ChangeLog {
            entries: vec![
                (1, Logged::Ban((net("10.0.0.1/32"), banned(None)))),
                (2, Logged::Ban((net("10.0.0.2/32"), banned(None)))),
                (3, Logged::Allowlist),
                (4, Logged::Ban((net("10.0.0.1/32"), Effective::Unbanned))),
            ],
            complete: true,
        }
    );
    assert_eq!(
        b.changes_since(2, 1).await.unwrap(),
        ChangeLog {
            entries: vec![(3, Logged::Allowlist)],
            complete: true
        },
        "at most `limit`, from the position on"
    );
    assert_eq!(
        b.changes_since(4, 10).await.unwrap(),
        ChangeLog {
            entries: vec![],
            complete: true
        }
    );

    // A change too big to list is one entry: whoever did not make it reconciles whole.
    let big: Vec<crate::ban::ListEntry> = (0..10_001)
        .map(|i| crate::ban::ListEntry {
            network: host(0x0a01_0000 + i),
            reason: String::new().into(),
        })
        .collect();
    let report = a
        .sync_source(
            "big".into(),
            big,
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    assert_eq!((report.added, report.bulk_at), (10_001, Some(5)));
    assert_eq!(
        b.changes_since(4, 10).await.unwrap().entries,
        [(5, Logged::Bulk)]
    );

    // Changes pruned from the log cannot be applied one by one.
    sql(&url, "DELETE FROM ban_changes WHERE position <= 3").await;
    assert!(!b.changes_since(1, 10).await.unwrap().complete);
    assert!(b.changes_since(3, 10).await.unwrap().complete);
}

#[tokio::test]
async fn a_sync_of_a_list_another_agent_synced_says_whose_list_it_replaced() {
    let url = test_server::database();
    let a = PgStore::connect(&url).await.unwrap();
    let b = PgStore::connect(&url).await.unwrap();
    async fn sync(store: &PgStore, networks: &[&str]) -> SyncReport {
        let entries = networks.iter().map(|n| listed(n, "")).collect();
        store
            .sync_source(
                "shared".into(),
                entries,
                at(NOW),
                std::sync::Arc::new(crate::store::Unlimited),
            )
            .await
            .unwrap()
    }
    assert_eq!(sync(&a, &["10.0.0.1/32"]).await.replaced, None);
    assert_eq!(
        sync(&a, &["10.0.0.1/32", "10.0.0.2/32"]).await.replaced,
        None,
        "its own list"
    );
    let report = sync(&b, &["10.0.0.3/32"]).await;
    let replaced = report.replaced.expect("a's list was replaced");
    assert_eq!(
        (replaced.instance.as_str(), replaced.entries),
        (a.instance().unwrap(), 2)
    );
    assert_eq!((report.added, report.removed), (1, 2));
    assert_eq!(
        sync(&a, &["10.0.0.3/32"]).await.replaced,
        None,
        "the same list again replaces nothing"
    );
}

#[tokio::test]
async fn each_agent_reports_itself_and_every_agent_sees_the_reports() {
    let url = test_server::database();
    let a = PgStore::connect(&url).await.unwrap();
    let b = PgStore::connect(&url).await.unwrap();
    let report = |store: &PgStore, applied: i64, heartbeat: i64| HostReport {
        instance: store.instance().unwrap().to_owned(),
        host: "web-1".into(),
        version: "0.1.0".into(),
        interfaces: vec!["eth0".into(), "eth1".into()],
        started: at(NOW),
        heartbeat: at(heartbeat),
        heartbeat_every_ms: 5_000,
        applied,
        bans_held: 10,
        left_out: 2,
        capacity_v4: 8,
        capacity_v6: 4,
        listening: true,
        last_error: Some("the tables are full".into()),
    };
    a.report_host(report(&a, 1, NOW)).await.unwrap();
    a.report_host(report(&a, 7, NOW + 5_000)).await.unwrap();
    b.report_host(report(&b, 7, NOW + 5_000)).await.unwrap();
    let hosts = b.hosts().await.unwrap();
    assert_eq!(hosts.len(), 2, "one record an agent, rewritten: {hosts:?}");
    let of_a = hosts
        .iter()
        .find(|h| Some(h.instance.as_str()) == a.instance())
        .unwrap();
    assert_eq!(of_a, &report(&a, 7, NOW + 5_000));
}

/// A CA, a second CA that signed nothing here, and a server certificate of the first for the
/// name `localhost` only, made with `openssl` in `dir`.
struct Certificates {
    ca: std::path::PathBuf,
    other_ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Certificates {
    fn make(dir: &std::path::Path) -> Certificates {
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (Debian's `openssl`, installed by `cargo xtask setup`)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for name in ["ca", "other-ca"] {
            let subject = format!("/CN=tracking test {name}");
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
            args.extend(ec);
            let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
            args.extend(["-keyout", &key, "-out", &cert]);
            openssl(&args);
        }
        let mut args = vec![
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ];
        args.extend(ec);
        openssl(&args);
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        Certificates {
            ca: dir.join("ca.crt"),
            other_ca: dir.join("other-ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_connections_check_the_server_as_the_url_asks_and_carry_the_fleets_news() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::make(dir.path());
    let server = {
        let (cert, key) = (certs.cert.clone(), certs.key.clone());
        tokio::task::spawn_blocking(move || test_server::Dedicated::start_tls(&cert, &key))
            .await
            .unwrap()
    };
    let admin = {
        let server_url = server.url("postgres");
        tokio::task::spawn_blocking(move || {
            test_server::admin(&server_url, "CREATE DATABASE tls");
        })
        .await
        .unwrap();
        server.url("tls")
    };
    let url = |host: &str, query: String| format!("{}?{query}", server.tcp_url(host, "tls"));
    let ca = certs.ca.display().to_string();
    let other = certs.other_ca.display().to_string();

    // verify-full: the chain and the name checked; the fleet's notifications come over TLS too.
    let a = PgStore::connect(&url(
        "localhost",
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    let b = PgStore::connect(&url(
        "localhost",
        format!("sslmode=require&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    let mut heard_by_b = b.ban_changes().unwrap();
    a.add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
        .await
        .unwrap();
    changed_soon(&mut heard_by_b).await;
    assert_eq!(
        b.list_bans().await.unwrap(),
        [ban("10.0.0.1/32", "cli", "")]
    );
    assert!(
        scalar(&admin, "SELECT count(*) FROM pg_stat_ssl WHERE ssl").await >= 3,
        "the pools' and the listeners' connections are encrypted"
    );
    // require without a CA: encrypted, the server not identified (libpq's meaning).
    PgStore::connect(&url("127.0.0.1", "sslmode=require".into()))
        .await
        .unwrap();
    // verify-ca checks the chain, not the name: 127.0.0.1 is not in the certificate.
    PgStore::connect(&url(
        "127.0.0.1",
        format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await
    .unwrap();

    let refused = |url: String| async move {
        match PgStore::connect(&url).await {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => format!("{e} {:?}", std::error::Error::source(&e)),
        }
    };
    let err = refused(url(
        "127.0.0.1",
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        err.contains("NotValidForName") || err.contains("name"),
        "{err}"
    );
    let err = refused(url(
        "localhost",
        format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .await;
    assert!(
        err.contains("UnknownIssuer") || err.contains("issuer"),
        "{err}"
    );
    let err = refused(url(
        "localhost",
        format!("sslmode=require&sslrootcert={other}"),
    ))
    .await;
    assert!(
        err.contains("UnknownIssuer") || err.contains("issuer"),
        "{err}"
    );
    let err = refused(url("localhost", "sslmode=disable".into())).await;
    assert!(
        err.contains("no encryption") || err.contains("pg_hba"),
        "{err}"
    );
}
