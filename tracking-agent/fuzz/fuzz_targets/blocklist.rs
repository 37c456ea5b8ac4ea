//! Block lists for `tracking ban sync`: any text parses to networks with their host bits
//! cleared, each once, or to errors that name lines of the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracking_agent::blocklist;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    match blocklist::parse(text) {
        Ok(list) => {
            let mut seen = std::collections::HashSet::new();
            for entry in &list.entries {
                assert_eq!(entry.network, entry.network.trunc());
                assert!(entry.line >= 1 && entry.line <= lines);
                assert!(seen.insert(entry.network), "{} twice", entry.network);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(e.line >= 1 && e.line <= lines, "{e}");
            }
        }
    }
});
