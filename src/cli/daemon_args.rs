//! The stackd daemon's command line. Kept in the library, next to
//! stackctl's, so that stackd(8) is generated from the same definitions the
//! binary parses.

use std::path::PathBuf;

use clap::Parser;

/// Keeps this host's Docker Compose deployments at their declared state.
#[derive(Parser, Debug)]
#[command(name = "stackd", version, about, long_about = None)]
pub struct DaemonArgs {
    /// The cluster file [default: /etc/stackd/stackd.toml, or
    /// $XDG_CONFIG_HOME/stackd/stackd.toml with --user]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run for the calling user on the session bus, state under $XDG_STATE_HOME.
    #[arg(long)]
    pub user: bool,
    /// This host's name in the cluster file [default: the `host` key, else the hostname]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Check the configuration, print what is wrong with file:line:col, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Run on the in-process simulator instead of Docker and Compose (no
    /// Docker needed): for trying stackd, tests and benches. Failures are
    /// injected through the socket sim.sock in the state directory
    /// ($STACKD_SIM_CONTROL overrides the path).
    #[arg(long)]
    pub sim: bool,
}

/// The clap command of `stackd`, for its manual page.
pub fn daemon_command() -> clap::Command {
    <DaemonArgs as clap::CommandFactory>::command()
}
