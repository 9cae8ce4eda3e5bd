//! Health: probes (http, tcp, command, file), the per-service health state
//! machine, and the probe runner.
//!
//! - [`run_probe`] runs one probe once and always answers with a
//!   [`ProbeResult`]; a failure to probe is a failed probe with a message.
//! - [`HealthMachine`] is pure: probe results and container facts in, the
//!   overall [`Health`] out, with changes debounced over `retries` probes.
//! - [`spawn_probes`] runs every service's probe on its interval and sends
//!   the results into a channel; it knows nothing of the rest of the daemon.
//! - [`Board`] is what the supervisor knows of each service (machine,
//!   restart budget, recoveries, waits), held by the core and written by
//!   `supervise.rs`; the core reads it without knowing the supervisor.

mod board;
mod http;
mod machine;
mod probe;
mod runner;

use std::time::Duration;

pub(crate) use board::{evidence, slot_for, Episode, Seen};
pub use board::{retry_delay, Board, Verdict};
pub use machine::{Change, Facts, Health, HealthMachine};
pub use probe::{run_probe, ProbeContext};
pub use runner::{spawn_probes, ProbeRunner};

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    /// What was seen, for a person: "HTTP 200 from http://…", "connection
    /// refused", "exited with code 1: …".
    pub message: String,
    pub took: Duration,
}

impl ProbeResult {
    pub fn ok(message: impl Into<String>, took: Duration) -> ProbeResult {
        ProbeResult {
            ok: true,
            message: message.into(),
            took,
        }
    }

    pub fn failed(message: impl Into<String>, took: Duration) -> ProbeResult {
        ProbeResult {
            ok: false,
            message: message.into(),
            took,
        }
    }
}

/// Why a probe could not even be tried; [`run_probe`] turns these into
/// failed [`ProbeResult`]s with the error's text as the message.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("unsupported URL {0:?}: only http:// and https:// are")]
    UnsupportedUrl(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("bad URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the command probe has an empty argv")]
    EmptyCommand,
    #[error("not an HTTP response: {0}")]
    BadResponse(String),
    #[error("the probe runs in container service {0:?}, but Docker is not connected")]
    NoDocker(String),
    #[error("no running container of service {service:?} in project {project:?}")]
    NoContainer { project: String, service: String },
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}
