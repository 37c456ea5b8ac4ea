//! Block list files, as `tracking ban sync` reads them.
//!
//! One address or network a line. `#` and `;` start comments, whole-line or trailing; the text of
//! a trailing comment becomes the ban's reason, which is how Spamhaus DROP lists
//! (`1.2.3.0/24 ; SBL123`) carry their ids. Blank lines are skipped.
//!
//! Also accepted, because real lists have them: CRLF line ends, a UTF-8 byte order mark, and
//! host bits set in a network (`192.0.2.77/24` is `192.0.2.0/24`; the entry says so, for a
//! warning). A network listed twice counts once, at its first line.
//!
//! Anything else is an error, and one bad line rejects the file: a sync makes a source hold
//! exactly the list, so applying what parsed of a half-broken file would lift the bans of the
//! lines that did not. Every bad line is reported at once, so one round of fixes is enough.

use ipnet::IpNet;

use crate::ban::parse_network;

/// How many bad lines are reported one by one; the rest are counted in the last one.
const MAX_ERRORS: usize = 100;

/// How many characters of a bad line an error quotes.
const MAX_QUOTED: usize = 80;

/// One listed network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Host bits cleared.
    pub network: IpNet,
    /// The trailing comment, trimmed; empty if none.
    pub reason: String,
    /// Where it is in the file, from 1.
    pub line: usize,
    /// Whether the line had host bits set, which the caller may want to warn about.
    pub host_bits_cleared: bool,
}

/// A line that is not an address or network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: `{text}`: {message}")]
pub struct LineError {
    /// Where it is in the file, from 1.
    pub line: usize,
    /// The line, trimmed and cut to about 80 characters.
    pub text: String,
    /// What is wrong with it.
    pub message: String,
}

/// A parsed list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Distinct networks, in file order.
    pub entries: Vec<Entry>,
    /// Lines that repeated a network listed earlier.
    pub duplicates: usize,
}

/// Parses a whole list: every entry, or every bad line.
pub fn parse(input: &str) -> Result<Parsed, Vec<LineError>> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    // One pass to size the vectors saves the copies of growing them over a million entries.
    let lines = input.bytes().filter(|&b| b == b'\n').count() + 1;
    let mut parsed = Parsed {
        entries: Vec::with_capacity(lines),
        duplicates: 0,
    };
    let mut errors: Vec<LineError> = Vec::new();
    let mut unreported = 0;

    for (i, raw) in input.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw) {
            Ok(None) => {}
            // Past the first error the entries are thrown away; only errors are still looked for.
            Ok(Some(_)) if !errors.is_empty() => {}
            Ok(Some((network, reason, host_bits_cleared))) => parsed.entries.push(Entry {
                network,
                reason: plain(reason),
                line,
                host_bits_cleared,
            }),
            Err(message) if errors.len() < MAX_ERRORS => errors.push(LineError {
                line,
                text: quote(raw),
                message,
            }),
            Err(_) => unreported += 1,
        }
    }

    match errors.last_mut() {
        None => {
            parsed.duplicates = remove_duplicates(&mut parsed.entries);
            Ok(parsed)
        }
        Some(last) => {
            if unreported > 0 {
                last.message += &format!(
                    " (and {unreported} more bad line{} not shown)",
                    if unreported == 1 { "" } else { "s" }
                );
            }
            Err(errors)
        }
    }
}

/// Drops every entry whose network an earlier entry has, returning how many there were.
///
/// Sorting compact keys finds them several times faster than a `HashSet` of a million
/// networks, where every insert is a cache miss.
fn remove_duplicates(entries: &mut Vec<Entry>) -> usize {
    // An IPv4 network as one integer (address, then prefix length): cheap to sort.
    let mut v4: Vec<(u64, usize)> = Vec::with_capacity(entries.len());
    let mut v6: Vec<(IpNet, usize)> = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        match entry.network {
            IpNet::V4(net) => {
                let key = (u64::from(net.addr().to_bits()) << 8) | u64::from(net.prefix_len());
                v4.push((key, position));
            }
            net @ IpNet::V6(_) => v6.push((net, position)),
        }
    }
    // Ties sort by position, so the first of a run of equal networks is the one kept.
    v4.sort_unstable();
    v6.sort_unstable();
    let mut duplicate = vec![false; entries.len()];
    mark_repeats(&v4, &mut duplicate);
    mark_repeats(&v6, &mut duplicate);

    let count = duplicate.iter().filter(|&&d| d).count();
    if count > 0 {
        let mut position = 0;
        entries.retain(|_| {
            position += 1;
            !duplicate[position - 1]
        });
    }
    count
}

/// In `sorted` (key, position) pairs, marks the position of every pair whose key the previous
/// pair has.
fn mark_repeats<K: Eq>(sorted: &[(K, usize)], duplicate: &mut [bool]) {
    for pair in sorted.windows(2) {
        if pair[0].0 == pair[1].0 {
            duplicate[pair[1].1] = true;
        }
    }
}

/// A comment as a reason: control characters (a stray tab, a NUL some databases refuse) become
/// spaces.
fn plain(reason: &str) -> String {
    if reason.chars().any(char::is_control) {
        reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        reason.to_owned()
    }
}

/// The network of one line, the reason and whether host bits were cleared; `None` for a line
/// without one (blank or comment). An error says what is wrong, not which line: the caller
/// shows the line beside it.
fn parse_line(raw: &str) -> Result<Option<(IpNet, &str, bool)>, String> {
    let (data, reason) = match raw.find(['#', ';']) {
        // `##` or `;;` are still comment markers, not part of the reason.
        Some(at) => (&raw[..at], raw[at..].trim_start_matches(['#', ';']).trim()),
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
        Ok((network, host_bits_cleared)) => Ok(Some((network, reason, host_bits_cleared))),
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
fn quote(line: &str) -> String {
    let line = line.trim();
    match line.char_indices().nth(MAX_QUOTED) {
        None => line.to_owned(),
        Some((cut, _)) => format!("{}…", &line[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_reason_become_spaces() {
        let parsed = parse("192.0.2.0/24 ; SBL\u{0}1\tx\n").unwrap();
        assert_eq!(parsed.entries[0].reason, "SBL 1 x");
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// The entries of a list that must parse, as `(network, reason, line)`.
    fn entries(input: &str) -> Vec<(IpNet, String, usize)> {
        parse(input)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.network, e.reason, e.line))
            .collect()
    }

    fn entry(network: &str, reason: &str, line: usize) -> (IpNet, String, usize) {
        (net(network), reason.to_owned(), line)
    }

    /// The errors of a list that must not parse, as displayed.
    fn errors(input: &str) -> Vec<String> {
        parse(input)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn addresses_and_networks_of_both_families() {
        assert_eq!(
            entries("192.0.2.1\n198.51.100.0/24\n2001:db8::1\n2001:db8::/32\n"),
            [
                entry("192.0.2.1/32", "", 1),
                entry("198.51.100.0/24", "", 2),
                entry("2001:db8::1/128", "", 3),
                entry("2001:db8::/32", "", 4),
            ]
        );
    }

    #[test]
    fn whitespace_around_an_entry_is_ignored() {
        assert_eq!(
            entries("  192.0.2.1\t\n\t198.51.100.0/24   "),
            [
                entry("192.0.2.1/32", "", 1),
                entry("198.51.100.0/24", "", 2),
            ]
        );
    }

    #[test]
    fn blank_lines_and_comment_lines_are_skipped_but_counted() {
        let list = "# Spamhaus DROP\n; Last-Modified: today\n\n   \n  # indented\n192.0.2.1\n";
        assert_eq!(entries(list), [entry("192.0.2.1/32", "", 6)]);
    }

    #[test]
    fn a_trailing_comment_is_the_reason() {
        assert_eq!(
            entries(
                "1.10.16.0/20 ; SBL256894\n\
                 192.0.2.1 # scanner, seen 3 times\n\
                 192.0.2.2#tight\n\
                 192.0.2.3 ## doubled marker\n\
                 192.0.2.4 #\n\
                 192.0.2.5 # a ; b # c\n"
            ),
            [
                entry("1.10.16.0/20", "SBL256894", 1),
                entry("192.0.2.1/32", "scanner, seen 3 times", 2),
                entry("192.0.2.2/32", "tight", 3),
                entry("192.0.2.3/32", "doubled marker", 4),
                entry("192.0.2.4/32", "", 5),
                entry("192.0.2.5/32", "a ; b # c", 6),
            ]
        );
    }

    #[test]
    fn host_bits_are_cleared_and_flagged() {
        let parsed = parse("192.0.2.77/24\n2001:db8::1/32\n198.51.100.0/24\n").unwrap();
        let flagged: Vec<(IpNet, bool)> = parsed
            .entries
            .iter()
            .map(|e| (e.network, e.host_bits_cleared))
            .collect();
        assert_eq!(
            flagged,
            [
                (net("192.0.2.0/24"), true),
                (net("2001:db8::/32"), true),
                (net("198.51.100.0/24"), false),
            ]
        );
    }

    #[test]
    fn a_network_listed_twice_counts_once_at_its_first_line() {
        let parsed = parse(
            "192.0.2.1 # first\n\
             198.51.100.0/24\n\
             192.0.2.1/32 # second\n\
             2001:db8::/32\n\
             198.51.100.9/24\n\
             2001:db8::1/32\n\
             192.0.2.1\n",
        )
        .unwrap();
        assert_eq!(parsed.duplicates, 4);
        let kept: Vec<(IpNet, &str, usize)> = parsed
            .entries
            .iter()
            .map(|e| (e.network, e.reason.as_str(), e.line))
            .collect();
        assert_eq!(
            kept,
            [
                (net("192.0.2.1/32"), "first", 1),
                (net("198.51.100.0/24"), "", 2),
                (net("2001:db8::/32"), "", 4),
            ]
        );
    }

    #[test]
    fn crlf_line_ends_are_accepted() {
        assert_eq!(
            entries("# list\r\n192.0.2.1 ; SBL1\r\n\r\n2001:db8::/32\r\n"),
            [
                entry("192.0.2.1/32", "SBL1", 2),
                entry("2001:db8::/32", "", 4),
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(
            entries("\u{feff}192.0.2.1\n"),
            [entry("192.0.2.1/32", "", 1)]
        );
        assert_eq!(entries("\u{feff}# only a comment\n"), []);
    }

    #[test]
    fn an_empty_list_has_no_entries() {
        for list in ["", "\n", "\n\n  \n", "# nothing yet\n; still nothing"] {
            assert_eq!(parse(list), Ok(Parsed::default()), "{list:?}");
        }
    }

    #[test]
    fn each_kind_of_bad_line_is_named_with_its_line_number() {
        let cases = [
            (
                "192.0.2.1 192.0.2.2",
                "line 2: `192.0.2.1 192.0.2.2`: more than one word",
            ),
            (
                "192.0.2.1 scanner # x",
                "line 2: `192.0.2.1 scanner # x`: more than one word",
            ),
            (
                "example.com",
                "line 2: `example.com`: not an IP address or network",
            ),
            (
                "300.1.1.1",
                "line 2: `300.1.1.1`: not an IP address or network",
            ),
            ("192.0.2", "line 2: `192.0.2`: not an IP address or network"),
            (
                "2001:db8::g",
                "line 2: `2001:db8::g`: not an IP address or network",
            ),
            (
                "10.0.0.0/33",
                "line 2: `10.0.0.0/33`: the prefix length /33 is longer than the address (at most /32)",
            ),
            (
                "2001:db8::/129",
                "line 2: `2001:db8::/129`: the prefix length /129 is longer than the address (at most /128)",
            ),
            (
                "10.0.0.0/",
                "line 2: `10.0.0.0/`: `/` is not a prefix length (0 to 32)",
            ),
            (
                "10.0.0.0/x",
                "line 2: `10.0.0.0/x`: `/x` is not a prefix length (0 to 32)",
            ),
            (
                "10.0.0/8",
                "line 2: `10.0.0/8`: `10.0.0` is not an IP address",
            ),
            (
                "1.2.3.4-1.2.3.9",
                "line 2: `1.2.3.4-1.2.3.9`: an address range: list the networks",
            ),
            (
                "1.2.3.4-",
                "line 2: `1.2.3.4-`: not an IP address or network",
            ),
        ];
        for (bad, expected) in cases {
            let list = format!("192.0.2.1\n  {bad}  \n192.0.2.3\n");
            let errors = errors(&list);
            assert_eq!(errors.len(), 1, "{bad}");
            assert!(
                errors[0].starts_with(expected),
                "{bad}: got {:?}, expected it to start with {expected:?}",
                errors[0]
            );
        }
    }

    #[test]
    fn every_bad_line_is_reported_and_nothing_else_is_returned() {
        let errors = parse("192.0.2.1\nbad one\n192.0.2.2\n\n999.0.0.1\n").unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5]);
    }

    #[test]
    fn past_a_hundred_bad_lines_the_rest_are_counted() {
        let list = "x\n".repeat(MAX_ERRORS + 7);
        let errors = parse(&list).unwrap_err();
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors[MAX_ERRORS - 1].line, MAX_ERRORS);
        assert!(
            errors[MAX_ERRORS - 1]
                .message
                .ends_with("(and 7 more bad lines not shown)"),
            "{}",
            errors[MAX_ERRORS - 1]
        );
        assert!(!errors[0].message.contains("more bad"));

        let one_more = "x\n".repeat(MAX_ERRORS + 1);
        let errors = parse(&one_more).unwrap_err();
        assert!(
            errors[MAX_ERRORS - 1]
                .message
                .ends_with("(and 1 more bad line not shown)")
        );
    }

    #[test]
    fn a_long_bad_line_is_quoted_cut() {
        let long = format!("192.0.2.1 {}", "é".repeat(200));
        let errors = parse(&long).unwrap_err();
        assert_eq!(errors[0].text.chars().count(), MAX_QUOTED + 1);
        assert!(errors[0].text.starts_with("192.0.2.1 é"));
        assert!(errors[0].text.ends_with('…'));
    }
}
