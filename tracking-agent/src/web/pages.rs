//! Serving the pages and their assets (embedded in the binary by [`super::assets`]), and the
//! login that turns the admin token into a cookie for the browser.

use axum::{
    Form, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use serde::Deserialize;

use super::assets;
use crate::{
    control::{App, auth},
    tokens::matches,
};

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

async fn login(State(app): State<App>, Form(form): Form<LoginForm>) -> Response {
    let Some(tokens) = &app.tokens else {
        return Redirect::to("/").into_response();
    };
    let token = form.token.trim();
    if !matches(token, &tokens.admin) {
        return (StatusCode::UNAUTHORIZED, Html(login_failed())).into_response();
    }
    // The cookie holds the token itself: HttpOnly keeps scripts from reading it, SameSite=Strict
    // keeps other sites from riding on it.
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        auth::COOKIE
    );
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("token is ASCII"),
    );
    resp
}

async fn logout() -> Response {
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::COOKIE
    );
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("ASCII"),
    );
    resp
}

fn login_failed() -> String {
    assets::page("login")
        .unwrap_or("<!doctype html><title>tracking</title>")
        .replacen(
            "<body>",
            "<body><p class=\"message error\" role=\"alert\">Wrong token.</p>",
            1,
        )
}
