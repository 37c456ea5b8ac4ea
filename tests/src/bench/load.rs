//! Benchmark 3: loading a big list. From a file of a million random IPv4 addresses (a few with
//! Spamhaus-style `; SBLnnn` reasons) to all of it enforced, three ways:
//!
//! 1. `tracking ban sync --file` against a running agent with a fresh store: the command returns
//!    when the bans are stored and in the kernel tables;
//! 2. `nft -f` of a file creating a `netdev` table with a set of the addresses and an ingress
//!    chain dropping them;
//! 3. `ipset restore` of a `hash:ip` set.
//!
//! Then a re-sync where 1% of the list changed (half removed, as many added): `tracking ban sync`
//! of the new list, `nft -f` and `ipset restore` of the delta. The peers run in a throwaway
//! namespace (the agent's), so nothing touches the host's firewall; each round starts from
//! nothing (a new agent and store, no table, no set).

mod breakdown;

use std::{
    net::Ipv4Addr,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{
    Report, Row, Scale,
    firewall::{IpSet, NftTable, run_in},
    lists, release,
    report::{fmt, grouped, median},
};
use crate::{Agent, AgentOptions, Netns, Topology};

const SEED: u64 = 0x10ad;
/// The source name the list's bans are kept under.
const SOURCE: &str = "bench";
/// What changes in the re-sync.
const CHANGED: f64 = 0.01;
const NFT_TABLE: &str = "trkload";
const IPSET: &str = "trkload";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Tracking,
    Nft,
    Ipset,
}

const TOOLS: [Tool; 3] = [Tool::Tracking, Tool::Nft, Tool::Ipset];

/// The inputs, each tool's own format, in a temporary directory.
struct Files {
    /// Held for its drop, which removes the files.
    _dir: tempfile::TempDir,
    list: PathBuf,
    changed_list: PathBuf,
    nft: PathBuf,
    nft_delta: PathBuf,
    ipset: PathBuf,
    ipset_delta: PathBuf,
}

impl Files {
    fn write(list: &[Ipv4Addr], change: &lists::Change, iface: &str) -> anyhow::Result<Files> {
        let dir = tempfile::Builder::new().prefix("trk-load-").tempdir()?;
        let path = |name: &str| dir.path().join(name);
        let n = list.len();
        let files = Files {
            list: path("list.txt"),
            changed_list: path("changed.txt"),
            nft: path("list.nft"),
            nft_delta: path("delta.nft"),
            ipset: path("list.ipset"),
            ipset_delta: path("delta.ipset"),
            _dir: dir,
        };
        std::fs::write(&files.list, lists::tracking(list))?;
        std::fs::write(&files.changed_list, lists::tracking(&change.list))?;
        // A sized set: nft then picks a fixed-size hash, which loads faster than the
        // resizable one (about 1.5x in a trial here).
        std::fs::write(
            &files.nft,
            format!(
                "table netdev {NFT_TABLE} {{\n\
                 \tset banned {{ type ipv4_addr; size {}; elements = {{ {} }} }}\n\
                 \tchain ingress {{\n\
                 \t\ttype filter hook ingress device \"{iface}\" priority -500; policy accept;\n\
                 \t\tip saddr @banned drop\n\
                 \t}}\n}}\n",
                2 * n,
                lists::nft_elements(list)
            ),
        )?;
        std::fs::write(
            &files.nft_delta,
            format!(
                "delete element netdev {NFT_TABLE} banned {{ {} }}\n\
                 add element netdev {NFT_TABLE} banned {{ {} }}\n",
                lists::nft_elements(&change.removed),
                lists::nft_elements(&change.added)
            ),
        )?;
        std::fs::write(
            &files.ipset,
            format!(
                "create {IPSET} hash:ip family inet hashsize {} maxelem {}\n{}",
                (n / 4).next_power_of_two().max(1024),
                2 * n,
                lists::ipset_lines("add", IPSET, list)
            ),
        )?;
        std::fs::write(
            &files.ipset_delta,
            lists::ipset_lines("del", IPSET, &change.removed)
                + &lists::ipset_lines("add", IPSET, &change.added),
        )?;
        Ok(files)
    }
}

/// One round of one tool: the full load and the re-sync.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    full: Duration,
    resync: Duration,
    /// What the agent's reply says it took (`took_ms`), for the agent only.
    took_full: Option<Duration>,
    took_resync: Option<Duration>,
}

struct Bench<'a> {
    topology: &'a Topology,
    binary: &'a Path,
    files: &'a Files,
    n: usize,
    changed: usize,
}

impl Bench<'_> {
    fn server(&self) -> &Netns {
        self.topology.server()
    }

    fn start_agent(&self) -> anyhow::Result<Agent> {
        let options = AgentOptions::new(self.topology.server_iface())
            .binary(self.binary)
            .args(["--http", "off", "--log", "warn"]);
        std::panic::catch_unwind(AssertUnwindSafe(|| Agent::start(self.server(), options)))
            .map_err(|_| anyhow::anyhow!("the agent did not start (its log is above)"))?
            .context("starting the agent")
    }

    fn tracking(&self) -> anyhow::Result<Times> {
        let agent = self.start_agent()?;
        let (took_full, full) = sync(&agent, &self.files.list)?;
        self.enforced(&agent, self.n)?;
        let (took_resync, resync) = sync(&agent, &self.files.changed_list)?;
        self.enforced(&agent, self.n)?;
        Ok(Times {
            full,
            resync,
            took_full,
            took_resync,
        })
    }

    /// Whether the kernel tables hold `n` IPv4 bans, per `tracking status --json`.
    fn enforced(&self, agent: &Agent, n: usize) -> anyhow::Result<()> {
        let out = agent.cli(["status", "--json"]);
        ensure!(out.status.success(), "tracking status failed: {out:?}");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let used = status["bans_v4"]["used"].as_u64();
        ensure!(
            used == Some(n as u64),
            "the kernel holds {used:?} IPv4 bans after the sync, not {n}"
        );
        Ok(())
    }

    fn nft(&self, check: bool) -> anyhow::Result<Times> {
        let table = NftTable::guard(self.server(), "netdev", NFT_TABLE);
        let full = self.timed("nft", &["-f".as_ref(), self.files.nft.as_os_str()], None)?;
        if check {
            self.nft_holds(self.n)?;
        }
        let resync = self.timed(
            "nft",
            &["-f".as_ref(), self.files.nft_delta.as_os_str()],
            None,
        )?;
        if check {
            self.nft_holds(self.n)?;
        }
        table.remove()?;
        Ok(Times {
            full,
            resync,
            ..Times::default()
        })
    }

    /// Whether the set holds `n` elements (listing a big set takes seconds: first round only).
    fn nft_holds(&self, n: usize) -> anyhow::Result<()> {
        let (out, _) = run_in(
            self.server(),
            "nft",
            ["list", "set", "netdev", NFT_TABLE, "banned"],
            None,
        )?;
        let count = nft_set_size(&out);
        ensure!(count == n, "the nft set holds {count} elements, not {n}");
        Ok(())
    }

    fn ipset(&self) -> anyhow::Result<Times> {
        let set = IpSet::guard(self.server(), IPSET);
        let full = self.timed("ipset", &["restore".as_ref()], Some(&self.files.ipset))?;
        self.ipset_holds(self.n)?;
        let resync = self.timed(
            "ipset",
            &["restore".as_ref()],
            Some(&self.files.ipset_delta),
        )?;
        self.ipset_holds(self.n)?;
        set.remove()?;
        Ok(Times {
            full,
            resync,
            ..Times::default()
        })
    }

    fn ipset_holds(&self, n: usize) -> anyhow::Result<()> {
        let (out, _) = run_in(self.server(), "ipset", ["list", "-t", IPSET], None)?;
        let count = out
            .lines()
            .find_map(|l| l.strip_prefix("Number of entries:"))
            .and_then(|c| c.trim().parse::<usize>().ok());
        ensure!(
            count == Some(n),
            "the ipset holds {count:?} entries, not {n}"
        );
        Ok(())
    }

    fn timed(
        &self,
        program: &str,
        args: &[&std::ffi::OsStr],
        stdin: Option<&Path>,
    ) -> anyhow::Result<Duration> {
        Ok(run_in(self.server(), program, args, stdin)?.1)
    }

    /// The agent's own split of a full load and a re-sync, through the API, with how long each
    /// call took from here (no CLI process, the list already in memory).
    fn breakdown(&self) -> anyhow::Result<[(serde_json::Value, Duration); 2]> {
        let agent = self.start_agent()?;
        let call = |path: &Path| -> anyhow::Result<(serde_json::Value, Duration)> {
            let list = std::fs::read(path)?;
            let started = Instant::now();
            let reply = breakdown::sync(agent.socket_path(), SOURCE, &list)?;
            Ok((reply, started.elapsed()))
        };
        let full = call(&self.files.list)?;
        let resync = call(&self.files.changed_list)?;
        let resync_reply = &resync.0;
        ensure!(
            resync_reply["added"].as_u64() == Some(self.changed as u64 / 2),
            "the re-sync through the API added {}, not {}",
            resync_reply["added"],
            self.changed / 2
        );
        Ok([full, resync])
    }
}

/// `tracking ban sync --file <list>`, timed from spawn to exit; also what it says it took.
fn sync(agent: &Agent, list: &Path) -> anyhow::Result<(Option<Duration>, Duration)> {
    let started = Instant::now();
    let out = agent.cli([
        "ban".as_ref(),
        "sync".as_ref(),
        "--source".as_ref(),
        SOURCE.as_ref(),
        "--file".as_ref(),
        list.as_os_str(),
    ]);
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "tracking ban sync failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((took(&stdout), wall))
}

/// The `in N ms` at the end of `tracking ban sync`'s summary line.
fn took(stdout: &str) -> Option<Duration> {
    let line = stdout.lines().find(|l| l.starts_with("synced "))?;
    let ms = line.strip_suffix(" ms")?.rsplit(' ').next()?;
    Some(Duration::from_millis(ms.parse().ok()?))
}

/// The number of elements `nft list set` shows.
fn nft_set_size(listing: &str) -> usize {
    let Some(at) = listing.find("elements = {") else {
        return 0;
    };
    let elements = &listing[at..];
    let elements = &elements[..elements.find('}').unwrap_or(elements.len())];
    elements.matches(',').count() + 1
}

/// One list size's rounds.
struct Sized {
    n: usize,
    changed: usize,
    /// By tool (in [`TOOLS`]' order), then by round.
    times: [Vec<Times>; 3],
}

/// The agent's own account of a full load and a re-sync through the API, with how long each
/// call took from here.
type Breakdown = [(serde_json::Value, Duration); 2];

/// Every tool's rounds at `n` lines, and with `split` the agent's own breakdown too.
fn measure(
    n: usize,
    rounds: usize,
    binary: &Path,
    topology: &Topology,
    split: bool,
) -> anyhow::Result<(Sized, Option<Breakdown>)> {
    let list = lists::addresses(n, SEED);
    let change = lists::change(&list, CHANGED, SEED + 1);
    let changed = change.removed.len() + change.added.len();
    let files = Files::write(&list, &change, topology.server_iface())?;
    drop(list);
    let bench = Bench {
        topology,
        binary,
        files: &files,
        n,
        changed,
    };
    let mut times: [Vec<Times>; 3] = Default::default();
    for round in 0..rounds {
        // A different tool goes first each round, so none always follows the same one.
        for k in 0..TOOLS.len() {
            let i = (round + k) % TOOLS.len();
            let t = match TOOLS[i] {
                Tool::Tracking => bench.tracking(),
                Tool::Nft => bench.nft(round == 0),
                Tool::Ipset => bench.ipset(),
            }
            .with_context(|| format!("{:?}, round {}", TOOLS[i], round + 1))?;
            times[i].push(t);
        }
    }
    let split = if split {
        Some(bench.breakdown().context("the agent's breakdown")?)
    } else {
        None
    };
    Ok((Sized { n, changed, times }, split))
}

/// The list size the targets are stated for.
const TARGET_LINES: usize = 1_000_000;

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let (sizes, rounds): (&[usize], usize) = match scale {
        Scale::Full => (&[10_000, 100_000, TARGET_LINES], 3),
        Scale::Quick => (&[10_000, 100_000], 3),
    };
    let binary = release::agent()?;
    let topology = Topology::new().context("the namespace")?;
    let mut all = Vec::new();
    let mut split = None;
    for (i, &n) in sizes.iter().enumerate() {
        let last = i + 1 == sizes.len();
        let (sized, s) = measure(n, rounds, &binary, &topology, last)
            .with_context(|| format!("{} lines", grouped(n)))?;
        all.push(sized);
        split = split.or(s);
    }
    let split = split.context("the breakdown of the largest list")?;
    Ok(report(rounds, &all, &split))
}

/// The rows of one list size; targets where it is the size they are stated for.
fn size_rows(sized: &Sized) -> Vec<Row> {
    let Sized { n, changed, times } = sized;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let full = |i: usize| times[i].iter().map(|t| ms(t.full)).collect::<Vec<_>>();
    let resync = |i: usize| times[i].iter().map(|t| ms(t.resync)).collect::<Vec<_>>();
    let [tracking, nft, ipset] = [0, 1, 2];
    let lines = grouped(*n);
    let (fast, fast_name) = if median(&full(nft)) <= median(&full(ipset)) {
        (nft, "nft")
    } else {
        (ipset, "ipset")
    };
    let paired = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(t, p)| t / p).collect::<Vec<f64>>();
    let delta = format!("1% changed ({changed} lines)");
    let targets = *n == TARGET_LINES;
    let load = Row::new(
        format!("tracking ban sync, {lines} lines"),
        "ms",
        full(tracking),
    )
    .paired(
        &paired(&full(tracking), &full(fast)),
        &format!("{fast_name} (the faster peer)"),
    )
    .also_paired(&paired(&full(tracking), &full(nft)), "nft")
    .also_paired(&paired(&full(tracking), &full(ipset)), "ipset");
    let resync_row = Row::new(
        format!("tracking ban sync, {lines} lines, {delta}"),
        "ms",
        resync(tracking),
    );
    vec![
        if targets {
            load.ratio_at_most(0.5)
        } else {
            load
        },
        Row::new(format!("nft -f, {lines} elements"), "ms", full(nft)),
        Row::new(format!("ipset restore, {lines} entries"), "ms", full(ipset)),
        if targets {
            resync_row.value_at_most(200.0)
        } else {
            resync_row
        },
        Row::new(
            format!("nft -f of the delta, {lines} lines, {delta}"),
            "ms",
            resync(nft),
        ),
        Row::new(
            format!("ipset restore of the delta, {lines} lines, {delta}"),
            "ms",
            resync(ipset),
        ),
    ]
}

/// How each tool's full load grows: microseconds a line at each size.
fn slope(all: &[Sized]) -> String {
    let names = ["tracking ban sync", "nft -f", "ipset restore"];
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let each: Vec<String> = all
                .iter()
                .map(|s| {
                    let ms: Vec<f64> = s.times[i]
                        .iter()
                        .map(|t| t.full.as_secs_f64() * 1000.0)
                        .collect();
                    format!(
                        "{} {}",
                        grouped(s.n),
                        fmt(median(&ms) * 1000.0 / s.n as f64)
                    )
                })
                .collect();
            format!("{name} {}", each.join(", "))
        })
        .chain(std::iter::once(format!(
            "of the agent's own account (took_ms, from having the list to all of it enforced), \
             ms: {}",
            all.iter()
                .map(|s| {
                    let took: Vec<f64> = s.times[0]
                        .iter()
                        .filter_map(|t| t.took_full.map(|d| d.as_secs_f64() * 1000.0))
                        .collect();
                    format!("{} {}", grouped(s.n), fmt(median(&took)))
                })
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .collect::<Vec<_>>()
        .join("; ")
}

fn report(rounds: usize, all: &[Sized], split: &Breakdown) -> Report {
    let rows: Vec<Row> = all.iter().flat_map(size_rows).collect();
    let largest = all.last().expect("at least one size");
    let Sized { n, changed, times } = largest;
    let (n, changed) = (*n, *changed);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let full = |i: usize| times[i].iter().map(|t| ms(t.full)).collect::<Vec<_>>();
    let resync = |i: usize| times[i].iter().map(|t| ms(t.resync)).collect::<Vec<_>>();
    let tracking = 0;
    let lines = grouped(n);
    let delta = format!("1% changed ({changed} lines)");
    let took = |f: fn(&Times) -> Option<Duration>| {
        let v: Vec<f64> = times[tracking]
            .iter()
            .filter_map(|t| f(t).map(ms))
            .collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let mut notes = vec![format!(
        "How the full load grows, microseconds a line at each size (a flat row is a straight line \
         through the origin): {}.",
        slope(all)
    )];
    for (what, wall, took, (reply, call)) in [
        (
            "full load",
            median(&full(tracking)),
            took(|t| t.took_full),
            &split[0],
        ),
        (
            "re-sync",
            median(&resync(tracking)),
            took(|t| t.took_resync),
            &split[1],
        ),
    ] {
        let part = |k: &str| reply[k].as_u64().map(|v| format!("{k} {v} ms"));
        let parts: Vec<String> = ["parse_ms", "store_ms", "kernel_ms"]
            .iter()
            .filter_map(|k| part(k))
            .collect();
        notes.push(format!(
            "tracking, {what}: the command's wall time is {} ms, of which the agent reports {} (its \
             took_ms, from having the list to all of it enforced); the rest is the CLI starting, reading \
             the file, sending it over the socket, the agent receiving it, and the reply. One more {what} \
             on a fresh agent, posted to the API from this process: {} ms for the call, {} ms by the \
             agent's account{}.",
            fmt(wall),
            took.map_or("nothing".into(), |t| format!("{} ms", fmt(t))),
            fmt(ms(*call)),
            reply["took_ms"],
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        ));
    }
    // What limits the targets, from the agent's own split of the largest list.
    let [nft, ipset] = [1, 2];
    let faster = median(&full(nft)).min(median(&full(ipset)));
    let part = |i: usize, k: &str| split[i].0[k].as_u64().unwrap_or(0);
    notes.push(format!(
        "What the {lines}-line targets come down to: half the faster peer's median is {} ms (its \
         median {} ms; the target is judged on each round's ratio), the agent's median full load \
         {} ms; by the agent's account the store's \
         transaction takes {} ms of it, the kernel tables {} ms and parsing {} ms, and the rest \
         (about {} ms) is the command and the socket around it. A 1% re-sync is given the whole \
         list again, where the peers are given the delta as commands: parsing and diffing {lines} \
         lines take {} ms and the store {} ms before the kernel's {} ms, against the 200 ms target.",
        fmt(faster / 2.0),
        fmt(faster),
        fmt(median(&full(tracking))),
        part(0, "store_ms"),
        part(0, "kernel_ms"),
        part(0, "parse_ms"),
        fmt((median(&full(tracking)) - took(|t| t.took_full).unwrap_or(0.0)).max(0.0)),
        part(1, "parse_ms"),
        part(1, "store_ms"),
        part(1, "kernel_ms"),
    ));
    let small = &all[0];
    let small_took: Vec<f64> = small.times[0]
        .iter()
        .filter_map(|t| t.took_full.map(ms))
        .collect();
    let small_wall: Vec<f64> = small.times[0].iter().map(|t| ms(t.full)).collect();
    notes.push(format!(
        "At {} lines the command's wall time is {} ms where the agent accounts for {} ms: a fixed \
         cost of about {} ms around the first sync to a freshly started agent (the re-syncs right \
         after it carry no such cost), which makes small lists slower than the peers'; its cause is \
         not taken apart here.",
        grouped(small.n),
        fmt(median(&small_wall)),
        fmt(median(&small_took)),
        fmt(median(&small_wall) - median(&small_took)),
    ));
    Report {
        name: "load",
        title: "Loading a big list".into(),
        method: format!(
            "{sizes} random public IPv4 addresses (exact addresses: with networks mixed in nft needs an \
             interval set, which loads several times slower); every 1000th line of the agent's list has a \
             Spamhaus-style `; SBLnnn` reason. Wall time, from spawning the command to its exit, of \
             `tracking ban sync --file` against a running release agent with a fresh SQLite store (it \
             returns when the bans are stored and in the kernel tables; checked with `tracking status`), \
             of `nft -f` creating a netdev table with a sized `ipv4_addr` set and an ingress chain using \
             it, and of `ipset restore` creating a `hash:ip` set. Then a re-sync with {delta}: the whole \
             new list to `tracking ban sync`, delete/add element statements to `nft -f`, del/add lines \
             to `ipset restore`. {rounds} rounds, the tools in turns (a different one first each round), \
             each round from nothing; the peers run in a throwaway network namespace. The ratio is the \
             median of per-round ratios against the faster peer; the targets are stated for \
             {lines} lines, the notes' breakdown is of the largest list.",
            sizes = all
                .iter()
                .map(|s| grouped(s.n))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        rows,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_summary_says_what_it_took() {
        assert_eq!(
            took("synced bench: 1000000 added, 0 updated, 0 removed, 0 unchanged in 2534 ms\n"),
            Some(Duration::from_millis(2534))
        );
        assert_eq!(
            took(
                "warning: x\nsynced b: 1 added, 0 updated, 0 removed, 0 unchanged, 2 duplicate lines skipped in 7 ms\n"
            ),
            Some(Duration::from_millis(7))
        );
        assert_eq!(took("nothing\n"), None);
    }

    #[test]
    fn nft_set_listings_are_counted() {
        let listing = "table netdev t {\n\tset banned {\n\t\ttype ipv4_addr\n\t\tsize 10\n\t\telements = { 192.0.2.1, 192.0.2.2,\n\t\t\t     192.0.2.3 }\n\t}\n}\n";
        assert_eq!(nft_set_size(listing), 3);
        assert_eq!(
            nft_set_size("table netdev t {\n\tset banned {\n\t}\n}\n"),
            0
        );
    }

    #[test]
    fn counts_are_grouped() {
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(100_000), "100,000");
        assert_eq!(grouped(999), "999");
    }
}
