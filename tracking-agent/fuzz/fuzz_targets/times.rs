//! Times and durations as operators and apps write them (`--until`, `at`, `--ttl`): any text
//! is one or an error, and whatever is taken can be shown again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracking_agent::time::{self, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Timestamp::parse(text) {
        let shown = t.to_string();
        // Shown to the second, read back to the same second.
        let again = Timestamp::parse(&shown).expect("a shown time reads back");
        assert_eq!(again.as_millis(), t.as_millis() - t.as_millis().rem_euclid(1000));
        // In JSON (what the CLI sends the agent), to the millisecond.
        let json = serde_json::to_string(&t).expect("a time serialises");
        let back: Timestamp = serde_json::from_str(&json).expect("a serialised time reads back");
        assert_eq!(back, t, "{json}");
    }
    if let Ok(d) = time::parse_duration(text) {
        let _ = time::format_duration(d);
        let _ = Timestamp::now().plus(d);
    }
});
