//! The benchmarks of `cargo xtask bench`: the agent measured beside the tools an operator would
//! otherwise use, in one run on one machine, each comparison repeated and reported as medians
//! with their spread. Shared machines are noisy, so ratios taken in the same run are what count.
//!
//! - [`packet`]: cost per packet through `BPF_PROG_TEST_RUN` beside xdp-filter and the reference
//!   program (kernel hash maps and LPM tries), hot and cold, as the lists grow.
//! - [`flood`]: a UDP flood from a banned source over a veth, dropped by the agent's XDP program,
//!   xdp-filter, the reference program, nftables or iptables with an ipset, or received by a
//!   socket.
//! - [`load`]: lists of 10,000 to a million lines loaded with `tracking ban sync`, `nft -f` and
//!   `ipset restore`, and a 1% re-sync.
//! - [`programs`], [`reference`] and [`xdp_filter`]: the benchmarks' own XDP programs (built from
//!   `tests/ebpf`, never part of the agent), the reference peer, and xdp-filter as a peer.
//! - [`lists`], [`firewall`] and [`release`]: the lists in each tool's format, the peers' tables
//!   and sets as guards, and the release agent.
//! - [`hook`]: visits a second through the HTTP hook, SQLite and PostgreSQL, against an HTTP floor.
//! - [`active`]: active counts from memory at the server, against COUNT queries on each store.
//! - [`memory`]: kernel memory of the maps, and the agent's peak RSS under the hook's load;
//!   [`map_memory`]: what the kernel says a map takes.
//! - [`fleet`]: a change on one agent of a fleet enforced on the others, timed by the kernel's
//!   receive timestamps of a [`stream`], with 0 to 1,000,000 bans stored.
//! - [`django`]: request latency through Django with and without the package's middleware.
//! - [`site`] and [`wrk`]: the agent or the floor in a namespace, and the load generator;
//!   [`cpu`]: who used the cores meanwhile.

pub mod active;
pub mod cpu;
pub mod django;
pub mod firewall;
pub mod fleet;
pub mod flood;
pub mod hook;
pub mod lists;
pub mod load;
pub mod map_memory;
pub mod memory;
pub mod packet;
pub mod programs;
pub mod reference;
pub mod release;
pub mod report;
pub mod site;
pub mod stream;
pub mod wrk;
pub mod xdp_filter;

pub use report::{Report, Row, machine};

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// The sizes the targets are stated for.
    Full,
    /// Small sizes that finish in under a minute: the test suite runs these so that the
    /// benchmarks keep working.
    Quick,
}

/// A small deterministic generator for benchmark data.
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Xorshift(seed | 1)
    }

    #[expect(
        clippy::should_implement_trait,
        reason = "a generator, not an iterator"
    )]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
