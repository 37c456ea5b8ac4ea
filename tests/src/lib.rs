//! The harness the integration tests (in `tests/tests/`) use to run the real agent against real
//! traffic, each test in network namespaces of its own so that tests run in parallel.
//!
//! - [`root`]: [`require_root`]; these tests need root and never pass by skipping.
//! - [`netns`]: [`Netns`], a throwaway network namespace, and running code or programs inside it.
//! - [`veth`]: [`VethPair`], a virtual cable between two namespaces, with addresses.
//! - [`topology`]: [`Topology`], the standard server and client namespaces with one cable.
//! - [`traffic`]: whether TCP and UDP from a given source address get through.
//! - [`echo`]: [`EchoServer`], TCP and UDP echo for [`traffic`] to talk to.
//! - [`site`]: [`site::Site`], the agent and an echo server in the server namespace of a
//!   [`Topology`], with assertions on what gets through.
//! - [`agent`]: [`Agent`], the real `tracking` agent in a namespace, with its own socket,
//!   database and bpffs pins; and the CLI talking to it. [`in_process`]: the same agent run
//!   by the agent's library on threads of the test process.
//! - [`binary`]: which `tracking` binary the harness runs.
//! - [`bpffs`]: makes sure bpffs is mounted where pins go.
//! - [`django`]: the Django package's example site under gunicorn in a namespace.
//! - [`unique`]: names and subnets that no other test, or other test process, uses.
//! - [`browser`]: [`Browser`], a headless Chromium in a namespace, driven over the DevTools
//!   protocol: load a page, read its DOM, take a screenshot.
//! - [`web`]: [`web::WebSite`], the agent's HTTP listener with known tokens, logins and
//!   browsers for the tests of the HTTP side.
//! - [`crowdsec`]: [`crowdsec::Crowdsec`], a real CrowdSec Local API in a test namespace.
//! - [`fail2ban`]: [`fail2ban::Fail2ban`], a real fail2ban-server banning through the CLI.
//! - [`http`]: a minimal HTTP client for the agent's HTTP listener inside a namespace.
//! - [`dbip`]: DB-IP City Lite's real files, fetched by `cargo xtask setup --geoip`.
//! - [`loaded`]: [`Loaded`], the agent's XDP program loaded with throwaway pins, not attached.
//! - [`raw`]: frames the socket API cannot send (VLAN tags, IPv4-mapped sources) put on the
//!   wire, and a UDP [`raw::Sink`] counting what arrives.
//! - [`frames`]: hand-built Ethernet frames; [`xdp`]: running a loaded XDP program on them
//!   (`BPF_PROG_TEST_RUN`), the agent's attached one included, from any thread.
//!
//! Everything is a guard that cleans up on drop, also when a test panics.
//!
//! ```no_run
//! use std::{net::SocketAddr, time::Duration};
//! use tests::{Agent, AgentOptions, EchoServer, Topology, require_root, traffic};
//!
//! require_root();
//! let topology = Topology::new().unwrap();
//! let echo = EchoServer::start(topology.server(), "[::]:0".parse().unwrap()).unwrap();
//! let agent = Agent::start(topology.server(), AgentOptions::new(topology.server_iface())).unwrap();
//! let to = SocketAddr::new(topology.server_v4().into(), echo.port());
//! let from = topology.client_v4()[0].into();
//! assert!(topology.client().run(|| traffic::tcp_connects(from, to, Duration::from_secs(2))));
//! println!("{}", agent.cli_ok(["ban", "list"]));
//! ```

pub mod agent;
pub mod bench;
pub mod binary;
pub mod bpffs;
pub mod browser;
pub mod crowdsec;
pub mod dbip;
pub mod django;
pub mod echo;
pub mod fail2ban;
pub mod frames;
pub mod http;
pub mod in_process;
pub mod loaded;
pub mod netns;
pub mod raw;
pub mod root;
pub mod site;
pub mod topology;
pub mod traffic;
pub mod unique;
pub mod veth;
pub mod web;
pub mod xdp;

mod command;

pub use agent::{Agent, AgentOptions};
pub use browser::Browser;
pub use echo::EchoServer;
pub use ipnet::IpNet;
pub use loaded::Loaded;
pub use netns::Netns;
pub use root::require_root;

/// Raises this process's soft limit of open files to its hard limit: tests that hold thousands
/// of connections need a descriptor each.
pub fn raise_open_files() {
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
pub use topology::Topology;
pub use traffic::{tcp_connects, udp_roundtrip};
pub use veth::{VethEnd, VethPair, VethSpec};

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_across_threads<T: Send + Sync>() {}

    #[test]
    fn guards_can_be_used_from_namespace_threads() {
        // `Netns::run` closures are `Send`, so what they borrow must be `Sync`.
        shared_across_threads::<Netns>();
        shared_across_threads::<Topology>();
        shared_across_threads::<EchoServer>();
        shared_across_threads::<Agent>();
    }
}
