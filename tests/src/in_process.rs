//! The agent's daemon run inside the test process: `daemon::bind` and `daemon::run` of the
//! agent's library, on a thread that joined the test's network namespace and a tokio runtime
//! whose threads all descend from it (a thread starts in its creator's namespace), stopped
//! through the shutdown future `daemon::run` takes. The same configuration path as the binary
//! (`tracking agent run` flags parsed by the agent's own CLI), without a process: a test can
//! start it where a process would cost more, and sees the daemon's own errors.
//!
//! Its log goes to the agent's log file, through a tracing dispatcher that only this agent's
//! threads use.

use std::{
    ffi::OsString,
    fs::File,
    io,
    path::Path,
    sync::Mutex,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use clap::Parser as _;
use tokio::sync::oneshot;
use tracing::Dispatch;
use tracking_agent::{
    cli::{AgentCommand, Cli, Command},
    config::{self, AgentConfig},
    daemon,
};

use crate::netns;

/// A daemon running on threads of this process.
#[derive(Debug)]
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl InProcess {
    /// Starts `tracking <argv>` (global flags, then `agent run` and its flags) in the
    /// namespace at `netns`, logging to `log`. Returns once the daemon's thread runs; the
    /// caller waits for the socket to answer.
    pub fn start(netns: &Path, argv: Vec<OsString>, log: &Path) -> io::Result<InProcess> {
        let cli = Cli::try_parse_from(std::iter::once(OsString::from("tracking")).chain(argv))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let Command::Agent(AgentCommand::Run(mut args)) = cli.command else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an in-process agent runs `agent run` only",
            ));
        };
        args.socket = Some(cli.socket);
        let config = AgentConfig::resolve(*args, config::default_route_iface)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let dispatch = dispatch(&config, log)?;
        let netns = netns.to_path_buf();
        let (stop, stopped) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("agent-in-process".into())
            .spawn(move || run(&netns, config, dispatch, stopped))?;
        Ok(InProcess {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Whether the daemon has ended (stopped, or failed to start).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the daemon to stop and waits for it up to `timeout`; its result, or why it did
    /// not stop. A daemon that ended already gives its result at once.
    pub fn stop(&mut self, timeout: Duration) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                // Its threads cannot be killed; the test process ends them when it exits.
                return Err(format!(
                    "the in-process agent did not stop within {timeout:?}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        thread
            .join()
            .unwrap_or_else(|_| Err("the in-process agent panicked".into()))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Err(error) = self.stop(Duration::from_secs(10)) {
            eprintln!("harness: {error}");
        }
    }
}

/// The daemon's thread: into the namespace, a runtime, then what `main` does for `agent run`.
fn run(
    netns: &Path,
    config: AgentConfig,
    dispatch: Dispatch,
    stopped: oneshot::Receiver<()>,
) -> Result<(), String> {
    netns::enter(netns).map_err(|e| format!("joining {}: {e}", netns.display()))?;
    let on_start = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        // Each thread of this runtime logs to this agent's file; the guard lives as long as
        // the thread.
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&on_start)))
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let result = tracing::dispatcher::with_default(&dispatch, || {
        runtime.block_on(async {
            let listeners = daemon::bind(&config).await?;
            daemon::run(config, listeners, async {
                let _ = stopped.await;
            })
            .await
        })
    });
    // The runtime's own threads end here, before the thread that joined the namespace does.
    drop(runtime);
    result.map_err(|e| {
        let message = format!("the agent failed: {e}");
        tracing::dispatcher::with_default(&dispatch, || tracing::error!("{message}"));
        message
    })
}

/// Formatted lines to `log`, as the binary writes them to stderr, without colour.
fn dispatch(config: &AgentConfig, log: &Path) -> io::Result<Dispatch> {
    let file = File::options().create(true).append(true).open(log)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .finish();
    Ok(Dispatch::new(subscriber))
}
