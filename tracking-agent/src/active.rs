//! Who is on the site right now, answered from memory: the seed's `visitors_on_site` and
//! `visitors_on_page` without a database scan.
//!
//! Visitors seen within the tracking timeout are active. The index keeps every visitor seen in
//! the last [`SESSION_IDLE`] (so a returning visitor continues its session's page views), ordered
//! by last update, and tallies the active ones in total and per page. Time only moves forward:
//! [`ActiveIndex::advance`] walks the visitors whose last update fell behind the new cutoff, each
//! once, so keeping the tallies costs O(log n) per visit and the counts are read in O(1).

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    time::Timestamp,
    visit::{SESSION_IDLE, Visit, Visitor},
};

/// Active visitors, in total or on one page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub visitors: u64,
    pub registered: u64,
    pub guests: u64,
}

/// Active visitors on one page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCount {
    pub path: String,
    pub visitors: u64,
    pub registered: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    visitors: u64,
    registered: u64,
}

impl Tally {
    fn add(&mut self, v: &Visitor) {
        self.visitors += 1;
        self.registered += v.user.is_some() as u64;
    }

    fn remove(&mut self, v: &Visitor) {
        self.visitors -= 1;
        self.registered -= v.user.is_some() as u64;
    }

    fn counts(self) -> Counts {
        Counts {
            visitors: self.visitors,
            registered: self.registered,
            guests: self.visitors - self.registered,
        }
    }
}

/// The in-memory index of recent visitors.
pub struct ActiveIndex {
    timeout_ms: i64,
    keep_ms: i64,
    visitors: HashMap<String, Visitor>,
    /// `(last update, key)` of every visitor held.
    order: BTreeSet<(i64, String)>,
    /// Visitors updated before this are inactive.
    cutoff: i64,
    total: Tally,
    pages: HashMap<String, Tally>,
}

impl ActiveIndex {
    /// An empty index for a tracking timeout, as of `now`.
    pub fn new(timeout: Duration, now: Timestamp) -> Self {
        let timeout_ms = timeout.as_millis() as i64;
        ActiveIndex {
            timeout_ms,
            keep_ms: timeout_ms.max(SESSION_IDLE.as_millis() as i64),
            visitors: HashMap::new(),
            order: BTreeSet::new(),
            cutoff: now.as_millis() - timeout_ms,
            total: Tally::default(),
            pages: HashMap::new(),
        }
    }

    /// Takes visitor records from the store (at start), replacing what is held for their keys.
    pub fn load(&mut self, visitors: impl IntoIterator<Item = Visitor>, now: Timestamp) {
        for v in visitors {
            self.put(v, now);
        }
    }

    /// Records one visit and returns its visitor as it now stands (a copy: the tests' view).
    #[cfg(test)]
    pub fn observe(&mut self, visit: &Visit, now: Timestamp) -> Visitor {
        self.record(visit, now, Visitor::clone)
    }

    /// Records one visit and hands its visitor, as it now stands, to `view`.
    ///
    /// The hook's path: the record is updated in place by the rule of
    /// [`crate::visit::VisitorDelta::apply_to`] for a delta of this one visit, without building
    /// the delta, and nothing is cloned unless `view` clones it.
    pub fn record<R>(
        &mut self,
        visit: &Visit,
        now: Timestamp,
        view: impl FnOnce(&Visitor) -> R,
    ) -> R {
        let key = visit.key();
        let forget = now.as_millis() - self.keep_ms;
        let Some(v) = self.visitors.get_mut(&key) else {
            let visitor = Visitor {
                key,
                session_key: visit.session_key.clone(),
                ip: visit.ip,
                user_agent: visit.user_agent.clone(),
                user: visit.user.clone(),
                referrer: visit.referrer.clone(),
                last_page: visit.url.clone(),
                page_views: 1,
                session_start: visit.at,
                last_update: visit.at,
            };
            let seen = view(&visitor);
            if visitor.last_update.as_millis() >= forget {
                self.put(visitor, now);
            }
            return seen;
        };
        let old_ms = v.last_update.as_millis();
        if old_ms >= self.cutoff {
            untally(&mut self.total, &mut self.pages, v);
        }
        apply_visit(v, visit);
        let new_ms = v.last_update.as_millis();
        if new_ms != old_ms || new_ms < forget {
            // The key is lent to the probe rather than cloned for it.
            let probe = (old_ms, std::mem::take(&mut v.key));
            self.order.remove(&probe);
            v.key = probe.1;
            if new_ms < forget {
                let gone = self.visitors.remove(&key).expect("held");
                return view(&gone);
            }
            self.order.insert((new_ms, v.key.clone()));
        }
        if new_ms >= self.cutoff {
            tally(&mut self.total, &mut self.pages, v);
        }
        view(v)
    }

    fn put(&mut self, visitor: Visitor, now: Timestamp) {
        if let Some(old) = self.visitors.remove(&visitor.key) {
            self.order
                .remove(&(old.last_update.as_millis(), old.key.clone()));
            if self.is_active(&old) {
                self.untally(&old);
            }
        }
        if visitor.last_update.as_millis() < now.as_millis() - self.keep_ms {
            return;
        }
        if self.is_active(&visitor) {
            self.tally(&visitor);
        }
        self.order
            .insert((visitor.last_update.as_millis(), visitor.key.clone()));
        self.visitors.insert(visitor.key.clone(), visitor);
    }

    fn is_active(&self, v: &Visitor) -> bool {
        v.last_update.as_millis() >= self.cutoff
    }

    fn tally(&mut self, v: &Visitor) {
        tally(&mut self.total, &mut self.pages, v);
    }

    fn untally(&mut self, v: &Visitor) {
        untally(&mut self.total, &mut self.pages, v);
    }

    /// Moves the clock to `now`: returns the visitors that stopped being active since the last
    /// call, and forgets those idle for longer than a session lasts.
    pub fn advance(&mut self, now: Timestamp) -> Vec<Visitor> {
        let cutoff = now.as_millis() - self.timeout_ms;
        let mut left = Vec::new();
        if cutoff > self.cutoff {
            let leaving: Vec<String> = self
                .order
                .range((self.cutoff, String::new())..(cutoff, String::new()))
                .map(|(_, k)| k.clone())
                .collect();
            for key in leaving {
                let v = self.visitors[&key].clone();
                self.untally(&v);
                left.push(v);
            }
            self.cutoff = cutoff;
        }
        let forget = now.as_millis() - self.keep_ms;
        while let Some((last, _)) = self.order.first() {
            if *last >= forget {
                break;
            }
            let (_, key) = self.order.pop_first().expect("not empty");
            self.visitors.remove(&key);
        }
        left
    }

    /// Active visitors in total, or whose last page is `path`.
    pub fn counts(&self, path: Option<&str>) -> Counts {
        match path {
            None => self.total.counts(),
            Some(p) => self.pages.get(p).copied().unwrap_or_default().counts(),
        }
    }

    /// Active visitors, most recently seen first.
    pub fn active(&self) -> impl Iterator<Item = &Visitor> {
        self.order
            .iter()
            .rev()
            .take_while(|(last, _)| *last >= self.cutoff)
            .map(|(_, k)| &self.visitors[k])
    }

    /// Pages with the most active visitors, most first.
    pub fn busiest(&self, limit: usize) -> Vec<PageCount> {
        let mut pages: Vec<PageCount> = self
            .pages
            .iter()
            .map(|(path, t)| PageCount {
                path: path.clone(),
                visitors: t.visitors,
                registered: t.registered,
            })
            .collect();
        pages.sort_by(|a, b| {
            b.visitors
                .cmp(&a.visitors)
                .then_with(|| a.path.cmp(&b.path))
        });
        pages.truncate(limit);
        pages
    }

    /// Visitors held in memory (active or within a session of being so).
    pub fn len(&self) -> usize {
        self.visitors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.visitors.is_empty()
    }
}

/// Counts an active visitor in the total and on its page.
fn tally(total: &mut Tally, pages: &mut HashMap<String, Tally>, v: &Visitor) {
    total.add(v);
    match pages.get_mut(&v.last_page) {
        Some(page) => page.add(v),
        None => pages.entry(v.last_page.clone()).or_default().add(v),
    }
}

/// Takes a visitor who was active out of the total and its page.
fn untally(total: &mut Tally, pages: &mut HashMap<String, Tally>, v: &Visitor) {
    total.remove(v);
    if let Some(page) = pages.get_mut(&v.last_page) {
        page.remove(v);
        if page.visitors == 0 {
            pages.remove(&v.last_page);
        }
    }
}

/// [`crate::visit::VisitorDelta::apply_to`] for the delta of one visit, in place: after an
/// hour idle the session starts over, else views add up and the rest comes from the visit if it
/// is at least as recent. `clone_from` reuses the record's buffers.
fn apply_visit(v: &mut Visitor, visit: &Visit) {
    let idle = visit.at.as_millis() - v.last_update.as_millis() > SESSION_IDLE.as_millis() as i64;
    v.session_key.clone_from(&visit.session_key);
    if idle || visit.at >= v.last_update {
        v.ip = visit.ip;
        v.user_agent.clone_from(&visit.user_agent);
        v.user.clone_from(&visit.user);
        v.last_page.clone_from(&visit.url);
    }
    if idle {
        v.referrer.clone_from(&visit.referrer);
        v.page_views = 1;
        v.session_start = visit.at;
        v.last_update = visit.at;
    } else {
        v.page_views += 1;
        v.last_update = v.last_update.max(visit.at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visit::merge;

    const MIN: i64 = 60_000;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn visit(session: &str, url: &str, user: Option<&str>, ms: i64) -> Visit {
        Visit {
            ip: "192.0.2.1".parse().unwrap(),
            session_key: Some(session.into()),
            user_agent: "Mozilla/5.0".into(),
            user: user.map(String::from),
            referrer: None,
            url: url.into(),
            at: at(ms),
        }
    }

    fn index(now: i64) -> ActiveIndex {
        ActiveIndex::new(Duration::from_secs(600), at(now))
    }

    #[test]
    fn counts_visitors_on_the_site_and_on_each_page() {
        let t = 100 * MIN;
        let mut idx = index(t);
        idx.observe(&visit("a", "/", None, t), at(t));
        idx.observe(&visit("b", "/", Some("bob"), t), at(t));
        idx.observe(&visit("c", "/blog", None, t), at(t));
        assert_eq!(
            idx.counts(None),
            Counts {
                visitors: 3,
                registered: 1,
                guests: 2
            }
        );
        assert_eq!(
            idx.counts(Some("/")),
            Counts {
                visitors: 2,
                registered: 1,
                guests: 1
            }
        );
        assert_eq!(
            idx.counts(Some("/blog")),
            Counts {
                visitors: 1,
                registered: 0,
                guests: 1
            }
        );
        assert_eq!(idx.counts(Some("/nowhere")), Counts::default());
    }

    #[test]
    fn a_visitor_moving_to_another_page_counts_once_on_the_new_page() {
        let t = 100 * MIN;
        let mut idx = index(t);
        idx.observe(&visit("a", "/", None, t), at(t));
        let v = idx.observe(&visit("a", "/blog", Some("alice"), t + 1000), at(t + 1000));
        assert_eq!(v.page_views, 2);
        assert_eq!(
            idx.counts(None),
            Counts {
                visitors: 1,
                registered: 1,
                guests: 0
            }
        );
        assert_eq!(idx.counts(Some("/")), Counts::default());
        assert_eq!(idx.counts(Some("/blog")).visitors, 1);
    }

    #[test]
    fn visitors_stop_being_active_after_the_timeout() {
        let t = 100 * MIN;
        let mut idx = index(t);
        idx.observe(&visit("a", "/", None, t), at(t));
        idx.observe(&visit("b", "/", None, t + 5 * MIN), at(t + 5 * MIN));
        assert!(
            idx.advance(at(t + 10 * MIN)).is_empty(),
            "exactly at the timeout, still active"
        );
        let left = idx.advance(at(t + 10 * MIN + 1));
        assert_eq!(
            left.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(),
            vec!["s:a"]
        );
        assert_eq!(idx.counts(None).visitors, 1);
        assert_eq!(
            idx.active().map(|v| v.key.as_str()).collect::<Vec<_>>(),
            vec!["s:b"]
        );
        idx.advance(at(t + 16 * MIN));
        assert_eq!(idx.counts(None), Counts::default());
        assert_eq!(idx.counts(Some("/")), Counts::default());
    }

    #[test]
    fn a_returning_visitor_continues_its_session_within_the_hour() {
        let t = 100 * MIN;
        let mut idx = index(t);
        idx.observe(&visit("a", "/", None, t), at(t));
        idx.advance(at(t + 30 * MIN));
        assert_eq!(idx.counts(None).visitors, 0);
        let v = idx.observe(&visit("a", "/2", None, t + 30 * MIN), at(t + 30 * MIN));
        assert_eq!(v.page_views, 2, "same session");
        assert_eq!(idx.counts(None).visitors, 1);
        idx.advance(at(t + 30 * MIN + 61 * MIN));
        assert!(idx.is_empty(), "forgotten after a session's idle time");
        let v = idx.observe(&visit("a", "/3", None, t + 92 * MIN), at(t + 92 * MIN));
        assert_eq!(v.page_views, 1, "a new session");
    }

    #[test]
    fn busiest_pages_come_first() {
        let t = 100 * MIN;
        let mut idx = index(t);
        for (s, p) in [
            ("a", "/x"),
            ("b", "/y"),
            ("c", "/y"),
            ("d", "/z"),
            ("e", "/y"),
            ("f", "/z"),
        ] {
            idx.observe(&visit(s, p, None, t), at(t));
        }
        let pages: Vec<(String, u64)> = idx
            .busiest(2)
            .into_iter()
            .map(|p| (p.path, p.visitors))
            .collect();
        assert_eq!(pages, vec![("/y".into(), 3), ("/z".into(), 2)]);
    }

    #[test]
    fn a_visit_dated_long_ago_is_not_active() {
        let t = 100 * MIN;
        let mut idx = index(t);
        idx.observe(&visit("a", "/", None, t - 20 * MIN), at(t));
        assert_eq!(idx.counts(None).visitors, 0);
    }

    /// A small deterministic generator for the randomised tests.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn tallies_match_a_full_count_after_random_traffic() {
        let mut rnd = xorshift(7);
        let mut now = 1000 * MIN;
        let mut idx = index(now);
        for _ in 0..5000 {
            now += (rnd() % 2000) as i64;
            let s = format!("s{}", rnd() % 300);
            let p = format!("/p{}", rnd() % 7);
            let user = rnd().is_multiple_of(3).then_some("u");
            idx.advance(at(now));
            idx.observe(&visit(&s, &p, user, now), at(now));
            if rnd().is_multiple_of(50) {
                let active: Vec<&Visitor> = idx.active().collect();
                let registered = active.iter().filter(|v| v.user.is_some()).count() as u64;
                assert_eq!(idx.counts(None).visitors, active.len() as u64);
                assert_eq!(idx.counts(None).registered, registered);
                let on_p0 = active.iter().filter(|v| v.last_page == "/p0").count() as u64;
                assert_eq!(idx.counts(Some("/p0")).visitors, on_p0);
                assert!(
                    active
                        .iter()
                        .all(|v| v.last_update.as_millis() >= now - 10 * MIN)
                );
            }
        }
    }

    #[test]
    fn recording_a_visit_applies_the_session_rule_of_the_stores() {
        let mut rnd = xorshift(11);
        let mut now = 1000 * MIN;
        let mut idx = index(now);
        let mut reference: HashMap<String, Visitor> = HashMap::new();
        for _ in 0..3000 {
            now += (rnd() % (3 * MIN as u64)) as i64;
            // Some visits arrive dated a little in the past, out of order.
            let at_ms = now - rnd().is_multiple_of(3) as i64 * (rnd() % (2 * MIN as u64)) as i64;
            let mut v = visit(
                &format!("s{}", rnd() % 40),
                &format!("/p{}", rnd() % 5),
                rnd().is_multiple_of(2).then_some("u"),
                at_ms,
            );
            v.referrer = Some(format!("https://r{}.example/", rnd() % 3));
            v.user_agent = format!("UA {}", rnd() % 3);
            let delta = merge(std::slice::from_ref(&v)).pop().unwrap();
            let expected = match reference.get(&delta.key) {
                Some(old)
                    if old.last_update.as_millis() >= now - SESSION_IDLE.as_millis() as i64 =>
                {
                    delta.apply_to(old)
                }
                _ => delta.as_new_visitor(),
            };
            idx.advance(at(now));
            let got = idx.observe(&v, at(now));
            assert_eq!(got, expected);
            reference.insert(delta.key.clone(), expected);
        }
    }
}
