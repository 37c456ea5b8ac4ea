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
        let refused = |e: &dyn std::fmt::Display| {
            format!(
                "`{s}` is not a time like 2026-11-25T12:00:00Z or 2026-11-25T14:00:00+02:00: {e}"
            )
        };
        let pieces = jiff::fmt::temporal::Pieces::parse(s).map_err(|e| refused(&e))?;
        if pieces.date().year() < 0 {
            return Err(refused(&"years before 0 are not times this agent keeps"));
        }
        if pieces.offset().is_none() && pieces.time_zone_annotation().is_some() {
            return Err(refused(
                &"give an offset (Z, +02:00) rather than a time zone name",
            ));
        }
        // Worked out from the civil date rather than through `jiff::Timestamp`, whose range
        // ends a day before the year 10000 does (room for offsets): `9999-12-31T00:00:00Z` is
        // a valid time, and one the expiry checks must see to refuse it for what it is.
        let epoch = jiff::civil::date(1970, 1, 1);
        let days = pieces
            .date()
            .since((jiff::Unit::Day, epoch))
            .map_err(|e| refused(&e))?
            .get_days() as i64;
        let time = pieces.time().unwrap_or(jiff::civil::Time::midnight());
        let of_day = ((time.hour() as i64 * 60 + time.minute() as i64) * 60 + time.second() as i64)
            * 1000
            + time.subsec_nanosecond() as i64 / 1_000_000;
        let offset = pieces
            .to_numeric_offset()
            .unwrap_or(jiff::tz::Offset::UTC)
            .seconds() as i64;
        let ms = days * 86_400_000 + of_day - offset * 1000;
        // Every time taken must show as itself, in UTC, in four-digit years.
        if !(FIRST_SHOWN..=LAST_SHOWN).contains(&ms) {
            return Err(refused(&"in UTC that is outside the years 0 to 9999"));
        }
        Ok(Timestamp(ms))
    }

    /// The civil date and time of this instant in UTC, clamped to the years -9999 to 9999.
    /// Worked out by civil arithmetic for the same reason as [`Timestamp::parse`]: every
    /// instant `parse` gives back must show and serialise as itself.
    fn civil(self) -> jiff::civil::DateTime {
        const DAY: i64 = 86_400_000;
        let (days, in_day) = (self.0.div_euclid(DAY), self.0.rem_euclid(DAY));
        let date = jiff::Span::new()
            .try_days(days)
            .ok()
            .and_then(|span| jiff::civil::date(1970, 1, 1).checked_add(span).ok());
        let Some(date) = date else {
            return if days < 0 {
                jiff::civil::DateTime::MIN
            } else {
                jiff::civil::DateTime::MAX
            };
        };
        let time = jiff::civil::Time::new(
            (in_day / 3_600_000) as i8,
            (in_day / 60_000 % 60) as i8,
            (in_day / 1000 % 60) as i8,
            (in_day % 1000 * 1_000_000) as i32,
        )
        .expect("a time of day");
        date.to_datetime(time)
    }
}

/// `0000-01-01T00:00:00Z` and `9999-12-31T23:59:59.999Z`, in milliseconds since the epoch: the
/// times [`Timestamp::parse`] takes.
const FIRST_SHOWN: i64 = -62_167_219_200_000;
const LAST_SHOWN: i64 = 253_402_300_799_999;

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
        assert!(
            Timestamp::parse("yesterday")
                .unwrap_err()
                .contains("is not a time")
        );
        for extreme in [i64::MIN, -1, i64::MAX] {
            let t = Timestamp::from_millis(extreme);
            assert!(!t.to_string().is_empty());
            assert!(serde_json::to_string(&t).is_ok());
        }
    }

    #[test]
    fn the_last_day_of_year_9999_and_the_first_before_the_epoch_are_times() {
        // Beyond `jiff::Timestamp`'s range, within RFC 3339's: the expiry check refuses it,
        // not the parser.
        assert_eq!(
            Timestamp::parse("9999-12-31T23:59:59.999Z")
                .unwrap()
                .as_millis(),
            253_402_300_799_999
        );
        assert_eq!(
            Timestamp::parse("1969-12-31T23:59:59Z")
                .unwrap()
                .as_millis(),
            -1_000
        );
        for text in [
            "9999-12-31T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00.000Z",
        ] {
            let t = Timestamp::parse(text).unwrap();
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{text}\""));
        }
        assert_eq!(
            Timestamp::parse("2026-11-25T12:00:00.250-01:30")
                .unwrap()
                .as_millis(),
            Timestamp::parse("2026-11-25T13:30:00.250Z")
                .unwrap()
                .as_millis()
        );
        // Found by fuzzing: a time whose offset takes it past the year 9999 in UTC, which
        // would show as another.
        assert!(
            Timestamp::parse("9999-12-31T2329-1932")
                .unwrap_err()
                .contains("outside the years 0 to 9999")
        );
        assert_eq!(
            Timestamp::parse("0000-01-01T00:00:00Z")
                .unwrap()
                .as_millis(),
            FIRST_SHOWN
        );
        assert!(
            Timestamp::parse("2026-11-25T12:00:00[Europe/Paris]")
                .unwrap_err()
                .contains("offset")
        );
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
