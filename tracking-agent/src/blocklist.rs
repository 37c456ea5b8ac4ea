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
//!
//! A million lines take a few tens of milliseconds: lines that are a plain IPv4 address or
//! network (nearly all of a big list) are read by a hand-written parser in one pass over their
//! bytes, every other line by the general one, which the quick one only ever agrees with (a
//! line it is unsure of, a leading zero or a stray character, it leaves to the general one);
//! a list over a megabyte is parsed in two halves on two threads; and a line without a
//! comment allocates nothing. These stay because the 1,000,000-line sync is held to half of
//! `nft -f`'s time (`cargo xtask bench load`), and the store's transaction already takes most of
//! it.
//!
//! This module cuts the list and puts the pieces together; [`piece`] reads a run of lines,
//! [`quick`] the plain IPv4 ones, [`line`] every other line (and says what is wrong with a bad
//! one), [`dedup`] drops repeated networks.

mod dedup;
mod line;
mod piece;
mod quick;

use ipnet::IpNet;

use self::{
    dedup::remove_duplicates,
    piece::{Piece, parse_piece},
};

/// From this many bytes, a list is parsed in two halves on two threads. Below it a second
/// thread costs more than it saves.
const PARALLEL_FROM: usize = 1 << 20;

/// One listed network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Host bits cleared.
    pub network: IpNet,
    /// The trailing comment, trimmed; empty if none (which takes no allocation).
    pub reason: Box<str>,
    /// Where it is in the file, from 1.
    pub line: usize,
    /// Whether the line was normalised (host bits set, or an IPv4-mapped IPv6 address), which
    /// the caller may want to warn about.
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
    let piece = match halves(input) {
        None => parse_piece(input, 1, newlines(input) + 1),
        Some((first, second)) => {
            let (first_lines, second_lines) = (newlines(first), newlines(second));
            let second_from = first_lines + 1;
            let rest = || parse_piece(second, second_from, second_lines + 1);
            std::thread::scope(|scope| {
                let helper = std::thread::Builder::new()
                    .name("tracking-parse".into())
                    .spawn_scoped(scope, rest);
                // Room for both halves, so that the second is appended without moving the first.
                let first = parse_piece(first, 1, first_lines + second_lines + 1);
                let second = match helper {
                    Ok(helper) => helper
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    // No thread to be had: parse it here.
                    Err(_) => rest(),
                };
                first.then(second)
            })
        }
    };
    finish(piece)
}

/// The result of a list that parsed to `piece`.
fn finish(piece: Piece) -> Result<Parsed, Vec<LineError>> {
    let Piece {
        mut entries,
        hashes,
        mut errors,
        unreported,
    } = piece;
    match errors.last_mut() {
        None => {
            let duplicates = remove_duplicates(&mut entries, &hashes);
            Ok(Parsed {
                entries,
                duplicates,
            })
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

/// `input` cut in two after the newline nearest its middle, if it is big enough to be worth
/// two threads.
fn halves(input: &str) -> Option<(&str, &str)> {
    if input.len() < PARALLEL_FROM {
        return None;
    }
    let middle = input.len() / 2;
    // A newline byte is never part of a longer UTF-8 character, so this is a char boundary.
    let newline = middle
        + input.as_bytes()[middle..]
            .iter()
            .position(|&b| b == b'\n')?;
    Some(input.split_at(newline + 1))
}

/// How many newlines `text` has: how many lines it has, or one fewer if the last one does not
/// end with a newline.
fn newlines(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use super::{
        dedup::hash,
        line::{MAX_QUOTED, parse_line, quote},
        piece::MAX_ERRORS,
        quick::{After, quick_ipv4},
    };

    #[test]
    fn control_characters_in_a_reason_become_spaces() {
        let parsed = parse("192.0.2.0/24 ; SBL\u{0}1\tx\n").unwrap();
        assert_eq!(&*parsed.entries[0].reason, "SBL 1 x");
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
            .map(|e| (e.network, e.reason.into(), e.line))
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
            .map(|e| (e.network, &*e.reason, e.line))
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

    /// What the general parser alone makes of `input`, line by line as `str::lines` cuts it:
    /// the reference the quick parser and the two threads must agree with.
    fn general_only(input: &str) -> Result<Parsed, Vec<LineError>> {
        let input = input.strip_prefix('\u{feff}').unwrap_or(input);
        let mut piece = Piece {
            entries: Vec::new(),
            hashes: Vec::new(),
            errors: Vec::new(),
            unreported: 0,
        };
        for (i, raw) in input.lines().enumerate() {
            match parse_line(raw) {
                Ok(None) => {}
                Ok(Some(_)) if !piece.errors.is_empty() => {}
                Ok(Some((network, reason, host_bits_cleared))) => {
                    piece.hashes.push(hash(&network));
                    piece.entries.push(Entry {
                        network,
                        reason,
                        line: i + 1,
                        host_bits_cleared,
                    });
                }
                Err(message) if piece.errors.len() < MAX_ERRORS => piece.errors.push(LineError {
                    line: i + 1,
                    text: quote(raw),
                    message,
                }),
                Err(_) => piece.unreported += 1,
            }
        }
        if !piece.errors.is_empty() {
            return finish(piece);
        }
        let mut seen = std::collections::HashSet::new();
        let listed = piece.entries.len();
        let entries: Vec<Entry> = piece
            .entries
            .into_iter()
            .filter(|entry| seen.insert(entry.network))
            .collect();
        Ok(Parsed {
            duplicates: listed - entries.len(),
            entries,
        })
    }

    /// Lines near the edge of what the quick parser takes, with what each must give.
    const TRICKY: &[(&str, &str)] = &[
        ("1.2.3.4", "1.2.3.4/32"),
        ("0.0.0.0", "0.0.0.0/32"),
        ("255.255.255.255/32", "255.255.255.255/32"),
        ("1.2.3.4/0", "0.0.0.0/0"),
        ("1.2.3.77/24", "1.2.3.0/24"),
        ("1.2.3.4   ", "1.2.3.4/32"),
        ("1.2.3.4\t", "1.2.3.4/32"),
        ("1.2.3.4#x", "1.2.3.4/32 x"),
        ("1.2.3.4;x", "1.2.3.4/32 x"),
        ("1.2.3.4 \t## x y  ", "1.2.3.4/32 x y"),
        ("1.2.3.4 #", "1.2.3.4/32"),
        ("1.2.3.4 # a\u{0}b", "1.2.3.4/32 a b"),
        ("1.2.3.4 # é", "1.2.3.4/32 é"),
        ("1.2.3.4\r", "1.2.3.4/32"),
        ("1.2.3.4 \r", "1.2.3.4/32"),
        ("1.2.3.4\u{b}", "1.2.3.4/32"),
        ("1.2.3.4\u{a0}", "1.2.3.4/32"),
        (" 1.2.3.4", "1.2.3.4/32"),
        ("01.2.3.4", "error: not an IP address or network"),
        ("1.2.3.04", "error: not an IP address or network"),
        ("00.0.0.0", "error: not an IP address or network"),
        ("256.1.1.1", "error: not an IP address or network"),
        ("1234.1.1.1", "error: not an IP address or network"),
        ("1.2.3", "error: not an IP address or network"),
        ("1.2.3.4.5", "error: not an IP address or network"),
        ("1.2.3.4x", "error: not an IP address or network"),
        ("+1.2.3.4", "error: not an IP address or network"),
        ("1.2.3.4/", "error: `/` is not a prefix length (0 to 32)"),
        (
            "1.2.3.4/33",
            "error: the prefix length /33 is longer than the address (at most /32)",
        ),
        (
            "1.2.3.4/100",
            "error: the prefix length /100 is longer than the address (at most /32)",
        ),
        (
            "1.2.3.4/+8",
            "error: `/+8` is not a prefix length (0 to 32)",
        ),
        ("1.2.3.4/ 8", "error: more than one word"),
        (
            "1.2.3.4/24/8",
            "error: `/24/8` is not a prefix length (0 to 32)",
        ),
        ("1.2.3.4 5", "error: more than one word"),
        ("1.2.3.4-1.2.3.5", "error: an address range"),
    ];

    /// `line` parsed alone: its network and reason, or its error message.
    fn outcome(parsed: Result<Parsed, Vec<LineError>>) -> String {
        match parsed {
            Ok(parsed) => parsed
                .entries
                .iter()
                .map(|e| format!("{} {}", e.network, e.reason).trim_end().to_owned())
                .collect(),
            Err(errors) => format!("error: {}", errors[0].message),
        }
    }

    #[test]
    fn the_quick_parser_and_the_general_one_agree_on_tricky_lines() {
        for (line, expected) in TRICKY {
            for ending in ["", "\n", "\r\n"] {
                let list = format!("{line}{ending}");
                let got = outcome(parse(&list));
                assert!(
                    got.starts_with(expected),
                    "{list:?}: got {got:?}, expected {expected:?}"
                );
                assert_eq!(parse(&list), general_only(&list), "{list:?}");
            }
        }
    }

    #[test]
    fn the_quick_parser_reads_plain_lines_and_leaves_the_rest() {
        let quick = |line: &str| quick_ipv4(line.as_bytes(), 0).map(|(net, _, after)| (net, after));
        assert_eq!(
            quick("1.2.3.4"),
            Some((net("1.2.3.4/32"), After::End { next: 7 }))
        );
        assert_eq!(
            quick("1.2.3.4/24 \r\n9"),
            Some((net("1.2.3.0/24"), After::End { next: 13 }))
        );
        assert_eq!(
            quick("1.2.3.4 # x"),
            Some((net("1.2.3.4/32"), After::Comment { at: 8 }))
        );
        for line in [
            "01.2.3.4",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/08",
            "1.2.3.4\r",
            " 1.2.3.4",
            "1.2.3.4\u{a0}",
        ] {
            assert_eq!(quick(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_quick_parser_and_the_general_one_agree_on_random_lines() {
        // Lines made of the characters that matter to either parser, mostly near-addresses.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let pieces = [
            "1", "0", "9", "25", "255", "256", ".", "/", "3", "32", " ", "\t", "#", ";", "x", "\r",
            ":", "\n",
        ];
        for _ in 0..20_000 {
            let mut list = String::new();
            for _ in 0..1 + next(12) {
                list.push_str(pieces[next(pieces.len() as u64) as usize]);
            }
            assert_eq!(parse(&list), general_only(&list), "{list:?}");
        }
    }

    /// A list of a little over [`PARALLEL_FROM`] bytes whose halves are parsed on two threads,
    /// with `bad` bad lines spread over it, duplicates across the halves, comments, CRLF.
    fn big_list(bad: usize) -> String {
        let mut list = String::with_capacity(PARALLEL_FROM + 4096);
        let mut n: u32 = 0;
        while list.len() < PARALLEL_FROM + 1024 {
            n += 1;
            let address = Ipv4Addr::from_bits(n.wrapping_mul(0x9e37_79b9));
            let line = match n % 100 {
                0 => format!("{address} # SBL{n}\r\n"),
                1 => "\n".to_owned(),
                2 => format!("2001:db8::{:x}/128\n", n & 0xffff),
                // The same network over and over, in both halves.
                3 => "192.0.2.7/24\n".to_owned(),
                _ => format!("{address}\n"),
            };
            list.push_str(&line);
        }
        let lines: Vec<&str> = list.lines().collect();
        let step = lines.len() / (bad + 1);
        (0..lines.len())
            .map(|i| {
                if bad > 0 && i > 0 && i % step == 0 && i / step <= bad {
                    "not an address"
                } else {
                    lines[i]
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_list_parsed_on_two_threads_gives_what_one_would() {
        for bad in [0, 1, 2, 150] {
            let list = big_list(bad);
            assert!(halves(&list).is_some());
            let reference = general_only(&list);
            assert_eq!(parse(&list), reference, "{bad} bad lines");
            match reference {
                Ok(parsed) => assert!(parsed.duplicates > 100 && parsed.entries.len() > 50_000),
                Err(errors) => assert_eq!(errors.len(), bad.min(MAX_ERRORS)),
            }
        }
    }
}
