//! [`Django`]: the example site of the Django package (`integrations/django/example`) served by
//! real gunicorn with several workers inside a test namespace, from one of the virtual
//! environments `cargo xtask setup` makes ([`Venv`]). Its database is a SQLite file of its own,
//! migrated and given its users (alice, staff; bob) before gunicorn starts; its log (gunicorn's
//! and the package's) is a file of its own. Stopped on drop: SIGTERM to the gunicorn master,
//! which lets its workers finish (and flush their visits), then SIGKILL if it lingers.

use std::{
    ffi::OsString,
    fs::File,
    io,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{command, netns, netns::Netns};

/// The test environments `cargo xtask setup` makes, one for each Django the package supports.
pub const VENVS: [&str; 2] = ["django-4.2", "django-5.2"];
/// How long gunicorn may take to boot all its workers.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long gunicorn may take to stop after SIGTERM (its workers flush their visits first).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// `integrations/django`.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../integrations/django")
}

/// A virtual environment with Django, gunicorn and the package.
#[derive(Clone, Debug)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The environment `name` (one of [`VENVS`]), under `$TRACKING_DJANGO_VENVS` or
    /// `target/django/`.
    pub fn find(name: &str) -> io::Result<Venv> {
        let root = std::env::var_os("TRACKING_DJANGO_VENVS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/django"));
        let dir = root.join(name);
        if !dir.join("bin/gunicorn").is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no virtual environment with gunicorn at {}: run `cargo xtask setup`",
                    dir.display()
                ),
            ));
        }
        Ok(Venv { dir })
    }

    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn bin(&self, program: &str) -> PathBuf {
        self.dir.join("bin").join(program)
    }
}

/// How to start the site.
#[derive(Clone, Debug)]
pub struct DjangoOptions {
    /// gunicorn's `--workers`.
    pub workers: u32,
    /// gunicorn's `--bind`, inside the namespace.
    pub bind: SocketAddr,
    /// Settings of the example site (see its `settings.py`), e.g. `TRACKING_AGENT_URL`.
    pub env: Vec<(String, OsString)>,
}

impl DjangoOptions {
    pub fn new(bind: SocketAddr) -> DjangoOptions {
        DjangoOptions {
            workers: 3,
            bind,
            env: Vec::new(),
        }
    }

    pub fn workers(mut self, workers: u32) -> DjangoOptions {
        self.workers = workers;
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> DjangoOptions {
        self.env.push((key.to_owned(), value.into()));
        self
    }
}

/// The example site under gunicorn.
#[derive(Debug)]
pub struct Django {
    /// The gunicorn master this harness started; `None` once stopped.
    child: Option<Child>,
    pub bind: SocketAddr,
    log: PathBuf,
    /// The database and the log.
    dir: TempDir,
}

impl Django {
    /// Migrates a fresh database, makes the users, starts gunicorn inside `netns` and waits
    /// until every worker has booted and the port accepts connections.
    pub fn start(netns: &Netns, venv: &Venv, options: DjangoOptions) -> io::Result<Django> {
        let dir = tempfile::Builder::new().prefix("trk-django-").tempdir()?;
        let log = dir.path().join("django.log");
        let example = package_dir().join("example");
        let settings = |cmd: &mut Command| {
            cmd.current_dir(&example)
                .env("EXAMPLE_DATABASE", dir.path().join("db.sqlite3"))
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .envs(options.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null());
        };
        for args in [&["migrate", "--noinput", "-v0"][..], &["example_users"]] {
            let mut manage = Command::new(venv.bin("python"));
            manage.arg("manage.py").args(args);
            settings(&mut manage);
            command::run(&mut manage)?;
        }
        let mut gunicorn = netns::command_in(netns.path(), venv.bin("gunicorn"));
        gunicorn
            .arg("--workers")
            .arg(options.workers.to_string())
            .arg("--bind")
            .arg(options.bind.to_string())
            .args(["--graceful-timeout", "10", "--access-logfile", "-"])
            .args(["--error-logfile", "-", "example.wsgi"]);
        settings(&mut gunicorn);
        let out = File::create(&log)?;
        gunicorn.stdout(out.try_clone()?).stderr(out);
        let child = gunicorn.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", command::display(&gunicorn)))
        })?;
        let mut django = Django {
            child: Some(child),
            bind: options.bind,
            log,
            dir,
        };
        django.wait_ready(netns, options.workers)?;
        Ok(django)
    }

    fn wait_ready(&mut self, netns: &Netns, workers: u32) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let booted = self.log().matches("Booting worker with pid").count();
            if booted >= workers as usize
                && netns
                    .run(|| TcpStream::connect_timeout(&self.bind, Duration::from_secs(1)))
                    .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "gunicorn exited ({status}) before serving\n{}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "gunicorn did not boot {workers} workers on {} within {READY_TIMEOUT:?}\n{}",
                    self.bind,
                    self.log_tail()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// gunicorn's master process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far: gunicorn's, the access log and the package's log lines.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "django log ({}):\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(80)..].join("\n")
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM to the master, SIGKILL after 20 s; how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill has no memory effects; `pid` is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "harness: gunicorn {} lingers after SIGTERM; SIGKILL",
            child.id()
        );
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Django {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.stop();
    }
}
