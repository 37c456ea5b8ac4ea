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
    /// Seconds for `Retry-After`, when the client should come back.
    retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                details: Vec::new(),
            },
            retry_after: None,
        }
    }

    /// Tells the client to come back after `secs` seconds.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A failure of the agent's own: the cause goes to the log, the client learns only that
    /// it failed (internal error text is nobody's business and may hold paths or addresses).
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!("request failed: {cause}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the agent could not complete the request; see its log",
        )
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
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadRequest { message, details } => {
                ApiError::with_details(StatusCode::BAD_REQUEST, message, details)
            }
            EngineError::NeedsForce { message, details } => {
                ApiError::with_details(StatusCode::CONFLICT, message, details)
            }
            // Actionable by the operator: say it.
            EngineError::Refused(why) => {
                tracing::warn!("{why}");
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, why)
            }
            other => ApiError::internal(&other),
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
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// The answer to a handler that panicked: logged with its message, answered as a JSON 500 that
/// says no more.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    ApiError::internal(&format_args!("a handler panicked: {what}")).into_response()
}
