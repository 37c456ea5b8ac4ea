//! The handlers: each parses its input, calls the engine, and answers JSON.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::JsonRejection},
    routing::{get, post},
};
use serde::Deserialize;

use super::ApiError;
use crate::{
    api::{
        AddAllows, AddAllowsReply, AddBans, AddBansReply, AllowView, BanView, RemoveAllows,
        RemoveAllowsReply, RemoveBans, RemoveBansReply, StatsView, StatusView, SyncQuery,
        SyncReply,
    },
    engine::Engine,
};

/// The largest block list `POST /v1/bans/sync` takes: room for several million lines.
const MAX_LIST_BYTES: usize = 256 << 20;

/// The control routes over `engine`.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/stats", get(stats))
        .route("/v1/bans", get(list_bans).post(add_bans))
        .route("/v1/bans/remove", post(remove_bans))
        .route("/v1/bans/sync", post(sync_bans))
        .route("/v1/allow", get(list_allows).post(add_allows))
        .route("/v1/allow/remove", post(remove_allows))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_LIST_BYTES))
        .with_state(engine)
}

type Reply<T> = Result<Json<T>, ApiError>;

async fn status(State(engine): State<Arc<Engine>>) -> Json<StatusView> {
    Json(engine.status())
}

async fn stats(State(engine): State<Arc<Engine>>) -> Reply<StatsView> {
    Ok(Json(engine.stats()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanFilter {
    source: Option<String>,
}

async fn list_bans(
    State(engine): State<Arc<Engine>>,
    query: Result<Query<BanFilter>, axum::extract::rejection::QueryRejection>,
) -> Reply<Vec<BanView>> {
    let Query(filter) = query?;
    Ok(Json(engine.list_bans(filter.source.as_deref()).await?))
}

async fn add_bans(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<AddBans>, JsonRejection>,
) -> Reply<AddBansReply> {
    let Json(req) = body?;
    Ok(Json(engine.add_bans(req).await?))
}

async fn remove_bans(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<RemoveBans>, JsonRejection>,
) -> Reply<RemoveBansReply> {
    let Json(req) = body?;
    Ok(Json(engine.remove_bans(req).await?))
}

async fn sync_bans(
    State(engine): State<Arc<Engine>>,
    query: Result<Query<SyncQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Reply<SyncReply> {
    let Query(q) = query?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("the list is not UTF-8 text: {e}"),
        )
    })?;
    Ok(Json(engine.sync(&q.source, q.force, text).await?))
}

async fn list_allows(State(engine): State<Arc<Engine>>) -> Reply<Vec<AllowView>> {
    Ok(Json(engine.list_allows().await?))
}

async fn add_allows(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<AddAllows>, JsonRejection>,
) -> Reply<AddAllowsReply> {
    let Json(req) = body?;
    Ok(Json(engine.add_allows(req).await?))
}

async fn remove_allows(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<RemoveAllows>, JsonRejection>,
) -> Reply<RemoveAllowsReply> {
    let Json(req) = body?;
    Ok(Json(engine.remove_allows(req).await?))
}
