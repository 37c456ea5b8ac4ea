//! Benchmark 7: request latency through Django with and without the package's middleware,
//! in the same run. The example site (`integrations/django/example`, Django 5.2) runs twice
//! under gunicorn beside the agent in one namespace: once with Django's middleware alone, once
//! with the seed's three (`BannedIPMiddleware` first, `VisitorTrackingMiddleware`,
//! `VisitorCleanUpMiddleware`) around them. wrk with one connection loads one, then the other,
//! round after round, on the same page; the difference of the medians is what the middleware
//! adds to a request. Afterwards every request the tracked site answered must be a visit at
//! the agent.

use std::{
    ffi::OsString,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Report, Row, Scale,
    site::{self, HOOK_TOKEN, Site},
    wrk::{self, Load, Outcome},
};
use crate::django::{Django, DjangoOptions, Venv};

/// The environment of the current Django.
const VENV: &str = "django-5.2";
/// The page both sites serve: a template, no database, no call to the agent of its own.
const PAGE: &str = "/bench/";
/// The target: what the middleware may add at the median.
const TARGET_US: f64 = 200.0;

struct Params {
    rounds: usize,
    duration: Duration,
    warmup: Option<Duration>,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                rounds: 5,
                duration: Duration::from_secs(10),
                warmup: Some(Duration::from_secs(3)),
            },
            Scale::Quick => Params {
                rounds: 1,
                duration: Duration::from_secs(2),
                warmup: None,
            },
        }
    }
}

/// One connection: the latency of one request at a time, not of a queue.
fn load(duration: Duration) -> Load {
    Load {
        threads: 1,
        connections: 1,
        duration,
    }
}

/// The wrk script: GETs of the page, counted as the hook benchmark's are.
fn write_script(path: &Path) -> std::io::Result<()> {
    std::fs::write(
        path,
        format!(
            r#"-- The Django benchmark's requests (written by tests/src/bench/django.rs).
local threads = {{}}
sent = 0

function setup(thread)
  table.insert(threads, thread)
end

function request()
  sent = sent + 1
  return wrk.format("GET", "{PAGE}", {{["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) bench"}})
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
        ),
    )
}

struct Target {
    name: &'static str,
    django: Django,
    url: String,
    runs: Vec<Outcome>,
    accepted: u64,
    errors: u64,
}

impl Target {
    fn start(
        site: &Site,
        venv: &Venv,
        name: &'static str,
        middleware: &str,
        port: u16,
        token: &Path,
    ) -> anyhow::Result<Target> {
        let bind = format!("127.0.0.1:{port}").parse()?;
        let options = DjangoOptions::new(bind)
            .workers(1)
            .env("EXAMPLE_MIDDLEWARE", middleware)
            .env("TRACKING_AGENT_URL", format!("http://{}", site::ADDR))
            .env("TRACKING_HOOK_TOKEN_FILE", OsString::from(token));
        let django = site::unpanic("starting gunicorn", || {
            Django::start(&site.netns, venv, options)
        })?
        .with_context(|| format!("starting the {name} site"))?;
        Ok(Target {
            name,
            django,
            url: format!("http://{bind}{PAGE}"),
            runs: Vec::new(),
            accepted: 0,
            errors: 0,
        })
    }

    fn run(&mut self, site: &Site, script: &Path, duration: Duration) -> anyhow::Result<Outcome> {
        let o =
            wrk::run_url(&site.netns, &self.url, script, load(duration)).with_context(|| {
                format!("loading the {} site\n{}", self.name, self.django.log_tail())
            })?;
        self.accepted += o.accepted();
        self.errors += o.status_errors + o.socket_errors;
        Ok(o)
    }
}

/// Waits until the agent has tracked `expected` visits (the senders post every 100 ms);
/// returns how many it tracked.
fn tracked(site: &Site, expected: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = site.stats()?["visits"]["tracked"].as_u64().unwrap_or(0);
        if n >= expected || Instant::now() > deadline {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let p = Params::of(scale);
    let venv = Venv::find(VENV).context("the Django benchmark")?;
    let dir = tempfile::Builder::new()
        .prefix("trk-bench-django-")
        .tempdir()?;
    let script = dir.path().join("pages.lua");
    write_script(&script)?;
    let token = dir.path().join("hook-token");
    std::fs::write(&token, HOOK_TOKEN)?;

    let site = Site::agent(None, &[])?;
    let mut targets = [
        Target::start(&site, &venv, "Django alone", "none", 8001, &token)?,
        Target::start(&site, &venv, "with the middleware", "seed", 8002, &token)?,
    ];
    if let Some(warmup) = p.warmup {
        for t in &mut targets {
            t.run(&site, &script, warmup)?;
        }
    }
    for _ in 0..p.rounds {
        for t in &mut targets {
            let o = t.run(&site, &script, p.duration)?;
            t.runs.push(o);
        }
    }
    let expected = targets[1].accepted;
    let got = tracked(&site, expected)?;
    // wrk stops with its one request in flight: served and tracked, its answer unread.
    let in_flight = (p.rounds + usize::from(p.warmup.is_some())) as u64;
    if got > expected + in_flight {
        bail!("the agent tracked {got} visits, more than the {expected} requests answered");
    }
    let lost = expected.saturating_sub(got);

    let [alone, with] = &targets;
    let of = |t: &Target, f: fn(&Outcome) -> f64| -> Vec<f64> { t.runs.iter().map(f).collect() };
    let mut rows = Vec::new();
    for (label, f) in [
        (
            "p50 latency",
            (|o: &Outcome| o.p50_us) as fn(&Outcome) -> f64,
        ),
        ("p99 latency", |o: &Outcome| o.p99_us),
    ] {
        let base = of(alone, f);
        let own = of(with, f);
        let ratios: Vec<f64> = own.iter().zip(&base).map(|(w, a)| w / a).collect();
        let added: Vec<f64> = own.iter().zip(&base).map(|(w, a)| w - a).collect();
        rows.push(Row::new(format!("Django alone: {label}"), "µs", base));
        rows.push(
            Row::new(format!("with the middleware: {label}"), "µs", own)
                .paired(&ratios, "Django alone"),
        );
        let row = Row::new(format!("added by the middleware: {label}"), "µs", added);
        rows.push(if label.starts_with("p50") {
            row.value_at_most(TARGET_US)
        } else {
            row
        });
    }
    let base = of(alone, |o| o.rate);
    let own = of(with, |o| o.rate);
    let ratios: Vec<f64> = own.iter().zip(&base).map(|(w, a)| w / a).collect();
    rows.push(Row::new("Django alone: requests/s", "/s", base));
    rows.push(
        Row::new("with the middleware: requests/s", "/s", own).paired(&ratios, "Django alone"),
    );
    rows.push(Row::new("visits lost", "visits", vec![lost as f64]).value_at_most(0.0));

    let mut notes = vec![format!(
        "{} requests answered by the site with the middleware, {got} visits tracked by the agent, \
         {lost} lost; {} error answers or socket errors in all.",
        with.accepted,
        alone.errors + with.errors
    )];
    notes.push(
        "The added latency is the difference of each round's medians (with minus alone), and its \
         median over the rounds. Both sites, wrk and the agent share the machine's cores; the \
         agent's own work on the visits is not in the request's latency but competes for them."
            .into(),
    );
    notes.push(
        "BannedIPMiddleware asks the agent once per client address per TRACKING_BAN_CACHE_SECONDS \
         (5 s): wrk is one address, so its requests are answered from the cache, as a returning \
         visitor's are; a client's first request adds one round trip to the agent on loopback."
            .into(),
    );
    Ok(Report {
        name: "django",
        title: "Django request latency with the middleware".into(),
        method: format!(
            "wrk (`-t1 -c1`, keep-alive, {}s a run, {} round{}; each round loads Django alone, then \
             with the middleware) GETting `{PAGE}` of the example site (a template, Django's session \
             and authentication middleware, no database query) under gunicorn with one sync worker, \
             Django {}, beside the agent in a namespace of their own on loopback. Target: the \
             middleware adds at most {TARGET_US} µs at p50.",
            p.duration.as_secs(),
            p.rounds,
            if p.rounds == 1 { "" } else { "s" },
            VENV.trim_start_matches("django-"),
        ),
        rows,
        notes,
    })
}
