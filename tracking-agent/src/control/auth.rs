//! Who may do what on the HTTP listener: the hook token for the app's calls; the admin token (as
//! a bearer token) or a browser session (the cookie `POST /login` sets, see [`super::session`])
//! for everything else. The control socket needs neither: only root can connect to it.
//!
//! A browser sends its cookie with requests that other sites' pages make, so a request that
//! changes something and is authorised by the cookie must come from the agent's own pages: its
//! `Sec-Fetch-Site` says `same-origin`, or, from a browser that does not send that header, its
//! `Origin` is this listener's. Bearer tokens are never sent by a browser on its own and need no
//! such check.

use std::net::SocketAddr;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::CookieJar;

use super::{ApiError, App, session};
use crate::tokens::matches;

/// The address a request came from, put in its extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Lets the request through with the hook token.
/// The admin may read the active counts too: the pages show them.
pub async fn hook(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(tokens) = &app.tokens else {
        return next.run(req).await;
    };
    if req.method() == Method::GET && admin_of(&app, req.headers()).is_some() {
        return next.run(req).await;
    }
    match bearer(req.headers()) {
        Some(t) if matches(t, &tokens.hook) => next.run(req).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong hook token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send the hook token as `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// How a request is the admin's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    /// No tokens (the control socket), or the admin token as a bearer token.
    Token,
    /// A browser's session cookie.
    Session,
}

/// Whether the request is the admin's, and how.
pub fn admin_of(app: &App, headers: &HeaderMap) -> Option<Admin> {
    let Some(tokens) = &app.tokens else {
        return Some(Admin::Token);
    };
    if let Some(t) = bearer(headers) {
        return matches(t, &tokens.admin).then_some(Admin::Token);
    }
    let jar = CookieJar::from_headers(headers);
    let id = jar.get(session::COOKIE)?.value();
    app.sessions.valid(id).then_some(Admin::Session)
}

/// Whether a request made by a browser comes from one of the agent's own pages.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest == host)
}

fn changes_something(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The answer to a cross-site request that rides on a browser's session.
pub fn cross_site() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "a change made with a browser session must come from the agent's own pages",
    )
    .into_response()
}

/// Lets the request through when it is the admin's; a page request without it goes to the
/// login; a change that rides on a session must come from the agent's own pages.
pub async fn admin(State(app): State<App>, req: Request, next: Next) -> Response {
    match admin_of(&app, req.headers()) {
        Some(Admin::Token) => return next.run(req).await,
        Some(Admin::Session) => {
            if changes_something(req.method()) && !same_origin(req.headers()) {
                return cross_site();
            }
            return next.run(req).await;
        }
        None => {}
    }
    // Scrapers and scripts get a 401; browsers on the pages go to the login.
    if req.uri().path().starts_with("/v1/") || req.uri().path() == "/metrics" {
        let message = if bearer(req.headers()).is_some() {
            "wrong admin token"
        } else {
            "send the admin token as `Authorization: Bearer <token>`"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    }
    Redirect::to("/login").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_request_is_same_origin_by_its_fetch_metadata_or_its_origin() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://127.0.0.1:9999"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        // Fetch metadata, when sent, is what counts.
        assert!(!same_origin(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
    }
}
