//! The HTTP API, on two listeners (see `docs/http-api.md`):
//! - the control socket (mode 0600, root only): every API route, no tokens; the CLI uses it;
//! - the HTTP listener: the hook behind the hook token; the admin API and the pages behind the
//!   admin token.
//!
//! - [`hook`]: the visit hook and active counts.
//! - [`routes`]: bans, allowlist, user-agent rules, visitors, feed, map, status, stats.
//! - [`auth`]: the tokens, browser sessions and the same-origin rule for changes.
//! - [`session`]: browser logins and the limit on wrong tokens.
//! - [`serve`]: serving a router within limits (timeouts, connections, a bounded stop).
//! - [`unix`]: the control socket.
//! - [`pages`]: the pages and the login; [`metrics`]: `GET /metrics`.

pub mod auth;
mod error;
pub mod hook;
pub mod metrics;
mod pages;
pub mod routes;
pub mod serve;
pub mod session;
mod unix;

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::Response,
};

pub use error::ApiError;
pub use unix::{SocketError, bind};

use crate::{engine::Engine, geoip::GeoIp, kernel::Tables, tokens::Tokens, tracker::Tracker};

/// What every handler can reach.
#[derive(Clone)]
pub struct App {
    pub engine: Arc<Engine>,
    pub tracker: Arc<Tracker>,
    /// The kernel tables, for the hook's `banned` (read without the engine's locks).
    pub tables: Arc<Tables>,
    pub geoip: Option<Arc<GeoIp>>,
    /// `None` on the control socket.
    pub tokens: Option<Arc<Tokens>>,
    /// Browser logins to the pages.
    pub sessions: Arc<session::Sessions>,
    /// Turns true when the agent stops: long-lived answers (the live feed) end then, so that
    /// the listeners can shut down.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// What `GET /metrics` shows that is not state: the hook's latency, failed reconciles.
    pub metrics: Arc<metrics::Metrics>,
    /// The CrowdSec bouncer, for `tracking status`.
    pub crowdsec: Option<Arc<crate::crowdsec::Bouncer>>,
}

/// Every API route without tokens, for the control socket.
pub fn socket_router(mut app: App) -> Router {
    app.tokens = None;
    hook::routes()
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            metrics::time_hook,
        ))
        .merge(routes::admin())
        .merge(metrics::routes())
        .with_state(app)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panicked,
        ))
}

/// The HTTP listener: the hook behind the hook token, the admin API and the pages behind the
/// admin token, and the login; every answer with the headers that keep the pages to themselves.
pub fn http_router(app: App) -> Router {
    let hook = hook::routes()
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::hook))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            metrics::time_hook,
        ));
    let admin = routes::admin()
        .merge(metrics::routes())
        .merge(pages::pages())
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::admin));
    hook.merge(admin)
        .merge(pages::public())
        .with_state(app)
        .layer(middleware::from_fn(security_headers))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panicked,
        ))
}

/// `GET /metrics` alone, without a token: the `--metrics` listener, for a Prometheus that
/// scrapes over a network the operator trusts.
pub fn metrics_router(app: App) -> Router {
    metrics::routes()
        .with_state(app)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panicked,
        ))
}

/// The pages load only their own scripts, styles and data (no inline script or style, which is
/// what an injected one would be), are never framed by another page, never sniffed as another
/// type, and say only their origin when they link out.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ] {
        headers.insert(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn a_handler_that_panics_answers_a_json_500_that_tells_nothing_of_the_agent() {
        let router: Router = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("secret detail /var/lib/tracking");
                    }
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                error::panicked,
            ));
        let response = router
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json["error"],
            "the agent could not complete the request; see its log"
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
