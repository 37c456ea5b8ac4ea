//! Wall-clock instants as they are stored and shown: milliseconds since the Unix epoch in the
//! stores, RFC 3339 in JSON and on the terminal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The furthest ahead a ban's expiry may be set. The kernel keeps a deadline in 63 bits of
/// nanoseconds since boot (about 292 years); a century keeps every conversion far from that
/// edge, and a ban meant to outlast it needs no expiry at all.
pub const MAX_EXPIRY_AHEAD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// [`MAX_EXPIRY_AHEAD`] for messages.
pub const MAX_EXPIRY_AHEAD_TEXT: &str = "100 years";

/// A wall-clock instant with millisecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(d.as_millis() as i64),
            Err(e) => Timestamp(-(e.duration().as_millis() as i64)),
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// Time from `now` until `self`, zero if already past.
    pub fn remaining(self, now: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(now.0).max(0) as u64)
    }

    /// Parses RFC 3339 with any offset (`2026-11-25T12:00:00Z`, `2026-11-25T14:00:00+02:00`),
    /// or a date and time without one, taken as UTC (`2026-11-25 12:00:00`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let refused = |e: jiff::Error| {
            format!("`{s}` is not a time like 2026-11-25T12:00:00Z or 2026-11-25T14:00:00+02:00: {e}")
        };
        let at = match s.parse::<jiff::Timestamp>() {
            Ok(at) => at,
            Err(with_offset) => match s.parse::<jiff::civil::DateTime>() {
                Ok(civil) => civil
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .map_err(refused)?
                    .timestamp(),
                Err(_) => return Err(refused(with_offset)),
            },
        };
        Ok(Timestamp(at.as_millisecond()))
    }

    /// As a `jiff` timestamp, clamped to the years it can show (-9999 to 9999).
    fn civil(self) -> jiff::Timestamp {
        let ms = self.0.clamp(
            jiff::Timestamp::MIN.as_millisecond(),
            jiff::Timestamp::MAX.as_millisecond(),
        );
        jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// RFC 3339 in UTC to the second: `2026-11-25T12:00:00Z`.
impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.civil().strftime("%Y-%m-%dT%H:%M:%SZ"))
    }
}

/// RFC 3339 in UTC to the millisecond: `2026-11-25T12:00:00.000Z`.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.civil().strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a duration such as `90s`, `10m`, `1h`, `2h30m`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 90s, 10m, 1h or 7d: {e}"))?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero; a duration must be positive"));
    }
    Ok(d)
}

/// A duration for people: `1h 2m`, to the second.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_offset_is_taken_and_every_time_can_be_shown() {
        let utc = Timestamp::parse("2026-11-25T12:00:00Z").unwrap();
        assert_eq!(Timestamp::parse("2026-11-25T14:00:00+02:00").unwrap(), utc);
        assert_eq!(Timestamp::parse("2026-11-25 12:00:00").unwrap(), utc);
        assert_eq!(
            serde_json::to_string(&utc).unwrap(),
            "\"2026-11-25T12:00:00.000Z\""
        );
        assert!(Timestamp::parse("yesterday").unwrap_err().contains("is not a time"));
        for extreme in [i64::MIN, -1, i64::MAX] {
            let t = Timestamp::from_millis(extreme);
            assert!(!t.to_string().is_empty());
            assert!(serde_json::to_string(&t).is_ok());
        }
    }

    #[test]
    fn round_trips_rfc3339() {
        let t = Timestamp::parse("2026-11-25T12:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-25T12:00:00Z");
        assert_eq!(Timestamp::from_system(t.to_system()), t);
    }

    #[test]
    fn durations_need_a_unit_and_a_positive_value() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2h30m").unwrap(), Duration::from_secs(9000));
        assert!(parse_duration("10").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
    }
}
