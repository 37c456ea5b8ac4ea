//! What each agent of the fleet says of itself (`fleet_hosts`): one row per running agent,
//! rewritten every heartbeat; `tracking fleet` reads them all.

use deadpool_postgres::Object;
use tokio_postgres::Row;

use crate::{
    store::{HostReport, Result},
    time::Timestamp,
};

/// How long a host that stopped reporting stays listed.
const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

pub(super) async fn report(client: &Object, r: &HostReport) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO fleet_hosts (instance, host, version, interfaces, started_ms,
                 heartbeat_ms, heartbeat_every, applied, bans_held, left_out, capacity_v4,
                 capacity_v6, listening, last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (instance) DO UPDATE SET
                 host = excluded.host, version = excluded.version,
                 interfaces = excluded.interfaces, heartbeat_ms = excluded.heartbeat_ms,
                 heartbeat_every = excluded.heartbeat_every, applied = excluded.applied,
                 bans_held = excluded.bans_held, left_out = excluded.left_out,
                 capacity_v4 = excluded.capacity_v4, capacity_v6 = excluded.capacity_v6,
                 listening = excluded.listening, last_error = excluded.last_error",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &r.instance,
                &r.host,
                &r.version,
                &r.interfaces.join(","),
                &r.started.as_millis(),
                &r.heartbeat.as_millis(),
                &(r.heartbeat_every_ms as i64),
                &r.applied,
                &(r.bans_held as i64),
                &(r.left_out as i64),
                &(r.capacity_v4 as i64),
                &(r.capacity_v6 as i64),
                &r.listening,
                &r.last_error,
            ],
        )
        .await?;
    client
        .execute(
            "DELETE FROM fleet_hosts WHERE heartbeat_ms < $1",
            &[&(r.heartbeat.as_millis() - FORGET_AFTER_MS)],
        )
        .await?;
    Ok(())
}

pub(super) async fn hosts(client: &Object) -> Result<Vec<HostReport>> {
    let rows = client
        .query(
            "SELECT instance, host, version, interfaces, started_ms, heartbeat_ms,
                    heartbeat_every, applied, bans_held, left_out, capacity_v4, capacity_v6,
                    listening, last_error
             FROM fleet_hosts ORDER BY host, started_ms",
            &[],
        )
        .await?;
    Ok(rows.iter().map(host_of).collect())
}

fn host_of(row: &Row) -> HostReport {
    let interfaces: String = row.get(3);
    HostReport {
        instance: row.get(0),
        host: row.get(1),
        version: row.get(2),
        interfaces: interfaces
            .split(',')
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .collect(),
        started: Timestamp::from_millis(row.get(4)),
        heartbeat: Timestamp::from_millis(row.get(5)),
        heartbeat_every_ms: row.get::<_, i64>(6) as u64,
        applied: row.get(7),
        bans_held: row.get::<_, i64>(8) as u64,
        left_out: row.get::<_, i64>(9) as u64,
        capacity_v4: row.get::<_, i64>(10) as u64,
        capacity_v6: row.get::<_, i64>(11) as u64,
        listening: row.get(12),
        last_error: row.get(13),
    }
}
