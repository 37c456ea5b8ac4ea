//! Visitor tracking through the real agent: the app's hook over HTTP, active counts, the
//! session rule, user-agent rules, no-tracking prefixes, clean-up, the live feed and the admin
//! API, each with bad input that must be refused without storing anything. The agent runs in a
//! namespace of its own, attached to its loopback. Needs root; run with `cargo xtask test`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{Agent, AgentOptions, Netns, http::Request, require_root};

const HOOK: &str = "hook-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// The agent with its HTTP listener on 127.0.0.1:8080 inside its namespace.
struct Site {
    agent: Agent,
    netns: Netns,
    http: SocketAddr,
}

impl Site {
    fn new() -> Site {
        Site::with_args(&[])
    }

    fn with_args(extra: &[&str]) -> Site {
        require_root();
        let netns = Netns::new("visits").expect("namespace");
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut args = vec![
            "--http",
            "127.0.0.1:8080",
            "--hook-token",
            HOOK,
            "--admin-token",
            ADMIN,
        ];
        args.extend_from_slice(extra);
        let agent = Agent::start(&netns, AgentOptions::new("lo").args(&args)).expect("agent");
        Site { agent, netns, http }
    }

    fn send(&self, req: Request) -> tests::http::Response {
        req.send(&self.netns, self.http)
            .unwrap_or_else(|e| panic!("HTTP: {e}\n{}", self.agent.log_tail()))
    }

    fn visit(&self, body: Value) -> tests::http::Response {
        self.send(Request::post("/v1/visits").bearer(HOOK).json(&body))
    }

    /// Posts a visit that must be accepted and returns the answer's JSON.
    fn track(&self, body: Value) -> Value {
        let r = self.visit(body.clone());
        assert_eq!(r.status, 202, "{body} -> {}", r.text());
        r.json()
    }

    fn active(&self, path: Option<&str>) -> Value {
        let uri = match path {
            Some(p) => format!("/v1/active?path={p}"),
            None => "/v1/active".into(),
        };
        let r = self.send(Request::get(&uri).bearer(HOOK));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn admin_get(&self, path: &str) -> Value {
        let r = self.send(Request::get(path).bearer(ADMIN));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// Every stored visitor record, waiting for the writer to catch up with `expected` page
    /// views in total (the hook answers before the store has written).
    fn stored(&self, expected_views: u64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.admin_get("/v1/visitors?limit=10000");
            let views: u64 = all
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["page_views"].as_u64().unwrap())
                .sum();
            if views == expected_views || Instant::now() > deadline {
                assert_eq!(views, expected_views, "stored page views: {all}");
                return all.as_array().unwrap().clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn assert_error(r: &tests::http::Response, status: u16, says: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(says), "error `{error}` should say `{says}`");
}

#[test]
fn a_visit_is_stored_and_counted_on_the_site_and_on_its_page() {
    let site = Site::new();
    let answer = site.track(
        json!({"ip": "203.0.113.9", "session_key": "s1", "user_agent": "Mozilla/5.0",
        "user": "alice", "referrer": "https://example.org/", "url": "/blog"}),
    );
    assert_eq!(answer, json!({"tracked": true, "banned": false}));
    site.track(json!({"ip": "203.0.113.10", "session_key": "s2", "url": "/"}));
    site.track(json!({"ip": "203.0.113.11", "url": "/blog"}));

    assert_eq!(
        site.active(None),
        json!({"visitors": 3, "registered": 1, "guests": 2})
    );
    assert_eq!(
        site.active(Some("/blog")),
        json!({"visitors": 2, "registered": 1, "guests": 1})
    );
    assert_eq!(
        site.active(Some("/")),
        json!({"visitors": 1, "registered": 0, "guests": 1})
    );
    assert_eq!(
        site.active(Some("/nowhere")),
        json!({"visitors": 0, "registered": 0, "guests": 0})
    );

    let stored = site.stored(3);
    let alice = stored
        .iter()
        .find(|v| v["key"] == "s:s1")
        .expect("alice stored");
    assert_eq!(alice["user"], "alice");
    assert_eq!(alice["referrer"], "https://example.org/");
    assert_eq!(alice["last_page"], "/blog");

    let pages = site.admin_get("/v1/active/pages");
    assert_eq!(
        pages[0],
        json!({"path": "/blog", "visitors": 2, "registered": 1})
    );
    let cli = site.agent.cli_ok(["visitors"]);
    assert!(cli.contains("alice") && cli.contains("/blog"), "{cli}");
}

#[test]
fn page_views_add_up_within_a_session_and_start_over_after_an_hour_idle() {
    let site = Site::new();
    let at = |mins_ago: i64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(mins_ago as u64 * 60);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    site.track(json!({"ip": "192.0.2.1", "session_key": "k", "url": "/a", "referrer": "https://first.example/", "at": at(200)}));
    site.track(json!({"ip": "192.0.2.1", "session_key": "k", "url": "/b", "at": at(190)}));
    let v = &site.stored(2)[0];
    assert_eq!(
        (v["page_views"].as_u64(), v["referrer"].as_str()),
        (Some(2), Some("https://first.example/"))
    );

    // 190 minutes ago to now: far more than an hour idle, a new session.
    site.track(json!({"ip": "192.0.2.1", "session_key": "k", "url": "/c", "referrer": "https://second.example/"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = &site.admin_get("/v1/visitors")[0];
        if v["last_page"] == "/c" {
            assert_eq!(v["page_views"], 1, "{v}");
            assert_eq!(v["referrer"], "https://second.example/", "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new session was not stored: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_visitor_without_a_session_is_known_by_address_and_user_agent() {
    let site = Site::new();
    site.track(json!({"ip": "192.0.2.1", "user_agent": "A"}));
    site.track(json!({"ip": "192.0.2.1", "user_agent": "A"}));
    site.track(json!({"ip": "192.0.2.1", "user_agent": "B"}));
    let stored = site.stored(3);
    let mut views: Vec<u64> = stored
        .iter()
        .map(|v| v["page_views"].as_u64().unwrap())
        .collect();
    views.sort();
    assert_eq!(views, vec![1, 2]);
}

#[test]
fn the_answer_says_whether_the_address_is_banned() {
    let site = Site::new();
    site.agent
        .cli_ok(["ban", "add", "198.51.100.0/24", "2001:db8:bad::/48"]);
    site.agent.cli_ok(["allow", "add", "198.51.100.200/32"]);
    assert_eq!(site.track(json!({"ip": "198.51.100.7"}))["banned"], true);
    assert_eq!(site.track(json!({"ip": "2001:db8:bad::1"}))["banned"], true);
    assert_eq!(site.track(json!({"ip": "198.51.101.7"}))["banned"], false);
    assert_eq!(
        site.track(json!({"ip": "198.51.100.200"}))["banned"],
        false,
        "allowlisted"
    );
    site.agent.cli_ok(["ua", "add", "curl"]);
    let untracked = site.track(json!({"ip": "198.51.100.8", "user_agent": "curl/8.0"}));
    assert_eq!(untracked, json!({"tracked": false, "banned": true}));
}

#[test]
fn bad_visits_are_refused_with_the_reason_and_nothing_is_stored() {
    let site = Site::new();
    let post = |body: &str, content_type: &str| {
        site.send(
            Request::post("/v1/visits")
                .bearer(HOOK)
                .header("Content-Type", content_type)
                .body(body.as_bytes().to_vec()),
        )
    };
    assert_error(
        &post("{\"ip\": ", "application/json"),
        400,
        "not valid JSON",
    );
    assert_error(&post("{}", "application/json"), 400, "`ip` is missing");
    assert_error(
        &post("{\"ip\": \"10.0.0.999\"}", "application/json"),
        400,
        "`ip`: `10.0.0.999` is not an IPv4 or IPv6 address",
    );
    assert_error(
        &post(
            "{\"ip\": \"10.0.0.1\", \"user_agent\": 12}",
            "application/json",
        ),
        400,
        "`user_agent` must be a string, not a number",
    );
    assert_error(
        &post(
            "{\"ip\": \"10.0.0.1\", \"url\": \"blog\"}",
            "application/json",
        ),
        400,
        "`url` must be a path",
    );
    assert_error(
        &post("{\"ip\": \"10.0.0.1\"}", "text/plain"),
        415,
        "application/json",
    );
    let big = format!(
        "{{\"ip\": \"10.0.0.1\", \"user_agent\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    assert_error(&post(&big, "application/json"), 413, "larger than 64 KiB");

    let batch = json!([{"ip": "10.0.0.1"}, {"ip": "nope"}, {"ip": "10.0.0.3", "user": [1]}]);
    let r = site.send(Request::post("/v1/visits/batch").bearer(HOOK).json(&batch));
    assert_error(&r, 400, "2 of 3 visits are invalid; none was stored");
    let details = r.json()["details"].clone();
    assert_eq!(
        details[0].as_str().unwrap(),
        "visit 1: `ip`: `nope` is not an IPv4 or IPv6 address"
    );
    assert!(
        details[1]
            .as_str()
            .unwrap()
            .starts_with("visit 2: `user` must be a string or a number"),
        "{details}"
    );

    // One good visit shows the store works; the bad ones left no trace.
    site.track(json!({"ip": "10.0.0.9"}));
    assert_eq!(site.stored(1).len(), 1);
    assert_eq!(site.active(None)["visitors"], 1);
}

#[test]
fn a_batch_tracks_every_visit_and_answers_each() {
    let site = Site::new();
    site.agent.cli_ok(["ua", "add", "bot"]);
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"ip": format!("10.1.0.{}", i % 10), "session_key": format!("b{}", i % 10), "url": format!("/p{}", i % 3),
                        "user_agent": if i == 7 { "SomeBot/1.0" } else { "Mozilla" }}))
        .collect();
    let r = site.send(
        Request::post("/v1/visits/batch")
            .bearer(HOOK)
            .json(&Value::Array(batch)),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 50);
    assert_eq!(results.iter().filter(|r| r["tracked"] == true).count(), 49);
    assert_eq!(results[7]["tracked"], false);
    site.stored(49);
    assert_eq!(site.active(None)["visitors"], 10);
    let too_many = Value::Array(vec![json!({"ip": "10.0.0.1"}); 1001]);
    assert_error(
        &site.send(
            Request::post("/v1/visits/batch")
                .bearer(HOOK)
                .json(&too_many),
        ),
        413,
        "at most 1000 visits",
    );
}

#[test]
fn the_hook_and_the_admin_api_need_their_own_tokens() {
    let site = Site::new();
    let visit = json!({"ip": "10.0.0.1"});
    assert_error(
        &site.send(Request::post("/v1/visits").json(&visit)),
        401,
        "Authorization: Bearer",
    );
    assert_error(
        &site.send(
            Request::post("/v1/visits")
                .bearer("nope-nope-nope-nope")
                .json(&visit),
        ),
        401,
        "wrong hook token",
    );
    assert_error(
        &site.send(Request::post("/v1/visits").bearer(ADMIN).json(&visit)),
        401,
        "wrong hook token",
    );
    assert_error(
        &site.send(Request::get("/v1/active")),
        401,
        "Authorization: Bearer",
    );
    assert_error(
        &site.send(Request::get("/v1/bans").bearer(HOOK)),
        401,
        "wrong admin token",
    );
    assert_error(&site.send(Request::get("/v1/visitors")), 401, "admin token");
    assert_eq!(
        site.send(Request::get("/v1/bans").bearer(ADMIN)).status,
        200
    );
    let page = site.send(Request::get("/live"));
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    assert!(site.stored(0).is_empty(), "refused visits are not stored");
}

#[test]
fn user_agent_rules_and_no_tracking_prefixes_stop_tracking() {
    let site = Site::with_args(&[
        "--no-track-prefix",
        "/admin/",
        "--no-track-prefix",
        "/health",
    ]);
    let out = site.agent.cli_ok([
        "ua",
        "add",
        "Googlebot",
        "bingbot",
        "--note",
        "search engines",
    ]);
    assert!(
        out.contains("not tracking user agents containing `Googlebot`"),
        "{out}"
    );
    let listed = site.agent.cli_ok(["ua", "ls"]);
    assert!(
        listed.contains("Googlebot") && listed.contains("search engines"),
        "{listed}"
    );

    let ua = "Mozilla/5.0 (compatible; GOOGLEBOT/2.1; +http://www.google.com/bot.html)";
    assert_eq!(
        site.track(json!({"ip": "66.249.66.1", "user_agent": ua}))["tracked"],
        false,
        "case-insensitive"
    );
    assert_eq!(
        site.track(json!({"ip": "10.0.0.1", "url": "/admin/users"}))["tracked"],
        false
    );
    assert_eq!(
        site.track(json!({"ip": "10.0.0.1", "url": "/health"}))["tracked"],
        false
    );
    assert_eq!(
        site.track(json!({"ip": "10.0.0.1", "url": "/administrators"}))["tracked"],
        true,
        "not under /admin/"
    );
    assert_eq!(site.active(None)["visitors"], 1);

    site.agent.cli_ok(["ua", "rm", "googlebot"]);
    assert_eq!(
        site.track(json!({"ip": "66.249.66.1", "user_agent": ua}))["tracked"],
        true
    );
    let r = site.send(
        Request::post("/v1/ua")
            .bearer(ADMIN)
            .json(&json!({"keywords": ["  "]})),
    );
    assert_error(&r, 400, "empty keyword");
    site.stored(2);
}

#[test]
fn visitors_stop_being_active_after_the_tracking_timeout_and_are_cleaned_up_later() {
    let site = Site::with_args(&["--tracking-timeout", "2s", "--cleanup-timeout", "4s"]);
    site.track(json!({"ip": "10.0.0.1", "session_key": "gone"}));
    assert_eq!(site.active(None)["visitors"], 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(site.active(None)["visitors"], 0);
    assert_eq!(site.stored(1).len(), 1, "inactive, but still stored");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !site
        .admin_get("/v1/visitors")
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "not cleaned up: {}",
            site.admin_get("/v1/visitors")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_restarted_agent_rebuilds_its_counts_from_the_store() {
    let mut site = Site::new();
    site.track(json!({"ip": "10.0.0.1", "session_key": "a", "url": "/x", "user": "u"}));
    site.track(json!({"ip": "10.0.0.2", "session_key": "b", "url": "/y"}));
    site.stored(2);
    site.agent.restart().unwrap();
    assert_eq!(
        site.active(None),
        json!({"visitors": 2, "registered": 1, "guests": 1})
    );
    assert_eq!(site.active(Some("/x"))["visitors"], 1);
    let again = site.track(json!({"ip": "10.0.0.1", "session_key": "a", "url": "/z"}));
    assert_eq!(again["tracked"], true);
    let v = site.admin_get("/v1/visitors?active=true");
    let a = v
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "s:a")
        .unwrap()
        .clone();
    assert_eq!(
        a["page_views"], 2,
        "the session goes on after the restart: {a}"
    );
}

#[test]
fn the_live_feed_streams_visits_and_departures() {
    let site = Site::with_args(&["--tracking-timeout", "2s"]);
    let stream = site.netns.run(|| TcpStream::connect(site.http)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    write!(
        w,
        "GET /v1/feed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("200"), "{first}");
    // Give the server a moment to subscribe before the visit.
    std::thread::sleep(Duration::from_millis(300));
    site.track(json!({"ip": "10.0.0.5", "session_key": "live", "url": "/now"}));
    let mut events = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(name) = line.strip_prefix("event: ") {
            events.push(name.to_string());
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let data: Value = serde_json::from_str(data).unwrap();
            if events.last().map(String::as_str) == Some("visit") {
                assert_eq!(data["visitor"]["last_page"], "/now");
                assert_eq!(data["active"]["visitors"], 1);
            } else {
                assert_eq!(data["key"], "s:live");
                assert_eq!(data["active"]["visitors"], 0);
                break;
            }
        }
    }
    assert_eq!(events, vec!["visit", "left"]);
}

#[test]
fn excluded_networks_are_not_tracked_and_addresses_can_be_kept_anonymous() {
    let site = Site::with_args(&["--no-track-network", "10.9.0.0/16", "--anonymize-ips"]);
    site.agent.cli_ok(["ban", "add", "203.0.113.77"]);
    assert_eq!(site.track(json!({"ip": "10.9.1.1"}))["tracked"], false);
    let answer = site.track(json!({"ip": "203.0.113.77", "session_key": "anon"}));
    assert_eq!(
        answer,
        json!({"tracked": true, "banned": true}),
        "the ban check sees the whole address"
    );
    site.track(json!({"ip": "2001:db8:1:2:3::4", "session_key": "anon6"}));
    let stored = site.stored(2);
    let ips: Vec<&str> = stored.iter().map(|v| v["ip"].as_str().unwrap()).collect();
    assert!(
        ips.contains(&"203.0.113.0") && ips.contains(&"2001:db8:1::"),
        "{ips:?}"
    );
}
