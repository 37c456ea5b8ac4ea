//! `tracking agent run`: opens the store, starts the [`Engine`], serves the control socket and
//! runs the periodic tasks until SIGINT or SIGTERM. Stopping leaves the filter running from its
//! pins; `tracking agent detach` is what removes it.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::{
    config::{AgentConfig, Database},
    control::{self, App},
    engine::Engine,
    geoip::GeoIp,
    store::{Store, postgres::PgStore, sqlite::SqliteStore},
    tokens::Tokens,
    tracker::{Tracker, TrackerConfig},
};

/// Opens the configured store: the SQLite file, or a connection pool to the PostgreSQL
/// database (whose schema it brings up to date).
pub async fn open_store(db: &Database) -> anyhow::Result<Arc<dyn Store>> {
    match db {
        Database::Sqlite(path) => {
            Ok(Arc::new(SqliteStore::open(path).with_context(|| {
                format!("opening the store {}", path.display())
            })?))
        }
        Database::Postgres(url) => Ok(Arc::new(
            PgStore::connect(url)
                .await
                // `db` shows the URL with its password hidden.
                .with_context(|| format!("opening the store {db}"))?,
        )),
    }
}

/// Runs the agent until a termination signal.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    // First: a database that cannot be used is refused before the store or the socket exist.
    let geoip = if config.geoip_db.is_empty() {
        None
    } else {
        let geoip = GeoIp::open(&config.geoip_db)?;
        tracing::info!("GeoIP: {}", geoip.describe());
        Some(Arc::new(geoip))
    };
    let store = open_store(&config.database).await?;
    tracing::info!("store: {}", store.describe());
    let socket = control::bind(&config.socket).await?;
    let http = match config.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--http)"))?,
        ),
        None => None,
    };
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
        },
    )
    .await?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let app = App {
        tables: engine.tables(),
        engine: engine.clone(),
        tracker,
        geoip,
        tokens: Some(Arc::new(tokens)),
        stopping: stopping.clone(),
    };
    match &http {
        Some(l) => tracing::info!(
            "visit hook at http://{}/v1/visits, pages at http://{}/ (tokens: --hook-token/--admin-token, or the files in {})",
            l.local_addr()?,
            l.local_addr()?,
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
                Err(err) => tracing::error!("reconcile failed: {err}"),
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
        let engine = engine.clone();
        tasks.spawn(async move {
            while changes.changed().await.is_ok() {
                match engine.reconcile().await {
                    Ok(a) => tracing::info!(
                        "bans changed by another agent: {} added, {} updated, {} removed",
                        a.added,
                        a.updated,
                        a.removed
                    ),
                    Err(err) => tracing::error!("reconcile after a change elsewhere failed: {err}"),
                }
            }
        });
    }
    if let Some(logger) = engine.take_logger() {
        tasks.spawn(forward_program_logs(logger));
    }

    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(
        axum::serve(socket, control::socket_router(app.clone()))
            .with_graceful_shutdown(until_stopped(stopping.clone()))
            .into_future(),
    );
    if let Some(http) = http {
        servers.spawn(
            axum::serve(http, control::http_router(app.clone()))
                .with_graceful_shutdown(until_stopped(stopping.clone()))
                .into_future(),
        );
    }
    tokio::select! {
        _ = shutdown_signal() => {}
        Some(done) = servers.join_next() => {
            done.context("a listener task failed")?.context("serving HTTP")?;
        }
    }
    let _ = stop.send(true);
    while let Some(done) = servers.join_next().await {
        done.context("a listener task failed")?
            .context("serving HTTP")?;
    }
    tasks.shutdown().await;
    drop(app);
    tracker_tasks.shutdown().await;
    let _ = std::fs::remove_file(&config.socket);
    tracing::info!(
        "stopped; the filter keeps dropping from its pins (`tracking agent detach` removes it)"
    );
    Ok(())
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
