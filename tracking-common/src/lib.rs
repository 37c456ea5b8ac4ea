//! What the XDP program and the agent must agree on, byte for byte.
//!
//! - [`maps`]: the name of every map, which is also its pin name.
//! - [`layout`]: the shape of the ban tables, the per-slot state and the configuration words.
//! - [`hash`]: how a network is hashed to its two candidate buckets and to its filter bit.
//! - [`stats`]: the per-CPU verdict counters.
//!
//! Both sides compile this crate: the kernel side as `no_std` for `bpfel-unknown-none`, the agent
//! with the `user` feature, which adds the `aya::Pod` impls needed to read and write the maps.
//! Everything here is plain data and pure functions so that a lookup done by the agent (to place
//! an entry) lands in exactly the bucket the program will read.
#![no_std]

pub mod hash;
pub mod layout;
pub mod maps;
pub mod stats;

pub use layout::{Bucket4, Bucket6, Entry4, Entry6, SlotState};
