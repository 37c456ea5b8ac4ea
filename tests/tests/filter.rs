//! The agent filtering real traffic: a client namespace talks to a server namespace over a veth
//! pair, the agent runs in the server namespace with XDP on its end, and the `tracking` CLI
//! manages bans. Needs root; run with `cargo xtask test`.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tests::site::{PASS, Site, host};

#[test]
fn tcp_and_udp_from_a_banned_source_are_dropped_and_other_sources_pass() {
    let site = Site::new();
    site.assert_passes(site.banned_v4());
    site.agent.cli_ok([
        "ban",
        "add",
        &site.banned_v4().to_string(),
        &site.banned_v6().to_string(),
        "--reason",
        "test",
    ]);

    site.assert_dropped(site.banned_v4());
    site.assert_dropped(site.banned_v6());
    site.assert_passes(site.other_v4());
    site.assert_passes(site.other_v6());

    let stats = site.stats();
    assert!(
        stats["counters"]["dropped"]["packets"].as_u64().unwrap() >= 4,
        "{stats}"
    );
    assert!(
        stats["counters"]["passed"]["packets"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(site.hits(&host(site.banned_v4())) >= 2);
    assert!(site.hits(&host(site.banned_v6())) >= 2);
    let top = &stats["top"];
    assert!(
        top.as_array()
            .unwrap()
            .iter()
            .any(|t| t["network"] == host(site.banned_v4())),
        "{stats}"
    );
}

#[test]
fn a_banned_network_drops_every_address_inside_it() {
    let site = Site::new();
    let v4 = site.topology.client_v4()[0];
    let net = format!("{}/30", std::net::Ipv4Addr::from(u32::from(v4) & !3));
    let out = site.agent.cli_ok(["ban", "add", &net]);
    assert!(out.contains("banned"), "{out}");
    for a in site.topology.client_v4() {
        let inside = u32::from(*a) & !3 == u32::from(v4) & !3;
        if inside {
            site.assert_dropped((*a).into());
        } else {
            site.assert_passes((*a).into());
        }
    }
}

#[test]
fn unbanning_restores_traffic() {
    let site = Site::new();
    site.agent
        .cli_ok(["ban", "add", &site.banned_v4().to_string()]);
    site.assert_dropped(site.banned_v4());
    let out = site
        .agent
        .cli_ok(["ban", "rm", &site.banned_v4().to_string()]);
    assert!(out.contains("unbanned"), "{out}");
    site.assert_passes(site.banned_v4());
    assert!(site.bans().is_empty());
}

#[test]
fn a_ban_with_a_short_ttl_stops_dropping_on_its_own() {
    let site = Site::with_args(&["--reap-interval", "1s"]);
    site.agent
        .cli_ok(["ban", "add", &site.banned_v4().to_string(), "--ttl", "3s"]);
    site.assert_dropped(site.banned_v4());
    let listed = site.bans();
    let left = listed[0]["expires_in_secs"].as_u64().unwrap();
    assert!(left <= 3, "{listed:?}");
    std::thread::sleep(Duration::from_secs(3));
    site.assert_passes(site.banned_v4());
    // The reaper removes the expired record too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !site.bans().is_empty() {
        assert!(
            Instant::now() < deadline,
            "expired ban still listed: {:?}",
            site.bans()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ban_sync_makes_the_bans_of_a_source_equal_to_the_list() {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("drop.txt");
    std::fs::write(
        &list,
        format!(
            "; Spamhaus DROP style\n{} ; SBL1\n198.51.100.0/24 ; SBL2\n# comment\n\n{}\n",
            site.banned_v4(),
            site.banned_v6()
        ),
    )
    .unwrap();
    let out = site
        .agent
        .cli_ok(["ban", "sync", "--file", list.to_str().unwrap()]);
    assert!(
        out.contains("synced drop: 3 added, 0 updated, 0 removed"),
        "{out}"
    );
    site.assert_dropped(site.banned_v4());
    site.assert_dropped(site.banned_v6());
    let sbl1 = site
        .bans()
        .into_iter()
        .find(|b| b["network"] == host(site.banned_v4()))
        .unwrap();
    assert_eq!(
        (sbl1["source"].as_str(), sbl1["reason"].as_str()),
        (Some("drop"), Some("SBL1"))
    );

    // A manual ban on the same network survives the list dropping it.
    site.agent
        .cli_ok(["ban", "add", &site.banned_v6().to_string()]);
    std::fs::write(
        &list,
        format!("198.51.100.0/24 ; SBL2\n{}\n", site.other_v4()),
    )
    .unwrap();
    let out = site
        .agent
        .cli_ok(["ban", "sync", "--file", list.to_str().unwrap()]);
    assert!(
        out.contains("1 added, 0 updated, 2 removed, 1 unchanged"),
        "{out}"
    );
    site.assert_passes(site.banned_v4());
    site.assert_dropped(site.other_v4());
    site.assert_dropped(site.banned_v6());

    // One bad line: the whole list is refused and nothing changes.
    std::fs::write(&list, format!("{}\n10.0.0.300\n", site.banned_v4())).unwrap();
    let err = site.cli_fails(&["ban", "sync", "--file", list.to_str().unwrap()]);
    assert!(
        err.contains("line 2") && err.contains("10.0.0.300"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    site.assert_passes(site.banned_v4());
    site.assert_dropped(site.other_v4());
}

#[test]
fn ban_sync_reads_standard_input() {
    let site = Site::new();
    let mut child = std::process::Command::new(tests::binary::agent().unwrap())
        .args([
            "--socket",
            site.agent.socket_path().to_str().unwrap(),
            "ban",
            "sync",
            "--file",
            "-",
            "--source",
            "feed",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", site.banned_v4()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("synced feed: 1 added"));
    site.assert_dropped(site.banned_v4());
}

#[test]
fn a_killed_agent_leaves_bans_enforced_and_a_restarted_one_adopts_them() {
    let mut site = Site::new();
    site.agent
        .cli_ok(["ban", "add", &site.banned_v4().to_string()]);
    site.assert_dropped(site.banned_v4());
    let hits = site.hits(&host(site.banned_v4()));

    site.agent.kill9();
    site.assert_dropped(site.banned_v4());
    site.assert_passes(site.other_v4());
    let err = site.cli_fails(&["ban", "ls"]);
    assert!(err.contains("the agent is not running"), "{err}");

    site.agent.restart().unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&site.agent.cli_ok(["status", "--json"])).unwrap();
    assert_eq!(status["adopted"], true, "{status}");
    assert_eq!(status["interfaces"][0]["adopted"], true, "{status}");
    site.assert_dropped(site.banned_v4());
    assert!(
        site.hits(&host(site.banned_v4())) > hits,
        "hit counts carry over"
    );
    site.agent
        .cli_ok(["ban", "rm", &site.banned_v4().to_string()]);
    site.assert_passes(site.banned_v4());
}

/// Counts datagrams arriving from `from` (and from anyone else) at a UDP port of the server, in
/// the background.
struct Counter {
    count: Arc<AtomicU64>,
    others: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Counter {
    fn start(site: &Site, from: IpAddr) -> Counter {
        let socket = site
            .topology
            .server()
            .run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let count = Arc::new(AtomicU64::new(0));
        let others = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, o, s) = (count.clone(), others.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    if peer.ip() == from { &c } else { &o }.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Counter {
            count,
            others,
            stop,
            port,
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn restarting_with_new_table_sizes_never_lets_a_banned_source_through() {
    let mut site = Site::with_args(&["--max-bans-v4", "1000"]);
    let banned = site.banned_v4();
    site.agent.cli_ok(["ban", "add", &banned.to_string()]);
    let counter = Counter::start(&site, banned);
    let to = SocketAddr::new(site.topology.server_v4().into(), counter.port);
    let sending = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (sending, sent) = (sending.clone(), sent.clone());
        let client = site.topology.client().path().to_path_buf();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(client).unwrap();
            // SAFETY: setns on this thread only.
            assert_eq!(
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) },
                0
            );
            let socket = UdpSocket::bind(SocketAddr::new(banned, 0)).unwrap();
            while sending.load(Ordering::Relaxed) {
                if socket.send_to(b"flood", to).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // A new generation of maps: load, fill, swap the program in the link, retire the old maps.
    site.agent.stop();
    std::thread::sleep(Duration::from_millis(300));
    site.agent.set_args(["--max-bans-v4", "5000"]);
    site.agent.restart().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sending.store(false, Ordering::Relaxed);
    sender.join().unwrap();
    assert!(
        sent.load(Ordering::Relaxed) > 500,
        "the sender sent too little to tell"
    );
    assert_eq!(
        counter.count.load(Ordering::Relaxed),
        0,
        "banned datagrams got through during the restart"
    );
    // The counter does see datagrams that are not banned.
    let other = site.other_v4();
    site.topology.client().run(|| {
        let socket = UdpSocket::bind(SocketAddr::new(other, 0)).unwrap();
        for _ in 0..20 {
            socket.send_to(b"hello", to).unwrap();
        }
    });
    let deadline = Instant::now() + PASS;
    while counter.others.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        counter.others.load(Ordering::Relaxed) > 0,
        "the counter saw nothing from an unbanned source"
    );
    let status: serde_json::Value =
        serde_json::from_str(&site.agent.cli_ok(["status", "--json"])).unwrap();
    assert_eq!(status["bans_v4"]["capacity"], 5000, "{status}");
    assert_eq!(status["adopted"], false, "new sizes, new maps: {status}");
    assert_eq!(
        status["interfaces"][0]["adopted"], true,
        "the link was kept: {status}"
    );
    site.assert_dropped(banned);
    site.assert_passes(site.other_v4());
}

#[test]
fn detach_removes_the_filter_and_its_pins() {
    let mut site = Site::new();
    site.agent
        .cli_ok(["ban", "add", &site.banned_v4().to_string()]);
    site.assert_dropped(site.banned_v4());
    site.agent.stop();
    site.assert_dropped(site.banned_v4());
    let pins = site.agent.pin_dir().to_path_buf();
    assert!(pins.exists());
    let out = std::process::Command::new(tests::binary::agent().unwrap())
        .args(["agent", "detach", "--bpffs-dir", pins.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("detached from {}", site.topology.server_iface())),
        "{text}"
    );
    assert!(!pins.exists(), "pins left behind");
    site.assert_passes(site.banned_v4());
    let link = site
        .topology
        .server()
        .ip(["-d", "link", "show", site.topology.server_iface()])
        .unwrap();
    assert!(!link.contains("prog/xdp"), "XDP still attached: {link}");
}

#[test]
fn the_allowlist_keeps_a_network_reachable_whatever_is_banned() {
    let site = Site::new();
    let mine = site.banned_v4().to_string();
    site.agent
        .cli_ok(["allow", "add", &mine, "--note", "my office"]);
    let err = site.cli_fails(&["ban", "add", &mine]);
    assert!(
        err.contains("overlaps the allowlisted") && err.contains("--force"),
        "{err}"
    );
    assert!(site.bans().is_empty(), "nothing was changed");

    site.agent.cli_ok(["ban", "add", "0.0.0.0/0", "--force"]);
    site.assert_passes(site.banned_v4());
    site.assert_dropped(site.other_v4());
    assert!(
        site.stats()["counters"]["allowed"]["packets"]
            .as_u64()
            .unwrap()
            > 0
    );

    site.agent.cli_ok(["allow", "rm", &mine]);
    site.assert_dropped(site.banned_v4());
    let listed = site.agent.cli_ok(["allow", "ls"]);
    assert!(listed.contains("allowlist is empty"), "{listed}");
}

#[test]
fn banning_everything_needs_force() {
    let site = Site::new();
    let err = site.cli_fails(&["ban", "add", "::/0"]);
    assert!(
        err.contains("::/0 would drop all IPv6 traffic; pass --force"),
        "{err}"
    );
    site.assert_passes(site.banned_v6());
}

#[test]
fn monitor_mode_counts_matches_and_drops_nothing() {
    let site = Site::with_args(&["--monitor"]);
    site.agent
        .cli_ok(["ban", "add", &site.banned_v4().to_string()]);
    site.assert_passes(site.banned_v4());
    let stats = site.stats();
    assert!(
        stats["counters"]["monitored"]["packets"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert_eq!(
        stats["counters"]["dropped"]["packets"].as_u64().unwrap(),
        0,
        "{stats}"
    );
    assert!(site.hits(&host(site.banned_v4())) > 0);
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let site = Site::new();
    let err = site.cli_fails(&["ban", "add", "192.0.2.1", "192.0.2.300"]);
    assert!(
        err.contains("`192.0.2.300` is not an IP address or network; nothing was changed"),
        "{err}"
    );
    assert!(site.bans().is_empty());
    let out = site.agent.cli_ok(["ban", "add", "192.0.2.77/24"]);
    assert!(
        out.contains("warning: 192.0.2.77/24 has host bits set; using 192.0.2.0/24"),
        "{out}"
    );
    assert!(out.contains("banned 192.0.2.0/24"), "{out}");
}

#[test]
fn log_matches_puts_each_match_from_the_program_in_the_agent_log() {
    let site = Site::with_args(&["--log-matches"]);
    let banned = site.banned_v4();
    site.agent.cli_ok(["ban", "add", &banned.to_string()]);
    site.assert_dropped(banned);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = site.agent.log();
        if log.contains(&format!("ban match {banned}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no match logged:\n{}",
            site.agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
