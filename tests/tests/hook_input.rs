//! Bad input to the HTTP listener gets a clear 4xx and changes nothing, and the agent keeps its
//! secrets: with the real agent in a network namespace (its daemon in this process where no
//! process of its own is looked at). Needs root.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::json;
use tests::{
    http::Request,
    web::{ADMIN_TOKEN, HOOK_TOKEN, WebSite},
};

#[test]
fn a_long_keyword_of_many_byte_characters_is_refused_not_a_panic() {
    let site = WebSite::in_process(&[]);
    let keyword = "€".repeat(100);
    let response = site.send(
        Request::post("/v1/ua")
            .bearer(ADMIN_TOKEN)
            .json(&json!({"keywords": [keyword]})),
    );
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.json()["error"]
            .as_str()
            .unwrap()
            .contains("longer than 256 bytes"),
        "{}",
        response.text()
    );
    assert!(!site.agent.log().contains("panicked"));
    let rules = site.send(Request::get("/v1/ua").bearer(ADMIN_TOKEN));
    assert_eq!(rules.json(), json!([]));
}

#[test]
fn a_visit_time_is_taken_with_any_offset_within_its_window_and_refused_outside() {
    let site = WebSite::in_process(&["--cleanup-timeout", "24h"]);
    let now = tracking_agent::time::Timestamp::now();
    // Two hours ago, written with an offset of +02:00.
    let then = tracking_agent::time::Timestamp::from_millis(now.as_millis() - 7_200_000);
    let local = jiff::Timestamp::from_millisecond(then.as_millis())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(2)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let taken = site.visit(json!({"ip": "192.0.2.1", "session_key": "a", "at": local}));
    assert_eq!(taken.status, 202, "{local}: {}", taken.text());

    for (at, why) in [
        ("1970-01-01T00:00:00Z", "older than the clean-up timeout"),
        ("2999-01-01T00:00:00Z", "more than 5 minutes in the future"),
        ("yesterday", "is not a time"),
    ] {
        let refused = site.visit(json!({"ip": "192.0.2.1", "session_key": "b", "at": at}));
        assert_eq!(refused.status, 400, "{at}");
        assert!(refused.text().contains(why), "{at}: {}", refused.text());
    }
    let visitors = site.send(Request::get("/v1/visitors").bearer(ADMIN_TOKEN));
    assert_eq!(
        visitors.json().as_array().unwrap().len(),
        1,
        "{}",
        visitors.text()
    );
}

#[test]
fn a_field_given_twice_is_refused_in_one_visit_and_in_a_batch() {
    let site = WebSite::in_process(&[]);
    let twice = br#"{"ip":"192.0.2.1","session_key":"a","session_key":"b"}"#.to_vec();
    let one = site.send(
        Request::post("/v1/visits")
            .bearer(HOOK_TOKEN)
            .header("Content-Type", "application/json")
            .body(twice.clone()),
    );
    assert_eq!(one.status, 400);
    assert!(
        one.text().contains("`session_key` is given twice"),
        "{}",
        one.text()
    );
    let mut batch = b"[".to_vec();
    batch.extend_from_slice(br#"{"ip":"192.0.2.2"},"#);
    batch.extend_from_slice(&twice);
    batch.push(b']');
    let many = site.send(
        Request::post("/v1/visits/batch")
            .bearer(HOOK_TOKEN)
            .header("Content-Type", "application/json")
            .body(batch),
    );
    assert_eq!(many.status, 400);
    assert!(many.text().contains("given twice"), "{}", many.text());
    let visitors = site.send(Request::get("/v1/visitors").bearer(ADMIN_TOKEN));
    assert_eq!(visitors.json(), json!([]), "nothing was stored");
}

#[test]
fn tokens_come_from_files_and_the_store_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook");
    let admin = dir.path().join("admin");
    std::fs::write(&hook, "hook-token-from-a-file-0123\n").unwrap();
    std::fs::write(&admin, "admin-token-from-a-file-0123\n").unwrap();
    let site = WebSite::with(&[], |options| {
        // The harness's tokens are flags; these runs use files instead.
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut skip = false;
        for a in options.args.iter() {
            if skip {
                skip = false;
                continue;
            }
            if a == "--hook-token" || a == "--admin-token" {
                skip = true;
                continue;
            }
            args.push(a.clone());
        }
        let mut options = options;
        options.args = args;
        options
            .arg("--hook-token-file")
            .arg(&hook)
            .arg("--admin-token-file")
            .arg(&admin)
    });
    let answer = site.send(
        Request::post("/v1/visits")
            .bearer("hook-token-from-a-file-0123")
            .json(&json!({"ip": "192.0.2.1"})),
    );
    assert_eq!(answer.status, 202, "{}", answer.text());
    let denied = site.send(Request::get("/v1/bans").bearer(ADMIN_TOKEN));
    assert_eq!(denied.status, 401, "the flag's token is not in force");
    let allowed = site.send(Request::get("/v1/bans").bearer("admin-token-from-a-file-0123"));
    assert_eq!(allowed.status, 200);
    let cmdline =
        std::fs::read_to_string(format!("/proc/{}/cmdline", site.agent.pid().unwrap())).unwrap();
    assert!(!cmdline.contains("token-from-a-file"), "{cmdline}");

    // What the agent writes is its own.
    let db = site.agent.database_path();
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    for file in [db.to_path_buf(), std::path::PathBuf::from(name)] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
}

#[test]
fn the_log_written_to_a_file_is_plain_text_without_colour_codes() {
    // The harness sends the agent's stderr to a file, as systemd sends it to the journal.
    let site = WebSite::start(&[]);
    let refused = site.send(Request::post("/v1/visits").bearer("wrong").json(&json!({})));
    assert_eq!(refused.status, 401);
    let log = site.agent.log();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log:\n{log}");
}
