//! The read side of the program's maps: what the kernel holds and what the program would
//! decide, answered from the shared mappings without waiting for the writer ([`super::Maps`]).
//!
//! "Enforced" is read here, never assumed: a ban is enforced when its entry is held, every
//! derived bit that makes the program look for it is set, and the program's own clock has not
//! passed its deadline.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracking_common::{
    hash::{filter_bit6, filter_pos4},
    layout::{
        FILTER4_EXACT, FILTER4_PREFIX, FLAG_MONITOR, FLAG_V6_ALL, SLOT_DEADLINE, config, len_bit4,
        len_bit6, tag_len, tag_slot,
    },
};

use super::{
    clock::{Clock, Snapshot},
    derived::{covered4, covered6},
    mmap::Words,
    overflow::Overflow,
    table::{Table, V4, V6, split6},
};
use crate::{ban::Effective, time::Timestamp};

/// A ban as the kernel holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBan {
    /// Index of its state in `SLOTS`.
    pub slot: u32,
    /// When the program stops honouring it (`None`: never).
    pub expires: Option<Timestamp>,
    /// The raw deadline in the program's clock (0: never), for comparisons that must not go
    /// through the wall clock.
    pub deadline_ns: u64,
    /// Packets it matched.
    pub hits: u64,
    /// Whether the program drops its sources now (the allowlist and monitor mode aside): its
    /// derived bits are all set and its deadline has not passed.
    pub enforced: bool,
}

/// Mapped views of every table, filter and configuration map, shared by the writer and by
/// lookups that must not wait for it (the visit hook's `banned`, listings).
pub struct Tables {
    pub(super) config: Words,
    pub(super) v4_filter: Words,
    pub(super) v4_lens: Words,
    pub(super) v6_filter: Words,
    pub(super) v4: Table<V4>,
    pub(super) v6: Table<V6>,
    pub(super) slots: Words,
    pub(super) allow4: Table<V4>,
    pub(super) allow6: Table<V6>,
    pub(super) overflow: Overflow,
    /// Capacity of each family, as configured; the tables are sized for it at half load.
    pub(super) max_v4: usize,
    pub(super) max_v6: usize,
    /// Bans held of each family, tables and overflow maps together; kept by the writer.
    pub(super) held_v4: AtomicUsize,
    pub(super) held_v6: AtomicUsize,
    /// Of those, in the overflow maps.
    pub(super) overflow_v4: AtomicUsize,
    pub(super) overflow_v6: AtomicUsize,
    pub(super) clock: Clock,
}

/// The kernel tables cannot hold a change: how many bans of which family it needs and how
/// many fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverCapacity {
    pub family: &'static str,
    pub held: usize,
    pub needed: usize,
    pub capacity: usize,
}

impl std::fmt::Display for OverCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flag = if self.family == "IPv4" {
            "--max-bans-v4"
        } else {
            "--max-bans-v6"
        };
        write!(
            f,
            "the kernel tables hold at most {} {} bans and this change needs {} ({} held now); \
             nothing was changed. Start the agent with a larger {flag} to hold more",
            group(self.capacity),
            self.family,
            group(self.needed),
            group(self.held),
        )
    }
}

/// `1234567` as `1,234,567`.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Tables {
    /// Number of IPv4 and IPv6 bans held.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.held_v4.load(Ordering::Acquire),
            self.held_v6.load(Ordering::Acquire),
        )
    }

    /// Of those, how many are in the overflow maps.
    pub fn overflow_counts(&self) -> (usize, usize) {
        (
            self.overflow_v4.load(Ordering::Acquire),
            self.overflow_v6.load(Ordering::Acquire),
        )
    }

    /// Configured capacity of each family.
    pub fn capacity(&self) -> (usize, usize) {
        (self.max_v4, self.max_v6)
    }

    /// The slot of `net`, if held.
    pub fn slot_of(&self, net: &IpNet) -> Option<u32> {
        let (found, overflowing) = match net {
            IpNet::V4(n) => (self.v4.get(n), self.overflow_v4.load(Ordering::Acquire) > 0),
            IpNet::V6(n) => (self.v6.get(n), self.overflow_v6.load(Ordering::Acquire) > 0),
        };
        if found.is_some() || !overflowing {
            return found;
        }
        self.overflow.get(net).unwrap_or_else(|e| {
            tracing::error!("reading the overflow map: {e}");
            None
        })
    }

    /// The ban held for `net`, if any, with whether the program enforces it.
    pub fn get(&self, net: &IpNet) -> Option<KernelBan> {
        let slot = self.slot_of(net)?;
        Some(self.ban_as_of(net, slot, &self.clock.snapshot()))
    }

    fn ban_as_of(&self, net: &IpNet, slot: u32, now: &Snapshot) -> KernelBan {
        let deadline_ns = self.slots[slot as usize * 2].load(Ordering::Acquire) & SLOT_DEADLINE;
        let hits = self.slots[slot as usize * 2 + 1].load(Ordering::Relaxed);
        let live = deadline_ns == 0 || now.mono() < deadline_ns;
        KernelBan {
            slot,
            expires: now.to_wall(deadline_ns),
            deadline_ns,
            hits,
            enforced: live && self.covered(net),
        }
    }

    /// Whether every derived bit that makes the program look for `net` is set.
    pub fn covered(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => covered4(
                &self.v4_filter,
                &self.v4_lens,
                n.addr().to_bits(),
                n.prefix_len(),
            ),
            IpNet::V6(n) => {
                let (w, bit) = len_bit6(n.prefix_len());
                let lens = self.config[config::V6_LENS as usize + w].load(Ordering::Acquire);
                lens & bit != 0 && covered6(&self.v6_filter, self.v6_filter_off(), n)
            }
        }
    }

    /// Every ban held.
    pub fn bans(&self) -> Vec<(IpNet, KernelBan)> {
        let now = self.clock.snapshot();
        let (v4, v6) = self.counts();
        let mut out = Vec::with_capacity(v4 + v6);
        for w in self.v4.words() {
            let word = w.load(Ordering::Relaxed);
            let t = (word >> 32) as u32;
            if t != 0 {
                let net = Ipv4Net::new(std::net::Ipv4Addr::from_bits(word as u32), tag_len(t))
                    .expect("a stored prefix length");
                let net = IpNet::V4(net);
                out.push((net, self.ban_as_of(&net, tag_slot(t), &now)));
            }
        }
        for (n, slot) in self.v6.iter() {
            let net = IpNet::V6(n);
            out.push((net, self.ban_as_of(&net, slot, &now)));
        }
        let (o4, o6) = self.overflow_counts();
        if o4 + o6 > 0 {
            match self.overflow.entries() {
                Ok(entries) => {
                    for (net, slot) in entries {
                        out.push((net, self.ban_as_of(&net, slot, &now)));
                    }
                }
                Err(e) => tracing::error!("reading the overflow maps: {e}"),
            }
        }
        out
    }

    /// Checks that the tables can hold the bans left after `effects`: each network that becomes
    /// banned and is not held takes one more, each held one that is unbanned frees one.
    pub fn admit(&self, effects: &[(IpNet, Effective)]) -> Result<(), OverCapacity> {
        let unbanned: std::collections::HashSet<IpNet> = effects
            .iter()
            .filter(|(_, e)| *e == Effective::Unbanned)
            .map(|(n, _)| *n)
            .collect();
        let mut change = [0isize; 2];
        for (net, effect) in effects {
            let family = usize::from(net.addr().is_ipv6());
            let held = self.slot_of(net).is_some();
            match effect {
                Effective::Unbanned if held => change[family] -= 1,
                Effective::Banned { .. } if !held || unbanned.contains(net) => change[family] += 1,
                _ => {}
            }
        }
        let (held4, held6) = self.counts();
        for (family, held, capacity, change) in [
            ("IPv4", held4, self.max_v4, change[0]),
            ("IPv6", held6, self.max_v6, change[1]),
        ] {
            let needed = held.saturating_add_signed(change);
            if change > 0 && needed > capacity {
                return Err(OverCapacity {
                    family,
                    held,
                    needed,
                    capacity,
                });
            }
        }
        Ok(())
    }

    /// The allowlist held.
    pub fn allowlist(&self) -> Vec<IpNet> {
        let v4 = self.allow4.iter().map(|(n, _)| IpNet::V4(n));
        v4.chain(self.allow6.iter().map(|(n, _)| IpNet::V6(n)))
            .collect()
    }

    pub fn monitor(&self) -> bool {
        self.config[config::FLAGS as usize].load(Ordering::Acquire) & FLAG_MONITOR != 0
    }

    /// Whether the IPv6 filter is off because of a very wide IPv6 ban.
    pub fn v6_filter_off(&self) -> bool {
        self.config[config::FLAGS as usize].load(Ordering::Acquire) & FLAG_V6_ALL != 0
    }

    /// The ban that would drop a packet from `ip` right now, as the program decides it: the
    /// longest live ban matching it, unless the allowlist covers it. An IPv4-mapped IPv6
    /// address counts as its IPv4 address, as in the program. Monitor mode is not considered
    /// (the answer is what is banned, not what is dropped).
    pub fn banned(&self, ip: IpAddr) -> Option<(IpNet, KernelBan)> {
        let ip = ip.to_canonical();
        let now = Clock::now_mono();
        let live = |slot: u32| {
            let deadline = self.slots[slot as usize * 2].load(Ordering::Acquire) & SLOT_DEADLINE;
            deadline == 0 || now < deadline
        };
        let found = match ip {
            IpAddr::V4(a) => {
                // As the program: the /32 only behind the exact bit, shorter lengths only
                // behind the prefix bit, those present in the /16.
                let bits = a.to_bits();
                let (word, shift) = filter_pos4(bits);
                let near = self.v4_filter[word as usize].load(Ordering::Acquire) >> shift;
                let mut lens = self.v4_lens[(bits >> 16) as usize].load(Ordering::Acquire);
                if near & FILTER4_EXACT == 0 {
                    lens &= !len_bit4(32);
                }
                if near & FILTER4_PREFIX == 0 {
                    lens &= len_bit4(32);
                }
                lengths(&[lens], 32).find_map(|len| {
                    let net = IpNet::V4(Ipv4Net::new(a, len).expect("valid length").trunc());
                    self.slot_of(&net).filter(|s| live(*s)).map(|s| (net, s))
                })
            }
            IpAddr::V6(a) => {
                if !self.candidate(ip) {
                    return None;
                }
                let words = self.words(config::V6_LENS);
                lengths(&words, 128).find_map(|len| {
                    let net = IpNet::V6(Ipv6Net::new(a, len).expect("valid length").trunc());
                    self.slot_of(&net).filter(|s| live(*s)).map(|s| (net, s))
                })
            }
        }?;
        if self.allowlisted(ip) {
            return None;
        }
        let ban = self.ban_as_of(&found.0, found.1, &self.clock.snapshot());
        Some((found.0, ban))
    }

    /// Whether the source filter lets `ip` through to the table probes (some ban is near it).
    pub fn candidate(&self, ip: IpAddr) -> bool {
        let (filter, bit) = match ip.to_canonical() {
            IpAddr::V4(a) => {
                let (word, shift) = filter_pos4(a.to_bits());
                let bits = self.v4_filter[word as usize].load(Ordering::Acquire) >> shift;
                return bits & (FILTER4_EXACT | FILTER4_PREFIX) != 0;
            }
            IpAddr::V6(a) => {
                if self.v6_filter_off() {
                    return true;
                }
                (&self.v6_filter, filter_bit6(split6(a).0))
            }
        };
        filter[bit as usize / 64].load(Ordering::Acquire) >> (bit % 64) & 1 == 1
    }

    /// Whether `ip` is inside an allowlisted network.
    pub fn allowlisted(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let lens = self.config[config::ALLOW4_LENS as usize].load(Ordering::Acquire);
                lengths(&[lens], 32).any(|len| {
                    self.allow4
                        .get(&Ipv4Net::new(a, len).expect("valid").trunc())
                        .is_some()
                })
            }
            IpAddr::V6(a) => {
                let words = self.words(config::ALLOW6_LENS);
                lengths(&words, 128).any(|len| {
                    self.allow6
                        .get(&Ipv6Net::new(a, len).expect("valid").trunc())
                        .is_some()
                })
            }
        }
    }

    fn words(&self, first: u32) -> [u64; 3] {
        let w = |i: u32| self.config[(first + i) as usize].load(Ordering::Acquire);
        [w(0), w(1), w(2)]
    }
}

impl Tables {
    /// The effects that make the tables hold exactly `want` (the store's live bans, with their
    /// expiries): what is missing, what has another deadline, and what the store no longer
    /// has. Deadlines are compared in the program's clock.
    pub fn drift(&self, want: &[(IpNet, Option<Timestamp>)]) -> Vec<(IpNet, Effective)> {
        let have: HashMap<IpNet, u64> = self
            .bans()
            .into_iter()
            .map(|(n, k)| (n, k.deadline_ns))
            .collect();
        drift(want, &have, &self.clock.snapshot())
    }

    /// Whether some held ban misses derived bits (and so is not looked for).
    pub fn uncovered(&self) -> usize {
        self.bans()
            .iter()
            .filter(|(net, _)| !self.covered(net))
            .count()
    }
}

/// See [`Tables::drift`]; `have` maps held networks to their raw deadlines.
fn drift(
    want: &[(IpNet, Option<Timestamp>)],
    have: &HashMap<IpNet, u64>,
    now: &Snapshot,
) -> Vec<(IpNet, Effective)> {
    let mut effects = Vec::new();
    let mut wanted = HashSet::with_capacity(want.len());
    for (net, expires) in want {
        wanted.insert(*net);
        match have.get(net) {
            Some(held) if now.same_deadline(*held, *expires) => {}
            _ => effects.push((*net, Effective::Banned { expires: *expires })),
        }
    }
    effects.extend(
        have.keys()
            .filter(|n| !wanted.contains(n))
            .map(|n| (*n, Effective::Unbanned)),
    );
    effects
}

/// Live bans with their expiries, as the store gives them.
pub type Wanted = Vec<(IpNet, Option<Timestamp>)>;

/// Of `want` (the store's live bans), the ones tables of `capacity` bans a family hold when
/// there are more: the widest networks first, then by address, the same on every host with the
/// same capacity. Returns them and how many of each family were left out.
pub fn within_capacity(mut want: Wanted, capacity: (usize, usize)) -> (Wanted, (usize, usize)) {
    let v4 = want.iter().filter(|(n, _)| n.addr().is_ipv4()).count();
    let v6 = want.len() - v4;
    if v4 <= capacity.0 && v6 <= capacity.1 {
        return (want, (0, 0));
    }
    want.sort_unstable_by_key(|(n, _)| (n.addr().is_ipv6(), n.prefix_len(), n.network()));
    let (mut kept4, mut kept6) = (0, 0);
    want.retain(|(n, _)| {
        let (kept, cap) = if n.addr().is_ipv4() {
            (&mut kept4, capacity.0)
        } else {
            (&mut kept6, capacity.1)
        };
        *kept += 1;
        *kept <= cap
    });
    (
        want,
        (v4.saturating_sub(capacity.0), v6.saturating_sub(capacity.1)),
    )
}

/// Prefix lengths present in a length mask (bit `width - len`, counted across the words),
/// longest first: the order the program probes them in.
pub(super) fn lengths(words: &[u64], width: u32) -> impl Iterator<Item = u8> + '_ {
    words.iter().enumerate().flat_map(move |(w, &word)| {
        (0..64u32)
            .filter(move |b| word >> b & 1 == 1)
            .map(move |b| (width - (w as u32 * 64 + b)) as u8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn drift_adds_missing_updates_changed_and_removes_stale() {
        let now = Snapshot::at(Timestamp::from_millis(1_000_000), 5_000_000_000);
        let t = Some(Timestamp::from_millis(10_000_000));
        let want = vec![
            (net("10.0.0.1/32"), None),
            (net("10.0.0.2/32"), t),
            (net("10.0.0.3/32"), None),
            (net("10.0.0.5/32"), t),
        ];
        let have: HashMap<_, _> = [
            (net("10.0.0.2/32"), 0),
            (net("10.0.0.3/32"), 0),
            (net("10.0.0.4/32"), 0),
            (net("10.0.0.5/32"), now.to_mono(t)),
        ]
        .into();
        let mut effects = drift(&want, &have, &now);
        effects.sort_by_key(|e| e.0);
        assert_eq!(
            effects,
            vec![
                (net("10.0.0.1/32"), Effective::Banned { expires: None }),
                (net("10.0.0.2/32"), Effective::Banned { expires: t }),
                (net("10.0.0.4/32"), Effective::Unbanned),
            ]
        );
    }

    #[test]
    fn over_capacity_the_widest_networks_are_kept_then_the_lowest_addresses() {
        let want = vec![
            (net("10.0.0.9/32"), None),
            (net("10.0.0.1/32"), None),
            (net("10.1.0.0/16"), None),
            (net("2001:db8::1/128"), None),
            (net("10.0.0.0/24"), None),
        ];
        let (kept, left_out) = within_capacity(want.clone(), (3, 5));
        let kept: Vec<IpNet> = kept.into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            kept,
            [
                net("10.1.0.0/16"),
                net("10.0.0.0/24"),
                net("10.0.0.1/32"),
                net("2001:db8::1/128")
            ]
        );
        assert_eq!(left_out, (1, 0));
        assert_eq!(within_capacity(want.clone(), (4, 1)).0, want, "all fit");
    }

    #[test]
    fn counts_are_written_in_groups_of_three() {
        assert_eq!(group(0), "0");
        assert_eq!(group(4096), "4,096");
        assert_eq!(group(1_048_576), "1,048,576");
    }
}
