//! Nothing for the host: the programs are this crate's binaries (`src/pass.rs`,
//! `src/redirect.rs`, `src/reference.rs`), built for `bpfel-unknown-none` by the tests crate's
//! build script and embedded in the tests crate only.
#![no_std]
