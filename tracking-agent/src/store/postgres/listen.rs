//! Hearing the fleet: one connection of its own that `LISTEN`s on the channel every ban or
//! allowlist change is announced on, with the position the change log ends at, and keeps the
//! highest position another store instance announced in a `watch` channel the agent waits on.
//!
//! The connection may drop (the server restarts, a network blip). The task then connects again
//! within [`MAX_BACKOFF`] (a short, jittered wait that grows a little after each failure), so
//! that a server that is back is heard again within about a second. Whatever was announced
//! while it was away is lost, so a reconnection counts as a change: the agent catches up from
//! the last position it applied.

use std::{
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio::{
    sync::{oneshot, watch},
    task::AbortHandle,
};
use tokio_postgres::{AsyncMessage, Config};

use super::{CHANNEL, PgError, PgStoreError, tls::Tls};
use crate::store::Result;

/// The wait after the first failure; it doubles after each further one, up to the cap, and a
/// random part of up to a half is added so that a fleet does not reconnect in step.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_millis(800);

/// How long the connection may be silent before TCP probes whether the server is still there.
/// A server that vanished without closing the connection would otherwise go unnoticed for two
/// hours (the kernel's default), during which the fleet's changes would not be heard.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// How a listening connection ended.
enum Ended {
    Failed(PgError),
    Closed,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Failed(error) => error.fmt(f),
            Ended::Closed => f.write_str("the server closed the connection"),
        }
    }
}

/// What the listener shares with the store.
pub(super) struct Heard {
    /// The highest position announced; touched (not necessarily raised) on a reconnection.
    pub positions: watch::Receiver<u64>,
    /// Whether the `LISTEN` is in place now.
    pub listening: Arc<AtomicBool>,
    pub task: AbortHandle,
}

/// Starts listening, and returns once the first `LISTEN` is in place (so that no change made
/// after `connect` returns is missed) or has failed.
pub(super) async fn start(mut config: Config, tls: Tls, instance: String) -> Result<Heard> {
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    let (counter, positions) = watch::channel(0);
    let (ready, started) = oneshot::channel();
    let listening = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run(
        config,
        tls,
        instance,
        counter,
        ready,
        listening.clone(),
    ));
    match started.await {
        Ok(Ok(())) => Ok(Heard {
            positions,
            listening,
            task: task.abort_handle(),
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(PgStoreError::ListenerStopped.into()),
    }
}

/// Listens until aborted, connecting again whenever the connection is lost.
async fn run(
    config: Config,
    tls: Tls,
    instance: String,
    counter: watch::Sender<u64>,
    ready: oneshot::Sender<Result<()>>,
    heard: Arc<AtomicBool>,
) {
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut listening = false;
        let ended = listen(&config, &tls, &instance, &counter, || {
            listening = true;
            heard.store(true, Ordering::Release);
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(Ok(()));
                }
                None => {
                    tracing::info!("listening for the fleet's ban changes again");
                    counter.send_modify(|_| {});
                }
            }
        })
        .await;
        heard.store(false, Ordering::Release);
        if let Some(ready) = ready.take() {
            // The first connection failed: `connect` reports it and the store is not made.
            let _ = ready.send(Err(match ended {
                Ended::Failed(error) => PgStoreError::Driver(error).into(),
                Ended::Closed => PgStoreError::ListenerStopped.into(),
            }));
            return;
        }
        if listening {
            backoff = MIN_BACKOFF;
        }
        let wait = backoff + jitter(backoff / 2);
        tracing::warn!(
            "lost the connection that hears the fleet's ban changes ({ended}); \
             connecting again in {wait:?}"
        );
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A random duration below `max`.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new().hash_one(std::time::SystemTime::now());
    Duration::from_nanos(random % (max.as_nanos() as u64).max(1))
}

/// Connects, listens, calls `on_listening` once the `LISTEN` is in place, and keeps the
/// highest position announced until the connection ends.
async fn listen(
    config: &Config,
    tls: &Tls,
    instance: &str,
    counter: &watch::Sender<u64>,
    mut on_listening: impl FnMut(),
) -> Ended {
    let (client, mut connection) = match tls.connect(config).await {
        Ok(connected) => connected,
        Err(error) => return Ended::Failed(error.into()),
    };
    // The connection yields notifications only while it is polled, and it must also be polled
    // for the `LISTEN` to be sent: both are driven from this one loop.
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = format!("LISTEN {CHANNEL}");
    let mut subscribe = pin!(client.batch_execute(&listen));
    let mut subscribed = false;
    loop {
        tokio::select! {
            result = &mut subscribe, if !subscribed => match result {
                Ok(()) => {
                    subscribed = true;
                    on_listening();
                }
                Err(error) => return Ended::Failed(error.into()),
            },
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    // `<instance> <position>`. This store's own changes are applied by the
                    // agent that made them, as it makes them.
                    if let Some((from, position)) = n.payload().rsplit_once(' ')
                        && from != instance
                        && let Ok(position) = position.parse::<u64>()
                    {
                        counter.send_modify(|heard| *heard = (*heard).max(position));
                    }
                }
                // Notices (a server shutting down says so first): nothing to do.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Ended::Failed(error.into()),
                None => return Ended::Closed,
            },
        }
    }
}
