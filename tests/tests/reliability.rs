//! Nothing answered is lost, and the HTTP listener holds against abuse. With the real agent in a
//! network namespace: a real PostgreSQL stopped and started again, a real full filesystem (a
//! small tmpfs), a real SIGKILL under load, real slow and idle sockets. Needs root.
//!
//! Each test prints its figures; `docs/reliability.md` keeps those of the last run.

use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::web::{HookClient, WebSite};
use tracking_agent::store::{Store, postgres::test_server::Dedicated, sqlite::SqliteStore};

/// Sends one visit every `period` from a thread until stopped, each of its own session, and
/// counts the answers by status.
struct Sender {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sender {
    fn start(site: &WebSite, period: Duration, tag: &str) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted, refused, failed) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let server = site.topology.server().path().to_path_buf();
        let addr = site.http;
        let (s, a, r, f) = (stop.clone(), accepted.clone(), refused.clone(), failed.clone());
        let tag = tag.to_owned();
        let thread = thread::spawn(move || {
            tests::netns::enter(&server).expect("the server namespace");
            let mut client = None;
            let mut n = 0u64;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                next += period;
                if client.is_none() {
                    client = HookClient::connect_here(addr).ok();
                }
                let visit = json!({"ip": "198.51.100.7", "session_key": format!("{tag}-{n}"), "url": "/p"});
                match client.as_mut().map(|c| c.post(&visit)) {
                    Some(Ok(202)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(503)) => {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                        client = None;
                    }
                }
                n += 1;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
        });
        Sender {
            stop,
            accepted,
            refused,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops sending; returns (answered 202, answered 503, failed).
    fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn page_views(stats: &Value) -> u64 {
    stats["page_views_total"].as_u64().unwrap()
}

#[test]
fn a_postgresql_outage_loses_no_answered_visit() {
    let mut postgres = Dedicated::start();
    let url = postgres.database("outage");
    let site = WebSite::with(&[], |o| o.database(&url));
    let sender = Sender::start(&site, Duration::from_millis(5), "outage");
    thread::sleep(Duration::from_secs(2));
    postgres.stop();
    let stopped = Instant::now();
    thread::sleep(Duration::from_secs(12));
    let during = site.visit_stats();
    assert_eq!(during["store_answers"], false, "{during}");
    postgres.resume();
    let resumed = stopped.elapsed();
    thread::sleep(Duration::from_secs(2));
    let (answered, refused, failed) = sender.finish();
    let stats = site.drained(Duration::from_secs(30));
    println!(
        "PostgreSQL down for {resumed:.1?} at 200 visits/s: {answered} answered 202, {refused} \
         503, {failed} failed; {} stored, {} lost, {} queued at most while down",
        page_views(&stats),
        stats["lost"],
        during["queued"]
    );
    assert_eq!(page_views(&stats), answered, "answered visits were lost: {stats}");
    assert_eq!(stats["lost"], 0);
    assert!(answered > 2500, "too few visits to tell: {answered}");
}

/// A tmpfs of `size` mounted at a directory of its own; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("trk-full-").tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `file` until the filesystem is full.
fn fill(file: &Path) {
    let mut f = std::fs::File::create(file).unwrap();
    let block = vec![0x5au8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_loses_no_answered_visit() {
    let disk = Tmpfs::mount("2m");
    let db: PathBuf = disk.path().join("tracking.db");
    let site = WebSite::with(&[], |o| o.database(&db));
    // Some visitors first, so the file has its tables.
    let warm = Sender::start(&site, Duration::from_millis(10), "warm");
    thread::sleep(Duration::from_secs(1));
    let (warmed, _, _) = warm.finish();
    site.drained(Duration::from_secs(10));
    let filler = disk.path().join("filler");
    fill(&filler);

    let sender = Sender::start(&site, Duration::from_millis(5), "full");
    thread::sleep(Duration::from_secs(6));
    let during = site.visit_stats();
    // Free 1 MiB of the filler, as an operator would by removing a log.
    let size = std::fs::metadata(&filler).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
    file.set_len(size.saturating_sub(1 << 20)).unwrap();
    drop(file);
    thread::sleep(Duration::from_secs(2));
    let (answered, refused, failed) = sender.finish();
    let stats = site.drained(Duration::from_secs(60));
    println!(
        "SQLite on a full 2 MiB tmpfs, 200 visits/s for 8 s, 1 MiB freed after 6 s: {answered} \
         answered 202, {refused} 503, {failed} failed; {} stored, {} lost, {} retries, {} \
         queued at the fullest",
        page_views(&stats) - warmed,
        stats["lost"],
        stats["store_retries"],
        during["queued"]
    );
    assert!(
        during["store_retries"].as_u64().unwrap() > 0,
        "the disk never filled: {during}"
    );
    assert_eq!(
        page_views(&stats),
        warmed + answered,
        "answered visits were lost: {stats}"
    );
    assert_eq!(stats["lost"], 0);
}

#[test]
fn a_sigkill_under_load_loses_only_the_visits_of_the_last_moment() {
    let mut site = WebSite::start(&[]);
    let db = site.agent.database_path().to_path_buf();
    // Every visit its own visitor, with when it was answered.
    let answered: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let server = site.topology.server().path().to_path_buf();
    let mut clients = Vec::new();
    for c in 0..12 {
        let (answered, stop, server, addr) = (answered.clone(), stop.clone(), server.clone(), site.http);
        clients.push(thread::spawn(move || {
            tests::netns::enter(&server).unwrap();
            let Ok(mut client) = HookClient::connect_here(addr) else {
                return;
            };
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{c}-{n}");
                let visit = json!({"ip": "198.51.100.8", "session_key": key, "url": "/"});
                match client.post(&visit) {
                    Ok(202) => answered.lock().unwrap().push((key, Instant::now())),
                    Ok(_) => {}
                    Err(_) => return,
                }
                n += 1;
            }
        }));
    }
    thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    site.agent.kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();

    let stored: HashSet<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SqliteStore::open(&db).unwrap();
        store
            .visitors_since(tracking_agent::time::Timestamp::from_millis(0), usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.key)
            .collect()
    });
    let lost: Vec<Duration> = answered
        .iter()
        .filter(|(key, _)| !stored.iter().any(|s| s.ends_with(key.as_str())))
        .map(|(_, at)| killed.duration_since(*at))
        .collect();
    let oldest_lost = lost.iter().max().copied().unwrap_or_default();
    let rate = answered.len() as f64 / 3.0;
    println!(
        "SIGKILL after 3 s at {rate:.0} visits/s: {} answered, {} lost, the oldest answered \
         {oldest_lost:.0?} before the kill",
        answered.len(),
        lost.len()
    );
    // --visit-max-delay (500 ms) and the transaction being written, with a margin for the
    // kill itself on a shared machine.
    assert!(
        oldest_lost < Duration::from_millis(1500),
        "a visit answered {oldest_lost:?} before the crash was lost"
    );
    assert!(answered.len() > 1000, "too little load to tell");
    site.agent.restart().unwrap();
}

/// A client that sends its request head a byte at a time, far too slowly.
fn slow_loris(netns: &tests::Netns, addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = netns.run(|| TcpStream::connect(addr)).unwrap();
    stream
        .write_all(b"POST /v1/visits HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
}

/// Whether the server has closed `stream` (a read returns end of file or an error).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => {
            // An answer (the 408 of a timeout): the close follows.
            matches!(stream.read(&mut buf), Ok(0) | Err(_))
        }
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn slow_and_idle_clients_are_closed_and_lock_nobody_out() {
    tests::raise_open_files();
    let site = WebSite::start(&["--http-header-timeout", "2s", "--http-idle-timeout", "4s"]);
    let netns = site.topology.server();
    let mut lorises: Vec<TcpStream> = (0..200).map(|_| slow_loris(netns, site.http)).collect();
    let mut idle: Vec<TcpStream> = (0..2000)
        .map(|_| netns.run(|| TcpStream::connect(site.http)).unwrap())
        .collect();
    // Meanwhile the hook answers everyone else.
    let mut client = HookClient::connect(netns, site.http).unwrap();
    for n in 0..200 {
        let visit = json!({"ip": "198.51.100.9", "session_key": format!("s{n}"), "url": "/"});
        assert_eq!(client.post(&visit).unwrap(), 202);
    }
    // A byte now and then does not keep a head open past the header timeout.
    for _ in 0..5 {
        for s in &mut lorises {
            let _ = s.write_all(b"X");
        }
        thread::sleep(Duration::from_millis(600));
    }
    let still = lorises.iter_mut().map(closed).filter(|c| !c).count();
    assert_eq!(still, 0, "{still} of 200 slow-loris connections still open after 3 s");
    thread::sleep(Duration::from_secs(2));
    let still = idle.iter_mut().map(closed).filter(|c| !c).count();
    assert_eq!(still, 0, "{still} of 2000 idle connections still open after 5 s");
}

#[test]
fn beyond_the_connection_limit_clients_are_told_to_come_back() {
    let site = WebSite::start(&["--http-max-connections", "50"]);
    let netns = site.topology.server();
    let _held: Vec<TcpStream> = (0..50)
        .map(|_| netns.run(|| TcpStream::connect(site.http)).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    let mut extra = netns.run(|| TcpStream::connect(site.http)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("Retry-After: 1"), "{answer:?}");
}

#[test]
fn a_half_sent_request_does_not_hold_up_the_stop() {
    let mut site = WebSite::start(&[]);
    let _half = slow_loris(site.topology.server(), site.http);
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = site.agent.stop().expect("the agent ran");
    let took = started.elapsed();
    println!("stopped in {took:.1?} with a half-sent request open");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
}
