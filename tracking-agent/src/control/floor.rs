//! The benchmark floor of the visit hook (`tracking bench-floor --http ADDR`, hidden): the same
//! HTTP stack as the agent's listener (axum on hyper, a multi-threaded tokio runtime, the same
//! binary and build), answering `POST /v1/visits` with `202 {"tracked":false,"banned":false}`
//! after reading the body, and doing nothing else: no token, no parsing, no index, no store.
//!
//! `cargo xtask bench hook` loads it and the real agent with the same requests in the same run;
//! the agent's rate over the floor's is what the hook costs over serving HTTP at all.

use std::net::SocketAddr;

use axum::{
    Router,
    body::Bytes,
    http::{StatusCode, header::CONTENT_TYPE},
    routing::post,
};

/// The answer, as the agent's hook would give for a visit it did not track.
const REPLY: &str = r#"{"tracked":false,"banned":false}"#;

/// The floor's one route.
pub fn router() -> Router {
    Router::new().route("/v1/visits", post(visit))
}

async fn visit(
    _body: Bytes,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    &'static str,
) {
    (
        StatusCode::ACCEPTED,
        [(CONTENT_TYPE, "application/json")],
        REPLY,
    )
}

/// Serves the floor on `addr` until SIGINT or SIGTERM.
pub async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, router())
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
}
