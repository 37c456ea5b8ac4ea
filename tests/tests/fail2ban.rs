//! The fail2ban action against a real fail2ban-server: failures from an address in a test
//! namespace, written to the log a jail watches, get it dropped by XDP for the jail's ban
//! time, under the jail's name as the source; the unban restores traffic; stopping fail2ban
//! lifts its bans.

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{
    binary,
    fail2ban::{Fail2ban, Jail},
    site::Site,
};

fn bans_of(site: &Site, source: &str) -> Vec<Value> {
    let page: Value = serde_json::from_str(
        &site
            .agent
            .cli_ok(["ban", "ls", "--source", source, "--json"]),
    )
    .expect("ban ls JSON");
    page["bans"].as_array().expect("a list of bans").clone()
}

/// Waits until the source holds `count` bans, enforced by the kernel.
fn until_banned(site: &Site, f2b: &Fail2ban, source: &str, count: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let bans = bans_of(site, source);
        if bans.len() == count && bans.iter().all(|b| b["enforced"] == true) {
            return bans;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{source} holds {bans:?}, not {count} bans, after 15 s\n{}",
            f2b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failures_get_an_address_dropped_for_the_ban_time_and_the_unban_restores_traffic() {
    let site = Site::new();
    assert!(
        std::process::Command::new("fail2ban-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "fail2ban-server is not installed: run `cargo xtask setup` (Debian's fail2ban package)"
    );
    let tracking = format!(
        "{} --socket {}",
        binary::agent().unwrap().display(),
        site.agent.socket_path().display()
    );
    let mut f2b = Fail2ban::start(
        &[
            Jail {
                name: "app".into(),
                bantime: 600,
                maxretry: 3,
            },
            Jail {
                name: "app-forever".into(),
                bantime: -1,
                maxretry: 5,
            },
        ],
        &tracking,
    )
    .expect("fail2ban");
    let v4 = site.banned_v4();
    let v6 = site.banned_v6();
    site.assert_passes(v4);
    site.assert_passes(v6);

    // Two failures are not enough; the third bans, for the jail's ban time.
    f2b.fail(&v4.to_string(), 2).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(bans_of(&site, "app").is_empty());
    site.assert_passes(v4);
    f2b.fail(&v4.to_string(), 1).unwrap();
    let bans = until_banned(&site, &f2b, "app", 1);
    assert_eq!(bans[0]["network"], format!("{v4}/32"));
    assert_eq!(bans[0]["reason"], "fail2ban app");
    let left = bans[0]["expires_in_secs"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{left}");
    site.assert_dropped(v4);
    site.assert_passes(site.other_v4());

    // IPv6 too. The jail whose bans never end bans after five failures: the IPv6 address's
    // five, and the IPv4 address's three and two more.
    f2b.fail(&v6.to_string(), 5).unwrap();
    f2b.fail(&v4.to_string(), 2).unwrap();
    until_banned(&site, &f2b, "app", 2);
    let forever = until_banned(&site, &f2b, "app-forever", 2);
    assert!(
        forever.iter().all(|b| b["expires"].is_null()),
        "{forever:?}"
    );
    site.assert_dropped(v6);

    // fail2ban's unban lifts the jail's ban; the address stays banned by the other jail
    // until that one unbans too.
    f2b.client(["set", "app", "unbanip", &v4.to_string()])
        .unwrap();
    until_banned(&site, &f2b, "app", 1);
    site.assert_dropped(v4);
    f2b.client(["set", "app-forever", "unbanip", &v4.to_string()])
        .unwrap();
    until_banned(&site, &f2b, "app-forever", 1);
    site.assert_passes(v4);

    // Stopping fail2ban lifts every ban of its jails.
    f2b.stop().unwrap();
    assert!(bans_of(&site, "app").is_empty());
    assert!(bans_of(&site, "app-forever").is_empty());
    site.assert_passes(v6);
}
