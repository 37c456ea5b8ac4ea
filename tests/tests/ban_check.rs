//! `GET /v1/check?ip=`: the ban check an app behind a proxy makes before serving a request. It
//! answers what the filter enforces (bans, networks, the allowlist, expiries), tracks nothing,
//! and refuses a bad address or a missing token. The agent runs in a namespace of its own,
//! attached to its loopback. Needs root; run with `cargo xtask test`.

use std::{net::SocketAddr, thread, time::Duration};

use serde_json::{Value, json};
use tests::{Agent, AgentOptions, Netns, http::Request, require_root};

const HOOK: &str = "check-hook-token-0123456789";
const ADMIN: &str = "check-admin-token-0123456789";

struct Site {
    agent: Agent,
    netns: Netns,
    http: SocketAddr,
}

impl Site {
    fn new() -> Site {
        require_root();
        let netns = Netns::new("check").expect("namespace");
        let args = [
            "--http",
            "127.0.0.1:8080",
            "--hook-token",
            HOOK,
            "--admin-token",
            ADMIN,
        ];
        let agent = Agent::start(&netns, AgentOptions::new("lo").args(args)).expect("agent");
        Site {
            agent,
            netns,
            http: "127.0.0.1:8080".parse().unwrap(),
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> tests::http::Response {
        let mut request = Request::get(path);
        if let Some(token) = token {
            request = request.bearer(token);
        }
        request
            .send(&self.netns, self.http)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.agent.log_tail()))
    }

    /// `GET /v1/check?ip=<ip>` with the hook token; must answer 200.
    fn banned(&self, ip: &str) -> bool {
        let r = self.get(&format!("/v1/check?ip={ip}"), Some(HOOK));
        assert_eq!(r.status, 200, "check {ip}: {}", r.text());
        let answer = r.json();
        assert_eq!(answer.as_object().map(|o| o.len()), Some(1), "{answer}");
        answer["banned"]
            .as_bool()
            .unwrap_or_else(|| panic!("check {ip}: {answer}"))
    }

    fn stats(&self) -> Value {
        let r = self.get("/v1/stats", Some(ADMIN));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["visits"].clone()
    }
}

#[test]
fn the_check_answers_what_the_filter_enforces() {
    let site = Site::new();
    assert!(!site.banned("198.51.100.7"));
    site.agent
        .cli_ok(["ban", "add", "198.51.100.0/24", "2001:db8:bad::/48"]);
    site.agent.cli_ok(["ban", "add", "203.0.113.9"]);
    site.agent.cli_ok(["allow", "add", "198.51.100.200/32"]);

    assert!(site.banned("198.51.100.7"), "inside a banned network");
    assert!(site.banned("203.0.113.9"), "a banned address");
    assert!(
        site.banned("2001:db8:bad::1"),
        "inside a banned IPv6 network"
    );
    assert!(site.banned("::ffff:198.51.100.7"), "IPv4-mapped");
    assert!(!site.banned("198.51.101.7"), "outside");
    assert!(!site.banned("203.0.113.10"), "next to a banned address");
    assert!(!site.banned("198.51.100.200"), "allowlisted");

    site.agent.cli_ok(["ban", "rm", "203.0.113.9"]);
    assert!(!site.banned("203.0.113.9"), "unbanned");
}

#[test]
fn a_ban_that_expires_stops_being_reported() {
    let site = Site::new();
    site.agent
        .cli_ok(["ban", "add", "192.0.2.77", "--ttl", "2s"]);
    assert!(site.banned("192.0.2.77"));
    thread::sleep(Duration::from_millis(2500));
    assert!(!site.banned("192.0.2.77"), "expired");
}

#[test]
fn a_check_tracks_nothing() {
    let site = Site::new();
    site.agent.cli_ok(["ban", "add", "198.51.100.0/24"]);
    for _ in 0..5 {
        site.banned("198.51.100.7");
        site.banned("192.0.2.1");
    }
    let visits = site.stats();
    assert_eq!(
        (visits["tracked"].as_u64(), visits["untracked"].as_u64()),
        (Some(0), Some(0)),
        "{visits}"
    );
    let active = site.get("/v1/active", Some(HOOK)).json();
    assert_eq!(active, json!({"visitors": 0, "registered": 0, "guests": 0}));
}

#[test]
fn a_bad_address_or_a_missing_token_is_refused() {
    let site = Site::new();
    let says = |path: &str, token: Option<&str>, status: u16, text: &str| {
        let r = site.get(path, token);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            error.contains(text),
            "{path}: `{error}` should say `{text}`"
        );
    };
    says(
        "/v1/check?ip=300.1.1.1",
        Some(HOOK),
        400,
        "`300.1.1.1` is not an IPv4 or IPv6 address",
    );
    says("/v1/check?ip=", Some(HOOK), 400, "is not an IPv4 or IPv6");
    says("/v1/check", Some(HOOK), 400, "ip");
    says("/v1/check?ip=192.0.2.1&x=1", Some(HOOK), 400, "x");
    says("/v1/check?ip=192.0.2.1", None, 401, "hook token");
    says(
        "/v1/check?ip=192.0.2.1",
        Some("wrong"),
        401,
        "wrong hook token",
    );
}
