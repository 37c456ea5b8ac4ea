//! What the HTTP benchmarks load: the real agent, or the floor (`bench-floor`, the
//! agent's HTTP stack answering 202 and doing nothing), each in a network namespace of its own
//! with its listener on the namespace's loopback.
//!
//! The agent is attached to an idle interface of its namespace (one end of a veth pair whose
//! both ends stay there; kernels without the `dummy` driver have veth), not to `lo`: in a
//! deployment the hook arrives over loopback or a private network while XDP guards the public
//! interface, so hook traffic never passes the filter, and here it does not either. Two agents
//! cannot share one interface, hence a namespace each.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    panic::AssertUnwindSafe,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{Agent, AgentOptions, Netns, http::Request};

pub const HOOK_TOKEN: &str = "bench-hook-token-0123456789";
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// Where every site listens, inside its own namespace.
pub const ADDR: &str = "127.0.0.1:8080";

/// How long the agent's writer may take to store what the hook accepted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// A server under load, in its own namespace. Dropping it stops the server, then deletes the
/// namespace.
pub struct Site {
    // Declared first: the server goes before its namespace.
    server: Server,
    pub netns: Netns,
    pub http: SocketAddr,
}

enum Server {
    Agent(Box<Agent>),
    Floor(Floor),
}

impl Site {
    /// The agent with its HTTP listener, on its own SQLite file or on `database` (a
    /// `postgresql://` URL), with `extra` flags.
    pub fn agent(database: Option<&str>, extra: &[&str]) -> anyhow::Result<Site> {
        let netns = namespace()?;
        let mut options = AgentOptions::new(IFACE)
            .args([
                "--http",
                ADDR,
                "--hook-token",
                HOOK_TOKEN,
                "--admin-token",
                ADMIN_TOKEN,
                "--log",
                "warn",
            ])
            .args(extra);
        if let Some(url) = database {
            options = options.database(url);
        }
        let agent = unpanic("starting the agent", || Agent::start(&netns, options))?
            .context("starting the agent")?;
        Ok(Site {
            server: Server::Agent(Box::new(agent)),
            netns,
            http: ADDR.parse()?,
        })
    }

    /// The floor: `bench-floor`, built beside this benchmark binary, waited for until it
    /// accepts connections.
    pub fn floor() -> anyhow::Result<Site> {
        let netns = namespace()?;
        let http: SocketAddr = ADDR.parse()?;
        let floor = std::env::current_exe()?.with_file_name("bench-floor");
        anyhow::ensure!(
            floor.is_file(),
            "no floor at {}: `cargo xtask bench` builds it beside the bench binary",
            floor.display()
        );
        let mut command = netns.command(floor);
        command
            .args(["--http", ADDR])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let site = Site {
            server: Server::Floor(Floor(command.spawn().context("starting the floor")?)),
            netns,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while site.netns.run(|| TcpStream::connect(http)).is_err() {
            if Instant::now() > deadline {
                bail!("the floor does not accept connections on {http}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(site)
    }

    pub fn is_agent(&self) -> bool {
        matches!(self.server, Server::Agent(_))
    }

    /// `POST /v1/ua/import` of the bot list, with the admin token: about 1,500 user-agent
    /// rules each visit is matched against.
    pub fn import_bots(&self) -> anyhow::Result<Value> {
        let r = Request::post("/v1/ua/import")
            .bearer(ADMIN_TOKEN)
            .json(&serde_json::json!({"list": "bots"}))
            .send(&self.netns, self.http)?;
        if r.status != 200 {
            bail!("POST /v1/ua/import: {} {}", r.status, r.text());
        }
        Ok(r.json())
    }

    /// `GET /v1/stats` with the admin token.
    pub fn stats(&self) -> anyhow::Result<Value> {
        let r = Request::get("/v1/stats")
            .bearer(ADMIN_TOKEN)
            .send(&self.netns, self.http)?;
        if r.status != 200 {
            bail!("GET /v1/stats: {} {}", r.status, r.text());
        }
        Ok(r.json())
    }

    /// Waits until the agent's writer has stored (or given up on) every visit it tracked;
    /// returns the `visits` figures of the stats then.
    pub fn drained(&self) -> anyhow::Result<Value> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let visits = self.stats()?["visits"].clone();
            let n = |k: &str| visits[k].as_u64().unwrap_or(0);
            if n("stored") + n("lost") >= n("tracked") {
                return Ok(visits);
            }
            if Instant::now() > deadline {
                bail!("the agent's writer did not catch up within {DRAIN_TIMEOUT:?}: {visits}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server process's id.
    fn pid(&self) -> anyhow::Result<u32> {
        match &self.server {
            Server::Agent(a) => a.pid().context("the agent is not running"),
            Server::Floor(f) => Ok(f.0.id()),
        }
    }

    /// CPU time the server process has used so far, user and system, all its threads.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        super::cpu::process(self.pid()?)
    }

    /// The agent's resident memory: its peak so far and what it holds now, by kind.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
            Ok(kib * 1024)
        };
        Ok(Memory {
            peak: field("VmHWM")?,
            anon: field("RssAnon")?,
            file: field("RssFile")?,
            shmem: field("RssShmem")?,
        })
    }

    /// A keep-alive connection to the site, opened inside its namespace.
    pub fn connect(&self) -> anyhow::Result<KeepAlive> {
        let stream = self.netns.run(|| TcpStream::connect(self.http))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(KeepAlive {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }
}

/// The interface the agent filters.
const IFACE: &str = "bench0";

/// An agent's resident memory, in bytes, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// `VmHWM`: the peak of the resident set.
    pub peak: u64,
    /// `RssAnon`: the heap and stacks, now.
    pub anon: u64,
    /// `RssFile`: mapped files (the binary; the kernel tables the agent maps), now.
    pub file: u64,
    /// `RssShmem`, now.
    pub shmem: u64,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        write!(
            f,
            "peak {:.1} MiB; at the end {:.1} MiB anonymous, {:.1} MiB file-backed, {:.1} MiB shared",
            mib(self.peak),
            mib(self.anon),
            mib(self.file),
            mib(self.shmem)
        )
    }
}

/// A namespace with `lo` up and an idle veth pair, `bench0` and `bench1`.
fn namespace() -> anyhow::Result<Netns> {
    let netns = Netns::new("bench")?;
    netns.ip([
        "link", "add", IFACE, "type", "veth", "peer", "name", "bench1",
    ])?;
    netns.ip(["link", "set", IFACE, "up"])?;
    netns.ip(["link", "set", "bench1", "up"])?;
    Ok(netns)
}

/// The floor's process; SIGTERM on drop.
struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects; the pid is our own unreaped child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Site {
    /// Opens `slow` connections that have sent part of a request head and `idle` ones that
    /// have sent nothing; they stay open (as far as the client is concerned) until the
    /// returned value is dropped.
    pub fn abuse(&self, slow: usize, idle: usize) -> anyhow::Result<Vec<TcpStream>> {
        crate::raise_open_files();
        let http = self.http;
        self.netns.run(|| {
            let mut held = Vec::with_capacity(slow + idle);
            for i in 0..slow + idle {
                let mut stream = TcpStream::connect(http)?;
                if i < slow {
                    stream.write_all(b"POST /v1/visits HTTP/1.1\r\nHost: x\r\n")?;
                }
                held.push(stream);
            }
            Ok(held)
        })
    }
}

/// An HTTP/1.1 connection kept open across requests, for measuring many small ones.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// An answer on a [`KeepAlive`] connection.
pub struct Answer {
    pub status: u16,
    /// `Server-Timing: app;dur=<ms>`, in microseconds.
    pub server_us: Option<f64>,
    pub body: Vec<u8>,
}

impl KeepAlive {
    /// `GET path` with the hook token; reads the whole answer.
    pub fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        self.get_as(path, HOOK_TOKEN)
    }

    /// `GET path` with `token` (the admin one for the admin API).
    pub fn get_as(&mut self, path: &str, token: &str) -> anyhow::Result<Answer> {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: {ADDR}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line `{}`", line.trim()))?;
        let (mut length, mut server_us) = (0, None);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed in the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse()?;
            } else if name.eq_ignore_ascii_case("server-timing") {
                server_us = server_timing_us(value);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Answer {
            status,
            server_us,
            body,
        })
    }
}

/// The `dur` of the `app` metric, in microseconds.
fn server_timing_us(value: &str) -> Option<f64> {
    let app = value
        .split(',')
        .find(|m| m.trim().split(';').next() == Some("app"))?;
    let ms: f64 = app
        .split(';')
        .find_map(|p| p.trim().strip_prefix("dur="))?
        .parse()
        .ok()?;
    Some(ms * 1000.0)
}

/// Runs `f`, turning a panic (the harness's way of failing) into an error, so that one failed
/// benchmark does not stop the others.
pub fn unpanic<T>(what: &str, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow::anyhow!("{what}: {message}")
    })
}

/// The process id of the PostgreSQL server behind a URL of [`postgres_database`]: the URL
/// names the server's socket directory, next to which its data directory holds
/// `postmaster.pid`. `None` for a server elsewhere (`DATABASE_URL`).
pub fn postgres_pid(url: &str) -> Option<u32> {
    let host = url.split_once('@')?.1.split_once(':')?.0;
    let mut bytes = Vec::new();
    let mut rest = host.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' && tail.len() >= 2 {
            bytes.push(u8::from_str_radix(std::str::from_utf8(&tail[..2]).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let socket_dir = std::path::PathBuf::from(String::from_utf8(bytes).ok()?);
    let pid_file = socket_dir.parent()?.join("data/postmaster.pid");
    std::fs::read_to_string(pid_file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A fresh database on the throwaway PostgreSQL server this process starts (the tests' own),
/// which stops when the process exits.
pub fn postgres_database() -> anyhow::Result<String> {
    unpanic(
        "starting PostgreSQL",
        tracking_agent::store::postgres::test_server::database,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_duration_is_read_in_microseconds() {
        assert_eq!(server_timing_us("app;dur=0.012"), Some(12.0));
        assert_eq!(server_timing_us("db;dur=3, app;dur=1.5"), Some(1500.0));
        assert_eq!(server_timing_us("db;dur=3"), None);
    }
}
