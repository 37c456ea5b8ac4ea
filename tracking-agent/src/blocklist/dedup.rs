//! Dropping the networks a list repeats, keeping each at its first line.

use ipnet::IpNet;

use super::Entry;

/// From this many entries, duplicates are looked for on two threads.
const PARALLEL_DEDUP_FROM: usize = 1 << 16;

/// Hash slots looked at together when looking for duplicates: their two bitmaps take 16 KiB.
const BUCKET: usize = 1 << 16;

/// Drops every entry whose network an earlier entry has, returning how many there were.
/// `hashes` are the [`hash`]es of their networks.
///
/// Sorting a million networks to find the few repeats would take longer than parsing them;
/// instead, a bitmap of their hashes (a few bits per entry) finds the networks whose hash came
/// up more than once, and only those are sorted. Any repeat is among them; most of them are not
/// repeats but collisions. A big list's hashes are looked at in two halves of the hash space,
/// each by its own thread.
pub(super) fn remove_duplicates(entries: &mut Vec<Entry>, hashes: &[u32]) -> usize {
    // About 16 bits per entry: one in sixteen or so collides.
    let bits = (entries.len() * 16)
        .clamp(1 << 16, 1 << 32)
        .next_power_of_two();
    let mut maybe = if entries.len() < PARALLEL_DEDUP_FROM {
        suspects(entries, hashes, bits, 0..bits)
    } else {
        let entries = &entries[..];
        let upper = || suspects(entries, hashes, bits, bits / 2..bits);
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("tracking-dedup".into())
                .spawn_scoped(scope, upper);
            let mut lower = suspects(entries, hashes, bits, 0..bits / 2);
            lower.extend(match helper {
                Ok(helper) => helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => upper(),
            });
            lower
        })
    };
    // Ties sort by position, so the first of a run of equal networks is the one kept.
    maybe.sort_unstable();
    let mut repeats: Vec<usize> = maybe
        .windows(2)
        .filter(|pair| pair[0].0 == pair[1].0)
        .map(|pair| pair[1].1)
        .collect();
    if !repeats.is_empty() {
        repeats.sort_unstable();
        let mut repeats = repeats.iter().peekable();
        let mut position = 0;
        entries.retain(|_| {
            position += 1;
            repeats.next_if_eq(&&(position - 1)).is_none()
        });
    }
    repeats.len()
}

/// The networks and positions of the entries whose hash falls in `slots` (of a bitmap of `bits`
/// slots indexed by the hash's high bits) and shares its slot with another entry's.
///
/// The entries are first grouped by slot range, [`BUCKET`] slots a group, in one sequential
/// pass; each group is then looked at with a bitmap small enough for the processor's fastest
/// cache. Looking every entry up in one bitmap of megabytes instead costs a cache miss or two
/// an entry, several times the whole of this.
fn suspects(
    entries: &[Entry],
    hashes: &[u32],
    bits: usize,
    slots: std::ops::Range<usize>,
) -> Vec<(IpNet, usize)> {
    let shift = u32::BITS - bits.ilog2();
    let slot_of = |hash: u32| (hash as usize >> shift).wrapping_sub(slots.start);
    let groups = slots.len().div_ceil(BUCKET);
    // Where each group starts in `grouped`.
    let mut starts = vec![0usize; groups + 1];
    for &hash in hashes {
        let slot = slot_of(hash);
        if slot < slots.len() {
            starts[slot / BUCKET + 1] += 1;
        }
    }
    for group in 1..=groups {
        starts[group] += starts[group - 1];
    }
    // Slot within its group (high half) and position (low half; a list has fewer than 2^32
    // lines, its size being limited) of each entry, by group.
    let mut grouped = vec![0u64; starts[groups]];
    let mut next = starts.clone();
    for (position, &hash) in hashes.iter().enumerate() {
        let slot = slot_of(hash);
        if slot < slots.len() {
            let at = &mut next[slot / BUCKET];
            grouped[*at] = ((slot % BUCKET) as u64) << 32 | position as u64;
            *at += 1;
        }
    }
    let mut suspects = Vec::new();
    // Seen once, and seen again, for each slot of a group.
    let mut seen = vec![0u64; BUCKET / 64];
    let mut again = vec![0u64; BUCKET / 64];
    let split = |item: u64| {
        let slot = (item >> 32) as usize;
        (slot / 64, 1u64 << (slot % 64), item as u32 as usize)
    };
    for group in starts.windows(2).map(|range| &grouped[range[0]..range[1]]) {
        seen.fill(0);
        again.fill(0);
        for &item in group {
            let (word, bit, _) = split(item);
            again[word] |= seen[word] & bit;
            seen[word] |= bit;
        }
        for &item in group {
            let (word, bit, position) = split(item);
            if again[word] & bit != 0 {
                suspects.push((entries[position].network, position));
            }
        }
    }
    suspects
}

/// A hash of `network` whose high bits are well mixed: distinct IPv4 networks are distinct
/// 40-bit numbers, multiplied by an odd constant.
pub(super) fn hash(network: &IpNet) -> u32 {
    let folded = match network {
        IpNet::V4(net) => (u64::from(net.addr().to_bits()) << 8) | u64::from(net.prefix_len()),
        IpNet::V6(net) => {
            let bits = net.addr().to_bits();
            (bits as u64) ^ ((bits >> 64) as u64).rotate_left(31) ^ u64::from(net.prefix_len())
        }
    };
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}
