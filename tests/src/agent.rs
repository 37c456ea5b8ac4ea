//! [`Agent`]: the real `tracking` agent, started inside a test namespace with a socket, a
//! database, bpffs pins and a log of its own, so that agents of parallel tests never meet.
//! Stopped, detached and unpinned on drop.

use std::{
    ffi::{OsStr, OsString},
    fs::OpenOptions,
    io::{self, Write as _},
    os::unix::{net::UnixStream, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{binary, bpffs, command, in_process::InProcess, netns, netns::Netns, unique};

/// How long the agent may take to answer on its socket after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the log a failure shows.
const LOG_TAIL_LINES: usize = 200;

/// What to start the agent with beyond the paths the harness chooses.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The interface to attach to, inside the namespace (`--iface`).
    pub iface: String,
    /// Further flags for `tracking agent run`.
    pub args: Vec<OsString>,
    /// Environment for the agent, e.g. `RUST_LOG`.
    pub env: Vec<(OsString, OsString)>,
    /// The binary to run instead of the one [`binary::agent`] finds (the harness's own tests
    /// use a stand-in).
    pub binary: Option<PathBuf>,
    /// `--database` instead of the SQLite file in the agent's directory, e.g. a
    /// `postgresql://` URL (the flag may be given only once).
    pub database: Option<OsString>,
    /// Run the daemon on threads of the test process ([`InProcess`]) instead of as a process.
    pub in_process: bool,
}

impl AgentOptions {
    pub fn new(iface: impl Into<String>) -> AgentOptions {
        AgentOptions {
            iface: iface.into(),
            args: Vec::new(),
            env: Vec::new(),
            binary: None,
            database: None,
            in_process: false,
        }
    }

    /// Runs the daemon inside the test process (see [`InProcess`]): the same flags and the
    /// same library, without a process to start; such an agent cannot be killed or given an
    /// environment of its own.
    pub fn in_process(mut self) -> AgentOptions {
        self.in_process = true;
        self
    }

    /// Runs the agent on this store (`--database`) instead of its own SQLite file.
    pub fn database(mut self, database: impl AsRef<OsStr>) -> AgentOptions {
        self.database = Some(database.as_ref().to_owned());
        self
    }

    /// Adds a flag for `tracking agent run`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> AgentOptions {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds flags for `tracking agent run`.
    pub fn args<I, S>(mut self, args: I) -> AgentOptions
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Runs `binary` instead of the workspace's `tracking`.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> AgentOptions {
        self.binary = Some(binary.into());
        self
    }

    /// Sets an environment variable for the agent.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> AgentOptions {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }
}

/// A running agent and everything it owns. Dropping it stops the agent (SIGTERM, then SIGKILL),
/// runs `tracking agent detach` for its pins, removes the pin directory and the temporary
/// directory. When the test is panicking, the end of the agent's log goes to stderr first.
#[derive(Debug)]
pub struct Agent {
    /// The `tracking` binary, see [`binary::agent`] and [`AgentOptions::binary`].
    binary: PathBuf,
    /// The namespace the agent runs in, by path: the agent must not borrow the [`Netns`] so that
    /// a fixture can own both (declare the agent first so it is dropped first).
    netns: PathBuf,
    options: AgentOptions,
    /// `tracking.sock`, `tracking.db` and `agent.log`.
    dir: TempDir,
    socket: PathBuf,
    database: PathBuf,
    /// `/sys/fs/bpf/trk-test-<pid>-<n>`: unique, so agents of parallel tests share no pins.
    pins: PathBuf,
    log: PathBuf,
    /// The agent this harness started; `None` once it was stopped or killed.
    running: Option<Running>,
    /// Set when a failure message already showed the log, so that drop does not repeat it.
    log_shown: AtomicBool,
}

impl Agent {
    /// Starts `tracking agent run --iface <iface> --socket <sock> --database <db>
    /// --bpffs-dir <pins> <args>` inside `netns` and waits until its socket accepts a
    /// connection.
    ///
    /// # Panics
    /// When the agent exits or its socket does not answer within 30 s; the message holds the
    /// agent's log.
    pub fn start(netns: &Netns, options: AgentOptions) -> io::Result<Agent> {
        let binary = match &options.binary {
            Some(binary) => binary.clone(),
            None => binary::agent()?,
        };
        bpffs::ensure_mounted()?;
        let dir = tempfile::Builder::new().prefix("trk-agent-").tempdir()?;
        let pins = Path::new(bpffs::ROOT).join(format!("trk-test-{}", unique::tag()));
        std::fs::create_dir(&pins)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", pins.display())))?;
        let mut agent = Agent {
            binary,
            netns: netns.path().to_owned(),
            options,
            socket: dir.path().join("tracking.sock"),
            database: dir.path().join("tracking.db"),
            log: dir.path().join("agent.log"),
            pins,
            dir,
            running: None,
            log_shown: AtomicBool::new(false),
        };
        // From here on a failure or panic drops the agent, which cleans up what exists.
        agent.spawn()?;
        Ok(agent)
    }

    /// The agent's control socket, for the CLI and for tests that talk to it directly.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn database_path(&self) -> &Path {
        &self.database
    }

    /// The agent's pin directory in bpffs (`--bpffs-dir`).
    pub fn pin_dir(&self) -> &Path {
        &self.pins
    }

    /// Where the agent's stdout and stderr go (both, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The temporary directory holding the socket, database and log; a test may put its own
    /// files (block lists, configuration) there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's process id, while the process the harness started runs (`None` for an
    /// agent in this process).
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Some(Running::Process(child)) => Some(child.id()),
            _ => None,
        }
    }

    /// Stops the agent's process (SIGSTOP) until the guard is dropped (SIGCONT): it holds its
    /// connections and reads nothing meanwhile, as a host that stalls does.
    ///
    /// # Panics
    /// For an agent in this process, which cannot be stopped alone.
    pub fn paused(&self) -> Paused {
        let pid = self.pid().expect("a process of its own to stop") as libc::pid_t;
        // SAFETY: a signal to the process this harness started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Paused(pid)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// The CLI, `tracking --socket <sock> <args>`: the CLI talks over the socket, so it runs
    /// in the test's own namespace.
    ///
    /// # Panics
    /// When the binary cannot be started.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cli = Command::new(&self.binary);
        cli.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null());
        cli.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", command::display(&cli)))
    }

    /// [`Agent::cli`] that must succeed; returns its stdout.
    ///
    /// # Panics
    /// When the command fails; the message holds its output and the agent's log.
    pub fn cli_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "`tracking {}` failed ({})\nstdout:\n{}\nstderr:\n{}\n{}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail(),
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills the agent with SIGKILL, as a crash would, and waits for it. Only the process this
    /// harness started is signalled. Its pins and database stay for [`Agent::restart`].
    ///
    /// # Panics
    /// For an agent in this process, which cannot be killed.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let mut child = match self.running.take()? {
            Running::Process(child) => child,
            Running::InProcess(_) => panic!("an in-process agent cannot be killed"),
        };
        if let Err(error) = child.kill() {
            eprintln!("harness: SIGKILL to agent {}: {error}", child.id());
        }
        child.wait().ok()
    }

    /// Stops the agent gracefully: SIGTERM, and SIGKILL when it has not exited after 10 s.
    /// Returns how it exited (`None` when it was not running).
    /// An agent in this process is stopped through its shutdown future; it "exits" 0 when
    /// its daemon returned `Ok`, 1 otherwise.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = match self.running.take()? {
            Running::Process(child) => child,
            Running::InProcess(mut agent) => {
                let code = match agent.stop(STOP_TIMEOUT) {
                    Ok(()) => 0,
                    Err(error) => {
                        eprintln!("harness: {error}");
                        1
                    }
                };
                return Some(ExitStatus::from_raw(code << 8));
            }
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill has no memory effects; `pid` is our own unreaped child, so it cannot
        // have been reused by another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!(
            "harness: agent {} still running {STOP_TIMEOUT:?} after SIGTERM; sending SIGKILL",
            child.id()
        );
        let _ = child.kill();
        child.wait().ok()
    }

    /// Starts a new agent process with the same namespace, options and paths (socket,
    /// database, pins, log), stopping the current one first if it still runs, and waits until
    /// it answers.
    ///
    /// # Panics
    /// Like [`Agent::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Replaces the extra flags the next [`Agent::restart`] passes to `tracking agent run`
    /// (an operator restarting with a new configuration).
    pub fn set_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.options.args = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        writeln!(log, "--- harness: starting the agent ---")?;
        let mut argv: Vec<OsString> = ["agent", "run", "--iface", &self.options.iface]
            .map(OsString::from)
            .into();
        argv.push("--socket".into());
        argv.push(self.socket.clone().into());
        argv.push("--database".into());
        argv.push(
            self.options
                .database
                .clone()
                .unwrap_or_else(|| self.database.clone().into()),
        );
        argv.push("--bpffs-dir".into());
        argv.push(self.pins.clone().into());
        argv.extend(self.options.args.iter().cloned());
        if self.options.in_process {
            assert!(
                self.options.env.is_empty(),
                "an in-process agent shares the test's environment"
            );
            drop(log);
            self.running = Some(Running::InProcess(InProcess::start(
                &self.netns,
                argv,
                &self.log,
            )?));
            self.wait_ready("(in process) tracking agent run");
            return Ok(());
        }
        let mut run = netns::command_in(&self.netns, &self.binary);
        run.args(&argv)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = run
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", command::display(&run))))?;
        self.running = Some(Running::Process(child));
        self.wait_ready(&command::display(&run));
        Ok(())
    }

    /// Waits until the agent answers a request on its socket (the socket is bound before the
    /// filter is attached and in line with the store, and takes connections from then on),
    /// panicking with the log when the agent exits or the time runs out.
    fn wait_ready(&mut self, shown: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if answers(&self.socket) {
                return;
            }
            let exited = match self.running.as_mut().expect("spawned just before") {
                Running::Process(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
                Running::InProcess(agent) if agent.is_finished() => {
                    Some(agent.stop(STOP_TIMEOUT).err().unwrap_or_default())
                }
                Running::InProcess(_) => None,
            };
            if let Some(status) = exited {
                self.running = None;
                panic!(
                    "the agent exited ({status}) before answering on its socket\n$ {shown}\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "the agent did not answer on {} within {READY_TIMEOUT:?}\n$ {shown}\n{}",
                    self.socket.display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the log, headed by its path, for failure messages.
    pub fn log_tail(&self) -> String {
        self.log_shown.store(true, Ordering::Relaxed);
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("agent log ({}):\n{tail}", self.log.display())
    }

    /// `tracking agent detach --bpffs-dir <pins>` inside the namespace: removes what the agent
    /// attached and pinned, as an operator would after stopping it.
    fn detach(&self) {
        if !self.netns.exists() {
            // The namespace went first, and its interfaces, and their XDP links, with it.
            return;
        }
        let mut detach = netns::command_in(&self.netns, &self.binary);
        detach
            .args(["agent", "detach", "--bpffs-dir"])
            .arg(&self.pins)
            .stdin(Stdio::null());
        if let Err(error) = command::run(&mut detach) {
            eprintln!("harness: {error}");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if thread::panicking() && !self.log_shown.load(Ordering::Relaxed) {
            eprintln!("{}", self.log_tail());
        }
        self.stop();
        self.detach();
        if self.pins.exists()
            && let Err(error) = std::fs::remove_dir_all(&self.pins)
        {
            eprintln!("harness: could not remove {}: {error}", self.pins.display());
        }
    }
}

/// How the agent runs: a process the harness started, or threads of this one.
#[derive(Debug)]
enum Running {
    Process(Child),
    InProcess(InProcess),
}

/// Whether the agent on `socket` answers `GET /v1/status` (within a second).
fn answers(socket: &Path) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: tracking\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// An agent stopped by [`Agent::paused`]; continued when dropped.
pub struct Paused(libc::pid_t);

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `Agent::paused`; the child is not reaped while this guard lives.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
