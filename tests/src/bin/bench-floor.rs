//! The benchmark floor of the visit hook (`bench-floor --http ADDR`): the same HTTP stack as the
//! agent's listener (axum on hyper, a multi-threaded tokio runtime, the same versions from the
//! same Cargo.lock, a release build like the agent's), answering `POST /v1/visits` with `202 {"tracked":false,"banned":false}`
//! after reading the body, and doing nothing else: no token, no parsing, no index, no store.
//!
//! `cargo xtask bench hook` loads it and the real agent with the same requests in the same run;
//! the agent's rate over the floor's is what the hook costs over serving HTTP at all. It lives in
//! the tests crate so that the binary an operator installs has no benchmark command.

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
fn router() -> Router {
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

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--http"), Some(addr), None) => addr.parse::<SocketAddr>(),
        _ => {
            eprintln!("usage: bench-floor --http ADDR");
            return std::process::ExitCode::from(2);
        }
    };
    let addr = match addr {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("bench-floor: --http: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(serve(addr)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-floor on {addr}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves the floor on `addr` until SIGINT or SIGTERM.
async fn serve(addr: SocketAddr) -> std::io::Result<()> {
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
