//! `stackctl config push [FILE]`: the cluster file to every host of its
//! `[hosts]`, in two rounds. First every host checks it (`PUT /v1/config
//! ?check=true`); only when every host accepts it does each write it and
//! reload. So a file that is bad for one host, or a host that does not
//! answer, leaves the running configuration in force everywhere.

use std::path::PathBuf;

use futures_util::future::join_all;
use serde::Serialize;

use super::{exit, peer_client, print_json, Args, Failed, Result};
use crate::config;
use crate::peer::types::ConfigPushed;
use crate::peer::{PeerClient, PeerClientError};

#[derive(Serialize)]
struct Row {
    host: String,
    /// "written", "checked" (accepted, not written because another host
    /// refused), "refused" or "unreachable".
    outcome: &'static str,
    config_path: String,
    config_hash: String,
    error: String,
}

pub(super) async fn push(
    args: &Args,
    file: Option<PathBuf>,
    force: bool,
    json: bool,
) -> Result<u8> {
    let path = file
        .or_else(|| args.config.clone())
        .unwrap_or_else(|| config::default_config_path(args.user));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failed(exit::FAILURE, format!("{}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(Failed(
            exit::FAILURE,
            format!(
                "{} is empty (a truncated file?); nothing was pushed",
                path.display()
            ),
        ));
    }
    // Read here only for [hosts] and [peer]; each host checks it as itself.
    let opts = config::LoadOptions {
        user_mode: args.user,
        host_override: None,
    };
    let cfg = config::parse_str(&text, &path, &opts, false)
        .map_err(|e| Failed(exit::FAILURE, e.to_string()))?;
    let mut hosts = Vec::new();
    for name in cfg.hosts.keys() {
        hosts.push((name.clone(), peer_client(&cfg, name)?));
    }
    if hosts.is_empty() {
        return Err(Failed(
            exit::USAGE,
            format!("{} has no [hosts] to push to", path.display()),
        ));
    }

    let checks = join_all(hosts.iter().map(|(_, c)| c.push_config(&text, true, force))).await;
    let all_accept = checks.iter().all(std::result::Result::is_ok);
    let rows: Vec<Row> = if all_accept {
        let writes = join_all(
            hosts
                .iter()
                .map(|(_, c)| c.push_config(&text, false, force)),
        )
        .await;
        rows(&hosts, writes, "written")
    } else {
        rows(&hosts, checks, "checked")
    };
    let ok = rows.iter().all(|r| r.outcome == "written");
    if json {
        print_json(&rows)?;
    } else {
        let w = rows.iter().map(|r| r.host.len()).max().unwrap_or(4);
        for r in &rows {
            match r.outcome {
                "written" | "checked" => println!(
                    "{:w$}  {}  {}  (config hash {})",
                    r.host, r.outcome, r.config_path, r.config_hash
                ),
                _ => {
                    println!("{:w$}  {}:", r.host, r.outcome);
                    for line in r.error.lines() {
                        println!("{:w$}    {line}", "");
                    }
                }
            }
        }
        if !ok {
            println!("\nNothing was written: every host must accept the file first.");
        }
    }
    Ok(if ok { exit::OK } else { exit::FAILURE })
}

fn rows(
    hosts: &[(String, PeerClient)],
    results: Vec<std::result::Result<ConfigPushed, PeerClientError>>,
    ok_outcome: &'static str,
) -> Vec<Row> {
    hosts
        .iter()
        .zip(results)
        .map(|((host, _), r)| match r {
            Ok(p) => Row {
                host: host.clone(),
                outcome: ok_outcome,
                config_path: p.config_path,
                config_hash: p.config_hash,
                error: String::new(),
            },
            Err(e) => Row {
                host: host.clone(),
                outcome: if e.kind().is_some() {
                    "refused"
                } else {
                    "unreachable"
                },
                config_path: String::new(),
                config_hash: String::new(),
                error: e.to_string(),
            },
        })
        .collect()
}
