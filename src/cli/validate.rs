//! `stackctl validate`: the cluster file read as the daemon would read it,
//! and compared with the running daemon's services (the reload guard).

use super::args::Args;
use super::{exit, Failed, Result};
use crate::config;
use crate::dbus::client::{Client, Target};

/// `stackctl validate`: the file as the daemon would read it. An empty
/// file is refused (a truncated one, almost certainly); and when a daemon
/// of the same host runs, a file that would remove every one of its
/// services, or more than `reload_guard` of them, gets a warning: the
/// daemon would refuse to reload it without `--force`.
pub(super) async fn validate(
    args: &Args,
    file: Option<std::path::PathBuf>,
    host: Option<String>,
) -> Result<u8> {
    let path = file.unwrap_or_else(|| config::default_config_path(args.user));
    if std::fs::read(&path).is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace)) {
        return Err(Failed(
            exit::FAILURE,
            format!(
                "{}: the file is empty; a cluster file with nothing in it is almost certainly \
                 a truncated one",
                path.display()
            ),
        ));
    }
    let opts = config::LoadOptions {
        user_mode: args.user,
        host_override: host,
    };
    let cfg = config::load(&path, &opts).map_err(|e| Failed(exit::FAILURE, e.to_string()))?;
    println!("{}: ok ({})", path.display(), cfg.summary());
    let compared = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        compare_with_daemon(args, &cfg),
    )
    .await;
    if let Ok(Some(why)) = compared {
        eprintln!(
            "warning: compared with the running stackd: {why}; it would refuse to reload this \
             file without `stackctl reload --force`"
        );
    }
    Ok(exit::OK)
}

/// What the running daemon of `cfg`'s host would say about losing
/// services to `cfg` (None when none runs, or nothing trips the guard).
async fn compare_with_daemon(args: &Args, cfg: &config::Config) -> Option<String> {
    let client = Client::connect(&Target::default_for(args.user))
        .await
        .ok()?;
    if !client.daemon_running().await {
        return None;
    }
    if client.manager().await.ok()?.host != cfg.host {
        return None;
    }
    let running: Vec<String> = client
        .list_services()
        .await
        .ok()?
        .into_iter()
        .map(|r| r.name)
        .collect();
    let removed: Vec<String> = running
        .iter()
        .filter(|n| cfg.service(n).map_or(true, |s| !s.assigned_to(&cfg.host)))
        .cloned()
        .collect();
    config::guard_message(running.len(), &removed, cfg.reload_guard)
}
