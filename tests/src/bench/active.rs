//! Benchmark 5: active-visitor counts (`visitors_on_site`, `visitors_on_page`). The agent
//! answers `GET /v1/active` from memory; the seed's way is a COUNT query on the database. With
//! the same visitors active in the agent (posted through the hook) and in a SQLite and a
//! PostgreSQL store (written through the library), each round times many sequential requests
//! over one keep-alive connection, read from the agent's `Server-Timing` header, then the same
//! counts through `Store::count_visitors` in this process.
//!
//! The map of the same visitors: `GET /v1/map` at the server with the real DB-IP City Lite
//! files (`cargo xtask setup --geoip`), against a second agent with the same visitors and no
//! GeoIP database, so that the difference is what locating them costs; and `GeoIp::locate` in
//! this process, an address's first lookup and a repeated (cached) one.

use std::{net::IpAddr, time::Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use tracking_agent::{
    control::hook::parse_visit,
    geoip::GeoIp,
    store::{Store, postgres::PgStore, sqlite::SqliteStore},
    time::Timestamp,
    visit::{Visit, merge},
};

use super::{
    Report, Row, Scale,
    site::{self, ADMIN_TOKEN, HOOK_TOKEN, Site},
};
use crate::{dbip, http::Request};

/// The page asked about; a tenth of the visitors are on it.
const PAGE: &str = "/p";
/// The agent's window: long enough that no visitor leaves during the run.
const TIMEOUT: &str = "1h";
const TIMEOUT_MS: i64 = 3_600_000;

struct Params {
    sessions: usize,
    rounds: usize,
    /// Requests to each endpoint a round.
    requests: usize,
    /// COUNT queries of each kind on each store a round.
    queries: usize,
    /// `GET /v1/map` requests to each agent a round.
    maps: usize,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                sessions: 100_000,
                rounds: 5,
                requests: 2_000,
                queries: 60,
                maps: 100,
            },
            Scale::Quick => Params {
                sessions: 10_000,
                rounds: 1,
                requests: 500,
                queries: 10,
                maps: 10,
            },
        }
    }
}

/// Visitor `i`'s address: public, spread over the address space as a site's visitors are, one
/// in ten IPv6 (in the five registries' blocks), so that the map's lookups walk the real
/// databases rather than stop at a private range.
fn address(i: usize) -> IpAddr {
    let mut random = super::Xorshift::new(0x9e37_79b9_7f4a_7c15 ^ i as u64);
    if i % 10 == 9 {
        const BLOCKS: [u16; 5] = [0x2400, 0x2600, 0x2800, 0x2a00, 0x2c00];
        let r = random.next();
        let first = BLOCKS[(r % 5) as usize] | ((r >> 8) & 0xf) as u16;
        let rest = random.next();
        let bits = (u128::from(first) << 112) | (u128::from(rest) << 48) | 1;
        return IpAddr::V6(bits.into());
    }
    loop {
        let v4 = std::net::Ipv4Addr::from((random.next() >> 32) as u32);
        let [a, b, ..] = v4.octets();
        let special = matches!(a, 0 | 10 | 127 | 224..)
            || (a == 100 && (64..128).contains(&b))
            || (a == 169 && b == 254)
            || (a == 172 && (16..32).contains(&b))
            || (a == 192 && b == 168)
            || (a == 198 && (18..20).contains(&b));
        if !special {
            return IpAddr::V4(v4);
        }
    }
}

/// Visitor `i`: its own session and address, a quarter of them logged in, a tenth on [`PAGE`]
/// and the rest over a thousand other pages.
fn visit(i: usize) -> Value {
    let url = if i.is_multiple_of(10) {
        PAGE.to_string()
    } else {
        format!("/page/{}", i % 1000)
    };
    let mut v = json!({
        "ip": address(i).to_string(),
        "session_key": format!("active-{i}"),
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench",
        "url": url,
    });
    if i.is_multiple_of(4) {
        v["user"] = json!(format!("user-{i}"));
    }
    v
}

/// Per-call durations of one kind, in microseconds, a vector per round.
#[derive(Default)]
struct Series(Vec<Vec<f64>>);

impl Series {
    fn round(&mut self, samples: Vec<f64>) {
        self.0.push(samples);
    }

    /// The `p`th percentile of each round.
    fn per_round(&self, p: f64) -> Vec<f64> {
        self.0.iter().map(|s| percentile(s, p)).collect()
    }
}

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let p = Params::of(scale);
    let now = Timestamp::now();
    let bodies: Vec<Value> = (0..p.sessions).map(visit).collect();
    let visits: Vec<Visit> = bodies
        .iter()
        .map(|b| parse_visit(b.to_string().as_bytes(), now, Timestamp::from_millis(0)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("a benchmark visit is invalid: {e}"))?;
    let on_page = bodies.iter().filter(|b| b["url"] == PAGE).count() as u64;

    let files = dbip::files()?;
    let databases: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let site = Site::agent(
        None,
        &[
            "--tracking-timeout",
            TIMEOUT,
            "--geoip-db",
            &databases[0],
            "--geoip-db",
            &databases[1],
        ],
    )?;
    let post_all = |site: &Site| {
        for chunk in bodies.chunks(1000) {
            let r = Request::post("/v1/visits/batch")
                .bearer(HOOK_TOKEN)
                .json(&Value::Array(chunk.to_vec()))
                .send(&site.netns, site.http)?;
            ensure!(r.status == 202, "batch: {} {}", r.status, r.text());
        }
        site.drained()
    };
    let loading = Instant::now();
    post_all(&site)?;
    let posted = loading.elapsed();
    let plain = Site::agent(None, &["--tracking-timeout", TIMEOUT])?;
    post_all(&plain)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::Builder::new()
        .prefix("trk-bench-active-")
        .tempdir()?;
    let pg_url = site::postgres_database()?;
    let stores: Vec<(&str, Box<dyn Store>)> = runtime.block_on(async {
        let sqlite = SqliteStore::open(&dir.path().join("tracking.db"))?;
        let pg = PgStore::connect(&pg_url).await?;
        anyhow::Ok(vec![
            ("SQLite", Box::new(sqlite) as Box<dyn Store>),
            ("PostgreSQL", Box::new(pg)),
        ])
    })?;
    for (name, store) in &stores {
        runtime
            .block_on(async {
                for chunk in visits.chunks(5000) {
                    store.record_visits(merge(chunk)).await?;
                }
                anyhow::Ok(())
            })
            .with_context(|| format!("loading the {name} store"))?;
    }

    let mut connection = site.connect()?;
    let since = Timestamp::from_millis(Timestamp::now().as_millis() - TIMEOUT_MS);
    let paths = [("/v1/active", None), ("/v1/active?path=/p", Some(PAGE))];
    let mut server: Vec<Series> = paths.iter().map(|_| Series::default()).collect();
    let mut client: Vec<Series> = paths.iter().map(|_| Series::default()).collect();
    let mut queries: Vec<Vec<Series>> = stores
        .iter()
        .map(|_| paths.iter().map(|_| Series::default()).collect())
        .collect();
    for _ in 0..p.rounds {
        for (k, (uri, page)) in paths.iter().enumerate() {
            let expected = if page.is_some() {
                on_page
            } else {
                p.sessions as u64
            };
            let (mut at_server, mut round_trip) = (Vec::new(), Vec::new());
            for _ in 0..p.requests {
                let started = Instant::now();
                let answer = connection.get(uri)?;
                round_trip.push(started.elapsed().as_secs_f64() * 1e6);
                ensure!(answer.status == 200, "GET {uri}: {}", answer.status);
                let counts: Value = serde_json::from_slice(&answer.body)?;
                ensure!(
                    counts["visitors"] == expected,
                    "GET {uri}: {counts}, expected {expected} visitors"
                );
                at_server.push(answer.server_us.context("no Server-Timing header")?);
            }
            server[k].round(at_server);
            client[k].round(round_trip);
            for (s, (name, store)) in stores.iter().enumerate() {
                let samples = runtime.block_on(async {
                    let mut samples = Vec::with_capacity(p.queries);
                    for _ in 0..p.queries {
                        let started = Instant::now();
                        let (visitors, _) =
                            store.count_visitors(since, page.map(String::from)).await?;
                        samples.push(started.elapsed().as_secs_f64() * 1e6);
                        if visitors != expected {
                            bail!("{name}: {visitors} visitors counted, expected {expected}");
                        }
                    }
                    Ok(samples)
                })?;
                queries[s][k].round(samples);
            }
        }
    }
    drop(connection);

    let maps = time_maps(&site, &plain, &p)?;
    drop(plain);
    let lookups = time_lookups(&files, &bodies)?;

    let mut rows = Vec::new();
    for (k, (uri, page)) in paths.iter().enumerate() {
        let what = if page.is_some() {
            "on a page"
        } else {
            "on the site"
        };
        for (pct, label) in [(50.0, "p50"), (99.0, "p99")] {
            let base = server[k].per_round(pct);
            // Each round's percentile over the server's in the same round.
            let against = |row: Row, samples: &[f64]| {
                let ratios: Vec<f64> = samples.iter().zip(&base).map(|(s, b)| s / b).collect();
                row.paired(&ratios, "server")
            };
            let row = Row::new(
                format!("`GET {uri}` at the server ({what}): {label}"),
                "µs",
                base.clone(),
            );
            rows.push(if pct == 99.0 {
                row.value_at_most(100.0)
            } else {
                row
            });
            let samples = client[k].per_round(pct);
            rows.push(against(
                Row::new(
                    format!("`GET {uri}` round trip at the client: {label}"),
                    "µs",
                    samples.clone(),
                ),
                &samples,
            ));
            for (s, (name, _)) in stores.iter().enumerate() {
                let samples = queries[s][k].per_round(pct);
                rows.push(against(
                    Row::new(
                        format!("{name} COUNT ({what}) through the library: {label}"),
                        "µs",
                        samples.clone(),
                    ),
                    &samples,
                ));
            }
        }
    }
    rows.extend(maps.rows);
    rows.extend(lookups.rows);
    Ok(Report {
        name: "active",
        title: "Active-visitor counts".into(),
        method: format!(
            "{} active visitors ({} on `{PAGE}`, a quarter logged in) posted through `POST /v1/visits/batch` \
             (in {:.1} s) and written to a SQLite and a PostgreSQL store through the library. {} round{}; \
             in each, {} sequential requests to each endpoint over one keep-alive connection, timed by the \
             agent's `Server-Timing` header (handler and JSON, not the network), then {} \
             `Store::count_visitors` calls of each kind on each store, timed around the call in this \
             process. Rows are medians over rounds of each round's percentile; ratios are the median of \
             each round's ratio to the server's time in that round.",
            p.sessions,
            on_page,
            posted.as_secs_f64(),
            p.rounds,
            if p.rounds == 1 { "" } else { "s" },
            p.requests,
            p.queries
        ),
        rows,
        notes: vec![
            format!(
                "Every answer and every COUNT was checked: {} visitors on the site, {on_page} on `{PAGE}`.",
                p.sessions
            ),
            maps.note,
            lookups.note,
        ],
    })
}

/// Rows of the map's part, and what they measured.
struct Part {
    rows: Vec<Row>,
    note: String,
}

/// `GET /v1/map` at the server, with DB-IP City Lite and without a database, the agents taking
/// turns; the first request of each (every lookup a cache miss) apart from the rest.
fn time_maps(located: &Site, plain: &Site, p: &Params) -> anyhow::Result<Part> {
    let mut connections = [located.connect()?, plain.connect()?];
    let mut first = [0.0; 2];
    let mut shown = [0; 2];
    let mut found = 0;
    let (mut with, mut without) = (Series::default(), Series::default());
    for round in 0..p.rounds {
        let mut samples = [Vec::new(), Vec::new()];
        for request in 0..=p.maps {
            for (k, connection) in connections.iter_mut().enumerate() {
                let answer = connection.get_as("/v1/map", ADMIN_TOKEN)?;
                ensure!(answer.status == 200, "GET /v1/map: {}", answer.status);
                let at_server = answer
                    .server_us
                    .context("no Server-Timing header on /v1/map")?;
                if round == 0 && request == 0 {
                    // The located agent's first map looks every visitor up for the first time.
                    first[k] = at_server;
                    let map: Value = serde_json::from_slice(&answer.body)?;
                    let visitors = map["visitors"].as_array().context("no visitors")?;
                    shown[k] = visitors.len();
                    if k == 0 {
                        ensure!(
                            map["attribution"]["text"] == "IP Geolocation by DB-IP",
                            "the map does not credit DB-IP: {}",
                            map["attribution"]
                        );
                        found = visitors.iter().filter(|v| !v["location"].is_null()).count();
                    }
                } else if request > 0 {
                    samples[k].push(at_server);
                }
            }
        }
        let [a, b] = samples;
        with.round(a);
        without.round(b);
    }
    ensure!(
        shown[0] == shown[1] && shown[0] > 0,
        "the maps show {shown:?} visitors"
    );
    let mut rows = Vec::new();
    for (pct, label) in [(50.0, "p50"), (99.0, "p99")] {
        let base = without.per_round(pct);
        let located = with.per_round(pct);
        let ratios: Vec<f64> = located.iter().zip(&base).map(|(a, b)| a / b).collect();
        rows.push(Row::new(
            format!("`GET /v1/map` at the server, no GeoIP database: {label}"),
            "µs",
            base,
        ));
        rows.push(
            Row::new(
                format!("`GET /v1/map` at the server, DB-IP City Lite: {label}"),
                "µs",
                located,
            )
            .paired(&ratios, "no GeoIP"),
        );
    }
    rows.push(Row::new(
        "`GET /v1/map` at the server, DB-IP City Lite, first request (every lookup a miss)",
        "µs",
        vec![first[0]],
    ));
    Ok(Part {
        rows,
        note: format!(
            "The map shows {} of the active visitors (its limit); DB-IP City Lite located {found} \
             of them. {} requests to each agent a round, taking turns, after the first; its first \
             answer took {:.0} µs without a database.",
            shown[0], p.maps, first[1]
        ),
    })
}

/// `GeoIp::locate` in this process over every visitor's address: first lookups (each a miss of
/// the cache), then the map's share of them again (each a hit).
fn time_lookups(files: &[std::path::PathBuf; 2], bodies: &[Value]) -> anyhow::Result<Part> {
    let opening = Instant::now();
    let geoip = GeoIp::open(files)?;
    let opened = opening.elapsed();
    let addresses: Vec<IpAddr> = bodies
        .iter()
        .map(|b| b["ip"].as_str().unwrap_or_default().parse())
        .collect::<Result<_, _>>()?;
    let time = |addresses: &[IpAddr]| {
        let mut samples = Vec::with_capacity(addresses.len());
        let mut found = 0;
        for &ip in addresses {
            let started = Instant::now();
            let location = geoip.locate(ip);
            samples.push(started.elapsed().as_secs_f64() * 1e9);
            found += usize::from(location.is_some());
        }
        (samples, found)
    };
    let (misses, found) = time(&addresses);
    // As many as the map shows, looked up again: all in the cache.
    let shown = &addresses[addresses.len().saturating_sub(10_000)..];
    let (hits, _) = time(shown);
    let failures: u64 = geoip.stats().iter().map(|s| s.decode_failures).sum();
    ensure!(
        failures == 0,
        "{failures} DB-IP records could not be decoded"
    );
    let mut rows = Vec::new();
    for (pct, label) in [(50.0, "p50"), (99.0, "p99")] {
        rows.push(Row::new(
            format!("`GeoIp::locate`, an address's first lookup: {label}"),
            "ns",
            vec![percentile(&misses, pct)],
        ));
        rows.push(Row::new(
            format!("`GeoIp::locate`, again (cached): {label}"),
            "ns",
            vec![percentile(&hits, pct)],
        ));
    }
    Ok(Part {
        rows,
        note: format!(
            "In this process: the two files read in {:.2} s; {} addresses looked up once ({found} \
             located, {} decode failures), then the last {} again.",
            opened.as_secs_f64(),
            addresses.len(),
            failures,
            shown.len()
        ),
    })
}

/// The `p`th percentile (nearest rank) of `samples`.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_ranks() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
