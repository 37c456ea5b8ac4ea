//! The `tracking` agent and CLI.
//!
//! - [`config`]: settings of `tracking agent run` (file, environment, flags).
//! - [`daemon`]: `tracking agent run`: store, engine, tracker, the listeners it is given,
//!   periodic tasks, until the shutdown it is given.
//! - [`engine`]: every change, store first and kernel second; reconcile and reaper.
//! - [`kernel`]: the XDP program: loading, pins, attachment, the maps it reads.
//! - [`store`]: the [`store::Store`] trait and its backends, the source of truth.
//! - [`control`]: the HTTP+JSON API on the control socket and the HTTP listener, served
//!   within limits (`control::serve`), with sessions for the pages, the pages themselves and
//!   `GET /metrics`; [`api`] its bodies, the only types the CLI shares with it.
//! - [`cli`]: the `tracking` command line and its client of the control API.
//! - [`ban`], [`blocklist`], [`time`]: records, list files, timestamps; `radix`: the sort
//!   that orders a million listed networks.
//! - [`visit`]: visits, visitors and the session rule both stores apply; [`tracker`]: what
//!   happens to a visit hook; [`backlog`]: answered visits waiting for the store, and their
//!   writer.
//! - [`geoip`]: where a visitor is, from city databases in the MaxMind DB format, for the map.
//! - [`web`]: the pages' files, embedded ([`web::assets`]).
//! - [`tokens`]: the hook and admin tokens and the [`tokens::Secret`] that hides them in logs.
//! - Integrations: [`crowdsec`], the CrowdSec bouncer; [`notify`], systemd's readiness
//!   notification.

pub mod active;
pub mod api;
pub mod backlog;
pub mod ban;
pub mod blocklist;
pub mod bots;
pub mod cli;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod engine;
pub mod geoip;
pub mod kernel;
pub mod notify;
mod radix;
pub mod store;
pub mod time;
pub mod tokens;
pub mod tracker;
pub mod ua_keywords;
pub mod visit;
pub mod web;
