//! `stackctl tasks` (the list) and `stackctl task ID` (one, with its log).

use serde::Serialize;

use super::args::Args;
use super::remote::Conn;
use super::{count, exit, logs_denied, print_json, time, Result};
use crate::dbus::client::TaskInfo;

pub(super) async fn tasks(
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

pub(super) async fn task(client: &Conn, id: u64, json: bool) -> Result<u8> {
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
