//! The harness itself, as root: namespaces, the cable between them, traffic, and that all of
//! it is gone afterwards. No agent is involved.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use std::{os::unix::fs::MetadataExt as _, path::Path};

use tests::{Agent, AgentOptions, EchoServer, Netns, Topology, bpffs, require_root, traffic};

const TIMEOUT: Duration = Duration::from_secs(2);

fn netns_list() -> String {
    let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// Whether `ip netns list` names `name` (its lines read `name` or `name (id: 3)`).
fn netns_exists(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

#[test]
fn every_client_address_reaches_the_server_over_tcp_and_udp_on_both_families() {
    require_root();
    let topology = Topology::new().unwrap();
    let echo = EchoServer::start(
        topology.server(),
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    )
    .unwrap();
    assert_eq!(topology.client_v4().len(), 3);
    assert_eq!(topology.client_v6().len(), 3);

    for from in topology.client_addrs() {
        let server = match from {
            IpAddr::V4(_) => IpAddr::from(topology.server_v4()),
            IpAddr::V6(_) => IpAddr::from(topology.server_v6()),
        };
        let to = SocketAddr::new(server, echo.port());
        topology
            .client()
            .run(|| traffic::tcp_exchange(from, to, TIMEOUT))
            .unwrap_or_else(|e| panic!("TCP from {from} to {to}: {e}"));
        topology
            .client()
            .run(|| traffic::udp_exchange(from, to, TIMEOUT))
            .unwrap_or_else(|e| panic!("UDP from {from} to {to}: {e}"));
    }

    let names = [
        topology.server().name().to_owned(),
        topology.client().name().to_owned(),
    ];
    assert!(names.iter().all(|name| netns_exists(name)));
    drop(echo);
    drop(topology);
    for name in names {
        assert!(!netns_exists(&name), "{name} is still in `ip netns list`");
    }
}

#[test]
fn an_added_client_address_is_a_usable_source() {
    require_root();
    let mut topology = Topology::new().unwrap();
    let echo = EchoServer::start(
        topology.server(),
        SocketAddr::from((topology.server_v4(), 0)),
    )
    .unwrap();
    let [a, b, c, d] = topology.server_v4().octets();
    let extra = IpAddr::from([a, b, c, d + 100]);
    topology.add_client_address(extra).unwrap();
    assert!(topology.client_addrs().contains(&extra));
    assert!(
        topology
            .client()
            .run(|| traffic::tcp_connects(extra, echo.local_addr(), TIMEOUT))
    );
    assert!(
        topology
            .client()
            .run(|| traffic::udp_roundtrip(extra, echo.local_addr(), TIMEOUT))
    );
}

#[test]
fn the_namespaces_are_isolated_from_each_other_and_from_the_host() {
    require_root();
    let topology = Topology::new().unwrap();
    let index = |name: &str| {
        let name = std::ffi::CString::new(name).unwrap();
        // SAFETY: `name` is NUL-terminated and lives across the call.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    };
    let (server_iface, client_iface) = (topology.server_iface(), topology.client_iface());
    assert!(server_iface.len() <= 15 && client_iface.len() <= 15);
    assert_ne!(topology.server().run(|| index(server_iface)), 0);
    assert_eq!(topology.server().run(|| index(client_iface)), 0);
    assert_ne!(topology.client().run(|| index(client_iface)), 0);
    assert_eq!(
        index(server_iface),
        0,
        "the host must not see test interfaces"
    );

    // An echo server in the client namespace is not reachable from the host's loopback.
    let echo = EchoServer::start(
        topology.client(),
        SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
    )
    .unwrap();
    let from = IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
    assert!(
        topology
            .client()
            .run(|| traffic::tcp_connects(from, echo.local_addr(), TIMEOUT))
    );
    assert!(!traffic::tcp_connects(from, echo.local_addr(), TIMEOUT));
}

#[test]
fn programs_in_a_namespace_see_its_interfaces_and_the_hosts_bpffs() {
    require_root();
    bpffs::ensure_mounted().unwrap();
    let topology = Topology::new().unwrap();
    let output = topology
        .server()
        .command("sh")
        .args(["-c", "ip -o link show; stat -f -c %T /sys/fs/bpf"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains(topology.server_iface()), "{stdout}");
    assert!(!stdout.contains(topology.client_iface()), "{stdout}");
    // `ip netns exec` would have remounted /sys, hiding bpffs (and the agent's pins).
    assert_eq!(stdout.lines().last(), Some("bpf_fs"), "{stdout}");
}

#[test]
fn a_namespace_is_deleted_even_when_its_test_panics() {
    require_root();
    let name = std::panic::catch_unwind(|| {
        let netns = Netns::new("panic").unwrap();
        assert!(netns_exists(netns.name()));
        assert!(netns.path().exists());
        std::panic::panic_any(netns.name().to_owned());
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert!(!netns_exists(&name), "{name} outlived its panicking test");
}

#[test]
fn a_panic_inside_a_namespace_reaches_the_test() {
    require_root();
    let netns = Netns::new("inner-panic").unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        netns.run(|| panic!("inside"));
    }));
    assert_eq!(*caught.unwrap_err().downcast::<&str>().unwrap(), "inside");
}

/// A stand-in for `tracking` with just enough of its command line for the runner: `agent run`
/// answers every request on `--socket` with 200, as the agent answers `GET /v1/status` once it
/// is ready (or exits when `FAKE_AGENT=exit`), `agent detach` leaves a note next
/// to the script, `--socket <sock> <args>` prints `cli <args>`.
const FAKE_AGENT: &str = r#"#!/bin/sh
here=$(dirname "$0")
if [ "$1" = "--socket" ]; then shift 2; echo "cli $*"; exit 0; fi
if [ "$1 $2" = "agent detach" ]; then echo "$*" >> "$here/detached"; exit 0; fi
if [ "$1 $2" = "agent run" ]; then
    echo "args: $*"
    if [ "$FAKE_AGENT" = "exit" ]; then echo "fake agent gives up"; exit 3; fi
    socket=""
    while [ $# -gt 0 ]; do [ "$1" = "--socket" ] && socket="$2"; shift; done
    exec python3 -c '
import os, socket, sys
path = sys.argv[1]
if os.path.exists(path):
    os.unlink(path)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(16)
print("listening", flush=True)
while True:
    connection = server.accept()[0]
    connection.recv(4096)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    connection.close()
' "$socket"
fi
exit 64
"#;

fn fake_agent(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("tracking");
    std::fs::write(&path, FAKE_AGENT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether process `pid` is in the namespace: both name the same nsfs inode.
fn in_netns(pid: u32, netns: &Netns) -> bool {
    let process = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    let named = std::fs::metadata(netns.path()).unwrap();
    (process.dev(), process.ino()) == (named.dev(), named.ino())
}

#[test]
fn the_agent_runner_starts_talks_to_kills_restarts_and_cleans_up_after_the_agent() {
    require_root();
    let scripts = tempfile::tempdir().unwrap();
    let topology = Topology::new().unwrap();
    let options = AgentOptions::new(topology.server_iface())
        .binary(fake_agent(scripts.path()))
        .args(["--monitor", "--extra"]);
    let mut agent = Agent::start(topology.server(), options).unwrap();

    let pid = agent.pid().unwrap();
    assert!(
        in_netns(pid, topology.server()),
        "the agent runs in the server namespace"
    );
    assert!(
        agent
            .pin_dir()
            .to_string_lossy()
            .starts_with("/sys/fs/bpf/trk-test-")
    );
    assert!(bpffs::is_bpffs(agent.pin_dir()).unwrap());
    let log = agent.log();
    let expected = format!(
        "args: agent run --iface {} --socket {} --database {} --bpffs-dir {} --monitor --extra",
        topology.server_iface(),
        agent.socket_path().display(),
        agent.database_path().display(),
        agent.pin_dir().display(),
    );
    assert!(log.contains(&expected), "{log}");

    assert_eq!(agent.cli_ok(["ban", "list"]), "cli ban list\n");

    assert!(!agent.kill9().unwrap().success());
    assert_eq!(agent.pid(), None);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "SIGKILL reached the agent"
    );

    agent.restart().unwrap();
    let restarted = agent.pid().unwrap();
    assert_ne!(restarted, pid);
    assert!(in_netns(restarted, topology.server()));
    assert_eq!(agent.log().matches("listening").count(), 2);

    let (pins, dir) = (agent.pin_dir().to_owned(), agent.dir().to_owned());
    drop(agent);
    assert!(
        !Path::new(&format!("/proc/{restarted}")).exists(),
        "drop stopped the agent"
    );
    let detached = std::fs::read_to_string(scripts.path().join("detached")).unwrap();
    assert_eq!(
        detached,
        format!("agent detach --bpffs-dir {}\n", pins.display())
    );
    assert!(!pins.exists(), "the pin directory is removed");
    assert!(!dir.exists(), "the temporary directory is removed");
}

#[test]
fn an_agent_that_exits_at_start_fails_the_test_with_its_log() {
    require_root();
    let scripts = tempfile::tempdir().unwrap();
    let topology = Topology::new().unwrap();
    let options = AgentOptions::new(topology.server_iface())
        .binary(fake_agent(scripts.path()))
        .env("FAKE_AGENT", "exit");
    let panic = std::panic::catch_unwind(|| Agent::start(topology.server(), options))
        .map(|_| ())
        .unwrap_err();
    let message = panic.downcast::<String>().unwrap();
    assert!(message.contains("exited (exit status: 3)"), "{message}");
    assert!(message.contains("fake agent gives up"), "{message}");
    // Even so, the runner cleaned up after it.
    assert!(scripts.path().join("detached").exists());
}
