//! Conversion between wall-clock expiries (what operators and the store speak) and the
//! `CLOCK_MONOTONIC` nanoseconds the program compares against (`bpf_ktime_get_coarse_ns`).
//!
//! The deadline field has 63 bits: about 292 years of nanoseconds since boot. The agent refuses
//! expiries more than [`crate::time::MAX_EXPIRY_AHEAD`] ahead, so a deadline it writes always
//! fits; an expiry from elsewhere that does not (a record another tool wrote into the store) is
//! held as the latest deadline the field can hold, and compared as such, so it neither spills
//! into the flag bit above nor looks like drift at every reconcile. No conversion here can
//! overflow.

use tracking_common::layout::SLOT_DEADLINE;

use crate::time::Timestamp;

/// A pairing of the two clocks taken at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Clock;

impl Clock {
    pub fn new() -> Self {
        Clock
    }

    fn now() -> (Timestamp, u64) {
        (Timestamp::now(), Self::now_mono())
    }

    /// `CLOCK_MONOTONIC` now, in nanoseconds.
    pub fn now_mono() -> u64 {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// The monotonic deadline for a wall-clock expiry; 0 for none. A time already past maps to
    /// 1, which the program treats as expired.
    pub fn to_mono(&self, expires: Option<Timestamp>) -> u64 {
        if expires.is_none() {
            return 0;
        }
        self.snapshot().to_mono(expires)
    }

    /// The wall-clock time of a monotonic deadline; `None` for 0 (never).
    pub fn to_wall(&self, expires_ns: u64) -> Option<Timestamp> {
        if expires_ns == 0 {
            return None;
        }
        self.snapshot().to_wall(expires_ns)
    }
}

impl Clock {
    /// Both clocks read once, for converting many times in a batch.
    pub fn snapshot(&self) -> Snapshot {
        let (wall, mono) = Self::now();
        Snapshot { wall, mono }
    }
}

/// The two clocks at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    wall: Timestamp,
    mono: u64,
}

impl Snapshot {
    /// The snapshot of a given pair of readings, for tests.
    #[cfg(test)]
    pub fn at(wall: Timestamp, mono: u64) -> Snapshot {
        Snapshot { wall, mono }
    }

    /// Like [`Clock::to_mono`], as of this snapshot: never more than the deadline bits hold.
    pub fn to_mono(&self, expires: Option<Timestamp>) -> u64 {
        let Some(expires) = expires else { return 0 };
        let ahead_ms = expires.as_millis().saturating_sub(self.wall.as_millis());
        if ahead_ms <= 0 {
            return 1;
        }
        let ahead_ns = (ahead_ms as u64).saturating_mul(1_000_000);
        self.mono.saturating_add(ahead_ns).min(SLOT_DEADLINE)
    }

    /// Like [`Clock::to_wall`], as of this snapshot.
    pub fn to_wall(&self, expires_ns: u64) -> Option<Timestamp> {
        if expires_ns == 0 {
            return None;
        }
        let delta_ms = (expires_ns as i128 - self.mono as i128) / 1_000_000;
        let wall = (self.wall.as_millis() as i128).saturating_add(delta_ms);
        Some(Timestamp::from_millis(
            wall.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        ))
    }

    /// `CLOCK_MONOTONIC` at this snapshot, in nanoseconds.
    pub fn mono(&self) -> u64 {
        self.mono
    }

    /// Whether the kernel's `deadline_ns` is what `expires` converts to, within a second: the
    /// comparison is made in the program's clock, so an expiry held at the field's limit
    /// compares equal to itself.
    pub fn same_deadline(&self, deadline_ns: u64, expires: Option<Timestamp>) -> bool {
        let wanted = self.to_mono(expires);
        match (deadline_ns, wanted) {
            (0, 0) => true,
            (0, _) | (_, 0) => false,
            (held, wanted) => held.abs_diff(wanted) < 1_000_000_000,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            wall: Timestamp::from_millis(1_800_000_000_000),
            mono: 5_000_000_000_000,
        }
    }

    #[test]
    fn a_far_expiry_is_held_at_the_fields_limit_and_never_spills_into_the_flag_bit() {
        let now = snapshot();
        for years in [99u64, 293, 600, 10_000] {
            let expires = now
                .wall
                .plus(std::time::Duration::from_secs(years * 365 * 86_400));
            let ns = now.to_mono(Some(expires));
            assert!(ns <= SLOT_DEADLINE, "{years} years: {ns:#x}");
            assert!(ns > now.mono, "{years} years is in the future");
            assert!(now.same_deadline(ns, Some(expires)), "{years} years");
        }
        let max = Timestamp::from_millis(i64::MAX);
        assert_eq!(now.to_mono(Some(max)), SLOT_DEADLINE);
        assert!(now.to_wall(SLOT_DEADLINE).unwrap() > now.wall);
    }

    #[test]
    fn expiries_in_the_past_are_expired_and_none_is_never() {
        let now = snapshot();
        assert_eq!(now.to_mono(None), 0);
        assert_eq!(now.to_mono(Some(Timestamp::from_millis(i64::MIN))), 1);
        assert_eq!(now.to_mono(Some(now.wall)), 1);
        assert!(now.same_deadline(0, None));
        assert!(!now.same_deadline(0, Some(now.wall.plus(std::time::Duration::from_secs(9)))));
    }

    #[test]
    fn a_deadline_reads_back_as_the_wall_clock_time_it_was_made_from() {
        let now = snapshot();
        let expires = now.wall.plus(std::time::Duration::from_secs(3600));
        let ns = now.to_mono(Some(expires));
        assert_eq!(now.to_wall(ns), Some(expires));
    }
}
