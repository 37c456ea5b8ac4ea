//! Bans that another program decides for a source of its own (the CrowdSec bouncer): each
//! ban with its own expiry, set and lifted in one call, through the same path as `ban add`
//! and `ban rm` (store first, kernel second, under the writer lock, the tables' capacity
//! admitted before a ban is written).

use std::collections::HashSet;

use ipnet::IpNet;

use super::{Engine, KernelError, Result};
use crate::{
    ban::{Ban, Effect, Effective},
    time::Timestamp,
};

/// Which bans of the source a [`Engine::set_source_bans`] lifts.
#[derive(Clone, Debug)]
pub enum Lift {
    /// These networks (those that still have a ban in the new set are not lifted).
    Networks(Vec<IpNet>),
    /// Every ban of the source that the new set does not name: the set is the whole source.
    AllOthers,
}

/// What a [`Engine::set_source_bans`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceChange {
    /// Records written (new, or with a new expiry or reason).
    pub set: usize,
    /// Records removed.
    pub lifted: usize,
}

impl Engine {
    /// Lifts the bans of `source` that `lift` names, then makes `bans` (all of source
    /// `source`, each network once) the records of their networks. Lifting needs no room and
    /// is right whatever else happens, so it comes first: the tables are then asked to hold
    /// every network of `bans`, and if they cannot, no ban of `bans` is written. The
    /// allowlist still wins in the kernel, so bans overlapping it are taken as a forced
    /// `ban add` would be.
    pub async fn set_source_bans(
        &self,
        source: &str,
        bans: Vec<Ban>,
        lift: Lift,
    ) -> Result<SourceChange> {
        let now = Timestamp::now();
        debug_assert!(bans.iter().all(|b| b.source == source));
        let _w = self.writer.lock().await;
        let keep: HashSet<IpNet> = bans.iter().map(|b| b.network).collect();
        let lifted: Vec<IpNet> = match lift {
            Lift::Networks(nets) => nets.into_iter().filter(|n| !keep.contains(n)).collect(),
            Lift::AllOthers => self
                .store
                .list_bans()
                .await?
                .into_iter()
                .filter(|b| b.source == source && !keep.contains(&b.network))
                .map(|b| b.network)
                .collect(),
        };
        let mut change = SourceChange::default();
        if !lifted.is_empty() {
            let (removed, effects) = self
                .store
                .remove_bans(lifted, Some(source.to_string()), now)
                .await?;
            self.apply(&effects)?;
            change.lifted = removed.len();
        }
        if !bans.is_empty() {
            let banned: Vec<Effect> = bans
                .iter()
                .map(|b| (b.network, Effective::Banned { expires: b.expires }))
                .collect();
            self.tables()
                .admit(&banned)
                .map_err(KernelError::OverCapacity)?;
            change.set = bans.len();
            let effects = self.store.add_bans(bans, now).await?;
            self.apply(&effects)?;
        }
        Ok(change)
    }
}

impl Engine {
    /// Live ban records by source and family (`ipv4`, `ipv6`), from the store alone: what
    /// `GET /metrics` shows without looking each ban up in the kernel.
    pub async fn live_bans_by_source(
        &self,
    ) -> Result<std::collections::BTreeMap<(String, &'static str), u64>> {
        let now = Timestamp::now();
        let mut counts = std::collections::BTreeMap::new();
        for ban in self.store.list_bans().await? {
            if !ban.is_live(now) {
                continue;
            }
            let family = if ban.network.addr().is_ipv4() {
                "ipv4"
            } else {
                "ipv6"
            };
            *counts.entry((ban.source, family)).or_insert(0) += 1;
        }
        Ok(counts)
    }
}
