//! stackctl's command line. Kept apart so the manual page and the shell
//! completions are generated from the same definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "stackctl",
    version,
    about = "Control the stackd daemon: Docker Compose services kept at their desired state",
    long_about = None
)]
pub struct Args {
    /// Talk to the daemon of the calling user on the session bus.
    #[arg(long, global = true)]
    pub user: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// Act on HOST of the cluster file: the local daemon relays the call to
    /// HOST's peer endpoint with its own token (stackctl reads neither the
    /// token nor the cluster file).
    #[arg(long, short = 'H', global = true, value_name = "HOST")]
    pub host: Option<String>,
    /// The cluster file `config push` sends [default: the daemon's]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Queue the task and print its id instead of waiting for it.
    #[arg(long, global = true)]
    pub no_block: bool,
    /// Accepted for systemctl's sake; stackctl never pages.
    #[arg(long, global = true)]
    pub no_pager: bool,
    /// Do not ellipsize long lines (status, health) to the terminal's
    /// width or $COLUMNS (piped output is never ellipsized).
    #[arg(long, short = 'l', global = true)]
    pub full: bool,
    /// Only errors: no task log while waiting, no counts, nothing from
    /// the is-* verbs (their exit code answers).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// No column headers and no footer in list, tasks, health and hosts.
    #[arg(long, global = true)]
    pub no_legend: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the services of this host.
    List {
        /// Every host in [hosts], with a HOST column.
        #[arg(long)]
        all_hosts: bool,
        /// Only the services that run (ActiveState active).
        #[arg(long)]
        running: bool,
        /// Only the services whose category is C.
        #[arg(long, value_name = "C")]
        category: Option<String>,
    },
    /// Every host of the cluster file as this host's daemon sees it:
    /// reachable or not and since when, version, load and config hash (a
    /// hash that differs from the others is marked: the files drifted).
    Hosts,
    /// Show a service like `systemctl status`, or the host when no name is given.
    Status {
        names: Vec<String>,
        /// How many of the service's last log lines to show (0: none).
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u32,
    },
    /// Print each service's active state (active, inactive, failed,
    /// activating, ...). Exit 0 when at least one is active, 3 otherwise,
    /// 4 when none is and a name is unknown, as `systemctl is-active`.
    IsActive {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print each service's active state. Exit 0 when at least one has
    /// failed, 1 otherwise, 4 when none has and a name is unknown, as
    /// `systemctl is-failed`.
    IsFailed {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print each service's desired state (running or stopped), stackd's
    /// `is-enabled`. Exit 0 when at least one is wanted running, 1
    /// otherwise, 4 when none is and a name is unknown.
    IsWanted {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Start services (docker compose up -d) after the dependencies they
    /// need, which start too and must be healthy first; their desired state
    /// becomes running. A service of one host starts only when no other
    /// host of the cluster runs it.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
        /// Stop running services that conflict (and what depends on them)
        /// first instead of refusing, and start even when another host of
        /// the cluster cannot be asked whether it runs the service.
        #[arg(long)]
        force: bool,
        /// Run the preflight checks and print what a start would do, in
        /// order, without doing it.
        #[arg(long)]
        dry_run: bool,
        /// The task then waits until the service runs and is healthy (its
        /// probe, Docker's healthchecks) within its start_timeout, logging
        /// each health change; its result is "timeout" (exit 1) when not.
        #[arg(long)]
        wait: bool,
    },
    /// Move a service to another host: preflight and pull there, then
    /// stop here and start there (handoff = "stop-first"), or start there,
    /// wait until healthy and stop here ("overlap").
    Migrate {
        name: String,
        /// The host to move to, as named in [hosts].
        #[arg(value_name = "HOST")]
        to: String,
        /// Go ahead when a third host cannot be asked whether it runs the
        /// service; an unreachable target always refuses.
        #[arg(long)]
        force: bool,
        /// Carry the service's named volumes (those Compose created for
        /// it): after the stop here each is streamed to HOST and checked
        /// there (SHA-256) before the service starts there; any failure
        /// before that start restarts it here, its data untouched. Bind
        /// mounts stay behind (the task log names them). Implies
        /// stop-first.
        #[arg(long)]
        with_volumes: bool,
    },
    /// Stop services; their desired state becomes stopped and survives reboots.
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
        /// Stop the running services that depend on them first, dependents
        /// first, instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Restart services.
    Restart {
        #[arg(required = true)]
        names: Vec<String>,
        /// The task then waits until the service runs and is healthy (its
        /// probe, Docker's healthchecks) within its start_timeout, logging
        /// each health change; its result is "timeout" (exit 1) when not.
        #[arg(long)]
        wait: bool,
    },
    /// Pull images, then recreate; a failed pull leaves the service as it was.
    Update {
        #[arg(required = true)]
        names: Vec<String>,
        /// The task then waits until the service runs and is healthy (its
        /// probe, Docker's healthchecks) within its start_timeout, logging
        /// each health change; its result is "timeout" (exit 1) when not.
        #[arg(long)]
        wait: bool,
    },
    /// Pull the services' images.
    Pull {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop and remove the services' containers and networks (volumes are kept).
    Down {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove images no managed service uses (each service's previous
    /// image is kept for rollback), and stopped containers and networks of
    /// projects stackd deployed and no longer manages. Never a volume,
    /// never anything of a project stackd does not manage. Without a kind,
    /// all three.
    Prune {
        /// Images stackd saw a service run that no service uses now.
        #[arg(long)]
        images: bool,
        /// Stopped containers of projects stackd no longer manages.
        #[arg(long)]
        containers: bool,
        /// Networks of projects stackd no longer manages.
        #[arg(long)]
        networks: bool,
        /// List what would go and its size; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Redeploy the services with the image each ran before its last
    /// update (kept by prune).
    Rollback {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List tasks, newest first.
    Tasks {
        /// Only tasks of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only tasks in these states (pending, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Vec<String>,
        /// At most this many.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: u32,
    },
    /// Show one task with its whole log.
    Task { id: u64 },
    /// Cancel pending or running tasks.
    Cancel {
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Show a service's container logs.
    Logs {
        name: String,
        /// Keep following new lines.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many lines from the end (0: all).
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
    },
    /// Bring this host to its desired state now.
    Apply {
        /// Also stop services no longer assigned to this host when they are
        /// more than reload_guard of them (else refused).
        #[arg(long)]
        force: bool,
        /// Every host of the cluster file (-c), over the peer endpoint: a
        /// service whose placement changed is stopped on the hosts it leaves
        /// (after a preflight where it goes) and only then started where it
        /// goes, dependencies first; then every host applies the rest. One
        /// with handoff_volumes is moved with its named volumes instead.
        #[arg(long)]
        all_hosts: bool,
        /// With --all-hosts: list the plan, host by host, and do nothing.
        #[arg(long, requires = "all_hosts")]
        dry_run: bool,
    },
    /// Reload the configuration; a bad file keeps the running one, and so
    /// does one that would remove more than reload_guard of this host's
    /// services (or every one). A reload starts and stops nothing: a
    /// service it adds waits for apply (or start).
    Reload {
        /// Take a valid file whatever it removes.
        #[arg(long)]
        force: bool,
    },
    /// Run the preflight checks of a deploy only (compose file, images,
    /// bind mounts, env files, ports, disk) and list every problem.
    Check { name: String },
    /// Show what a service depends on as a tree, like `systemctl
    /// list-dependencies`, with each one's state.
    Dependencies {
        name: String,
        /// Show what depends on the service instead.
        #[arg(long)]
        reverse: bool,
    },
    /// Print the evidence stackd sees for a service and what it would do,
    /// without doing it.
    Diagnose { name: String },
    /// Health of every service (or the named ones), with the reason.
    Health {
        names: Vec<String>,
        /// Draw the table again every SECS seconds, like watch(1), until
        /// interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with --watch.
        #[arg(long, short = 'd', default_value_t = 2.0, value_name = "SECS")]
        delay: f64,
    },
    /// Per service: running, could start, or blocked, with the problems
    /// that block it (preflight's, a blocked dependency, an external
    /// service that is not healthy). Exits 1 when one is blocked.
    Readiness,
    /// The services an operation needs: those whose required_for names
    /// OPERATION, with their dependencies, and whether each runs. Exits 0
    /// when all run, 3 when one does not, 4 when none is required for it.
    Required {
        operation: String,
        /// Start those that do not run, with their dependencies, as
        /// `start` does.
        #[arg(long)]
        start: bool,
    },
    /// Live table of this host's containers with CPU, memory, pids and
    /// network from the daemon's last sample, like systemd-cgtop.
    Top {
        /// Sort by.
        #[arg(long, value_enum, default_value_t = TopOrder::Cpu)]
        order: TopOrder,
        /// Seconds between refreshes.
        #[arg(long, short = 'd', default_value_t = 2.0, value_name = "SECS")]
        delay: f64,
        /// Stop after this many refreshes [default: until interrupted].
        #[arg(long, short = 'n', value_name = "N")]
        iterations: Option<u32>,
        /// Plain snapshots one after the other, no escape codes (the
        /// default when stdout is not a terminal).
        #[arg(long, short = 'b')]
        batch: bool,
    },
    /// Notifications.
    Notify {
        #[command(subcommand)]
        action: NotifyAction,
    },
    /// Show the daemon's alerts as desktop notifications (for a user
    /// session: stackd-notify-agent.service). Follows the Alert signal on
    /// the system bus (the session bus with --user) and calls
    /// org.freedesktop.Notifications on the session bus; runs until a bus
    /// connection is lost.
    NotifyAgent,
    /// The cluster file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Check a configuration file without asking the daemon.
    Validate {
        /// [default: /etc/stackd/stackd.toml, or the user config with --user]
        file: Option<PathBuf>,
        /// The host name to check the file as.
        #[arg(long)]
        host: Option<String>,
    },
    /// For the shell completion scripts: print this host's service names or
    /// recent task ids, one a line with a tab and a description, or nothing
    /// when the daemon does not answer.
    #[command(name = "__complete", hide = true)]
    Complete { what: CompleteWhat },
}

/// How `stackctl top` sorts its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TopOrder {
    /// Most CPU first.
    Cpu,
    /// Most memory first.
    Memory,
    /// By service, then container name.
    Name,
}

/// What `stackctl __complete` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompleteWhat {
    Services,
    Tasks,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Send the cluster file to every host of its [hosts] (this one too).
    /// Every host checks it first, as a reload would; only when all accept
    /// it does each write it (atomically) and reload. A refusal or an
    /// unreachable host leaves the running configuration everywhere.
    Push {
        /// [default: the file -c names, else the daemon's]
        file: Option<PathBuf>,
        /// Write it even where it removes more than reload_guard of a
        /// host's services (or every one).
        #[arg(long)]
        force: bool,
        /// Once every host took it, apply it on every host as `apply
        /// --all-hosts` does (services whose placement changed are moved).
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotifyAction {
    /// Send a test message through the real channel (all channels when none
    /// is named: journal, email, webhook.NAME) and report what happened.
    Test { channel: Option<String> },
}

pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}
