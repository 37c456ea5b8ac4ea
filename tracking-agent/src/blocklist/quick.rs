//! The plain IPv4 lines of a list, nearly all of a big one, read in one pass over their bytes.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

/// What follows the network on a line that [`quick_ipv4`] read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum After {
    /// Nothing but blanks: the next line starts at `next`.
    End { next: usize },
    /// A comment, whose marker is at `at`.
    Comment { at: usize },
}

/// The IPv4 address or network at `start`, if the line there is one written plainly:
/// `a.b.c.d` or `a.b.c.d/len` in the digits `std` and `ipnet` write, then maybe spaces or tabs,
/// then the end of the line or a comment. Returns the network with host bits cleared, whether
/// there were any, and what follows. `None` leaves the line to the general parser, which
/// decides whether it is good; so this may refuse a good line, but never accept a bad one.
pub(super) fn quick_ipv4(bytes: &[u8], start: usize) -> Option<(IpNet, bool, After)> {
    let mut at = start;
    let mut address = 0u32;
    for octet in 0..4 {
        if octet > 0 {
            if bytes.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let (value, next) = decimal(bytes, at, 255)?;
        address = address << 8 | value;
        at = next;
    }
    let mut prefix = 32;
    if bytes.get(at) == Some(&b'/') {
        (prefix, at) = decimal(bytes, at + 1, 32)?;
    }
    let after = loop {
        match bytes.get(at) {
            None => break After::End { next: at },
            Some(b'\n') => break After::End { next: at + 1 },
            Some(b'\r') if bytes.get(at + 1) == Some(&b'\n') => break After::End { next: at + 2 },
            Some(b'#' | b';') => break After::Comment { at },
            Some(b' ' | b'\t') => at += 1,
            Some(_) => return None,
        }
    };
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let network = Ipv4Net::new(Ipv4Addr::from_bits(address & mask), prefix as u8).ok()?;
    Some((IpNet::V4(network), address & mask != address, after))
}

/// The decimal number at `at` if it is at most `max` and written as `std` writes one: one to
/// three digits, no leading zero (which `std` refuses in an address); and where it ends.
fn decimal(bytes: &[u8], at: usize, max: u32) -> Option<(u32, usize)> {
    let digit = |i: usize| match bytes.get(i) {
        Some(&b @ b'0'..=b'9') => Some(u32::from(b - b'0')),
        _ => None,
    };
    let mut value = digit(at)?;
    let mut end = at + 1;
    if value == 0 {
        return digit(end).is_none().then_some((0, end));
    }
    while let Some(d) = digit(end) {
        if end - at == 3 {
            return None;
        }
        value = value * 10 + d;
        end += 1;
    }
    (value <= max).then_some((value, end))
}
