//! The peer endpoint: HTTP/1.1 + JSON under `/v1`, for stackctl `-H` and
//! for the other hosts of the cluster. Only this module knows HTTP.
//!
//! Built on hyper 1 directly rather than axum: hyper and hyper-util are
//! already in the dependency tree (bollard), so the server adds no crate;
//! the dozen fixed routes live in one table ([`server::ROUTES`]) that both
//! the dispatcher and the OpenAPI test read.

pub mod apply;
pub mod auth;
pub mod client;
mod cluster;
pub mod limits;
pub mod liveness;
mod metrics;
pub mod server;
mod tls;
pub mod types;
mod volumes;

use std::path::PathBuf;

use thiserror::Error;

pub use client::{PeerClient, PeerClientError, Trust};
pub use cluster::Cluster;
pub use server::{serve, PeerServer};

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("peer token file {path}: {message}")]
    Token { path: PathBuf, message: String },
    #[error("cannot listen on {listen} for the peer endpoint: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("peer TLS: {0}")]
    Tls(String),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use super::auth::Token;
    use super::{PeerClient, PeerClientError, Trust};

    /// A host that refuses the connection is unreachable in the words it
    /// always had, and the socket's own error stays underneath.
    #[tokio::test]
    async fn a_refused_connection_keeps_the_sockets_error() {
        // Bound, then closed: nothing listens on it now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let token = Token::from_text("secret").unwrap();
        let client =
            PeerClient::with_token(&url, token, Duration::from_secs(2), Trust::None).unwrap();
        let e = client.host().await.unwrap_err();
        assert!(
            matches!(&e, PeerClientError::Connect { url: u, .. } if u.starts_with(&url)),
            "{e:?}"
        );
        let cause = e.source().expect("the socket's error is kept");
        assert!(e.to_string().ends_with(&cause.to_string()), "{e} / {cause}");
    }
}
