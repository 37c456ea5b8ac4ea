//! systemd: `cargo xtask install --prefix` stages the binary, the unit and an example
//! configuration; `systemd-analyze verify` accepts the unit; the agent runs with exactly the
//! capabilities the unit grants (and fails without any one of them); and `READY=1` reaches
//! `$NOTIFY_SOCKET` only once the filter is attached and holds the store's bans.

use std::{
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tests::{AgentOptions, binary, require_root, site::Site};

/// Runs `command` to its end; its stdout, or a panic with what it printed.
fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn unit_text() -> String {
    std::fs::read_to_string(workspace().join("integrations/systemd/tracking.service"))
        .expect("the unit")
}

/// The values of `key=` in the unit.
fn unit_values(key: &str) -> Vec<String> {
    unit_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn cargo_xtask_install_stages_a_unit_that_systemd_analyze_verify_accepts() {
    require_root();
    let prefix = tempfile::tempdir().unwrap();
    let agent = binary::agent().unwrap();
    let mut install = Command::new(env!("CARGO"));
    install
        .args(["xtask", "install", "--prefix"])
        .arg(prefix.path())
        .arg("--binary")
        .arg(&agent)
        .current_dir(workspace());
    let printed = run(&mut install);
    assert!(printed.contains("usr/local/bin/tracking"), "{printed}");

    let mode = |p: &str| {
        std::fs::metadata(prefix.path().join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/local/bin/tracking"), 0o755);
    assert_eq!(mode("etc/systemd/system/tracking.service"), 0o644);
    assert_eq!(mode("etc/tracking/tracking.toml"), 0o600);
    // The staged binary runs, and reads the staged configuration (all comments: defaults).
    let version = run(Command::new(prefix.path().join("usr/local/bin/tracking")).arg("--version"));
    assert!(version.starts_with("tracking "), "{version}");

    // systemd-analyze needs the targets a unit is ordered after in the root it checks.
    let units = prefix.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg("/lib/systemd/system")
        .arg(&units));
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", prefix.path().display()))
        .arg(prefix.path().join("etc/systemd/system/tracking.service"))
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify ({}): {complaints}",
        verify.status
    );

    // What the unit says, which the rest of this file relies on.
    assert_eq!(unit_values("Type"), ["notify"]);
    assert_eq!(unit_values("StateDirectory"), ["tracking"]);
    assert_eq!(unit_values("RuntimeDirectory"), ["tracking"]);
    assert!(
        unit_values("ExecStop").is_empty(),
        "stopping must leave the filter"
    );
    assert_eq!(
        unit_values("ExecStart"),
        ["/usr/local/bin/tracking agent run --config /etc/tracking/tracking.toml"]
    );
}

/// The capabilities the unit's bounding set grants, as setpriv names them (`+bpf`).
fn granted() -> Vec<String> {
    let set = unit_values("CapabilityBoundingSet");
    assert_eq!(set.len(), 1, "one CapabilityBoundingSet line");
    set[0]
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect()
}

/// A script that runs the agent with only `caps` (a root process keeps no others), as
/// systemd's CapabilityBoundingSet= does.
fn with_only(dir: &Path, name: &str, caps: &[String]) -> PathBuf {
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set=-all,{} --inh-caps=-all {} \"$@\"\n",
            caps.join(","),
            binary::agent().unwrap().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn the_agent_filters_with_exactly_the_capabilities_the_unit_grants() {
    require_root();
    let caps = granted();
    assert_eq!(caps, ["+bpf", "+perfmon", "+net_admin"]);
    let scripts = tempfile::tempdir().unwrap();
    let only = with_only(scripts.path(), "granted", &caps);
    let site = Site::with_options(|o| o.binary(&only));
    let banned = site.banned_v4();
    site.assert_passes(banned);
    site.agent.cli_ok(["ban", "add", &banned.to_string()]);
    site.assert_dropped(banned);
    site.assert_passes(site.other_v4());
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", site.agent.pid().unwrap())).unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .unwrap();
    // CAP_NET_ADMIN 12, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(
        u64::from_str_radix(bounding, 16).unwrap(),
        (1 << 12) | (1 << 38) | (1 << 39)
    );

    // Without any one of them the agent cannot start, and says what the kernel refused.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let script = with_only(
            scripts.path(),
            &format!("without-{}", &missing[1..]),
            &fewer,
        );
        let dir = tempfile::tempdir().unwrap();
        let pins = format!(
            "/sys/fs/bpf/trk-caps-{}-{}",
            std::process::id(),
            &missing[1..]
        );
        let mut run = site.topology.server().command(&script);
        run.args([
            "agent",
            "run",
            "--iface",
            site.topology.server_iface(),
            "--http",
            "off",
        ])
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--database")
        .arg(dir.path().join("t.db"))
        .args(["--bpffs-dir", &pins])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = run.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent without {missing} still runs after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let _ = std::fs::remove_dir_all(&pins);
        assert!(!out.status.success(), "the agent without {missing} started");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("Operation not permitted") || said.contains("Permission denied"),
            "without {missing}: {said}"
        );
    }
    // The filter of the agent with every capability never stopped dropping.
    site.assert_dropped(banned);
}

/// Receives one notification, waiting at most 30 s.
fn notification(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_is_notified_only_once_the_filter_is_attached_and_holds_the_stores_bans() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    let mut site = Site::with_options(|o: AgentOptions| o.env("NOTIFY_SOCKET", &path));
    let first = notification(&systemd);
    assert!(first.starts_with("READY=1\n"), "{first}");
    assert!(
        first.contains(&format!("MAINPID={}\n", site.agent.pid().unwrap())),
        "{first}"
    );

    let banned = site.banned_v4();
    site.agent.cli_ok(["ban", "add", &banned.to_string()]);
    site.agent.stop();
    assert_eq!(notification(&systemd), "STOPPING=1\n");
    // The filter goes too: the next start loads new maps, fills them from the store and
    // attaches, and only then says it is ready.
    let mut detach = site.topology.server().command(binary::agent().unwrap());
    detach
        .args(["agent", "detach", "--bpffs-dir"])
        .arg(site.agent.pin_dir());
    run(&mut detach);
    site.assert_passes(banned);

    site.agent.restart().unwrap();
    let ready = notification(&systemd);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    // At the moment it said so, the program is attached and holds the ban.
    let link = site
        .topology
        .server()
        .ip(["link", "show", "dev", site.topology.server_iface()])
        .unwrap();
    assert!(
        link.contains("xdp"),
        "no XDP program attached at READY=1: {link}"
    );
    site.assert_dropped(banned);
    assert!(
        ready.contains("STATUS=filtering") && ready.contains("with 1 IPv4 and 0 IPv6 bans"),
        "{ready}"
    );
    site.assert_passes(site.other_v4());
}
