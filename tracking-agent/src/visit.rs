//! Visits (one hook call each) and visitors (what the store keeps), after the seed's
//! `VisitorTrackingMiddleware`: a visitor is a session, keyed by its session key, or by address
//! and user agent when the app has none; it keeps the first referrer, the last page, the number
//! of page views, when the session started and when it was last seen. A session idle for longer
//! than [`SESSION_IDLE`] starts over.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A session idle this long starts over: page views from 1, a new referrer, a new start.
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// One page view, as the app reported it and the agent validated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visit {
    pub ip: IpAddr,
    pub session_key: Option<String>,
    pub user_agent: String,
    /// The logged-in user (id or name); `None` for a guest.
    pub user: Option<String>,
    pub referrer: Option<String>,
    /// The path viewed.
    pub url: String,
    pub at: Timestamp,
}

impl Visit {
    /// The visitor this visit belongs to: `s:<session key>`, or `a:<address>|<hash of the user
    /// agent>` for an app without sessions.
    pub fn key(&self) -> String {
        match &self.session_key {
            Some(s) => format!("s:{s}"),
            None => format!("a:{}|{:016x}", self.ip, fnv1a(self.user_agent.as_bytes())),
        }
    }
}

/// A visitor record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visitor {
    pub key: String,
    pub session_key: Option<String>,
    pub ip: IpAddr,
    pub user_agent: String,
    pub user: Option<String>,
    /// Where the session came from: the referrer of its first page view.
    pub referrer: Option<String>,
    pub last_page: String,
    pub page_views: u64,
    pub session_start: Timestamp,
    pub last_update: Timestamp,
}

/// The change a batch of visits makes to one visitor record. Both stores apply it with the same
/// rule: if `restart` is set or the stored record was last updated more than [`SESSION_IDLE`]
/// before `first_at`, the session starts over with this delta's `page_views`, `referrer` and
/// `session_start`; otherwise `page_views` are added and referrer and start are kept. The rest
/// (address, agent, user, last page) comes from the latest visit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisitorDelta {
    pub key: String,
    pub session_key: Option<String>,
    pub ip: IpAddr,
    pub user_agent: String,
    pub user: Option<String>,
    /// Referrer of the first visit of the (possibly new) session in this batch.
    pub referrer: Option<String>,
    pub last_page: String,
    pub page_views: u64,
    /// Time of the first visit of this delta's session part.
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    /// The session restarted inside the batch itself.
    pub restart: bool,
}

impl VisitorDelta {
    /// The record this delta makes when the store has none for its key (or applies a restart).
    pub fn as_new_visitor(&self) -> Visitor {
        Visitor {
            key: self.key.clone(),
            session_key: self.session_key.clone(),
            ip: self.ip,
            user_agent: self.user_agent.clone(),
            user: self.user.clone(),
            referrer: self.referrer.clone(),
            last_page: self.last_page.clone(),
            page_views: self.page_views,
            session_start: self.first_at,
            last_update: self.last_at,
        }
    }

    /// Applies the delta to an existing record, by the rule above (what the SQL of each store
    /// does; kept here as the reference both are tested against).
    pub fn apply_to(&self, old: &Visitor) -> Visitor {
        let idle = self.first_at.as_millis() - old.last_update.as_millis()
            > SESSION_IDLE.as_millis() as i64;
        if self.restart || idle {
            return self.as_new_visitor();
        }
        let latest = self.last_at >= old.last_update;
        Visitor {
            key: old.key.clone(),
            session_key: self.session_key.clone(),
            ip: if latest { self.ip } else { old.ip },
            user_agent: if latest {
                self.user_agent.clone()
            } else {
                old.user_agent.clone()
            },
            user: if latest {
                self.user.clone()
            } else {
                old.user.clone()
            },
            referrer: old.referrer.clone(),
            last_page: if latest {
                self.last_page.clone()
            } else {
                old.last_page.clone()
            },
            page_views: old.page_views + self.page_views,
            session_start: old.session_start,
            last_update: old.last_update.max(self.last_at),
        }
    }
}

/// Folds a batch of visits into one delta per visitor, in order of first appearance.
pub fn merge(visits: &[Visit]) -> Vec<VisitorDelta> {
    // Each visit's visitor, numbered in order of first appearance; a key is made once a visit
    // and kept once a visitor.
    let mut numbers: HashMap<String, usize> = HashMap::with_capacity(visits.len());
    let visitor: Vec<usize> = visits
        .iter()
        .map(|v| {
            let next = numbers.len();
            *numbers.entry(v.key()).or_insert(next)
        })
        .collect();
    let mut keys = vec![String::new(); numbers.len()];
    for (key, n) in numbers {
        keys[n] = key;
    }
    // The visits by visitor, then time; of visits of one time, in the order given.
    let mut order: Vec<usize> = (0..visits.len()).collect();
    order.sort_unstable_by_key(|&i| (visitor[i], visits[i].at, i));
    order
        .chunk_by(|&a, &b| visitor[a] == visitor[b])
        .zip(keys)
        .map(|(run, key)| {
            let vs = |j: usize| &visits[run[j]];
            // The last session restart inside the batch, if any.
            let start = (1..run.len())
                .rev()
                .find(|&j| {
                    vs(j).at.as_millis() - vs(j - 1).at.as_millis()
                        > SESSION_IDLE.as_millis() as i64
                })
                .unwrap_or(0);
            let first = vs(start);
            let last = vs(run.len() - 1);
            VisitorDelta {
                key,
                session_key: last.session_key.clone(),
                ip: last.ip,
                user_agent: last.user_agent.clone(),
                user: last.user.clone(),
                referrer: first.referrer.clone(),
                last_page: last.url.clone(),
                page_views: (run.len() - start) as u64,
                first_at: first.at,
                last_at: last.at,
                restart: start > 0,
            }
        })
        .collect()
}

/// A user-agent rule: visits whose user agent contains the keyword (case-insensitively) are
/// not tracked (the seed's `UntrackedUserAgent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UaRule {
    pub keyword: String,
    #[serde(default)]
    pub note: String,
    pub created: Timestamp,
    /// Who added it: `cli` for rules added one by one, `bots` for the imported bot list
    /// (`ua ls --source`, `ua rm --source`).
    #[serde(default = "ua_source_cli")]
    pub source: String,
}

/// The source of user-agent rules added by hand.
pub const UA_SOURCE_CLI: &str = "cli";

fn ua_source_cli() -> String {
    UA_SOURCE_CLI.to_string()
}

/// FNV-1a, 64 bits: a stable hash for visitor keys (std's hasher is not stable across builds).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(session: Option<&str>, url: &str, at_secs: i64) -> Visit {
        Visit {
            ip: "192.0.2.1".parse().unwrap(),
            session_key: session.map(String::from),
            user_agent: "Mozilla/5.0".into(),
            user: None,
            referrer: Some(format!("https://ref.example/{url}")),
            url: url.into(),
            at: Timestamp::from_millis(at_secs * 1000),
        }
    }

    #[test]
    fn visitors_are_keyed_by_session_or_by_address_and_agent() {
        assert_eq!(visit(Some("abc"), "/", 0).key(), "s:abc");
        let anon = visit(None, "/", 0);
        assert!(anon.key().starts_with("a:192.0.2.1|"));
        let mut other_agent = anon.clone();
        other_agent.user_agent = "curl/8".into();
        assert_ne!(anon.key(), other_agent.key());
    }

    #[test]
    fn a_batch_folds_into_one_delta_per_visitor() {
        let deltas = merge(&[
            visit(Some("a"), "/1", 10),
            visit(Some("b"), "/x", 11),
            visit(Some("a"), "/2", 12),
        ]);
        assert_eq!(deltas.len(), 2);
        let a = &deltas[0];
        assert_eq!(
            (
                a.page_views,
                a.last_page.as_str(),
                a.first_at.as_millis(),
                a.last_at.as_millis()
            ),
            (2, "/2", 10_000, 12_000)
        );
        assert_eq!(a.referrer.as_deref(), Some("https://ref.example//1"));
        assert!(!a.restart);
    }

    #[test]
    fn an_idle_gap_inside_a_batch_restarts_the_session() {
        let deltas = merge(&[
            visit(Some("a"), "/1", 0),
            visit(Some("a"), "/2", 10),
            visit(Some("a"), "/3", 10 + 3601),
        ]);
        let a = &deltas[0];
        assert!(a.restart);
        assert_eq!((a.page_views, a.first_at.as_millis()), (1, 3_611_000));
        assert_eq!(a.referrer.as_deref(), Some("https://ref.example//3"));
    }

    #[test]
    fn applying_a_delta_adds_views_or_starts_over_after_an_hour_idle() {
        let old = merge(&[visit(Some("a"), "/1", 0)])[0].as_new_visitor();
        let soon = merge(&[visit(Some("a"), "/2", 600)])[0].apply_to(&old);
        assert_eq!(
            (
                soon.page_views,
                soon.last_page.as_str(),
                soon.session_start.as_millis()
            ),
            (2, "/2", 0)
        );
        assert_eq!(soon.referrer, old.referrer);
        let later = merge(&[visit(Some("a"), "/3", 600 + 3601)])[0].apply_to(&soon);
        assert_eq!(
            (later.page_views, later.session_start.as_millis()),
            (1, 4_201_000)
        );
        assert_eq!(later.referrer.as_deref(), Some("https://ref.example//3"));
    }
}
