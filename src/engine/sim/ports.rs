//! A simulated container's published ports: bound on the host as
//! docker-proxy binds them, answering every connection with a fixed small
//! HTTP reply (a stand-in for what the container would serve), so that http
//! and tcp probes see the service up. The one place in `engine/` that
//! writes HTTP; `tests/tidy.rs` allows it by name.

use std::time::Duration;

use crate::engine::EngineError;

/// Binds a container's published ports on the host, as docker-proxy does,
/// and answers each connection with a small HTTP 200, so that http and tcp
/// probes of a simulated service see it up. A port taken is Docker's error.
pub(super) fn publish(
    name: &str,
    ports: &[(u16, u16)],
) -> Result<Vec<tokio::task::JoinHandle<()>>, EngineError> {
    let mut bound = Vec::new();
    for &(host, _) in ports {
        let listener = std::net::TcpListener::bind(("0.0.0.0", host))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| EngineError::Api {
                call: "start container",
                message: format!(
                    "driver failed programming external connectivity on endpoint {name}: Bind for 0.0.0.0:{host} failed: {e}"
                ),
                source: Some(Box::new(e)),
            })?;
        bound.push(listener);
    }
    Ok(bound
        .into_iter()
        .map(|listener| {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                while let Ok((mut conn, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn.readable()).await;
                        let _ = conn.try_read(&mut buf);
                        let _ = conn
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 21\r\nconnection: close\r\n\r\nserved by stackd-sim\n")
                            .await;
                    });
                }
            })
        })
        .collect())
}
