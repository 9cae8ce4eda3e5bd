//! `stackctl hosts`: the cluster's hosts as this daemon's heartbeat sees
//! them, with the config hashes that drifted from the others'.

use super::args::Args;
use super::{exit, print_json, time, Result};
use crate::dbus::client::Client;

pub(super) async fn hosts(client: &Client, args: &Args, json: bool) -> Result<u8> {
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
