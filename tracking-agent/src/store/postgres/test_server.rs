//! A PostgreSQL server for the tests and the benchmarks, and a fresh database for each.
//!
//! [`database`] returns the URL of an empty database of its own. With `DATABASE_URL` set, it is
//! created on that server (whose user must be allowed to create databases) and left there.
//! Otherwise the first call starts a throwaway server for this test process: `initdb` into a
//! temporary directory, then `postgres` on a Unix socket in it, without TCP, so that nothing
//! outside can reach it and no port is taken. Several test processes each have their own.
//!
//! The server must not outlive the tests, even if one panics or the process is killed:
//! - it is started from a thread that lives as long as the server does, with
//!   `PR_SET_PDEATHSIG`, so the kernel sends it SIGQUIT (PostgreSQL's immediate shutdown) when
//!   that thread ends, which it does only when the process does. (The signal follows the thread
//!   that forked, not the process, hence the dedicated thread.) std applies the user change
//!   before running `pre_exec`, and a change of user would clear the setting, so it survives.
//! - an `atexit` hook stops it and removes the directory when the test binary exits normally,
//!   passing or failing; the directory of a process killed outright is removed by the next one
//!   that starts a server.
//!
//! `initdb` refuses to run as root, so as root the server runs as the `postgres` user that
//! Debian's package creates, and the directory is handed to it.
//!
//! Without `DATABASE_URL` and without a server to start, the tests panic: the PostgreSQL store
//! must never pass by not being tested.

use std::{
    ffi::CString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio_postgres::NoTls;

/// Where Debian installs each major version's server programs.
const DEBIAN_BINARIES: &str = "/usr/lib/postgresql";

/// The port in the socket's name; the socket is in a directory of our own, so any will do.
const PORT: u16 = 5432;

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The name of every test server's directory starts so.
const DIR_PREFIX: &str = "tracking-pg-";

/// A test server's directory untouched for this long, whose server is gone, is a leftover.
const LEFTOVER_AGE: Duration = Duration::from_secs(600);

/// Databases handed out so far, to name the next.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The URL of a fresh, empty database for one test.
pub fn database() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            // Unique across runs and concurrent test processes on a shared server.
            let stamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis();
            let name = format!("tracking_test_{}_{stamp}_{n}", std::process::id());
            admin(url.trim(), &format!("CREATE DATABASE {name}"));
            with_database(url.trim(), &name)
        }
        _ => {
            let server = SERVER.get_or_init(Server::start);
            let name = format!("test_{n}");
            admin(&server.url("postgres"), &format!("CREATE DATABASE {name}"));
            server.url(&name)
        }
    }
}

/// Starts a thread with a runtime of its own that connects to the database at `url` and runs
/// `work` with the client: tests call these helpers from inside their own runtime, where
/// blocking on another would panic.
fn spawn_on_connection<T, F>(
    url: &str,
    work: F,
) -> std::thread::JoinHandle<Result<T, tokio_postgres::Error>>
where
    T: Send + 'static,
    F: AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error> + Send + 'static,
{
    let target = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&target, NoTls).await?;
            let driver = tokio::spawn(connection);
            let result = work(&client).await;
            drop(client);
            let _ = driver.await;
            result
        })
    })
}

/// [`spawn_on_connection`], waiting for `work`'s result.
fn on_connection<T, F>(url: &str, work: F) -> Result<T, tokio_postgres::Error>
where
    T: Send + 'static,
    F: AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error> + Send + 'static,
{
    spawn_on_connection(url, work)
        .join()
        .expect("the connection's thread does not panic")
}

/// Runs `sql` on the database at `url`.
pub fn admin(url: &str, sql: &str) {
    let statement = sql.to_owned();
    on_connection(url, async move |client| {
        client.batch_execute(&statement).await
    })
    .unwrap_or_else(|error| {
        panic!(
            "test database server at {}: `{sql}` failed: {error}",
            super::redacted(url)
        )
    });
}

/// The first column of the first row `sql` returns on the database at `url`, as an integer.
pub fn count(url: &str, sql: &str) -> i64 {
    let statement = sql.to_owned();
    on_connection(url, async move |client| {
        Ok(client.query_one(&statement, &[]).await?.get::<_, i64>(0))
    })
    .unwrap_or_else(|error| panic!("`{sql}` failed: {error}"))
}

/// A transaction left open on a connection of its own until dropped, to make the agents'
/// queries wait on the locks it took.
pub struct Held {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), tokio_postgres::Error>>>,
}

/// Begins a transaction on the database at `url`, runs `sql` in it (a `LOCK TABLE`, say) and
/// holds it open; returns once `sql` has run.
pub fn hold(url: &str, sql: &str) -> Held {
    let statement = format!("BEGIN; {sql}");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (taken, took) = std::sync::mpsc::channel();
    let thread = spawn_on_connection(url, async move |client| {
        client.batch_execute(&statement).await?;
        let _ = taken.send(());
        // Until the test drops its `Held` (or panics, which drops it too).
        let _ = tokio::task::spawn_blocking(move || released.recv()).await;
        client.batch_execute("COMMIT").await
    });
    match took.recv() {
        Ok(()) => Held {
            release: Some(release),
            thread: Some(thread),
        },
        Err(_) => match thread.join() {
            Ok(Err(error)) => panic!("`{sql}` failed: {error}"),
            _ => panic!("the thread holding `{sql}` ended before running it"),
        },
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    // The path starts at the first `/` after the credentials.
    let authority_start = url[scheme_end..]
        .rfind('@')
        .map_or(scheme_end, |i| scheme_end + i + 1);
    let query = url[authority_start..]
        .find('?')
        .map_or(url.len(), |i| authority_start + i);
    let path = url[authority_start..query]
        .find('/')
        .map_or(query, |i| authority_start + i);
    format!("{}/{name}{}", &url[..path], &url[query..])
}

/// The server of this test process.
static SERVER: OnceLock<Server> = OnceLock::new();

/// What the `atexit` hook needs to stop the server and clean up.
static RUNNING: OnceLock<Running> = OnceLock::new();

struct Running {
    pid: libc::pid_t,
    dir: PathBuf,
    /// Set by the thread that started the server once the server has exited.
    exited: Arc<AtomicBool>,
}

struct Server {
    /// The directory of the server's socket.
    socket_dir: PathBuf,
    /// The port in the socket's name (and on TCP, for a server that listens there).
    port: u16,
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@{}:{}/{database}",
            percent_encode(&self.socket_dir.to_string_lossy()),
            self.port
        )
    }

    /// The server of the test process: started once, stopped at exit.
    fn start() -> Server {
        let cluster = Cluster::create();
        let running = cluster.launch();
        let _ = RUNNING.set(running);
        // SAFETY: registering a plain function; it runs once, at exit.
        unsafe {
            libc::atexit(stop_at_exit);
        }
        let server = cluster.server();
        let exited = &RUNNING.get().expect("set above").exited;
        wait_until_ready(&server, exited, &cluster.log);
        server
    }
}

/// A cluster's directory: data, socket, log.
struct Cluster {
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    /// Settings beyond the defaults of [`Cluster::launch`] (`name=value`, for `-c`).
    settings: Vec<String>,
}

impl Cluster {
    /// A fresh cluster in a directory of its own (`initdb`).
    fn create() -> Cluster {
        let bin = server_binaries().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL to test the PostgreSQL store against: set DATABASE_URL to a server \
                 where this user may create databases, or install the server (`cargo xtask setup` \
                 installs Debian's `postgresql`); initdb was looked for in \
                 {DEBIAN_BINARIES}/*/bin and on PATH"
            )
        });
        let owner = server_owner();

        remove_leftovers();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = dir.join("data");
        let socket_dir = dir.join("socket");
        std::fs::create_dir(&socket_dir).expect("the socket directory");
        if let Some((uid, gid)) = owner {
            for path in [&dir, &socket_dir] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("cannot hand {} to postgres: {e}", path.display()));
            }
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&dir)
            .env("LC_ALL", "C");
        as_owner(&mut initdb, owner);
        let output = initdb
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.join("initdb").display()));
        if !output.status.success() {
            panic!(
                "initdb failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let log = dir.join("server.log");
        Cluster {
            bin,
            owner,
            dir,
            data,
            socket_dir,
            log,
            port: PORT,
            settings: Vec::new(),
        }
    }

    fn server(&self) -> Server {
        Server {
            socket_dir: self.socket_dir.clone(),
            port: self.port,
        }
    }

    /// Listens on 127.0.0.1 too, on a free port, with TLS only: the Unix socket stays for the
    /// harness, and a TCP client without TLS is turned away (`hostssl` only).
    fn serve_tls(&mut self, cert: &Path, key: &Path) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let owned = |name: &str, from: &Path| {
            let to = self.dir.join(name);
            std::fs::copy(from, &to)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("the file's mode");
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid)).expect("the file's owner");
            }
            to
        };
        let cert = owned("server.crt", cert);
        let key = owned("server.key", key);
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        self.port = port;
        self.settings.extend([
            "listen_addresses=127.0.0.1".to_string(),
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ]);
    }

    /// Starts `postgres` on the cluster, from a thread that lives as long as it does.
    fn launch(&self) -> Running {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the server log");
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string()])
            // No TCP at all unless asked for; and a throwaway cluster needs no durability,
            // which makes creating a database per test cheap.
            .args(["-c", "listen_addresses="])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"]);
        for setting in &self.settings {
            // A later `-c` wins over an earlier one.
            postgres.args(["-c", setting]);
        }
        postgres
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the server log"))
            .stderr(log);
        as_owner(&mut postgres, self.owner);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            postgres.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the line above; then nobody would signal.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the test process is gone"));
                }
                Ok(())
            });
        }

        let exited = Arc::new(AtomicBool::new(false));
        let (started, pid) = std::sync::mpsc::channel();
        let exited_flag = Arc::clone(&exited);
        std::thread::Builder::new()
            .name("postgres-test-server".into())
            .spawn(move || match postgres.spawn() {
                Ok(mut child) => {
                    let _ = started.send(Ok(child.id() as libc::pid_t));
                    // This thread must live as long as the server: see the module's map.
                    let _ = child.wait();
                    exited_flag.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    let _ = started.send(Err(e));
                }
            })
            .expect("a thread for the server");
        let pid = pid
            .recv()
            .expect("the server thread answers")
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}", self.bin.join("postgres").display())
            });
        Running {
            pid,
            dir: self.dir.clone(),
            exited,
        }
    }
}

/// A server of its own for a test that stops and starts it (an outage), on a cluster in a
/// directory of its own; stopped and removed on drop.
pub struct Dedicated {
    cluster: Cluster,
    running: Option<Running>,
}

impl Dedicated {
    pub fn start() -> Dedicated {
        Self::start_cluster(Cluster::create())
    }

    /// A server that also takes TLS connections on 127.0.0.1 (and only TLS ones there), with
    /// this certificate and key (PEM); [`Dedicated::tcp_url`] reaches it.
    pub fn start_tls(cert: &Path, key: &Path) -> Dedicated {
        let mut cluster = Cluster::create();
        cluster.serve_tls(cert, key);
        Self::start_cluster(cluster)
    }

    /// The URL of `database` over TCP to `host` (which must name 127.0.0.1), for a server of
    /// [`Dedicated::start_tls`].
    pub fn tcp_url(&self, host: &str, database: &str) -> String {
        format!(
            "postgresql://postgres@{host}:{}/{database}",
            self.cluster.port
        )
    }

    fn start_cluster(cluster: Cluster) -> Dedicated {
        let mut server = Dedicated {
            cluster,
            running: None,
        };
        server.resume();
        server
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        self.cluster.server().url(database)
    }

    /// Creates an empty database and returns its URL.
    pub fn database(&self, name: &str) -> String {
        admin(&self.url("postgres"), &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Stops the server the fast way (open connections are cut) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop(libc::SIGINT);
        }
    }

    /// Starts the server again on the same cluster and waits until it takes connections.
    pub fn resume(&mut self) {
        if self.running.is_some() {
            return;
        }
        let running = self.cluster.launch();
        let server = self.cluster.server();
        wait_until_ready(&server, &running.exited, &self.cluster.log);
        self.running = Some(running);
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop(libc::SIGQUIT);
        }
        let _ = std::fs::remove_dir_all(&self.cluster.dir);
    }
}

impl Running {
    /// Signals the server and waits until it has exited (SIGKILL after 10 s).
    fn stop(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.pid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.exited.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until the server accepts connections, or panics with its log.
fn wait_until_ready(server: &Server, exited: &AtomicBool, log: &Path) {
    let url = server.url("postgres");
    let deadline = Instant::now() + START_TIMEOUT;
    // On a thread of its own, with its own runtime: the caller may be inside a test's.
    let ready = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async {
                    loop {
                        if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await
                        {
                            drop(client);
                            let _ = connection.await;
                            return true;
                        }
                        if exited.load(Ordering::SeqCst) || Instant::now() > deadline {
                            return false;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .join()
            .expect("the readiness check does not panic")
    });
    if !ready {
        panic!(
            "the test PostgreSQL server did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Stops the server and removes its directory: registered with `atexit`.
extern "C" fn stop_at_exit() {
    let Some(running) = RUNNING.get() else {
        return;
    };
    running.stop(libc::SIGQUIT);
    let _ = std::fs::remove_dir_all(&running.dir);
}

/// Removes the directories of earlier test processes that were killed before they could clean
/// up (SIGKILL skips `atexit`; their server died with them). A directory is left alone while
/// its server runs, or while it is recent enough to be another process's server starting up.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > LEFTOVER_AGE);
        let path = entry.path();
        // The first line of `postmaster.pid` is the server's process id.
        let running = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next()?.trim().parse::<libc::pid_t>().ok())
            // SAFETY: signal 0 only checks that the process exists.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if old && !running {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The directory of `initdb` and `postgres`: the newest Debian version, else `PATH`.
fn server_binaries() -> Option<PathBuf> {
    let newest = std::fs::read_dir(DEBIAN_BINARIES)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    newest.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
    })
}

/// The user and group to run the server as: `postgres` when we are root (which `initdb`
/// refuses to be), else ourselves (`None`).
fn server_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once. Tests start
    // the server once, under a `OnceLock`, so nothing else calls it meanwhile.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        panic!(
            "the tests run as root, which initdb refuses, and there is no `postgres` user to \
             run the test server as (Debian's `postgresql` package creates it); or set \
             DATABASE_URL"
        );
    }
    // SAFETY: not null, checked above.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

/// `s` percent-encoded but for unreserved characters, as a Unix socket path must be in the
/// host part of a URL.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/old?sslmode=disable", "new"),
            "postgres://u:p@h:5432/new?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "new"), "postgres://h/new");
        assert_eq!(
            with_database("postgresql://u@%2Ftmp%2Fs:5432?host=x", "new"),
            "postgresql://u@%2Ftmp%2Fs:5432/new?host=x"
        );
    }

    #[test]
    fn a_socket_directory_is_encoded_for_the_host_part() {
        assert_eq!(
            percent_encode("/tmp/tracking-pg-x1"),
            "%2Ftmp%2Ftracking-pg-x1"
        );
    }
}
