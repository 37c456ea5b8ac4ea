//! Conversion between wall-clock expiries (what operators and the store speak) and the
//! `CLOCK_MONOTONIC` nanoseconds the program compares against (`bpf_ktime_get_coarse_ns`).

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
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
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
    /// Like [`Clock::to_mono`], as of this snapshot.
    pub fn to_mono(&self, expires: Option<Timestamp>) -> u64 {
        let Some(expires) = expires else { return 0 };
        let ahead_ms = expires.as_millis() - self.wall.as_millis();
        if ahead_ms <= 0 {
            1
        } else {
            self.mono.saturating_add(ahead_ms as u64 * 1_000_000)
        }
    }

    /// Like [`Clock::to_wall`], as of this snapshot.
    pub fn to_wall(&self, expires_ns: u64) -> Option<Timestamp> {
        if expires_ns == 0 {
            return None;
        }
        let delta_ms = (expires_ns as i128 - self.mono as i128) / 1_000_000;
        Some(Timestamp::from_millis(
            self.wall.as_millis() + delta_ms as i64,
        ))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
