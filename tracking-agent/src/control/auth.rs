//! Tokens on the HTTP listener: the hook token for the app's calls, the admin token (as a bearer
//! token, or the `tracking_admin` cookie set by `POST /login`) for everything else. The control
//! socket needs neither: only root can connect to it.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};

use super::{ApiError, App};
use crate::tokens::matches;

/// Name of the cookie holding the admin token in a browser.
pub const COOKIE: &str = "tracking_admin";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Lets the request through with the hook token.
/// The admin token may read the active counts too: the pages show them.
pub async fn hook(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(tokens) = &app.tokens else {
        return next.run(req).await;
    };
    if req.method() == axum::http::Method::GET && is_admin(&app, req.headers()) {
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

/// Whether the request carries the admin token, as a bearer token or the login cookie.
pub fn is_admin(app: &App, headers: &HeaderMap) -> bool {
    let Some(tokens) = &app.tokens else {
        return true;
    };
    bearer(headers)
        .or_else(|| cookie(headers, COOKIE))
        .is_some_and(|t| matches(t, &tokens.admin))
}

/// Lets the request through with the admin token; a page request without it goes to the login.
pub async fn admin(State(app): State<App>, req: Request, next: Next) -> Response {
    if is_admin(&app, req.headers()) {
        return next.run(req).await;
    }
    if req.uri().path().starts_with("/v1/") {
        let message = if bearer(req.headers()).is_some() {
            "wrong admin token"
        } else {
            "send the admin token as `Authorization: Bearer <token>`"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    }
    Redirect::to("/login").into_response()
}
