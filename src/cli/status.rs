//! `stackctl status`: the host's summary without names, else one block a
//! service as `systemctl status` draws it (containers, tasks, log lines).

use std::io::BufRead;

use serde::Serialize;

use super::args::Args;
use super::remote::Conn;
use super::{dot, ellipsize, exit, line_width, logs_denied, print_json, time, Result};
use crate::dbus::client::ServiceInfo;
use crate::dbus::types::TaskRow;
use crate::health::Health;
use crate::state::ActiveState;
use crate::store::SetBy;

pub(super) async fn host_status(client: &Conn, json: bool) -> Result<u8> {
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
    let running = rows
        .iter()
        .filter(|r| r.active_state == ActiveState::Active)
        .count();
    let failed = rows
        .iter()
        .filter(|r| r.active_state == ActiveState::Failed || r.health == Health::Unhealthy)
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
    let bytes = |k: &str| stats.get(k).copied();
    if let (Some(l1), Some(l5), Some(l15)) =
        (stats.get("Load1"), stats.get("Load5"), stats.get("Load15"))
    {
        let cpu = stats
            .get("CpuPercent")
            .map(|c| format!("CPU {c:.0}%, "))
            .unwrap_or_default();
        println!("        Load: {cpu}load {l1:.2} {l5:.2} {l15:.2}");
    }
    if let (Some(total), Some(avail)) = (bytes("MemoryTotal"), bytes("MemoryAvailable")) {
        println!(
            "      Memory: {} used of {}",
            crate::fmt::gib_f64(total - avail),
            crate::fmt::gib_f64(total)
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

pub(super) async fn status(
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
        if s.active_state != ActiveState::Active {
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
    println!("{} {} - {title}", dot(&s.active_state, s.health), s.name);
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
    let who = match &s.desired_source {
        outside @ SetBy::Outside(_) => outside.to_string(),
        by => format!("set by {by}"),
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
                    &if c.state == "running" {
                        ActiveState::Active
                    } else {
                        ActiveState::Inactive
                    },
                    Health::read(&c.health)
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
