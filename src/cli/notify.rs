//! `stackctl notify-agent` (the desktop agent) and `stackctl notify test`.

use serde::Serialize;

use super::args::Args;
use super::{exit, print_json, Result};
use crate::dbus::client::{Client, Target};

/// `stackctl notify-agent`: one line per alert shown (or not), until a
/// bus connection is lost, which is a failure so that systemd restarts it.
pub(super) async fn notify_agent(args: &Args) -> Result<u8> {
    let daemon = if args.user {
        Target::Session
    } else {
        Target::System
    };
    crate::dbus::agent::run(
        &daemon,
        |summary| println!("shown: {summary}"),
        |why| eprintln!("stackctl notify-agent: {why}"),
    )
    .await?;
    Ok(exit::OK)
}

pub(super) async fn notify_test(client: &Client, channel: Option<&str>, json: bool) -> Result<u8> {
    let results = client.test_notify(channel).await?;
    let failed = results.iter().any(|(_, ok, _)| !ok);
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            channel: &'a str,
            delivered: bool,
            error: &'a str,
        }
        let rows: Vec<Row<'_>> = results
            .iter()
            .map(|(c, ok, e)| Row {
                channel: c,
                delivered: *ok,
                error: e,
            })
            .collect();
        print_json(&rows)?;
    } else {
        for (name, ok, error) in &results {
            if *ok {
                println!("{name}: delivered");
            } else {
                println!("{name}: FAILED: {error}");
            }
        }
    }
    Ok(if failed { exit::FAILURE } else { exit::OK })
}
