//! The bans every program of the packet benchmark is given, and sources that land in each case.
//! All deterministic: the same seed gives the same lists every run.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bench::{Xorshift, lists};

/// The standard table: exact IPv4 addresses, IPv4 prefixes of mixed lengths, IPv6 addresses.
pub struct Table {
    pub exact: Vec<Ipv4Addr>,
    pub prefixes: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Addr>,
}

/// `n` distinct IPv6 addresses in 2001:db8::/32.
fn v6_addresses(n: usize, rnd: &mut Xorshift, seen: &mut HashSet<IpNet>) -> Vec<Ipv6Addr> {
    let mut v6 = Vec::with_capacity(n);
    while v6.len() < n {
        let a = Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(rnd.next()));
        if seen.insert(IpNet::from(IpAddr::V6(a))) {
            v6.push(a);
        }
    }
    v6
}

impl Table {
    /// `exact` IPv4 addresses, `prefixes` IPv4 prefixes of every length from 8 to 31 and `v6`
    /// IPv6 addresses.
    ///
    /// The prefixes are shaped like real block lists: one in a thousand is shorter than /16, the
    /// rest spread evenly over /16 to /31. Evenly over all lengths, a hundred thousand prefixes
    /// would include thousands of /8s, banning the whole IPv4 space and leaving no miss to
    /// measure.
    pub fn new(exact: usize, prefixes: usize, v6: usize) -> Table {
        let mut rnd = Xorshift::new(0x5eed);
        let mut seen = HashSet::with_capacity(exact + prefixes + v6);
        let mut ex = Vec::with_capacity(exact);
        while ex.len() < exact {
            let a = Ipv4Addr::from(rnd.next() as u32);
            if seen.insert(IpNet::from(IpAddr::V4(a))) {
                ex.push(a);
            }
        }
        let mut pre = Vec::with_capacity(prefixes);
        while pre.len() < prefixes {
            let len = if pre.len().is_multiple_of(1000) {
                8 + (rnd.next() % 8) as u8
            } else {
                16 + (rnd.next() % 16) as u8
            };
            let net = Ipv4Net::new(Ipv4Addr::from(rnd.next() as u32), len)
                .expect("valid")
                .trunc();
            if seen.insert(IpNet::V4(net)) {
                pre.push(net);
            }
        }
        let v6 = v6_addresses(v6, &mut rnd, &mut seen);
        Table {
            exact: ex,
            prefixes: pre,
            v6,
        }
    }

    /// `exact` IPv4 and `v6` IPv6 addresses, public-looking IPv4 as in a block list; no
    /// networks, which xdp-filter cannot hold.
    pub fn addresses(exact: usize, v6: usize) -> Table {
        let mut rnd = Xorshift::new(0xadd5);
        let mut seen = HashSet::new();
        Table {
            exact: lists::addresses(exact, 0x5eed),
            prefixes: Vec::new(),
            v6: v6_addresses(v6, &mut rnd, &mut seen),
        }
    }

    pub fn nets(&self) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(self.exact.len() + self.prefixes.len() + self.v6.len());
        nets.extend(self.exact.iter().map(|a| IpNet::from(IpAddr::V4(*a))));
        nets.extend(self.prefixes.iter().map(|p| IpNet::V4(*p)));
        nets.extend(self.v6.iter().map(|a| IpNet::from(IpAddr::V6(*a))));
        nets
    }

    /// Every single address, for xdp-filter.
    pub fn addrs(&self) -> Vec<IpAddr> {
        assert!(self.prefixes.is_empty(), "xdp-filter holds addresses only");
        self.exact
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.v6.iter().map(|a| IpAddr::V6(*a)))
            .collect()
    }

    /// `count` sources for the cold case, half of them banned addresses (spread over the list)
    /// and half random addresses no ban covers, in a random order; and how many are banned.
    pub fn mixed_sources(&self, count: usize, banned: &dyn Fn(IpAddr) -> bool) -> Vec<IpAddr> {
        let mut rnd = Xorshift::new(0xc01d);
        let mut out = Vec::with_capacity(count);
        let step = (self.exact.len() / (count / 2).max(1)).max(1);
        let mut hits = self.exact.iter().step_by(step).cycle();
        while out.len() < count {
            if rnd.next().is_multiple_of(2) {
                out.push(IpAddr::V4(*hits.next().expect("a ban")));
            } else {
                let a = IpAddr::V4(Ipv4Addr::from(rnd.next() as u32));
                if !banned(a) {
                    out.push(a);
                }
            }
        }
        out
    }
}

/// IPv6 bans over `k` distinct prefix lengths (128, then every `128 / k` shorter), about
/// `n / k` networks of each length (fewer where a short length has fewer networks to give),
/// none covering [`V6_NEAR_MISS`], one of them the /128 next to it.
pub struct Lengths {
    pub nets: Vec<Ipv6Net>,
    /// The lengths present, longest first.
    pub lens: Vec<u8>,
    set: HashSet<Ipv6Net>,
}

/// The near miss of the IPv6 length cases: banned by nothing, but next to a banned /128, so the
/// agent's source filter cannot turn it away and it probes every length present.
pub const V6_NEAR_MISS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0x10);

impl Lengths {
    pub fn new(n: usize, k: usize) -> Lengths {
        let lens: Vec<u8> = (0..k).map(|i| (128 - i * (128 / k)) as u8).collect();
        let miss = u128::from(V6_NEAR_MISS);
        let mut rnd = Xorshift::new(0x1e6 + k as u64);
        let mut seen = HashSet::new();
        let mut nets = vec![Ipv6Net::new(Ipv6Addr::from(miss ^ 1), 128).expect("valid")];
        seen.insert(nets[0]);
        for &len in &lens {
            // A short length has only 2^len networks: ban at most an eighth of them, so that
            // the shortest bans are not all covered by longer ones.
            let room = if len >= 16 {
                usize::MAX
            } else {
                (1usize << len) / 8
            };
            let want = (n / k).min(room).max(1);
            let mut made = 0;
            for _ in 0..want * 4 {
                if made == want {
                    break;
                }
                // Anywhere: in 2000::/3 alone, every network of /3 or shorter would cover the
                // near miss.
                let a = u128::from(rnd.next()) << 64 | u128::from(rnd.next());
                let net = Ipv6Net::new(Ipv6Addr::from(a), len).expect("valid").trunc();
                if !net.contains(&V6_NEAR_MISS) && seen.insert(net) {
                    nets.push(net);
                    made += 1;
                }
            }
        }
        let present: std::collections::BTreeSet<u8> = nets.iter().map(|n| n.prefix_len()).collect();
        assert_eq!(present.len(), k, "every length holds a ban");
        Lengths {
            nets,
            lens,
            set: seen,
        }
    }

    /// The longest ban matching `a`, by the definition.
    pub fn longest(&self, a: Ipv6Addr) -> Option<Ipv6Net> {
        self.lens
            .iter()
            .map(|&len| Ipv6Net::new(a, len).expect("valid").trunc())
            .find(|net| self.set.contains(net))
    }

    /// A source whose only match is a ban of the shortest length present: the last a
    /// longest-first lookup reaches.
    pub fn shortest_hit(&self) -> Option<Ipv6Addr> {
        let shortest = *self.lens.last()?;
        let mut rnd = Xorshift::new(0x540f7);
        self.nets
            .iter()
            .filter(|n| n.prefix_len() == shortest)
            .flat_map(|n| {
                let host_bits = 128 - u32::from(n.prefix_len());
                let base = u128::from(n.network());
                (0..4096).map(move |i: u64| (base, host_bits, i))
            })
            .map(|(base, host_bits, _)| {
                let r = u128::from(rnd.next()) << 64 | u128::from(rnd.next());
                let host = if host_bits == 0 {
                    0
                } else {
                    r & (u128::MAX >> (128 - host_bits))
                };
                Ipv6Addr::from(base | host)
            })
            .find(|a| self.longest(*a).is_some_and(|m| m.prefix_len() == shortest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_sets_hold_every_length_and_spare_the_near_miss() {
        for k in [1, 8, 32, 64, 128] {
            let set = Lengths::new(500, k);
            assert_eq!(set.lens.len(), k);
            assert_eq!(set.lens[0], 128);
            assert!(
                set.nets.iter().all(|n| !n.contains(&V6_NEAR_MISS)),
                "k = {k}"
            );
            assert_eq!(set.longest(V6_NEAR_MISS), None);
            // Its neighbour is banned, so the agent's /48 filter cannot turn the miss away.
            let neighbour = Ipv6Addr::from(u128::from(V6_NEAR_MISS) ^ 1);
            assert_eq!(set.longest(neighbour).map(|n| n.prefix_len()), Some(128));
        }
    }

    #[test]
    fn the_shortest_hit_matches_only_the_shortest_length() {
        for k in [1, 8, 32, 64, 128] {
            let set = Lengths::new(500, k);
            let hit = set.shortest_hit().expect("a hit");
            let shortest = *set.lens.last().unwrap();
            assert_eq!(set.longest(hit).map(|n| n.prefix_len()), Some(shortest));
        }
    }

    #[test]
    fn the_cold_mix_is_half_banned_and_distinct_enough() {
        let table = Table::addresses(10_000, 0);
        let banned: HashSet<IpAddr> = table.exact.iter().map(|a| IpAddr::V4(*a)).collect();
        let sources = table.mixed_sources(4096, &|a| banned.contains(&a));
        assert_eq!(sources.len(), 4096);
        let hits = sources.iter().filter(|s| banned.contains(s)).count();
        assert!((1800..2300).contains(&hits), "{hits} hits");
        let distinct: HashSet<&IpAddr> = sources.iter().collect();
        assert!(distinct.len() > 4000, "{} distinct", distinct.len());
    }
}
