//! Loading the visit hook with `wrk`: a Lua script of varied visits (each session from its own
//! address, over many pages, with the hook token), many keep-alive connections, a fixed time;
//! and reading back what `wrk --latency` printed.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use super::site::{HOOK_TOKEN, Site};
use crate::Netns;

/// How hard and how long.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
}

/// What one run of wrk measured and counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Answers a second (`Requests/sec`).
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Requests the script handed to wrk to send.
    pub sent: u64,
    /// Answers read in full.
    pub complete: u64,
    /// Of which with a status of 400 or more.
    pub status_errors: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
}

impl Outcome {
    /// Answers of 2xx: the hook and the floor only answer 202 when they accept a visit.
    pub fn accepted(&self) -> u64 {
        self.complete - self.status_errors
    }
}

/// Writes the script: `sessions` sessions over `pages` pages. Every request is formatted once,
/// in `init`, so that wrk's one thread spends its time on the wire rather than in Lua; `sent`
/// counts what was handed out, which `done` prints for [`run`] to read.
pub fn write_script(path: &Path, sessions: u32, pages: u32) -> std::io::Result<()> {
    let script = format!(
        r#"-- The hook benchmark's visits (written by tests/src/bench/wrk.rs).
local sessions, pages, token = {sessions}, {pages}, "{HOOK_TOKEN}"
local prepared = {{}}
local i = 0
local threads = {{}}
sent = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}}
  -- Twice the sessions and a step of 7 through the pages: a session's visits go to several pages.
  for j = 0, 2 * sessions - 1 do
    local s = j % sessions
    local body = string.format(
      '{{"ip":"10.%d.%d.%d","session_key":"bench-%d","user_agent":"Mozilla/5.0 (X11; Linux x86_64) bench","referrer":"https://example.org/","url":"/page/%d"}}',
      math.floor(s / 65536) % 256, math.floor(s / 256) % 256, s % 256, s, (j * 7) % pages)
    prepared[j + 1] = wrk.format("POST", "/v1/visits", headers, body)
  end
end

function request()
  sent = sent + 1
  i = i % #prepared + 1
  return prepared[i]
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + t:get("sent")
  end
  io.write(string.format("bench-sent %d\n", total))
  local e = summary.errors
  io.write(string.format("bench-counts %d %d %d\n", summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
"#
    );
    std::fs::write(path, script)
}

/// Runs wrk with `script` against `site` from inside its namespace.
pub fn run(site: &Site, script: &Path, load: Load) -> anyhow::Result<Outcome> {
    run_url(&site.netns, &format!("http://{}/", site.http), script, load)
}

/// Runs wrk with `script` against `url` from inside `netns`.
pub fn run_url(netns: &Netns, url: &str, script: &Path, load: Load) -> anyhow::Result<Outcome> {
    let mut command = netns.command("wrk");
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url);
    let output = command
        .output()
        .context("running wrk (a Debian package; `cargo xtask setup` installs it)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("reading wrk's output:\n{stdout}"))
}

/// Reads `Requests/sec`, the 50% and 99% lines of the latency distribution, and the script's
/// counts.
fn parse(out: &str) -> anyhow::Result<Outcome> {
    let mut o = Outcome::default();
    let mut in_distribution = false;
    for line in out.lines() {
        let line = line.trim();
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if in_distribution && let Some((pct, value)) = line.split_once('%') {
            match pct {
                "50" => o.p50_us = micros(value.trim())?,
                "99" => o.p99_us = micros(value.trim())?,
                _ => {}
            }
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            o.rate = rate.trim().parse()?;
        } else if let Some(n) = line.strip_prefix("bench-sent ") {
            o.sent = n.trim().parse()?;
        } else if let Some(counts) = line.strip_prefix("bench-counts ") {
            let n: Vec<u64> = counts
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            let [complete, status, socket] = n[..] else {
                bail!("bad counts line `{line}`");
            };
            (o.complete, o.status_errors, o.socket_errors) = (complete, status, socket);
        }
        if in_distribution && !line.contains('%') && !line.starts_with("Latency") {
            in_distribution = false;
        }
    }
    if o.rate == 0.0 || o.p99_us == 0.0 || o.complete == 0 {
        bail!("no rate, latency distribution or counts");
    }
    Ok(o)
}

/// `512.00us`, `1.23ms`, `2.00s`, `1.00m` in microseconds.
fn micros(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in `{value}`"))?;
    let (n, unit) = value.split_at(split);
    let n: f64 = n.parse()?;
    Ok(n * match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        other => bail!("unknown unit `{other}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 2s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.37ms  503.03us  12.04ms   90.29%
    Req/Sec    47.38k     2.36k   50.50k    80.00%
  Latency Distribution
     50%    1.29ms
     75%    1.49ms
     90%    1.74ms
     99%    3.28ms
  94305 requests in 2.00s, 12.41MB read
Requests/sec:  47060.56
Transfer/sec:      6.19MB
bench-sent 94369
bench-counts 94305 0 0
";

    #[test]
    fn rate_latencies_and_counts_are_read() {
        let o = parse(OUTPUT).unwrap();
        assert_eq!(o.rate, 47060.56);
        assert_eq!(o.p50_us, 1290.0);
        assert_eq!(o.p99_us, 3280.0);
        assert_eq!((o.sent, o.complete, o.accepted()), (94369, 94305, 94305));
    }

    #[test]
    fn units_are_converted() {
        assert_eq!(micros("512.00us").unwrap(), 512.0);
        assert_eq!(micros("2.00s").unwrap(), 2e6);
        assert!(micros("3.0h").is_err());
    }
}
