//! Serving a router on a listener with the limits an exposed listener needs, so that slow and
//! many clients cannot lock out the others or hold the agent up when it stops:
//!
//! - a request's head must arrive within the header timeout of the connection opening or of
//!   the previous answer (hyper's `header_read_timeout`): a slow-loris client, and a kept-alive
//!   connection that sends nothing, are closed then;
//! - a connection on which nothing moves either way for the idle timeout is closed (a body sent
//!   a byte now and then, an answer nobody reads);
//! - at most `max_connections` are served at once; one more is answered `503` with
//!   `Retry-After` and closed, so a client learns why rather than hanging in the backlog;
//! - on shutdown no connection is accepted any more, requests in flight may finish for the
//!   grace period, and whatever is still open then is closed.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use std::net::SocketAddr;

use axum::{Router, extract::Request};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tower::ServiceExt as _;

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, UnixListener},
    sync::Semaphore,
    task::JoinSet,
    time::{Instant, Sleep},
};

use super::auth::Peer;
use crate::config::HttpLimits;

/// What a listener hands out: TCP connections with their peer's address, or Unix ones on the
/// control socket.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Option<SocketAddr>)>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Io, Option<SocketAddr>)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Answers are small and written whole: send them at once.
        let _ = stream.set_nodelay(true);
        Ok((stream, Some(peer)))
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(Self::Io, Option<SocketAddr>)> {
        Ok((UnixListener::accept(self).await?.0, None))
    }
}

/// The answer to a connection beyond the limit.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 57\r\nConnection: close\r\n\r\n{\"error\":\"the agent serves too many connections; retry\"}\n";

/// Serves `router` on `listener` within `limits` until `shutdown` completes.
pub async fn serve<A: Accept>(
    listener: A,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (io, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, most likely: wait rather than spin.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    connections.spawn(refuse(io));
                    continue;
                };
                let io = Idle::new(io, limits.idle_timeout);
                let router = router.clone();
                // Handlers that care (the login's rate limit) read the peer from here.
                let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    if let Some(peer) = peer {
                        request.extensions_mut().insert(Peer(peer));
                    }
                    router.clone().oneshot(request)
                });
                let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
                connections.spawn(async move {
                    // A client that goes away or times out is not the agent's error.
                    let _ = connection.await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connections still busy {:?} after the stop; closing them",
            connections.len(),
            limits.shutdown_grace
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Tells a connection beyond the limit to come back, and closes it.
async fn refuse<T: AsyncWrite + Unpin>(mut io: T) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(BUSY).await?;
        io.shutdown().await
    })
    .await;
}

/// A connection that fails with `TimedOut` once nothing has been read or written for the
/// timeout.
struct Idle<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> Idle<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Idle {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    /// Whether the deadline has passed; registers the waker for it otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection was idle too long")
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft limit of open files to the hard one, where it is lower: a listener that
/// serves thousands of connections needs a descriptor each (systemd's default soft limit is
/// 1024). Returns the limit in force.
pub fn raise_open_files() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    current
}
