//! `stackctl health`: the health table, one row a service, then the
//! counts; and `stackctl health --watch [-d SECS]`: the table drawn again every
//! SECS seconds, like watch(1), until interrupted (Ctrl-C ends it with
//! exit code 0). On a terminal each frame replaces the last; piped, the
//! frames follow one another, each under a line with the time.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;

use super::args::Args;
use super::{ellipsize, exit, line_width, print_json, Failed, Result};
use crate::dbus::client::{Client, ServiceInfo};
use crate::health::Health;
use crate::state::ActiveState;

/// Clear the screen and go to its top left corner.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub(super) async fn watch(
    client: &Client,
    args: &Args,
    names: &[String],
    json: bool,
    delay: f64,
) -> Result<u8> {
    let every = Duration::try_from_secs_f64(delay)
        .ok()
        .filter(|d| *d >= Duration::from_millis(100))
        .ok_or_else(|| {
            Failed(
                exit::USAGE,
                format!("-d {delay}: expected seconds, 0.1 or more"),
            )
        })?;
    let tty = std::io::stdout().is_terminal() && !json;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let now = super::time::timestamp(crate::time::now_usec());
        if tty {
            print!("{CLEAR}");
        }
        if !json {
            println!("Every {delay}s: stackctl health    {now}\n");
        }
        // A daemon that went away ends the watch with its error.
        health(client, args, names, json).await?;
        if !tty {
            println!();
        }
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut interrupted => return Ok(exit::OK),
        }
    }
}

/// `health`: one row per service, then the counts ("3 healthy,
/// 1 unhealthy, 2 not running"). Exits 1 when a service whose desired state
/// is running is unhealthy or failed, so a script or a CI job can gate on
/// it; an unknown name is reported and exits 4 unless that already failed.
pub(super) async fn health(
    client: &Client,
    args: &Args,
    names: &[String],
    json: bool,
) -> Result<u8> {
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
        s.desired_state == "running"
            && (s.health == Health::Unhealthy || s.active_state == ActiveState::Failed)
    });
    let code = if bad { exit::FAILURE } else { missing };
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            name: &'a str,
            health: Health,
            message: &'a str,
            restart_count: u64,
        }
        let rows: Vec<Row<'_>> = infos
            .iter()
            .map(|s| Row {
                name: &s.name,
                health: s.health,
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
        let kind = match s.active_state {
            ActiveState::Failed => "failed",
            ActiveState::Inactive | ActiveState::Deactivating => "not running",
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
