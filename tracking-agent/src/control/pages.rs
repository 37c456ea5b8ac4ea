//! Serving the pages and their assets (embedded in the binary by [`crate::web::assets`]), and the
//! login that turns the admin token into a cookie for the browser.

use std::net::IpAddr;

use axum::{
    Extension, Form, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use cookie::time;
use serde::Deserialize;

use super::{ApiError, App, auth, auth::Peer, session};
use crate::{tokens::matches, web::assets};

/// The pages, behind the admin token.
pub fn pages() -> Router<App> {
    Router::new()
        .route("/", get(|| page("dashboard")))
        .route("/live", get(|| page("live")))
        .route("/map", get(|| page("map")))
        .route("/admin", get(|| page("admin")))
}

/// What needs no token: the login and the static assets (nothing secret in them).
pub fn public() -> Router<App> {
    Router::new()
        .route("/login", get(|| page("login")).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/assets/{file}", get(asset))
}

async fn page(name: &'static str) -> Response {
    match assets::page(name) {
        Some(html) => {
            let mut resp = Html(html).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        None => (StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    match assets::asset(&file) {
        Some((content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Opens a browser session for the admin token: limited per client address, and only from
/// the agent's own login page (a login forced on a browser by another site is refused too).
async fn login(
    State(app): State<App>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(tokens) = &app.tokens else {
        return Redirect::to("/").into_response();
    };
    if !auth::same_origin(&headers) {
        return auth::cross_site();
    }
    let client = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(Peer(a))| a.ip());
    if let Err(wait) = app.sessions.may_try(client) {
        let secs = wait.as_secs().max(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Html(login_message(&format!(
                "Too many wrong tokens from your address; try again in {secs} s."
            ))),
        )
            .into_response();
    }
    if !matches(form.token.trim(), &tokens.admin) {
        app.sessions.failed(client);
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_message("Wrong token.")),
        )
            .into_response();
    }
    app.sessions.succeeded(client);
    let id = match app.sessions.open() {
        Ok(id) => id,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    // Over HTTPS (behind a proxy that terminates it) the cookie must never go out in clear.
    let https = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    let cookie = Cookie::build((session::COOKIE, id))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(https)
        .max_age(time::Duration::seconds(
            app.sessions.lifetime().as_secs() as i64
        ))
        .build();
    (jar.add(cookie), Redirect::to("/")).into_response()
}

/// Ends the browser's session; its cookie is worth nothing after.
async fn logout(State(app): State<App>, headers: HeaderMap, jar: CookieJar) -> Response {
    if !auth::same_origin(&headers) {
        return auth::cross_site();
    }
    if let Some(cookie) = jar.get(session::COOKIE) {
        app.sessions.close(cookie.value());
    }
    let gone = Cookie::build((session::COOKIE, "")).path("/").build();
    (jar.remove(gone), Redirect::to("/login")).into_response()
}

/// The login page with `message` above the form.
fn login_message(message: &str) -> String {
    assets::page("login")
        .unwrap_or_else(|| "<!doctype html><title>tracking</title>".to_owned())
        .replacen(
            "<body>",
            &format!("<body><p class=\"message error\" role=\"alert\">{message}</p>"),
            1,
        )
}
