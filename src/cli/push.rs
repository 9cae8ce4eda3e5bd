//! `stackctl config push [FILE]`: the cluster file to every host of its
//! `[hosts]`, in two rounds, by this host's daemon (`Manager.PushConfig`),
//! which holds the peer token. First every host checks it (`PUT /v1/config
//! ?check=true`); only when every host accepts it does each write it and
//! reload. So a file that is bad for one host, or a host that does not
//! answer, leaves the running configuration in force everywhere. Without
//! FILE (or `-c`), the daemon pushes its own cluster file.

use std::path::PathBuf;

use serde::Serialize;

use super::{exit, print_json, Args, Failed, Result};
use crate::dbus::client::Client;

#[derive(Serialize)]
struct Row {
    host: String,
    /// "written", "checked" (accepted, not written because another host
    /// refused), "refused" or "unreachable".
    outcome: String,
    config_path: String,
    config_hash: String,
    error: String,
}

pub(super) async fn push(
    local: &Client,
    args: &Args,
    file: Option<PathBuf>,
    force: bool,
    json: bool,
) -> Result<u8> {
    // A file named here is read here, as the caller may read it; else the
    // daemon reads its own.
    let text = match file.or_else(|| args.config.clone()) {
        Some(path) => {
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
            // Errors here name the file the caller gave; each host checks
            // it again as itself.
            let opts = crate::config::LoadOptions {
                user_mode: args.user,
                host_override: None,
            };
            crate::config::parse_str(&text, &path, &opts, false)
                .map_err(|e| Failed(exit::FAILURE, e.to_string()))?;
            text
        }
        None => String::new(),
    };
    let rows: Vec<Row> = local
        .push_config(&text, force)
        .await?
        .into_iter()
        .map(|(host, outcome, config_path, config_hash, error)| Row {
            host,
            outcome,
            config_path,
            config_hash,
            error,
        })
        .collect();
    let ok = rows.iter().all(|r| r.outcome == "written");
    if json {
        print_json(&rows)?;
    } else {
        let w = rows.iter().map(|r| r.host.len()).max().unwrap_or(4);
        for r in &rows {
            match r.outcome.as_str() {
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
