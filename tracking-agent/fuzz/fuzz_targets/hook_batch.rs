//! `POST /v1/visits/batch` bodies: a batch is taken whole or refused whole, never in part.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracking_agent::{control::hook::parse_batch, time::Timestamp};

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const OLDEST: Timestamp = Timestamp::from_millis(1_800_000_000_000 - 86_400_000);

fuzz_target!(|data: &[u8]| {
    match parse_batch(data, NOW, OLDEST) {
        Ok(visits) => assert!(visits.len() <= 1000),
        Err(errors) => assert!(!errors.is_empty()),
    }
});
