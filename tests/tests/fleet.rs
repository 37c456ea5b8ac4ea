//! A fleet: several agents, each filtering its own veth pair in network namespaces of its own,
//! on one real PostgreSQL. A ban made on one host is dropped on the others; while PostgreSQL is
//! away every host keeps enforcing, and a ban made the moment it is back reaches every host
//! within a second; every host records itself and `tracking fleet` shows them all. A whole
//! reconcile stalled in the store holds up no change, and takes none back; a host that missed
//! a ban and its unban catches up to neither. Needs root.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{frames, site::Site, xdp::XDP_DROP};
use tracking_agent::store::postgres::test_server::{self, Dedicated};

/// How long a change may take to reach the other hosts in these tests (the benchmark measures
/// how long it does take).
const REACHES: Duration = Duration::from_secs(1);

fn fleet(postgres: &Dedicated, name: &str, hosts: usize, extra: &[&str]) -> Vec<Site> {
    let url = postgres.database(name);
    (0..hosts)
        .map(|_| {
            Site::with_options(|o| {
                o.database(&url)
                    .args(["--fleet-heartbeat", "1s"])
                    .args(extra)
            })
        })
        .collect()
}

/// Waits until every host in `hosts` drops UDP from its own client's first address (`dropped`)
/// or passes it; returns how long it took, failing after `within`.
fn until_all(hosts: &[&Site], dropped: bool, within: Duration) -> Duration {
    let started = Instant::now();
    for host in hosts {
        let from = host.banned_v4();
        loop {
            let passes = host.udp(from, Duration::from_millis(60));
            if passes != dropped {
                break;
            }
            assert!(
                started.elapsed() < within,
                "{from} still {} on a host after {within:?}\n{}",
                if dropped { "passes" } else { "dropped" },
                host.agent.log_tail()
            );
        }
    }
    started.elapsed()
}

#[test]
fn a_ban_made_on_one_host_is_dropped_on_the_others_and_lifted_everywhere() {
    let postgres = Dedicated::start();
    let hosts = fleet(&postgres, "propagate", 3, &[]);
    // The three clients share their addresses: each host's own client is 10.x.y.2 in a
    // different subnet, so the test bans each host's client on the first host.
    let networks: Vec<String> = hosts.iter().map(|h| h.banned_v4().to_string()).collect();
    let mut add = vec!["ban", "add"];
    add.extend(networks.iter().map(String::as_str));
    hosts[0].agent.cli_ok(&add);
    let took = until_all(&[&hosts[1], &hosts[2]], true, REACHES);
    println!("a ban on host 1 was dropped on hosts 2 and 3 after {took:?}");
    hosts[0].assert_dropped(hosts[0].banned_v4());

    let mut rm = vec!["ban", "rm"];
    rm.extend(networks.iter().map(String::as_str));
    hosts[2].agent.cli_ok(&rm);
    let took = until_all(&[&hosts[0], &hosts[1]], false, REACHES);
    println!("an unban on host 3 let traffic through on hosts 1 and 2 after {took:?}");
}

#[test]
fn while_postgresql_is_away_every_host_enforces_and_a_ban_made_when_it_returns_reaches_all() {
    let mut postgres = Dedicated::start();
    let hosts = fleet(&postgres, "outage", 3, &[]);
    let first: Vec<String> = hosts.iter().map(|h| h.banned_v4().to_string()).collect();
    let mut add = vec!["ban", "add"];
    add.extend(first.iter().map(String::as_str));
    hosts[0].agent.cli_ok(&add);
    until_all(&hosts.iter().collect::<Vec<_>>(), true, REACHES);

    postgres.stop();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(30) {
        for host in &hosts {
            assert!(
                !host.udp(host.banned_v4(), Duration::from_millis(100)),
                "a ban was not enforced while PostgreSQL was away\n{}",
                host.agent.log_tail()
            );
        }
        thread::sleep(Duration::from_secs(2));
    }
    postgres.resume();
    // The moment the store answers again, ban the hosts' other client addresses on host 1.
    let second: Vec<String> = hosts.iter().map(|h| h.other_v4().to_string()).collect();
    let mut add = vec!["ban".to_string(), "add".to_string()];
    add.extend(second.iter().cloned());
    let made = loop {
        let out = hosts[0].agent.cli(&add);
        if out.status.success() {
            break Instant::now();
        }
        thread::sleep(Duration::from_millis(50));
    };
    for host in &hosts[1..] {
        let from = host.other_v4();
        while host.udp(from, Duration::from_millis(60)) {
            assert!(
                made.elapsed() < REACHES,
                "a ban made after the restart did not reach a host within {REACHES:?}\n{}",
                host.agent.log_tail()
            );
        }
    }
    println!(
        "a ban made as PostgreSQL returned reached every host after {:?}",
        made.elapsed()
    );
}

#[test]
fn a_whole_reconcile_waiting_on_the_store_holds_up_no_change_of_the_fleet() {
    let postgres = Dedicated::start();
    let url = postgres.database("stalled");
    // The second host compares itself whole with the store every second. Nobody reaps: a reap
    // would wait on the table too, holding the fleet's bans lock, and stop every change.
    let quiet = ["--fleet-heartbeat", "1s", "--reap-interval", "1h"];
    let first = Site::with_options(|o| o.database(&url).args(quiet));
    let second = Site::with_options(|o| {
        o.database(&url)
            .args(quiet)
            .args(["--reconcile-interval", "1s"])
    });
    let client = second.banned_v4().to_string();
    first.agent.cli_ok(["ban", "add", &client]);
    until_all(&[&second], true, REACHES);

    // Every read of the ban records now waits, the second host's next whole reconcile among
    // them, as a slow read of a million bans would make it wait.
    let lock = test_server::hold(&url, "LOCK TABLE bans IN ACCESS EXCLUSIVE MODE");
    let waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'bans'::regclass";
    let deadline = Instant::now() + Duration::from_secs(10);
    while test_server::count(&url, waiting) == 0 {
        assert!(
            Instant::now() < deadline,
            "no reconcile came to read the bans\n{}",
            second.agent.log_tail()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // An allowlist change reads and writes no ban record, on the host that makes it or on
    // the others; it reaches the second host all the same.
    first.agent.cli_ok(["allow", "add", &client]);
    let took = until_all(&[&second], false, REACHES);
    println!("an allowlist change reached a host whose reconcile waited after {took:?}");

    // The reconcile ends once the store answers, and leaves the change in place; the next
    // change is applied after it.
    drop(lock);
    thread::sleep(Duration::from_secs(2));
    second.assert_passes(second.banned_v4());
    first.agent.cli_ok(["allow", "rm", &client]);
    until_all(&[&second], true, REACHES);
}

#[test]
fn a_change_made_while_a_whole_reconcile_reads_the_store_is_not_undone_by_it() {
    // Reconciling all the time over 300,000 bans: most changes land while a reconcile is
    // reading the store (on a connection of its own) and comparing, and one that carried out
    // what it read before the change would take the change back.
    let url = test_server::database();
    let site = Site::with_options(|o| o.database(&url).args(["--reconcile-interval", "100ms"]));
    let list = site.agent.dir().join("stored.txt");
    let lines: Vec<String> = (0..300_000u32)
        .map(|i| Ipv4Addr::from(0x6440_0000 + i).to_string())
        .collect();
    std::fs::write(&list, lines.join("\n")).unwrap();
    site.agent.cli_ok([
        "ban",
        "sync",
        "--file",
        list.to_str().unwrap(),
        "--source",
        "stored",
    ]);
    let program = site.attached();
    let verdict = |addr: Ipv4Addr| program.run(&frames::udp_from(addr.into())).unwrap();
    let holds = |addr: Ipv4Addr, dropped: bool, after: &str| {
        let since = Instant::now();
        let mut checks = 0;
        while since.elapsed() < Duration::from_millis(400) {
            assert_eq!(
                verdict(addr) == XDP_DROP,
                dropped,
                "{addr} {} {:?} after its {after} (check {checks})\n{}",
                if dropped { "passed" } else { "was dropped" },
                since.elapsed(),
                site.agent.log_tail()
            );
            checks += 1;
        }
    };
    for round in 0..30u32 {
        let addr = Ipv4Addr::from(0xc612_0000 + round);
        site.agent.cli_ok(["ban", "add", &addr.to_string()]);
        holds(addr, true, "ban");
        site.agent.cli_ok(["ban", "rm", &addr.to_string()]);
        holds(addr, false, "unban");
    }
}

#[test]
fn a_host_that_missed_a_ban_and_its_unban_catches_up_to_neither() {
    let postgres = Dedicated::start();
    let hosts = fleet(&postgres, "missed", 2, &[]);
    let client = hosts[1].banned_v4().to_string();
    {
        // The second host stalls while the first bans and unbans its client: woken, it reads
        // both changes from the log at once.
        let _stalled = hosts[1].agent.paused();
        hosts[0].agent.cli_ok(["ban", "add", &client]);
        hosts[0].agent.cli_ok(["ban", "rm", &client]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Value =
            serde_json::from_str(&hosts[1].agent.cli_ok(["status", "--json"])).unwrap();
        if status["fleet"]["behind"] == 0 && status["fleet"]["applied"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the host did not catch up: {status}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    hosts[1].assert_passes(hosts[1].banned_v4());
    assert!(hosts[1].bans().is_empty(), "{:?}", hosts[1].bans());
}

fn fleet_list(host: &Site) -> Vec<Value> {
    serde_json::from_str(&host.agent.cli_ok(["fleet", "--json"])).expect("fleet JSON")
}

#[test]
fn every_host_records_itself_and_the_fleet_says_who_lags_is_full_or_went_silent() {
    let postgres = Dedicated::start();
    let url = postgres.database("seen");
    let mut hosts = [
        Site::with_options(|o| o.database(&url).args(["--fleet-heartbeat", "1s"])),
        Site::with_options(|o| o.database(&url).args(["--fleet-heartbeat", "1s"])),
        Site::with_options(|o| {
            o.database(&url)
                .args(["--fleet-heartbeat", "1s", "--max-bans-v4", "2"])
        }),
    ];
    let bans: Vec<String> = (1..=3).map(|i| format!("198.51.100.{i}")).collect();
    let mut add = vec!["ban", "add"];
    add.extend(bans.iter().map(String::as_str));
    hosts[0].agent.cli_ok(&add);
    thread::sleep(Duration::from_secs(3));
    let listed = fleet_list(&hosts[1]);
    assert_eq!(listed.len(), 3, "{listed:#?}");
    for host in &listed {
        for field in [
            "host",
            "version",
            "interfaces",
            "heartbeat",
            "applied",
            "bans_enforced",
            "capacity_v4",
        ] {
            assert!(!host[field].is_null(), "{field} missing: {host}");
        }
    }
    let full: Vec<&Value> = listed.iter().filter(|h| h["full"] == true).collect();
    assert_eq!(full.len(), 1, "the host with small tables: {listed:#?}");
    assert_eq!(full[0]["bans_enforced"], 2);
    assert!(listed.iter().all(|h| h["lag"] == 0), "{listed:#?}");
    let shown = hosts[1].agent.cli_ok(["fleet"]);
    assert!(shown.contains("full"), "{shown}");
    let status: Value = serde_json::from_str(&hosts[1].agent.cli_ok(["status", "--json"])).unwrap();
    assert_eq!(status["fleet"]["behind"], 0, "{status}");

    // A host that stops reporting is marked silent.
    hosts[2].agent.kill9();
    thread::sleep(Duration::from_secs(5));
    let listed = fleet_list(&hosts[0]);
    let silent: Vec<&Value> = listed.iter().filter(|h| h["silent"] == true).collect();
    assert_eq!(silent.len(), 1, "{listed:#?}");
    hosts[2].agent.restart().unwrap();
}

#[test]
fn two_hosts_syncing_one_source_at_once_are_serialised_and_each_says_what_it_changed() {
    let postgres = Dedicated::start();
    let hosts = fleet(&postgres, "syncs", 2, &[]);
    let list = |site: &Site, name: &str, first: u32| -> String {
        let path = site.agent.dir().join(name);
        let lines: Vec<String> = (first..first + 5000)
            .map(|i| std::net::Ipv4Addr::from(0x6440_0000 + i).to_string())
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let a = list(&hosts[0], "a.txt", 0);
    let b = list(&hosts[1], "b.txt", 2500);
    let replies: Vec<Value> = thread::scope(|scope| {
        let one = scope.spawn(|| {
            hosts[0]
                .agent
                .cli_ok(["ban", "sync", "--file", &a, "--source", "shared", "--json"])
        });
        let two = scope.spawn(|| {
            hosts[1]
                .agent
                .cli_ok(["ban", "sync", "--file", &b, "--source", "shared", "--json"])
        });
        [one.join().unwrap(), two.join().unwrap()]
            .iter()
            .map(|out| serde_json::from_str(out).unwrap())
            .collect()
    });
    // One went first and added its 5000; the other then replaced it: 2500 in common.
    let mut added: Vec<u64> = replies
        .iter()
        .map(|r| r["added"].as_u64().unwrap())
        .collect();
    added.sort();
    assert_eq!(added, [2500, 5000], "{replies:#?}");
    let second = replies.iter().find(|r| r["added"] == 2500).unwrap();
    assert_eq!(second["removed"], 2500, "{second}");
    assert_eq!(second["unchanged"], 2500, "{second}");
    assert!(
        !second["replaced"].is_null(),
        "the reply says whose list it replaced: {second}"
    );
}
