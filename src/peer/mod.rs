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
