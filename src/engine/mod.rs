//! The outside world: the Docker engine (through bollard) and the Compose CLI.
//!
//! Architecture invariant: only this module knows bollard and only this module
//! spawns Compose. Everything above it sees [`Docker`], [`Compose`] and the
//! plain data types re-exported here.
//!
//! Both handles are thin over a trait ([`ContainerApi`], [`ComposeApi`]):
//! the real implementations (bollard, the Compose CLI) or the in-process
//! simulator of `sim/`. Which of the two a core runs on is a value,
//! [`Engine`], chosen once (by `stackd`'s `--sim`, or a test) and handed to
//! the core's [`World`](crate::world::World): a process may hold several
//! cores, each on its own simulator.

mod api;
pub mod compose;
pub mod docker;
mod images;
pub mod sim;
pub mod volumes;

pub use api::{ContainerApi, Docker};
pub use compose::{Compose, ComposeApi, ComposeChoice, ComposeError, ComposeFlavor, Invocation};
pub use docker::{ContainerInfo, ContainerState, EngineEvent, EngineInfo};
pub use images::{DiskUsage, ImageRecord, NetworkRecord, ProjectContainer};
pub use volumes::{ProjectMounts, ProjectVolume};

/// The engine a core runs on: where its observer connects and where its
/// runner finds Compose. Cheap to clone.
#[derive(Clone)]
pub enum Engine {
    /// Docker at `DOCKER_HOST` (bollard) and the Compose CLI on `PATH`.
    Docker,
    /// The in-process simulator (`stackd --sim`, the core's tests).
    Sim(std::sync::Arc<sim::Sim>),
}

impl Engine {
    /// Connects to the engine: [`Docker::connect`], or the simulator's
    /// handle (refused while it is down, as Docker's connect would be).
    pub async fn connect(&self) -> Result<Docker, EngineError> {
        match self {
            Engine::Docker => Docker::connect().await,
            Engine::Sim(sim) => sim.connect().await,
        }
    }

    /// Finds Compose: [`Compose::detect`], or the simulator's whatever the
    /// choice.
    pub async fn compose(&self, choice: ComposeChoice) -> Result<Compose, EngineError> {
        match self {
            Engine::Docker => Compose::detect(choice).await,
            Engine::Sim(sim) => Ok(sim.compose()),
        }
    }

    /// The simulator, when this engine is one.
    pub fn sim(&self) -> Option<&std::sync::Arc<sim::Sim>> {
        match self {
            Engine::Docker => None,
            Engine::Sim(sim) => Some(sim),
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Docker => "Engine::Docker",
            Engine::Sim(_) => "Engine::Sim",
        })
    }
}

/// Something went wrong talking to the Docker engine or finding Compose.
/// An error kept as the source of an [`EngineError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine did not answer at all (no socket, connection refused,
    /// connection dropped, no answer in time).
    #[error("cannot reach Docker at {address}: {reason}; is dockerd running, and may this user open its socket?")]
    Unavailable {
        address: String,
        reason: String,
        /// The client's error, when one said why.
        #[source]
        source: Option<BoxError>,
    },

    /// `DOCKER_HOST` (or the address given) is not one we can use.
    #[error("unsupported Docker address {0:?}: use unix:///path/to/docker.sock or tcp://host:port (TLS and ssh:// are not supported)")]
    BadAddress(String),

    /// The engine answered, but refused or failed the request.
    #[error("Docker {call} failed: {message}")]
    Api {
        call: &'static str,
        message: String,
        /// The client's error, when the failure came from one.
        #[source]
        source: Option<BoxError>,
    },

    /// A container or image named in the request does not exist (any more).
    #[error("Docker {call}: no such object {what:?}")]
    NotFound { call: &'static str, what: String },

    /// Neither `docker compose` nor `docker-compose` works.
    #[error("no usable Compose command: {0}")]
    NoCompose(String),
}

impl EngineError {
    /// True when the engine itself is unreachable (as opposed to a request
    /// it rejected); the daemon uses this for `DockerConnected`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EngineError::Unavailable { .. })
    }
}

/// The one test-image builder, shared with the integration harness and the
/// benches (a path outside `src/`, so there is one recipe, not two).
#[cfg(test)]
#[path = "../../tests/common/image.rs"]
mod test_image;

/// Helpers shared by this module's tests. A shared test harness will replace
/// them; they stay deliberately small.
#[cfg(test)]
#[allow(
    unreachable_pub,
    reason = "the shared image builder is written for test crates"
)]
pub(crate) mod testing {
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    use super::{Compose, ComposeChoice, Docker};

    fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
    }

    /// A real part is missing: fail under CI, otherwise say loudly what is
    /// missing and let the caller return early.
    pub fn missing(what: &str, install: &str) {
        if in_ci() {
            panic!("{what} is required under CI=true: {install}");
        }
        // Past libtest's capture, which takes only the print macros.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIP: {what} is missing (install: {install})"
        );
    }

    /// Connects to the engine named by `DOCKER_HOST` (or the default socket).
    pub async fn docker() -> Option<Docker> {
        match Docker::connect().await {
            Ok(d) => Some(d),
            Err(e) => {
                missing(
                    "Docker",
                    &format!("{e}; install and start Docker Engine to run this test"),
                );
                None
            }
        }
    }

    /// The Compose flavor `STACKD_TEST_COMPOSE` names (`v1`, `v2`), else
    /// what `auto` finds, as the integration harness chooses.
    pub async fn compose() -> Option<Compose> {
        let choice = match std::env::var("STACKD_TEST_COMPOSE").as_deref() {
            Ok("v1") => ComposeChoice::V1,
            Ok("v2") => ComposeChoice::V2,
            Ok("") | Err(_) => ComposeChoice::Auto,
            Ok(other) => panic!("STACKD_TEST_COMPOSE={other:?}: expected v1 or v2"),
        };
        match Compose::detect(choice).await {
            Ok(c) => Some(c),
            Err(e) => {
                missing("Compose", &e.to_string());
                None
            }
        }
    }

    pub use super::test_image::test_image;

    /// One Compose project in a temp dir; `down`ed when dropped.
    pub struct Project {
        pub name: String,
        pub dir: tempfile::TempDir,
        pub file: PathBuf,
        program: Vec<String>,
    }

    impl Project {
        /// `suffix` makes the name unique per test; `services` is the YAML
        /// under `services:`.
        pub fn new(compose: &Compose, suffix: &str, services: &str) -> Project {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = dir.path().join("compose.yaml");
            std::fs::write(&file, format!("services:\n{services}")).expect("write compose file");
            Project {
                name: format!("stackdeng{suffix}"),
                dir,
                file,
                program: compose.program().to_vec(),
            }
        }

        pub fn invocation(&self, args: &[&str]) -> super::Invocation {
            super::Invocation {
                project: self.name.clone(),
                dir: self.dir.path().to_path_buf(),
                file: self.file.clone(),
                args: args.iter().map(|a| a.to_string()).collect(),
            }
        }
    }

    impl Drop for Project {
        fn drop(&mut self) {
            let _ = Command::new(&self.program[0])
                .args(&self.program[1..])
                .arg("-p")
                .arg(&self.name)
                .arg("-f")
                .arg(&self.file)
                .args(["down", "-v", "--remove-orphans", "-t", "1"])
                .current_dir(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod error_tests {
    use std::error::Error as _;

    /// An engine that cannot be reached says so in the same words, and
    /// keeps the client's own error underneath for whoever walks the chain.
    #[tokio::test]
    async fn an_unreachable_engine_keeps_the_clients_error() {
        let Err(e) =
            super::docker::Bollard::connect_to("unix:///nonexistent/stackd/docker.sock").await
        else {
            panic!("a socket that does not exist answered");
        };
        assert!(e.is_unavailable(), "{e:?}");
        let shown = e.to_string();
        assert!(
            shown.starts_with("cannot reach Docker at unix:///nonexistent/stackd/docker.sock: "),
            "{shown}"
        );
        assert!(e.source().is_some(), "no source kept: {e:?}");
    }
}
