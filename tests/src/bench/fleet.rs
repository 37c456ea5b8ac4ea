//! Benchmark: a fleet of three agents on one PostgreSQL, each filtering its own veth pair in
//! namespaces of its own, with a 1 ms UDP stream from each host's client received with kernel
//! timestamps ([`super::stream`]). With 0, 100,000 and 1,000,000 bans stored, each round bans
//! every host's client with `tracking ban add` on host 1 and times, from just before the
//! command, when the streams of hosts 2 and 3 stop; then lifts the bans with `tracking ban rm`
//! on host 3 and times when the streams of hosts 1 and 2 arrive again; at the largest size,
//! again with every host reconciling whole every few seconds, so that changes meet the
//! periodic reconcile's read of every ban. The commands' own times
//! are taken too, and those of `ban add`/`ban rm`/`allow add`/`allow rm` on one agent with the
//! embedded SQLite store at the same sizes: a change must cost the same whatever the store
//! holds.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{
    Report, Row, Scale,
    report::grouped,
    stream::{Stream, now_ns},
};
use crate::site::Site;
use tracking_agent::store::postgres::test_server;

/// The stream's period.
const PERIOD: Duration = Duration::from_millis(1);
/// How long a change may take to reach a host before the round fails.
const WITHIN: Duration = Duration::from_secs(10);
/// Silence that says a stream stopped.
const QUIET: Duration = Duration::from_millis(100);
/// The reconcile interval of the rounds that make whole reconciles meet the changes.
const RECONCILING: &str = "5s";

struct Params {
    sizes: &'static [usize],
    rounds: usize,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                sizes: &[0, 100_000, 1_000_000],
                rounds: 30,
            },
            Scale::Quick => Params {
                sizes: &[0, 1_000],
                rounds: 3,
            },
        }
    }
}

/// Milliseconds of a duration.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The value below which `p` of the samples lie (nearest rank).
fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Writes `n` distinct IPv4 addresses from 100.64.0.0 (none a client of a site) to `path`.
fn write_list(path: &Path, n: usize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n as u32 {
        writeln!(file, "{}", std::net::Ipv4Addr::from(0x6440_0000 + i))?;
    }
    file.flush()?;
    Ok(())
}

/// Stores `n` bans through `site` (a sync of source `stored`), and waits until every host in
/// `hosts` enforces them.
fn store(site: &Site, hosts: &[&Site], n: usize) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let list = site.agent.dir().join("stored.txt");
    write_list(&list, n)?;
    let list = list.to_str().context("a path")?.to_string();
    let out = site
        .agent
        .cli(["ban", "sync", "--file", &list, "--source", "stored"]);
    ensure!(
        out.status.success(),
        "ban sync of {n}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_enforced(hosts, n)
}

/// Waits until every host in `hosts` enforces at least `n` bans.
fn wait_enforced(hosts: &[&Site], n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    for host in hosts {
        loop {
            let status: serde_json::Value =
                serde_json::from_str(&host.agent.cli_ok(["status", "--json"]))?;
            if status["bans_v4"]["used"].as_u64().unwrap_or(0) >= n as u64 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "a host did not take the {n} stored bans: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Runs `tracking <args>` on `site` and returns how long it took.
fn timed(site: &Site, args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = site.agent.cli(args);
    let took = started.elapsed();
    ensure!(
        out.status.success(),
        "tracking {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

/// What one size measured.
#[derive(Default)]
struct Measured {
    added: Vec<f64>,
    lifted: Vec<f64>,
    add_command: Vec<f64>,
}

/// Starts each host's stream and runs the rounds.
fn rounds_with_streams(hosts: &[Site], rounds: usize) -> anyhow::Result<Measured> {
    let streams = hosts
        .iter()
        .map(|h| Stream::start(h, h.banned_v4(), PERIOD))
        .collect::<std::io::Result<Vec<_>>>()?;
    fleet_rounds(hosts, &streams, rounds)
}

/// The rows of a change's time to the other hosts; the p99 held to 100 ms when `target`.
fn propagation_rows(rows: &mut Vec<Row>, stored: &str, m: &Measured, target: bool) {
    for (what, samples) in [
        ("ban add on host 1, dropped on hosts 2 and 3", &m.added),
        ("ban rm on host 3, passing on hosts 1 and 2", &m.lifted),
    ] {
        rows.push(Row::new(
            format!("{what}, {stored}: p50 (spread to max)"),
            "ms",
            samples.clone(),
        ));
        let p99 = Row::new(
            format!("{what}, {stored}: p99"),
            "ms",
            vec![percentile(samples, 0.99)],
        );
        rows.push(if target {
            p99.value_at_most(100.0)
        } else {
            p99
        });
    }
}

fn fleet_rounds(hosts: &[Site], streams: &[Stream], rounds: usize) -> anyhow::Result<Measured> {
    let clients: Vec<String> = hosts.iter().map(|h| h.banned_v4().to_string()).collect();
    let mut add = vec!["ban", "add"];
    add.extend(clients.iter().map(String::as_str));
    let mut rm = vec!["ban", "rm"];
    rm.extend(clients.iter().map(String::as_str));
    let mut m = Measured::default();
    for _ in 0..rounds {
        // Every stream flows before a round.
        for s in streams {
            let since = now_ns();
            s.resumed_after(since, WITHIN)
                .context("a stream does not flow before the round")?;
        }
        let made = now_ns();
        m.add_command.push(ms(timed(&hosts[0], &add)?));
        for s in &streams[1..] {
            let took = s
                .stopped_after(made, QUIET, WITHIN)
                .context("a ban did not reach a host")?;
            m.added.push(ms(took));
        }
        let made = now_ns();
        timed(&hosts[2], &rm)?;
        for s in &streams[..2] {
            let took = s
                .resumed_after(made, WITHIN)
                .context("an unban did not reach a host")?;
            m.lifted.push(ms(took));
        }
    }
    Ok(m)
}

/// The four changes on one agent with the SQLite store: their commands' times.
fn sqlite_rounds(site: &Site, rounds: usize) -> anyhow::Result<[Vec<f64>; 4]> {
    let mut times: [Vec<f64>; 4] = Default::default();
    for i in 0..rounds {
        let net = format!("198.51.100.{}", i % 250 + 1);
        times[0].push(ms(timed(site, &["ban", "add", &net])?));
        times[1].push(ms(timed(site, &["ban", "rm", &net])?));
        times[2].push(ms(timed(site, &["allow", "add", &net])?));
        times[3].push(ms(timed(site, &["allow", "rm", &net])?));
    }
    Ok(times)
}

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let p = Params::of(scale);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut empty_add: Option<Row> = None;
    let mut empty_sqlite: Option<[Row; 4]> = None;
    for &size in p.sizes {
        let stored = match size {
            0 => "empty store".to_string(),
            n => format!("{} stored", grouped(n)),
        };
        let url = test_server::database();
        let mut hosts: Vec<Site> = (0..3)
            .map(|_| Site::with_options(|o| o.database(&url)))
            .collect();
        let refs: Vec<&Site> = hosts.iter().collect();
        store(&hosts[0], &refs, size)?;
        let m = rounds_with_streams(&hosts, p.rounds)?;
        let at_million = size >= 1_000_000;
        propagation_rows(&mut rows, &stored, &m, at_million);
        if Some(&size) == p.sizes.last() {
            // The same with every host reconciling whole every few seconds, which reads and
            // compares every stored ban each time: with a million, a fifth of the changes or
            // more meet one.
            for host in &mut hosts {
                host.agent.set_args(["--reconcile-interval", RECONCILING]);
                host.agent.restart()?;
            }
            let refs: Vec<&Site> = hosts.iter().collect();
            wait_enforced(&refs, size)?;
            let reconciling = rounds_with_streams(&hosts, p.rounds)?;
            let during = format!("{stored}, every host reconciling whole every {RECONCILING}");
            propagation_rows(&mut rows, &during, &reconciling, at_million);
        }
        drop(hosts);

        let add = Row::new(
            format!("`ban add` command, PostgreSQL, {stored}"),
            "ms",
            m.add_command,
        );
        rows.push(match &empty_add {
            None => {
                empty_add = Some(add.clone());
                add
            }
            Some(base) if at_million => add.against(base).ratio_at_most(2.0),
            Some(base) => add.against(base),
        });

        // The same changes on one agent with SQLite.
        let site = Site::new();
        store(&site, &[&site], size)?;
        let times = sqlite_rounds(&site, p.rounds)?;
        drop(site);
        let names = ["ban add", "ban rm", "allow add", "allow rm"];
        let made: Vec<Row> = names
            .iter()
            .zip(times)
            .map(|(name, samples)| {
                Row::new(format!("`{name}` command, SQLite, {stored}"), "ms", samples)
            })
            .collect();
        match &empty_sqlite {
            None => {
                rows.extend(made.iter().cloned());
                empty_sqlite = Some(made.try_into().map_err(|_| anyhow::anyhow!("four rows"))?);
            }
            Some(base) => {
                for (row, base) in made.into_iter().zip(base) {
                    rows.push(if at_million {
                        row.against(base).ratio_at_most(2.0)
                    } else {
                        row.against(base)
                    });
                }
            }
        }
    }
    if rows.is_empty() {
        bail!("no sizes to measure");
    }
    notes.push(format!(
        "A change's time to a host is from just before the command on another host to the \
         kernel's receive timestamp of the last packet of the host's stream plus one period \
         ({PERIOD:?}) for a ban, of the first packet again for an unban; {} rounds a size, two \
         hosts a round.",
        p.rounds
    ));
    notes.push(
        "The commands' times include starting the `tracking` CLI in the host's namespace \
         (nsenter), as an operator would run it."
            .into(),
    );
    Ok(Report {
        name: "fleet",
        title: "Fleet: a change on one host enforced on the others".into(),
        method: format!(
            "Three agents on one PostgreSQL (a test server on a Unix socket), each filtering \
             its own veth pair in namespaces of its own; a 1 ms UDP stream from each host's \
             client, kernel-timestamped on receipt. The stored bans are a list synced on host 1 \
             before the rounds. At the largest size the rounds run twice, the second time with \
             every host restarted with `--reconcile-interval {RECONCILING}` (the default is \
             60 s), so that changes meet whole reconciles. One agent with SQLite for the \
             commands' rows."
        ),
        rows,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(0), "0");
    }
}
