//! The stackd daemon: arguments, logging, then `stackd::daemon::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use stackd::{config, daemon};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// Keeps this host's Docker Compose deployments at their declared state.
#[derive(Parser, Debug)]
#[command(name = "stackd", version, about, long_about = None)]
struct Args {
    /// The cluster file [default: /etc/stackd/stackd.toml, or
    /// $XDG_CONFIG_HOME/stackd/stackd.toml with --user]
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run for the calling user on the session bus, state under $XDG_STATE_HOME.
    #[arg(long)]
    user: bool,
    /// This host's name in the cluster file [default: the `host` key, else the hostname]
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Check the configuration, print what is wrong with file:line:col, and exit.
    #[arg(long)]
    check_config: bool,
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("STACKD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if stackd::systemd::stderr_is_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    journald
                        .with_field_prefix(None)
                        .with_syslog_identifier("stackd".into()),
                )
                .init();
            return;
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| config::default_config_path(args.user));
    if args.check_config {
        let opts = config::LoadOptions {
            user_mode: args.user,
            host_override: args.host.clone(),
        };
        return match config::load(&path, &opts) {
            Ok(cfg) => {
                println!("{}: ok ({})", path.display(), cfg.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| {
            rt.block_on(daemon::run(daemon::Options {
                config: path,
                user_mode: args.user,
                host: args.host,
            }))
            .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
