//! Hearing the other agents: one connection of its own that `LISTEN`s on the channel every ban
//! or allowlist change is announced on, and counts the announcements that came from another
//! store instance in a `watch` channel the agent waits on.
//!
//! The connection may drop (the server restarts, a network blip). The task then connects
//! again, waiting longer after each failure, up to [`MAX_BACKOFF`]. Whatever was announced
//! while it was away is lost, so a reconnection counts as a change: the agent reconciles and
//! catches up.

use std::{pin::pin, time::Duration};

use futures_util::StreamExt;
use tokio::{
    sync::{oneshot, watch},
    task::AbortHandle,
};
use tokio_postgres::{AsyncMessage, Config, NoTls};

use super::{CHANNEL, PgError};
use crate::store::{Result, StoreError};

/// The wait after the first failure; it doubles after each further one.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

/// Starts listening, and returns once the first `LISTEN` is in place (so that no change made
/// after `connect` returns is missed) or has failed.
pub(super) async fn start(
    mut config: Config,
    instance: String,
) -> Result<(watch::Receiver<u64>, AbortHandle)> {
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    let (counter, changes) = watch::channel(0);
    let (ready, listening) = oneshot::channel();
    let task = tokio::spawn(run(config, instance, counter, ready));
    match listening.await {
        Ok(Ok(())) => Ok((changes, task.abort_handle())),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(StoreError::ListenerStopped),
    }
}

/// Listens until aborted, connecting again whenever the connection is lost.
async fn run(
    config: Config,
    instance: String,
    counter: watch::Sender<u64>,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut listening = false;
        let ended = listen(&config, &instance, &counter, || {
            listening = true;
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(Ok(()));
                }
                None => {
                    tracing::info!("listening for the fleet's ban changes again");
                    counter.send_modify(|n| *n += 1);
                }
            }
        })
        .await;
        if let Some(ready) = ready.take() {
            // The first connection failed: `connect` reports it and the store is not made.
            let _ = ready.send(Err(match ended {
                Ended::Failed(error) => StoreError::Postgres(error),
                Ended::Closed => StoreError::ListenerStopped,
            }));
            return;
        }
        if listening {
            backoff = MIN_BACKOFF;
        }
        tracing::warn!(
            "lost the connection that hears the fleet's ban changes ({ended}); \
             connecting again in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects, listens, calls `on_listening` once the `LISTEN` is in place, and counts the other
/// instances' notifications until the connection ends.
async fn listen(
    config: &Config,
    instance: &str,
    counter: &watch::Sender<u64>,
    mut on_listening: impl FnMut(),
) -> Ended {
    let (client, mut connection) = match config.connect(NoTls).await {
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
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.channel() == CHANNEL && n.payload() != instance {
                        counter.send_modify(|count| *count += 1);
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
