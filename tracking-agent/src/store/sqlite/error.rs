//! The SQLite store's own errors: rusqlite's, its files' and its worker threads'.

use super::super::{BackendError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot upgrade the database schema to version {version}: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's worker thread has stopped")]
    Closed,
    #[error("cannot start the store's worker thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the store's worker failed on this request (a bug, see the log)")]
    Aborted,
}

impl BackendError for SqliteError {
    fn is_transient(&self) -> bool {
        match self {
            SqliteError::Sqlite(e) | SqliteError::Open { source: e, .. } => transient(e),
            SqliteError::Closed | SqliteError::Aborted | SqliteError::Thread(_) => true,
            SqliteError::CreateDir { .. } | SqliteError::Migrate { .. } => false,
        }
    }
}

/// SQLite's codes for a disk, a lock or memory that may come back.
fn transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(code) => matches!(
            code,
            DiskFull
                | DatabaseBusy
                | DatabaseLocked
                | SystemIoFailure
                | CannotOpen
                | ReadOnly
                | OutOfMemory
                | FileLockingProtocolFailed
        ),
        None => false,
    }
}

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        SqliteError::Sqlite(error).into()
    }
}
