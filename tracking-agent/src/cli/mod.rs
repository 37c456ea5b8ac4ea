//! The `tracking` command line: clap definitions and what each command does.
//!
//! Every command but `agent run` and `agent detach` is a request to the running agent over its
//! control socket ([`client`]); their output is made in [`output`].

pub mod client;
pub mod output;

use std::{io::Read as _, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{
    api::{
        AddAllows, AddBans, AddUaRules, BanList, BanListQuery, MAX_BAN_PAGE, RemoveAllows,
        RemoveBans, RemoveUaRules, SyncQuery,
    },
    config::{DEFAULT_BPFFS_DIR, DEFAULT_SOCKET, RunArgs},
    time::{Timestamp, parse_duration},
};
use client::{Client, ClientError};

/// Drops packets from banned addresses with XDP and tracks who is visiting a site right now.
#[derive(Debug, Parser)]
#[command(name = "tracking", version, about, propagate_version = true)]
pub struct Cli {
    /// Control socket of the agent [default: /run/tracking/tracking.sock]
    #[arg(long, global = true, env = "TRACKING_SOCKET", value_name = "PATH", default_value = DEFAULT_SOCKET, hide_default_value = true)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or remove the agent
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage bans: packets from a banned address or network are dropped
    #[command(subcommand)]
    Ban(BanCommand),
    /// Manage the allowlist: networks never dropped, whatever the bans say
    #[command(subcommand)]
    Allow(AllowCommand),
    /// Manage user-agent rules: visits whose user agent contains a keyword are not tracked
    #[command(subcommand)]
    Ua(UaCommand),
    /// Visitors: who is on the site now (or recently)
    Visitors {
        /// Every stored visitor record, not only the active ones
        #[arg(long)]
        all: bool,
        /// At most this many, most recent first
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Packet counters and the bans that matched most
    Stats(JsonFlag),
    /// Interfaces, attach mode, map usage, pins and store of the running agent
    Status(JsonFlag),
    /// The agents sharing this agent's PostgreSQL store: who lags, is full or went silent
    Fleet(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the agent (as root): load and attach the XDP program, keep it in sync with the store
    Run(Box<RunArgs>),
    /// Detach the XDP program from every interface and remove its pinned maps and links
    Detach {
        /// Directory on bpffs holding the pins [default: /sys/fs/bpf/tracking]
        #[arg(long, env = "TRACKING_BPFFS_DIR", value_name = "DIR", default_value = DEFAULT_BPFFS_DIR, hide_default_value = true)]
        bpffs_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// Ban addresses or networks
    Add {
        /// Addresses or networks (CIDR), e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32
        #[arg(required = true, value_name = "ADDR|CIDR")]
        networks: Vec<String>,
        /// Why, shown in `ban ls`
        #[arg(long, default_value = "")]
        reason: String,
        /// Lift the ban after this long, e.g. 90s, 10m, 1h, 7d
        #[arg(long, value_parser = duration, conflicts_with = "until", value_name = "DURATION")]
        ttl: Option<std::time::Duration>,
        /// Lift the ban at this time (RFC 3339, e.g. 2026-12-31T23:59:59Z)
        #[arg(long, value_parser = timestamp, value_name = "TIME")]
        until: Option<Timestamp>,
        /// Record the ban under this source instead of `cli`
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Ban even 0.0.0.0/0, ::/0 or networks overlapping the allowlist (which still wins)
        #[arg(long)]
        force: bool,
    },
    /// Remove bans
    Rm {
        #[arg(required = true, value_name = "ADDR|CIDR")]
        networks: Vec<String>,
        /// Only the records of this source (default: every source)
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
    },
    /// List bans with their hit counts and time left, in network order
    Ls {
        /// Only the bans of this source
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Only the networks that contain this address
        #[arg(long, value_name = "ADDR")]
        contains: Option<String>,
        /// Only the bans whose reason contains this text (in any case)
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// At most this many (one page; the last line says where the next starts) [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Start after this ban (the `next` of the previous page)
        #[arg(long, value_name = "NEXT")]
        after: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Make the bans of a source equal to a list: add what is new, remove what is gone
    Sync {
        /// The list: one address or network a line, `#`/`;` comments (Spamhaus DROP style); `-` for standard input
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Source name the list's bans are kept under [default: the file name without extension]
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Accept 0.0.0.0/0, ::/0 and networks overlapping the allowlist
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum AllowCommand {
    /// Allowlist networks (lockout protection: they are never dropped)
    Add {
        #[arg(required = true, value_name = "ADDR|CIDR")]
        networks: Vec<String>,
        /// Why, shown in `allow ls`
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove networks from the allowlist
    Rm {
        #[arg(required = true, value_name = "ADDR|CIDR")]
        networks: Vec<String>,
    },
    /// List the allowlist
    Ls(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum UaCommand {
    /// Stop tracking visits whose user agent contains these keywords (case-insensitive)
    Add {
        #[arg(required = true, value_name = "KEYWORD")]
        keywords: Vec<String>,
        /// Why, shown in `ua ls`
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove user-agent rules: the keywords given, or every rule of --source
    Rm {
        #[arg(required_unless_present = "source", value_name = "KEYWORD")]
        keywords: Vec<String>,
        /// Only rules of this source; without keywords, all of them (`--source bots`)
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
    },
    /// List the user-agent rules
    Ls {
        /// Only the rules of this source (`cli`, `bots`)
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add a list the agent carries as rules of their own source
    Import {
        /// The crawler user agents of the crawler-user-agents project (about 1,500), as
        /// rules of source `bots`
        #[arg(long, required = true)]
        bots: bool,
    },
}

#[derive(Debug, Clone, Copy, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s)
}

fn timestamp(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s)
}

/// Errors of CLI commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a command that talks to the agent; `out` receives what to print.
pub async fn run(
    socket: PathBuf,
    command: Command,
    out: &mut impl std::io::Write,
) -> Result<(), CliError> {
    let client = Client::new(socket);
    let print = |out: &mut dyn std::io::Write, text: String| {
        let _ = out.write_all(text.as_bytes());
    };
    match command {
        Command::Agent(_) => unreachable!("handled by main"),
        Command::Ban(BanCommand::Add {
            networks,
            reason,
            ttl,
            until,
            source,
            force,
        }) => {
            let req = AddBans {
                networks,
                reason,
                source,
                ttl_secs: ttl.map(|d| d.as_secs().max(1)),
                until,
                force,
            };
            let reply = client.add_bans(&req).await?;
            print(out, output::added_bans(&reply));
        }
        Command::Ban(BanCommand::Rm { networks, source }) => {
            let reply = client.remove_bans(&RemoveBans { networks, source }).await?;
            print(out, output::removed_bans(&reply));
        }
        Command::Ban(BanCommand::Ls {
            source,
            contains,
            search,
            limit,
            after,
            json,
        }) => {
            let mut query = BanListQuery {
                source,
                contains,
                q: search,
                limit: Some(limit.unwrap_or(MAX_BAN_PAGE)),
                after,
            };
            // One page when a limit is given; every page otherwise.
            let mut list = client.list_bans(&query).await?;
            while limit.is_none()
                && let Some(next) = list.next.take()
            {
                query.after = Some(next);
                let page: BanList = client.list_bans(&query).await?;
                list.bans.extend(page.bans);
                list.next = page.next;
                list.total = page.total;
            }
            print(
                out,
                if json.json {
                    output::json(&list)
                } else {
                    output::ban_list(&list)
                },
            );
        }
        Command::Ban(BanCommand::Sync {
            file,
            source,
            force,
            json,
        }) => {
            let source = match source {
                Some(s) => s,
                None if file.as_os_str() == "-" => {
                    return Err(CliError::Usage(
                        "reading the list from standard input needs --source NAME".into(),
                    ));
                }
                None => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        CliError::Usage(format!(
                            "cannot name a source after {}; pass --source",
                            file.display()
                        ))
                    })?,
            };
            let list = read_list(&file)?;
            let reply = client.sync(&SyncQuery { source, force }, list).await?;
            print(
                out,
                if json.json {
                    output::json(&reply)
                } else {
                    output::synced(&reply)
                },
            );
        }
        Command::Allow(AllowCommand::Add { networks, note }) => {
            let reply = client.add_allows(&AddAllows { networks, note }).await?;
            print(out, output::added_allows(&reply));
        }
        Command::Allow(AllowCommand::Rm { networks }) => {
            let reply = client.remove_allows(&RemoveAllows { networks }).await?;
            print(out, output::removed_allows(&reply));
        }
        Command::Allow(AllowCommand::Ls(json)) => {
            let allows = client.list_allows().await?;
            print(
                out,
                if json.json {
                    output::json(&allows)
                } else {
                    output::allow_table(&allows)
                },
            );
        }
        Command::Ua(UaCommand::Add { keywords, note }) => {
            let added = client.add_ua_rules(&AddUaRules { keywords, note }).await?;
            print(out, output::added_ua(&added));
        }
        Command::Ua(UaCommand::Rm { keywords, source }) => {
            let whole_source = keywords.is_empty();
            let reply = client
                .remove_ua_rules(&RemoveUaRules {
                    keywords,
                    source: source.clone(),
                })
                .await?;
            match source {
                Some(source) if whole_source => {
                    print(out, output::removed_ua_source(&source, &reply))
                }
                _ => print(out, output::removed_ua(&reply)),
            }
        }
        Command::Ua(UaCommand::Import { bots }) => {
            debug_assert!(bots, "clap requires --bots");
            let reply = client
                .import_ua_rules(&crate::api::ImportUaRules {
                    list: crate::bots::SOURCE.to_string(),
                })
                .await?;
            print(out, output::imported_ua(&reply));
        }
        Command::Ua(UaCommand::Ls { source, json }) => {
            let rules = client.list_ua_rules(source.as_deref()).await?;
            print(
                out,
                if json.json {
                    output::json(&rules)
                } else {
                    output::ua_table(&rules)
                },
            );
        }
        Command::Visitors { all, limit, json } => {
            let visitors = client.visitors(!all, limit).await?;
            print(
                out,
                if json.json {
                    output::json(&visitors)
                } else {
                    output::visitor_table(&visitors)
                },
            );
        }
        Command::Stats(json) => {
            let stats = client.stats().await?;
            print(
                out,
                if json.json {
                    output::json(&stats)
                } else {
                    output::stats(&stats)
                },
            );
        }
        Command::Fleet(json) => {
            let hosts = client.fleet().await?;
            print(
                out,
                if json.json {
                    output::json(&hosts)
                } else {
                    output::fleet(&hosts)
                },
            );
        }
        Command::Status(json) => {
            let status = client.status().await?;
            print(
                out,
                if json.json {
                    output::json(&status)
                } else {
                    output::status(&status)
                },
            );
        }
    }
    Ok(())
}

fn read_list(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    let result = if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut buf).map(|_| ())
    } else {
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map(|_| ())
    };
    result.map_err(|source| CliError::Read {
        path: file.clone(),
        source,
    })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracking").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ban_add_takes_several_networks_a_reason_and_a_ttl() {
        let cli = parse(&[
            "ban",
            "add",
            "192.0.2.7",
            "198.51.100.0/24",
            "--reason",
            "scanner",
            "--ttl",
            "1h",
        ])
        .unwrap();
        let Command::Ban(BanCommand::Add {
            networks,
            reason,
            ttl,
            until,
            force,
            ..
        }) = cli.command
        else {
            panic!("not ban add")
        };
        assert_eq!(networks, vec!["192.0.2.7", "198.51.100.0/24"]);
        assert_eq!(reason, "scanner");
        assert_eq!(ttl, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(until, None);
        assert!(!force);
    }

    #[test]
    fn ttl_and_until_exclude_each_other() {
        let err = parse(&[
            "ban",
            "add",
            "192.0.2.7",
            "--ttl",
            "1h",
            "--until",
            "2030-01-01T00:00:00Z",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn a_bad_ttl_is_named() {
        let err = parse(&["ban", "add", "192.0.2.7", "--ttl", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`soon` is not a duration"), "{err}");
        let err = parse(&["ban", "add", "192.0.2.7", "--until", "tomorrow"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tomorrow` is not a time"), "{err}");
    }

    #[test]
    fn ban_add_needs_a_network() {
        let err = parse(&["ban", "add"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn ua_and_visitors_parse() {
        let cli = parse(&["ua", "add", "bot", "Crawler", "--note", "search engines"]).unwrap();
        assert!(
            matches!(cli.command, Command::Ua(UaCommand::Add { ref keywords, .. }) if keywords == &["bot", "Crawler"])
        );
        let cli = parse(&["visitors", "--all", "--limit", "5", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Visitors {
                all: true,
                limit: 5,
                json: JsonFlag { json: true }
            }
        ));
    }

    #[test]
    fn sync_needs_a_file() {
        assert!(parse(&["ban", "sync"]).is_err());
        let cli = parse(&["ban", "sync", "--file", "-", "--source", "drop"]).unwrap();
        assert!(matches!(cli.command, Command::Ban(BanCommand::Sync { .. })));
    }

    #[test]
    fn the_socket_flag_works_before_and_after_the_command() {
        let cli = parse(&["--socket", "/tmp/a.sock", "status"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/a.sock"));
        let cli = parse(&["ban", "ls", "--socket", "/tmp/b.sock", "--json"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/b.sock"));
    }

    #[test]
    fn agent_run_documents_every_setting_with_its_default() {
        let mut cmd = Cli::command();
        let run = cmd
            .find_subcommand_mut("agent")
            .unwrap()
            .find_subcommand_mut("run")
            .unwrap();
        let help = run.render_long_help().to_string();
        for flag in [
            "--config",
            "--iface",
            "--xdp-mode",
            "--database",
            "--bpffs-dir",
            "--max-bans-v4",
            "--max-bans-v6",
            "--reconcile-interval",
            "--reap-interval",
            "--monitor",
            "--log-matches",
            "--log",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        for arg in run.get_arguments().filter(|a| a.get_id() != "help") {
            let text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                text.contains("[default:"),
                "--{} does not state its default",
                arg.get_id()
            );
        }
    }

    #[tokio::test]
    async fn sync_from_stdin_needs_a_source_name() {
        let cmd = parse(&["ban", "sync", "--file", "-"]).unwrap().command;
        let err = run("/nonexistent.sock".into(), cmd, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading the list from standard input needs --source NAME"
        );
    }

    #[tokio::test]
    async fn a_missing_list_file_is_named() {
        let cmd = parse(&["ban", "sync", "--file", "/nonexistent/drop.txt"])
            .unwrap()
            .command;
        let err = run("/nonexistent.sock".into(), cmd, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/drop.txt"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn every_command_says_clearly_when_the_agent_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let cmd = parse(&["ban", "ls"]).unwrap().command;
        let err = run(socket.clone(), cmd, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("the agent is not running"), "{err}");
        assert!(err.contains(&socket.display().to_string()), "{err}");
    }
}
