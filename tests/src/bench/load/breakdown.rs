//! A sync through the agent's control API directly (`POST /v1/bans/sync` over its Unix socket),
//! for what the CLI does not print: the agent's own split of a sync's time into reading the
//! list, storing it and writing the kernel tables.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// How long the agent may take to answer a sync of a big list.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Syncs `list` as source `source` and returns the agent's JSON reply.
pub fn sync(socket: &Path, source: &str, list: &[u8]) -> anyhow::Result<Value> {
    let mut stream =
        UnixStream::connect(socket).with_context(|| format!("{}", socket.display()))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "POST /v1/bans/sync?source={source}&force=false HTTP/1.1\r\nhost: tracking\r\n\
         content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        list.len()
    )?;
    stream.write_all(list)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let (status, body) = parse_response(&answer)?;
    if status != 200 {
        bail!("sync answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The status and body of an HTTP/1.1 response read to its end (a `content-length` body, or a
/// chunked one).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let body = &raw[end + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without a size line")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end])?.trim(), 16)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        out.extend_from_slice(rest.get(..size).context("a chunk cut short")?);
        rest = rest.get(size + 2..).context("a chunk cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{\"a\":1}".to_vec()));
        let chunked =
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (400, b"{\"a\":1}".to_vec())
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
