//! Named D-Bus errors, `org.stackd1.Error.*`, and the mapping from the core's
//! typed errors.

use crate::control::ControlError;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.stackd1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchService(String),
    NoSuchTask(String),
    InvalidArgument(String),
    AccessDenied(String),
    PreflightFailed(String),
    Conflict(String),
    DockerUnavailable(String),
    InvalidConfig(String),
    ShuttingDown(String),
    /// A host of the cluster that had to be asked did not answer.
    PeerUnreachable(String),
    Failed(String),
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        let msg = e.to_string();
        match e {
            ControlError::NoSuchService(_) => Error::NoSuchService(msg),
            ControlError::NoSuchTask(_) => Error::NoSuchTask(msg),
            ControlError::InvalidArgument(_) => Error::InvalidArgument(msg),
            ControlError::Conflict(_) => Error::Conflict(msg),
            ControlError::PreflightFailed(_) => Error::PreflightFailed(msg),
            ControlError::DockerUnavailable(_) => Error::DockerUnavailable(msg),
            ControlError::InvalidConfig(_) => Error::InvalidConfig(msg),
            ControlError::ShuttingDown => Error::ShuttingDown(msg),
            ControlError::PeerUnreachable(_) => Error::PeerUnreachable(msg),
            ControlError::Store(_) | ControlError::Io(_) => Error::Failed(msg),
        }
    }
}

pub(super) type Result<T> = std::result::Result<T, Error>;
