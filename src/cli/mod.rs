//! stackctl: systemctl's habits for stackd. Only this module knows the
//! terminal; it talks to the daemon through `dbus::client`.
//!
//! This file parses nothing (clap does, `args.rs`) and draws little: it
//! dispatches each command to its own file and holds what several of them
//! print with (exit codes, JSON, counts, line width, the state dot).

pub mod args;
mod cluster_apply;
mod complete;
pub mod daemon_args;
mod dependencies;
mod health;
mod hosts;
mod is_state;
mod list;
mod logs;
mod notify;
mod ops;
mod push;
mod readiness;
mod remote;
mod required;
mod status;
mod tasks;
mod time;
mod top;
mod validate;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::dbus::client::{Client, ClientError, JobMode, ServiceOp, Target};
use crate::health::Health;
use crate::state::ActiveState;
pub use args::{
    command, Args, Command, CompleteWhat, ConfigAction, NotifyAction, Output, TopOrder,
};
pub use daemon_args::{daemon_command, DaemonArgs};
use remote::Conn;

/// Exit codes, following systemctl and the LSB.
pub mod exit {
    pub const OK: u8 = 0;
    /// A task failed, the daemon is unreachable, or access was denied.
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    /// `status`: the service is not running.
    pub const NOT_RUNNING: u8 = 3;
    /// No such service or task.
    pub const NO_SUCH: u8 = 4;
}

struct Failed(u8, String);

impl From<ClientError> for Failed {
    fn from(e: ClientError) -> Self {
        let code = match e.remote_name() {
            Some("NoSuchService" | "NoSuchTask") => exit::NO_SUCH,
            Some("InvalidArgument") => exit::USAGE,
            _ => exit::FAILURE,
        };
        Failed(code, e.to_string())
    }
}

type Result<T> = std::result::Result<T, Failed>;

pub fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stackctl: cannot start: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match rt.block_on(run(&args)) {
        Ok(code) => ExitCode::from(code),
        Err(Failed(code, msg)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: &Args) -> Result<u8> {
    if let Command::Validate { file, host } = &args.command {
        return validate::validate(args, file.clone(), host.clone()).await;
    }
    if let Command::Complete { what } = args.command {
        return Ok(complete::complete(args, what).await);
    }
    if let Command::NotifyAgent = args.command {
        return notify::notify_agent(args).await;
    }
    let json = args.output == Output::Json;
    let all_hosts = matches!(
        args.command,
        Command::List {
            all_hosts: true,
            ..
        }
    );
    if args.config.is_some() && (args.host.is_some() || all_hosts) {
        eprintln!(
            "stackctl: -c is ignored with -H and --all-hosts: the daemon's own cluster file \
             names the hosts"
        );
    }
    let local = Client::connect(&Target::default_for(args.user)).await?;
    if all_hosts {
        return list::list_all_hosts(&local, args, json).await;
    }
    if let Command::Config {
        action: ConfigAction::Push { file, force, apply },
    } = &args.command
    {
        let code = push::push(&local, args, file.clone(), *force, json).await?;
        if !*apply || code != exit::OK {
            return Ok(code);
        }
        return cluster_apply::apply_all_hosts(&local, false, *force, json).await;
    }
    if let Command::Apply {
        force,
        all_hosts: true,
        dry_run,
    } = &args.command
    {
        return cluster_apply::apply_all_hosts(&local, *dry_run, *force, json).await;
    }
    let client = match &args.host {
        Some(host) => Conn::to_host(local, host).await?,
        None => Conn::Bus(local),
    };
    match &args.command {
        Command::List { .. } => list::list(&client, args, json).await,
        // The local daemon's view, whichever host -H names.
        Command::Hosts => hosts::hosts(client.local(), args, json).await,
        Command::Status { names, .. } if names.is_empty() => {
            status::host_status(&client, json).await
        }
        Command::Status { names, lines } => {
            status::status(&client, args, names, *lines, json).await
        }
        Command::IsActive { names } => {
            is_state::is_state(&client, args, is_state::Is::Active, names).await
        }
        Command::IsFailed { names } => {
            is_state::is_state(&client, args, is_state::Is::Failed, names).await
        }
        Command::IsWanted { names } => {
            is_state::is_state(&client, args, is_state::Is::Wanted, names).await
        }
        Command::Start {
            names,
            dry_run: true,
            force,
            ..
        } => ops::dry_run_start(client.bus()?, names, *force).await,
        Command::Start {
            names,
            force: true,
            wait,
            ..
        } => {
            ops::queue_mode(
                &client,
                args,
                ServiceOp::Start,
                names,
                *wait,
                JobMode::Replace,
            )
            .await
        }
        Command::Start { names, wait, .. } => {
            ops::queue(&client, args, ServiceOp::Start, names, *wait).await
        }
        Command::Stop { names, force: true } => {
            ops::queue_mode(
                &client,
                args,
                ServiceOp::Stop,
                names,
                false,
                JobMode::Replace,
            )
            .await
        }
        Command::Stop { names, .. } => {
            ops::queue(&client, args, ServiceOp::Stop, names, false).await
        }
        Command::Migrate {
            name,
            to,
            force,
            with_volumes,
        } => {
            let id = client
                .bus()?
                .migrate(name, to, *force, *with_volumes)
                .await?;
            ops::follow_task(&client, args, id, name).await
        }
        Command::Restart { names, wait } => {
            ops::queue(&client, args, ServiceOp::Restart, names, *wait).await
        }
        Command::Update { names, wait } => {
            ops::queue(&client, args, ServiceOp::Update, names, *wait).await
        }
        Command::Pull { names } => ops::queue(&client, args, ServiceOp::Pull, names, false).await,
        Command::Down { names } => ops::queue(&client, args, ServiceOp::Down, names, false).await,
        Command::Prune {
            images,
            containers,
            networks,
            dry_run,
        } => {
            let id = client
                .bus()?
                .prune(*images, *containers, *networks, *dry_run)
                .await?;
            ops::follow_task(&client, args, id, "prune").await
        }
        Command::Rollback { names } => {
            let bus = client.bus()?;
            ops::submit_each(&client, args, names, false, |name| async move {
                Ok(bus.service_op(ServiceOp::Rollback, name).await?)
            })
            .await
        }
        Command::Tasks {
            service,
            state,
            lines,
        } => tasks::tasks(&client, args, service.as_deref(), state, *lines, json).await,
        Command::Task { id } => tasks::task(&client, *id, json).await,
        Command::Cancel { ids } => {
            for id in ids {
                client.bus()?.cancel(*id).await?;
            }
            Ok(exit::OK)
        }
        Command::Logs {
            name,
            follow,
            lines,
        } => logs::logs(&client, name, *lines, *follow).await,
        Command::Apply { force, .. } => {
            let ids = client.bus()?.apply(*force).await?;
            let mut code = exit::OK;
            for id in ids {
                code = code.max(ops::follow_task(&client, args, id, "apply").await?);
            }
            Ok(code)
        }
        Command::Reload { force } => {
            client.bus()?.reload(*force).await?;
            Ok(exit::OK)
        }
        Command::Check { name } => {
            for line in client.bus()?.check(name).await? {
                println!("{line}");
            }
            if !args.quiet {
                println!("{name}: preflight passed");
            }
            Ok(exit::OK)
        }
        Command::Dependencies { name, reverse } => {
            dependencies::dependencies(client.bus()?, name, *reverse, json).await
        }
        Command::Diagnose { name } => {
            for line in client.bus()?.diagnose(name).await? {
                println!("{line}");
            }
            Ok(exit::OK)
        }
        Command::Health {
            names,
            watch: false,
            ..
        } => health::health(client.bus()?, args, names, json).await,
        Command::Health {
            names,
            watch: true,
            delay,
        } => health::watch(client.bus()?, args, names, json, *delay).await,
        Command::Readiness => readiness::run(client.bus()?, args, json).await,
        Command::Required { operation, start } => {
            required::run(&client, args, operation, *start, json).await
        }
        Command::Top {
            order,
            delay,
            iterations,
            batch,
        } => {
            let opts = top::Options {
                order: *order,
                delay: Duration::try_from_secs_f64(*delay)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        Failed(
                            exit::USAGE,
                            format!("--delay {delay}: expected seconds above 0"),
                        )
                    })?,
                iterations: *iterations,
                batch: *batch || json || !std::io::stdout().is_terminal(),
                json,
            };
            top::run(client.bus()?, &opts).await?;
            Ok(exit::OK)
        }
        Command::Notify {
            action: NotifyAction::Test { channel },
        } => notify::notify_test(client.bus()?, channel.as_deref(), json).await,
        Command::Validate { .. }
        | Command::Complete { .. }
        | Command::NotifyAgent
        | Command::Config { .. } => {
            unreachable!("handled above")
        }
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<u8> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Failed(exit::FAILURE, e.to_string()))?;
    println!("{text}");
    Ok(exit::OK)
}

/// "1 service listed", "2 services listed" (`what` may be empty).
fn count(n: usize, one: &str, many: &str, what: &str) -> String {
    let noun = if n == 1 { one } else { many };
    if what.is_empty() {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun} {what}")
    }
}

/// How wide a line may be before it is ellipsized, as systemctl does:
/// only when stdout is a terminal and without `--full`; as wide as
/// `$COLUMNS` says, else the terminal. Piped output is never cut.
fn line_width(args: &Args) -> Option<usize> {
    let stdout = std::io::stdout();
    if args.full || !stdout.is_terminal() {
        return None;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .or_else(|| {
            rustix::termios::tcgetwinsize(&stdout)
                .ok()
                .map(|w| usize::from(w.ws_col))
                .filter(|n| *n > 0)
        })
}

/// `line` cut to `width` characters, the last one an ellipsis.
fn ellipsize(line: &str, width: Option<usize>) -> std::borrow::Cow<'_, str> {
    match width {
        Some(w) if line.chars().count() > w => {
            let kept: String = line.chars().take(w.saturating_sub(1)).collect();
            format!("{kept}…").into()
        }
        _ => line.into(),
    }
}

/// A colored dot as systemctl draws it, only on a terminal.
fn dot(active: &ActiveState, health: Health) -> &'static str {
    if !std::io::stdout().is_terminal() {
        return "●";
    }
    match (active, health) {
        (ActiveState::Failed, _) | (_, Health::Unhealthy) => "\x1b[0;1;31m●\x1b[0m",
        (ActiveState::Active, Health::Healthy) => "\x1b[0;1;32m●\x1b[0m",
        (ActiveState::Active | ActiveState::Activating | ActiveState::Deactivating, _) => {
            "\x1b[0;1;33m●\x1b[0m"
        }
        _ => "●",
    }
}

/// The daemon refused to show logs to this caller (`Policy::check_logs`);
/// what it may see is still shown, with the reason for the rest.
fn logs_denied(e: &Failed) -> bool {
    e.1.contains("may not read logs")
}
