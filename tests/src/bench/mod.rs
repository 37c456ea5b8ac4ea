//! The benchmarks of `cargo xtask bench`: the agent measured beside the tools an operator would
//! otherwise use, in one run on one machine, each comparison repeated and reported as medians
//! with their spread. Shared machines are noisy, so ratios taken in the same run are what count.
//!
//! - [`packet`]: cost per packet through `BPF_PROG_TEST_RUN`, against a program that only passes.

pub mod packet;
pub mod report;

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
