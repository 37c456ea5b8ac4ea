//! The `tracking` binary: the agent (`tracking agent run`) and its CLI. Parsing and exit codes
//! only; everything else is in the library.

use std::process::ExitCode;

use clap::Parser as _;
use tracking_agent::{
    cli::{self, AgentCommand, Cli, Command},
    config::{self, AgentConfig},
    daemon,
    kernel::program::detach_all,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Agent(AgentCommand::Run(mut args)) => {
            args.socket = Some(cli.socket);
            runtime.block_on(run_agent(*args))
        }
        Command::Agent(AgentCommand::Detach { bpffs_dir }) => detach(&bpffs_dir),
        command => {
            let mut stdout = std::io::stdout();
            runtime
                .block_on(cli::run(cli.socket, command, &mut stdout))
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_agent(args: config::RunArgs) -> anyhow::Result<()> {
    let config = AgentConfig::resolve(args, config::default_route_iface)?;
    // Colour only for a person at a terminal: journald, files and pipes get plain lines.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!("the agent loads an XDP program and needs root");
    }
    let listeners = daemon::bind(&config).await?;
    daemon::run(config, listeners, daemon::shutdown_signal()).await?;
    Ok(())
}

fn detach(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let detached = detach_all(pin_dir)?;
    for iface in &detached.interfaces {
        println!("detached from {iface}");
    }
    if detached.pins_removed {
        println!("removed {}", pin_dir.display());
    } else if detached.interfaces.is_empty() {
        println!("nothing pinned at {}", pin_dir.display());
    }
    Ok(())
}
