//! Visits that were answered and are not stored yet, and the writer that stores them.
//!
//! What the hook's `202` promises:
//! - **Eventually stored.** The writer never gives up on a visit the store could take later:
//!   it retries with a growing, capped delay for as long as an outage lasts, and when the store
//!   refuses a big transaction (a full disk) it tries smaller ones, down to one visit. Only a
//!   visit the store refuses on its own (not for want of space or a connection) is given up,
//!   counted as `rejected` and logged.
//! - **Bounded.** At most [`VisitLimits::queue`] visits wait; beyond, the hook answers `503`
//!   with `Retry-After`, never `202` for a visit it would drop.
//! - **A bounded crash window.** While the store answers, the hook also answers `503` as soon
//!   as the oldest waiting visit has waited [`VisitLimits::max_delay`]: a writer that falls
//!   behind pushes back instead of queueing more, so a crash loses at most the visits answered
//!   in the last `max_delay` (plus the transaction being written). During a store outage the
//!   waiting visits are the ones a crash would lose, at most `queue` of them.
//! - **Durable mode.** With [`VisitAck::Stored`] the hook answers only once the transaction
//!   holding its visit has committed; visits that arrive meanwhile go in the next one (group
//!   commit), so nothing answered is ever lost.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use crate::{
    config::{VisitAck, VisitLimits},
    store::Store,
    visit::{Visit, merge},
};

/// Visits per store transaction at most.
const BATCH: usize = 5_000;
/// Under load in queued mode, store transactions start at most this often: a transaction
/// costs by the pages it writes more than by the visits in it. A visit after a quiet spell is
/// stored at once.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// The longest wait between two attempts while the store fails.
const RETRY_CAP: Duration = Duration::from_secs(2);

/// Why a visit was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The backlog holds as many visits as it may.
    Full,
    /// The writer is behind by more than the delay bound.
    Behind,
    /// The agent is stopping.
    Closed,
    /// The store refused the visit on its own (durable mode only says so).
    Rejected,
}

/// Counters of the backlog, for `stats` and the metrics.
#[derive(Debug, Default)]
pub struct BacklogStats {
    /// Visits written to the store.
    pub stored: AtomicU64,
    /// Visits answered 503 because the backlog was full or behind.
    pub refused: AtomicU64,
    /// Visits the store refused on their own, given up (each logged).
    pub rejected: AtomicU64,
    /// Store transactions that failed and were retried.
    pub retries: AtomicU64,
}

struct Waiting {
    visit: Visit,
    answered: Instant,
    seq: u64,
}

struct State {
    /// Visits not yet handed to the writer.
    queue: VecDeque<Waiting>,
    /// Visits the writer holds (removed from the queue, not yet stored): their number and the
    /// answer time of the oldest.
    held: usize,
    held_oldest: Option<Instant>,
    /// Whether the last transaction succeeded: the delay bound applies only then.
    store_answers: bool,
    closed: bool,
    next_seq: u64,
}

/// The visits waiting for the store; shared by the hook (which adds) and the writer.
pub struct Backlog {
    state: Mutex<State>,
    wake: Notify,
    /// The sequence number of the last visit stored (every earlier one is stored or given up).
    stored_seq: tokio::sync::watch::Sender<u64>,
    /// Sequence numbers of visits the store refused, for durable answers (rare).
    rejected: Mutex<std::collections::BTreeSet<u64>>,
    limits: VisitLimits,
    pub stats: BacklogStats,
}

impl Backlog {
    pub fn new(limits: VisitLimits) -> Arc<Backlog> {
        Arc::new(Backlog {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                held: 0,
                held_oldest: None,
                store_answers: true,
                closed: false,
                next_seq: 1,
            }),
            wake: Notify::new(),
            stored_seq: tokio::sync::watch::channel(0).0,
            rejected: Mutex::new(std::collections::BTreeSet::new()),
            limits,
            stats: BacklogStats::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes visits for the store, all or none, or says why not. Returns the sequence number
    /// of the last, for [`Backlog::stored`].
    pub fn enqueue(&self, visits: Vec<Visit>) -> Result<u64, Refused> {
        let last = {
            let mut state = self.lock();
            if state.closed {
                return Err(Refused::Closed);
            }
            let waiting = state.queue.len() + state.held;
            let refused = if waiting + visits.len() > self.limits.queue {
                Some(Refused::Full)
            } else {
                let oldest = state
                    .held_oldest
                    .or_else(|| state.queue.front().map(|w| w.answered));
                (state.store_answers
                    && oldest.is_some_and(|o| o.elapsed() >= self.limits.max_delay))
                .then_some(Refused::Behind)
            };
            if let Some(refused) = refused {
                drop(state);
                self.stats
                    .refused
                    .fetch_add(visits.len() as u64, Ordering::Relaxed);
                return Err(refused);
            }
            let now = Instant::now();
            for visit in visits {
                let seq = state.next_seq;
                state.next_seq += 1;
                state.queue.push_back(Waiting {
                    visit,
                    answered: now,
                    seq,
                });
            }
            state.next_seq - 1
        };
        self.wake.notify_one();
        Ok(last)
    }

    /// Whether the hook answers only once a visit is stored.
    pub fn durable(&self) -> bool {
        self.limits.ack == VisitAck::Stored
    }

    /// Waits until the visits up to `seq` are stored: `Err` if the store gave one of them up
    /// or the agent stopped first.
    pub async fn stored(&self, first: u64, last: u64) -> Result<(), Refused> {
        let mut stored = self.stored_seq.subscribe();
        if stored.wait_for(|s| *s >= last).await.is_err() {
            return Err(Refused::Closed);
        }
        let rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if rejected.range(first..=last).next().is_some() {
            return Err(Refused::Rejected);
        }
        Ok(())
    }

    /// Visits waiting, and how long the oldest has.
    pub fn depth(&self) -> (usize, Duration) {
        let state = self.lock();
        let oldest = state
            .held_oldest
            .or_else(|| state.queue.front().map(|w| w.answered));
        (
            state.queue.len() + state.held,
            oldest.map_or(Duration::ZERO, |o| o.elapsed()),
        )
    }

    /// Whether the last transaction succeeded.
    pub fn store_answers(&self) -> bool {
        self.lock().store_answers
    }

    /// Refuses visits from now on; the writer stores what is waiting and ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Moves up to `room` queued visits to the writer.
    fn take(&self, into: &mut VecDeque<Waiting>, room: usize) -> bool {
        let mut state = self.lock();
        let n = room.min(state.queue.len());
        into.extend(state.queue.drain(..n));
        state.held = into.len();
        state.held_oldest = into.front().map(|w| w.answered);
        !(state.closed && state.queue.is_empty() && into.is_empty())
    }

    fn after_attempt(&self, held: &VecDeque<Waiting>, ok: bool) {
        let mut state = self.lock();
        state.held = held.len();
        state.held_oldest = held.front().map(|w| w.answered);
        state.store_answers = ok;
    }

    fn is_idle(&self) -> bool {
        let state = self.lock();
        state.queue.is_empty() && !state.closed
    }
}

/// Stores the backlog's visits until it is closed and empty.
pub async fn write(backlog: Arc<Backlog>, store: Arc<dyn Store>) {
    let mut held: VecDeque<Waiting> = VecDeque::new();
    // How many visits the next transaction takes: halved when the store refuses a big one,
    // grown back after each success.
    let mut size = BATCH;
    let mut failures = 0u32;
    let mut last_commit: Option<Instant> = None;
    loop {
        if held.is_empty() {
            if backlog.is_idle() {
                backlog.wake.notified().await;
            }
            // Queued mode under load: let the visits of one interval go in one transaction.
            if backlog.limits.ack == VisitAck::Queued
                && let Some(last) = last_commit
            {
                tokio::time::sleep_until(last + COMMIT_INTERVAL).await;
            }
        }
        let room = BATCH.saturating_sub(held.len());
        if !backlog.take(&mut held, room) {
            return;
        }
        if held.is_empty() {
            continue;
        }
        let n = size.min(held.len());
        let batch: Vec<Visit> = held.iter().take(n).map(|w| w.visit.clone()).collect();
        let started = Instant::now();
        match store.record_visits(merge(&batch)).await {
            Ok(()) => {
                last_commit = Some(started);
                let seq = held.drain(..n).last().map(|w| w.seq).unwrap_or(0);
                backlog.stats.stored.fetch_add(n as u64, Ordering::Relaxed);
                backlog.after_attempt(&held, true);
                backlog.stored_seq.send_replace(seq);
                if failures > 0 {
                    tracing::info!(
                        "the store takes visits again after {failures} failed attempts; {} waiting",
                        held.len() + backlog.depth().0
                    );
                }
                failures = 0;
                size = (size * 2).min(BATCH);
            }
            Err(e) if e.is_transient() || n > 1 => {
                backlog.stats.retries.fetch_add(1, Ordering::Relaxed);
                backlog.after_attempt(&held, false);
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        "storing {n} visits failed ({e}); retrying, {} waiting",
                        backlog.depth().0
                    );
                }
                // A smaller transaction may fit where this one did not (a full disk), and
                // isolates a visit the store refuses.
                size = (n / 2).max(1);
                let delay = Duration::from_millis(50u64 << failures.min(6)).min(RETRY_CAP);
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                let gone = held.pop_front().expect("one visit held");
                backlog.stats.rejected.fetch_add(1, Ordering::Relaxed);
                backlog.after_attempt(&held, true);
                if backlog.durable() {
                    let mut rejected = backlog.rejected.lock().unwrap_or_else(|p| p.into_inner());
                    // Answered by now: only recent ones matter.
                    while rejected.len() >= 1024 {
                        rejected.pop_first();
                    }
                    rejected.insert(gone.seq);
                }
                backlog.stored_seq.send_replace(gone.seq);
                tracing::error!("the store refused a visit of {}, given up: {e}", gone.visit.ip);
            }
        }
    }
}
