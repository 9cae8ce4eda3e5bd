//! What the hand-off asks of the other hosts: the [`Peers`] trait
//! (implemented by `peer::Cluster`) and the answers it carries.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::config::PeerConfig;
use crate::state::{ActiveState, SubState};

/// What another host says of a service it manages.
#[derive(Clone, Debug)]
pub struct PeerService {
    pub desired_state: String,
    pub active_state: ActiveState,
    /// "running", "exited" (every container completed), "partial", ...
    pub sub_state: SubState,
    /// When a person or a move set its desired state there (0: the
    /// cluster file's `auto_start`).
    pub desired_since_usec: u64,
}

impl PeerService {
    /// Wanted running there, or running there now. A service that host
    /// stopped whose containers all exited 0 shows "active (exited)" (as
    /// a finished one-shot job would): nothing of it runs, so it does not
    /// count.
    pub(super) fn runs(&self) -> bool {
        self.desired_state == "running" || self.active()
    }

    /// Something of it runs there now (or is being started).
    pub(super) fn active(&self) -> bool {
        self.active_state == ActiveState::Activating
            || (self.active_state == ActiveState::Active && self.sub_state != SubState::Exited)
    }
}

/// A task on another host.
#[derive(Clone, Debug)]
pub struct RemoteTask {
    pub state: String,
    pub result: String,
    pub error: String,
}

#[derive(Clone, Debug)]
pub enum PeerFailure {
    /// No answer: refused connection, timeout, TLS, no token.
    Unreachable(String),
    /// An answer with an error: its kind ("PreflightFailed", ...) and text.
    Refused { kind: String, message: String },
}

impl std::fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerFailure::Unreachable(m) => write!(f, "no answer: {m}"),
            PeerFailure::Refused { message, .. } => f.write_str(message),
        }
    }
}

pub(super) type PeerResult<'a, T> = BoxFuture<'a, Result<T, PeerFailure>>;

/// The other hosts, reached at their peer URL with `[peer]`'s token and
/// timeout.
pub trait Peers: Send + Sync {
    /// The service on that host; `None` when the host does not manage it.
    fn service<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
    ) -> PeerResult<'a, Option<PeerService>>;
    /// Every service the host's cluster file names.
    fn known_services<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
    ) -> PeerResult<'a, Vec<String>>;
    /// Preflight there, and a pull of the images it lacks: the pull
    /// task's id, if one was needed.
    fn prepare<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> PeerResult<'a, Option<u64>>;
    /// Queue the receive task there; its id.
    fn receive<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> PeerResult<'a, u64>;
    fn task<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        id: u64,
    ) -> PeerResult<'a, RemoteTask>;
    /// Streams one named volume's content (a tar stream) to the host;
    /// what it received and verified (the SHA-256 the sender computed over
    /// the bytes it sent, checked there).
    fn send_volume<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        offer: &'a VolumeOffer,
        tar: BoxStream<'static, Result<Bytes, String>>,
    ) -> PeerResult<'a, VolumeReceipt>;
}

/// A named volume a move carries: what the receiving host needs to make
/// it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeOffer {
    /// The service (the Compose project) it belongs to.
    pub service: String,
    /// The host it comes from.
    pub from: String,
    /// Docker's name for it, the same on both hosts.
    pub volume: String,
    pub driver: String,
    pub labels: std::collections::HashMap<String, String>,
    /// The image the receiving host makes its stopped carrier container
    /// from (one of the service's own, present there after the preflight).
    pub image: String,
}

/// What the receiving host got, as it verified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeReceipt {
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// A volume of that name was there already and was replaced.
    pub replaced: bool,
}
