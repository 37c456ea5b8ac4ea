//! `GET /metrics`: the agent's state in Prometheus' text exposition format, written by the
//! `metrics` crate's Prometheus exporter.
//!
//! Most values are read from the state the engine and the tracker keep anyway, at each
//! scrape, into a recorder made for that scrape (so that a source whose bans are gone leaves
//! no stale series). What only exists as it happens, the hook's latency and failed
//! reconciles, is recorded into [`Metrics`], which lives as long as the agent.

use std::time::{Duration, Instant};

use axum::{
    Router,
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics::{Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use super::{ApiError, App, routes};
use crate::{api::StatsView, time::Timestamp};

/// The hook latency histogram's upper bounds, in seconds: the hook answers in tens of
/// microseconds when all is well, in milliseconds when the store pushes back.
const HOOK_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
const HOOK_SECONDS: &str = "tracking_hook_duration_seconds";
const RECONCILE_FAILURES: &str = "tracking_reconcile_failures_total";

/// The measurements that are not state: kept for the agent's life.
pub struct Metrics {
    recorder: PrometheusRecorder,
    hook: Histogram,
    reconcile_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HOOK_SECONDS.into()), HOOK_BUCKETS)
            .expect("buckets are given")
            .build_recorder();
        let (hook, reconcile_failures) = metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!(
                HOOK_SECONDS,
                Unit::Seconds,
                "Time from a visit hook's request to its answer (POST /v1/visits and /v1/visits/batch)."
            );
            metrics::describe_counter!(
                RECONCILE_FAILURES,
                "Periodic comparisons of the kernel tables with the store that failed."
            );
            (
                metrics::histogram!(HOOK_SECONDS),
                metrics::counter!(RECONCILE_FAILURES),
            )
        });
        Metrics {
            recorder,
            hook,
            reconcile_failures,
        }
    }

    /// Counts a reconcile that failed.
    pub fn reconcile_failed(&self) {
        self.reconcile_failures.increment(1);
    }

    /// Records one hook answer's latency.
    pub fn hook_answered(&self, took: Duration) {
        self.hook.record(took.as_secs_f64());
    }

    fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

/// Times the visit hook's answers (a route layer of the hook's routes).
pub async fn time_hook(State(app): State<App>, request: Request, next: Next) -> Response {
    let timed = request.uri().path().starts_with("/v1/visits");
    let started = Instant::now();
    let response = next.run(request).await;
    if timed {
        app.metrics.hook_answered(started.elapsed());
    }
    response
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<App>) -> Result<Response, ApiError> {
    let stats = routes::stats_view(&app).await?;
    let mut text = snapshot(&app, &stats, live_bans(&app).await);
    text.push_str(&app.metrics.render());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The routes: `GET /metrics`.
pub fn routes() -> Router<App> {
    Router::new().route("/metrics", get(metrics))
}

/// Live ban records by source and family, or `None` when the store does not answer (the
/// rest of the metrics still come).
async fn live_bans(app: &App) -> Option<Vec<((String, &'static str), u64)>> {
    match app.engine.live_bans_by_source().await {
        Ok(counts) => Some(counts.into_iter().collect()),
        Err(e) => {
            tracing::warn!("metrics: counting bans failed: {e}");
            None
        }
    }
}

/// The state's metrics, rendered by a recorder of their own.
fn snapshot(
    app: &App,
    stats: &StatsView,
    bans: Option<Vec<((String, &'static str), u64)>>,
) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let status = routes::status_view(app);
    metrics::with_local_recorder(&recorder, || {
        use metrics::{counter, describe_counter, describe_gauge, gauge};
        describe_counter!(
            "tracking_packets_total",
            "Packets the XDP program judged, by verdict, summed over CPUs."
        );
        describe_counter!(
            "tracking_bytes_total",
            Unit::Bytes,
            "Bytes of the packets the XDP program judged, by verdict, summed over CPUs."
        );
        for (verdict, c) in &stats.counters {
            counter!("tracking_packets_total", "verdict" => verdict.clone()).absolute(c.packets);
            counter!("tracking_bytes_total", "verdict" => verdict.clone()).absolute(c.bytes);
        }
        if let Some(bans) = bans {
            describe_gauge!(
                "tracking_bans",
                "Live ban records in the store, by source and family."
            );
            for ((source, family), n) in bans {
                gauge!("tracking_bans", "source" => source, "family" => family).set(n as f64);
            }
        }
        describe_gauge!(
            "tracking_table_entries",
            "Bans the kernel tables hold, by family."
        );
        describe_gauge!(
            "tracking_table_capacity",
            "Bans the kernel tables can hold, by family (--max-bans-v4/--max-bans-v6)."
        );
        describe_gauge!(
            "tracking_table_left_out",
            "Bans of the store the kernel tables cannot hold, by family, as of the last reconcile."
        );
        for (family, table) in [("ipv4", status.bans_v4), ("ipv6", status.bans_v6)] {
            gauge!("tracking_table_entries", "family" => family).set(table.used as f64);
            gauge!("tracking_table_capacity", "family" => family).set(table.capacity as f64);
            gauge!("tracking_table_left_out", "family" => family).set(table.left_out as f64);
        }
        describe_gauge!("tracking_allowlist_entries", "Networks on the allowlist.");
        gauge!("tracking_allowlist_entries").set(status.allowlist as f64);
        describe_gauge!(
            "tracking_monitor_mode",
            "1 while bans are counted but not dropped (--monitor)."
        );
        gauge!("tracking_monitor_mode").set(if stats.monitor { 1.0 } else { 0.0 });
        if let Some(last) = status.last_reconcile {
            describe_gauge!(
                "tracking_reconcile_age_seconds",
                Unit::Seconds,
                "Time since the kernel tables were last brought in line with the store."
            );
            let age = Timestamp::now()
                .as_millis()
                .saturating_sub(last.as_millis())
                .max(0);
            gauge!("tracking_reconcile_age_seconds").set(age as f64 / 1000.0);
        }
        describe_gauge!(
            "tracking_uptime_seconds",
            Unit::Seconds,
            "Time since the agent started."
        );
        gauge!("tracking_uptime_seconds").set(status.uptime_secs as f64);
        if let Some(v) = &stats.visits {
            describe_counter!(
                "tracking_visits_received_total",
                "Visit hooks received with a valid visit: tracked, not tracked by a rule, or refused."
            );
            counter!("tracking_visits_received_total")
                .absolute(v.tracked + v.untracked + v.refused);
            describe_counter!("tracking_visits_tracked_total", "Visits tracked.");
            counter!("tracking_visits_tracked_total").absolute(v.tracked);
            describe_counter!(
                "tracking_visits_untracked_total",
                "Visits not tracked (a user-agent rule, a path prefix or a network said so)."
            );
            counter!("tracking_visits_untracked_total").absolute(v.untracked);
            describe_counter!(
                "tracking_visits_stored_total",
                "Tracked visits written to the store."
            );
            counter!("tracking_visits_stored_total").absolute(v.stored);
            describe_counter!(
                "tracking_visits_refused_total",
                "Visits refused with 503 because the store fell behind."
            );
            counter!("tracking_visits_refused_total").absolute(v.refused);
            describe_counter!(
                "tracking_visits_lost_total",
                "Answered visits the store never took."
            );
            counter!("tracking_visits_lost_total").absolute(v.lost);
            describe_gauge!(
                "tracking_visits_queued",
                "Answered visits waiting for the store."
            );
            gauge!("tracking_visits_queued").set(v.queued as f64);
            describe_gauge!(
                "tracking_active_visitors",
                "Visitors seen within the tracking timeout, by kind."
            );
            gauge!("tracking_active_visitors", "kind" => "registered")
                .set(v.active.registered as f64);
            gauge!("tracking_active_visitors", "kind" => "guest").set(v.active.guests as f64);
        }
        if let Some(c) = &status.crowdsec {
            describe_counter!(
                "tracking_crowdsec_pulls_total",
                "Decision pulls from the CrowdSec Local API that were applied."
            );
            counter!("tracking_crowdsec_pulls_total").absolute(c.pulls);
            describe_counter!(
                "tracking_crowdsec_pull_failures_total",
                "Decision pulls that failed."
            );
            counter!("tracking_crowdsec_pull_failures_total").absolute(c.failures);
            describe_gauge!(
                "tracking_crowdsec_decisions",
                "CrowdSec ban decisions held."
            );
            gauge!("tracking_crowdsec_decisions").set(c.decisions as f64);
        }
    });
    recorder.handle().render()
}
