//! Reading ban records a few at a time: those of some networks of one source (what a change
//! just wrote), and pages of those matching a query, in key order.
//!
//! Both go straight to the table's primary key rather than to the in-memory index, which holds
//! what the kernel needs (networks and expiries) but not reasons or creation times.

use rusqlite::{Connection, Row, ToSql, params_from_iter};

use super::key;
use crate::{
    ban::{self, Ban},
    store::{BanPage, BanQuery, Result},
    time::Timestamp,
};

const COLUMNS: &str = "network, source, reason, created_ms, expires_ms";

fn ban_of(row: &Row<'_>) -> Result<Ban> {
    Ok(Ban {
        network: key::column(row, 0)?,
        source: row.get(1)?,
        reason: row.get(2)?,
        created: Timestamp::from_millis(row.get(3)?),
        expires: row.get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
    })
}

/// The records of `networks` of `source`, in network order.
pub(super) fn bans_of(
    conn: &Connection,
    networks: Vec<ipnet::IpNet>,
    source: &str,
) -> Result<Vec<Ban>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM bans WHERE network = ?1 AND source = ?2"
    ))?;
    let mut bans = Vec::new();
    for network in ban::distinct_networks(networks) {
        let mut rows = stmt.query(rusqlite::params![&key::encode(&network)[..], source])?;
        if let Some(row) = rows.next()? {
            bans.push(ban_of(row)?);
        }
    }
    Ok(bans)
}

/// The `WHERE` clause of a query and its parameters, without the cursor.
struct Filter {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql>>,
}

impl Filter {
    fn of(query: &BanQuery) -> Filter {
        let mut filter = Filter {
            clauses: Vec::new(),
            params: Vec::new(),
        };
        if let Some(source) = &query.source {
            filter.push("source = ?", source.clone());
        }
        if let Some(ip) = query.contains {
            // The networks that contain an address are its prefixes: at most 33 or 129 keys,
            // each found through the primary key.
            let keys: Vec<Vec<u8>> = (0..=ipnet::IpNet::from(ip).max_prefix_len())
                .map(|len| {
                    let net = ipnet::IpNet::new(ip, len).expect("a length within the family's");
                    key::encode(&net.trunc()).to_vec()
                })
                .collect();
            let marks = vec!["?"; keys.len()].join(", ");
            filter.clauses.push(format!("network IN ({marks})"));
            for k in keys {
                filter.params.push(Box::new(k));
            }
        }
        if let Some(text) = &query.text {
            // LIKE is case-insensitive for ASCII in SQLite; the wildcards of the text are
            // escaped so that it matches literally.
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            filter.push("reason LIKE ? ESCAPE '\\'", format!("%{escaped}%"));
        }
        filter
    }

    fn push(&mut self, clause: &str, param: impl ToSql + 'static) {
        self.clauses.push(clause.to_owned());
        self.params.push(Box::new(param));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// A page of the records matching `query`, after its cursor, and how many match in all.
pub(super) fn query(conn: &Connection, query: BanQuery) -> Result<BanPage> {
    let filter = Filter::of(&query);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM bans {}", filter.sql()))?
        .query_row(params_from_iter(filter.params.iter()), |row| row.get(0))?;

    let mut paged = Filter::of(&query);
    if let Some((network, source)) = &query.after {
        paged.clauses.push("(network, source) > (?, ?)".into());
        paged.params.push(Box::new(key::encode(network).to_vec()));
        paged.params.push(Box::new(source.clone()));
    }
    paged.params.push(Box::new(query.limit as i64));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM bans {} ORDER BY network, source LIMIT ?",
        paged.sql()
    ))?;
    let mut rows = stmt.query(params_from_iter(paged.params.iter()))?;
    let mut bans = Vec::new();
    while let Some(row) = rows.next()? {
        bans.push(ban_of(row)?);
    }
    Ok(BanPage {
        bans,
        total: total as u64,
    })
}
