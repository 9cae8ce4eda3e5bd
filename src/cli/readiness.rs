//! `stackctl readiness`: per service of this host, whether it runs, could
//! start, or is blocked, with the problems that block it (the daemon's
//! preflight, a blocked dependency, an external service's probe).

use serde::Serialize;

use super::args::Args;
use super::{count, exit, print_json, Result};
use crate::dbus::client::Client;

pub(super) async fn run(client: &Client, args: &Args, json: bool) -> Result<u8> {
    let rows = client.readiness().await?;
    let blocked = rows.iter().filter(|r| r.verdict == "blocked").count();
    let code = if blocked > 0 { exit::FAILURE } else { exit::OK };
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            services: &'a [crate::dbus::client::ReadinessRow],
        }
        print_json(&Out { services: &rows })?;
        return Ok(code);
    }
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(7);
    if !args.no_legend {
        println!("{:w$}  {:12} PROBLEMS", "SERVICE", "READINESS");
    }
    for r in &rows {
        let first = r.problems.first().map_or("", String::as_str);
        println!("{:w$}  {:12} {first}", r.name, r.verdict);
        for p in r.problems.iter().skip(1) {
            println!("{:w$}  {:12} {p}", "", "");
        }
    }
    if !args.no_legend && !args.quiet {
        let running = rows.iter().filter(|r| r.verdict == "running").count();
        let could = rows.iter().filter(|r| r.verdict == "could start").count();
        println!(
            "\n{}: {running} running, {could} could start, {blocked} blocked.",
            count(rows.len(), "service", "services", "listed")
        );
    }
    Ok(code)
}
