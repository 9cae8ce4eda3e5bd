//! stackd keeps a host's Docker Compose deployments at their declared
//! desired state. See ARCHITECTURE.md for the map of this crate.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dbus;
pub mod deps;
pub mod engine;
pub mod events;
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
pub mod store;
pub mod supervise;
pub mod systemd;
pub mod tasks;
pub mod world;
