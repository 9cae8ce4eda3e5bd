//! Container logs handed to the caller as the read end of a pipe, so a
//! `stackctl logs -f` streams for as long as it likes over plain D-Bus.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use zbus::zvariant::OwnedFd;

pub(super) fn pipe(mut lines: BoxStream<'static, String>) -> std::io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe()?;
    let mut sender = tokio::net::unix::pipe::Sender::from_owned_fd(write)?;
    tokio::spawn(async move {
        while let Some(line) = lines.next().await {
            let mut bytes = line.into_bytes();
            bytes.push(b'\n');
            // The reader went away (EPIPE): stop following.
            if sender.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    Ok(OwnedFd::from(read))
}
