//! `stackctl required OPERATION [--start]`: the services whose
//! `required_for` names OPERATION, then their dependencies, and whether
//! each runs. Exit 0 when all run, 3 when one does not, 4 when no service
//! of this host is required for OPERATION (a misspelt name, most likely).
//! With `--start`, those that do not run are started as `start` starts
//! them (dependencies first, waiting for each task), and the answer is
//! about what runs afterwards.

use serde::Serialize;

use super::args::Args;
use super::remote::Conn;
use super::{exit, print_json, Failed, Result};
use crate::dbus::client::RequiredRow;
use crate::state::ActiveState;

pub(super) async fn run(
    client: &Conn,
    args: &Args,
    operation: &str,
    start: bool,
    json: bool,
) -> Result<u8> {
    let bus = client.bus()?;
    let mut rows = bus.required(operation).await?;
    if rows.is_empty() {
        return Err(Failed(
            exit::NO_SUCH,
            format!(
                "no service of this host has {operation:?} in its required_for (`stackctl \
                 status NAME` shows a service's)"
            ),
        ));
    }
    let mut code = exit::OK;
    if start {
        // The services required for it that do not run; a start brings up
        // their dependencies first. A dependency that is down under a
        // running one is started itself. External ones cannot be started.
        let down: Vec<String> = rows
            .iter()
            .filter(|r| !r.running && r.active_state != ActiveState::Activating)
            .filter(|r| {
                r.direct
                    || !rows
                        .iter()
                        .any(|d| d.direct && !d.running && d.name != r.name)
            })
            .map(|r| r.name.clone())
            .collect();
        let registry = bus.list_registry().await?;
        let startable: Vec<String> = down
            .into_iter()
            .filter(|n| {
                registry
                    .iter()
                    .any(|r| &r.name == n && r.kind != "external")
            })
            .collect();
        if !startable.is_empty() {
            code = super::ops::queue(
                client,
                args,
                crate::dbus::client::ServiceOp::Start,
                &startable,
                false,
            )
            .await?;
        }
        rows = bus.required(operation).await?;
    }
    let all_run = rows.iter().all(|r| r.running);
    if code == exit::OK && !all_run {
        code = exit::NOT_RUNNING;
    }
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            operation: &'a str,
            all_running: bool,
            services: &'a [RequiredRow],
        }
        print_json(&Out {
            operation,
            all_running: all_run,
            services: &rows,
        })?;
        return Ok(code);
    }
    if !args.quiet {
        print_rows(args, &rows);
        if !args.no_legend {
            let running = rows.iter().filter(|r| r.running).count();
            println!(
                "\n{operation}: {running} of {} running{}.",
                rows.len(),
                if all_run { ", ready" } else { ", not ready" }
            );
        }
    }
    Ok(code)
}

fn print_rows(args: &Args, rows: &[RequiredRow]) {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(7);
    if !args.no_legend {
        println!("{:w$}  {:10} {:12} HEALTH", "SERVICE", "NEEDED", "ACTIVE");
    }
    for r in rows {
        let why = if r.direct { "required" } else { "dependency" };
        println!(
            "{:w$}  {:10} {:12} {}",
            r.name, why, r.active_state, r.health
        );
    }
}
