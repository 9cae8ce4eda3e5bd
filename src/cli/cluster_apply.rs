//! `stackctl apply --all-hosts [--dry-run]` and `config push --apply`:
//! asked of this host's daemon (`Manager.ApplyAllHosts`), which holds the
//! cluster file and the peer token and runs the rounds (`peer::apply`:
//! what leaves each host, preflight where it goes, the stops, the starts,
//! then each host's own apply). stackctl prints the plan, or what was done
//! and what failed.

use serde::Serialize;

use super::{exit, print_json, Failed, Result};
use crate::dbus::client::Client;

/// One line of the plan.
#[derive(Serialize, Clone, Debug)]
struct Step {
    host: String,
    /// "stop", "preflight", "carry", "start", "apply".
    action: String,
    service: String,
    reason: String,
}

pub(super) async fn apply_all_hosts(
    local: &Client,
    dry_run: bool,
    force: bool,
    json: bool,
) -> Result<u8> {
    let (plan, done, failed) = local
        .apply_all_hosts(dry_run, force)
        .await
        .map_err(|e| Failed(exit::FAILURE, e.to_string()))?;
    let plan: Vec<Step> = plan
        .into_iter()
        .map(|(host, action, service, reason)| Step {
            host,
            action,
            service,
            reason,
        })
        .collect();
    if dry_run {
        if json {
            return print_json(&plan);
        }
        if plan.is_empty() {
            println!("nothing to do on any host");
        }
        for s in &plan {
            println!(
                "{:<10} {:<9} {}  ({})",
                s.host, s.action, s.service, s.reason
            );
        }
        return Ok(exit::OK);
    }
    if json {
        print_json(&plan)?;
    } else {
        for line in &done {
            println!("{line}");
        }
    }
    for line in &failed {
        eprintln!("{line}");
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}
