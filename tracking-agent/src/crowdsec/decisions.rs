//! The ban decisions the bouncer holds, by id, and the bans they make: a network may have
//! several decisions (two scenarios, a manual one), and stays banned, until the latest of their
//! ends, while one of them is live.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use super::lapi::{Decision, go_duration};
use crate::{
    ban::{self, Ban},
    time::{self, Timestamp},
};

/// The source of the bans the bouncer makes.
pub const SOURCE: &str = "crowdsec";

/// The longest reason kept with a ban (the engine's limit for free text).
const MAX_REASON: usize = 1024;

#[derive(Clone, Debug)]
struct Held {
    network: IpNet,
    expires: Timestamp,
    reason: String,
}

/// What the engine should do after a pull.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The bans of every network a decision of the pull touched that is still banned.
    pub set: Vec<Ban>,
    /// Networks a pull touched that no decision bans any more.
    pub lift: Vec<IpNet>,
    /// Decisions that cannot be bans here, each with why.
    pub skipped: Vec<String>,
}

/// The live ban decisions, by id and by network.
#[derive(Debug, Default)]
pub struct Decisions {
    by_id: HashMap<i64, Held>,
    by_network: HashMap<IpNet, HashSet<i64>>,
}

impl Decisions {
    /// Ban decisions held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Networks they ban.
    pub fn networks(&self) -> usize {
        self.by_network.len()
    }

    /// Starts again from a startup pull: `new` is every live decision. The changes set every
    /// network banned; the caller lifts the rest of the source.
    pub fn startup(&mut self, new: &[Decision], now: Timestamp) -> Changes {
        *self = Decisions::default();
        let mut changes = Changes::default();
        for d in new {
            self.insert(d, now, &mut changes.skipped);
        }
        changes.set = self.bans(self.by_network.keys().copied());
        changes
    }

    /// Applies a delta pull.
    pub fn delta(&mut self, new: &[Decision], deleted: &[Decision], now: Timestamp) -> Changes {
        let mut changes = Changes::default();
        let mut touched = HashSet::new();
        for d in deleted {
            if let Some(held) = self.by_id.remove(&d.id) {
                touched.insert(held.network);
                self.unlink(held.network, d.id);
            } else if let Some(net) = ban_network(d).ok().flatten() {
                // Deleted before this bouncer saw it live (it came and went between two
                // pulls), or held by an earlier run of the agent.
                touched.insert(net);
            }
        }
        for d in new {
            if let Some(net) = self.insert(d, now, &mut changes.skipped) {
                touched.insert(net);
            }
        }
        self.forget_expired(now);
        let (banned, lifted): (Vec<IpNet>, Vec<IpNet>) = touched
            .into_iter()
            .partition(|n| self.by_network.contains_key(n));
        changes.set = self.bans(banned.into_iter());
        changes.lift = lifted;
        changes.lift.sort_unstable();
        changes
    }

    /// Holds `d` if it is a ban this filter can enforce; returns its network.
    fn insert(&mut self, d: &Decision, now: Timestamp, skipped: &mut Vec<String>) -> Option<IpNet> {
        let network = match ban_network(d) {
            Ok(Some(network)) => network,
            Ok(None) => return None,
            Err(why) => {
                skipped.push(format!(
                    "decision {} ({} {}): {why}",
                    d.id, d.scope, d.value
                ));
                return None;
            }
        };
        let secs = match go_duration(&d.duration) {
            Ok(secs) => secs,
            Err(why) => {
                skipped.push(format!("decision {} ({}): {why}", d.id, d.value));
                return None;
            }
        };
        if secs <= 0.0 {
            // Already over: nothing to enforce.
            return None;
        }
        let ahead = std::time::Duration::from_secs_f64(secs);
        if ahead > time::MAX_EXPIRY_AHEAD {
            skipped.push(format!(
                "decision {} ({}): its duration {} is more than {} ahead",
                d.id,
                d.value,
                d.duration,
                time::MAX_EXPIRY_AHEAD_TEXT
            ));
            return None;
        }
        if let Some(old) = self.by_id.remove(&d.id) {
            self.unlink(old.network, d.id);
        }
        self.by_id.insert(
            d.id,
            Held {
                network,
                expires: now.plus(ahead),
                reason: reason(d),
            },
        );
        self.by_network.entry(network).or_default().insert(d.id);
        Some(network)
    }

    fn unlink(&mut self, network: IpNet, id: i64) {
        if let Some(ids) = self.by_network.get_mut(&network) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_network.remove(&network);
            }
        }
    }

    /// Drops decisions whose end passed: the kernel stopped at their expiry already, and the
    /// reaper deletes the records.
    fn forget_expired(&mut self, now: Timestamp) {
        let over: Vec<(i64, IpNet)> = self
            .by_id
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(id, h)| (*id, h.network))
            .collect();
        for (id, network) in over {
            self.by_id.remove(&id);
            self.unlink(network, id);
        }
    }

    /// The ban of each network: until the latest end of its decisions, with that one's reason.
    fn bans(&self, networks: impl Iterator<Item = IpNet>) -> Vec<Ban> {
        let mut bans: Vec<Ban> = networks
            .filter_map(|network| {
                let latest = self
                    .by_network
                    .get(&network)?
                    .iter()
                    .map(|id| &self.by_id[id])
                    .max_by(|a, b| {
                        a.expires
                            .cmp(&b.expires)
                            .then_with(|| b.reason.cmp(&a.reason))
                    })?;
                Some(Ban {
                    network,
                    source: SOURCE.to_string(),
                    reason: latest.reason.clone(),
                    created: Timestamp::now(),
                    expires: Some(latest.expires),
                })
            })
            .collect();
        bans.sort_unstable_by_key(|b| b.network);
        bans
    }
}

/// The network a decision bans: `None` for a decision of another type or scope (a captcha, a
/// country), which this filter leaves to other bouncers.
fn ban_network(d: &Decision) -> Result<Option<IpNet>, String> {
    if !d.kind.eq_ignore_ascii_case("ban") {
        return Ok(None);
    }
    let range = d.scope.eq_ignore_ascii_case("range");
    if !range && !d.scope.eq_ignore_ascii_case("ip") {
        return Ok(None);
    }
    let (network, _) = ban::parse_network(&d.value)?;
    if ban::is_everything(&network) {
        return Err(format!(
            "{network} would drop all traffic of its family; not applied"
        ));
    }
    Ok(Some(network))
}

/// The scenario, as the reason shown in `ban ls`.
fn reason(d: &Decision) -> String {
    let text = if d.scenario.is_empty() {
        &d.origin
    } else {
        &d.scenario
    };
    let mut reason: String = text.chars().filter(|c| !c.is_control()).collect();
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(id: i64, scope: &str, value: &str, duration: &str) -> Decision {
        Decision {
            id,
            kind: "ban".into(),
            scope: scope.into(),
            value: value.into(),
            duration: duration.into(),
            scenario: format!("scenario {id}"),
            origin: "cscli".into(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_startup_pull_bans_each_network_until_its_decision_ends() {
        let now = Timestamp::from_millis(1_000_000);
        let mut held = Decisions::default();
        let changes = held.startup(
            &[
                decision(1, "Ip", "192.0.2.7", "1h"),
                decision(2, "Range", "198.51.100.0/24", "4h0m0.5s"),
                decision(3, "Ip", "2001:db8::5", "30m"),
            ],
            now,
        );
        assert_eq!(held.len(), 3);
        let bans: Vec<(IpNet, i64)> = changes
            .set
            .iter()
            .map(|b| (b.network, b.expires.unwrap().as_millis() - now.as_millis()))
            .collect();
        assert_eq!(
            bans,
            vec![
                (net("192.0.2.7/32"), 3_600_000),
                (net("198.51.100.0/24"), 14_400_500),
                (net("2001:db8::5/128"), 1_800_000),
            ]
        );
        assert!(changes.set.iter().all(|b| b.source == SOURCE));
        assert!(changes.lift.is_empty() && changes.skipped.is_empty());
    }

    #[test]
    fn other_types_and_scopes_are_left_to_other_bouncers() {
        let now = Timestamp::from_millis(0);
        let mut captcha = decision(1, "Ip", "192.0.2.7", "1h");
        captcha.kind = "captcha".into();
        let country = decision(2, "Country", "FR", "1h");
        let changes = Decisions::default().startup(&[captcha, country], now);
        assert!(changes.set.is_empty() && changes.skipped.is_empty());
    }

    #[test]
    fn what_cannot_be_a_ban_is_skipped_and_named() {
        let now = Timestamp::from_millis(0);
        let changes = Decisions::default().startup(
            &[
                decision(1, "Ip", "not-an-ip", "1h"),
                decision(2, "Range", "0.0.0.0/0", "1h"),
                decision(3, "Ip", "192.0.2.1", "forever"),
                decision(4, "Ip", "192.0.2.2", "1000000h"),
                decision(5, "Ip", "192.0.2.3", "1h"),
            ],
            now,
        );
        assert_eq!(changes.set.len(), 1);
        assert_eq!(changes.skipped.len(), 4, "{:?}", changes.skipped);
        assert!(changes.skipped[0].starts_with("decision 1 (Ip not-an-ip)"));
        assert!(changes.skipped[1].contains("would drop all traffic"));
    }

    #[test]
    fn a_network_stays_banned_while_one_of_its_decisions_lives() {
        let now = Timestamp::from_millis(0);
        let mut held = Decisions::default();
        held.startup(
            &[
                decision(1, "Ip", "192.0.2.7", "1h"),
                decision(2, "Ip", "192.0.2.7", "3h"),
            ],
            now,
        );
        // The longer one goes: the ban now ends with the shorter one.
        let changes = held.delta(&[], &[decision(2, "Ip", "192.0.2.7", "-1s")], now);
        assert_eq!(changes.set.len(), 1);
        assert_eq!(changes.set[0].expires.unwrap().as_millis(), 3_600_000);
        assert!(changes.lift.is_empty());
        // The last one goes: the network is lifted.
        let changes = held.delta(&[], &[decision(1, "Ip", "192.0.2.7", "-1s")], now);
        assert!(changes.set.is_empty());
        assert_eq!(changes.lift, vec![net("192.0.2.7/32")]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_deletion_of_a_decision_never_seen_still_lifts_its_network() {
        let now = Timestamp::from_millis(0);
        let mut held = Decisions::default();
        let changes = held.delta(&[], &[decision(9, "Range", "203.0.113.0/24", "-1s")], now);
        assert_eq!(changes.lift, vec![net("203.0.113.0/24")]);
    }

    #[test]
    fn expired_decisions_are_forgotten() {
        let mut held = Decisions::default();
        held.startup(
            &[decision(1, "Ip", "192.0.2.7", "1s")],
            Timestamp::from_millis(0),
        );
        held.delta(&[], &[], Timestamp::from_millis(5_000));
        assert!(held.is_empty());
        assert_eq!(held.networks(), 0);
    }
}
