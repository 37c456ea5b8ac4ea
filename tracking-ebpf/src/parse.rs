//! Finds the source address of a frame. Every read is preceded by a bounds check against
//! `data_end`, which is also what the verifier demands.

use aya_ebpf::programs::XdpContext;
use tracking_common::layout::MAX_VLAN_TAGS;

/// The source of a frame, as far as the filter cares.
#[derive(Clone, Copy)]
pub enum Source {
    /// IPv4 source, host byte order; also an IPv6 packet from an IPv4-mapped address
    /// (`::ffff:a.b.c.d`), which a dual-stack socket delivers as coming from `a.b.c.d`.
    V4(u32),
    /// IPv6 source as two host-order halves.
    V6(u64, u64),
    /// Not IPv4 or IPv6 (after at most [`MAX_VLAN_TAGS`] VLAN tags).
    NotIp,
    /// Shorter than the headers it claims, or an IP header with a wrong version or length.
    Malformed,
    /// A VLAN tag beyond the [`MAX_VLAN_TAGS`]th.
    TooManyTags,
}

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// A pointer to a `T` at `offset` into the frame, if the frame is long enough to hold it.
#[inline(always)]
fn at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a big-endian value of type `T` at `offset`.
macro_rules! read_be {
    ($ctx:expr, $ty:ty, $offset:expr) => {
        match at::<$ty>($ctx, $offset) {
            // A plain load: `read_unaligned` would become byte loads on BPF, and the JIT'd load
            // is fine unaligned on the architectures XDP runs on.
            // SAFETY: `at` checked that the whole value lies inside the frame.
            Some(p) => <$ty>::from_be(unsafe { p.read() }),
            None => return Source::Malformed,
        }
    };
}

/// Looks through the VLAN tags one by one, with constant offsets: the verifier loses track of
/// packet bounds through a variable offset, and a fixed depth needs no loop. `$proto` is the
/// EtherType just read; each step either hands the frame to the network layer or reads the
/// EtherType behind the next tag.
macro_rules! through_tags {
    ($ctx:ident, $proto:ident; $($n:literal)*) => {
        $(
            if !is_vlan($proto) {
                return l3::<{ ETH_HLEN + $n * VLAN_HLEN }>($ctx, $proto);
            }
            let $proto = read_be!($ctx, u16, ETH_HLEN + $n * VLAN_HLEN + 2);
        )*
    };
}

// The steps below are written out for this many tags.
const _: () = assert!(MAX_VLAN_TAGS == 8);

#[inline(always)]
pub fn source(ctx: &XdpContext) -> Source {
    let proto = read_be!(ctx, u16, 12);
    through_tags!(ctx, proto; 0 1 2 3 4 5 6 7);
    if is_vlan(proto) {
        return Source::TooManyTags;
    }
    l3::<{ ETH_HLEN + MAX_VLAN_TAGS * VLAN_HLEN }>(ctx, proto)
}

#[inline(always)]
fn is_vlan(proto: u16) -> bool {
    proto == ETH_P_8021Q || proto == ETH_P_8021AD
}

/// The network layer at `OFFSET`, after `proto` was read from the last EtherType field.
#[inline(always)]
fn l3<const OFFSET: usize>(ctx: &XdpContext, proto: u16) -> Source {
    match proto {
        ETH_P_IP => ipv4::<OFFSET>(ctx),
        ETH_P_IPV6 => ipv6::<OFFSET>(ctx),
        _ => Source::NotIp,
    }
}

#[inline(always)]
fn ipv4<const OFFSET: usize>(ctx: &XdpContext) -> Source {
    // The fixed 20 bytes first, with a constant size the verifier can carry to the reads below.
    if at::<[u8; 20]>(ctx, OFFSET).is_none() {
        return Source::Malformed;
    }
    let version_ihl = read_be!(ctx, u8, OFFSET);
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Source::Malformed;
    }
    // The whole header, options included, must be in the frame; only the source is read.
    if ctx.data() + OFFSET + header_len > ctx.data_end() {
        return Source::Malformed;
    }
    Source::V4(read_be!(ctx, u32, OFFSET + 12))
}

#[inline(always)]
fn ipv6<const OFFSET: usize>(ctx: &XdpContext) -> Source {
    // The fixed header is 40 bytes; check it whole before reading the source in it.
    if at::<[u8; 40]>(ctx, OFFSET).is_none() {
        return Source::Malformed;
    }
    if read_be!(ctx, u8, OFFSET) >> 4 != 6 {
        return Source::Malformed;
    }
    let hi = read_be!(ctx, u64, OFFSET + 8);
    let lo = read_be!(ctx, u64, OFFSET + 16);
    if hi == 0 && lo >> 32 == 0xffff {
        // `::ffff:a.b.c.d` is how a dual-stack host names an IPv4 peer: judged as `a.b.c.d`.
        return Source::V4(lo as u32);
    }
    Source::V6(hi, lo)
}
