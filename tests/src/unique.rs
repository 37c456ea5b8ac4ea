//! Names and subnets no other test uses: tests run in parallel threads of one process, and
//! several test processes (several engineers, or CI) may run at once on one machine.
//!
//! Everything is keyed by the process id and a per-process counter.

use std::sync::atomic::{AtomicU32, Ordering};

/// Linux interface names hold at most 15 bytes (`IFNAMSIZ` less the NUL).
pub const IFNAME_MAX: usize = 15;

/// A number no earlier call in this process returned.
pub fn next() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `<pid>-<n>` in hex: unique across processes and calls, and short enough that a one-letter
/// prefix makes an interface name (at most 6 + 1 + 8 hex digits; in practice about 10).
pub fn tag() -> String {
    tag_for(std::process::id(), next())
}

fn tag_for(pid: u32, n: u32) -> String {
    format!("{pid:x}-{n:x}")
}

/// A network namespace name: `trk-<prefix>-<pid>-<n>` (namespace names have no length limit;
/// the `trk-` start lets a person find leftovers with `ip netns list`).
pub fn netns_name(prefix: &str) -> String {
    format!("trk-{prefix}-{}-{}", std::process::id(), next())
}

/// Two bytes naming a test subnet, `10.x.y.0/24` and `fd00:x:y::/64`. Each topology has
/// namespaces of its own, so equal subnets would not clash; distinct ones make a capture or a
/// log line point at its test. `x` comes from the process, `y` from the counter.
pub fn subnet() -> (u8, u8) {
    subnet_for(std::process::id(), next())
}

fn subnet_for(pid: u32, n: u32) -> (u8, u8) {
    // 1..=250 for x: no 10.0.0.0/24, and 250 processes before x repeats.
    (((pid % 250) + 1) as u8, (n % 256) as u8)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tags_are_never_repeated_in_a_process() {
        let tags: HashSet<String> = (0..10_000).map(|_| tag()).collect();
        assert_eq!(tags.len(), 10_000);
    }

    #[test]
    fn tags_of_different_processes_differ_even_for_the_same_count() {
        // Without the separator pid 0x1 count 0x23 and pid 0x12 count 0x3 would read alike.
        assert_ne!(tag_for(0x1, 0x23), tag_for(0x12, 0x3));
        assert_ne!(tag_for(100, 7), tag_for(101, 7));
    }

    #[test]
    fn a_one_letter_prefix_and_a_tag_fit_an_interface_name() {
        // The largest pid Linux hands out is 2^22; a test process makes far fewer than 2^20
        // interfaces.
        let longest = format!("s{}", tag_for(1 << 22, (1 << 20) - 1));
        assert!(longest.len() <= IFNAME_MAX, "{longest}");
    }

    #[test]
    fn namespace_names_are_unique_and_say_whose_they_are() {
        let a = netns_name("echo");
        let b = netns_name("echo");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("trk-echo-{}-", std::process::id())));
    }

    #[test]
    fn subnets_of_one_process_differ_for_256_topologies() {
        let subnets: HashSet<(u8, u8)> = (0..256).map(|n| subnet_for(4242, n)).collect();
        assert_eq!(subnets.len(), 256);
    }

    #[test]
    fn subnets_of_neighbouring_processes_differ() {
        assert_ne!(subnet_for(4242, 0), subnet_for(4243, 0));
        assert!((0..1000).all(|pid| subnet_for(pid, 0).0 != 0));
    }
}
