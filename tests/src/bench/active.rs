//! Benchmark 5: active-visitor counts (`visitors_on_site`, `visitors_on_page`). The agent
//! answers `GET /v1/active` from memory; the seed's way is a COUNT query on the database. With
//! the same visitors active in the agent (posted through the hook) and in a SQLite and a
//! PostgreSQL store (written through the library), each round times many sequential requests
//! over one keep-alive connection, read from the agent's `Server-Timing` header, then the same
//! counts through `Store::count_visitors` in this process.

use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use tracking_agent::{
    control::hook::parse_visit,
    store::{Store, postgres::PgStore, sqlite::SqliteStore},
    time::Timestamp,
    visit::{Visit, merge},
};

use super::{
    Report, Row, Scale,
    site::{self, HOOK_TOKEN, Site},
};
use crate::http::Request;

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
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                sessions: 100_000,
                rounds: 5,
                requests: 2_000,
                queries: 60,
            },
            Scale::Quick => Params {
                sessions: 10_000,
                rounds: 1,
                requests: 500,
                queries: 10,
            },
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
        "ip": format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
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

    let site = Site::agent(None, &["--tracking-timeout", TIMEOUT])?;
    let loading = Instant::now();
    for chunk in bodies.chunks(1000) {
        let r = Request::post("/v1/visits/batch")
            .bearer(HOOK_TOKEN)
            .json(&Value::Array(chunk.to_vec()))
            .send(&site.netns, site.http)?;
        ensure!(r.status == 202, "batch: {} {}", r.status, r.text());
    }
    let posted = loading.elapsed();
    site.drained()?;

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
        notes: vec![format!(
            "Every answer and every COUNT was checked: {} visitors on the site, {on_page} on `{PAGE}`.",
            p.sessions
        )],
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
