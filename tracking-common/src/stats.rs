//! Per-CPU verdict counters. Every packet the program sees is counted exactly once.

/// What happened to a packet; the index of its counter in the `STATS` map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// IP packet whose source matched no ban.
    Passed = 0,
    /// IP packet whose source matched a ban: dropped.
    Dropped = 1,
    /// Matched a ban while monitor mode was on: passed, would have been dropped.
    Monitored = 2,
    /// Matched a ban but the source is allowlisted: passed.
    Allowed = 3,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed.
    NotIp = 4,
    /// Too short for the headers it claims, or a bad IP header: passed.
    Malformed = 5,
    /// More VLAN tags than the program looks through ([`crate::layout::MAX_VLAN_TAGS`]): passed
    /// (the kernel delivers nothing behind that many either).
    TooManyTags = 6,
}

/// Number of verdicts.
pub const VERDICTS: u32 = 7;

impl Verdict {
    /// Every verdict, in counter order.
    pub const ALL: [Verdict; VERDICTS as usize] = [
        Verdict::Passed,
        Verdict::Dropped,
        Verdict::Monitored,
        Verdict::Allowed,
        Verdict::NotIp,
        Verdict::Malformed,
        Verdict::TooManyTags,
    ];

    /// Name used in the CLI, the API and the metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Dropped => "dropped",
            Verdict::Monitored => "monitored",
            Verdict::Allowed => "allowed",
            Verdict::NotIp => "not_ip",
            Verdict::Malformed => "malformed",
            Verdict::TooManyTags => "too_many_tags",
        }
    }
}

/// One counter of the `STATS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64, no padding.
unsafe impl aya::Pod for Counter {}
