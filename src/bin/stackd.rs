//! The stackd daemon: arguments, logging, then `stackd::daemon::run`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use stackd::cli::DaemonArgs;
use stackd::{config, daemon};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

fn init_logging() {
    let filter = EnvFilter::try_from_env("STACKD_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
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
    let args = DaemonArgs::parse();
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| config::default_config_path(args.user));
    if args.check_config {
        let opts = config::LoadOptions {
            user_mode: args.user,
            host_override: args.host.clone(),
        };
        // The file, then what start-up would refuse about this host.
        let checked = config::load(&path, &opts)
            .map_err(|e| Box::new(daemon::DaemonError::from(e)))
            .and_then(|cfg| daemon::check_host(&cfg).map(|()| cfg));
        return match checked {
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
    let engine = if args.sim {
        tracing::warn!("running on the simulated engine (--sim): nothing here touches Docker");
        stackd::engine::Engine::Sim(stackd::engine::sim::Sim::new())
    } else {
        stackd::engine::Engine::Docker
    };
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
                engine,
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
