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

use crate::kernel::ModeChoice;

pub const DEFAULT_CONFIG: &str = "/etc/tracking/tracking.toml";
pub const DEFAULT_SOCKET: &str = "/run/tracking/tracking.sock";
pub const DEFAULT_DATABASE: &str = "/var/lib/tracking/tracking.db";
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/tracking";
pub const DEFAULT_MAX_BANS_V4: u32 = 1 << 20;
pub const DEFAULT_MAX_BANS_V6: u32 = 1 << 17;
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(60);
pub const DEFAULT_REAP: Duration = Duration::from_secs(5);

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
    /// Ban store: a SQLite file path [default: /var/lib/tracking/tracking.db]
    #[arg(long, env = "TRACKING_DATABASE", value_name = "PATH")]
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
    /// Monitor mode: count what bans match, drop nothing [default: off]
    #[arg(long, env = "TRACKING_MONITOR", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub monitor: Option<bool>,
    /// Log every match from the XDP program at debug level (costly) [default: off]
    #[arg(long, env = "TRACKING_LOG_MATCHES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub log_matches: Option<bool>,
    /// Log filter, as in RUST_LOG [default: info]
    #[arg(long, env = "TRACKING_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::time::parse_duration(s)
}

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
    pub monitor: Option<bool>,
    pub log_matches: Option<bool>,
    pub log: Option<String>,
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| crate::time::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Where bans are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
}

impl Database {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Err(ConfigError::Invalid(
                "database: PostgreSQL is not supported by this build yet; use a SQLite file path"
                    .into(),
            ));
        }
        if s.is_empty() {
            return Err(ConfigError::Invalid("database: empty path".into()));
        }
        Ok(Database::Sqlite(PathBuf::from(s)))
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
    pub monitor: bool,
    pub log_matches: bool,
    pub log: String,
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
            monitor: args.monitor.or(file.monitor).unwrap_or(false),
            log_matches: args.log_matches.or(file.log_matches).unwrap_or(false),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
        };
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
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
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
    fn the_default_route_is_found_in_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     ens3\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_default_route(table), Some("ens3".into()));
        assert_eq!(parse_default_route("Iface\n"), None);
    }
}
