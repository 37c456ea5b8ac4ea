//! Nothing for the host: the XDP program is the `tracking` binary of this crate (`src/main.rs`),
//! built for `bpfel-unknown-none` by `tracking-agent`'s build script.
#![no_std]
