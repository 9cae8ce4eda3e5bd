//! `stackctl logs NAME [-f]`: the service's log lines as the daemon pipes them.

use std::io::{BufRead, Write};

use super::remote::Conn;
use super::{exit, Result};

pub(super) async fn logs(client: &Conn, name: &str, lines: u32, follow: bool) -> Result<u8> {
    let file = client.logs(name, lines, follow).await?;
    let reader = std::io::BufReader::new(file);
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(exit::OK)
}
