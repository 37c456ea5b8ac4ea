//! The TOML configuration file: any text is a configuration or an error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tracking_agent::config::{AgentConfig, RunArgs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = AgentConfig::parse_file(Path::new("fuzz.toml"), text) else {
        return;
    };
    // Token files would be read from the disk: not the fuzzer's business.
    if file.hook_token_file.is_some() || file.admin_token_file.is_some() {
        return;
    }
    let _ = AgentConfig::merge(RunArgs::default(), file, || Some("eth0".into()));
});
