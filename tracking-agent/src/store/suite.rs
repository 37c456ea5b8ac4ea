//! The story every store backend must pass, written once against [`Store`]: one `pub async fn`
//! per behaviour, each given a fresh, empty store.
//!
//! A backend runs all of it by instantiating [`store_suite!`] in its tests with an expression
//! whose future yields an `impl Fixture`, one `#[tokio::test]` per behaviour (nothing is
//! skipped: a backend without its server fails):
//! `mod suite { crate::store::suite::store_suite!(super::pg_fixture()); }`
//!
//! What the backends must agree on beyond the trait's documentation: a user-agent keyword is
//! keyed by `str::to_lowercase` and rules are listed in that order (byte order of the
//! lowercased keyword).

use std::{collections::HashMap, net::IpAddr};

use async_trait::async_trait;
use ipnet::IpNet;

use super::{BanPage, BanQuery, Store, SyncReport};
use crate::{
    ban::{Allow, Ban, Effect, Effective, ListEntry},
    time::Timestamp,
    visit::{SESSION_IDLE, UaRule, Visit, Visitor, merge},
};

/// A store under test, with whatever must outlive it (a temporary directory, a database).
#[async_trait]
pub trait Fixture: Send + Sync {
    fn store(&self) -> &dyn Store;

    /// Checks the backend's own invariants once a behaviour has run (SQLite: its in-memory
    /// ban index still matches its table).
    async fn check(&self) {}
}

/// One `#[tokio::test]` per behaviour of this module, each on a fixture from `$fixture`, an
/// expression evaluated anew for each test whose future yields an `impl Fixture`.
macro_rules! store_suite {
    ($fixture:expr) => {
        $crate::store::suite::store_suite!(@each $fixture;
            added_bans_are_listed_by_network_then_source,
            host_bits_are_cleared_on_the_way_in,
            adding_again_updates_reason_and_expiry_but_keeps_created,
            a_network_banned_by_two_sources_is_banned_until_the_later_expiry,
            a_record_that_never_expires_outlasts_every_other,
            removing_without_a_source_removes_the_records_of_every_source,
            sync_makes_a_source_hold_exactly_the_list_and_leaves_other_sources_alone,
            syncing_the_same_list_again_changes_nothing,
            syncing_an_empty_list_removes_every_record_of_the_source,
            a_synced_list_keeps_the_first_entry_of_each_network_with_host_bits_cleared,
            a_large_resync_touches_only_what_changed,
            a_resync_removing_and_adding_all_over_the_list_writes_exactly_the_delta,
            expired_records_are_not_effective_and_are_reaped,
            the_allowlist_is_added_listed_and_removed,
            a_change_reads_back_only_the_records_it_wrote,
            ban_queries_page_in_network_order_and_filter_by_source_address_and_reason,
            a_first_visit_makes_a_visitor,
            a_session_idle_for_more_than_an_hour_starts_over,
            a_late_visit_counts_but_does_not_move_the_visitor,
            visits_follow_the_session_rule,
            visitors_are_listed_most_recent_first,
            visitor_counts_on_site_and_page,
            cleanup_removes_the_oldest_in_bounded_batches,
            page_views_are_totalled_over_every_visitor,
            ua_rules_compare_case_insensitively,
            ua_rules_keep_their_source,
        );
    };
    (@each $fixture:expr; $($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $behaviour() {
                let fixture = $fixture.await;
                use $crate::store::suite::Fixture as _;
                $crate::store::suite::$behaviour(fixture.store()).await;
                fixture.check().await;
            }
        )*
    };
}
pub(crate) use store_suite;

/// An instant of the tests: 2023-11-14, well clear of zero so that hours may be subtracted.
pub const NOW: i64 = 1_700_000_000_000;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The IPv4 address `n` as a host network.
pub fn host(n: u32) -> IpNet {
    IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(n)))
}

/// A ban that never expires, created at `NOW`.
pub fn ban(network: &str, source: &str, reason: &str) -> Ban {
    Ban {
        network: net(network),
        source: source.into(),
        reason: reason.into(),
        created: at(NOW),
        expires: None,
    }
}

/// An entry of a synced list.
pub fn listed(network: &str, reason: &str) -> ListEntry {
    ListEntry {
        network: net(network),
        reason: reason.into(),
    }
}

/// What a synced list of `bans` has of them: networks and reasons.
pub fn entries(bans: &[Ban]) -> Vec<ListEntry> {
    bans.iter()
        .map(|ban| ListEntry {
            network: ban.network,
            reason: ban.reason.as_str().into(),
        })
        .collect()
}

/// `ban` expiring at `ms`.
pub fn until(ms: i64, ban: Ban) -> Ban {
    Ban {
        expires: Some(at(ms)),
        ..ban
    }
}

pub fn banned(expires: Option<i64>) -> Effective {
    Effective::Banned {
        expires: expires.map(at),
    }
}

pub fn effect(network: &str, effective: Effective) -> Effect {
    (net(network), effective)
}

pub fn allow(network: &str, note: &str, created: i64) -> Allow {
    Allow {
        network: net(network),
        note: note.into(),
        created: at(created),
    }
}

/// A guest's view of `url` in session `session` at `ms`, come from `https://ref.example/`.
pub fn visit(session: &str, url: &str, ms: i64) -> Visit {
    Visit {
        ip: "192.0.2.1".parse().unwrap(),
        session_key: Some(session.into()),
        user_agent: "Mozilla/5.0".into(),
        user: None,
        referrer: Some("https://ref.example/".into()),
        url: url.into(),
        at: at(ms),
    }
}

/// `visit` by the logged-in `user`.
pub fn by(user: &str, visit: Visit) -> Visit {
    Visit {
        user: Some(user.into()),
        ..visit
    }
}

/// Records `visits` as one batch, as the agent does.
pub async fn record(store: &dyn Store, visits: &[Visit]) {
    store.record_visits(merge(visits)).await.unwrap();
}

/// The visitor of session `session`, which must exist.
pub async fn visitor(store: &dyn Store, session: &str) -> Visitor {
    store
        .visitor(format!("s:{session}"))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no visitor for session {session}"))
}

// Bans and the allowlist.

pub async fn added_bans_are_listed_by_network_then_source(store: &dyn Store) {
    let effects = store
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
        store.list_bans().await.unwrap(),
        [
            ban("10.0.0.1/32", "api", "from the app"),
            ban("10.0.0.1/32", "cli", ""),
            ban("192.0.2.0/24", "cli", "scanner"),
            ban("2001:db8::/32", "cli", ""),
        ]
    );
}

pub async fn host_bits_are_cleared_on_the_way_in(store: &dyn Store) {
    let effects = store
        .add_bans(vec![ban("192.0.2.77/24", "cli", "")], at(NOW))
        .await
        .unwrap();
    assert_eq!(effects, [effect("192.0.2.0/24", banned(None))]);
    assert_eq!(
        store.list_bans().await.unwrap(),
        [ban("192.0.2.0/24", "cli", "")]
    );
}

pub async fn adding_again_updates_reason_and_expiry_but_keeps_created(store: &dyn Store) {
    store
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
    let effects = store.add_bans(vec![again], at(NOW + 1_000)).await.unwrap();
    assert_eq!(
        effects,
        [effect("10.0.0.1/32", banned(Some(NOW + 120_000)))]
    );
    assert_eq!(
        store.list_bans().await.unwrap(),
        [until(NOW + 120_000, ban("10.0.0.1/32", "cli", "second"))],
        "created must stay at the first add"
    );

    store
        .add_bans(vec![ban("10.0.0.1/32", "cli", "second")], at(NOW))
        .await
        .unwrap();
    assert_eq!(
        store.effective_bans(at(NOW)).await.unwrap(),
        [(net("10.0.0.1/32"), None)],
        "an expiry can be lifted"
    );
}

pub async fn a_network_banned_by_two_sources_is_banned_until_the_later_expiry(store: &dyn Store) {
    let network = "198.51.100.0/24";
    store
        .add_bans(vec![until(NOW + 100, ban(network, "cli", ""))], at(NOW))
        .await
        .unwrap();
    let effects = store
        .add_bans(vec![until(NOW + 500, ban(network, "api", ""))], at(NOW))
        .await
        .unwrap();
    assert_eq!(effects, [effect(network, banned(Some(NOW + 500)))]);
    assert_eq!(store.list_bans().await.unwrap().len(), 2, "two records");
    assert_eq!(
        store.effective_bans(at(NOW)).await.unwrap(),
        [(net(network), Some(at(NOW + 500)))]
    );

    // Lifting the longer ban leaves the shorter one in force.
    let (removed, effects) = store
        .remove_bans(vec![net(network)], Some("api".into()), at(NOW))
        .await
        .unwrap();
    assert_eq!(removed, [until(NOW + 500, ban(network, "api", ""))]);
    assert_eq!(effects, [effect(network, banned(Some(NOW + 100)))]);

    // Lifting the last one unbans the network.
    let (removed, effects) = store
        .remove_bans(vec![net(network)], Some("cli".into()), at(NOW))
        .await
        .unwrap();
    assert_eq!(removed, [until(NOW + 100, ban(network, "cli", ""))]);
    assert_eq!(effects, [effect(network, Effective::Unbanned)]);
    assert!(store.list_bans().await.unwrap().is_empty());
    assert!(store.effective_bans(at(NOW)).await.unwrap().is_empty());
}

pub async fn a_record_that_never_expires_outlasts_every_other(store: &dyn Store) {
    let effects = store
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

pub async fn removing_without_a_source_removes_the_records_of_every_source(store: &dyn Store) {
    store
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
    let (removed, effects) = store
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
        store.list_bans().await.unwrap(),
        [ban("10.0.0.2/32", "list", "")]
    );
}

pub async fn sync_makes_a_source_hold_exactly_the_list_and_leaves_other_sources_alone(
    store: &dyn Store,
) {
    store
        .add_bans(vec![ban("10.0.0.2/32", "cli", "by hand")], at(NOW))
        .await
        .unwrap();
    let first = store
        .sync_source(
            "drop".into(),
            vec![
                listed("10.0.0.1/32", "SBL1"),
                listed("10.0.0.2/32", "SBL2"),
                listed("10.0.0.3/32", "SBL3"),
                listed("10.0.0.5/32", "SBL5"),
            ],
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
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
                effect("10.0.0.3/32", banned(None)),
                effect("10.0.0.5/32", banned(None)),
            ],
            ..SyncReport::default()
        }
    );
    // Someone gives one record of the list an expiry by hand (`ban add --source drop`).
    store
        .add_bans(
            vec![until(NOW + 500, ban("10.0.0.3/32", "drop", "SBL3"))],
            at(NOW),
        )
        .await
        .unwrap();

    let second = store
        .sync_source(
            "drop".into(),
            vec![
                listed("10.0.0.4/32", "SBL4"),
                listed("10.0.0.5/32", "SBL5"),
                listed("10.0.0.3/32", "SBL3"),
                listed("10.0.0.1/32", "SBL1, renamed"),
            ],
            at(NOW + 1_000),
            std::sync::Arc::new(crate::store::Unlimited),
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
            // keeps it banned although the list dropped it; a synced record never expires.
            effects: vec![
                effect("10.0.0.2/32", banned(None)),
                effect("10.0.0.3/32", banned(None)),
                effect("10.0.0.4/32", banned(None)),
            ],
            ..SyncReport::default()
        }
    );
    assert_eq!(
        store.list_bans().await.unwrap(),
        [
            ban("10.0.0.1/32", "drop", "SBL1, renamed"),
            ban("10.0.0.2/32", "cli", "by hand"),
            ban("10.0.0.3/32", "drop", "SBL3"),
            Ban {
                created: at(NOW + 1_000),
                ..ban("10.0.0.4/32", "drop", "SBL4")
            },
            ban("10.0.0.5/32", "drop", "SBL5"),
        ]
    );
}

pub async fn syncing_the_same_list_again_changes_nothing(store: &dyn Store) {
    let list = vec![listed("10.0.0.1/32", "SBL1"), listed("10.0.0.3/32", "")];
    store
        .sync_source(
            "drop".into(),
            list.clone(),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    let again = store
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
}

pub async fn syncing_an_empty_list_removes_every_record_of_the_source(store: &dyn Store) {
    store
        .add_bans(vec![ban("10.0.0.1/32", "cli", "")], at(NOW))
        .await
        .unwrap();
    store
        .sync_source(
            "drop".into(),
            vec![listed("10.0.0.1/32", ""), listed("10.0.0.2/32", "")],
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    let report = store
        .sync_source(
            "drop".into(),
            vec![],
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
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
        store.list_bans().await.unwrap(),
        [ban("10.0.0.1/32", "cli", "")]
    );
}

pub async fn a_synced_list_keeps_the_first_entry_of_each_network_with_host_bits_cleared(
    store: &dyn Store,
) {
    let report = store
        .sync_source(
            "list".into(),
            vec![
                listed("10.0.0.7/24", "first"),
                listed("2001:db8::1/32", ""),
                listed("10.0.0.0/24", "second"),
            ],
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    assert_eq!(report.added, 2);
    assert_eq!(
        report.effects,
        [
            effect("10.0.0.0/24", banned(None)),
            effect("2001:db8::/32", banned(None))
        ]
    );
    assert_eq!(
        store.list_bans().await.unwrap(),
        [
            ban("10.0.0.0/24", "list", "first"),
            ban("2001:db8::/32", "list", "")
        ]
    );
}

pub async fn a_large_resync_touches_only_what_changed(store: &dyn Store) {
    let list: Vec<Ban> = (0..5_000u32)
        .map(|i| {
            let network = host(0x0a00_0000 + i * 7);
            Ban {
                network,
                ..ban("0.0.0.0/0", "big", "")
            }
        })
        .collect();
    let first = store
        .sync_source(
            "big".into(),
            entries(&list),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
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
    let second = store
        .sync_source(
            "big".into(),
            entries(&changed),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
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
    assert_eq!(store.list_bans().await.unwrap().len(), 5_000);
}

pub async fn a_resync_removing_and_adding_all_over_the_list_writes_exactly_the_delta(
    store: &dyn Store,
) {
    let old: Vec<IpNet> = (0..1_000u32).map(|i| host(0x0a00_0000 + 2 * i)).collect();
    let listing = |networks: &[IpNet]| -> Vec<ListEntry> {
        networks
            .iter()
            .map(|network| ListEntry {
                network: *network,
                reason: "".into(),
            })
            .collect()
    };
    store
        .sync_source(
            "big".into(),
            listing(&old),
            at(NOW),
            std::sync::Arc::new(crate::store::Unlimited),
        )
        .await
        .unwrap();
    // Every third network goes and every fifth gap gets one: removals and additions alternate
    // through the list, more than a batch of each.
    let mut new: Vec<IpNet> = (0..1_000u32)
        .filter(|i| i % 3 != 0)
        .map(|i| host(0x0a00_0000 + 2 * i))
        .collect();
    new.extend(
        (0..1_000u32)
            .filter(|i| i % 5 == 0)
            .map(|i| host(0x0a00_0000 + 2 * i + 1)),
    );
    let report = store
        .sync_source(
            "big".into(),
            listing(&new),
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
        (200, 0, 334, 666)
    );
    new.sort();
    let mut stored: Vec<IpNet> = store
        .list_bans()
        .await
        .unwrap()
        .iter()
        .map(|ban| ban.network)
        .collect();
    stored.sort();
    assert_eq!(stored, new);
}

pub async fn expired_records_are_not_effective_and_are_reaped(store: &dyn Store) {
    store
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
        store.effective_bans(later).await.unwrap(),
        [
            (net("10.0.0.2/32"), None),
            (net("10.0.0.3/32"), Some(at(NOW + 20)))
        ]
    );
    let effects = store.remove_expired(later).await.unwrap();
    assert_eq!(
        effects,
        [
            effect("10.0.0.1/32", Effective::Unbanned),
            effect("10.0.0.2/32", banned(None)),
        ]
    );
    assert_eq!(
        store.list_bans().await.unwrap(),
        [
            ban("10.0.0.2/32", "list", ""),
            until(NOW + 20, ban("10.0.0.3/32", "cli", "")),
        ]
    );
    assert!(store.remove_expired(later).await.unwrap().is_empty());
}

pub async fn the_allowlist_is_added_listed_and_removed(store: &dyn Store) {
    store
        .add_allows(vec![
            allow("2001:db8::/48", "office v6", NOW),
            allow("203.0.113.7/32", "office", NOW),
        ])
        .await
        .unwrap();
    store
        .add_allows(vec![allow("203.0.113.7/32", "the office", NOW + 5)])
        .await
        .unwrap();
    assert_eq!(
        store.list_allows().await.unwrap(),
        [
            allow("203.0.113.7/32", "the office", NOW),
            allow("2001:db8::/48", "office v6", NOW),
        ],
        "ordered by network; a new note keeps the first created"
    );
    let removed = store
        .remove_allows(vec![net("2001:db8::/48"), net("192.0.2.1/32")])
        .await
        .unwrap();
    assert_eq!(removed, [allow("2001:db8::/48", "office v6", NOW)]);
    assert_eq!(
        store.list_allows().await.unwrap(),
        [allow("203.0.113.7/32", "the office", NOW)]
    );
}

pub async fn a_change_reads_back_only_the_records_it_wrote(store: &dyn Store) {
    store
        .add_bans(
            vec![
                ban("10.0.0.1/32", "cli", "one"),
                ban("10.0.0.1/32", "api", "two"),
                ban("192.0.2.0/24", "cli", "three"),
                ban("198.51.100.0/24", "cli", "four"),
            ],
            at(NOW),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .bans_of(
                vec![
                    net("192.0.2.9/24"),
                    net("10.0.0.1/32"),
                    net("203.0.113.1/32"),
                    net("10.0.0.1/32"),
                ],
                "cli".into(),
            )
            .await
            .unwrap(),
        [
            ban("10.0.0.1/32", "cli", "one"),
            ban("192.0.2.0/24", "cli", "three")
        ],
        "host bits cleared, each once, in network order; other sources and networks left out"
    );
}

pub async fn ban_queries_page_in_network_order_and_filter_by_source_address_and_reason(
    store: &dyn Store,
) {
    let mut bans: Vec<Ban> = (0..25)
        .map(|i| {
            let reason = if i % 5 == 0 { "Scraper 100%" } else { "noise" };
            ban(&format!("10.0.{i}.0/24"), "list", reason)
        })
        .collect();
    bans.push(ban("10.0.3.7/32", "cli", "by hand"));
    bans.push(ban("10.0.0.0/8", "cli", "wide"));
    bans.push(ban("10.0.3.0/24", "cli", "twice"));
    bans.push(ban("2001:db8::/32", "cli", "a v6 scraper"));
    store.add_bans(bans, at(NOW)).await.unwrap();
    let all = store.list_bans().await.unwrap();
    assert_eq!(all.len(), 29);

    let query = |q: BanQuery| async move { store.query_bans(q).await.unwrap() };
    // Pages of 10 cover every record once, in the listing's order, each with the total.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = query(BanQuery {
            limit: 10,
            after: after.clone(),
            ..BanQuery::default()
        })
        .await;
        assert_eq!(page.total, 29);
        let Some(last) = page.bans.last() else { break };
        after = Some((last.network, last.source.clone()));
        assert!(page.bans.len() <= 10);
        seen.extend(page.bans);
    }
    assert_eq!(seen, all);

    let networks = |page: BanPage| -> (Vec<String>, u64) {
        (
            page.bans
                .iter()
                .map(|b| format!("{} {}", b.network, b.source))
                .collect(),
            page.total,
        )
    };
    let contains = |ip: &str| BanQuery {
        contains: Some(ip.parse().unwrap()),
        limit: 100,
        ..BanQuery::default()
    };
    assert_eq!(
        networks(query(contains("10.0.3.7")).await),
        (
            vec![
                "10.0.0.0/8 cli".into(),
                "10.0.3.0/24 cli".into(),
                "10.0.3.0/24 list".into(),
                "10.0.3.7/32 cli".into()
            ],
            4
        )
    );
    assert_eq!(
        networks(query(contains("2001:db8::1")).await),
        (vec!["2001:db8::/32 cli".into()], 1)
    );
    assert_eq!(networks(query(contains("192.0.2.1")).await), (vec![], 0));

    let text = |t: &str| BanQuery {
        text: Some(t.into()),
        limit: 3,
        ..BanQuery::default()
    };
    let page = query(text("SCRAPER")).await;
    assert_eq!(
        (page.bans.len(), page.total),
        (3, 6),
        "any case; the total counts every page"
    );
    assert_eq!(query(text("100%")).await.total, 5, "% matches itself");
    assert_eq!(query(text("_")).await.total, 0, "_ matches itself");

    let page = query(BanQuery {
        source: Some("cli".into()),
        contains: Some("10.0.3.200".parse().unwrap()),
        limit: 100,
        ..BanQuery::default()
    })
    .await;
    assert_eq!(
        networks(page),
        (vec!["10.0.0.0/8 cli".into(), "10.0.3.0/24 cli".into()], 2),
        "filters combine"
    );
}

// Visitors.

pub async fn a_first_visit_makes_a_visitor(store: &dyn Store) {
    assert_eq!(store.visitor("s:a".into()).await.unwrap(), None);
    record(store, &[by("ann", visit("a", "/blog", NOW))]).await;
    assert_eq!(
        visitor(store, "a").await,
        Visitor {
            key: "s:a".into(),
            session_key: Some("a".into()),
            ip: "192.0.2.1".parse().unwrap(),
            user_agent: "Mozilla/5.0".into(),
            user: Some("ann".into()),
            referrer: Some("https://ref.example/".into()),
            last_page: "/blog".into(),
            page_views: 1,
            session_start: at(NOW),
            last_update: at(NOW),
        }
    );
    // An app without sessions: the visitor is its address and user agent.
    let anonymous = Visit {
        session_key: None,
        ..visit("", "/", NOW)
    };
    let key = anonymous.key();
    record(store, &[anonymous]).await;
    let found = store.visitor(key).await.unwrap().unwrap();
    assert_eq!((found.session_key, found.page_views), (None, 1));
}

pub async fn a_session_idle_for_more_than_an_hour_starts_over(store: &dyn Store) {
    let idle = SESSION_IDLE.as_millis() as i64;
    record(store, &[visit("a", "/1", NOW)]).await;
    // An hour to the millisecond is not more than an hour.
    let mut second = visit("a", "/2", NOW + idle);
    second.referrer = Some("https://elsewhere.example/".into());
    record(store, &[second]).await;
    let a = visitor(store, "a").await;
    assert_eq!(
        (a.page_views, a.session_start, a.last_page.as_str()),
        (2, at(NOW), "/2")
    );
    assert_eq!(
        a.referrer.as_deref(),
        Some("https://ref.example/"),
        "the referrer is where the session came from"
    );

    let mut third = visit("a", "/3", NOW + 2 * idle + 1);
    third.referrer = None;
    record(store, &[third]).await;
    let a = visitor(store, "a").await;
    assert_eq!(
        (a.page_views, a.session_start, a.referrer),
        (1, at(NOW + 2 * idle + 1), None)
    );
}

pub async fn a_late_visit_counts_but_does_not_move_the_visitor(store: &dyn Store) {
    record(store, &[visit("a", "/now", NOW)]).await;
    // Reported after a later one: it is a page view of the session, but the visitor is where
    // its latest visit says.
    let late = Visit {
        ip: "198.51.100.9".parse().unwrap(),
        ..by("ann", visit("a", "/before", NOW - MINUTE))
    };
    record(store, &[late]).await;
    let a = visitor(store, "a").await;
    assert_eq!(a.page_views, 2);
    assert_eq!(
        (a.last_page.as_str(), a.user, a.last_update),
        ("/now", None, at(NOW))
    );
    assert_eq!(a.ip, "192.0.2.1".parse::<IpAddr>().unwrap());
}

/// The property both backends are held to: whatever the visits and however they are batched,
/// the stored visitors are what folding [`crate::visit::VisitorDelta::apply_to`] over the
/// merged batches gives in memory.
pub async fn visits_follow_the_session_rule(store: &dyn Store) {
    let mut seen = Coverage::default();
    for seed in 1..=3u64 {
        let mut rng = Rng::new(seed);
        let visits = random_visits(&mut rng, seed, 800);
        let mut expected: HashMap<String, Visitor> = HashMap::new();
        let mut rest = &visits[..];
        let mut recorded = 0;
        while !rest.is_empty() {
            let size = (1 + rng.below(60) as usize).min(rest.len());
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            recorded += size;
            let deltas = merge(batch);
            for delta in &deltas {
                let next = match expected.get(&delta.key) {
                    Some(old) => {
                        seen.note(delta, old);
                        delta.apply_to(old)
                    }
                    None => delta.as_new_visitor(),
                };
                expected.insert(delta.key.clone(), next);
            }
            store.record_visits(deltas).await.unwrap();
            for (key, want) in &expected {
                let got = store.visitor(key.clone()).await.unwrap();
                assert_eq!(
                    got.as_ref(),
                    Some(want),
                    "seed {seed}, after {recorded} visits"
                );
            }
        }
    }
    // The sequences must have tried every branch of the rule, or the check above says little.
    assert!(seen.restarts_in_batch > 0, "{seen:?}");
    assert!(seen.idle_between_batches > 0, "{seen:?}");
    assert!(seen.exactly_an_hour > 0, "{seen:?}");
    assert!(seen.older_than_stored > 0, "{seen:?}");
    assert!(seen.as_recent_as_stored > 0, "{seen:?}");
    assert!(seen.continued > 0, "{seen:?}");
}

/// Which branches of the session rule a random sequence took.
#[derive(Debug, Default)]
struct Coverage {
    restarts_in_batch: usize,
    idle_between_batches: usize,
    exactly_an_hour: usize,
    older_than_stored: usize,
    as_recent_as_stored: usize,
    continued: usize,
}

impl Coverage {
    fn note(&mut self, delta: &crate::visit::VisitorDelta, old: &Visitor) {
        let gap = delta.first_at.as_millis() - old.last_update.as_millis();
        let idle = SESSION_IDLE.as_millis() as i64;
        if delta.restart {
            self.restarts_in_batch += 1;
        } else if gap > idle {
            self.idle_between_batches += 1;
        } else {
            self.continued += 1;
            if gap == idle {
                self.exactly_an_hour += 1;
            }
            if delta.last_at < old.last_update {
                self.older_than_stored += 1;
            }
            if delta.last_at == old.last_update {
                self.as_recent_as_stored += 1;
            }
        }
    }
}

/// xorshift64: reproducible randomness for the property tests, with no crate to pull in.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Any non-zero state works; spread small seeds over the bits.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `n` visits of a few visitors (keys unique to `seed`, at most 31) in the order they are
/// reported: mostly seconds apart, now and then after more than an hour or exactly an hour,
/// some reported late, some at the same instant as the one before, each with a random address,
/// agent, user, referrer and page where its key allows.
fn random_visits(rng: &mut Rng, seed: u64, n: usize) -> Vec<Visit> {
    const IPS: [&str; 3] = ["192.0.2.1", "198.51.100.7", "2001:db8::5"];
    const AGENTS: [&str; 3] = ["Mozilla/5.0", "curl/8.5", "Safari/17"];
    const USERS: [Option<&str>; 3] = [None, Some("ann"), Some("bob")];
    const REFERRERS: [Option<&str>; 3] =
        [None, Some("https://a.example/"), Some("https://b.example/")];
    const PAGES: [&str; 4] = ["/", "/blog", "/shop", "/about"];
    // Five visitors with sessions, two without: their address and agent are their key.
    assert!(
        seed < 32,
        "anonymous addresses are 203.0.113.(seed * 8 + who)"
    );
    let visitors = 7;
    let mut clock = NOW;
    let mut last_seen: Vec<Option<i64>> = vec![None; visitors];
    (0..n)
        .map(|_| {
            let who = rng.below(visitors as u64) as usize;
            clock += match rng.below(100) {
                0 => HOUR + rng.below(2 * HOUR as u64) as i64,
                1..6 => 0,
                _ => rng.below(90_000) as i64,
            };
            let at = match (rng.below(100), last_seen[who]) {
                (0..4, Some(last)) => last + HOUR,
                (4..6, Some(last)) => last + HOUR + 1,
                (6..16, _) => clock - rng.below(10 * MINUTE as u64) as i64,
                (16..19, _) => clock - HOUR - rng.below(HOUR as u64) as i64,
                // Two tabs at once: the same instant as the visitor's latest view.
                (19..23, Some(last)) => last,
                _ => clock,
            };
            last_seen[who] = Some(last_seen[who].map_or(at, |last| last.max(at)));
            let anonymous = who >= 5;
            Visit {
                // An address of its own for each seed keeps the keys apart.
                ip: if anonymous {
                    IpAddr::from([203, 0, 113, (seed * 8) as u8 + who as u8])
                } else {
                    rng.pick(&IPS).parse().unwrap()
                },
                session_key: (!anonymous).then(|| format!("{seed}-{who}")),
                user_agent: if anonymous {
                    AGENTS[who - 5].into()
                } else {
                    (*rng.pick(&AGENTS)).into()
                },
                user: rng.pick(&USERS).map(String::from),
                referrer: rng.pick(&REFERRERS).map(String::from),
                url: (*rng.pick(&PAGES)).into(),
                at: Timestamp::from_millis(at),
            }
        })
        .collect()
}

pub async fn visitors_are_listed_most_recent_first(store: &dyn Store) {
    record(
        store,
        &[
            visit("old", "/", NOW - 3 * MINUTE),
            visit("b", "/", NOW - MINUTE),
            visit("c", "/", NOW),
            visit("a", "/", NOW - 2 * MINUTE),
        ],
    )
    .await;
    let keys =
        |visitors: Vec<Visitor>| -> Vec<String> { visitors.into_iter().map(|v| v.key).collect() };
    // `since` is inclusive.
    let since = at(NOW - 2 * MINUTE);
    assert_eq!(
        keys(store.visitors_since(since, 10).await.unwrap()),
        ["s:c", "s:b", "s:a"]
    );
    assert_eq!(
        keys(store.visitors_since(since, 2).await.unwrap()),
        ["s:c", "s:b"]
    );
    assert!(store.visitors_since(since, 0).await.unwrap().is_empty());
    assert!(
        store
            .visitors_since(at(NOW + 1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // What is listed is the whole record.
    assert_eq!(
        store.visitors_since(at(NOW), 1).await.unwrap(),
        [visitor(store, "c").await]
    );
}

pub async fn visitor_counts_on_site_and_page(store: &dyn Store) {
    let window = at(NOW - 10 * MINUTE);
    assert_eq!(store.count_visitors(window, None).await.unwrap(), (0, 0));
    record(
        store,
        &[
            visit("gone", "/", NOW - 20 * MINUTE),
            by("ann", visit("ann", "/", NOW - 5 * MINUTE)),
            by("bob", visit("bob", "/blog", NOW - 2 * MINUTE)),
            visit("guest", "/", NOW - MINUTE),
            // Seen at the very start of the window: still in it.
            visit("edge", "/blog", NOW - 10 * MINUTE),
        ],
    )
    .await;
    let count = |path: Option<&str>| store.count_visitors(window, path.map(String::from));
    assert_eq!(count(None).await.unwrap(), (4, 2), "visitors, registered");
    assert_eq!(count(Some("/")).await.unwrap(), (2, 1));
    assert_eq!(count(Some("/blog")).await.unwrap(), (2, 1));
    assert_eq!(count(Some("/nowhere")).await.unwrap(), (0, 0));

    // A visitor who moves on is counted on the new page only.
    record(store, &[by("ann", visit("ann", "/blog", NOW))]).await;
    assert_eq!(count(Some("/")).await.unwrap(), (1, 0));
    assert_eq!(count(Some("/blog")).await.unwrap(), (3, 2));
    assert_eq!(count(None).await.unwrap(), (4, 2));
}

pub async fn cleanup_removes_the_oldest_in_bounded_batches(store: &dyn Store) {
    // Visitor `n` was last seen at minute `n`; shuffled so that insertion order says nothing.
    let mut minutes: Vec<i64> = (1..=25).collect();
    minutes.sort_by_key(|m| (m * 7) % 25);
    let visits: Vec<Visit> = minutes
        .iter()
        .map(|m| visit(&format!("{m:02}"), "/", NOW + m * MINUTE))
        .collect();
    record(store, &visits).await;

    let before = at(NOW + 20 * MINUTE);
    assert_eq!(store.remove_visitors_before(before, 8).await.unwrap(), 8);
    let left = store.visitors_since(at(0), 100).await.unwrap();
    assert_eq!(left.len(), 17);
    assert_eq!(left.last().unwrap().key, "s:09", "the oldest go first");
    assert_eq!(store.remove_visitors_before(before, 8).await.unwrap(), 8);
    // Minutes 17 to 19 are left before `before`; minute 20 is not before it.
    assert_eq!(store.remove_visitors_before(before, 8).await.unwrap(), 3);
    assert_eq!(store.remove_visitors_before(before, 8).await.unwrap(), 0);
    let left = store.visitors_since(at(0), 100).await.unwrap();
    let keys: Vec<&str> = left.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["s:25", "s:24", "s:23", "s:22", "s:21", "s:20"]);
    assert_eq!(
        store
            .remove_visitors_before(at(NOW + HOUR), 0)
            .await
            .unwrap(),
        0
    );
}

pub async fn page_views_are_totalled_over_every_visitor(store: &dyn Store) {
    assert_eq!(store.page_views_total().await.unwrap(), 0);
    store.record_visits(Vec::new()).await.unwrap();
    record(
        store,
        &[
            visit("a", "/1", NOW),
            visit("b", "/1", NOW),
            visit("a", "/2", NOW + 1),
        ],
    )
    .await;
    record(store, &[visit("a", "/3", NOW + 2)]).await;
    assert_eq!(store.page_views_total().await.unwrap(), 4);
    // A new session of `a` counts from one again.
    record(store, &[visit("a", "/4", NOW + 2 * HOUR)]).await;
    assert_eq!(store.page_views_total().await.unwrap(), 2);
}

// User-agent rules.

pub fn rule(keyword: &str, note: &str, created: i64) -> UaRule {
    UaRule {
        keyword: keyword.into(),
        note: note.into(),
        created: at(created),
        source: "cli".into(),
    }
}

pub async fn ua_rules_compare_case_insensitively(store: &dyn Store) {
    assert!(store.list_ua_rules().await.unwrap().is_empty());
    store
        .add_ua_rules(vec![
            rule("GoogleBot", "search", NOW),
            rule("curl", "", NOW),
            rule("Zgrab", "scanner", NOW),
        ])
        .await
        .unwrap();
    store
        .add_ua_rules(vec![rule("googlebot", "the search engine", NOW + 5)])
        .await
        .unwrap();
    assert_eq!(
        store.list_ua_rules().await.unwrap(),
        [
            rule("curl", "", NOW),
            rule("GoogleBot", "the search engine", NOW),
            rule("Zgrab", "scanner", NOW),
        ],
        "one rule per keyword in any case, in keyword order whatever the case, first spelling \
         and creation kept"
    );
    let removed = store
        .remove_ua_rules(vec![
            "ZGRAB".into(),
            "unknown".into(),
            "GOOGLEBOT".into(),
            "zgrab".into(),
        ])
        .await
        .unwrap();
    assert_eq!(
        removed,
        [
            rule("GoogleBot", "the search engine", NOW),
            rule("Zgrab", "scanner", NOW),
        ]
    );
    assert_eq!(
        store.list_ua_rules().await.unwrap(),
        [rule("curl", "", NOW)]
    );
}

pub async fn ua_rules_keep_their_source(store: &dyn Store) {
    let bot = |keyword: &str, note: &str| UaRule {
        source: "bots".into(),
        ..rule(keyword, note, NOW)
    };
    store
        .add_ua_rules(vec![rule("curl", "by hand", NOW)])
        .await
        .unwrap();
    // An import leaves a rule added by hand as it is, and adds the rest under its source.
    store
        .add_ua_rules(vec![bot("curl", "bot list"), bot("googlebot", "bot list")])
        .await
        .unwrap();
    assert_eq!(
        store.list_ua_rules().await.unwrap(),
        [rule("curl", "by hand", NOW), bot("googlebot", "bot list")]
    );
    // Adding by hand takes a rule of the list over.
    store
        .add_ua_rules(vec![rule("GoogleBot", "ours now", NOW + 1)])
        .await
        .unwrap();
    assert_eq!(
        store.list_ua_rules().await.unwrap(),
        [
            rule("curl", "by hand", NOW),
            rule("googlebot", "ours now", NOW)
        ]
    );
    // Removing returns the rule with its source.
    store.add_ua_rules(vec![bot("bingbot", "")]).await.unwrap();
    assert_eq!(
        store.remove_ua_rules(vec!["BINGBOT".into()]).await.unwrap(),
        [bot("bingbot", "")]
    );
}
