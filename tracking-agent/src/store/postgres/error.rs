//! PostgreSQL errors as people read them.
//!
//! tokio-postgres shows only the kind of an error (`db error`) and keeps what the server said in
//! its source; the store's errors are often shown as one line (the API's answers, the log), so
//! [`PgError`] shows the whole chain: `db error: ERROR: duplicate key value ...`.
//! [`PgStoreError`] is the PostgreSQL store's own error, what the store's callers see inside a
//! [`StoreError`].

use super::tls::TlsError;
use crate::store::{BackendError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    #[error("{url} is not a PostgreSQL URL: {source}")]
    Url {
        url: String,
        #[source]
        source: PgError,
    },
    #[error("{url}: {source}")]
    Tls {
        url: String,
        #[source]
        source: TlsError,
    },
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: PgError,
    },
    #[error("cannot upgrade the PostgreSQL schema to version {version}: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: PgError,
    },
    #[error("PostgreSQL: {0}")]
    Driver(#[source] PgError),
    #[error("the task that listens for the fleet's changes stopped")]
    ListenerStopped,
}

impl BackendError for PgStoreError {
    fn is_transient(&self) -> bool {
        match self {
            PgStoreError::Driver(e) | PgStoreError::Connect { source: e, .. } => {
                match e.db_error() {
                    // The server answered: only its resource and availability classes pass.
                    Some(db) => {
                        let class = &db.code().code()[..2];
                        // 08 connection, 53 insufficient resources, 57 operator intervention
                        // (shutdown), 58 system error, 40 serialization/deadlock.
                        matches!(class, "08" | "53" | "57" | "58" | "40")
                    }
                    // No answer from the server: a lost connection, a pool timeout.
                    None => true,
                }
            }
            PgStoreError::Url { .. }
            | PgStoreError::Tls { .. }
            | PgStoreError::Migrate { .. }
            | PgStoreError::ListenerStopped => false,
        }
    }
}

impl From<PgStoreError> for StoreError {
    fn from(error: PgStoreError) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

/// A driver or pool error, shown with its causes.
#[derive(Debug)]
pub enum PgError {
    Driver(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
}

impl PgError {
    /// What the server said, if the error came from it: its SQLSTATE code among other things.
    pub fn db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            PgError::Driver(error)
            | PgError::Pool(deadpool_postgres::PoolError::Backend(error)) => error.as_db_error(),
            PgError::Pool(_) => None,
        }
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let error: &dyn std::error::Error = match self {
            PgError::Driver(error)
            | PgError::Pool(deadpool_postgres::PoolError::Backend(error)) => error,
            PgError::Pool(error) => error,
        };
        write!(f, "{error}")?;
        let mut source = error.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The whole chain is in the message already.
impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(error: tokio_postgres::Error) -> Self {
        PgError::Driver(error)
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(error)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        PgStoreError::Driver(error.into()).into()
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        PgStoreError::Driver(error.into()).into()
    }
}
