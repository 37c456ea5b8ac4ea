//! Reading one run of lines of a list into entries, or into errors from its first bad line on.

use ipnet::IpNet;

use super::{
    Entry, LineError,
    dedup::hash,
    line::{parse_line, quote, reason_of},
    quick::{After, quick_ipv4},
};

/// How many bad lines are reported one by one; the rest are counted in the last one.
pub(super) const MAX_ERRORS: usize = 100;

/// What one run of lines parsed to, in line order.
pub(super) struct Piece {
    /// The entries, until the first bad line; none after it.
    pub(super) entries: Vec<Entry>,
    /// The [`hash`] of each entry's network, for [`super::dedup::remove_duplicates`]: reading these is
    /// cheaper than reading the entries again.
    pub(super) hashes: Vec<u32>,
    /// The first [`MAX_ERRORS`] bad lines.
    pub(super) errors: Vec<LineError>,
    /// How many bad lines there were past those.
    pub(super) unreported: usize,
}

impl Piece {
    /// Adds the entry of a good line, unless a line before it was bad: past the first error the
    /// entries are thrown away, and only errors are still looked for.
    #[inline]
    fn keep(&mut self, network: IpNet, reason: Box<str>, line: usize, host_bits_cleared: bool) {
        if self.errors.is_empty() {
            self.hashes.push(hash(&network));
            self.entries.push(Entry {
                network,
                reason,
                line,
                host_bits_cleared,
            });
        }
    }

    /// This piece followed by `next`, the lines after it.
    pub(super) fn then(mut self, next: Piece) -> Piece {
        self.entries.extend(next.entries);
        self.hashes.extend(next.hashes);
        let room = MAX_ERRORS - self.errors.len();
        self.unreported += next.errors.len().saturating_sub(room) + next.unreported;
        self.errors.extend(next.errors.into_iter().take(room));
        self
    }
}

/// Parses the lines of `text`, the first of which is line `first_line` of the list. `lines` is
/// how many entries to make room for.
pub(super) fn parse_piece(text: &str, first_line: usize, lines: usize) -> Piece {
    let mut piece = Piece {
        entries: Vec::with_capacity(lines),
        hashes: Vec::with_capacity(lines),
        errors: Vec::new(),
        unreported: 0,
    };
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut line = first_line;
    while start < bytes.len() {
        let number = line;
        line += 1;
        // A plain line, nearly every line of a big list, goes straight into the entries.
        if let Some((network, host_bits_cleared, after)) = quick_ipv4(bytes, start) {
            let reason = match after {
                After::End { next } => {
                    start = next;
                    Box::default()
                }
                After::Comment { at } => {
                    let (end, next) = line_end(bytes, start, at);
                    start = next;
                    reason_of(&text[at..end])
                }
            };
            piece.keep(network, reason, number, host_bits_cleared);
            continue;
        }
        let (end, next) = line_end(bytes, start, start);
        let raw = &text[start..end];
        start = next;
        match parse_line(raw) {
            Ok(None) => {}
            Ok(Some((network, reason, host_bits_cleared))) => {
                piece.keep(network, reason, number, host_bits_cleared)
            }
            Err(message) if piece.errors.len() < MAX_ERRORS => piece.errors.push(LineError {
                line: number,
                text: quote(raw),
                message,
            }),
            Err(_) => piece.unreported += 1,
        }
    }
    piece
}

/// Where the line that starts at `start` ends, looking from `from` on: the end of its text and
/// the start of the next line. Lines end as `str::lines` ends them: at a newline, less one
/// carriage return before it.
fn line_end(bytes: &[u8], start: usize, from: usize) -> (usize, usize) {
    match bytes[from..].iter().position(|&b| b == b'\n') {
        None => (bytes.len(), bytes.len()),
        Some(offset) => {
            let newline = from + offset;
            let end = if newline > start && bytes[newline - 1] == b'\r' {
                newline - 1
            } else {
                newline
            };
            (end, newline + 1)
        }
    }
}
