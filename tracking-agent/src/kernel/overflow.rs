//! The overflow maps: kernel hash maps (`V4_OVERFLOW`, `V6_OVERFLOW`) for the ban whose two
//! buckets are both full. Sized for a whole family's capacity and allocated only as used, they
//! are what lets the configured number of bans fit whatever their shape. At the tables' half
//! load they stay empty in practice (none of the benchmarks' or tests' random and consecutive
//! lists of a million used them); the program reads them only while the family's overflow flag
//! is set. The kernel keeps its hash maps safe for readers while they change, and a network
//! never moves between a table and its overflow map.

use std::{path::Path, sync::Mutex};

use aya::maps::{HashMap, Map, MapData, MapError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracking_common::{
    layout::{OverflowKey4, OverflowKey6},
    maps as names,
};

use super::{
    KernelError,
    table::{join6, split6},
};

/// Both overflow maps. Behind a lock: aya writes a map through `&mut`, and the read side
/// ([`super::tables::Tables`]) is shared; only the engine's writer changes them, rarely.
pub struct Overflow {
    maps: Mutex<Maps>,
}

struct Maps {
    v4: HashMap<MapData, OverflowKey4, u32>,
    v6: HashMap<MapData, OverflowKey6, u32>,
}

fn key4(net: &Ipv4Net) -> OverflowKey4 {
    OverflowKey4 {
        addr: net.addr().to_bits(),
        len: net.prefix_len() as u32,
    }
}

fn key6(net: &Ipv6Net) -> OverflowKey6 {
    let (hi, lo) = split6(net.addr());
    OverflowKey6 {
        hi,
        lo,
        len: net.prefix_len() as u64,
    }
}

fn absent_is_none(result: Result<u32, MapError>) -> Result<Option<u32>, MapError> {
    match result {
        Ok(slot) => Ok(Some(slot)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Overflow {
    /// Opens the pinned maps of a map directory.
    pub fn open(dir: &Path) -> Result<Overflow, KernelError> {
        let open = |name: &str| -> Result<Map, KernelError> {
            let data = MapData::from_pin(dir.join(name)).map_err(|e| KernelError::map(name, e))?;
            Ok(Map::HashMap(data))
        };
        let v4 = HashMap::try_from(open(names::V4_OVERFLOW)?)
            .map_err(|e| KernelError::map(names::V4_OVERFLOW, e))?;
        let v6 = HashMap::try_from(open(names::V6_OVERFLOW)?)
            .map_err(|e| KernelError::map(names::V6_OVERFLOW, e))?;
        Ok(Overflow {
            maps: Mutex::new(Maps { v4, v6 }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slot of `net`, if it is in its family's overflow map.
    pub fn get(&self, net: &IpNet) -> Result<Option<u32>, KernelError> {
        let maps = self.lock();
        match net {
            IpNet::V4(n) => absent_is_none(maps.v4.get(&key4(n), 0))
                .map_err(|e| KernelError::map(names::V4_OVERFLOW, e)),
            IpNet::V6(n) => absent_is_none(maps.v6.get(&key6(n), 0))
                .map_err(|e| KernelError::map(names::V6_OVERFLOW, e)),
        }
    }

    /// Adds `net` with `slot` (whose state the caller has written first).
    pub fn insert(&self, net: &IpNet, slot: u32) -> Result<(), KernelError> {
        let mut maps = self.lock();
        match net {
            IpNet::V4(n) => maps
                .v4
                .insert(key4(n), slot, 0)
                .map_err(|e| KernelError::map(names::V4_OVERFLOW, e)),
            IpNet::V6(n) => maps
                .v6
                .insert(key6(n), slot, 0)
                .map_err(|e| KernelError::map(names::V6_OVERFLOW, e)),
        }
    }

    /// Removes `net`, returning its slot if it was there.
    pub fn remove(&self, net: &IpNet) -> Result<Option<u32>, KernelError> {
        let mut maps = self.lock();
        let (found, name) = match net {
            IpNet::V4(n) => (absent_is_none(maps.v4.get(&key4(n), 0)), names::V4_OVERFLOW),
            IpNet::V6(n) => (absent_is_none(maps.v6.get(&key6(n), 0)), names::V6_OVERFLOW),
        };
        let Some(slot) = found.map_err(|e| KernelError::map(name, e))? else {
            return Ok(None);
        };
        let removed = match net {
            IpNet::V4(n) => maps.v4.remove(&key4(n)),
            IpNet::V6(n) => maps.v6.remove(&key6(n)),
        };
        removed.map_err(|e| KernelError::map(name, e))?;
        Ok(Some(slot))
    }

    /// Every network in both maps with its slot.
    pub fn entries(&self) -> Result<Vec<(IpNet, u32)>, KernelError> {
        let maps = self.lock();
        let mut out = Vec::new();
        for item in maps.v4.iter() {
            let (key, slot) = item.map_err(|e| KernelError::map(names::V4_OVERFLOW, e))?;
            let addr = std::net::Ipv4Addr::from_bits(key.addr);
            if let Ok(net) = Ipv4Net::new(addr, key.len as u8) {
                out.push((IpNet::V4(net), slot));
            }
        }
        for item in maps.v6.iter() {
            let (key, slot) = item.map_err(|e| KernelError::map(names::V6_OVERFLOW, e))?;
            if let Ok(net) = Ipv6Net::new(join6(key.hi, key.lo), key.len as u8) {
                out.push((IpNet::V6(net), slot));
            }
        }
        Ok(out)
    }
}
