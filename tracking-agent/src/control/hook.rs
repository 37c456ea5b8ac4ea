//! The visit hook: `POST /v1/visits`, `POST /v1/visits/batch` and `GET /v1/active`, the calls an
//! app makes. A visit is validated field by field so that the answer names what is wrong, and a
//! batch is validated whole before any of it is tracked: bad input stores nothing.

use std::{borrow::Cow, fmt, net::IpAddr, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, Request, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header::CONTENT_TYPE},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::Number;
#[cfg(test)]
use serde_json::Value;

use super::{ApiError, App};
use crate::{active::Counts, backlog::Refused, time::Timestamp, visit::Visit};

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

impl HookReply {
    /// The answer as JSON, as `serde_json` writes it: one of four texts.
    fn as_json(&self) -> &'static str {
        match (self.tracked, self.banned) {
            (false, false) => r#"{"tracked":false,"banned":false}"#,
            (false, true) => r#"{"tracked":false,"banned":true}"#,
            (true, false) => r#"{"tracked":true,"banned":false}"#,
            (true, true) => r#"{"tracked":true,"banned":true}"#,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchReply {
    pub results: Vec<HookReply>,
}

async fn one(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, [(HeaderName, &'static str); 1], &'static str), ApiError> {
    let body = checked_body(&headers, body, MAX_VISIT_BYTES)?;
    // Read straight into the fields the hook knows, borrowing strings from the body, rather
    // than into a `Value` first: this is the agent's busiest path.
    let fields: Fields<'_> = serde_json::from_slice(&body).map_err(not_json)?;
    let visit = validate(fields, &app.window(Timestamp::now()))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let reply = app.hook(vec![visit]).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(CONTENT_TYPE, "application/json")],
        reply[0].as_json(),
    ))
}

async fn batch(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BatchReply>), ApiError> {
    let body = checked_body(&headers, body, MAX_BATCH_BYTES)?;
    let Batch(items) = serde_json::from_slice(&body).map_err(not_json)?;
    let Some(items) = items else {
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
    let window = app.window(Timestamp::now());
    let count = items.len();
    let mut visits = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match validate(item, &window) {
            Ok(v) => visits.push(v),
            Err(e) => errors.push(format!("visit {i}: {e}")),
        }
    }
    if !errors.is_empty() {
        let message = format!(
            "{} of {count} visits are invalid; none was stored",
            errors.len(),
        );
        return Err(ApiError::with_details(
            StatusCode::BAD_REQUEST,
            message,
            errors,
        ));
    }
    let results = app.hook(visits).await?;
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
    /// Tracks validated visits, all or none, and says whether each address is banned.
    async fn hook(&self, visits: Vec<Visit>) -> Result<Vec<HookReply>, ApiError> {
        let banned: Vec<bool> = visits
            .iter()
            .map(|v| self.tables.banned(v.ip).is_some())
            .collect();
        let tracked = self.tracker.track(visits).await.map_err(refused)?;
        Ok(tracked
            .into_iter()
            .zip(banned)
            .map(|(tracked, banned)| HookReply { tracked, banned })
            .collect())
    }

    /// The times a visit's `at` may fall between, as of `now`.
    fn window(&self, now: Timestamp) -> Window {
        Window {
            now,
            oldest: self.tracker.oldest_visit(now),
        }
    }
}

/// The answer when the backlog cannot take visits: come back in a second.
fn refused(why: Refused) -> ApiError {
    let message = match why {
        Refused::Full => "the agent holds as many visits as it may until the store takes them; retry",
        Refused::Behind => "the store is behind with visits; retry",
        Refused::Closed => "the agent is stopping; retry",
        Refused::Rejected => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store refused the visit; see the agent's log",
            );
        }
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(1)
}

/// The times a visit's `at` may fall between: the clean-up window back (older records would
/// be deleted at once) and a few minutes ahead (clock skew).
struct Window {
    now: Timestamp,
    oldest: Timestamp,
}

/// A batch: a JSON array of visits read as their fields, or `None` when the body is not an
/// array.
struct Batch<'a>(Option<Vec<Fields<'a>>>);

impl<'de> Deserialize<'de> for Batch<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = Batch<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON array of visits")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Fields<'de>>()? {
                    // Past the limit the rest is only skipped; the batch is refused anyway.
                    if items.len() <= MAX_BATCH {
                        items.push(item);
                    }
                }
                Ok(Batch(Some(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Batch<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Batch(None))
            }
            fn visit_unit<E>(self) -> Result<Batch<'de>, E> {
                Ok(Batch(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Batch<'de>, E> {
                Ok(Batch(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Batch<'de>, E> {
                Ok(Batch(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Batch<'de>, E> {
                Ok(Batch(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Batch<'de>, E> {
                Ok(Batch(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Batch<'de>, E> {
                Ok(Batch(None))
            }
        }
        d.deserialize_any(BatchVisitor)
    }
}

/// The body, if it is declared JSON and is not too large.
fn checked_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
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
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} KiB", limit / 1024),
            )
        } else {
            ApiError::new(r.status(), r.body_text())
        }
    })
}

fn not_json(e: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("the body is not valid JSON: {e}"),
    )
}

/// A JSON value as validation sees it: strings and numbers, and the kind of anything else.
#[derive(Debug)]
enum Field<'a> {
    Null,
    /// Borrowed from the body unless it had escapes.
    Str(Cow<'a, str>),
    Number(Number),
    /// Neither: its kind, for the error.
    Other(&'static str),
}

/// Reads any JSON value as a [`Field`], skipping over arrays and objects.
struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other("a boolean"))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Field<'de>, E> {
        Ok(Field::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Field<'de>, E> {
        Ok(Field::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Field<'de>, E> {
        // As `Value` does: a number that is not finite is null.
        Ok(Number::from_f64(n).map_or(Field::Null, Field::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other("an object"))
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

/// The fields of a visit the hook knows; `None` when absent. `object` is false when the visit
/// was not a JSON object at all.
#[derive(Debug, Default)]
struct Fields<'a> {
    object: bool,
    ip: Option<Field<'a>>,
    session_key: Option<Field<'a>>,
    user_agent: Option<Field<'a>>,
    user: Option<Field<'a>>,
    referrer: Option<Field<'a>>,
    url: Option<Field<'a>>,
    at: Option<Field<'a>>,
}

impl<'a> Fields<'a> {
    /// The slot of a known field; `None` for the others, which are ignored.
    fn slot(&mut self, name: &str) -> Option<&mut Option<Field<'a>>> {
        Some(match name {
            "ip" => &mut self.ip,
            "session_key" => &mut self.session_key,
            "user_agent" => &mut self.user_agent,
            "user" => &mut self.user,
            "referrer" => &mut self.referrer,
            "url" => &mut self.url,
            "at" => &mut self.at,
            _ => return None,
        })
    }
}

/// A field name, borrowed when it can be.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields {
                    object: true,
                    ..Fields::default()
                };
                // A field given twice is refused: which one counts is anyone's guess.
                while let Some(Name(name)) = map.next_key()? {
                    match fields.slot(&name) {
                        Some(slot) if slot.is_some() => {
                            return Err(serde::de::Error::custom(format!(
                                "`{name}` is given twice"
                            )));
                        }
                        Some(slot) => *slot = Some(map.next_value()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Fields<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Fields::default())
            }
            fn visit_unit<E>(self) -> Result<Fields<'de>, E> {
                Ok(Fields::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Fields<'de>, E> {
                Ok(Fields::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Fields<'de>, E> {
                Ok(Fields::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Fields<'de>, E> {
                Ok(Fields::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Fields<'de>, E> {
                Ok(Fields::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Fields<'de>, E> {
                Ok(Fields::default())
            }
        }
        d.deserialize_any(FieldsVisitor)
    }
}

/// Reads and validates one visit from its JSON text as `POST /v1/visits` does, as of `now`,
/// taking times back to `oldest`: for benchmarks and tools that build visits.
pub fn parse_visit(text: &[u8], now: Timestamp, oldest: Timestamp) -> Result<Visit, String> {
    let fields = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    validate(fields, &Window { now, oldest })
}

/// Validates one visit. Unknown fields are ignored; known ones must have the right type.
fn validate(fields: Fields<'_>, window: &Window) -> Result<Visit, String> {
    let now = window.now;
    if !fields.object {
        return Err("a visit must be a JSON object".into());
    }
    let ip = match &fields.ip {
        None | Some(Field::Null) => return Err("`ip` is missing".into()),
        Some(Field::Str(s)) => s
            .trim()
            .parse::<IpAddr>()
            .map(|ip| ip.to_canonical())
            .map_err(|_| format!("`ip`: `{s}` is not an IPv4 or IPv6 address"))?,
        Some(other) => return Err(format!("`ip` must be a string, not {}", kind_of(other))),
    };
    let url = match text(fields.url, "url", 4096)? {
        None => "/".to_string(),
        Some(mut u) if u.starts_with('/') => {
            // Pages are counted by path: the query and fragment are not part of it.
            let end = u.find(['?', '#']).unwrap_or(u.len());
            u.truncate(end);
            u
        }
        Some(u) => {
            return Err(format!(
                "`url` must be a path starting with `/`, not `{}`",
                shorten(&u)
            ));
        }
    };
    let at = match &fields.at {
        None | Some(Field::Null) => now,
        Some(Field::Str(s)) => {
            let at = Timestamp::parse(s).map_err(|e| format!("`at`: {e}"))?;
            if at.as_millis() > now.as_millis().saturating_add(MAX_SKEW_MS) {
                return Err(format!("`at` ({at}) is more than 5 minutes in the future"));
            }
            if at < window.oldest {
                return Err(format!(
                    "`at` ({at}) is older than the clean-up timeout: a record of it would be \
                     deleted at once"
                ));
            }
            at
        }
        Some(other) => return Err(format!("`at` must be a string, not {}", kind_of(other))),
    };
    let user = match &fields.user {
        None | Some(Field::Null) => None,
        Some(Field::Str(s)) if s.trim().is_empty() => None,
        Some(Field::Str(s)) if s.len() > 256 => {
            return Err("`user` is longer than 256 characters".into());
        }
        Some(Field::Str(s)) if s.trim().chars().any(char::is_control) => {
            return Err("`user` contains a control character".into());
        }
        Some(Field::Str(s)) => Some(s.trim().to_string()),
        Some(Field::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                "`user` must be a string or a number, not {}",
                kind_of(other)
            ));
        }
    };
    Ok(Visit {
        ip,
        session_key: text(fields.session_key, "session_key", 256)?.filter(|s| !s.is_empty()),
        user_agent: text(fields.user_agent, "user_agent", 2048)?.unwrap_or_default(),
        user,
        referrer: text(fields.referrer, "referrer", 4096)?.filter(|s| !s.is_empty()),
        url,
        at,
    })
}

/// An optional string field of at most `max` bytes.
fn text(value: Option<Field<'_>>, field: &str, max: usize) -> Result<Option<String>, String> {
    match value {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Str(s)) if s.len() > max => {
            Err(format!("`{field}` is longer than {max} bytes"))
        }
        // No header or path holds control characters, and PostgreSQL text refuses NUL.
        Some(Field::Str(s)) if s.chars().any(char::is_control) => {
            Err(format!("`{field}` contains a control character"))
        }
        Some(Field::Str(s)) => Ok(Some(s.into_owned())),
        Some(other) => Err(format!(
            "`{field}` must be a string, not {}",
            kind_of(&other)
        )),
    }
}

fn kind_of(f: &Field<'_>) -> &'static str {
    match f {
        Field::Null => "null",
        Field::Str(_) => "a string",
        Field::Number(_) => "a number",
        Field::Other(kind) => kind,
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

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn window() -> Window {
        Window {
            now: NOW,
            oldest: Timestamp::from_millis(NOW.as_millis() - 86_400_000),
        }
    }

    /// Reads a visit from its text, as the hook does.
    fn parse(v: Value) -> Result<Visit, String> {
        let text = serde_json::to_vec(&v).unwrap();
        let fields = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        validate(fields, &window())
    }

    #[test]
    fn escaped_fields_are_read_and_a_repeated_one_is_refused() {
        let text = br#"{"ip":"192.0.2.1","url":"/a\u0062","x":{"y":[1,{"z":null}]},"user":1.5}"#;
        let visit = validate(serde_json::from_slice(text).unwrap(), &window()).unwrap();
        assert_eq!(
            (visit.url.as_str(), visit.user.as_deref()),
            ("/ab", Some("1.5"))
        );
        let text = br#"{"ip":"192.0.2.1","user_agent":"a\"b\u00e9"}"#;
        let visit = validate(serde_json::from_slice(text).unwrap(), &window()).unwrap();
        assert_eq!(visit.user_agent, "a\"b\u{e9}");
        for not_an_object in [&b"[1,2]"[..], b"null", b"\"x\"", b"3", b"true"] {
            let fields: Fields<'_> = serde_json::from_slice(not_an_object).unwrap();
            assert_eq!(
                validate(fields, &window()).unwrap_err(),
                "a visit must be a JSON object"
            );
        }
        let twice = br#"{"ip":"192.0.2.1","url":"/a","url":"/b"}"#;
        let err = serde_json::from_slice::<Fields<'_>>(twice).unwrap_err().to_string();
        assert!(err.contains("`url` is given twice"), "{err}");
        // Unknown fields may repeat: they are not read.
        let extra = br#"{"ip":"192.0.2.1","x":1,"x":2}"#;
        assert!(serde_json::from_slice::<Fields<'_>>(extra).is_ok());
    }

    #[test]
    fn a_time_with_any_offset_is_taken_and_one_outside_the_window_is_refused() {
        let at = |s: &str| parse(json!({"ip": "192.0.2.1", "at": s}));
        let utc = at("2027-01-15T08:00:00Z").unwrap().at;
        assert_eq!(at("2027-01-15T10:00:00+02:00").unwrap().at, utc);
        assert_eq!(at("2027-01-15T03:30:00-04:30").unwrap().at, utc);
        let err = at("1970-01-01T00:00:00Z").unwrap_err();
        assert!(err.contains("older than the clean-up timeout"), "{err}");
    }

    #[test]
    fn the_answer_is_the_json_of_the_reply() {
        for tracked in [false, true] {
            for banned in [false, true] {
                let reply = HookReply { tracked, banned };
                assert_eq!(reply.as_json(), serde_json::to_string(&reply).unwrap());
            }
        }
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
