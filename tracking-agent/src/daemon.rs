//! `tracking agent run`: opens the store, starts the [`Engine`], serves the control socket and
//! runs the periodic tasks until SIGINT or SIGTERM. Stopping leaves the filter running from its
//! pins; `tracking agent detach` is what removes it.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::{
    config::{AgentConfig, Database},
    control,
    engine::Engine,
    store::{Store, sqlite::SqliteStore},
};

/// Opens the configured store.
pub fn open_store(db: &Database) -> anyhow::Result<Arc<dyn Store>> {
    match db {
        Database::Sqlite(path) => {
            Ok(Arc::new(SqliteStore::open(path).with_context(|| {
                format!("opening the store {}", path.display())
            })?))
        }
    }
}

/// Runs the agent until a termination signal.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let store = open_store(&config.database)?;
    tracing::info!("store: {}", store.describe());
    let listener = control::bind(&config.socket).await?;
    let engine = Engine::start(config.clone(), store).await?;
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

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(every(
        config.reconcile_interval,
        engine.clone(),
        |e| async move {
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
        },
    ));
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
    if let Some(logger) = engine.take_logger() {
        tasks.spawn(forward_program_logs(logger));
    }

    axum::serve(listener, control::router(engine.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the control socket")?;
    tasks.shutdown().await;
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
