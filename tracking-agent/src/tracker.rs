//! The visitor tracker: what happens to a visit hook after it is parsed.
//!
//! A visit is first checked against the user-agent rules and the no-tracking prefixes; a tracked
//! visit is taken by the [`Backlog`] (or refused, when it is full or behind), updates the
//! in-memory [`ActiveIndex`] (so counts are exact at once) and goes out on the live feed. The
//! backlog's writer stores visits in batches, one delta per visitor a transaction
//! ([`crate::visit::merge`]). Background tasks move the active window forward (announcing
//! visitors who left) and delete old visitor records in bounded batches.

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::{
    active::{ActiveIndex, Counts, PageCount},
    api::VisitorView,
    backlog::{self, Backlog, Refused},
    config::VisitLimits,
    store::{Store, StoreError},
    time::Timestamp,
    visit::{SESSION_IDLE, UaRule, Visit, Visitor},
};

/// How long a stopping agent keeps trying to store what is waiting (a store that is away when
/// the agent stops would otherwise hold it up for good).
const STOP_WRITING: Duration = Duration::from_secs(5);
/// Visitor records deleted per clean-up transaction.
const CLEANUP_BATCH: usize = 1_000;
/// Live-feed events buffered per subscriber; a slower page misses events and catches up.
const FEED_BUFFER: usize = 1_024;

/// Settings of the tracker.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    pub tracking_timeout: Duration,
    pub cleanup_timeout: Duration,
    pub no_track_prefixes: Vec<String>,
    /// Visits from these networks are not tracked.
    pub no_track_networks: Vec<ipnet::IpNet>,
    /// Keep only the /24 (IPv4) or /48 (IPv6) of visitors' addresses.
    pub anonymize_ips: bool,
    /// How answered visits wait for the store.
    pub visits: VisitLimits,
}

/// One event of the live feed.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum FeedEvent {
    /// A tracked visit; the visitor as it now stands.
    Visit {
        visitor: VisitorView,
        active: Counts,
    },
    /// A visitor stopped being active.
    Left { key: String, active: Counts },
}

/// Counters of the tracker, for `stats`.
#[derive(Debug, Default)]
pub struct TrackerStats {
    pub tracked: AtomicU64,
    pub untracked: AtomicU64,
    /// Visits still waiting when the agent stopped with the store away (logged).
    pub lost_at_stop: AtomicU64,
}

/// The tracker, shared by the HTTP handlers and its background tasks.
pub struct Tracker {
    store: Arc<dyn Store>,
    /// Visits answered and not stored yet.
    pub backlog: Arc<Backlog>,
    active: Mutex<ActiveIndex>,
    feed: broadcast::Sender<Arc<FeedEvent>>,
    /// Lower-cased keywords of the user-agent rules.
    ua_keywords: RwLock<Arc<crate::ua_keywords::UaKeywords>>,
    config: TrackerConfig,
    pub stats: TrackerStats,
}

/// The background work of a tracker; [`Tasks::shutdown`] stores what is queued before returning.
pub struct Tasks {
    writer: tokio::task::JoinHandle<()>,
    backlog: Arc<Backlog>,
    tracker: std::sync::Weak<Tracker>,
    others: tokio::task::JoinSet<()>,
}

impl Tasks {
    /// Stops the periodic tasks, closes the backlog (a visit arriving now is refused) and waits
    /// until every waiting visit is stored, for [`STOP_WRITING`] at most.
    pub async fn shutdown(mut self) {
        self.others.shutdown().await;
        self.backlog.close();
        match tokio::time::timeout(STOP_WRITING, &mut self.writer).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("the visit writer failed: {e}"),
            Err(_) => {
                self.writer.abort();
                let (waiting, _) = self.backlog.depth();
                if let Some(t) = self.tracker.upgrade() {
                    t.stats
                        .lost_at_stop
                        .fetch_add(waiting as u64, Ordering::Relaxed);
                }
                tracing::error!(
                    "the store did not take the last {waiting} visits within {STOP_WRITING:?} of \
                     the stop; they are lost"
                );
            }
        }
    }
}

impl Tracker {
    /// Loads the user-agent rules and the recent visitors from the store, and starts the writer,
    /// the active-window clock and the clean-up.
    pub async fn start(
        store: Arc<dyn Store>,
        config: TrackerConfig,
    ) -> Result<(Arc<Tracker>, Tasks), StoreError> {
        let now = Timestamp::now();
        let mut active = ActiveIndex::new(config.tracking_timeout, now);
        let keep = config.tracking_timeout.max(SESSION_IDLE);
        let recent = store
            .visitors_since(
                Timestamp::from_millis(now.as_millis() - keep.as_millis() as i64),
                usize::MAX,
            )
            .await?;
        tracing::info!(
            "{} visitors of the last {} loaded",
            recent.len(),
            crate::time::format_duration(keep)
        );
        active.load(recent, now);
        let backlog = Backlog::new(config.visits);
        let (feed, _) = broadcast::channel(FEED_BUFFER);
        let tracker = Arc::new(Tracker {
            store: store.clone(),
            backlog: backlog.clone(),
            active: Mutex::new(active),
            feed,
            ua_keywords: RwLock::new(Arc::new(Default::default())),
            config,
            stats: TrackerStats::default(),
        });
        tracker.reload_ua_rules().await?;
        let writer = tokio::spawn(backlog::write(backlog.clone(), store));
        let mut others = tokio::task::JoinSet::new();
        others.spawn(clock(Arc::downgrade(&tracker)));
        others.spawn(cleanup(Arc::downgrade(&tracker)));
        let tasks = Tasks {
            writer,
            backlog,
            tracker: Arc::downgrade(&tracker),
            others,
        };
        Ok((tracker, tasks))
    }

    /// Whether a visit is tracked at all: not for a user agent matching a rule, a path under a
    /// no-tracking prefix, or an address in an excluded network.
    pub fn wants(&self, visit: &Visit) -> bool {
        if self
            .config
            .no_track_prefixes
            .iter()
            .any(|p| visit.url.starts_with(p.as_str()))
        {
            return false;
        }
        if self
            .config
            .no_track_networks
            .iter()
            .any(|n| n.contains(&visit.ip))
        {
            return false;
        }
        let keywords = self.ua_keywords.read().expect("rules lock").clone();
        !keywords.matches(&visit.user_agent)
    }

    /// Tracks the visits that are wanted, all or none: says for each whether it was, or why
    /// none was taken (the backlog is full or behind, or the agent is stopping). In durable
    /// mode it returns once they are stored.
    pub async fn track(&self, visits: Vec<Visit>) -> Result<Vec<bool>, Refused> {
        let mut wanted = Vec::with_capacity(visits.len());
        let mut taken = Vec::with_capacity(visits.len());
        for mut visit in visits {
            let wants = self.wants(&visit);
            wanted.push(wants);
            if !wants {
                continue;
            }
            if self.config.anonymize_ips {
                visit.ip = anonymize(visit.ip);
            }
            taken.push(visit);
        }
        let count = taken.len() as u64;
        let untracked = wanted.len() as u64 - count;
        if count == 0 {
            self.stats.untracked.fetch_add(untracked, Ordering::Relaxed);
            return Ok(wanted);
        }
        // The index and the feed see the visits the backlog took, as the store will.
        let last = self.backlog.enqueue(taken.clone())?;
        for visit in &taken {
            self.count(visit);
        }
        self.stats.tracked.fetch_add(count, Ordering::Relaxed);
        self.stats.untracked.fetch_add(untracked, Ordering::Relaxed);
        if self.backlog.durable() {
            self.backlog.stored(last + 1 - count, last).await?;
        }
        Ok(wanted)
    }

    /// Puts a taken visit in the active index and on the live feed.
    fn count(&self, visit: &Visit) {
        let now = Timestamp::now();
        let timeout_ms = self.config.tracking_timeout.as_millis() as i64;
        // The visitor is only copied out for the live feed, when someone watches it.
        let watched = self.feed.receiver_count() > 0;
        let (view, counts) = {
            let mut index = self.active.lock().expect("index lock");
            let left = index.advance(now);
            let view = index.record(visit, now, |visitor| {
                let active = visitor.last_update.as_millis() >= now.as_millis() - timeout_ms;
                watched.then(|| VisitorView::new(visitor, active))
            });
            let counts = index.counts(None);
            self.announce_left(left, counts);
            (view, counts)
        };
        if let Some(visitor) = view {
            let _ = self.feed.send(Arc::new(FeedEvent::Visit {
                visitor,
                active: counts,
            }));
        }
    }

    /// Tells the feed who left; each event carries the counts after this step's departures.
    fn announce_left(&self, left: Vec<Visitor>, counts: Counts) {
        if self.feed.receiver_count() == 0 {
            return;
        }
        for v in left {
            let _ = self.feed.send(Arc::new(FeedEvent::Left {
                key: v.key,
                active: counts,
            }));
        }
    }

    /// The oldest time a visit may say it happened, as of `now`: a record older than the
    /// clean-up timeout would be deleted at once.
    pub fn oldest_visit(&self, now: Timestamp) -> Timestamp {
        Timestamp::from_millis(
            now.as_millis()
                .saturating_sub(self.config.cleanup_timeout.as_millis() as i64),
        )
    }

    /// Active visitors in total or on one page (`visitors_on_site` / `visitors_on_page`).
    pub fn counts(&self, path: Option<&str>) -> Counts {
        let mut index = self.active.lock().expect("index lock");
        let now = Timestamp::now();
        let left = index.advance(now);
        let total = index.counts(None);
        self.announce_left(left, total);
        index.counts(path)
    }

    /// Active visitors, most recently seen first.
    pub fn active_visitors(&self, limit: usize) -> Vec<VisitorView> {
        let index = self.active.lock().expect("index lock");
        index
            .active()
            .take(limit)
            .map(|v| VisitorView::new(v, true))
            .collect()
    }

    /// Pages with the most active visitors.
    pub fn busiest_pages(&self, limit: usize) -> Vec<PageCount> {
        self.active.lock().expect("index lock").busiest(limit)
    }

    /// Visitor records from the store, most recent first.
    pub async fn visitors(&self, limit: usize) -> Result<Vec<VisitorView>, StoreError> {
        let cutoff = Timestamp::now().as_millis() - self.config.tracking_timeout.as_millis() as i64;
        Ok(self
            .store
            .visitors_since(Timestamp::from_millis(i64::MIN / 2), limit)
            .await?
            .iter()
            .map(|v| VisitorView::new(v, v.last_update.as_millis() >= cutoff))
            .collect())
    }

    /// Page views summed over every stored visitor record.
    pub async fn page_views_total(&self) -> Result<u64, StoreError> {
        self.store.page_views_total().await
    }

    /// A receiver of the live feed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.feed.subscribe()
    }

    pub async fn ua_rules(&self) -> Result<Vec<UaRule>, StoreError> {
        self.store.list_ua_rules().await
    }

    pub async fn add_ua_rules(&self, rules: Vec<UaRule>) -> Result<(), StoreError> {
        self.store.add_ua_rules(rules).await?;
        self.reload_ua_rules().await
    }

    pub async fn remove_ua_rules(&self, keywords: Vec<String>) -> Result<Vec<UaRule>, StoreError> {
        let removed = self.store.remove_ua_rules(keywords).await?;
        self.reload_ua_rules().await?;
        Ok(removed)
    }

    /// Reads the user-agent rules from the store again (another agent of a fleet may have
    /// changed them).
    pub async fn reload_ua_rules(&self) -> Result<(), StoreError> {
        let rules = self.store.list_ua_rules().await?;
        let keywords = crate::ua_keywords::UaKeywords::new(rules.iter().map(|r| &r.keyword));
        *self.ua_keywords.write().expect("rules lock") = Arc::new(keywords);
        Ok(())
    }

    /// Deletes visitor records not updated within the clean-up timeout, a bounded batch per
    /// transaction so that visits are never held up for long. Returns how many went.
    pub async fn cleanup(&self) -> Result<usize, StoreError> {
        let before = Timestamp::from_millis(
            Timestamp::now().as_millis() - self.config.cleanup_timeout.as_millis() as i64,
        );
        let mut total = 0;
        loop {
            let n = self
                .store
                .remove_visitors_before(before, CLEANUP_BATCH)
                .await?;
            total += n;
            if n < CLEANUP_BATCH {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The address with its host part dropped: the /24 of an IPv4 address, the /48 of an IPv6 one
/// (enough for a city on the map, not enough to single out a subscriber).
pub fn anonymize(ip: IpAddr) -> IpAddr {
    let len = if ip.is_ipv4() { 24 } else { 48 };
    ipnet::IpNet::new(ip, len)
        .expect("a valid length")
        .network()
}

/// Moves the active window every second, so that departures reach the live feed on time.
async fn clock(tracker: std::sync::Weak<Tracker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(t) = tracker.upgrade() else { return };
        t.counts(None);
    }
}

/// Runs the clean-up every few minutes (more often for short timeouts).
async fn cleanup(tracker: std::sync::Weak<Tracker>) {
    let period = match tracker.upgrade() {
        Some(t) => {
            (t.config.cleanup_timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
        }
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(t) = tracker.upgrade() else { return };
        match t.cleanup().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("clean-up removed {n} old visitor records"),
            Err(e) => tracing::error!("clean-up failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymized_addresses_keep_their_slash_24_or_slash_48() {
        assert_eq!(
            anonymize("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0"
        );
        assert_eq!(
            anonymize("2001:db8:1:2:3::4".parse().unwrap()).to_string(),
            "2001:db8:1::"
        );
    }
}
