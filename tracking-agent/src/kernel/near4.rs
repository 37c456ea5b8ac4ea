//! The IPv4 bans again, arranged to answer "is anything else still near here?" when bans go:
//! exact bans as sorted addresses, shorter ones ordered by address. Removing a ban then clears
//! just the filter and length bits nothing else needs, instead of rebuilding them from a scan
//! of the whole table, which at a million bans would follow every batch that removes one.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

#[derive(Default)]
pub struct Near4 {
    /// The /32 bans, sorted.
    exact: Vec<u32>,
    /// The shorter bans, as (network address, prefix length).
    prefixes: BTreeSet<(u32, u8)>,
}

impl Near4 {
    /// The index of `nets`, in any order.
    pub fn new(nets: impl Iterator<Item = (u32, u8)>) -> Self {
        let mut near = Near4::default();
        for (addr, len) in nets {
            if len == 32 {
                near.exact.push(addr);
            } else {
                near.prefixes.insert((addr, len));
            }
        }
        near.exact.sort_unstable();
        near
    }

    /// Brings the index up to date with a batch: `added` in any order.
    pub fn update(&mut self, mut added: Vec<Ipv4Net>, removed: &[Ipv4Net]) {
        let mut gone: Vec<u32> = removed
            .iter()
            .filter(|n| n.prefix_len() == 32)
            .map(|n| n.addr().to_bits())
            .collect();
        if !gone.is_empty() {
            gone.sort_unstable();
            // Both sorted: one walk, not a search per address.
            let mut next = gone.iter().peekable();
            self.exact.retain(|a| {
                while next.next_if(|g| **g < *a).is_some() {}
                next.peek() != Some(&a)
            });
        }
        for n in removed.iter().filter(|n| n.prefix_len() < 32) {
            self.prefixes.remove(&(n.addr().to_bits(), n.prefix_len()));
        }
        let mut exact: Vec<u32> = Vec::new();
        added.retain(|n| {
            if n.prefix_len() == 32 {
                exact.push(n.addr().to_bits());
                false
            } else {
                true
            }
        });
        for n in added {
            self.prefixes.insert((n.addr().to_bits(), n.prefix_len()));
        }
        if !exact.is_empty() {
            exact.sort_unstable();
            let old = std::mem::take(&mut self.exact);
            self.exact = merge_sorted(old, exact);
        }
    }

    /// Whether an exact IPv4 ban lies in `first..=last`.
    pub fn exact_in(&self, first: u32, last: u32) -> bool {
        let i = self.exact.partition_point(|a| *a < first);
        self.exact.get(i).is_some_and(|a| *a <= last)
    }

    /// Whether an IPv4 ban shorter than /32 overlaps the aligned range of `2^(32 - len)`
    /// addresses from `first`: one inside it, or one containing it.
    pub fn prefix_overlaps(&self, first: u32, len: u8) -> bool {
        let last = first | (u32::MAX >> len);
        if self
            .prefixes
            .range((first, 0)..=(last, 32))
            .next()
            .is_some()
        {
            return true;
        }
        (0..len).any(|l| self.prefixes.contains(&(first & !low_bits(l), l)))
    }

    /// Whether an IPv4 ban of length `len` overlaps the /16 `first`.
    pub fn length_in_slash16(&self, first: u32, len: u8) -> bool {
        if len == 32 {
            return self.exact_in(first, first | 0xffff);
        }
        if len < 16 {
            return self.prefixes.contains(&(first & !low_bits(len), len));
        }
        self.prefixes
            .range((first, 0)..=(first | 0xffff, 32))
            .any(|(_, l)| *l == len)
    }
}

/// The host bits of a /`len`.
fn low_bits(len: u8) -> u32 {
    u32::MAX.checked_shr(len as u32).unwrap_or(0)
}

/// Two sorted vectors as one.
fn merge_sorted(a: Vec<u32>, b: Vec<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn it_knows_what_is_near_after_adds_and_removes() {
        let mut near = Near4::default();
        near.update(
            vec![net("10.0.0.5/32"), net("10.0.1.0/24"), net("10.9.0.0/16")],
            &[],
        );
        assert!(near.exact_in(0x0a00_0000, 0x0a00_00ff));
        assert!(!near.exact_in(0x0a00_0100, 0x0a00_01ff));
        assert!(near.prefix_overlaps(0x0a00_0100, 24));
        assert!(near.prefix_overlaps(0x0a09_0500, 24), "inside the /16");
        assert!(near.length_in_slash16(0x0a09_0000, 16));
        assert!(!near.length_in_slash16(0x0a09_0000, 24));
        near.update(vec![], &[net("10.0.0.5/32"), net("10.9.0.0/16")]);
        assert!(!near.exact_in(0x0a00_0000, 0x0a00_00ff));
        assert!(!near.prefix_overlaps(0x0a09_0500, 24));
        assert!(near.prefix_overlaps(0x0a00_0100, 24));
    }
}
