//! `tracking agent run`: opens the store, starts the [`Engine`] and the [`Tracker`], serves the
//! control socket and the HTTP listener, and runs the periodic tasks until told to stop. The
//! caller binds the listeners ([`bind`]) and says when to stop: the binary on SIGINT or SIGTERM,
//! a test whenever it likes. Stopping leaves the filter running from its pins; `tracking agent
//! detach` is what removes it.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    io::unix::AsyncFd,
    net::{TcpListener, UnixListener},
};

use crate::{
    config::{AgentConfig, Database, HttpLimits},
    control::{self, App, serve},
    engine::{Engine, EngineError},
    geoip::{GeoIp, GeoIpError},
    store::{Store, StoreError, postgres::PgStore, sqlite::SqliteStore},
    tokens::{TokenError, Tokens},
    tracker::{Tracker, TrackerConfig},
};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("opening the store {database}: {source}")]
    Store {
        /// The database as `Display` shows it, the password hidden.
        database: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Socket(#[from] control::SocketError),
    #[error("cannot listen on {addr} (--metrics): {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (--http): {source}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("starting the visitor tracker: {0}")]
    Tracker(#[source] StoreError),
}

/// Descriptors kept for the store, the maps, logs and the control socket, beyond the HTTP
/// listener's connections.
const RESERVED_FILES: u64 = 256;

/// The listeners the agent serves, bound by its caller.
pub struct Listeners {
    /// The control socket, for the CLI.
    pub control: UnixListener,
    /// The hook, API and pages, unless `--http off`.
    pub http: Option<TcpListener>,
    /// `GET /metrics` without a token, with `--metrics ADDR`.
    pub metrics: Option<TcpListener>,
    /// systemd's notification socket, when systemd started the agent (`Type=notify`).
    pub ready: crate::notify::Notifier,
}

/// Binds the configured control socket and HTTP listener.
pub async fn bind(config: &AgentConfig) -> Result<Listeners, DaemonError> {
    let control = control::bind(&config.socket).await?;
    let http = match config.http {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Http { addr, source })?,
        ),
        None => None,
    };
    let metrics = match config.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    Ok(Listeners {
        control,
        http,
        metrics,
        ready: crate::notify::Notifier::from_env(),
    })
}

/// Opens the configured store: the SQLite file, or a connection pool to the PostgreSQL
/// database (whose schema it brings up to date).
pub async fn open_store(db: &Database) -> Result<Arc<dyn Store>, DaemonError> {
    let failed = |source| DaemonError::Store {
        database: db.to_string(),
        source,
    };
    match db {
        Database::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).map_err(failed)?)),
        Database::Postgres(url) => Ok(Arc::new(PgStore::connect(url).await.map_err(failed)?)),
    }
}

/// Runs the agent on `listeners` until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let socket = config.socket.clone();
    let result = serve_until(config, listeners, shutdown).await;
    // Stopped or failed to start, the socket goes: a CLI finding it would wait on nobody.
    let _ = std::fs::remove_file(&socket);
    result
}

async fn serve_until(
    config: AgentConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    // Everything the agent creates (the database and its journals, tokens) is its own: session
    // keys, addresses and user names are nobody else's business.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let open_files = serve::raise_open_files();
    let mut limits = config.http_limits;
    let room = open_files.saturating_sub(RESERVED_FILES) as usize;
    if limits.max_connections > room {
        tracing::warn!(
            "only {open_files} open files are allowed: serving at most {room} HTTP connections \
             at once instead of {} (raise LimitNOFILE)",
            limits.max_connections
        );
        limits.max_connections = room.max(1);
    }
    // First: a database that cannot be used is refused before the store opens.
    let geoip = if config.geoip_db.is_empty() {
        None
    } else {
        let geoip = GeoIp::open(&config.geoip_db)?;
        tracing::info!("GeoIP: {}", geoip.describe());
        Some(Arc::new(geoip))
    };
    let store = open_store(&config.database).await?;
    tracing::info!("store: {}", store.describe());
    private_state_dir(&config);
    let Listeners {
        control: socket,
        http,
        metrics: metrics_listener,
        ready,
    } = listeners;
    let tokens = Tokens::load(
        &config.state_dir(),
        config.hook_token.clone(),
        config.admin_token.clone(),
    )?;
    let engine = Engine::start(config.clone(), store.clone()).await?;
    let status = engine.status();
    for a in &status.interfaces {
        tracing::info!("filtering {} in {} mode", a.iface, a.mode);
    }
    tracing::info!(
        "control socket {}, pins {}, {} IPv4 and {} IPv6 bans enforced",
        config.socket.display(),
        config.bpffs_dir.display(),
        status.bans_v4.used,
        status.bans_v6.used
    );
    let (tracker, tracker_tasks) = Tracker::start(
        store.clone(),
        TrackerConfig {
            tracking_timeout: config.tracking_timeout,
            cleanup_timeout: config.cleanup_timeout,
            no_track_prefixes: config.no_track_prefixes.clone(),
            no_track_networks: config.no_track_networks.clone(),
            anonymize_ips: config.anonymize_ips,
            visits: config.visits,
        },
    )
    .await
    .map_err(DaemonError::Tracker)?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(crate::control::metrics::Metrics::new());
    let crowdsec = config
        .crowdsec
        .clone()
        .map(|c| crate::crowdsec::Bouncer::new(c, engine.clone()));
    let app = App {
        metrics: metrics.clone(),
        crowdsec: crowdsec.clone(),
        tables: engine.tables(),
        engine: engine.clone(),
        tracker,
        geoip,
        tokens: Some(Arc::new(tokens)),
        sessions: Arc::new(control::session::Sessions::new(config.session_lifetime)),
        stopping: stopping.clone(),
    };
    match http.as_ref().and_then(|l| l.local_addr().ok()) {
        Some(addr) => tracing::info!(
            "visit hook at http://{addr}/v1/visits, pages at http://{addr}/ (tokens: \
             --hook-token-file/--admin-token-file, or the files in {})",
            config.state_dir().display()
        ),
        None => tracing::info!(
            "HTTP listener off (--http off): hook and pages only on the control socket"
        ),
    }

    let mut tasks = tokio::task::JoinSet::new();
    let ua_tracker = app.tracker.clone();
    tasks.spawn(every(config.reconcile_interval, engine.clone(), move |e| {
        let tracker = ua_tracker.clone();
        let metrics = metrics.clone();
        async move {
            // A fleet shares user-agent rules too; they follow at the reconcile pace.
            if let Err(err) = tracker.reload_ua_rules().await {
                tracing::error!("reloading user-agent rules failed: {err}");
            }
            match e.reconcile().await {
                Ok(a) if a.added + a.updated + a.removed > 0 => tracing::warn!(
                    "repaired drift between store and kernel: {} added, {} updated, {} removed",
                    a.added,
                    a.updated,
                    a.removed
                ),
                Ok(_) => {}
                Err(err) => {
                    metrics.reconcile_failed();
                    tracing::error!("reconcile failed: {err}")
                }
            }
        }
    }));
    tasks.spawn(every(
        config.reap_interval,
        engine.clone(),
        |e| async move {
            match e.reap().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("{n} expired ban{} removed", if n == 1 { "" } else { "s" }),
                Err(err) => tracing::error!("reaping expired bans failed: {err}"),
            }
        },
    ));
    if let Some(mut changes) = store.ban_changes() {
        // A change anywhere in the fleet (or the listener back after a loss): apply the
        // changes after the last one applied.
        let engine = engine.clone();
        tasks.spawn(async move {
            while changes.changed().await.is_ok() {
                match engine.catch_up().await {
                    Ok(c) if c.changes > 0 => tracing::debug!(
                        "applied {} change{} of the fleet{}",
                        c.changes,
                        if c.changes == 1 { "" } else { "s" },
                        if c.reconciled.is_some() {
                            ", reconciling whole"
                        } else {
                            ""
                        }
                    ),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::error!("catching up with the fleet's changes failed: {err}")
                    }
                }
            }
        });
    }
    if store.instance().is_some() {
        let every = config.fleet_heartbeat;
        tasks.spawn(every_heartbeat(engine.clone(), every));
    }
    if let Some(bouncer) = crowdsec {
        tasks.spawn(bouncer.run());
    }
    if let Some(logger) = engine.take_logger() {
        tasks.spawn(forward_program_logs(logger));
    }

    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve::serve(
        socket,
        control::socket_router(app.clone()),
        HttpLimits::default(),
        until_stopped(stopping.clone()),
    ));
    if let Some(http) = http {
        servers.spawn(serve::serve(
            http,
            control::http_router(app.clone()),
            limits,
            until_stopped(stopping.clone()),
        ));
    }
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics at http://{addr}/metrics (no token: --metrics)");
        }
        servers.spawn(serve::serve(
            listener,
            control::metrics_router(app.clone()),
            HttpLimits::default(),
            until_stopped(stopping.clone()),
        ));
    }
    // The filter is attached and in line with the store (Engine::start), and every listener
    // serves: what systemd's `Type=notify` waits for.
    if let Err(e) = ready.ready(&format!(
        "filtering {} with {} IPv4 and {} IPv6 bans",
        config.ifaces.join(", "),
        status.bans_v4.used,
        status.bans_v6.used
    )) {
        tracing::error!("{e}");
    }
    shutdown.await;
    if let Err(e) = ready.stopping() {
        tracing::warn!("{e}");
    }
    let _ = stop.send(true);
    while let Some(done) = servers.join_next().await {
        if let Err(e) = done {
            tracing::error!("a listener's task failed: {e}");
        }
    }
    tasks.shutdown().await;
    drop(app);
    tracker_tasks.shutdown().await;
    tracing::info!(
        "stopped; the filter keeps dropping from its pins (`tracking agent detach` removes it)"
    );
    Ok(())
}

/// Makes the default state directory (database, tokens) the agent's alone, as an earlier
/// version may have left it readable by all. A directory given with `--database` is the
/// operator's to set; the store warns when it is open to others.
fn private_state_dir(config: &AgentConfig) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = config.state_dir();
    let default = std::path::Path::new(crate::config::DEFAULT_DATABASE)
        .parent()
        .is_some_and(|d| d == dir);
    if default
        && let Ok(meta) = std::fs::metadata(&dir)
        && meta.permissions().mode() & 0o077 != 0
        && let Err(e) = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
    {
        tracing::warn!("cannot make {} private: {e}", dir.display());
    }
}

/// Reports this host to the fleet every `every`, saying once when reports start failing and
/// once when they work again.
async fn every_heartbeat(engine: Arc<Engine>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match engine.heartbeat(every).await {
            Ok(()) if failing => {
                tracing::info!("reporting to the fleet again");
                failing = false;
            }
            Ok(()) => {}
            Err(err) if !failing => {
                tracing::warn!("cannot report to the fleet: {err}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Calls `f` every `period`, skipping missed ticks.
async fn every<F, Fut>(period: Duration, engine: Arc<Engine>, f: F)
where
    F: Fn(Arc<Engine>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        tick.tick().await;
        f(engine.clone()).await;
    }
}

/// Passes the program's aya-log records to the agent's log.
async fn forward_program_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd and neither closes nor replaces it while the
    // AsyncFd holds it.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot poll the program's log: {e}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// Completes on the first SIGTERM or SIGINT: what the binary passes to [`run`].
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install the SIGTERM and SIGINT handlers; stop the agent with SIGKILL"
        );
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
