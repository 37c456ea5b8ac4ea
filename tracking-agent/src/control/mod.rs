//! The control API: HTTP+JSON on a Unix socket (mode 0600), which the CLI talks to.
//!
//! Routes (bodies in [`crate::api`]):
//! - `GET /v1/status`, `GET /v1/stats`
//! - `GET /v1/bans[?source=S]`, `POST /v1/bans`, `POST /v1/bans/remove`,
//!   `POST /v1/bans/sync?source=S[&force=true]` with the list as a `text/plain` body
//! - `GET /v1/allow`, `POST /v1/allow`, `POST /v1/allow/remove`

mod error;
mod routes;
mod unix;

pub use error::ApiError;
pub use routes::router;
pub use unix::{SocketError, bind};
