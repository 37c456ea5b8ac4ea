//! What the CLI prints: aligned tables for people, JSON with `--json`.

use std::fmt::Write as _;

use crate::{
    api::{
        AddAllowsReply, AddBansReply, AllowView, BanList, BanView, FleetHost, RemoveAllowsReply,
        RemoveBansReply, RemoveUaReply, StatsView, StatusView, SyncReply, UaRule, VisitorView,
    },
    time::format_duration,
};

pub fn json<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("serialisable");
    s.push('\n');
    s
}

/// Rows of cells, padded to the widest cell of each column, two spaces apart, no borders, no
/// wrapping: what `ls` and `ps` print, and what `awk` and `cut` read. Written here rather than
/// with comfy-table or tabled, whose tables are for people at a terminal (borders, wrapping to
/// its width) and would need every one of those turned off to print this.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<width$}", width = widths[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn expires_in(b: &BanView) -> String {
    match b.expires_in_secs {
        None => "never".into(),
        Some(0) => "expired".into(),
        Some(s) => format_duration(std::time::Duration::from_secs(s)),
    }
}

pub fn ban_table(bans: &[BanView]) -> String {
    if bans.is_empty() {
        return "no bans\n".into();
    }
    let rows = bans
        .iter()
        .map(|b| {
            vec![
                b.network.clone(),
                b.source.clone(),
                b.hits.to_string(),
                expires_in(b),
                if b.enforced {
                    "yes".into()
                } else {
                    "no".into()
                },
                b.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NETWORK",
            "SOURCE",
            "HITS",
            "EXPIRES IN",
            "ENFORCED",
            "REASON",
        ],
        rows,
    )
}

/// A page (or all pages) of bans, with how many match and where the next page starts.
pub fn ban_list(list: &BanList) -> String {
    if list.bans.is_empty() {
        return if list.total == 0 {
            "no bans\n".into()
        } else {
            format!("no more bans ({} in all)\n", list.total)
        };
    }
    let mut out = ban_table(&list.bans);
    let _ = writeln!(out, "{} of {} bans", list.bans.len(), list.total);
    if let Some(next) = &list.next {
        let _ = writeln!(out, "more: --after {next}");
    }
    out
}

/// The fleet, one line a host, the problems spelled out.
pub fn fleet(hosts: &[FleetHost]) -> String {
    if hosts.is_empty() {
        return "no fleet: no agent has reported to this store (a fleet shares a PostgreSQL store)\n"
            .into();
    }
    let rows = hosts
        .iter()
        .map(|h| {
            let mut state = Vec::new();
            if h.silent {
                state.push("silent".to_string());
            }
            if h.lagging {
                state.push(if h.listening {
                    format!("lagging {}", h.lag)
                } else {
                    "deaf".to_string()
                });
            }
            if h.full {
                state.push(format!("full ({} not enforced)", h.left_out));
            }
            if let Some(e) = &h.last_error {
                state.push(format!("error: {e}"));
            }
            if state.is_empty() {
                state.push("ok".into());
            }
            vec![
                format!("{}{}", h.host, if h.this { " *" } else { "" }),
                h.interfaces.join(","),
                h.version.clone(),
                format!(
                    "{} ago",
                    format_duration(std::time::Duration::from_secs(h.heartbeat_age_secs))
                ),
                h.applied.to_string(),
                h.lag.to_string(),
                format!("{} / {}", h.bans_enforced, h.capacity_v4 + h.capacity_v6),
                state.join(", "),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "INTERFACES",
            "VERSION",
            "HEARTBEAT",
            "APPLIED",
            "LAG",
            "ENFORCED",
            "STATE",
        ],
        rows,
    )
}

fn warnings(out: &mut String, warnings: &[String]) {
    for w in warnings {
        let _ = writeln!(out, "warning: {w}");
    }
}

pub fn added_bans(reply: &AddBansReply) -> String {
    let mut out = String::new();
    warnings(&mut out, &reply.warnings);
    for b in &reply.bans {
        let until = b.expires.map(|e| format!(" until {e}")).unwrap_or_default();
        let _ = writeln!(out, "banned {} ({}){until}", b.network, b.source);
    }
    out
}

pub fn removed_bans(reply: &RemoveBansReply) -> String {
    let mut out = String::new();
    for b in &reply.removed {
        let _ = writeln!(out, "unbanned {} ({})", b.network, b.source);
    }
    for n in &reply.not_found {
        let _ = writeln!(out, "warning: {n} was not banned");
    }
    out
}

pub fn synced(reply: &SyncReply) -> String {
    let mut out = String::new();
    warnings(&mut out, &reply.warnings);
    let _ = writeln!(
        out,
        "synced {}: {} added, {} updated, {} removed, {} unchanged{} in {} ms",
        reply.source,
        reply.added,
        reply.updated,
        reply.removed,
        reply.unchanged,
        if reply.duplicates > 0 {
            format!(", {} duplicate lines skipped", reply.duplicates)
        } else {
            String::new()
        },
        reply.took_ms
    );
    if let Some(r) = &reply.replaced {
        let _ = writeln!(
            out,
            "note: this replaced the list of {} entries that {} synced at {}",
            r.entries, r.host, r.at
        );
    }
    out
}

pub fn allow_table(allows: &[AllowView]) -> String {
    if allows.is_empty() {
        return "allowlist is empty\n".into();
    }
    let rows = allows
        .iter()
        .map(|a| vec![a.network.clone(), a.created.to_string(), a.note.clone()])
        .collect();
    table(&["NETWORK", "ADDED", "NOTE"], rows)
}

pub fn added_allows(reply: &AddAllowsReply) -> String {
    let mut out = String::new();
    warnings(&mut out, &reply.warnings);
    for a in &reply.added {
        let _ = writeln!(out, "allowlisted {}", a.network);
    }
    out
}

pub fn removed_allows(reply: &RemoveAllowsReply) -> String {
    let mut out = String::new();
    for a in &reply.removed {
        let _ = writeln!(out, "removed {} from the allowlist", a.network);
    }
    for n in &reply.not_found {
        let _ = writeln!(out, "warning: {n} was not allowlisted");
    }
    out
}

pub fn stats(s: &StatsView) -> String {
    let rows = s
        .counters
        .iter()
        .map(|(name, c)| vec![name.clone(), c.packets.to_string(), c.bytes.to_string()])
        .collect();
    let mut out = table(&["VERDICT", "PACKETS", "BYTES"], rows);
    let _ = writeln!(
        out,
        "\n{} IPv4 and {} IPv6 bans in the kernel tables{}",
        s.bans_v4,
        s.bans_v6,
        if s.monitor {
            " (monitor mode: nothing is dropped)"
        } else {
            ""
        }
    );
    if let Some(v) = &s.visits {
        let _ = writeln!(
            out,
            "{} active visitors ({} registered, {} guests); {} visits tracked, {} not tracked, {} stored, {} lost, {} refused (503); {} page views in the store",
            v.active.visitors,
            v.active.registered,
            v.active.guests,
            v.tracked,
            v.untracked,
            v.stored,
            v.lost,
            v.refused,
            v.page_views_total
                .map_or("? (the store does not answer)".to_string(), |n| n
                    .to_string())
        );
        if v.queued > 0 || !v.store_answers {
            let _ = writeln!(
                out,
                "{} visits wait for the store (the oldest for {} ms){}; {} failed attempts so far",
                v.queued,
                v.oldest_queued_ms,
                if v.store_answers {
                    ""
                } else {
                    ", which does not take them now"
                },
                v.store_retries
            );
        }
    }
    for db in &s.geoip {
        let _ = writeln!(
            out,
            "GeoIP {} ({}): {} record{} could not be decoded",
            db.path.display(),
            db.database,
            db.decode_failures,
            if db.decode_failures == 1 { "" } else { "s" }
        );
    }
    if !s.top.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["TOP BANS", "HITS"],
            s.top
                .iter()
                .map(|t| vec![t.network.clone(), t.hits.to_string()])
                .collect(),
        ));
    }
    out
}

pub fn status(s: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "agent      {} (pid {}, up {})",
        s.version,
        s.pid,
        format_duration(std::time::Duration::from_secs(s.uptime_secs))
    );
    for a in &s.interfaces {
        let _ = writeln!(
            out,
            "interface  {} ({} mode{})",
            a.iface,
            a.mode,
            if a.adopted { ", kept from pins" } else { "" }
        );
    }
    let _ = writeln!(
        out,
        "mode       {}",
        if s.monitor {
            "monitor (matches counted, nothing dropped)"
        } else {
            "enforcing"
        }
    );
    let _ = writeln!(
        out,
        "bans       {} / {} IPv4, {} / {} IPv6",
        s.bans_v4.used, s.bans_v4.capacity, s.bans_v6.used, s.bans_v6.capacity
    );
    for (family, t) in [("IPv4", &s.bans_v4), ("IPv6", &s.bans_v6)] {
        if t.left_out > 0 {
            let _ = writeln!(
                out,
                "warning    {} {family} bans of the store are not enforced here: the tables hold {}; \
                 enforced are the widest networks first, then by address",
                t.left_out, t.capacity
            );
        }
    }
    let _ = writeln!(out, "allowlist  {} networks", s.allowlist);
    if s.v6_filter_off {
        let _ = writeln!(
            out,
            "note       an IPv6 ban shorter than /28 turns the IPv6 prefilter off: every IPv6 packet is looked up"
        );
    }
    let _ = writeln!(
        out,
        "pins       {}/{}{}",
        s.pin_dir,
        s.map_generation,
        if s.adopted { " (adopted)" } else { "" }
    );
    let _ = writeln!(out, "store      {}", s.store);
    let _ = writeln!(out, "socket     {}", s.socket);
    if let Some(t) = s.last_reconcile {
        let _ = writeln!(out, "reconciled {t}");
    }
    if let Some(f) = &s.fleet {
        let _ = writeln!(
            out,
            "fleet      applied {} of {}{}{}",
            f.applied,
            f.head,
            match f.behind {
                0 => String::new(),
                n => format!(", {n} behind"),
            },
            if f.listening {
                ""
            } else {
                ", not hearing the fleet (catching up on the heartbeat)"
            }
        );
        if let Some(e) = &f.last_error {
            let _ = writeln!(out, "error      {e}");
        }
    }
    if let Some(c) = &s.crowdsec {
        out.push_str(&crowdsec(c));
    }
    out
}

/// The CrowdSec bouncer's lines of `tracking status`.
fn crowdsec(c: &crate::api::CrowdsecView) -> String {
    let mut out = String::new();
    let last = match (c.last_pull, c.last_success) {
        (None, _) => "no pull yet".to_string(),
        (Some(pull), Some(_)) if c.last_error.is_none() => format!("last pull {pull}, answered"),
        (Some(pull), ok) => format!(
            "last pull {pull} failed, last answered {}",
            ok.map_or("never".to_string(), |t| t.to_string())
        ),
    };
    let _ = writeln!(
        out,
        "crowdsec   {} every {}: {last}",
        c.url,
        format_duration(std::time::Duration::from_millis(c.interval_ms))
    );
    let _ = writeln!(
        out,
        "           {} decisions banning {} networks; {} pulls, {} failed, {} decisions skipped",
        c.decisions, c.networks, c.pulls, c.failures, c.skipped
    );
    if let Some(e) = &c.last_error {
        let _ = writeln!(out, "           error: {e}");
    }
    out
}

pub fn ua_table(rules: &[UaRule]) -> String {
    if rules.is_empty() {
        return "no user-agent rules\n".into();
    }
    let rows = rules
        .iter()
        .map(|r| {
            vec![
                r.keyword.clone(),
                r.source.clone(),
                r.created.to_string(),
                r.note.clone(),
            ]
        })
        .collect();
    table(&["KEYWORD", "SOURCE", "ADDED", "NOTE"], rows)
}

pub fn added_ua(rules: &[UaRule]) -> String {
    rules
        .iter()
        .map(|r| format!("not tracking user agents containing `{}`\n", r.keyword))
        .collect()
}

pub fn removed_ua(reply: &RemoveUaReply) -> String {
    let mut out = String::new();
    for r in &reply.removed {
        let _ = writeln!(out, "removed the rule `{}`", r.keyword);
    }
    for k in &reply.not_found {
        let _ = writeln!(out, "warning: no rule `{k}`");
    }
    out
}

/// `ua rm --source NAME`: a count, not a line per rule (the bot list has 1,500).
pub fn removed_ua_source(source: &str, reply: &RemoveUaReply) -> String {
    match reply.removed.len() {
        0 => format!("warning: no rule of source {source}\n"),
        n => format!(
            "removed {n} rule{} of source {source}\n",
            if n == 1 { "" } else { "s" }
        ),
    }
}

pub fn imported_ua(reply: &crate::api::ImportUaReply) -> String {
    let mut out = format!(
        "{}: {} rules of source {} (was {})\n",
        reply.list, reply.after, reply.source, reply.before
    );
    if reply.kept > 0 {
        let _ = writeln!(
            out,
            "{} of its keywords were rules of another source already and stay theirs",
            reply.kept
        );
    }
    out
}

pub fn visitor_table(visitors: &[VisitorView]) -> String {
    if visitors.is_empty() {
        return "no visitors\n".into();
    }
    let now = crate::time::Timestamp::now();
    let rows = visitors
        .iter()
        .map(|v| {
            let ago = std::time::Duration::from_millis(
                (now.as_millis() - v.last_update.as_millis()).max(0) as u64,
            );
            vec![
                v.ip.to_string(),
                v.user.clone().unwrap_or_else(|| "guest".into()),
                v.last_page.clone(),
                v.page_views.to_string(),
                format!("{} ago", format_duration(ago)),
                v.referrer.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["ADDRESS", "USER", "LAST PAGE", "VIEWS", "SEEN", "REFERRER"],
        rows,
    )
}
