//! Copying committed pages from the WAL into the database file, on a thread and a connection of
//! its own.
//!
//! SQLite would do it itself inside whichever commit grows the WAL past its threshold, and then
//! that request pays for it: a third of a second for a sync that changed records all over a
//! large table. Done by the worker whenever it is idle, the next request waits for it instead:
//! a re-sync sent right after a first load waited half a second. On another connection, a
//! PASSIVE checkpoint runs beside the worker's transactions (neither blocks the other), so
//! nobody waits. `open` raises SQLite's own threshold so that it only applies if this thread
//! never gets to run.

use std::{
    sync::mpsc::{self, Receiver, Sender},
    thread::JoinHandle,
};

use rusqlite::Connection;

use crate::store::Result;

/// Asks the checkpoint thread for a checkpoint; dropping it stops the thread.
pub(super) struct Checkpoints {
    requests: Sender<()>,
}

impl Checkpoints {
    /// Starts the thread, which checkpoints on `conn` when asked.
    pub(super) fn start(conn: Connection) -> Result<(Checkpoints, JoinHandle<()>)> {
        let (requests, asked) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tracking-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &asked))
            .map_err(super::SqliteError::Thread)?;
        Ok((Checkpoints { requests }, thread))
    }

    /// Asks for a checkpoint soon; requests made while one runs make one more, not one each.
    pub(super) fn request(&self) {
        // The thread only stops once this handle is gone.
        let _ = self.requests.send(());
    }
}

fn run(conn: &Connection, asked: &Receiver<()>) {
    while asked.recv().is_ok() {
        while asked.try_recv().is_ok() {}
        // PASSIVE never waits for the writer or for readers; what they still use is copied next
        // time. With nothing new in the WAL this is a few reads of shared memory.
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "SQLite checkpoint failed");
        }
    }
}
