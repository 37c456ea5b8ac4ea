//! How errors become answers: input problems are 4xx with the problem named; server-side
//! failures are logged and answered with a short message.

use axum::{
    Json,
    extract::rejection::{JsonRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{api::ErrorBody, engine::EngineError};

/// Every error a handler can return.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                details: Vec::new(),
            },
        }
    }

    /// An error with one line per offending item.
    pub fn with_details(
        status: StatusCode,
        error: impl Into<String>,
        details: Vec<String>,
    ) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                details,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadRequest { message, details } => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: ErrorBody {
                    error: message,
                    details,
                },
            },
            EngineError::NeedsForce { message, details } => ApiError {
                status: StatusCode::CONFLICT,
                body: ErrorBody {
                    error: message,
                    details,
                },
            },
            // Actionable by the operator: say it.
            EngineError::Refused(why) => {
                tracing::warn!("{why}");
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, why)
            }
            other => {
                tracing::error!("request failed: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the agent could not complete the request ({other}); see its log"),
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        EngineError::Store(e).into()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
