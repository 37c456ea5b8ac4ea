//! One ban record as the worker's index keeps it (16 bytes: a reason's fingerprint and an
//! expiry), and what the live records of one network add up to.

use crate::{ban::Effective, time::Timestamp};

/// One ban record, as far as effects and diffs need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    /// The reason's hash shifted left by one, and in bit 0 whether the record expires.
    tag: u64,
    /// When it expires, in milliseconds since the epoch; 0 if it never does.
    expires_ms: i64,
}

impl Record {
    pub(super) fn new(reason_hash: u64, expires_ms: Option<i64>) -> Self {
        Record {
            tag: (reason_hash << 1) | u64::from(expires_ms.is_some()),
            expires_ms: expires_ms.unwrap_or(0),
        }
    }

    /// The record of a synced ban, which never expires, with this reason hash.
    pub(super) fn synced(reason_hash: u64) -> Self {
        Record::new(reason_hash, None)
    }

    /// When it expires; `None` for never.
    pub(super) fn expires_ms(&self) -> Option<i64> {
        (self.tag & 1 == 1).then_some(self.expires_ms)
    }

    pub(super) fn is_live(&self, now_ms: i64) -> bool {
        self.expires_ms().is_none_or(|e| e > now_ms)
    }
}

/// The longer of two expiries, where `None` (never) outlasts everything.
fn longest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    Some(a?.max(b?))
}

/// What the live records of a network add up to: whether there are any, and the latest expiry.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Live(Option<Option<i64>>);

impl Live {
    pub(super) fn add(&mut self, record: &Record, now_ms: i64) {
        if record.is_live(now_ms) {
            self.0 = Some(match self.0 {
                None => record.expires_ms(),
                Some(expires) => longest(expires, record.expires_ms()),
            });
        }
    }

    pub(super) fn effective(self) -> Effective {
        match self.0 {
            None => Effective::Unbanned,
            Some(expires) => Effective::Banned {
                expires: expires.map(Timestamp::from_millis),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_tells_a_changed_reason_or_expiry() {
        assert_eq!(Record::new(1, None), Record::new(1, None));
        assert_ne!(Record::new(1, None), Record::new(2, None));
        assert_ne!(Record::new(1, None), Record::new(1, Some(0)));
        assert_eq!(Record::new(0, Some(0)).expires_ms(), Some(0));
        assert_eq!(Record::new(0, None).expires_ms(), None);
    }

    #[test]
    fn the_live_records_of_a_network_last_as_long_as_the_longest() {
        let mut live = Live::default();
        assert_eq!(live.effective(), Effective::Unbanned);
        live.add(&Record::new(0, Some(500)), 1_000);
        assert_eq!(live.effective(), Effective::Unbanned, "expired");
        live.add(&Record::new(0, Some(2_000)), 1_000);
        live.add(&Record::new(0, Some(3_000)), 1_000);
        assert_eq!(
            live.effective(),
            Effective::Banned {
                expires: Some(Timestamp::from_millis(3_000))
            }
        );
        live.add(&Record::new(0, None), 1_000);
        assert_eq!(live.effective(), Effective::Banned { expires: None });
    }
}
