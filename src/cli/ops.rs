//! The operations that queue tasks (`start`, `stop`, `restart`, `update`,
//! `pull`, `down`, `rollback`; `migrate`, `prune` and `apply` follow their
//! task here too): submitted name by name, then followed to their end;
//! and `start --dry-run`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::args::Args;
use super::remote::Conn;
use super::{exit, logs_denied, Failed, Result};
use crate::dbus::client::{Client, JobMode, ServiceOp, TaskInfo};

/// `op` on each name; with `wait`, through `QueueAndWait`, so the task
/// ends when the service is ready.
pub(super) async fn queue(
    client: &Conn,
    args: &Args,
    op: ServiceOp,
    names: &[String],
    wait: bool,
) -> Result<u8> {
    queue_mode(client, args, op, names, wait, JobMode::Fail).await
}

/// `op` on each name with a job mode: "fail" through the plain method
/// (`StartService`, ...), "replace" (start or stop: what stands in the way
/// stops first) through its `…Mode` twin.
pub(super) async fn queue_mode(
    client: &Conn,
    args: &Args,
    op: ServiceOp,
    names: &[String],
    wait: bool,
    mode: JobMode,
) -> Result<u8> {
    submit_each(client, args, names, wait, |name| async move {
        if wait {
            Ok(client.bus()?.queue_and_wait(name, op, mode).await?)
        } else if mode == JobMode::Fail {
            client.service_op(op, name).await
        } else {
            client.service_op_mode(op, name, mode).await
        }
    })
    .await
}

/// Submits one task per name, in the order given: a refused name is
/// reported (the name, then the reason) and the others still go ahead.
/// The exit code is the refusal's own code for a single name (4 for an
/// unknown one, as `status` says), else 1 when any name was refused or any
/// task did not succeed.
pub(super) async fn submit_each<'a, F, Fut>(
    client: &Conn,
    args: &Args,
    names: &'a [String],
    wait: bool,
    submit: F,
) -> Result<u8>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    if wait && matches!(client, Conn::Host { .. }) {
        return Err(Failed(
            exit::USAGE,
            "--wait is not available with -H; run it on the host".to_string(),
        ));
    }
    let mut ids = Vec::new();
    let mut refused = Vec::new();
    for name in names {
        match submit(name).await {
            Ok(id) => ids.push((name.clone(), id)),
            Err(Failed(code, why)) => {
                eprintln!("{name}: {why}");
                refused.push(code);
            }
        }
    }
    let code = follow_all(client, args, ids).await?;
    Ok(match refused.as_slice() {
        [] => code,
        [only] if names.len() == 1 => *only,
        _ => exit::FAILURE,
    })
}

async fn follow_all(client: &Conn, args: &Args, ids: Vec<(String, u64)>) -> Result<u8> {
    if args.no_block {
        for (_, id) in &ids {
            println!("{id}");
        }
        return Ok(exit::OK);
    }
    let mut code = exit::OK;
    for (name, id) in ids {
        code = code.max(follow_task(client, args, id, &name).await?);
    }
    Ok(code)
}

/// Stream a task's log until it ends: plain lines when piped, plus a
/// progress line on a terminal. Non-zero when the task did not succeed.
pub(super) async fn follow_task(client: &Conn, args: &Args, id: u64, what: &str) -> Result<u8> {
    if args.no_block {
        println!("{id}");
        return Ok(exit::OK);
    }
    let tty = std::io::stderr().is_terminal() && !args.quiet;
    let started = Instant::now();
    let mut seen = 0u32;
    let mut out = std::io::stdout();
    loop {
        let info = client.task(id).await?;
        // A caller allowed to change state but not to read logs (polkit
        // org.stackd1.manage only) still follows the task to its end.
        let lines = match client.task_log_since(id, seen).await {
            Err(e) if logs_denied(&e) => {
                if seen == 0 {
                    let _ = writeln!(out, "(log lines hidden: {})", e.1);
                    seen = 1;
                }
                Vec::new()
            }
            r => r?,
        };
        if tty && !lines.is_empty() {
            eprint!("\r\x1b[2K");
        }
        if !args.quiet {
            for l in &lines {
                let _ = writeln!(out, "{l}");
            }
        }
        seen = seen.saturating_add(u32::try_from(lines.len()).unwrap_or(u32::MAX));
        if info.finished() {
            if tty {
                eprint!("\r\x1b[2K");
            }
            return Ok(report(&info, what));
        }
        if tty {
            eprint!(
                "\r\x1b[2K⋯ {what} ({}: {}, {:.1}s)",
                info.kind,
                info.state,
                started.elapsed().as_secs_f32()
            );
        }
        let _ = out.flush();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn report(t: &TaskInfo, what: &str) -> u8 {
    if t.state == "succeeded" {
        return exit::OK;
    }
    eprintln!(
        "Task {} ({} {what}) {}: {}. See 'stackctl task {}' for its log.",
        t.id,
        t.kind,
        t.result,
        if t.error.is_empty() {
            &t.state
        } else {
            &t.error
        },
        t.id
    );
    exit::FAILURE
}

/// `start --dry-run`: preflight, then the tasks a start would queue.
pub(super) async fn dry_run_start(client: &Client, names: &[String], force: bool) -> Result<u8> {
    let mode = if force { "replace" } else { "fail" };
    for name in names {
        for line in client.check(name).await? {
            println!("{line}");
        }
        println!("{name}: preflight passed");
        println!("Starting {name} would:");
        for (i, step) in client.plan_start(name, mode).await?.iter().enumerate() {
            println!(
                "  {}. {} {} ({})",
                i + 1,
                step.action,
                step.service,
                step.reason
            );
        }
    }
    Ok(exit::OK)
}
