//! The visit hook: `POST /v1/visits`, `POST /v1/visits/batch` and `GET /v1/active`, the calls an
//! app makes. A visit is validated field by field so that the answer names what is wrong, and a
//! batch is validated whole before any of it is tracked: bad input stores nothing.

use std::{net::IpAddr, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, Request, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header::CONTENT_TYPE},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ApiError, App};
use crate::{active::Counts, time::Timestamp, visit::Visit};

/// Largest body of `POST /v1/visits`.
pub const MAX_VISIT_BYTES: usize = 64 * 1024;
/// Largest body of `POST /v1/visits/batch`.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Most visits in one batch.
pub const MAX_BATCH: usize = 1000;
/// The header of [`server_timing`] (the `http` crate has no constant for it).
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
/// How far in the future `at` may be (clock skew between app and agent).
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route(
            "/v1/visits",
            post(one).layer(DefaultBodyLimit::max(MAX_VISIT_BYTES)),
        )
        .route(
            "/v1/visits/batch",
            post(batch).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        )
        .route(
            "/v1/active",
            get(active).layer(middleware::from_fn(server_timing)),
        )
}

/// Adds `Server-Timing: app;dur=<ms>`, to the microsecond: how long the agent took to answer,
/// without the network and the client, so that the cost of a count can be told from the cost
/// of HTTP (the benchmark of active counts reads it). Two clock reads and a short header.
async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().insert(SERVER_TIMING, value);
    }
    response
}

/// The answer for one visit.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookReply {
    /// Stored and counted (false: a user-agent rule or a no-tracking prefix matched).
    pub tracked: bool,
    /// The address is banned right now: an app behind a proxy should refuse the request.
    pub banned: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchReply {
    pub results: Vec<HookReply>,
}

async fn one(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<HookReply>), ApiError> {
    let value = json_body(&headers, body, MAX_VISIT_BYTES)?;
    let visit = parse_visit(&value, Timestamp::now())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok((StatusCode::ACCEPTED, Json(app.hook(visit).await)))
}

async fn batch(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BatchReply>), ApiError> {
    let value = json_body(&headers, body, MAX_BATCH_BYTES)?;
    let Value::Array(items) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a batch must be a JSON array of visits",
        ));
    };
    if items.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a batch holds at most {MAX_BATCH} visits, this one {}",
                items.len()
            ),
        ));
    }
    let now = Timestamp::now();
    let mut visits = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_visit(item, now) {
            Ok(v) => visits.push(v),
            Err(e) => errors.push(format!("visit {i}: {e}")),
        }
    }
    if !errors.is_empty() {
        let message = format!(
            "{} of {} visits are invalid; none was stored",
            errors.len(),
            items.len()
        );
        return Err(ApiError::with_details(
            StatusCode::BAD_REQUEST,
            message,
            errors,
        ));
    }
    let mut results = Vec::with_capacity(visits.len());
    for v in visits {
        results.push(app.hook(v).await);
    }
    Ok((StatusCode::ACCEPTED, Json(BatchReply { results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveQuery {
    path: Option<String>,
}

async fn active(
    State(app): State<App>,
    query: Result<Query<ActiveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Counts>, ApiError> {
    let Query(q) = query?;
    Ok(Json(app.tracker.counts(q.path.as_deref())))
}

impl App {
    /// Tracks a validated visit and says whether its address is banned.
    async fn hook(&self, visit: Visit) -> HookReply {
        let banned = self.tables.banned(visit.ip).is_some();
        let tracked = self.tracker.track(visit).await;
        HookReply { tracked, banned }
    }
}

/// The body as JSON, refusing other media types and oversized bodies with a message that says so.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send visits as JSON with `Content-Type: application/json`",
        ));
    }
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} KiB", limit / 1024),
            )
        } else {
            ApiError::new(r.status(), r.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Validates one visit. Unknown fields are ignored; known ones must have the right type.
pub fn parse_visit(value: &Value, now: Timestamp) -> Result<Visit, String> {
    let Value::Object(obj) = value else {
        return Err("a visit must be a JSON object".into());
    };
    let ip = match obj.get("ip") {
        None | Some(Value::Null) => return Err("`ip` is missing".into()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<IpAddr>()
            .map(|ip| ip.to_canonical())
            .map_err(|_| format!("`ip`: `{s}` is not an IPv4 or IPv6 address"))?,
        Some(other) => return Err(format!("`ip` must be a string, not {}", kind(other))),
    };
    let url = match text(obj, "url", 4096)? {
        None => "/".to_string(),
        Some(u) if u.starts_with('/') => {
            // Pages are counted by path: the query and fragment are not part of it.
            let end = u.find(['?', '#']).unwrap_or(u.len());
            u[..end].to_string()
        }
        Some(u) => {
            return Err(format!(
                "`url` must be a path starting with `/`, not `{}`",
                shorten(&u)
            ));
        }
    };
    let at = match obj.get("at") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => {
            let at = Timestamp::parse(s).map_err(|e| format!("`at`: {e}"))?;
            if at.as_millis() > now.as_millis() + MAX_SKEW_MS {
                return Err(format!("`at` ({at}) is more than 5 minutes in the future"));
            }
            at
        }
        Some(other) => return Err(format!("`at` must be a string, not {}", kind(other))),
    };
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) if s.len() > 256 => {
            return Err("`user` is longer than 256 characters".into());
        }
        Some(Value::String(s)) if s.trim().chars().any(char::is_control) => {
            return Err("`user` contains a control character".into());
        }
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                "`user` must be a string or a number, not {}",
                kind(other)
            ));
        }
    };
    Ok(Visit {
        ip,
        session_key: text(obj, "session_key", 256)?.filter(|s| !s.is_empty()),
        user_agent: text(obj, "user_agent", 2048)?.unwrap_or_default(),
        user,
        referrer: text(obj, "referrer", 4096)?.filter(|s| !s.is_empty()),
        url,
        at,
    })
}

/// An optional string field of at most `max` bytes.
fn text(obj: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > max => {
            Err(format!("`{field}` is longer than {max} bytes"))
        }
        // No header or path holds control characters, and PostgreSQL text refuses NUL.
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            Err(format!("`{field}` contains a control character"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{field}` must be a string, not {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Visit, String> {
        parse_visit(&v, Timestamp::from_millis(1_800_000_000_000))
    }

    #[test]
    fn a_full_visit_is_taken_as_sent() {
        let v = parse(json!({"ip": "203.0.113.9", "session_key": "k", "user_agent": "UA", "user": "alice",
            "referrer": "https://example.org/", "url": "/blog/post?x=1#top", "at": "2027-01-15T08:00:00Z", "extra": [1]}))
        .unwrap();
        assert_eq!(v.ip.to_string(), "203.0.113.9");
        assert_eq!(
            (v.session_key.as_deref(), v.user.as_deref(), v.url.as_str()),
            (Some("k"), Some("alice"), "/blog/post")
        );
        assert_eq!(v.at.to_string(), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn only_the_address_is_required() {
        let v = parse(json!({"ip": "2001:db8::1"})).unwrap();
        assert_eq!((v.url.as_str(), v.user, v.session_key), ("/", None, None));
        assert_eq!(v.at, Timestamp::from_millis(1_800_000_000_000));
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_address() {
        assert_eq!(
            parse(json!({"ip": "::ffff:192.0.2.1"}))
                .unwrap()
                .ip
                .to_string(),
            "192.0.2.1"
        );
    }

    #[test]
    fn numeric_user_ids_are_accepted() {
        assert_eq!(
            parse(json!({"ip": "192.0.2.1", "user": 42}))
                .unwrap()
                .user
                .as_deref(),
            Some("42")
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (json!({}), "`ip` is missing"),
            (json!({"ip": null}), "`ip` is missing"),
            (json!({"ip": 5}), "`ip` must be a string, not a number"),
            (
                json!({"ip": "300.1.1.1"}),
                "`ip`: `300.1.1.1` is not an IPv4 or IPv6 address",
            ),
            (
                json!({"ip": "192.0.2.1", "user_agent": 7}),
                "`user_agent` must be a string, not a number",
            ),
            (
                json!({"ip": "192.0.2.1", "session_key": {}}),
                "`session_key` must be a string, not an object",
            ),
            (
                json!({"ip": "192.0.2.1", "user": true}),
                "`user` must be a string or a number, not a boolean",
            ),
            (
                json!({"ip": "192.0.2.1", "url": "blog"}),
                "`url` must be a path starting with `/`, not `blog`",
            ),
            (
                json!({"ip": "192.0.2.1", "at": "yesterday"}),
                "`at`: `yesterday` is not a time",
            ),
            (
                json!({"ip": "192.0.2.1", "at": "2030-01-01T00:00:00Z"}),
                "is more than 5 minutes in the future",
            ),
            (
                json!({"ip": "192.0.2.1", "referrer": "x".repeat(5000)}),
                "`referrer` is longer than 4096 bytes",
            ),
            (json!(["192.0.2.1"]), "a visit must be a JSON object"),
            (
                json!({"ip": "192.0.2.1", "user_agent": "a\u{0}b"}),
                "`user_agent` contains a control character",
            ),
            (
                json!({"ip": "192.0.2.1", "user": "bo\u{0}b"}),
                "`user` contains a control character",
            ),
        ];
        for (input, expected) in cases {
            let err = parse(input.clone()).unwrap_err();
            assert!(
                err.contains(expected),
                "{input}: got `{err}`, expected `{expected}`"
            );
        }
    }
}
