//! `POST /v1/visits` bodies: whatever the bytes, the hook's reading of a visit answers a visit
//! or an error, and a visit it takes is one the store can hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracking_agent::{control::hook::parse_visit, time::Timestamp};

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const OLDEST: Timestamp = Timestamp::from_millis(1_800_000_000_000 - 86_400_000);

fuzz_target!(|data: &[u8]| {
    if let Ok(visit) = parse_visit(data, NOW, OLDEST) {
        assert!(visit.url.starts_with('/'));
        assert!(!visit.url.contains(['?', '#']));
        assert!(visit.at >= OLDEST && visit.at.as_millis() <= NOW.as_millis() + 300_000);
        for text in [&visit.url, &visit.user_agent] {
            assert!(!text.chars().any(char::is_control));
        }
    }
});
