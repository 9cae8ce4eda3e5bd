//! `stackctl list`: this host's services (or another's, `-H`), and
//! `list --all-hosts`: every host of the cluster at once.

use serde::Serialize;

use super::args::{Args, Command};
use super::remote::Conn;
use super::{count, ellipsize, exit, line_width, print_json, time, Failed, Result};
use crate::dbus::client::Client;
use crate::dbus::types::ServiceRow;
use crate::state::ActiveState;

/// `list --all-hosts`: every host of the daemon's cluster file at once,
/// this one directly, the others relayed by it to their peer endpoints
/// (each bounded by the daemon's peer timeout).
pub(super) async fn list_all_hosts(local: &Client, args: &Args, json: bool) -> Result<u8> {
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

pub(super) async fn list(client: &Conn, args: &Args, json: bool) -> Result<u8> {
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
        rows.retain(|r| r.active_state == ActiveState::Active);
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
