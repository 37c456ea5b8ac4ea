//! "Enforced" is the truth, with the real agent and real traffic: what the tables cannot hold
//! is refused before the store takes it, far-future expiries are refused, frames behind many
//! VLAN tags and from IPv4-mapped sources are judged like any other, and after a SIGKILL in
//! the middle of a million-line sync every ban the agent calls enforced is dropped by the
//! program it attached (checked through `BPF_PROG_TEST_RUN`), and every other one is not.
//! Needs root; run with `cargo xtask test`.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::Instant,
};

use tests::{
    frames,
    raw::{self, Sink},
    site::{Site, host},
    xdp::XDP_DROP,
};

/// Every ban `ban ls` shows, with whether the agent calls it enforced.
fn listed(site: &Site) -> Vec<(String, bool)> {
    site.bans()
        .iter()
        .map(|b| {
            (
                b["network"].as_str().unwrap().to_string(),
                b["enforced"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Checks every listed ban against the attached program: enforced exactly when a frame from
/// its first address is dropped. Returns how many were enforced.
fn assert_enforced_is_the_truth(site: &Site, bans: &[(String, bool)]) -> usize {
    let program = site.attached();
    let mut enforced = 0;
    for (network, said) in bans {
        let net: ipnet::IpNet = network.parse().unwrap();
        let dropped = program.run(&frames::udp_from(net.network())).unwrap() == XDP_DROP;
        assert_eq!(
            *said, dropped,
            "{network}: the agent says enforced={said}, the program dropped={dropped}"
        );
        enforced += usize::from(dropped);
    }
    enforced
}

fn write_list(site: &Site, name: &str, lines: impl Iterator<Item = String>) -> String {
    let path = site.agent.dir().join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    path.to_str().unwrap().to_string()
}

fn addresses(first: u32, count: u32) -> impl Iterator<Item = String> {
    (first..first + count).map(|a| Ipv4Addr::from(a).to_string())
}

#[test]
fn a_sync_the_tables_cannot_hold_is_refused_and_leaves_the_store_as_it_was() {
    let site = Site::with_args(&["--max-bans-v4", "4096"]);
    let banned = site.banned_v4();
    let other = site.other_v4();
    let first = write_list(
        &site,
        "first.txt",
        addresses(0x6440_0000, 99).chain([other.to_string()]),
    );
    site.agent
        .cli_ok(["ban", "sync", "--file", &first, "--source", "first"]);
    let before = listed(&site);
    assert_eq!(before.len(), 100);

    // 4,097 more, the client's banned address among them: 4,197 would not fit.
    let big = write_list(
        &site,
        "big.txt",
        addresses(0x6450_0000, 4096).chain([banned.to_string()]),
    );
    let err = site.cli_fails(&["ban", "sync", "--file", &big, "--source", "big"]);
    for part in [
        "at most 4,096 IPv4 bans",
        "needs 4,197",
        "nothing was changed",
        "--max-bans-v4",
    ] {
        assert!(err.contains(part), "{err}");
    }
    assert_eq!(listed(&site), before, "the store changed");
    site.assert_passes(banned);
    site.assert_dropped(other);

    // The same by hand, one ban too many.
    let fill = write_list(&site, "fill.txt", addresses(0x6450_0000, 3996));
    site.agent
        .cli_ok(["ban", "sync", "--file", &fill, "--source", "big"]);
    let err = site.cli_fails(&["ban", "add", &banned.to_string()]);
    assert!(err.contains("at most 4,096 IPv4 bans"), "{err}");
    site.assert_passes(banned);

    let all = listed(&site);
    assert_eq!(all.len(), 4096);
    assert_eq!(assert_enforced_is_the_truth(&site, &all), 4096);
    let status: serde_json::Value =
        serde_json::from_str(&site.agent.cli_ok(["status", "--json"])).unwrap();
    assert_eq!(status["bans_v4"]["used"], 4096, "{status}");
}

#[test]
fn expiries_beyond_a_century_are_refused_and_nothing_is_stored() {
    let site = Site::new();
    let banned = site.banned_v4().to_string();
    for flags in [
        ["--ttl", "293y"],
        ["--ttl", "600y"],
        ["--until", "9999-12-31T00:00:00Z"],
        ["--ttl", "292y98d23h47m27s"],
    ] {
        let err = site.cli_fails(&["ban", "add", &banned, flags[0], flags[1]]);
        assert!(
            err.contains("more than 100 years ahead"),
            "{flags:?}: {err}"
        );
    }
    assert!(site.bans().is_empty());
    site.assert_passes(site.banned_v4());

    // Within the bound, the kernel's deadline is the store's and a reconcile finds no drift.
    site.agent.cli_ok(["ban", "add", &banned, "--ttl", "99y"]);
    let ban = &site.bans()[0];
    assert_eq!(ban["enforced"], true, "{ban}");
    assert!(
        ban["expires_in_secs"].as_u64().unwrap() > 98 * 365 * 86_400,
        "{ban}"
    );
    site.assert_dropped(site.banned_v4());
    let log = site.agent.log();
    assert!(!log.contains("repaired drift"), "{log}");
}

#[test]
fn a_banned_source_behind_up_to_eight_priority_tags_is_dropped_and_a_ninth_is_counted() {
    let site = Site::new();
    let sink = Sink::bind(site.topology.server()).unwrap();
    let banned = site.banned_v4();
    // Without a ban the kernel delivers what is behind three and eight priority tags.
    for tags in [3, 8] {
        site.send_raw(banned, false, sink.port(), &raw::priority_tags(tags), 3);
        let got = sink.drain();
        assert_eq!(got.len(), 3, "{tags} tags: {got:?}");
    }
    site.agent.cli_ok(["ban", "add", &banned.to_string()]);
    for tags in [1, 3, 8] {
        site.send_raw(banned, false, sink.port(), &raw::priority_tags(tags), 3);
        assert_eq!(
            sink.drain(),
            Vec::<std::net::IpAddr>::new(),
            "{tags} tags: banned datagrams got through"
        );
    }
    // Unbanned sources behind tags still pass.
    site.send_raw(
        site.other_v4(),
        false,
        sink.port(),
        &raw::priority_tags(5),
        2,
    );
    assert_eq!(sink.drain().len(), 2);

    let before = site.stats()["counters"]["too_many_tags"]["packets"]
        .as_u64()
        .unwrap();
    site.send_raw(banned, false, sink.port(), &raw::priority_tags(9), 4);
    assert_eq!(
        sink.drain(),
        Vec::<std::net::IpAddr>::new(),
        "the kernel delivers nothing behind nine tags"
    );
    let after = site.stats()["counters"]["too_many_tags"]["packets"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 4);
}

#[test]
fn an_ipv4_mapped_source_is_dropped_when_its_ipv4_address_is_banned() {
    let site = Site::new();
    let sink = Sink::bind(site.topology.server()).unwrap();
    let banned = site.banned_v4();
    // IPv6 datagrams from ::ffff:<banned> reach a dual-stack socket as from <banned>.
    site.send_raw(banned, true, sink.port(), &[], 3);
    assert_eq!(sink.drain(), [banned; 3]);

    let out = site
        .agent
        .cli_ok(["ban", "add", &format!("::ffff:{banned}")]);
    assert!(out.contains("IPv4-mapped"), "{out}");
    assert_eq!(site.bans()[0]["network"], host(banned), "stored as IPv4");
    site.send_raw(banned, true, sink.port(), &[], 3);
    assert_eq!(
        sink.drain(),
        Vec::<std::net::IpAddr>::new(),
        "mapped datagrams of a banned address got through"
    );
    site.assert_dropped(banned);

    // The allowlist covers the mapped form as well.
    site.agent
        .cli_ok(["ban", "add", &format!("{}/24", banned), "--force"]);
    site.agent.cli_ok(["allow", "add", &banned.to_string()]);
    site.send_raw(banned, true, sink.port(), &[], 2);
    assert_eq!(sink.drain(), [banned; 2]);
}

/// `tracking ban sync` of `list` started in the background.
fn sync_in_background(site: &Site, list: &str) -> std::process::Child {
    Command::new(tests::binary::agent().unwrap())
        .args(["--socket", site.agent.socket_path().to_str().unwrap()])
        .args(["ban", "sync", "--file", list, "--source", "million"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn after_a_sigkill_in_the_middle_of_a_million_line_sync_enforced_is_what_the_program_does() {
    let mut site = Site::new();
    let million = write_list(&site, "million.txt", addresses(0x6440_0000, 1_000_000));
    let empty = write_list(&site, "empty.txt", std::iter::empty());
    // How long a whole sync takes here, to kill the next one in the middle.
    let started = Instant::now();
    let status = sync_in_background(&site, &million).wait().unwrap();
    assert!(status.success());
    let whole = started.elapsed();
    site.agent
        .cli_ok(["ban", "sync", "--file", &empty, "--source", "million"]);

    for fraction in [0.5, 0.85] {
        let mut sync = sync_in_background(&site, &million);
        std::thread::sleep(whole.mul_f64(fraction));
        site.agent.kill9();
        let _ = sync.wait();
        site.agent.restart().unwrap();
        let bans = listed(&site);
        assert!(
            bans.is_empty() || bans.len() == 1_000_000,
            "a sync is all or nothing in the store: {} bans",
            bans.len()
        );
        let enforced = assert_enforced_is_the_truth(&site, &bans);
        assert_eq!(
            enforced,
            bans.len(),
            "killed at {fraction} of a sync, restarted: every stored ban is enforced"
        );
        println!(
            "killed {:?} into a sync of {whole:?}: {} bans stored, all enforced",
            whole.mul_f64(fraction),
            bans.len()
        );
        site.agent
            .cli_ok(["ban", "sync", "--file", &empty, "--source", "million"]);
    }
}

#[test]
fn a_fleet_host_whose_tables_are_smaller_than_the_store_enforces_a_subset_and_says_so() {
    let database = tracking_agent::store::postgres::test_server::database();
    let big = Site::with_options(|o| o.database(&database));
    let small = Site::with_options(|o| o.database(&database).args(["--max-bans-v4", "100"]));
    // 150 single addresses and a /24, on the big host.
    let list = write_list(
        &big,
        "fleet.txt",
        addresses(0x6440_0000, 149).chain(["198.51.100.0/24".to_string()]),
    );
    big.agent
        .cli_ok(["ban", "sync", "--file", &list, "--source", "fleet"]);

    // The small host hears of it and holds what fits: the /24 first, then by address.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let status: serde_json::Value =
            serde_json::from_str(&small.agent.cli_ok(["status", "--json"])).unwrap();
        if status["bans_v4"]["left_out"] == 50 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status["bans_v4"]["used"], 100, "{status}");
    assert_eq!(status["bans_v4"]["left_out"], 50, "{status}");
    let shown = small.agent.cli_ok(["status"]);
    assert!(
        shown.contains("50 IPv4 bans of the store are not enforced"),
        "{shown}"
    );

    let bans = listed(&small);
    assert_eq!(bans.len(), 150);
    assert_eq!(assert_enforced_is_the_truth(&small, &bans), 100);
    let enforced: Vec<&str> = bans
        .iter()
        .filter(|(_, e)| *e)
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(enforced.contains(&"198.51.100.0/24"));
    assert!(enforced.contains(&"100.64.0.98/32"));
    assert!(!enforced.contains(&"100.64.0.99/32"));
    // The big host enforces all of them.
    assert_eq!(assert_enforced_is_the_truth(&big, &listed(&big)), 150);
}
