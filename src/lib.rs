//! stackd keeps a host's Docker Compose deployments at their declared
//! desired state. See ARCHITECTURE.md for the map of this crate.

// The library's own lints (Cargo.toml's apply to tests too, where these
// would be noise):
// `pub` means "part of the crate's surface"; inside a private module it
// says nothing, so such items are `pub(crate)`.
#![warn(unreachable_pub)]
// A panic in the daemon is an outage: handle the error, or `expect` with the
// invariant that holds. Unit tests may unwrap (clippy.toml).
#![warn(clippy::unwrap_used)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dbus;
pub mod deps;
pub mod engine;
pub mod events;
pub mod fmt;
pub mod fuzz;
pub mod health;
pub mod hosts;
pub mod housekeeping;
pub mod monitor;
pub mod notify;
pub mod peer;
pub mod preflight;
pub mod reconcile;
pub mod recovery;
pub mod resources;
pub mod state;
pub mod store;
pub mod supervise;
pub mod systemd;
pub mod tasks;
pub mod time;
pub mod units;
pub mod world;
