//! The allowlist, arranged to answer "does any allowlisted network overlap this ban?" with a
//! few hash lookups: either an allowlisted network contains the ban (some truncation of the ban
//! is allowlisted), or the ban contains one (the ban is a truncation of an allowlisted network).
//! Only a ban that overlaps the allowlist makes the program consult it ([`SLOT_CHECK_ALLOW`]).

use std::collections::HashSet;

use ipnet::IpNet;
use tracking_common::layout::SLOT_CHECK_ALLOW;

#[derive(Default)]
pub struct AllowIndex {
    exact: HashSet<IpNet>,
    truncations: HashSet<IpNet>,
    lengths: Vec<u8>,
}

impl AllowIndex {
    pub fn new(nets: &[IpNet]) -> Self {
        let mut index = AllowIndex::default();
        for net in nets {
            index.exact.insert(*net);
            for len in 0..=net.prefix_len() {
                index.truncations.insert(truncate(net, len));
            }
            if !index.lengths.contains(&net.prefix_len()) {
                index.lengths.push(net.prefix_len());
            }
        }
        index
    }

    /// [`SLOT_CHECK_ALLOW`] if an allowlisted network overlaps `net`, else 0.
    pub fn flag(&self, net: &IpNet) -> u64 {
        if self.exact.is_empty() {
            return 0;
        }
        let contains_allowed = self.truncations.contains(net);
        let inside_allowed = self
            .lengths
            .iter()
            .any(|&len| len <= net.prefix_len() && self.exact.contains(&truncate(net, len)));
        if contains_allowed || inside_allowed {
            SLOT_CHECK_ALLOW
        } else {
            0
        }
    }
}

fn truncate(net: &IpNet, len: u8) -> IpNet {
    IpNet::new(net.addr(), len)
        .expect("shorter than the network")
        .trunc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_ban_is_flagged_when_it_contains_or_lies_inside_an_allowed_network() {
        let index = AllowIndex::new(&[net("10.1.2.0/24"), net("2001:db8::/32")]);
        assert_eq!(index.flag(&net("10.1.0.0/16")), SLOT_CHECK_ALLOW);
        assert_eq!(index.flag(&net("10.1.2.7/32")), SLOT_CHECK_ALLOW);
        assert_eq!(index.flag(&net("10.1.3.0/24")), 0);
        assert_eq!(index.flag(&net("2001:db8:1::/48")), SLOT_CHECK_ALLOW);
        assert_eq!(index.flag(&net("2001:db9::/32")), 0);
        assert_eq!(AllowIndex::new(&[]).flag(&net("0.0.0.0/0")), 0);
    }
}
