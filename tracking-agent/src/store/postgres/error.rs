//! PostgreSQL errors as people read them.
//!
//! tokio-postgres shows only the kind of an error (`db error`) and keeps what the server said in
//! its source; the store's errors are often shown as one line (the API's answers, the log), so
//! [`PgError`] shows the whole chain: `db error: ERROR: duplicate key value ...`.

use crate::store::StoreError;

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
        StoreError::Postgres(error.into())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::Postgres(error.into())
    }
}
