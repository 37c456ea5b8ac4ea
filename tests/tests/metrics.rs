//! `GET /metrics`: the Prometheus text format that `promtool check metrics` accepts, behind
//! the admin token on the HTTP listener or without one on `--metrics`, with the values that
//! `tracking stats --json` and `tracking status --json` show.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use tests::{
    http::Request,
    traffic,
    web::{ADMIN_TOKEN, WebSite},
};

/// The token-less listener, inside the test's own namespace.
const METRICS: &str = "127.0.0.1:9120";

/// Samples by series (`name{labels}` as written), as `f64`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn promtool_check(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- the metrics:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_agree_with_stats() {
    let site = WebSite::start(&["--metrics", METRICS]);
    let v4 = site.topology.client_v4().to_vec();
    let v6 = site.topology.client_v6().to_vec();
    site.agent
        .cli_ok(["ban", "add", &v4[0].to_string(), "198.51.100.0/24"]);
    site.agent.cli_ok(["ban", "add", &v6[0].to_string()]);
    let list = site.agent.dir().join("drop.txt");
    std::fs::write(&list, "203.0.113.0/24\n2001:db8:bad::/48\n192.0.2.0/25\n").unwrap();
    site.agent.cli_ok([
        "ban",
        "sync",
        "--file",
        list.to_str().unwrap(),
        "--source",
        "drop",
    ]);
    site.agent.cli_ok(["ua", "add", "curl"]);

    // Packets from a banned and from a free address, to a port nothing listens on: the
    // banned ones are dropped, the others pass (and are answered by a reset).
    let to = SocketAddr::new(site.topology.server_v4().into(), 9);
    for from in [v4[0], v4[1]] {
        site.topology
            .client()
            .run(|| traffic::tcp_connects(from.into(), to, Duration::from_millis(300)));
    }
    // Five hooks: three tracked (two visitors, one registered), one not tracked by a rule,
    // one refused as bad input (not timed as a visit the store took, but timed as an answer).
    for (ip, session, user, ua) in [
        ("192.0.2.200", "s1", Some("alice"), "Firefox"),
        ("192.0.2.200", "s1", Some("alice"), "Firefox"),
        ("192.0.2.201", "s2", None, "Firefox"),
        ("192.0.2.202", "s3", None, "curl/8.0"),
    ] {
        let answer = site.visit(json!({
            "ip": ip, "session_key": session, "user": user, "user_agent": ua, "url": "/p"
        }));
        assert_eq!(answer.status, 202, "{}", answer.text());
    }
    assert_eq!(site.visit(json!({"ip": "not an address"})).status, 400);
    site.drained(Duration::from_secs(10));

    // Behind the admin token on the HTTP listener.
    assert_eq!(site.send(Request::get("/metrics")).status, 401);
    let before: Value = serde_json::from_str(&site.agent.cli_ok(["stats", "--json"])).unwrap();
    let answer = site.send(Request::get("/metrics").bearer(ADMIN_TOKEN));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        answer.headers
    );
    let text = answer.text();
    let after: Value = serde_json::from_str(&site.agent.cli_ok(["stats", "--json"])).unwrap();
    let status: Value = serde_json::from_str(&site.agent.cli_ok(["status", "--json"])).unwrap();
    promtool_check(&text);
    let m = samples(&text);
    let get = |series: &str| -> f64 {
        *m.get(series)
            .unwrap_or_else(|| panic!("no {series} in the metrics:\n{text}"))
    };

    // Packets and bytes per verdict: between the two reads of stats (stray neighbour
    // discovery may arrive meanwhile).
    for verdict in ["passed", "dropped"] {
        for (what, field) in [("packets", "packets"), ("bytes", "bytes")] {
            let series = format!("tracking_{what}_total{{verdict=\"{verdict}\"}}");
            let low = before["counters"][verdict][field].as_u64().unwrap() as f64;
            let high = after["counters"][verdict][field].as_u64().unwrap() as f64;
            let value = get(&series);
            assert!(
                (low..=high).contains(&value),
                "{series} {value} not in {low}..={high}"
            );
        }
    }
    assert!(get("tracking_packets_total{verdict=\"dropped\"}") >= 1.0);

    // Bans per source and family; the tables' use and capacity.
    assert_eq!(get("tracking_bans{source=\"cli\",family=\"ipv4\"}"), 2.0);
    assert_eq!(get("tracking_bans{source=\"cli\",family=\"ipv6\"}"), 1.0);
    assert_eq!(get("tracking_bans{source=\"drop\",family=\"ipv4\"}"), 2.0);
    assert_eq!(get("tracking_bans{source=\"drop\",family=\"ipv6\"}"), 1.0);
    for (family, table) in [("ipv4", "bans_v4"), ("ipv6", "bans_v6")] {
        assert_eq!(
            get(&format!("tracking_table_entries{{family=\"{family}\"}}")),
            status[table]["used"].as_f64().unwrap()
        );
        assert_eq!(
            get(&format!("tracking_table_capacity{{family=\"{family}\"}}")),
            status[table]["capacity"].as_f64().unwrap()
        );
    }
    assert_eq!(get("tracking_table_entries{family=\"ipv4\"}"), 4.0);
    let age = get("tracking_reconcile_age_seconds");
    assert!((0.0..120.0).contains(&age), "{age}");
    assert_eq!(get("tracking_reconcile_failures_total"), 0.0);

    // Visits: as stats counts them.
    let visits = &after["visits"];
    for (series, field) in [
        ("tracking_visits_tracked_total", "tracked"),
        ("tracking_visits_untracked_total", "untracked"),
        ("tracking_visits_stored_total", "stored"),
        ("tracking_visits_refused_total", "refused"),
        ("tracking_visits_queued", "queued"),
    ] {
        assert_eq!(get(series), visits[field].as_f64().unwrap(), "{series}");
    }
    assert_eq!(get("tracking_visits_tracked_total"), 3.0);
    assert_eq!(get("tracking_visits_untracked_total"), 1.0);
    assert_eq!(get("tracking_visits_received_total"), 4.0);
    assert_eq!(get("tracking_visits_stored_total"), 3.0);
    assert_eq!(get("tracking_active_visitors{kind=\"registered\"}"), 1.0);
    assert_eq!(get("tracking_active_visitors{kind=\"guest\"}"), 1.0);
    assert_eq!(
        visits["active"]["visitors"].as_f64().unwrap(),
        get("tracking_active_visitors{kind=\"registered\"}")
            + get("tracking_active_visitors{kind=\"guest\"}")
    );

    // Every hook answer is timed, the refused one too; buckets are cumulative.
    assert_eq!(get("tracking_hook_duration_seconds_count"), 5.0);
    assert_eq!(
        get("tracking_hook_duration_seconds_bucket{le=\"+Inf\"}"),
        5.0
    );
    assert!(get("tracking_hook_duration_seconds_sum") > 0.0);

    // The same from the token-less listener.
    let open = Request::get("/metrics")
        .send(site.topology.server(), METRICS.parse().unwrap())
        .expect("the --metrics listener");
    assert_eq!(open.status, 200);
    promtool_check(&open.text());
    let m2 = samples(&open.text());
    assert_eq!(m2["tracking_bans{source=\"drop\",family=\"ipv4\"}"], 2.0);
    // It serves nothing else.
    let other = Request::get("/v1/status")
        .send(site.topology.server(), METRICS.parse().unwrap())
        .unwrap();
    assert_eq!(other.status, 404);
}
