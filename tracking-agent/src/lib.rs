//! The `tracking` agent and CLI.
//!
//! - [`ban`]: ban and allowlist records, networks, effective bans.
//! - [`blocklist`]: the block list file format of `tracking ban sync`.
//! - [`store`]: the [`store::Store`] trait and its backends, the source of truth.
//! - [`time`]: timestamps and durations as stored and shown.

pub mod ban;
pub mod blocklist;
pub mod kernel;
pub mod store;
pub mod time;
