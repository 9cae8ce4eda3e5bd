//! `stackctl top`: the daemon's last sample of every running container as
//! a table refreshed in place, like systemd-cgtop. One D-Bus call per
//! refresh (`ListContainerStats`); the daemon reads cgroups, not Docker.

use std::io::Write;
use std::time::Duration;

use super::{Failed, Result, TopOrder};
use crate::dbus::client::Client;
use crate::dbus::types::ContainerStatsRow;
use crate::fmt::short_size;

pub(super) struct Options {
    pub order: TopOrder,
    pub delay: Duration,
    pub iterations: Option<u32>,
    /// Plain snapshots one after the other instead of redrawing the screen.
    pub batch: bool,
    pub json: bool,
}

/// Clear the screen and go to its top left corner.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub(super) async fn run(client: &Client, opts: &Options) -> Result<()> {
    let mut n = 0u32;
    loop {
        let mut rows = client.container_stats().await?;
        sort(&mut rows, opts.order);
        let frame = if opts.json {
            let json = serde_json::to_string_pretty(&rows).map_err(|e| Failed(1, e.to_string()))?;
            format!("{json}\n")
        } else {
            let host = client.host_stats().await?;
            format!("{}\n{}", host_line(&host), table(&rows))
        };
        let mut out = std::io::stdout().lock();
        let written = if opts.batch {
            let sep = if n > 0 && !opts.json { "\n" } else { "" };
            write!(out, "{sep}{frame}")
        } else {
            write!(out, "{CLEAR}{frame}")
        };
        // A closed pipe (`stackctl top | head`) ends the command quietly.
        if written.and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
        n += 1;
        if opts.iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
        tokio::time::sleep(opts.delay).await;
    }
}

fn sort(rows: &mut [ContainerStatsRow], order: TopOrder) {
    let by_name = |a: &ContainerStatsRow, b: &ContainerStatsRow| {
        (&a.service, &a.container).cmp(&(&b.service, &b.container))
    };
    match order {
        TopOrder::Name => rows.sort_by(by_name),
        TopOrder::Cpu => rows.sort_by(|a, b| {
            b.cpu_percent
                .total_cmp(&a.cpu_percent)
                .then_with(|| by_name(a, b))
        }),
        TopOrder::Memory => rows.sort_by(|a, b| {
            b.memory_bytes
                .cmp(&a.memory_bytes)
                .then_with(|| by_name(a, b))
        }),
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "bytes carried as f64 are whole numbers below 2^53; `as` saturates"
)]
fn host_line(host: &std::collections::BTreeMap<String, f64>) -> String {
    let get = |k: &str| host.get(k).copied();
    let mut parts = Vec::new();
    if let Some(cpu) = get("CpuPercent") {
        parts.push(format!("CPU {cpu:.1}%"));
    }
    if let Some(load) = get("Load1") {
        parts.push(format!("load {load:.2}"));
    }
    if let (Some(total), Some(avail)) = (get("MemoryTotal"), get("MemoryAvailable")) {
        parts.push(format!(
            "memory {} of {}",
            short_size((total - avail).max(0.0) as u64),
            short_size(total as u64)
        ));
    }
    format!("Host: {}", parts.join(", "))
}

const HEADER: [&str; 8] = [
    "SERVICE",
    "CONTAINER",
    "CPU%",
    "MEMORY",
    "LIMIT",
    "PIDS",
    "NET-RX",
    "NET-TX",
];

/// The rows under a header, columns padded to the widest cell; numbers
/// right-aligned.
pub(super) fn table(rows: &[ContainerStatsRow]) -> String {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.service.clone(),
                r.container.clone(),
                if r.cpu_percent < 0.0 {
                    "-".to_string()
                } else {
                    format!("{:.1}", r.cpu_percent)
                },
                short_size(r.memory_bytes),
                if r.memory_limit == 0 {
                    "-".to_string()
                } else {
                    short_size(r.memory_limit)
                },
                if r.pids == 0 {
                    "-".to_string()
                } else {
                    r.pids.to_string()
                },
                short_size(r.net_rx_bytes),
                short_size(r.net_tx_bytes),
            ]
        })
        .collect();
    let mut width = HEADER.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 8]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(width).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if i < 2 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("{c:>w$}"));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(HEADER);
    for row in &cells {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    if rows.is_empty() {
        out.push_str("(no running containers)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, container: &str, cpu: f64, memory: u64) -> ContainerStatsRow {
        ContainerStatsRow {
            service: service.into(),
            container: container.into(),
            id: "0123".into(),
            cpu_percent: cpu,
            memory_bytes: memory,
            memory_limit: 0,
            pids: 3,
            net_rx_bytes: 1536,
            net_tx_bytes: 0,
        }
    }

    #[test]
    fn orders_by_cpu_memory_or_name() {
        let mut rows = vec![
            row("b", "b-1", 5.0, 300),
            row("a", "a-1", 50.0, 100),
            row("c", "c-1", -1.0, 200),
        ];
        let names = |rows: &[ContainerStatsRow]| -> Vec<String> {
            rows.iter().map(|r| r.service.clone()).collect()
        };
        sort(&mut rows, TopOrder::Cpu);
        assert_eq!(names(&rows), ["a", "b", "c"]);
        sort(&mut rows, TopOrder::Memory);
        assert_eq!(names(&rows), ["b", "c", "a"]);
        sort(&mut rows, TopOrder::Name);
        assert_eq!(names(&rows), ["a", "b", "c"]);
    }

    #[test]
    fn the_table_aligns_columns_and_marks_unknowns() {
        let mut r = row("web", "web-main-1", 12.34, 50 * 1024 * 1024);
        r.memory_limit = 256 * 1024 * 1024;
        let t = table(&[r, row("db", "db-main-1", -1.0, 512)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines,
            [
                "SERVICE  CONTAINER   CPU%  MEMORY   LIMIT  PIDS  NET-RX  NET-TX",
                "web      web-main-1  12.3   50.0M  256.0M     3    1.5K      0B",
                "db       db-main-1      -    512B       -     3    1.5K      0B",
            ]
        );
        assert!(table(&[]).contains("(no running containers)"));
    }
}
