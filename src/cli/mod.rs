//! stackctl: systemctl's habits for stackd. Only this module knows the
//! terminal; it talks to the daemon through `dbus::client`.

pub mod args;
mod cluster_apply;
pub mod daemon_args;
mod health;
mod push;
mod readiness;
mod remote;
mod required;
mod time;
mod top;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config;
use crate::dbus::client::{Client, ClientError, ServiceInfo, Target, TaskInfo};
use crate::dbus::types::{ServiceRow, TaskRow};
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
        return validate(args, file.clone(), host.clone()).await;
    }
    if let Command::Complete { what } = args.command {
        return Ok(complete(args, what).await);
    }
    if let Command::NotifyAgent = args.command {
        return notify_agent(args).await;
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
        return list_all_hosts(&local, args, json).await;
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
        Command::List { .. } => list(&client, args, json).await,
        // The local daemon's view, whichever host -H names.
        Command::Hosts => hosts(client.local(), args, json).await,
        Command::Status { names, .. } if names.is_empty() => host_status(&client, json).await,
        Command::Status { names, lines } => status(&client, args, names, *lines, json).await,
        Command::IsActive { names } => is_state(&client, args, Is::Active, names).await,
        Command::IsFailed { names } => is_state(&client, args, Is::Failed, names).await,
        Command::IsWanted { names } => is_state(&client, args, Is::Wanted, names).await,
        Command::Start {
            names,
            dry_run: true,
            force,
            ..
        } => dry_run_start(client.bus()?, names, *force).await,
        Command::Start {
            names,
            force: true,
            wait,
            ..
        } => forced(&client, args, "StartServiceMode", names, *wait).await,
        Command::Start { names, wait, .. } => {
            ops(&client, args, "StartService", names, *wait).await
        }
        Command::Stop { names, force: true } => {
            forced(&client, args, "StopServiceMode", names, false).await
        }
        Command::Stop { names, .. } => ops(&client, args, "StopService", names, false).await,
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
            follow_task(&client, args, id, name).await
        }
        Command::Restart { names, wait } => {
            ops(&client, args, "RestartService", names, *wait).await
        }
        Command::Update { names, wait } => ops(&client, args, "UpdateService", names, *wait).await,
        Command::Pull { names } => ops(&client, args, "PullService", names, false).await,
        Command::Down { names } => ops(&client, args, "DownService", names, false).await,
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
            follow_task(&client, args, id, "prune").await
        }
        Command::Rollback { names } => {
            let bus = client.bus()?;
            submit_each(&client, args, names, false, |name| async move {
                Ok(bus.service_op("Rollback", name).await?)
            })
            .await
        }
        Command::Tasks {
            service,
            state,
            lines,
        } => tasks(&client, args, service.as_deref(), state, *lines, json).await,
        Command::Task { id } => task(&client, *id, json).await,
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
        } => logs(&client, name, *lines, *follow).await,
        Command::Apply { force, .. } => {
            let ids = client.bus()?.apply(*force).await?;
            let mut code = exit::OK;
            for id in ids {
                code = code.max(follow_task(&client, args, id, "apply").await?);
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
            dependencies(client.bus()?, name, *reverse, json).await
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
        } => health(client.bus()?, args, names, json).await,
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
        } => notify_test(client.bus()?, channel.as_deref(), json).await,
        Command::Validate { .. }
        | Command::Complete { .. }
        | Command::NotifyAgent
        | Command::Config { .. } => {
            unreachable!("handled above")
        }
    }
}

/// `stackctl notify-agent`: one line per alert shown (or not), until a
/// bus connection is lost, which is a failure so that systemd restarts it.
async fn notify_agent(args: &Args) -> Result<u8> {
    let daemon = if args.user {
        Target::Session
    } else {
        Target::System
    };
    crate::dbus::agent::run(
        &daemon,
        |summary| println!("shown: {summary}"),
        |why| eprintln!("stackctl notify-agent: {why}"),
    )
    .await?;
    Ok(exit::OK)
}

/// `stackctl __complete services|tasks`: candidates for the completion
/// scripts, `word<TAB>description` a line. Silent on every error: a shell
/// completing a word has no use for a message, and exits 0 either way.
async fn complete(args: &Args, what: CompleteWhat) -> u8 {
    let Ok(client) = Client::connect(&Target::default_for(args.user)).await else {
        return exit::OK;
    };
    let lines: Vec<String> = match what {
        CompleteWhat::Services => match client.list_services().await {
            Ok(rows) => rows
                .into_iter()
                .map(|r| format!("{}\t{} {}", r.name, r.active_state, r.sub_state))
                .collect(),
            Err(_) => Vec::new(),
        },
        CompleteWhat::Tasks => match client.tasks(None, &[], Some(50)).await {
            Ok(rows) => rows
                .into_iter()
                .map(|t| format!("{}\t{} {} {}", t.id, t.kind, t.service, t.state))
                .collect(),
            Err(_) => Vec::new(),
        },
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    exit::OK
}

fn print_json<T: Serialize>(value: &T) -> Result<u8> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Failed(exit::FAILURE, e.to_string()))?;
    println!("{text}");
    Ok(exit::OK)
}

/// `stackctl validate`: the file as the daemon would read it. An empty
/// file is refused (a truncated one, almost certainly); and when a daemon
/// of the same host runs, a file that would remove every one of its
/// services, or more than `reload_guard` of them, gets a warning: the
/// daemon would refuse to reload it without `--force`.
async fn validate(
    args: &Args,
    file: Option<std::path::PathBuf>,
    host: Option<String>,
) -> Result<u8> {
    let path = file.unwrap_or_else(|| config::default_config_path(args.user));
    if std::fs::read(&path).is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace)) {
        return Err(Failed(
            exit::FAILURE,
            format!(
                "{}: the file is empty; a cluster file with nothing in it is almost certainly \
                 a truncated one",
                path.display()
            ),
        ));
    }
    let opts = config::LoadOptions {
        user_mode: args.user,
        host_override: host,
    };
    let cfg = config::load(&path, &opts).map_err(|e| Failed(exit::FAILURE, e.to_string()))?;
    println!("{}: ok ({})", path.display(), cfg.summary());
    let compared = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        compare_with_daemon(args, &cfg),
    )
    .await;
    if let Ok(Some(why)) = compared {
        eprintln!(
            "warning: compared with the running stackd: {why}; it would refuse to reload this \
             file without `stackctl reload --force`"
        );
    }
    Ok(exit::OK)
}

/// What the running daemon of `cfg`'s host would say about losing
/// services to `cfg` (None when none runs, or nothing trips the guard).
async fn compare_with_daemon(args: &Args, cfg: &config::Config) -> Option<String> {
    let client = Client::connect(&Target::default_for(args.user))
        .await
        .ok()?;
    if !client.daemon_running().await {
        return None;
    }
    if client.manager().await.ok()?.host != cfg.host {
        return None;
    }
    let running: Vec<String> = client
        .list_services()
        .await
        .ok()?
        .into_iter()
        .map(|r| r.name)
        .collect();
    let removed: Vec<String> = running
        .iter()
        .filter(|n| cfg.service(n).map_or(true, |s| !s.assigned_to(&cfg.host)))
        .cloned()
        .collect();
    config::guard_message(running.len(), &removed, cfg.reload_guard)
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

/// The `Tasks:` block of `status`: the first task on the label's line,
/// the others under it, id, kind and result each in a column.
fn task_block(recent: &[TaskRow]) -> Vec<String> {
    let result = |t: &TaskRow| {
        if t.result.is_empty() {
            t.state.clone()
        } else {
            t.result.clone()
        }
    };
    let iw = recent
        .iter()
        .map(|t| t.id.to_string().len() + 1)
        .max()
        .unwrap_or(0);
    let kw = recent.iter().map(|t| t.kind.len()).max().unwrap_or(0);
    let rw = recent.iter().map(|t| result(t).len()).max().unwrap_or(0);
    recent
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let label = if i == 0 { "Tasks:" } else { "" };
            format!(
                "{label:>13} {:<iw$} {:<kw$} {:<rw$} ({})",
                format!("#{}", t.id),
                t.kind,
                result(t),
                time::ago(t.created_usec)
            )
        })
        .collect()
}

/// Which question an is-* verb asks.
#[derive(Clone, Copy)]
enum Is {
    Active,
    Failed,
    Wanted,
}

/// `is-active`, `is-failed`, `is-wanted`: one state a line (none with
/// --quiet). As systemctl: 0 when at least one name answers yes; else 3
/// (is-active, "not running") or 1 (is-failed, is-wanted); 4 when none
/// answers yes and a name is unknown.
async fn is_state(client: &Conn, args: &Args, is: Is, names: &[String]) -> Result<u8> {
    let mut yes = false;
    let mut unknown = false;
    for name in names {
        match client.service(name).await {
            Ok(s) => {
                let (state, hit) = match is {
                    Is::Active => (s.active_state.as_str(), s.active_state == "active"),
                    Is::Failed => (s.active_state.as_str(), s.active_state == "failed"),
                    Is::Wanted => (s.desired_state.as_str(), s.desired_state == "running"),
                };
                yes |= hit;
                if !args.quiet {
                    println!("{state}");
                }
            }
            Err(Failed(code, why)) if code == exit::NO_SUCH => {
                unknown = true;
                if !args.quiet {
                    println!("unknown");
                }
                eprintln!("{name}: {why}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(match (yes, unknown, is) {
        (true, _, _) => exit::OK,
        (false, true, _) => exit::NO_SUCH,
        (false, false, Is::Active) => exit::NOT_RUNNING,
        (false, false, _) => exit::FAILURE,
    })
}

/// A colored dot as systemctl draws it, only on a terminal.
fn dot(active: &str, health: &str) -> &'static str {
    if !std::io::stdout().is_terminal() {
        return "●";
    }
    match (active, health) {
        ("failed", _) | (_, "unhealthy") => "\x1b[0;1;31m●\x1b[0m",
        ("active", "healthy") => "\x1b[0;1;32m●\x1b[0m",
        ("active", _) | ("activating", _) | ("deactivating", _) => "\x1b[0;1;33m●\x1b[0m",
        _ => "●",
    }
}

/// `list --all-hosts`: every host of the daemon's cluster file at once,
/// this one directly, the others relayed by it to their peer endpoints
/// (each bounded by the daemon's peer timeout).
async fn list_all_hosts(local: &Client, args: &Args, json: bool) -> Result<u8> {
    let own = local.manager().await?.host;
    let hosts: Vec<String> = local
        .list_hosts()
        .await?
        .into_iter()
        .map(|h| h.name)
        .collect();
    let asks = hosts.iter().map(|h| {
        let own = &own;
        async move {
            let rows = if h == own {
                local.list_services().await
            } else {
                local.host_services(h).await
            };
            (h.clone(), rows.map_err(Failed::from))
        }
    });
    let results = futures_util::future::join_all(asks).await;
    let mut rows: Vec<ServiceRow> = Vec::new();
    let mut down: Vec<(String, String)> = Vec::new();
    for (host, r) in results {
        match r {
            Ok(mut rs) => {
                for row in &mut rs {
                    row.host = host.clone();
                }
                rows.extend(rs);
            }
            Err(Failed(_, e)) => down.push((host, e)),
        }
    }
    if json {
        #[derive(Serialize)]
        struct Unreachable<'a> {
            host: &'a str,
            error: &'a str,
        }
        #[derive(Serialize)]
        struct All<'a> {
            services: &'a [ServiceRow],
            unreachable: Vec<Unreachable<'a>>,
        }
        print_json(&All {
            services: &rows,
            unreachable: down
                .iter()
                .map(|(h, e)| Unreachable { host: h, error: e })
                .collect(),
        })?;
    } else {
        let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(7);
        let hw = hosts.iter().map(String::len).max().unwrap_or(0).max(4);
        if !args.no_legend {
            println!(
                "{:hw$}  {:w$}  {:8} {:12} {:10} {:10} CONTAINERS",
                "HOST", "SERVICE", "DESIRED", "ACTIVE", "SUB", "HEALTH"
            );
        }
        for r in &rows {
            println!(
                "{:hw$}  {:w$}  {:8} {:12} {:10} {:10} {}",
                r.host,
                r.name,
                r.desired_state,
                r.active_state,
                r.sub_state,
                r.health,
                r.containers
            );
        }
        let at = time::timestamp(time::now_usec());
        for (h, e) in &down {
            println!("{:hw$}  unreachable (asked {at}): {e}", h);
        }
        if !args.no_legend {
            println!(
                "\n{} on {}; {} unreachable.",
                count(rows.len(), "service", "services", "listed"),
                count(hosts.len() - down.len(), "host", "hosts", ""),
                down.len()
            );
        }
    }
    Ok(if down.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

async fn list(client: &Conn, args: &Args, json: bool) -> Result<u8> {
    let (running, category) = match &args.command {
        Command::List {
            running, category, ..
        } => (*running, category.as_deref()),
        _ => (false, None),
    };
    let mut rows = client.list_services().await?;
    // The registry's words come from this host's daemon only.
    let registry = match client {
        Conn::Bus(c) => c.list_registry().await.unwrap_or_default(),
        Conn::Host { .. } if category.is_some() => {
            return Err(Failed(
                exit::USAGE,
                "--category is not available with -H; run it on the host".into(),
            ))
        }
        Conn::Host { .. } => Vec::new(),
    };
    let words = |name: &str| registry.iter().find(|r| r.name == name);
    if running {
        rows.retain(|r| r.active_state == "active");
    }
    if let Some(c) = category {
        rows.retain(|r| words(&r.name).is_some_and(|w| w.category == c));
    }
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            row: &'a ServiceRow,
            kind: &'a str,
            category: &'a str,
            description: &'a str,
        }
        let out: Vec<Row<'_>> = rows
            .iter()
            .map(|r| {
                let w = words(&r.name);
                Row {
                    row: r,
                    kind: w.map_or("", |w| w.kind.as_str()),
                    category: w.map_or("", |w| w.category.as_str()),
                    description: w.map_or("", |w| w.description.as_str()),
                }
            })
            .collect();
        return print_json(&out);
    }
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(7);
    // Category and description columns only when the file gives some.
    let described = rows.iter().any(|r| {
        words(&r.name).is_some_and(|w| !w.category.is_empty() || !w.description.is_empty())
    });
    let cw = rows
        .iter()
        .filter_map(|r| words(&r.name).map(|w| w.category.len()))
        .max()
        .unwrap_or(0)
        .max(8);
    if !args.no_legend {
        let mut head = format!(
            "{:w$}  {:8} {:12} {:10} {:10} CONTAINERS",
            "SERVICE", "DESIRED", "ACTIVE", "SUB", "HEALTH"
        );
        if described {
            head.push_str(&format!("  {:cw$}  DESCRIPTION", "CATEGORY"));
        }
        println!("{head}");
    }
    let width = line_width(args);
    for r in &rows {
        let mut line = format!(
            "{:w$}  {:8} {:12} {:10} {:10} {:<10}",
            r.name, r.desired_state, r.active_state, r.sub_state, r.health, r.containers
        );
        match words(&r.name) {
            Some(wd) if described => {
                line.push_str(&format!("  {:cw$}  {}", wd.category, wd.description));
            }
            _ => {}
        }
        println!("{}", ellipsize(line.trim_end(), width));
    }
    if !args.no_legend {
        println!("\n{}.", count(rows.len(), "service", "services", "listed"));
    }
    Ok(exit::OK)
}

async fn host_status(client: &Conn, json: bool) -> Result<u8> {
    let m = client.manager().await?;
    let stats = match client {
        Conn::Bus(c) => c.host_stats().await.unwrap_or_default(),
        Conn::Host { .. } => Default::default(),
    };
    if json {
        #[derive(Serialize)]
        struct Host<'a> {
            #[serde(flatten)]
            manager: &'a crate::dbus::client::ManagerInfo,
            stats: &'a std::collections::BTreeMap<String, f64>,
        }
        return print_json(&Host {
            manager: &m,
            stats: &stats,
        });
    }
    let rows = client.list_services().await?;
    let running = rows.iter().filter(|r| r.active_state == "active").count();
    let failed = rows
        .iter()
        .filter(|r| r.active_state == "failed" || r.health == "unhealthy")
        .count();
    println!("● {}", m.host);
    println!("       State: {}", m.system_state);
    println!(
        "    Services: {} configured, {running} running, {failed} failed",
        rows.len()
    );
    let docker = if m.docker_connected {
        "connected".to_string()
    } else {
        format!("unavailable ({})", m.docker_error)
    };
    println!("      Docker: {docker}");
    let gib = |k: &str| stats.get(k).map(|v| v / f64::from(1u32 << 30));
    if let (Some(l1), Some(l5), Some(l15)) =
        (stats.get("Load1"), stats.get("Load5"), stats.get("Load15"))
    {
        let cpu = stats
            .get("CpuPercent")
            .map(|c| format!("CPU {c:.0}%, "))
            .unwrap_or_default();
        println!("        Load: {cpu}load {l1:.2} {l5:.2} {l15:.2}");
    }
    if let (Some(total), Some(avail)) = (gib("MemoryTotal"), gib("MemoryAvailable")) {
        println!(
            "      Memory: {:.1} GiB used of {total:.1} GiB",
            total - avail
        );
    }
    if let Some(n) = stats.get("ComposeContainersRunning") {
        let all = stats.get("ComposeContainers").copied().unwrap_or(*n);
        println!("  Containers: {n} running of {all} (Compose projects)");
    }
    println!("      Config: {} ({})", m.config_path, m.config_hash);
    println!("     Version: stackd {}", m.version);
    Ok(exit::OK)
}

async fn status(
    client: &Conn,
    args: &Args,
    names: &[String],
    lines: u32,
    json: bool,
) -> Result<u8> {
    let mut infos = Vec::new();
    for name in names {
        infos.push(client.service(name).await?);
    }
    if json {
        return print_json(&infos);
    }
    let mut code = exit::OK;
    for (i, s) in infos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_status(client, s, lines, line_width(args)).await?;
        if s.active_state != "active" {
            code = exit::NOT_RUNNING;
        }
    }
    Ok(code)
}

async fn print_status(
    client: &Conn,
    s: &ServiceInfo,
    log_lines: u32,
    width: Option<usize>,
) -> Result<()> {
    let title = if !s.description.is_empty() {
        s.description.clone()
    } else {
        match s.kind.as_str() {
            "external" => format!("external service probed from {}", s.host),
            "unit" => format!("systemd unit on {}", s.host),
            _ => format!("Compose project on {}", s.host),
        }
    };
    println!("{} {} - {title}", dot(&s.active_state, &s.health), s.name);
    if s.kind == "external" {
        println!("        Kind: external (probed only; stackd never starts or stops it)");
    } else if !s.compose_file.is_empty() {
        println!("     Compose: {}", s.compose_file);
    } else if let Some(unit) = s.containers.first().filter(|_| s.kind == "unit") {
        println!("        Unit: {}", unit.name);
    }
    if !s.category.is_empty() {
        println!("    Category: {}", s.category);
    }
    if !s.required_for.is_empty() {
        println!("Required for: {}", s.required_for.join(", "));
    }
    // "stopped (set by user)", "stopped (stopped outside stackd (docker stop))".
    let who = if s.desired_source.starts_with("stopped outside") {
        s.desired_source.clone()
    } else {
        format!("set by {}", s.desired_source)
    };
    println!("     Desired: {} ({who})", s.desired_state);
    println!(
        "      Active: {} ({}) since {}; {}",
        s.active_state,
        s.sub_state,
        time::timestamp(s.state_change_usec),
        time::ago(s.state_change_usec)
    );
    let msg = if s.health_message.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.health_message)
    };
    println!(
        "{}",
        ellipsize(&format!("      Health: {}{msg}", s.health), width)
    );
    println!("    Restarts: {}", s.restart_count);
    if !s.containers.is_empty() {
        println!("  Containers:");
        for c in &s.containers {
            let mut line = format!(
                "    {} {} ({})",
                dot(
                    if c.state == "running" {
                        "active"
                    } else {
                        "inactive"
                    },
                    &c.health
                ),
                c.name,
                c.state
            );
            if c.state == "running" && c.started_usec > 0 {
                line.push_str(&format!(
                    ", up {}",
                    time::span(time::now_usec().saturating_sub(c.started_usec))
                ));
            }
            if !c.health.is_empty() {
                line.push_str(&format!(", {}", c.health));
            }
            if c.exit_code >= 0 && c.state != "running" {
                line.push_str(&format!(", exit code {}", c.exit_code));
            }
            if c.restart_count > 0 {
                line.push_str(&format!(", {} restarts", c.restart_count));
            }
            println!("{}", ellipsize(&format!("{line}  {}", c.image), width));
        }
    }
    let recent = client.tasks(Some(&s.name), &[], Some(5)).await?;
    for line in task_block(&recent) {
        println!("{line}");
    }
    // 0 asks the daemon for every line, so it is not asked at all.
    if log_lines == 0 {
        return Ok(());
    }
    match client.logs(&s.name, log_lines, false).await {
        Ok(file) => {
            let lines: Vec<String> = std::io::BufReader::new(file)
                .lines()
                .map_while(|l| l.ok())
                .collect();
            if !lines.is_empty() {
                println!();
                for l in lines {
                    println!("{}", ellipsize(&l, width));
                }
            }
        }
        Err(e) if logs_denied(&e) => {
            println!();
            println!("Log lines hidden: {}", e.1);
        }
        Err(_) => {}
    }
    Ok(())
}

/// The daemon refused to show logs to this caller (`Policy::check_logs`);
/// what it may see is still shown, with the reason for the rest.
fn logs_denied(e: &Failed) -> bool {
    e.1.contains("may not read logs")
}

async fn ops(client: &Conn, args: &Args, method: &str, names: &[String], wait: bool) -> Result<u8> {
    submit_each(client, args, names, wait, |name| async move {
        if wait {
            Ok(client
                .bus()?
                .queue_and_wait(name, waited_op(method), "fail")
                .await?)
        } else {
            client.service_op(method, name).await
        }
    })
    .await
}

/// QueueAndWait's operation for a Manager method.
fn waited_op(method: &str) -> &'static str {
    match method {
        "RestartService" => "restart",
        "UpdateService" => "update",
        _ => "start",
    }
}

/// Start or stop with mode "replace": what stands in the way stops first.
async fn forced(
    client: &Conn,
    args: &Args,
    method: &str,
    names: &[String],
    wait: bool,
) -> Result<u8> {
    submit_each(client, args, names, wait, |name| async move {
        if wait {
            Ok(client
                .bus()?
                .queue_and_wait(name, waited_op(method), "replace")
                .await?)
        } else {
            client.service_op_mode(method, name, "replace").await
        }
    })
    .await
}

/// Submits one task per name, in the order given: a refused name is
/// reported (the name, then the reason) and the others still go ahead.
/// The exit code is the refusal's own code for a single name (4 for an
/// unknown one, as `status` says), else 1 when any name was refused or any
/// task did not succeed.
async fn submit_each<'a, F, Fut>(
    client: &Conn,
    args: &Args,
    names: &'a [String],
    wait: bool,
    submit: F,
) -> Result<u8>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    if wait && matches!(client, Conn::Host { .. }) {
        return Err(Failed(
            exit::USAGE,
            "--wait is not available with -H; run it on the host".to_string(),
        ));
    }
    let mut ids = Vec::new();
    let mut refused = Vec::new();
    for name in names {
        match submit(name).await {
            Ok(id) => ids.push((name.clone(), id)),
            Err(Failed(code, why)) => {
                eprintln!("{name}: {why}");
                refused.push(code);
            }
        }
    }
    let code = follow_all(client, args, ids).await?;
    Ok(match refused.as_slice() {
        [] => code,
        [only] if names.len() == 1 => *only,
        _ => exit::FAILURE,
    })
}

async fn follow_all(client: &Conn, args: &Args, ids: Vec<(String, u64)>) -> Result<u8> {
    if args.no_block {
        for (_, id) in &ids {
            println!("{id}");
        }
        return Ok(exit::OK);
    }
    let mut code = exit::OK;
    for (name, id) in ids {
        code = code.max(follow_task(client, args, id, &name).await?);
    }
    Ok(code)
}

/// Stream a task's log until it ends: plain lines when piped, plus a
/// progress line on a terminal. Non-zero when the task did not succeed.
async fn follow_task(client: &Conn, args: &Args, id: u64, what: &str) -> Result<u8> {
    if args.no_block {
        println!("{id}");
        return Ok(exit::OK);
    }
    let tty = std::io::stderr().is_terminal() && !args.quiet;
    let started = Instant::now();
    let mut seen = 0u32;
    let mut out = std::io::stdout();
    loop {
        let info = client.task(id).await?;
        // A caller allowed to change state but not to read logs (polkit
        // org.stackd1.manage only) still follows the task to its end.
        let lines = match client.task_log_since(id, seen).await {
            Err(e) if logs_denied(&e) => {
                if seen == 0 {
                    let _ = writeln!(out, "(log lines hidden: {})", e.1);
                    seen = 1;
                }
                Vec::new()
            }
            r => r?,
        };
        if tty && !lines.is_empty() {
            eprint!("\r\x1b[2K");
        }
        if !args.quiet {
            for l in &lines {
                let _ = writeln!(out, "{l}");
            }
        }
        seen = seen.saturating_add(u32::try_from(lines.len()).unwrap_or(u32::MAX));
        if info.finished() {
            if tty {
                eprint!("\r\x1b[2K");
            }
            return Ok(report(&info, what));
        }
        if tty {
            eprint!(
                "\r\x1b[2K⋯ {what} ({}: {}, {:.1}s)",
                info.kind,
                info.state,
                started.elapsed().as_secs_f32()
            );
        }
        let _ = out.flush();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn report(t: &TaskInfo, what: &str) -> u8 {
    if t.state == "succeeded" {
        return exit::OK;
    }
    eprintln!(
        "Task {} ({} {what}) {}: {}. See 'stackctl task {}' for its log.",
        t.id,
        t.kind,
        t.result,
        if t.error.is_empty() {
            &t.state
        } else {
            &t.error
        },
        t.id
    );
    exit::FAILURE
}

async fn tasks(
    client: &Conn,
    args: &Args,
    service: Option<&str>,
    states: &[String],
    limit: u32,
    json: bool,
) -> Result<u8> {
    let rows = client.tasks(service, states, Some(limit)).await?;
    if json {
        return print_json(&rows);
    }
    if !args.no_legend {
        println!(
            "{:>6} {:10} {:20} {:10} {:12} CREATED",
            "ID", "KIND", "SERVICE", "STATE", "RESULT"
        );
    }
    for t in &rows {
        let service = if t.service.is_empty() {
            "(host)"
        } else {
            &t.service
        };
        println!(
            "{:>6} {:10} {:20} {:10} {:12} {}",
            t.id,
            t.kind,
            service,
            t.state,
            t.result,
            time::timestamp(t.created_usec)
        );
    }
    if !args.no_legend {
        println!("\n{}.", count(rows.len(), "task", "tasks", "listed"));
    }
    Ok(exit::OK)
}

async fn task(client: &Conn, id: u64, json: bool) -> Result<u8> {
    let info = client.task(id).await?;
    let log = match client.task_log_since(id, 0).await {
        Err(e) if logs_denied(&e) => vec![format!("(log lines hidden: {})", e.1)],
        r => r?,
    };
    if json {
        #[derive(Serialize)]
        struct WithLog<'a> {
            #[serde(flatten)]
            task: &'a TaskInfo,
            log: &'a [String],
        }
        return print_json(&WithLog {
            task: &info,
            log: &log,
        });
    }
    let service = if info.service.is_empty() {
        "(host)"
    } else {
        &info.service
    };
    println!("Task {}: {} {}", info.id, info.kind, service);
    println!(
        "   State: {}{}",
        info.state,
        if info.result.is_empty() {
            String::new()
        } else {
            format!(" ({})", info.result)
        }
    );
    println!("  Origin: {}", info.origin);
    println!(" Created: {}", time::timestamp(info.created_usec));
    println!(" Started: {}", time::timestamp(info.started_usec));
    println!("Finished: {}", time::timestamp(info.finished_usec));
    if !info.error.is_empty() {
        println!("   Error: {}", info.error);
    }
    println!();
    for l in &log {
        println!("{l}");
    }
    Ok(exit::OK)
}

/// `health`: one row per service, then the counts ("3 healthy,
/// 1 unhealthy, 2 not running"). Exits 1 when a service whose desired state
/// is running is unhealthy or failed, so a script or a CI job can gate on
/// it; an unknown name is reported and exits 4 unless that already failed.
async fn health(client: &Client, args: &Args, names: &[String], json: bool) -> Result<u8> {
    let names: Vec<String> = if names.is_empty() {
        client
            .list_services()
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect()
    } else {
        names.to_vec()
    };
    let mut infos = Vec::new();
    let mut missing = exit::OK;
    for name in &names {
        match client.service(name).await {
            Ok(s) => infos.push(s),
            Err(e) => {
                let Failed(code, why) = e.into();
                eprintln!("{name}: {why}");
                missing = missing.max(code);
            }
        }
    }
    let bad = infos.iter().any(|s| {
        s.desired_state == "running" && (s.health == "unhealthy" || s.active_state == "failed")
    });
    let code = if bad { exit::FAILURE } else { missing };
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            name: &'a str,
            health: &'a str,
            message: &'a str,
            restart_count: u64,
        }
        let rows: Vec<Row<'_>> = infos
            .iter()
            .map(|s| Row {
                name: &s.name,
                health: &s.health,
                message: &s.health_message,
                restart_count: s.restart_count,
            })
            .collect();
        print_json(&rows)?;
        return Ok(code);
    }
    let w = infos.iter().map(|s| s.name.len()).max().unwrap_or(0).max(7);
    if !args.no_legend {
        println!(
            "{:w$}  {:10} {:>8}  MESSAGE",
            "SERVICE", "HEALTH", "RESTARTS"
        );
    }
    let width = line_width(args);
    for s in &infos {
        let line = format!(
            "{:w$}  {:10} {:>8}  {}",
            s.name, s.health, s.restart_count, s.health_message
        );
        println!("{}", ellipsize(&line, width));
    }
    if !args.no_legend && !args.quiet {
        println!("\n{}.", health_counts(&infos));
    }
    Ok(code)
}

/// "3 healthy, 1 unhealthy, 2 not running": a service that does not run
/// counts as "failed" or "not running" whatever its health says; the
/// others by their health. Only the kinds present are named.
fn health_counts(infos: &[ServiceInfo]) -> String {
    const ORDER: [&str; 7] = [
        "healthy",
        "starting",
        "degraded",
        "unhealthy",
        "unknown",
        "failed",
        "not running",
    ];
    let mut counts = [0usize; ORDER.len()];
    for s in infos {
        let kind = match s.active_state.as_str() {
            "failed" => "failed",
            "inactive" | "deactivating" => "not running",
            _ => s.health.as_str(),
        };
        let i = ORDER.iter().position(|k| *k == kind).unwrap_or(4);
        counts[i] += 1;
    }
    let parts: Vec<String> = ORDER
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if parts.is_empty() {
        "0 services".to_string()
    } else {
        parts.join(", ")
    }
}

async fn hosts(client: &Client, args: &Args, json: bool) -> Result<u8> {
    let rows = client.list_hosts().await?;
    if json {
        return print_json(&rows);
    }
    // The hash most reachable hosts have; the others drifted from it.
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in rows.iter().filter(|r| r.reachable) {
        *counts.entry(r.config_hash.as_str()).or_default() += 1;
    }
    let common = counts.iter().max_by_key(|(_, n)| **n).map(|(h, _)| *h);
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let aw = rows
        .iter()
        .map(|r| r.address.len())
        .max()
        .unwrap_or(7)
        .max(7);
    if !args.no_legend {
        println!(
            "{:w$}  {:aw$}  {:11}  {:27}  {:8}  {:5}  CONFIG-HASH",
            "HOST", "ADDRESS", "STATE", "SINCE", "VERSION", "LOAD"
        );
    }
    for r in &rows {
        let since = if r.since_usec == 0 {
            "-".to_string()
        } else {
            time::timestamp(r.since_usec)
        };
        if r.reachable {
            let drift = if Some(r.config_hash.as_str()) == common {
                ""
            } else {
                "  (differs)"
            };
            println!(
                "{:w$}  {:aw$}  {:11}  {:27}  {:8}  {:5.2}  {}{drift}",
                r.name, r.address, "reachable", since, r.version, r.load, r.config_hash
            );
        } else {
            println!(
                "{:w$}  {:aw$}  {:11}  {:27}  {}",
                r.name, r.address, "unreachable", since, r.error
            );
        }
    }
    Ok(exit::OK)
}

async fn notify_test(client: &Client, channel: Option<&str>, json: bool) -> Result<u8> {
    let results = client.test_notify(channel).await?;
    let failed = results.iter().any(|(_, ok, _)| !ok);
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            channel: &'a str,
            delivered: bool,
            error: &'a str,
        }
        let rows: Vec<Row<'_>> = results
            .iter()
            .map(|(c, ok, e)| Row {
                channel: c,
                delivered: *ok,
                error: e,
            })
            .collect();
        print_json(&rows)?;
    } else {
        for (name, ok, error) in &results {
            if *ok {
                println!("{name}: delivered");
            } else {
                println!("{name}: FAILED: {error}");
            }
        }
    }
    Ok(if failed { exit::FAILURE } else { exit::OK })
}

async fn logs(client: &Conn, name: &str, lines: u32, follow: bool) -> Result<u8> {
    let file = client.logs(name, lines, follow).await?;
    let reader = std::io::BufReader::new(file);
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(exit::OK)
}

/// `start --dry-run`: preflight, then the tasks a start would queue.
async fn dry_run_start(client: &Client, names: &[String], force: bool) -> Result<u8> {
    let mode = if force { "replace" } else { "fail" };
    for name in names {
        for line in client.check(name).await? {
            println!("{line}");
        }
        println!("{name}: preflight passed");
        println!("Starting {name} would:");
        for (i, step) in client.plan_start(name, mode).await?.iter().enumerate() {
            println!(
                "  {}. {} {} ({})",
                i + 1,
                step.action,
                step.service,
                step.reason
            );
        }
    }
    Ok(exit::OK)
}

/// `dependencies NAME`: the tree as `systemctl list-dependencies` draws it.
async fn dependencies(client: &Client, name: &str, reverse: bool, json: bool) -> Result<u8> {
    let rows = client.dependencies(name, reverse).await?;
    if json {
        return print_json(&rows);
    }
    for line in tree_lines(&rows, |r| dot(&r.active_state, &r.health)) {
        println!("{line}");
    }
    Ok(exit::OK)
}

/// Pre-order rows with depths, drawn with ├─ └─ │ and a dot per node
/// below the root.
fn tree_lines(
    rows: &[crate::dbus::types::DependencyRow],
    dot: impl Fn(&crate::dbus::types::DependencyRow) -> &'static str,
) -> Vec<String> {
    // Whether a later row sits at `depth` before the tree climbs above it:
    // the node has a sibling after it.
    let has_next_sibling = |i: usize, depth: u32| {
        rows[i + 1..]
            .iter()
            .take_while(|r| r.depth >= depth)
            .any(|r| r.depth == depth)
    };
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.depth == 0 {
            out.push(r.name.clone());
            continue;
        }
        let mut prefix = String::new();
        for d in 1..r.depth {
            // An ancestor at depth d with a later sibling keeps its bar.
            let ancestor = rows[..i].iter().rposition(|a| a.depth == d).unwrap_or(0);
            prefix.push_str(if has_next_sibling(ancestor, d) {
                "│ "
            } else {
                "  "
            });
        }
        prefix.push_str(if has_next_sibling(i, r.depth) {
            "├─"
        } else {
            "└─"
        });
        let state = match r.active_state.as_str() {
            "remote" => " (on another host)".to_string(),
            "unknown" => " (not configured)".to_string(),
            _ => String::new(),
        };
        out.push(format!("{} {prefix}{}{state}", dot(r), r.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::types::DependencyRow;

    #[test]
    fn tree_is_drawn_as_systemctl_does() {
        let rows: Vec<DependencyRow> = [
            (0, "web"),
            (1, "app"),
            (2, "db"),
            (3, "disk"),
            (2, "cache"),
            (1, "proxy"),
            (2, "certs"),
        ]
        .into_iter()
        .map(|(depth, name)| DependencyRow {
            depth,
            name: name.into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            health: "healthy".into(),
        })
        .collect();
        assert_eq!(
            tree_lines(&rows, |_| "●"),
            vec![
                "web",
                "● ├─app",
                "● │ ├─db",
                "● │ │ └─disk",
                "● │ └─cache",
                "● └─proxy",
                "●   └─certs",
            ]
        );
    }
}
