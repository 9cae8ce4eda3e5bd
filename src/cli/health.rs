//! `stackctl health --watch [-d SECS]`: the health table drawn again every
//! SECS seconds, like watch(1), until interrupted (Ctrl-C ends it with
//! exit code 0). On a terminal each frame replaces the last; piped, the
//! frames follow one another, each under a line with the time.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::args::Args;
use super::{exit, Failed, Result};
use crate::dbus::client::Client;

/// Clear the screen and go to its top left corner.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub(super) async fn watch(
    client: &Client,
    args: &Args,
    names: &[String],
    json: bool,
    delay: f64,
) -> Result<u8> {
    let every = Duration::try_from_secs_f64(delay)
        .ok()
        .filter(|d| *d >= Duration::from_millis(100))
        .ok_or_else(|| {
            Failed(
                exit::USAGE,
                format!("-d {delay}: expected seconds, 0.1 or more"),
            )
        })?;
    let tty = std::io::stdout().is_terminal() && !json;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let now = super::time::timestamp(crate::time::now_usec());
        if tty {
            print!("{CLEAR}");
        }
        if !json {
            println!("Every {delay}s: stackctl health    {now}\n");
        }
        // A daemon that went away ends the watch with its error.
        super::health(client, args, names, json).await?;
        if !tty {
            println!();
        }
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut interrupted => return Ok(exit::OK),
        }
    }
}
