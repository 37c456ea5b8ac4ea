//! The agent's core: every change goes to the store first and then, as the store's computed
//! effects, to the kernel maps, under one writer lock so that the kernel sees changes in the
//! order the store made them. Periodic reconciliation repairs any drift, and the reaper removes
//! expired records (the kernel already stopped honouring them at their expiry).

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Instant,
};

use ipnet::IpNet;

use crate::{
    api::{
        AddAllows, AddAllowsReply, AddBans, AddBansReply, AllowView, BAN_PAGE, BanList,
        BanListQuery, BanView, CounterView, FleetStatus, MAX_BAN_PAGE, RemoveAllows,
        RemoveAllowsReply, RemoveBans, RemoveBansReply, StatsView, StatusView, SyncReply,
        SyncedByView, TableView, TopBan,
    },
    ban::{self, Allow, Ban, Effect, Effective, ListEntry, SOURCE_CLI},
    blocklist,
    config::AgentConfig,
    kernel::{Applied, Attachment, KernelError, Program, Tables, tables::within_capacity},
    store::{Admission, BanQuery, Logged, Position, Store, StoreError},
    time::{self, Timestamp},
};
use tracking_common::stats::Verdict;

pub mod source;

/// At most this many warnings are returned for one request; the rest are counted.
const MAX_WARNINGS: usize = 100;
/// Bans shown by `stats` as the top matches.
const TOP_BANS: usize = 10;
/// Entries of the fleet's change log read at a time when catching up.
const CATCH_UP_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is wrong; nothing was changed.
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<String>,
    },
    /// The request is dangerous and was not forced; nothing was changed.
    #[error("{message}")]
    NeedsForce {
        message: String,
        details: Vec<String>,
    },
    /// The kernel tables cannot hold what the change would leave; nothing was changed.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Kernel(KernelError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(why) => EngineError::Refused(why),
            other => EngineError::Store(other),
        }
    }
}

impl From<KernelError> for EngineError {
    fn from(e: KernelError) -> Self {
        match e {
            e @ (KernelError::OverCapacity(_) | KernelError::AllowlistFull { .. }) => {
                EngineError::Refused(e.to_string())
            }
            other => EngineError::Kernel(other),
        }
    }
}

/// The engine's answer to a store asking whether a change may commit: whether the kernel
/// tables can hold what it leaves banned.
struct KernelAdmission(Arc<Tables>);

impl Admission for KernelAdmission {
    fn admit(&self, effects: &[Effect]) -> std::result::Result<(), String> {
        self.0.admit(effects).map_err(|e| e.to_string())
    }
}

impl EngineError {
    fn bad(message: impl Into<String>, details: Vec<String>) -> Self {
        EngineError::BadRequest {
            message: message.into(),
            details,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The running agent's state, shared by the API handlers and the background tasks.
pub struct Engine {
    store: Arc<dyn Store>,
    program: Mutex<Program>,
    /// Serialises store-then-kernel changes.
    writer: tokio::sync::Mutex<()>,
    /// While a reconcile plans without the writer: the networks the writer changed in the
    /// tables meanwhile, which the plan no longer knows (see [`Engine::reconcile`]).
    touched: Mutex<Option<HashSet<IpNet>>>,
    attachments: Vec<Attachment>,
    config: AgentConfig,
    started: Instant,
    started_at: Timestamp,
    last_reconcile: Mutex<Option<Timestamp>>,
    /// IPv4 and IPv6 bans of the store that the tables cannot hold, as of the last reconcile.
    left_out: Mutex<(usize, usize)>,
    /// The last position of the fleet's change log whose changes the tables hold.
    applied: AtomicI64,
    /// The last position of the log known to exist (read from the store).
    head: AtomicI64,
    /// The highest position the fleet announced (see [`Store::ban_changes`]).
    announced: Option<tokio::sync::watch::Receiver<u64>>,
    /// Why the last reconcile or catch-up failed, until one succeeds.
    last_error: Mutex<Option<String>>,
}

/// What a whole reconcile found to do: the store's snapshot against the tables.
struct Plan {
    now: Timestamp,
    /// The end of the log before the snapshot was read.
    head: Position,
    /// What brings the tables to the snapshot.
    effects: Vec<Effect>,
    /// IPv4 and IPv6 bans of the snapshot the tables cannot hold.
    left_out: (usize, usize),
    /// Some held entry misses its derived bits.
    uncovered: bool,
}

impl Plan {
    /// The plan for every network but `touched`, which it leaves as the tables hold them.
    fn without(mut self, touched: &HashSet<IpNet>) -> Plan {
        self.effects.retain(|(n, _)| !touched.contains(n));
        self
    }
}

/// What one catch-up with the fleet's log did.
#[derive(Debug, Default)]
pub struct CaughtUp {
    /// Changes applied from the log.
    pub changes: usize,
    /// Set when it had to reconcile whole (a gap in the log, a bulk change, tables too
    /// small for the store), with what that did.
    pub reconciled: Option<Applied>,
}

impl Engine {
    /// Loads (or adopts) the program, brings the maps in line with the store, and only then
    /// attaches, so a fresh filter never runs with partial bans.
    pub async fn start(config: AgentConfig, store: Arc<dyn Store>) -> Result<Arc<Engine>> {
        let opts = crate::kernel::Options {
            pin_dir: config.bpffs_dir.clone(),
            max_bans_v4: config.max_bans_v4,
            max_bans_v6: config.max_bans_v6,
            hash_key: None,
        };
        let program = tokio::task::block_in_place(|| Program::load(&opts))?;
        tracing::info!(
            "{} pinned maps in {}",
            if program.adopted() {
                "adopted"
            } else {
                "created"
            },
            config.bpffs_dir.join(program.generation()).display()
        );
        program.maps.set_monitor(config.monitor);
        program.maps.set_log_matches(config.log_matches);
        let mut engine = Engine {
            store,
            program: Mutex::new(program),
            writer: tokio::sync::Mutex::new(()),
            touched: Mutex::new(None),
            attachments: Vec::new(),
            config,
            started: Instant::now(),
            started_at: Timestamp::now(),
            last_reconcile: Mutex::new(None),
            left_out: Mutex::new((0, 0)),
            applied: AtomicI64::new(0),
            head: AtomicI64::new(0),
            announced: None,
            last_error: Mutex::new(None),
        };
        engine.announced = engine.store.ban_changes();
        let applied = {
            let _w = engine.writer.lock().await;
            engine.reconcile_locked().await?
        };
        tracing::info!(
            "maps in line with the store: {} added, {} updated, {} removed",
            applied.added,
            applied.updated,
            applied.removed
        );
        let attachments = {
            let mut p = engine.program.lock().expect("program lock");
            let a = tokio::task::block_in_place(|| {
                p.attach(&engine.config.ifaces, engine.config.xdp_mode)
            })?;
            p.retire_other_generations();
            a
        };
        engine.attachments = attachments;
        Ok(Arc::new(engine))
    }

    /// The read side of the kernel tables, for lookups that must not wait for changes.
    pub fn tables(&self) -> Arc<Tables> {
        self.program.lock().expect("program lock").maps.tables()
    }

    /// The aya-log reader of the program, for the daemon to poll.
    pub fn take_logger(&self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.program.lock().expect("program lock").take_logger()
    }

    fn apply(&self, effects: &[Effect]) -> Result<Applied> {
        if effects.is_empty() {
            return Ok(Applied::default());
        }
        if let Some(touched) = self.touched.lock().expect("lock").as_mut() {
            touched.extend(effects.iter().map(|(n, _)| *n));
        }
        let mut p = self.program.lock().expect("program lock");
        Ok(tokio::task::block_in_place(|| p.maps.apply(effects))?)
    }

    fn view(&self, ban: &Ban, now: Timestamp) -> BanView {
        let kernel = self
            .program
            .lock()
            .expect("program lock")
            .maps
            .get(&ban.network);
        BanView {
            network: ban.network.to_string(),
            source: ban.source.clone(),
            reason: ban.reason.clone(),
            created: ban.created,
            expires: ban.expires,
            expires_in_secs: ban.expires.map(|e| e.remaining(now).as_secs()),
            hits: kernel.map_or(0, |k| k.hits),
            enforced: kernel.is_some_and(|k| k.enforced),
        }
    }

    /// Adds ban records (all or nothing).
    pub async fn add_bans(&self, req: AddBans) -> Result<AddBansReply> {
        let now = Timestamp::now();
        let (nets, mut warnings) = parse_networks(&req.networks)?;
        check_text("reason", &req.reason)?;
        let source = match req.source {
            Some(s) => validate_source(&s)?,
            None => SOURCE_CLI.to_string(),
        };
        let expires = match (req.ttl_secs, req.until) {
            (Some(0), _) => {
                return Err(EngineError::bad("ttl must be at least one second", vec![]));
            }
            (Some(secs), until) => {
                let by_ttl = now.plus(std::time::Duration::from_secs(secs));
                Some(until.map_or(by_ttl, |u| u.min(by_ttl)))
            }
            (None, until) => until,
        };
        if let Some(e) = expires {
            if e <= now {
                return Err(EngineError::bad(
                    format!("the expiry {e} is already past"),
                    vec![],
                ));
            }
            if e > now.plus(time::MAX_EXPIRY_AHEAD) {
                return Err(EngineError::bad(
                    format!(
                        "the expiry is more than {} ahead, the longest a ban can be given; \
                         a ban that should never end needs no --ttl or --until",
                        time::MAX_EXPIRY_AHEAD_TEXT
                    ),
                    vec![],
                ));
            }
        }
        let _w = self.writer.lock().await;
        let allows = self.store.list_allows().await?;
        check_force(nets.iter().map(|n| (n, None)), &allows, req.force)?;
        // Every network named is banned afterwards: the tables must hold those they lack.
        let banned: Vec<Effect> = nets
            .iter()
            .map(|n| (*n, Effective::Banned { expires }))
            .collect();
        self.tables()
            .admit(&banned)
            .map_err(KernelError::OverCapacity)?;
        let bans: Vec<Ban> = nets
            .iter()
            .map(|n| Ban {
                network: *n,
                source: source.clone(),
                reason: req.reason.clone(),
                created: now,
                expires,
            })
            .collect();
        let effects = self.store.add_bans(bans, now).await?;
        self.apply(&effects)?;
        self.catch_up_after_own(None).await;
        drop(_w);
        // Show the records as stored (an update keeps its creation time).
        let bans = self
            .store
            .bans_of(nets, source)
            .await?
            .iter()
            .map(|b| self.view(b, now))
            .collect();
        cap(&mut warnings);
        Ok(AddBansReply { bans, warnings })
    }

    /// Removes the records of the given networks.
    pub async fn remove_bans(&self, req: RemoveBans) -> Result<RemoveBansReply> {
        let now = Timestamp::now();
        let (nets, _) = parse_networks(&req.networks)?;
        let source = req.source.map(|s| validate_source(&s)).transpose()?;
        let _w = self.writer.lock().await;
        let (removed, effects) = self.store.remove_bans(nets.clone(), source, now).await?;
        self.apply(&effects)?;
        self.catch_up_after_own(None).await;
        drop(_w);
        let gone: HashSet<IpNet> = removed.iter().map(|b| b.network).collect();
        let not_found = nets
            .iter()
            .filter(|n| !gone.contains(n))
            .map(|n| n.to_string())
            .collect();
        let removed = removed.iter().map(|b| self.view(b, now)).collect();
        Ok(RemoveBansReply { removed, not_found })
    }

    /// A page of ban records matching the query, with their hit counts.
    pub async fn list_bans(&self, query: BanListQuery) -> Result<BanList> {
        let now = Timestamp::now();
        let limit = match query.limit {
            None => BAN_PAGE,
            Some(n @ 1..=MAX_BAN_PAGE) => n,
            Some(n) => {
                return Err(EngineError::bad(
                    format!("limit must be 1 to {MAX_BAN_PAGE}, not {n}"),
                    vec![],
                ));
            }
        };
        let source = query.source.map(|s| validate_source(&s)).transpose()?;
        let contains = query
            .contains
            .map(|a| {
                a.trim().parse::<std::net::IpAddr>().map_err(|_| {
                    EngineError::bad(format!("contains: `{a}` is not an IP address"), vec![])
                })
            })
            .transpose()?;
        let text = query.q.filter(|q| !q.is_empty());
        if let Some(t) = &text {
            check_text("q", t)?;
        }
        let after = query.after.map(|a| parse_cursor(&a)).transpose()?;
        let page = self
            .store
            .query_bans(BanQuery {
                source,
                contains,
                text,
                after,
                limit,
            })
            .await?;
        let next = (page.bans.len() == limit)
            .then(|| page.bans.last().map(cursor))
            .flatten();
        let bans = {
            let p = self.program.lock().expect("program lock");
            page.bans
                .iter()
                .map(|b| {
                    let kernel = p.maps.get(&b.network);
                    BanView {
                        network: b.network.to_string(),
                        source: b.source.clone(),
                        reason: b.reason.clone(),
                        created: b.created,
                        expires: b.expires,
                        expires_in_secs: b.expires.map(|e| e.remaining(now).as_secs()),
                        hits: kernel.map_or(0, |k| k.hits),
                        enforced: kernel.is_some_and(|k| k.enforced),
                    }
                })
                .collect()
        };
        Ok(BanList {
            bans,
            total: page.total,
            next,
        })
    }

    /// Makes the bans of `source` exactly the networks of `list`.
    pub async fn sync(&self, source: &str, force: bool, list: &str) -> Result<SyncReply> {
        let started = Instant::now();
        let source = validate_source(source)?;
        if source == SOURCE_CLI {
            return Err(EngineError::bad(
                "the source `cli` holds bans added by hand; sync a list under its own --source name",
                vec![],
            ));
        }
        let parsed = blocklist::parse(list).map_err(|errors| {
            EngineError::bad(
                format!(
                    "the list has {} bad line{}; nothing was changed",
                    errors.len(),
                    plural(errors.len())
                ),
                errors
                    .iter()
                    .map(|e| format!("line {}: `{}`: {}", e.line, e.text, e.message))
                    .collect(),
            )
        })?;
        let parse_ms = started.elapsed().as_millis() as u64;
        let warnings = capped(parsed.entries.iter().filter(|e| e.host_bits_cleared), |e| {
            format!("line {}: normalised to {}", e.line, e.network)
        });
        let now = Timestamp::now();
        let _w = self.writer.lock().await;
        let allows = self.store.list_allows().await?;
        check_force(
            parsed.entries.iter().map(|e| (&e.network, Some(e.line))),
            &allows,
            force,
        )?;
        // In place: the entries become what the store takes without a second million-long
        // vector.
        let entries: Vec<ListEntry> = parsed
            .entries
            .into_iter()
            .map(|e| ListEntry {
                network: e.network,
                reason: e.reason,
            })
            .collect();
        let stored = Instant::now();
        let admission = Arc::new(KernelAdmission(self.tables()));
        let report = self
            .store
            .sync_source(source.clone(), entries, now, admission)
            .await?;
        let store_ms = stored.elapsed().as_millis() as u64;
        let applied = Instant::now();
        self.apply(&report.effects)?;
        let kernel_ms = applied.elapsed().as_millis() as u64;
        self.catch_up_after_own(report.bulk_at.map(|at| (at, &report.effects[..])))
            .await;
        drop(_w);
        Ok(SyncReply {
            source,
            added: report.added,
            updated: report.updated,
            removed: report.removed,
            unchanged: report.unchanged,
            duplicates: parsed.duplicates,
            warnings,
            took_ms: started.elapsed().as_millis() as u64,
            parse_ms,
            store_ms,
            kernel_ms,
            replaced: report.replaced.map(|r| SyncedByView {
                host: r.host,
                instance: r.instance,
                at: r.at,
                entries: r.entries,
            }),
        })
    }

    pub async fn list_allows(&self) -> Result<Vec<AllowView>> {
        Ok(self
            .store
            .list_allows()
            .await?
            .iter()
            .map(allow_view)
            .collect())
    }

    /// Adds allowlist entries; they win over any ban at once.
    pub async fn add_allows(&self, req: AddAllows) -> Result<AddAllowsReply> {
        let (nets, mut warnings) = parse_networks(&req.networks)?;
        check_text("note", &req.note)?;
        let now = Timestamp::now();
        let _w = self.writer.lock().await;
        let allows: Vec<Allow> = nets
            .iter()
            .map(|n| Allow {
                network: *n,
                note: req.note.clone(),
                created: now,
            })
            .collect();
        // The allowlist after the change must fit its tables before the store takes it.
        let mut after: Vec<IpNet> = self
            .store
            .list_allows()
            .await?
            .iter()
            .map(|a| a.network)
            .collect();
        after.extend(nets.iter().copied());
        after.sort_unstable();
        after.dedup();
        {
            let mut p = self.program.lock().expect("program lock");
            tokio::task::block_in_place(|| p.maps.check_allowlist(&after))?;
        }
        self.store.add_allows(allows).await?;
        let all = self.store.list_allows().await?;
        self.set_allowlist(&all)?;
        self.catch_up_after_own(None).await;
        drop(_w);
        let wanted: HashSet<IpNet> = nets.into_iter().collect();
        cap(&mut warnings);
        Ok(AddAllowsReply {
            added: all
                .iter()
                .filter(|a| wanted.contains(&a.network))
                .map(allow_view)
                .collect(),
            warnings,
        })
    }

    pub async fn remove_allows(&self, req: RemoveAllows) -> Result<RemoveAllowsReply> {
        let (nets, _) = parse_networks(&req.networks)?;
        let _w = self.writer.lock().await;
        let removed = self.store.remove_allows(nets.clone()).await?;
        let all = self.store.list_allows().await?;
        self.set_allowlist(&all)?;
        self.catch_up_after_own(None).await;
        drop(_w);
        let gone: HashSet<IpNet> = removed.iter().map(|a| a.network).collect();
        Ok(RemoveAllowsReply {
            removed: removed.iter().map(allow_view).collect(),
            not_found: nets
                .iter()
                .filter(|n| !gone.contains(n))
                .map(|n| n.to_string())
                .collect(),
        })
    }

    fn set_allowlist(&self, allows: &[Allow]) -> Result<()> {
        let nets: Vec<IpNet> = allows.iter().map(|a| a.network).collect();
        let mut p = self.program.lock().expect("program lock");
        Ok(tokio::task::block_in_place(|| p.maps.set_allowlist(&nets))?)
    }

    /// Brings the maps in line with the store: missing or changed bans are written, bans the
    /// store no longer has are removed, the allowlist is replaced.
    ///
    /// With a million bans, reading the store and comparing takes the better part of a second,
    /// which no change of the fleet should wait for: the plan is made without the writer, and
    /// carried out under it for every network the writer did not change meanwhile. Those it
    /// did change stay as the writer left them: the change is newer than the plan's snapshot,
    /// or it is in the log after the position the plan leaves applied, and the catch-up that
    /// follows replays the log from there, in order.
    pub async fn reconcile(&self) -> Result<Applied> {
        let result = self.reconcile_beside_changes().await;
        self.note(&result);
        result
    }

    async fn reconcile_beside_changes(&self) -> Result<Applied> {
        let started = Instant::now();
        *self.touched.lock().expect("lock") = Some(HashSet::new());
        let plan = self.plan().await;
        let _w = self.writer.lock().await;
        let touched = self
            .touched
            .lock()
            .expect("lock")
            .take()
            .unwrap_or_default();
        let plan = plan?;
        let held = Instant::now();
        let applied = if touched.is_empty() {
            let head = plan.head;
            self.carry_out(plan, head).await?
        } else if plan.left_out != (0, 0) {
            // Which bans tables too small for the store hold depends on every one of them.
            self.reconcile_locked().await?
        } else {
            // The writer's changes since the plan began are in the tables already; the log
            // holds them after the position applied now, and the log from the earlier of
            // that and the plan's head is replayed over the rest.
            let applied = self.applied.load(Ordering::Acquire).min(plan.head);
            let plan = plan.without(&touched);
            self.carry_out(plan, applied).await?
        };
        if self.store.instance().is_some() {
            self.catch_up_locked(None).await?;
        }
        tracing::debug!(
            "reconciled in {:?}, {:?} of it holding the writer, {} network{} changed meanwhile",
            started.elapsed(),
            held.elapsed(),
            touched.len(),
            plural(touched.len())
        );
        Ok(applied)
    }

    /// [`Engine::reconcile`], the writer lock held.
    async fn reconcile_locked(&self) -> Result<Applied> {
        let plan = self.plan().await?;
        let head = plan.head;
        self.carry_out(plan, head).await
    }

    /// Reads what the store wants enforced and compares it with the tables.
    async fn plan(&self) -> Result<Plan> {
        let now = Timestamp::now();
        // The end of the log before the snapshot: whatever commits after it is in the log
        // after this position, and replaying it over the snapshot ends where the store does.
        let head = self.store.head().await?;
        let want = self.store.effective_bans(now).await?;
        let tables = self.tables();
        let (want, left_out) = within_capacity(want, tables.capacity());
        let effects = tokio::task::block_in_place(|| tables.drift(&want));
        // Entries that are held but not looked for (their derived bits missing) are not
        // enforced; the drift cannot see that, a rebuild repairs it. (Entries the drift adds
        // or replaces get their bits as they are written.)
        let uncovered = tokio::task::block_in_place(|| tables.uncovered()) > 0;
        Ok(Plan {
            now,
            head,
            effects,
            left_out,
            uncovered,
        })
    }

    /// Carries out a plan, the writer lock held, and leaves `applied` as the last position of
    /// the log the tables hold. The allowlist is read here, under the writer: it is small, and
    /// a plan made without the writer may be older than it.
    async fn carry_out(&self, plan: Plan, applied_to: Position) -> Result<Applied> {
        let allows = self.store.list_allows().await?;
        self.set_allowlist(&allows)?;
        let left_out = plan.left_out;
        if left_out != *self.left_out.lock().expect("lock") && left_out != (0, 0) {
            tracing::warn!(
                "the store holds {} IPv4 and {} IPv6 bans more than these tables can: \
                 enforcing the widest networks first (raise --max-bans-v4/--max-bans-v6)",
                left_out.0,
                left_out.1
            );
        }
        let mut applied = self.apply(&plan.effects)?;
        if plan.uncovered {
            let p = self.program.lock().expect("program lock");
            applied.repaired = tokio::task::block_in_place(|| p.maps.rebuild_derived());
        }
        *self.left_out.lock().expect("lock") = left_out;
        *self.last_reconcile.lock().expect("lock") = Some(plan.now);
        self.applied.store(applied_to, Ordering::Release);
        self.head.fetch_max(plan.head, Ordering::AcqRel);
        Ok(applied)
    }

    /// Applies the changes the fleet made since the last position applied, in the order they
    /// were made; reconciles whole where the log cannot say what changed.
    pub async fn catch_up(&self) -> Result<CaughtUp> {
        let _w = self.writer.lock().await;
        let result = self.catch_up_locked(None).await;
        self.note(&result);
        result
    }

    /// After a change of this agent's own, already applied: applies whatever else the log
    /// holds up to it (and the change itself again, harmlessly, so that the last word on
    /// each network is the log's). A failure leaves the change made; the next notification
    /// or heartbeat catches up.
    async fn catch_up_after_own(&self, own_bulk: Option<(Position, &[Effect])>) {
        if self.store.instance().is_none() {
            return;
        }
        let result = self.catch_up_locked(own_bulk).await;
        if let Err(e) = &result {
            tracing::warn!("catching up with the fleet after a change failed: {e}");
        }
        self.note(&result);
    }

    /// [`Engine::catch_up`], the writer lock held. `own_bulk` is a bulk change this agent
    /// just made and applied, with its effects.
    async fn catch_up_locked(&self, own_bulk: Option<(Position, &[Effect])>) -> Result<CaughtUp> {
        let mut caught = CaughtUp::default();
        'log: loop {
            let since = self.applied.load(Ordering::Acquire);
            let log = self.store.changes_since(since, CATCH_UP_BATCH).await?;
            if !log.complete {
                tracing::info!(
                    "the fleet's change log no longer holds the changes after {since}: reconciling"
                );
                caught.reconciled = Some(self.reconcile_locked().await?);
                continue;
            }
            let Some(&(last, _)) = log.entries.last() else {
                return Ok(caught);
            };
            self.head.fetch_max(last, Ordering::AcqRel);
            let mut bans: Vec<Effect> = Vec::new();
            for (position, logged) in log.entries {
                caught.changes += 1;
                match logged {
                    Logged::Ban(effect) => bans.push(effect),
                    Logged::Allowlist => {
                        if !self.apply_logged(&mut bans)? {
                            caught.reconciled = Some(self.reconcile_locked().await?);
                            continue 'log;
                        }
                        let allows = self.store.list_allows().await?;
                        self.set_allowlist(&allows)?;
                    }
                    Logged::Bulk => match own_bulk {
                        Some((at, effects)) if at == position => {
                            bans.extend_from_slice(effects);
                        }
                        _ => {
                            caught.reconciled = Some(self.reconcile_locked().await?);
                            continue 'log;
                        }
                    },
                }
            }
            if !self.apply_logged(&mut bans)? {
                caught.reconciled = Some(self.reconcile_locked().await?);
                continue;
            }
            self.applied.store(last, Ordering::Release);
        }
    }

    /// Applies effects read from the log; false when only a whole reconcile can place them
    /// (the tables cannot hold the store, so which bans they enforce depends on all of them).
    fn apply_logged(&self, effects: &mut Vec<Effect>) -> Result<bool> {
        if *self.left_out.lock().expect("lock") != (0, 0) {
            return Ok(false);
        }
        last_word(effects);
        match self.apply(effects) {
            Ok(_) => {
                effects.clear();
                Ok(true)
            }
            Err(EngineError::Refused(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remembers whether the last reconcile or catch-up failed, for status and the fleet.
    fn note<T>(&self, result: &Result<T>) {
        *self.last_error.lock().expect("lock") = result.as_ref().err().map(|e| e.to_string());
    }

    /// Where this host stands in the fleet, with a shared store.
    pub fn fleet_status(&self) -> Option<FleetStatus> {
        let instance = self.store.instance()?.to_owned();
        let announced = self.announced.as_ref().map_or(0, |a| *a.borrow() as i64);
        let head = self.head.load(Ordering::Acquire).max(announced);
        let applied = self.applied.load(Ordering::Acquire);
        Some(FleetStatus {
            instance,
            head,
            applied,
            behind: head.saturating_sub(applied).max(0) as u64,
            listening: self.store.listening(),
            last_error: self.last_error.lock().expect("lock").clone(),
        })
    }

    /// Reads the end of the fleet's log, catches up if this host is behind it (a notification
    /// lost with a connection), and records how this host is doing.
    pub async fn heartbeat(&self, every: std::time::Duration) -> Result<()> {
        let Some(instance) = self.store.instance().map(str::to_owned) else {
            return Ok(());
        };
        let head = self.store.head().await?;
        self.head.fetch_max(head, Ordering::AcqRel);
        if head > self.applied.load(Ordering::Acquire) {
            let caught = self.catch_up().await?;
            if caught.changes > 0 {
                tracing::info!(
                    "caught up with {} change{} of the fleet on the heartbeat",
                    caught.changes,
                    plural(caught.changes)
                );
            }
        }
        let status = self.status();
        let fleet = status.fleet.clone().unwrap_or_default();
        let report = crate::store::HostReport {
            instance,
            host: crate::store::host_name(),
            version: status.version,
            interfaces: status.interfaces.iter().map(|a| a.iface.clone()).collect(),
            started: self.started_at,
            heartbeat: Timestamp::now(),
            heartbeat_every_ms: every.as_millis() as u64,
            applied: fleet.applied,
            bans_held: (status.bans_v4.used + status.bans_v6.used) as u64,
            left_out: (status.bans_v4.left_out + status.bans_v6.left_out) as u64,
            capacity_v4: status.bans_v4.capacity as u64,
            capacity_v6: status.bans_v6.capacity as u64,
            listening: fleet.listening,
            last_error: fleet.last_error,
        };
        self.store.report_host(report).await?;
        Ok(())
    }

    /// Every agent of the fleet, as they last reported.
    pub async fn fleet(&self) -> Result<Vec<crate::api::FleetHost>> {
        let head = self.store.head().await?;
        let hosts = self.store.hosts().await?;
        let now = Timestamp::now();
        let this = self.store.instance();
        Ok(hosts
            .into_iter()
            .map(|h| {
                let age = now
                    .as_millis()
                    .saturating_sub(h.heartbeat.as_millis())
                    .max(0) as u64;
                let lag = head.saturating_sub(h.applied).max(0) as u64;
                let silent = age > 3 * h.heartbeat_every_ms.max(1);
                crate::api::FleetHost {
                    this: this == Some(h.instance.as_str()),
                    full: h.left_out > 0,
                    lagging: !silent && (lag > 0 || !h.listening),
                    silent,
                    heartbeat_age_secs: age / 1000,
                    lag,
                    host: h.host,
                    instance: h.instance,
                    version: h.version,
                    interfaces: h.interfaces,
                    started: h.started,
                    heartbeat: h.heartbeat,
                    applied: h.applied,
                    bans_enforced: h.bans_held,
                    left_out: h.left_out,
                    capacity_v4: h.capacity_v4,
                    capacity_v6: h.capacity_v6,
                    listening: h.listening,
                    last_error: h.last_error,
                }
            })
            .collect())
    }

    /// Deletes expired records from the store and their networks from the maps.
    pub async fn reap(&self) -> Result<usize> {
        let _w = self.writer.lock().await;
        let effects = self.store.remove_expired(Timestamp::now()).await?;
        let applied = self.apply(&effects)?;
        self.catch_up_after_own(None).await;
        Ok(applied.removed)
    }

    pub fn stats(&self) -> Result<StatsView> {
        let p = self.program.lock().expect("program lock");
        let counters = p.counters()?;
        let mut bans = p.maps.bans();
        let (v4, v6) = p.maps.counts();
        bans.retain(|(_, k)| k.hits > 0);
        bans.sort_by(|a, b| b.1.hits.cmp(&a.1.hits).then(a.0.cmp(&b.0)));
        Ok(StatsView {
            counters: Verdict::ALL
                .iter()
                .map(|v| {
                    let c = counters[*v as usize];
                    (
                        v.name().to_string(),
                        CounterView {
                            packets: c.packets,
                            bytes: c.bytes,
                        },
                    )
                })
                .collect(),
            top: bans
                .iter()
                .take(TOP_BANS)
                .map(|(n, k)| TopBan {
                    network: n.to_string(),
                    hits: k.hits,
                })
                .collect(),
            bans_v4: v4,
            bans_v6: v6,
            monitor: p.maps.monitor(),
            visits: None,
            geoip: Vec::new(),
        })
    }

    pub fn status(&self) -> StatusView {
        let p = self.program.lock().expect("program lock");
        let (v4, v6) = p.maps.counts();
        let (cap4, cap6) = p.maps.capacity();
        let (over4, over6) = p.maps.overflow_counts();
        let (left4, left6) = *self.left_out.lock().expect("lock");
        StatusView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            interfaces: self.attachments.clone(),
            monitor: p.maps.monitor(),
            pin_dir: p.pin_dir().display().to_string(),
            map_generation: p.generation().to_string(),
            adopted: p.adopted(),
            bans_v4: TableView {
                used: v4,
                capacity: cap4,
                overflow: over4,
                left_out: left4,
            },
            bans_v6: TableView {
                used: v6,
                capacity: cap6,
                overflow: over6,
                left_out: left6,
            },
            allowlist: p.maps.allowlist().len(),
            v6_filter_off: p.maps.v6_filter_off(),
            store: self.store.describe(),
            socket: self.config.socket.display().to_string(),
            last_reconcile: *self.last_reconcile.lock().expect("lock"),
            fleet: self.fleet_status(),
            crowdsec: None,
        }
    }
}

/// Keeps, of effects in the order the log gives them, the last for each network (in that
/// order): a batch applies its removals before its additions, so a ban and its unban read
/// together must be applied as the unban alone.
fn last_word(effects: &mut Vec<Effect>) {
    let mut seen = HashSet::with_capacity(effects.len());
    let mut kept: Vec<Effect> = effects
        .iter()
        .rev()
        .filter(|(n, _)| seen.insert(*n))
        .cloned()
        .collect();
    kept.reverse();
    *effects = kept;
}

/// Where the page after `ban` starts: `<network>,<source>` (sources have no comma).
fn cursor(ban: &Ban) -> String {
    format!("{},{}", ban.network, ban.source)
}

fn parse_cursor(text: &str) -> Result<(IpNet, String)> {
    let bad = || EngineError::bad(format!("after: `{text}` is not a page's `next`"), vec![]);
    let (network, source) = text.split_once(',').ok_or_else(bad)?;
    let network: IpNet = network.parse().map_err(|_| bad())?;
    Ok((network, validate_source(source).map_err(|_| bad())?))
}

fn allow_view(a: &Allow) -> AllowView {
    AllowView {
        network: a.network.to_string(),
        note: a.note.clone(),
        created: a.created,
    }
}

/// Parses every network of a request; any invalid one fails the whole request, naming each.
fn parse_networks(items: &[String]) -> Result<(Vec<IpNet>, Vec<String>)> {
    if items.is_empty() {
        return Err(EngineError::bad("no address or network given", vec![]));
    }
    let mut nets = Vec::with_capacity(items.len());
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        match ban::parse_network(item) {
            Ok((net, how)) => {
                warnings.extend(how.warning(item, &net));
                if seen.insert(net) {
                    nets.push(net);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        let message = if errors.len() == 1 {
            format!("{}; nothing was changed", errors[0])
        } else {
            format!(
                "{} invalid addresses or networks; nothing was changed",
                errors.len()
            )
        };
        return Err(EngineError::bad(
            message,
            if errors.len() == 1 { vec![] } else { errors },
        ));
    }
    Ok((nets, warnings))
}

/// Refuses, unless forced, to ban everything or anything the allowlist overlaps.
///
/// A synced list may have a million networks: each is checked in a few steps whatever the size
/// of the allowlist, and a message is only written for a network that has a problem.
fn check_force<'a>(
    nets: impl Iterator<Item = (&'a IpNet, Option<usize>)>,
    allows: &[Allow],
    force: bool,
) -> Result<()> {
    if force {
        return Ok(());
    }
    let allowed = Allowed::new(allows);
    let mut problems = nets.filter(|(net, _)| ban::is_everything(net) || allowed.overlaps(net));
    let describe = |(net, line): (&IpNet, Option<usize>)| {
        let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
        if ban::is_everything(net) {
            let family = if net.addr().is_ipv4() { "IPv4" } else { "IPv6" };
            format!("{at}{net} would drop all {family} traffic")
        } else {
            let allow = allows
                .iter()
                .find(|a| ban::overlaps(&a.network, net))
                .expect("an overlapping allowlist entry");
            format!("{at}{net} overlaps the allowlisted {}", allow.network)
        }
    };
    let shown: Vec<(&IpNet, Option<usize>)> = problems.by_ref().take(MAX_WARNINGS).collect();
    let count = shown.len() + problems.count();
    let (message, details) = match count {
        0 => return Ok(()),
        1 => (
            format!(
                "{}; pass --force to ban it anyway (the allowlist still wins)",
                describe(shown[0])
            ),
            vec![],
        ),
        _ => {
            let mut details: Vec<String> = shown.into_iter().map(describe).collect();
            if count > MAX_WARNINGS {
                details.push(format!("... and {} more", count - MAX_WARNINGS));
            }
            (
                format!("{count} networks need --force; nothing was changed"),
                details,
            )
        }
    };
    Err(EngineError::NeedsForce { message, details })
}

/// The allowlist as sorted, disjoint address ranges (the union of its networks), so that a
/// network is checked against it with one binary search rather than a pass over it.
struct Allowed {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Allowed {
    fn new(allows: &[Allow]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for allow in allows {
            match allow.network {
                IpNet::V4(n) => v4.push((n.network().to_bits(), n.broadcast().to_bits())),
                IpNet::V6(n) => v6.push((n.network().to_bits(), n.broadcast().to_bits())),
            }
        }
        Allowed {
            v4: union(v4),
            v6: union(v6),
        }
    }

    /// Whether `net` shares an address with an allowlisted network. Two networks that share
    /// one are nested, so this is what `ban::overlaps` says of some allowlist entry.
    fn overlaps(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => meets(&self.v4, n.network().to_bits(), n.broadcast().to_bits()),
            IpNet::V6(n) => meets(&self.v6, n.network().to_bits(), n.broadcast().to_bits()),
        }
    }
}

/// `ranges` (first and last address) sorted, with those that overlap made one.
fn union<T: Ord + Copy>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut union: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match union.last_mut() {
            Some(previous) if first <= previous.1 => previous.1 = previous.1.max(last),
            _ => union.push((first, last)),
        }
    }
    union
}

/// Whether the range `first..=last` meets one of the sorted, disjoint `ranges`.
fn meets<T: Ord + Copy>(ranges: &[(T, T)], first: T, last: T) -> bool {
    // The last range that starts at or before `last` is the only one that can reach `first`.
    let after = ranges.partition_point(|range| range.0 <= last);
    after > 0 && ranges[after - 1].1 >= first
}

/// Free text kept with a record: bounded, and without control characters.
fn check_text(field: &str, text: &str) -> Result<()> {
    if text.len() > 1024 {
        return Err(EngineError::bad(
            format!("the {field} is longer than 1024 bytes"),
            vec![],
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(EngineError::bad(
            format!("the {field} contains a control character"),
            vec![],
        ));
    }
    Ok(())
}

/// A source name: what `ban ls --source` and `ban sync --source` use.
fn validate_source(s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(EngineError::bad(
            format!("`{s}` is not a source name (1 to 64 letters, digits, `-`, `_`, `.`, `:`)"),
            vec![],
        ))
    }
}

fn cap(lines: &mut Vec<String>) {
    if lines.len() > MAX_WARNINGS {
        let more = lines.len() - MAX_WARNINGS;
        lines.truncate(MAX_WARNINGS);
        lines.push(format!("... and {more} more"));
    }
}

/// What [`cap`] makes of `items` shown with `show`, showing only the ones kept: a list may
/// have a million.
fn capped<T>(mut items: impl Iterator<Item = T>, show: impl Fn(T) -> String) -> Vec<String> {
    let mut lines: Vec<String> = items.by_ref().take(MAX_WARNINGS).map(show).collect();
    let more = items.count();
    if more > 0 {
        lines.push(format!("... and {more} more"));
    }
    lines
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn of_changes_read_together_the_last_for_each_network_is_applied() {
        let ban = Effective::Banned { expires: None };
        let mut effects = vec![
            (net("10.0.0.1/32"), ban),
            (net("10.0.0.2/32"), ban),
            (net("10.0.0.1/32"), Effective::Unbanned),
            (net("10.0.0.3/32"), Effective::Unbanned),
            (net("10.0.0.3/32"), ban),
        ];
        last_word(&mut effects);
        assert_eq!(
            effects,
            vec![
                (net("10.0.0.2/32"), ban),
                (net("10.0.0.1/32"), Effective::Unbanned),
                (net("10.0.0.3/32"), ban),
            ]
        );
    }

    #[test]
    fn one_bad_network_fails_the_request_and_names_it() {
        let err = parse_networks(&["10.0.0.1".into(), "10.0.0.300".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`10.0.0.300` is not an IP address or network; nothing was changed"
        );
    }

    #[test]
    fn host_bits_are_normalised_with_a_warning() {
        let (nets, warnings) = parse_networks(&["10.0.0.77/24".into()]).unwrap();
        assert_eq!(nets, vec![net("10.0.0.0/24")]);
        assert_eq!(
            warnings,
            vec!["10.0.0.77/24 has host bits set; using 10.0.0.0/24"]
        );
    }

    #[test]
    fn banning_everything_or_the_allowlist_needs_force() {
        let allows = vec![Allow {
            network: net("192.0.2.0/24"),
            note: String::new(),
            created: Timestamp::now(),
        }];
        let everything = net("0.0.0.0/0");
        let err = check_force([(&everything, None)].into_iter(), &allows, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("0.0.0.0/0 would drop all IPv4 traffic; pass --force"),
            "{err}"
        );
        let inside = net("192.0.2.7/32");
        let err = check_force([(&inside, Some(3))].into_iter(), &allows, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 3: 192.0.2.7/32 overlaps the allowlisted 192.0.2.0/24"),
            "{err}"
        );
        assert!(check_force([(&inside, None)].into_iter(), &allows, true).is_ok());
        let elsewhere = net("198.51.100.0/24");
        assert!(check_force([(&elsewhere, None)].into_iter(), &allows, false).is_ok());
    }

    #[test]
    fn source_names_are_checked() {
        assert!(validate_source("spamhaus-drop").is_ok());
        assert!(validate_source("").is_err());
        assert!(
            validate_source("a b")
                .unwrap_err()
                .to_string()
                .contains("not a source name")
        );
    }
}
