//! The CrowdSec bouncer against a real CrowdSec Local API: decisions made with `cscli` are
//! dropped by XDP within the poll interval (1 s) plus 100 ms, deleting them lifts them, and a
//! restart of the agent or of CrowdSec loses nothing.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use tests::{
    Agent, AgentOptions, EchoServer, Topology, crowdsec::Crowdsec, require_root, site::Site,
};

/// The default poll interval plus the 100 ms the bouncer may take to pull and apply.
const WITHIN: Duration = Duration::from_millis(1100);

struct Fixture {
    // Dropped first: the agent, then CrowdSec, then the namespaces.
    site: Site,
    crowdsec: Crowdsec,
}

fn fixture() -> Fixture {
    fixture_with(&[])
}

/// The fixture, its agent started with `args` too.
fn fixture_with(args: &[&str]) -> Fixture {
    require_root();
    assert!(
        tests::crowdsec::installed(),
        "cscli is not installed: run `cargo xtask setup` (Debian's crowdsec package)"
    );
    let topology = Topology::new().expect("topology");
    let echo = EchoServer::start(topology.server(), "[::]:0".parse().unwrap()).expect("echo");
    let crowdsec = Crowdsec::start(topology.server()).expect("crowdsec");
    let key = crowdsec.add_bouncer("tracking").expect("bouncer key");
    let agent = Agent::start(
        topology.server(),
        AgentOptions::new(topology.server_iface())
            .args(args)
            .arg("--crowdsec-url")
            .arg(crowdsec.url())
            .arg("--crowdsec-key-file")
            .arg(&key),
    )
    .expect("agent");
    let f = Fixture {
        site: Site {
            agent,
            echo,
            topology,
        },
        crowdsec,
    };
    f.until_pulled();
    f
}

impl Fixture {
    /// `cscli decisions add <flag> <value>`, asserting that the kernel holds the ban within
    /// [`WITHIN`] and that `from` is dropped.
    fn decide(&self, flag: &str, value: &str, from: IpAddr) {
        self.crowdsec
            .cscli(["decisions", "add", flag, value, "--duration", "1h"])
            .expect("cscli decisions add");
        let took = self.until_enforced(value_network(flag, value), true);
        eprintln!("cscli decisions add {flag} {value}: enforced {took:?} after cscli returned");
        assert!(
            took <= WITHIN,
            "{value} was enforced {took:?} after the decision, more than {WITHIN:?}"
        );
        // What the kernel holds is what the packets meet.
        self.site.assert_dropped(from);
    }

    /// `cscli decisions delete <flag> <value>`, asserting that the ban is lifted within
    /// [`WITHIN`] and that `from` gets through again.
    fn undecide(&self, flag: &str, value: &str, from: IpAddr) {
        self.crowdsec
            .cscli(["decisions", "delete", flag, value])
            .expect("cscli decisions delete");
        let took = self.until_enforced(value_network(flag, value), false);
        assert!(
            took <= WITHIN,
            "{value} was lifted {took:?} after the deletion"
        );
        self.site.assert_passes(from);
    }

    /// Polls `ban ls` until `network` is (or is no longer) enforced by the kernel; returns how
    /// long that took, or panics after 5 s.
    fn until_enforced(&self, network: String, enforced: bool) -> Duration {
        let start = Instant::now();
        loop {
            let held = self
                .crowdsec_bans()
                .iter()
                .any(|b| b["network"] == network.as_str() && b["enforced"] == true);
            if held == enforced {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{network} still {} after 5 s\n{}",
                if enforced { "not enforced" } else { "enforced" },
                self.site.agent.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the agent's first answered pull: its control socket answers before the
    /// filter is attached, the bouncer starts after.
    fn until_pulled(&self) {
        let start = Instant::now();
        while self.status()["crowdsec"]["last_success"].is_null() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no pull answered within 30 s\n{}",
                self.site.agent.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn crowdsec_bans(&self) -> Vec<serde_json::Value> {
        let page: serde_json::Value = serde_json::from_str(
            &self
                .site
                .agent
                .cli_ok(["ban", "ls", "--source", "crowdsec", "--json"]),
        )
        .expect("ban ls JSON");
        page["bans"].as_array().expect("a list of bans").clone()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.site.agent.cli_ok(["status", "--json"])).expect("status JSON")
    }
}

fn value_network(flag: &str, value: &str) -> String {
    match (flag, value.parse::<IpAddr>()) {
        ("--ip", Ok(IpAddr::V4(_))) => format!("{value}/32"),
        ("--ip", Ok(IpAddr::V6(_))) => format!("{value}/128"),
        _ => value.to_string(),
    }
}

#[test]
fn ip_and_range_decisions_are_dropped_within_the_poll_interval_and_lifted_when_deleted() {
    let f = fixture();
    let site = &f.site;
    let v4 = site.topology.client_v4().to_vec();
    let v6 = site.topology.client_v6().to_vec();
    for from in [v4[0].into(), v4[2].into(), v6[0].into(), v6[2].into()] {
        site.assert_passes(from);
    }

    f.decide("--ip", &v4[0].to_string(), v4[0].into());
    f.decide("--ip", &v6[0].to_string(), v6[0].into());
    // .4/30 holds the third client address (.4) and neither of the others (.2, .3).
    let range_v4 = format!("{}/30", v4[2]);
    f.decide("--range", &range_v4, v4[2].into());
    let range_v6 = format!("{}/126", v6[2]);
    f.decide("--range", &range_v6, v6[2].into());
    site.assert_passes(v4[1].into());
    site.assert_passes(v6[1].into());

    // Each ban runs until its decision ends, and says which scenario made it.
    let bans = f.crowdsec_bans();
    assert_eq!(bans.len(), 4, "{bans:?}");
    for ban in &bans {
        let left = ban["expires_in_secs"].as_u64().expect("an expiry");
        assert!((3500..=3600).contains(&left), "{ban}");
        assert!(
            ban["reason"].as_str().unwrap().contains("manual 'ban'"),
            "{ban}"
        );
    }

    let status = f.status();
    let crowdsec = &status["crowdsec"];
    assert_eq!(crowdsec["url"], f.crowdsec.url());
    assert_eq!(crowdsec["decisions"], 4);
    assert!(crowdsec["last_success"].is_string(), "{crowdsec}");
    assert!(crowdsec["pulls"].as_u64().unwrap() >= 4, "{crowdsec}");
    let text = site.agent.cli_ok(["status"]);
    assert!(
        text.contains(&format!("crowdsec   {}", f.crowdsec.url())),
        "{text}"
    );
    assert!(text.contains("4 decisions banning 4 networks"), "{text}");

    f.undecide("--ip", &v4[0].to_string(), v4[0].into());
    f.undecide("--range", &range_v6, v6[2].into());
    // The others stay.
    site.assert_dropped(v6[0].into());
    site.assert_dropped(v4[2].into());
    assert_eq!(f.crowdsec_bans().len(), 2);
}

#[test]
fn a_restart_of_the_agent_or_of_crowdsec_loses_nothing() {
    let mut f = fixture();
    let v4 = f.site.topology.client_v4().to_vec();
    f.decide("--ip", &v4[0].to_string(), v4[0].into());

    // The agent stops; meanwhile one decision is deleted and another made. The restarted
    // agent's first pull catches up with both.
    f.site.agent.stop();
    f.crowdsec
        .cscli(["decisions", "delete", "--ip", &v4[0].to_string()])
        .expect("delete");
    f.crowdsec
        .cscli([
            "decisions",
            "add",
            "--ip",
            &v4[1].to_string(),
            "--duration",
            "2h",
        ])
        .expect("add");
    f.site.agent.restart().expect("restart");
    f.until_pulled();
    f.until_enforced(format!("{}/32", v4[1]), true);
    f.until_enforced(format!("{}/32", v4[0]), false);
    f.site.assert_dropped(v4[1].into());
    f.site.assert_passes(v4[0].into());

    // CrowdSec stops: the bans stay enforced and the status says pulls fail.
    f.crowdsec.stop();
    std::thread::sleep(Duration::from_millis(2500));
    f.site.assert_dropped(v4[1].into());
    let status = f.status();
    assert!(
        status["crowdsec"]["failures"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(
        status["crowdsec"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach the Local API")),
        "{status}"
    );
    let text = f.site.agent.cli_ok(["status"]);
    assert!(text.contains("error: cannot reach the Local API"), "{text}");

    // CrowdSec is back: new decisions and deletions flow again, within the interval.
    f.crowdsec.restart().expect("crowdsec restart");
    let failures = f.status()["crowdsec"]["failures"].as_u64().unwrap();
    // The next answered pull is a startup pull: whatever the failed ones missed comes with it.
    let start = Instant::now();
    while f.status()["crowdsec"]["last_error"].is_string() {
        assert!(start.elapsed() < Duration::from_secs(5), "pulls still fail");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f.status()["crowdsec"]["failures"].as_u64().unwrap() >= failures);
    f.decide("--ip", &v4[2].to_string(), v4[2].into());
    f.undecide("--ip", &v4[1].to_string(), v4[1].into());
    let status = f.status();
    assert!(status["crowdsec"]["last_error"].is_null(), "{status}");
    assert_eq!(f.crowdsec_bans().len(), 1);
}

#[test]
fn decisions_the_tables_cannot_hold_change_nothing_until_they_fit() {
    let f = fixture_with(&["--max-bans-v4", "2"]);
    let v4 = f.site.topology.client_v4().to_vec();
    f.decide("--ip", &v4[0].to_string(), v4[0].into());
    f.decide("--ip", &v4[1].to_string(), v4[1].into());

    // A third IPv4 ban does not fit: refused whole, the two held stay, the status says why.
    f.crowdsec
        .cscli(["decisions", "add", "--ip", &v4[2].to_string()])
        .unwrap();
    let start = Instant::now();
    let error = loop {
        if let Some(e) = f.status()["crowdsec"]["last_error"].as_str() {
            break e.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no refusal");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(error.starts_with("applying the decisions: "), "{error}");
    assert!(error.contains("max-bans-v4"), "{error}");
    assert_eq!(f.crowdsec_bans().len(), 2);
    f.site.assert_passes(v4[2].into());
    f.site.assert_dropped(v4[0].into());

    // One goes: the next pull (a startup pull, after the refusal) fits, and applies.
    f.crowdsec
        .cscli(["decisions", "delete", "--ip", &v4[0].to_string()])
        .unwrap();
    f.until_enforced(format!("{}/32", v4[2]), true);
    f.until_enforced(format!("{}/32", v4[0]), false);
    assert!(f.status()["crowdsec"]["last_error"].is_null());
    f.site.assert_dropped(v4[2].into());
    f.site.assert_passes(v4[0].into());
}
