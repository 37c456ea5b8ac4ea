//! Any line the quick IPv4 reader leaves: blank, comment, IPv6, an odd spelling, or bad (and
//! then what is wrong with it).

use ipnet::IpNet;

use crate::ban::parse_network;

/// How many characters of a bad line an error quotes.
pub(super) const MAX_QUOTED: usize = 80;

/// The reason a comment gives, from its first marker on: `##` or `;;` are still markers, not
/// part of the reason.
pub(super) fn reason_of(comment: &str) -> Box<str> {
    plain(comment.trim_start_matches(['#', ';']).trim())
}

/// A comment as a reason: control characters (a stray tab, a NUL some databases refuse) become
/// spaces.
fn plain(reason: &str) -> Box<str> {
    if reason.is_empty() {
        Box::default()
    } else if reason.chars().any(char::is_control) {
        reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        reason.into()
    }
}

/// The network of one line, the reason and whether host bits were cleared; `None` for a line
/// without one (blank or comment). An error says what is wrong, not which line: the caller
/// shows the line beside it.
pub(super) fn parse_line(raw: &str) -> Result<Option<(IpNet, Box<str>, bool)>, String> {
    let (data, comment) = match raw.find(['#', ';']) {
        Some(at) => raw.split_at(at),
        None => (raw, ""),
    };
    let data = data.trim();
    if data.is_empty() {
        return Ok(None);
    }
    if data.contains(char::is_whitespace) {
        return Err(
            "more than one word: put one address or network on each line, and a reason after `#` or `;`"
                .to_owned(),
        );
    }
    match parse_network(data) {
        Ok((network, how)) => Ok(Some((
            network,
            reason_of(comment),
            how.host_bits_cleared || how.unmapped,
        ))),
        Err(_) => Err(why_not_a_network(data)),
    }
}

/// Why `token` is not a network, as precisely as is cheap to say.
fn why_not_a_network(token: &str) -> String {
    if let Some((addr, prefix)) = token.split_once('/') {
        let longest = match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => return format!("`{addr}` is not an IP address"),
        };
        return match prefix.parse::<u32>() {
            Ok(len) if len > longest => {
                format!("the prefix length /{len} is longer than the address (at most /{longest})")
            }
            _ => format!("`/{prefix}` is not a prefix length (0 to {longest})"),
        };
    }
    if let Some((first, last)) = token.split_once('-')
        && first.parse::<std::net::IpAddr>().is_ok()
        && last.parse::<std::net::IpAddr>().is_ok()
    {
        return "an address range: list the networks that cover it instead".to_owned();
    }
    "not an IP address or network".to_owned()
}

/// `line` trimmed and cut to [`MAX_QUOTED`] characters, for an error message.
pub(super) fn quote(line: &str) -> String {
    let line = line.trim();
    match line.char_indices().nth(MAX_QUOTED) {
        None => line.to_owned(),
        Some((cut, _)) => format!("{}…", &line[..cut]),
    }
}
