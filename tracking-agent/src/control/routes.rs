//! The admin API: bans, allowlist, user-agent rules, visitors, the live feed, the map, status
//! and stats. Each handler parses its input, calls the engine or the tracker, and answers JSON.

use std::{convert::Infallible, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State, rejection::JsonRejection, rejection::QueryRejection},
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use super::{ApiError, App};
use crate::{
    active::PageCount,
    api::{
        AddAllows, AddAllowsReply, AddBans, AddBansReply, AddUaRules, AllowView, BanList,
        BanListQuery, FleetHost, ImportUaReply, ImportUaRules, RemoveAllows, RemoveAllowsReply,
        RemoveBans, RemoveBansReply, RemoveUaReply, RemoveUaRules, StatsView, StatusView,
        SyncQuery, SyncReply, VisitorView,
    },
    geoip::{Attribution, Location},
    time::Timestamp,
    visit::UaRule,
};

/// The largest block list `POST /v1/bans/sync` takes: room for several million lines.
const MAX_LIST_BYTES: usize = 256 << 20;

pub(super) fn admin() -> Router<App> {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/stats", get(stats))
        .route("/v1/fleet", get(fleet))
        .route("/v1/bans", get(list_bans).post(add_bans))
        .route("/v1/bans/remove", post(remove_bans))
        .route(
            "/v1/bans/sync",
            post(sync_bans).layer(axum::extract::DefaultBodyLimit::max(MAX_LIST_BYTES)),
        )
        .route("/v1/allow", get(list_allows).post(add_allows))
        .route("/v1/allow/remove", post(remove_allows))
        .route("/v1/ua", get(list_ua).post(add_ua))
        .route("/v1/ua/remove", post(remove_ua))
        .route("/v1/ua/import", post(import_ua))
        .route("/v1/visitors", get(visitors))
        .route("/v1/active/pages", get(busiest_pages))
        .route("/v1/feed", get(feed))
        // Timed like `GET /v1/active`: the active-counts benchmark measures the map's lookups.
        .route(
            "/v1/map",
            get(map).layer(axum::middleware::from_fn(super::hook::server_timing)),
        )
}

type Reply<T> = Result<Json<T>, ApiError>;

async fn status(State(app): State<App>) -> Json<StatusView> {
    Json(status_view(&app))
}

/// The engine's status with the integrations' parts.
pub(crate) fn status_view(app: &App) -> StatusView {
    let mut status = app.engine.status();
    status.crowdsec = app.crowdsec.as_ref().map(|c| c.view());
    status
}

async fn stats(State(app): State<App>) -> Reply<StatsView> {
    Ok(Json(stats_view(&app).await?))
}

/// What `GET /v1/stats` answers (also read by `GET /metrics`).
pub(crate) async fn stats_view(app: &App) -> Result<StatsView, ApiError> {
    let mut stats = app.engine.stats()?;
    let t = &app.tracker.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let backlog = &app.tracker.backlog;
    let (queued, oldest) = backlog.depth();
    stats.visits = Some(crate::api::VisitStats {
        tracked: load(&t.tracked),
        untracked: load(&t.untracked),
        stored: load(&backlog.stats.stored),
        lost: load(&backlog.stats.rejected) + load(&t.lost_at_stop),
        refused: load(&backlog.stats.refused),
        queued: queued as u64,
        oldest_queued_ms: oldest.as_millis() as u64,
        store_retries: load(&backlog.stats.retries),
        store_answers: backlog.store_answers(),
        page_views_total: app.tracker.page_views_total().await.ok(),
        active: app.tracker.counts(None),
    });
    stats.geoip = app.geoip.as_ref().map(|g| g.stats()).unwrap_or_default();
    Ok(stats)
}

async fn list_bans(
    State(app): State<App>,
    query: Result<Query<BanListQuery>, QueryRejection>,
) -> Reply<BanList> {
    let Query(query) = query?;
    Ok(Json(app.engine.list_bans(query).await?))
}

/// Every agent sharing this store; empty without a fleet.
async fn fleet(State(app): State<App>) -> Reply<Vec<FleetHost>> {
    Ok(Json(app.engine.fleet().await?))
}

async fn add_bans(
    State(app): State<App>,
    body: Result<Json<AddBans>, JsonRejection>,
) -> Reply<AddBansReply> {
    let Json(req) = body?;
    Ok(Json(app.engine.add_bans(req).await?))
}

async fn remove_bans(
    State(app): State<App>,
    body: Result<Json<RemoveBans>, JsonRejection>,
) -> Reply<RemoveBansReply> {
    let Json(req) = body?;
    Ok(Json(app.engine.remove_bans(req).await?))
}

async fn sync_bans(
    State(app): State<App>,
    query: Result<Query<SyncQuery>, QueryRejection>,
    body: axum::body::Bytes,
) -> Reply<SyncReply> {
    let Query(q) = query?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the list is not UTF-8 text: {e}"),
        )
    })?;
    Ok(Json(app.engine.sync(&q.source, q.force, text).await?))
}

async fn list_allows(State(app): State<App>) -> Reply<Vec<AllowView>> {
    Ok(Json(app.engine.list_allows().await?))
}

async fn add_allows(
    State(app): State<App>,
    body: Result<Json<AddAllows>, JsonRejection>,
) -> Reply<AddAllowsReply> {
    let Json(req) = body?;
    Ok(Json(app.engine.add_allows(req).await?))
}

async fn remove_allows(
    State(app): State<App>,
    body: Result<Json<RemoveAllows>, JsonRejection>,
) -> Reply<RemoveAllowsReply> {
    let Json(req) = body?;
    Ok(Json(app.engine.remove_allows(req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UaFilter {
    source: Option<String>,
}

async fn list_ua(
    State(app): State<App>,
    query: Result<Query<UaFilter>, QueryRejection>,
) -> Reply<Vec<UaRule>> {
    let Query(filter) = query?;
    let mut rules = app.tracker.ua_rules().await?;
    if let Some(source) = filter.source {
        rules.retain(|r| r.source == source);
    }
    Ok(Json(rules))
}

/// `POST /v1/ua/import`: the bot list, as rules of source `bots`, all or nothing.
async fn import_ua(
    State(app): State<App>,
    body: Result<Json<ImportUaRules>, JsonRejection>,
) -> Reply<ImportUaReply> {
    let Json(req) = body?;
    if req.list != crate::bots::SOURCE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not a list the agent carries (there is: bots)",
                req.list
            ),
        ));
    }
    let source = crate::bots::SOURCE;
    let existing = app.tracker.ua_rules().await?;
    let before = existing.iter().filter(|r| r.source == source).count();
    let others: std::collections::HashSet<String> = existing
        .iter()
        .filter(|r| r.source != source)
        .map(|r| r.keyword.to_lowercase())
        .collect();
    let now = Timestamp::now();
    let note = format!("bot list: {}", crate::bots::LIST);
    let rules: Vec<UaRule> = crate::bots::keywords()
        .map(|k| UaRule {
            keyword: k.to_string(),
            note: note.clone(),
            created: now,
            source: source.to_string(),
        })
        .collect();
    let kept = rules.iter().filter(|r| others.contains(&r.keyword)).count();
    app.tracker.add_ua_rules(rules).await?;
    let after = app
        .tracker
        .ua_rules()
        .await?
        .iter()
        .filter(|r| r.source == source)
        .count();
    Ok(Json(ImportUaReply {
        source: source.to_string(),
        list: crate::bots::LIST.to_string(),
        before,
        after,
        kept,
    }))
}

/// Keywords as given, trimmed; every one must have some text.
fn keywords(items: Vec<String>) -> Result<Vec<String>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "no keyword given"));
    }
    let mut out = Vec::with_capacity(items.len());
    for k in items {
        let k = k.trim().to_string();
        if k.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "an empty keyword would match every user agent",
            ));
        }
        if k.len() > 256 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the keyword `{}...` is longer than 256 bytes",
                    k.chars().take(32).collect::<String>()
                ),
            ));
        }
        out.push(k);
    }
    Ok(out)
}

async fn add_ua(
    State(app): State<App>,
    body: Result<Json<AddUaRules>, JsonRejection>,
) -> Reply<Vec<UaRule>> {
    let Json(req) = body?;
    let keywords = keywords(req.keywords)?;
    let now = Timestamp::now();
    let rules = keywords
        .iter()
        .map(|k| UaRule {
            keyword: k.clone(),
            note: req.note.clone(),
            created: now,
            source: crate::visit::UA_SOURCE_CLI.to_string(),
        })
        .collect();
    app.tracker.add_ua_rules(rules).await?;
    let wanted: Vec<String> = keywords.iter().map(|k| k.to_lowercase()).collect();
    let all = app.tracker.ua_rules().await?;
    Ok(Json(
        all.into_iter()
            .filter(|r| wanted.contains(&r.keyword.to_lowercase()))
            .collect(),
    ))
}

async fn remove_ua(
    State(app): State<App>,
    body: Result<Json<RemoveUaRules>, JsonRejection>,
) -> Reply<RemoveUaReply> {
    let Json(req) = body?;
    let given = match (&req.source, req.keywords.is_empty()) {
        // Every rule of the source.
        (Some(_), true) => None,
        _ => Some(keywords(req.keywords)?),
    };
    let to_remove = match &req.source {
        None => given.clone().unwrap_or_default(),
        // Of the keywords given, only those that are rules of the source.
        Some(source) => {
            let wanted: Option<std::collections::HashSet<String>> = given
                .as_ref()
                .map(|ks| ks.iter().map(|k| k.to_lowercase()).collect());
            app.tracker
                .ua_rules()
                .await?
                .into_iter()
                .filter(|r| &r.source == source)
                .filter(|r| {
                    wanted
                        .as_ref()
                        .is_none_or(|w| w.contains(&r.keyword.to_lowercase()))
                })
                .map(|r| r.keyword)
                .collect()
        }
    };
    let removed = if to_remove.is_empty() {
        Vec::new()
    } else {
        app.tracker.remove_ua_rules(to_remove).await?
    };
    let gone: std::collections::HashSet<String> =
        removed.iter().map(|r| r.keyword.to_lowercase()).collect();
    let not_found = given
        .unwrap_or_default()
        .into_iter()
        .filter(|k| !gone.contains(&k.to_lowercase()))
        .collect();
    Ok(Json(RemoveUaReply { removed, not_found }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisitorQuery {
    #[serde(default)]
    active: bool,
    limit: Option<usize>,
}

async fn visitors(
    State(app): State<App>,
    query: Result<Query<VisitorQuery>, QueryRejection>,
) -> Reply<Vec<VisitorView>> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 10000",
        ));
    }
    if q.active {
        app.tracker.counts(None);
        Ok(Json(app.tracker.active_visitors(limit)))
    } else {
        Ok(Json(app.tracker.visitors(limit).await?))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PagesQuery {
    limit: Option<usize>,
}

async fn busiest_pages(
    State(app): State<App>,
    query: Result<Query<PagesQuery>, QueryRejection>,
) -> Reply<Vec<PageCount>> {
    let Query(q) = query?;
    app.tracker.counts(None);
    Ok(Json(
        app.tracker.busiest_pages(q.limit.unwrap_or(20).min(1000)),
    ))
}

/// The live feed as server-sent events: `visit` and `left`, and a keep-alive comment every 15 s.
async fn feed(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use futures_util::StreamExt as _;
    let rx = app.tracker.subscribe();
    let mut stopping = app.stopping.clone();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let (name, data) = match &*event {
                        crate::tracker::FeedEvent::Visit { visitor, active } => (
                            "visit",
                            serde_json::json!({ "visitor": visitor, "active": active }),
                        ),
                        crate::tracker::FeedEvent::Left { key, active } => {
                            ("left", serde_json::json!({ "key": key, "active": active }))
                        }
                    };
                    return Some((Ok(Event::default().event(name).data(data.to_string())), rx));
                }
                // A slow reader missed events; the next one it gets carries current counts.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = stream.take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}

/// An active visitor placed on the map.
#[derive(Debug, Serialize, Deserialize)]
pub struct MapVisitor {
    pub key: String,
    pub ip: std::net::IpAddr,
    pub user: Option<String>,
    pub last_page: String,
    pub last_update: Timestamp,
    pub location: Option<Location>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MapView {
    /// The GeoIP database in use, or `None` without one.
    pub geoip: Option<String>,
    /// The credit the data's licence asks the map to show (DB-IP's), or `None`.
    #[serde(default)]
    pub attribution: Option<Attribution>,
    pub visitors: Vec<MapVisitor>,
}

async fn map(State(app): State<App>) -> Json<MapView> {
    app.tracker.counts(None);
    let visitors = app
        .tracker
        .active_visitors(10_000)
        .into_iter()
        .map(|v| MapVisitor {
            location: app.geoip.as_ref().and_then(|g| g.locate(v.ip)),
            key: v.key,
            ip: v.ip,
            user: v.user,
            last_page: v.last_page,
            last_update: v.last_update,
        })
        .collect();
    Json(MapView {
        geoip: app.geoip.as_ref().map(|g| g.describe()),
        attribution: app.geoip.as_ref().and_then(|g| g.attribution()),
        visitors,
    })
}
