//! The CrowdSec bouncer: pulls the decision stream of a CrowdSec Local API and keeps the bans
//! of source `crowdsec` equal to its live ban decisions of scope Ip and Range, each until its
//! decision ends.
//!
//! The first pull of a run asks for every live decision (`startup=true`) and makes the source
//! exactly that, so decisions added or deleted while the agent was stopped are caught up. Later
//! pulls ask for what changed. Any failure (the Local API away, an answer that cannot be
//! applied) makes the next pull a startup pull again: the Local API may have counted the failed
//! one as delivered, and a startup pull loses nothing. While the Local API is away the bans
//! stay as they were, enforced until their decisions' ends.
//!
//! - [`config`]: the bouncer's settings, validated.
//! - [`lapi`]: the Local API's stream endpoint and its types.
//! - [`decisions`]: the decisions held and the bans they make.

pub mod config;
pub mod decisions;
pub mod lapi;

use std::sync::{Arc, Mutex};

pub use self::config::CrowdsecConfig;
use self::decisions::{Changes, Decisions, SOURCE};
use crate::{
    api::CrowdsecView,
    engine::{
        Engine,
        source::{Lift, SourceChange},
    },
    time::Timestamp,
};

/// Skipped decisions named in the log per pull, at most.
const SKIPPED_LOGGED: usize = 10;

/// The running bouncer; its state is what `tracking status` shows.
pub struct Bouncer {
    config: CrowdsecConfig,
    engine: Arc<Engine>,
    progress: Mutex<Progress>,
}

#[derive(Default)]
struct Progress {
    view: CrowdsecView,
    /// The next pull asks for every live decision.
    startup: bool,
}

impl Bouncer {
    pub fn new(config: CrowdsecConfig, engine: Arc<Engine>) -> Arc<Bouncer> {
        Arc::new(Bouncer {
            progress: Mutex::new(Progress {
                view: CrowdsecView {
                    url: config.url.to_string(),
                    interval_ms: config.interval.as_millis() as u64,
                    ..CrowdsecView::default()
                },
                startup: true,
            }),
            config,
            engine,
        })
    }

    /// What `tracking status` shows.
    pub fn view(&self) -> CrowdsecView {
        self.progress.lock().expect("progress lock").view.clone()
    }

    /// Pulls every interval, for ever.
    pub async fn run(self: Arc<Self>) {
        tracing::info!(
            "CrowdSec bouncer: pulling decisions from {} every {}",
            self.config.url,
            crate::time::format_duration(self.config.interval)
        );
        let mut decisions = Decisions::default();
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pull_once(&mut decisions).await;
        }
    }

    async fn pull_once(&self, decisions: &mut Decisions) {
        let startup = self.progress.lock().expect("progress lock").startup;
        let now = Timestamp::now();
        let outcome = match lapi::pull(&self.config.url, &self.config.key, startup).await {
            Ok(stream) => {
                let changes = if startup {
                    decisions.startup(&stream.new, now)
                } else {
                    decisions.delta(&stream.new, &stream.deleted, now)
                };
                self.apply(changes, startup).await
            }
            Err(e) => Err(e.to_string()),
        };
        let mut progress = self.progress.lock().expect("progress lock");
        let view = &mut progress.view;
        view.last_pull = Some(now);
        view.decisions = decisions.len();
        view.networks = decisions.networks();
        match outcome {
            Ok((skipped, change)) => {
                if view.last_error.take().is_some() {
                    tracing::info!(
                        "CrowdSec bouncer: the Local API at {} answers again",
                        view.url
                    );
                }
                if change.set + change.lifted > 0 || startup {
                    tracing::info!(
                        "CrowdSec bouncer: {} ban{} set, {} lifted{}",
                        change.set,
                        if change.set == 1 { "" } else { "s" },
                        change.lifted,
                        if startup { " (startup pull)" } else { "" }
                    );
                }
                view.pulls += 1;
                view.skipped += skipped as u64;
                view.last_success = Some(now);
                progress.startup = false;
            }
            Err(error) => {
                if view.last_error.as_deref() != Some(&error) {
                    tracing::warn!(
                        "CrowdSec bouncer: {error}; bans stay as they are, the next pull asks \
                         for every decision"
                    );
                }
                view.failures += 1;
                view.last_error = Some(error);
                progress.startup = true;
            }
        }
    }

    /// Applies a pull's changes; returns how many decisions were skipped and what changed.
    async fn apply(
        &self,
        changes: Changes,
        startup: bool,
    ) -> Result<(usize, SourceChange), String> {
        for why in changes.skipped.iter().take(SKIPPED_LOGGED) {
            tracing::warn!("CrowdSec bouncer: skipped {why}");
        }
        if changes.skipped.len() > SKIPPED_LOGGED {
            tracing::warn!(
                "CrowdSec bouncer: ... and {} more decisions skipped",
                changes.skipped.len() - SKIPPED_LOGGED
            );
        }
        let lift = if startup {
            Lift::AllOthers
        } else {
            Lift::Networks(changes.lift)
        };
        if !startup && changes.set.is_empty() && matches!(&lift, Lift::Networks(n) if n.is_empty())
        {
            return Ok((changes.skipped.len(), SourceChange::default()));
        }
        let change = self
            .engine
            .set_source_bans(SOURCE, changes.set, lift)
            .await
            .map_err(|e| format!("applying the decisions: {e}"))?;
        Ok((changes.skipped.len(), change))
    }
}
