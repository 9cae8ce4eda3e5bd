//! `stackctl __complete`: candidates for the shell completion scripts.

use std::io::Write;

use super::args::{Args, CompleteWhat};
use super::exit;
use crate::dbus::client::{Client, Target};

/// `stackctl __complete services|tasks`: candidates for the completion
/// scripts, `word<TAB>description` a line. Silent on every error: a shell
/// completing a word has no use for a message, and exits 0 either way.
pub(super) async fn complete(args: &Args, what: CompleteWhat) -> u8 {
    let Ok(client) = Client::connect(&Target::default_for(args.user)).await else {
        return exit::OK;
    };
    let lines: Vec<String> = match what {
        CompleteWhat::Services => match client.list_services().await {
            Ok(rows) => rows
                .into_iter()
                .map(|r| format!("{}\t{} {}", r.name, r.active_state, r.sub_state))
                .collect(),
            Err(_) => Vec::new(),
        },
        CompleteWhat::Tasks => match client.tasks(None, &[], Some(50)).await {
            Ok(rows) => rows
                .into_iter()
                .map(|t| format!("{}\t{} {} {}", t.id, t.kind, t.service, t.state))
                .collect(),
            Err(_) => Vec::new(),
        },
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    exit::OK
}
