//! Benchmark 4: visits a second through the hook, `POST /v1/visits` over HTTP, with the agent
//! storing them in SQLite and in PostgreSQL, against the floor of the same binary's HTTP stack
//! answering 202 and doing nothing. wrk loads each in turn, round after round, in the same run;
//! afterwards every visit wrk had an answer for must be in the store.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Report, Row, Scale, cpu, report,
    site::{self, Memory, Site},
    wrk::{self, Load, Outcome},
};

/// Sessions the visits come from, each from its own address.
const SESSIONS: u32 = 10_000;
/// Pages they visit.
const PAGES: u32 = 100;
const CONNECTIONS: u32 = 64;

/// The SQLite agent's memory after the last hook run in this process, for the memory benchmark.
static SQLITE_MEMORY: Mutex<Option<Memory>> = Mutex::new(None);

struct Params {
    rounds: usize,
    duration: Duration,
    /// A first run of each, counted for the check but not in the rows: connections, caches
    /// and the store's first pages warmed.
    warmup: Option<Duration>,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                rounds: 5,
                duration: Duration::from_secs(10),
                warmup: Some(Duration::from_secs(2)),
            },
            Scale::Quick => Params {
                rounds: 1,
                duration: Duration::from_secs(2),
                warmup: None,
            },
        }
    }
}

fn load(duration: Duration) -> Load {
    Load {
        threads: 1,
        connections: CONNECTIONS,
        duration,
    }
}

/// Slow-loris connections (a request head that never ends) held open during an abused run.
const SLOW_CLIENTS: usize = 200;
/// Idle connections held open during an abused run.
const IDLE_CLIENTS: usize = 2000;

/// One target and what it was sent and answered over the whole run.
struct Target {
    name: &'static str,
    site: Site,
    /// Whether its runs are made with [`SLOW_CLIENTS`] and [`IDLE_CLIENTS`] connected.
    abused: bool,
    /// The PostgreSQL server the agent writes to, whose CPU counts with the agent's.
    database_pid: Option<u32>,
    runs: Vec<Run>,
    sent: u64,
    accepted: u64,
    status_errors: u64,
    socket_errors: u64,
}

/// What one wrk run measured, and who used the CPU meanwhile.
#[derive(Clone, Copy, Debug)]
struct Run {
    wrk: Outcome,
    /// Server CPU (with its database server's) per visit answered, until the writer drained.
    server_us: f64,
    /// wrk's own CPU per answer.
    wrk_us: f64,
    /// Cores' worth of CPU that neither the server nor wrk used while wrk ran: the machine's
    /// other work.
    others: f64,
    /// Cores' worth the hypervisor took.
    steal: f64,
}

impl Target {
    fn new(name: &'static str, site: Site, database_pid: Option<u32>) -> Target {
        Target {
            name,
            site,
            abused: false,
            database_pid,
            runs: Vec::new(),
            sent: 0,
            accepted: 0,
            status_errors: 0,
            socket_errors: 0,
        }
    }

    /// CPU time used so far by the server and its database server.
    fn server_cpu(&self) -> anyhow::Result<Duration> {
        let database = match self.database_pid {
            Some(pid) => cpu::tree(pid)?,
            None => Duration::ZERO,
        };
        Ok(self.site.cpu_time()? + database)
    }

    /// One wrk run; for an agent, also waits until its writer has stored everything, so that
    /// the next target does not share the machine with a draining writer.
    fn run(&mut self, script: &std::path::Path, duration: Duration) -> anyhow::Result<Run> {
        let _abuse = if self.abused {
            Some(self.site.abuse(SLOW_CLIENTS, IDLE_CLIENTS)?)
        } else {
            None
        };
        let (machine, children, server) =
            (cpu::Machine::now()?, cpu::children(), self.server_cpu()?);
        let started = Instant::now();
        let o = wrk::run(&self.site, script, load(duration))
            .with_context(|| format!("loading {}", self.name))?;
        let wall = started.elapsed().as_secs_f64();
        let machine = cpu::Machine::now()?.since(machine);
        let wrk_cpu = cpu::children().saturating_sub(children);
        let server_during = self.server_cpu()?.saturating_sub(server);
        self.sent += o.sent;
        self.accepted += o.accepted();
        self.status_errors += o.status_errors;
        self.socket_errors += o.socket_errors;
        if self.site.is_agent() {
            self.site.drained()?;
        }
        let server_total = self.server_cpu()?.saturating_sub(server);
        let others = machine
            .busy
            .saturating_sub(wrk_cpu)
            .saturating_sub(server_during);
        Ok(Run {
            wrk: o,
            server_us: server_total.as_secs_f64() * 1e6 / o.accepted().max(1) as f64,
            wrk_us: wrk_cpu.as_secs_f64() * 1e6 / o.complete.max(1) as f64,
            others: others.as_secs_f64() / wall,
            steal: machine.steal.as_secs_f64() / wall,
        })
    }

    /// Whether the store holds a page view for every visit that was answered 202, and for
    /// every visit the agent tracked; a note saying how it adds up, and the visits lost.
    fn account(&self) -> anyhow::Result<(u64, String)> {
        let visits = self.site.drained()?;
        let n = |k: &str| visits[k].as_u64().unwrap_or(0);
        let (tracked, stored_views) = (n("tracked"), n("page_views_total"));
        // A visit answered 202, or tracked by the agent, that is not in the store is lost.
        let lost = self.accepted.max(tracked).saturating_sub(stored_views);
        // wrk stops with a request in flight on some connections: the agent may have tracked
        // those without wrk reading the answer. They are stored, and at most one a connection.
        let in_flight = stored_views.saturating_sub(self.accepted);
        if stored_views > self.sent {
            bail!(
                "{}: the store holds {stored_views} page views, more than the {} visits sent",
                self.name,
                self.sent
            );
        }
        let note = format!(
            "{}: {} visits sent, {} answered 202, {} tracked, {} page views in the store ({} of \
             them in flight when wrk stopped, stored without wrk reading the answer), {} lost; \
             {} error answers, {} socket errors.",
            self.name,
            self.sent,
            self.accepted,
            tracked,
            stored_views,
            in_flight,
            lost,
            self.status_errors,
            self.socket_errors
        );
        Ok((lost, note))
    }
}

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let p = Params::of(scale);
    let dir = tempfile::Builder::new()
        .prefix("trk-bench-hook-")
        .tempdir()?;
    let script = dir.path().join("visits.lua");
    wrk::write_script(&script, SESSIONS, PAGES)?;
    let started = Instant::now();
    let pg = site::postgres_database()?;
    let pg_started = started.elapsed();
    let mut abused = Target::new("SQLite, abused", Site::agent(None, &[])?, None);
    abused.abused = true;
    let mut targets = [
        Target::new("floor", Site::floor()?, None),
        Target::new("SQLite", Site::agent(None, &[])?, None),
        Target::new(
            "PostgreSQL",
            Site::agent(Some(&pg), &[])?,
            site::postgres_pid(&pg),
        ),
        Target::new(
            "SQLite, 202 after commit",
            Site::agent(None, &["--visit-ack", "stored"])?,
            None,
        ),
        abused,
        Target::new("SQLite with the bot list", Site::agent(None, &[])?, None),
    ];
    let bots = targets[5].site.import_bots()?;
    let bot_rules = bots["after"].as_u64().unwrap_or(0);
    if let Some(warmup) = p.warmup {
        for t in &mut targets {
            t.run(&script, warmup)?;
        }
    }
    for _ in 0..p.rounds {
        for t in &mut targets {
            let run = t.run(&script, p.duration)?;
            t.runs.push(run);
        }
    }
    let memory = targets[1].site.memory()?;
    *SQLITE_MEMORY.lock().expect("not poisoned") = Some(memory);

    let mut notes = Vec::new();
    notes.push(
        "`SQLite, 202 after commit` runs with `--visit-ack stored`: the hook answers once the \
         transaction holding the visit has committed (group commit), so no answered visit can be \
         lost to a crash."
            .into(),
    );
    notes.push(format!(
        "`SQLite, abused` runs with {SLOW_CLIENTS} connections that send a request head a byte at \
         a time and {IDLE_CLIENTS} that send nothing, all opened before wrk starts."
    ));

    let mut lost = Vec::new();
    for t in &targets[1..] {
        let (n, note) = t.account()?;
        lost.push((t.name, n));
        notes.push(note);
    }
    if targets
        .iter()
        .any(|t| t.status_errors + t.socket_errors > 0)
    {
        notes.push("Error answers or socket errors above: the rates count them as answers.".into());
    }
    notes.push(format!("Resident memory of the SQLite agent: {memory}."));
    notes.push(format!(
        "CPU per visit: user and system time of the server process (all its threads and the \
         kernel's TCP work on its behalf; for the agent, storing the visits until its writer \
         drained; on PostgreSQL, with the server's processes{}) over the visits answered.",
        if targets[2].database_pid.is_some() {
            ""
        } else {
            ", which could not be found and are not counted"
        }
    ));
    let median_of = |f: &dyn Fn(&Run) -> f64| -> Vec<String> {
        targets
            .iter()
            .map(|t| {
                let v: Vec<f64> = t.runs.iter().map(f).collect();
                format!("{} {}", t.name, report::fmt(report::median(&v)))
            })
            .collect()
    };
    notes.push(format!(
        "Who used the cores while wrk ran (medians): wrk itself, µs a request: {}; the \
         machine's other work (other builds, not the server nor wrk), cores: {}; stolen by the \
         hypervisor, cores: {}. wrk and the server share the machine's {} cores.",
        median_of(&|r| r.wrk_us).join(", "),
        median_of(&|r| r.others).join(", "),
        median_of(&|r| r.steal).join(", "),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    notes.push(
        "The PostgreSQL server is the test suite's throwaway one (initdb, Unix socket, fsync, \
         synchronous_commit and full_page_writes off) on the same machine; SQLite runs with the \
         agent's own settings."
            .into(),
    );

    let floor = &targets[0];
    let mut rows = Vec::new();
    let samples = |t: &Target, which: usize| -> Vec<f64> {
        t.runs
            .iter()
            .map(|r| match which {
                0 => r.wrk.rate,
                1 => r.wrk.p50_us,
                2 => r.wrk.p99_us,
                _ => r.server_us,
            })
            .collect()
    };
    for (which, label, unit) in [
        (0, "visits/s", "/s"),
        (1, "p50 latency", "µs"),
        (2, "p99 latency", "µs"),
        (3, "CPU per visit", "µs"),
    ] {
        let floor_samples = samples(floor, which);
        rows.push(Row::new(
            format!("floor (202, nothing done): {label}"),
            unit,
            floor_samples.clone(),
        ));
        for t in &targets[1..3] {
            let own = samples(t, which);
            let ratios: Vec<f64> = own.iter().zip(&floor_samples).map(|(s, f)| s / f).collect();
            let name = match (which, t.database_pid) {
                (3, Some(_)) => format!("agent, {} (with its server): {label}", t.name),
                _ => format!("agent, {}: {label}", t.name),
            };
            let row = Row::new(name, unit, own).paired(&ratios, "floor");
            rows.push(if which == 0 && !t.abused {
                row.ratio_at_least(0.5)
            } else {
                row
            });
        }
    }
    // Under abuse, against the same agent unloaded in the same round.
    let (plain, abused) = (&targets[1], &targets[4]);
    let ratios: Vec<f64> = samples(abused, 2)
        .iter()
        .zip(samples(plain, 2))
        .map(|(a, p)| a / p)
        .collect();
    rows.push(
        Row::new(
            format!(
                "agent, SQLite, with {SLOW_CLIENTS} slow-loris and {IDLE_CLIENTS} idle \
                 connections: p99 latency"
            ),
            "µs",
            samples(abused, 2),
        )
        .paired(&ratios, "SQLite unloaded")
        .ratio_at_most(2.0),
    );
    // The bot list's cost: the same store with and without its rules, round by round.
    for (which, label, unit) in [(0, "visits/s", "/s"), (3, "CPU per visit", "µs")] {
        let without = samples(&targets[1], which);
        let with = samples(&targets[5], which);
        let ratios: Vec<f64> = with.iter().zip(&without).map(|(w, o)| w / o).collect();
        let row = Row::new(
            format!("agent, SQLite with the bot list ({bot_rules} rules): {label}"),
            unit,
            with,
        )
        .paired(&ratios, "SQLite without");
        rows.push(if which == 0 {
            row.ratio_at_least(0.9)
        } else {
            row
        });
    }
    for (name, n) in lost {
        rows.push(
            Row::new(
                format!("agent, {name}: visits lost"),
                "visits",
                vec![n as f64],
            )
            .value_at_most(0.0),
        );
    }
    Ok(Report {
        name: "hook",
        title: "Visit hook ingestion".into(),
        method: format!(
            "wrk (`-t1 -c{CONNECTIONS}`, keep-alive, {}s a run, {} round{}; each round loads the floor, then the \
             agent on SQLite, then on PostgreSQL, each after the other has drained its writer; ratios are the \
             median of each round's ratio to the floor of that round; last, the agent on SQLite again with \
             the bot list imported, `ua import --bots`, compared with the one without) posting JSON visits of {SESSIONS} sessions, \
             each from its own address, over {PAGES} pages, to `POST /v1/visits` on loopback in a namespace of \
             its own. The agent filters an idle veth interface, not the loopback the hook arrives on. Afterwards the \
             store's page-view total (`GET /v1/stats`) is compared with the 202 answers. PostgreSQL started in \
             {:.1} s.",
            p.duration.as_secs(),
            p.rounds,
            if p.rounds == 1 { "" } else { "s" },
            pg_started.as_secs_f64()
        ),
        rows,
        notes,
    })
}

/// The SQLite agent's memory under the hook's load: as measured by the last [`run`] in this
/// process, or else from a short load now. Returns it and whether it was measured now.
pub fn sqlite_memory(scale: Scale) -> anyhow::Result<(Memory, bool)> {
    if let Some(memory) = *SQLITE_MEMORY.lock().expect("not poisoned") {
        return Ok((memory, false));
    }
    let dir = tempfile::Builder::new()
        .prefix("trk-bench-hook-")
        .tempdir()?;
    let script = dir.path().join("visits.lua");
    wrk::write_script(&script, SESSIONS, PAGES)?;
    let mut target = Target::new("SQLite", Site::agent(None, &[])?, None);
    let duration = match scale {
        Scale::Full => Duration::from_secs(10),
        Scale::Quick => Duration::from_secs(2),
    };
    target.run(&script, duration)?;
    Ok((target.site.memory()?, true))
}
