//! The Compose CLI: finding it (v2 plugin or v1 `docker-compose`) and running
//! it as a child process in its own process group, with its output streamed
//! line by line, cancellation and a timeout.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::EngineError;

mod parse;
pub use parse::parse_config_hashes;
use parse::{parse_version_output, v1_images_from_config, version_at_least};

/// Time between SIGTERM and SIGKILL when a run is cancelled or times out.
pub const KILL_GRACE: Duration = Duration::from_secs(10);
/// After Compose exits, how long to wait for its output pipes to close
/// (something it started may still hold them).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Bound for `version` probes and the small helpers (`config ...`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);
/// The first v2 release with the global `--progress` flag.
const V2_PROGRESS_FLAG_SINCE: (u32, u32, u32) = (2, 19, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeFlavor {
    /// Compose v2 and later (Go), as `docker compose` or standalone.
    V2,
    /// Compose v1 (Python) `docker-compose`.
    V1,
}

/// Which command to use; the config module's `compose_command` maps onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeChoice {
    /// `docker compose` if it works, else `docker-compose`.
    Auto,
    /// `docker compose`.
    V2,
    /// `docker-compose` (whatever version it is; a standalone v2 binary
    /// named `docker-compose` is detected as v2).
    V1,
}

/// A Compose command that answered `version`, or a simulated one.
#[derive(Clone)]
pub struct Compose {
    program: Vec<String>,
    flavor: ComposeFlavor,
    version: String,
    /// Who runs the commands: None for the real CLI as a child process
    /// (`exec` below), else an in-process implementation (the simulator).
    runner: Option<Arc<dyn ComposeApi>>,
}

impl std::fmt::Debug for Compose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compose")
            .field("program", &self.program)
            .field("flavor", &self.flavor)
            .field("version", &self.version)
            .field("simulated", &self.runner.is_some())
            .finish()
    }
}

/// The seam under [`Compose`]: one Compose command line run to its end.
/// The real implementation is the CLI as a child process; the simulator
/// (`engine::sim`) implements it in process. Every helper (`config -q`,
/// `config --hash '*'`, `config --images`, ...) is a run of this one call,
/// so an implementation answers the argument vectors Compose v2 answers.
pub trait ComposeApi: Send + Sync + 'static {
    /// Runs `program -p PROJECT -f FILE ARGS...`; each output line goes to
    /// `on_line` with the stream it came from. Errors as the CLI's:
    /// [`ComposeError::Failed`] with the last line said, `Cancelled`,
    /// `TimedOut`.
    fn run<'a>(
        &'a self,
        inv: &'a Invocation,
        on_line: &'a mut (dyn FnMut(Source, &str) + Send),
        cancel: &'a CancellationToken,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ComposeError>>;
}

/// One Compose run: `program -p PROJECT -f FILE ARGS...` in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub project: String,
    pub dir: PathBuf,
    pub file: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot start {program}: {source}; is Compose installed and on PATH?")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("compose {}: {}", describe_exit(*code, *signal), if last_line.is_empty() { "(no output)" } else { last_line.as_str() })]
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
        last_line: String,
    },
    #[error("compose was cancelled and stopped")]
    Cancelled,
    #[error("compose did not finish within {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("waiting for compose failed: {0}")]
    Io(#[source] io::Error),
}

fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "ended abnormally".to_string(),
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
}

impl Compose {
    /// Finds a working Compose command. `Auto` prefers `docker compose` (v2)
    /// and falls back to `docker-compose`. The core finds it through its
    /// [`super::Engine`], which may be the simulator's instead.
    pub async fn detect(choice: ComposeChoice) -> Result<Compose, EngineError> {
        let candidates: &[&[&str]] = match choice {
            ComposeChoice::Auto => &[&["docker", "compose"], &["docker-compose"]],
            ComposeChoice::V2 => &[&["docker", "compose"]],
            ComposeChoice::V1 => &[&["docker-compose"]],
        };
        let mut tried = Vec::new();
        for program in candidates {
            match probe(program).await {
                Ok(compose) => {
                    tracing::debug!(compose = %compose.describe(), "found Compose");
                    return Ok(compose);
                }
                Err(why) => tried.push(format!("`{} version` {why}", program.join(" "))),
            }
        }
        Err(EngineError::NoCompose(format!(
            "{}; install the Docker Compose v2 plugin (package docker-compose-plugin) or docker-compose",
            tried.join("; ")
        )))
    }

    /// A Compose whose commands `runner` runs, speaking `flavor`; `program`
    /// and `version` are what [`Compose::describe`] shows.
    pub fn over(
        runner: Arc<dyn ComposeApi>,
        program: &[&str],
        flavor: ComposeFlavor,
        version: &str,
    ) -> Compose {
        Compose {
            program: program.iter().map(|p| p.to_string()).collect(),
            flavor,
            version: version.to_string(),
            runner: Some(runner),
        }
    }

    pub fn flavor(&self) -> ComposeFlavor {
        self.flavor
    }

    /// E.g. "docker-compose 1.29.2" or "docker compose 2.29.1".
    pub fn describe(&self) -> String {
        format!("{} {}", self.program.join(" "), self.version)
    }

    /// The command words, e.g. `["docker", "compose"]`.
    pub fn program(&self) -> &[String] {
        &self.program
    }

    /// Runs Compose; every output line (stdout and stderr) goes to `sink` as
    /// it arrives. Cancellation and the timeout send SIGTERM to Compose's
    /// process group, then SIGKILL after [`KILL_GRACE`].
    pub async fn run(
        &self,
        inv: &Invocation,
        sink: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancellationToken,
        timeout: Duration,
    ) -> Result<(), ComposeError> {
        self.exec(inv, &mut |_, line| sink(line), cancel, timeout, &|_| {})
            .await
    }

    /// Validates the project (`config -q`); the error carries Compose's
    /// complaint in `last_line`.
    pub async fn config_check(
        &self,
        project: &str,
        dir: &Path,
        file: &Path,
    ) -> Result<(), ComposeError> {
        self.output(project, dir, file, &["config", "-q"])
            .await
            .map(|_| ())
    }

    /// The project as Compose resolves it (`config`: variables, extends and
    /// env files applied, paths made absolute), as YAML text. Only stdout
    /// is returned: warnings on stderr would break the YAML.
    pub async fn config_yaml(
        &self,
        project: &str,
        dir: &Path,
        file: &Path,
    ) -> Result<String, ComposeError> {
        let lines = self.output(project, dir, file, &["config"]).await?;
        Ok(lines.join("\n"))
    }

    /// The configuration hash of each service (`config --hash '*'`), the
    /// value Compose compares with a container's
    /// `com.docker.compose.config-hash` label to decide whether `up`
    /// recreates it. v1 and v2 both print `SERVICE HASH` lines.
    pub async fn config_hashes(
        &self,
        project: &str,
        dir: &Path,
        file: &Path,
    ) -> Result<std::collections::BTreeMap<String, String>, ComposeError> {
        let lines = self
            .output(project, dir, file, &["config", "--hash", "*"])
            .await?;
        Ok(parse_config_hashes(&lines))
    }

    /// The images the project uses, as Compose resolves them (variables,
    /// extends and env files applied), without duplicates.
    ///
    /// v2 has `config --images`. v1 has no such flag, so its normalised
    /// `config` output is read instead (see [`v1_images_from_config`]).
    pub async fn images(
        &self,
        project: &str,
        dir: &Path,
        file: &Path,
    ) -> Result<Vec<String>, ComposeError> {
        let images = match self.flavor {
            ComposeFlavor::V2 => self
                .output(project, dir, file, &["config", "--images"])
                .await?
                .into_iter()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
            ComposeFlavor::V1 => {
                let yaml = self.output(project, dir, file, &["config"]).await?;
                v1_images_from_config(project, &yaml)
            }
        };
        let mut unique: Vec<String> = Vec::with_capacity(images.len());
        for image in images {
            if !unique.contains(&image) {
                unique.push(image);
            }
        }
        Ok(unique)
    }

    /// Runs a short Compose command and returns its stdout lines.
    async fn output(
        &self,
        project: &str,
        dir: &Path,
        file: &Path,
        args: &[&str],
    ) -> Result<Vec<String>, ComposeError> {
        let inv = Invocation {
            project: project.to_string(),
            dir: dir.to_path_buf(),
            file: file.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        let mut out = Vec::new();
        self.exec(
            &inv,
            &mut |source, line| {
                if source == Source::Stdout {
                    out.push(line.to_string());
                } else {
                    tracing::debug!(project, "compose: {line}");
                }
            },
            &CancellationToken::new(),
            HELPER_TIMEOUT,
            &|_| {},
        )
        .await?;
        Ok(out)
    }

    /// Global flags for plain, colourless, non-interactive output.
    fn global_flags(&self) -> Vec<&'static str> {
        match self.flavor {
            // `--no-ansi` is deprecated in 1.29 and warns; `--ansi never`
            // does not. v1 has no `--progress`; its output is plain anyway.
            ComposeFlavor::V1 => vec!["--ansi", "never"],
            ComposeFlavor::V2 => {
                if version_at_least(&self.version, V2_PROGRESS_FLAG_SINCE) {
                    vec!["--ansi", "never", "--progress", "plain"]
                } else {
                    // Before 2.19 there is no global `--progress`; since 2.3.3
                    // `--ansi never` selects plain progress by itself.
                    vec!["--ansi", "never"]
                }
            }
        }
    }

    fn command(&self, inv: &Invocation) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .args(self.global_flags())
            .arg("-p")
            .arg(&inv.project)
            .arg("-f")
            .arg(&inv.file)
            .args(&inv.args)
            .current_dir(&inv.dir)
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    /// The plumbing under `run` and `output`. `on_spawn` receives the child's
    /// pid (which is also its process group id).
    async fn exec(
        &self,
        inv: &Invocation,
        on_line: &mut (dyn FnMut(Source, &str) + Send),
        cancel: &CancellationToken,
        timeout: Duration,
        on_spawn: &(dyn Fn(u32) + Send + Sync),
    ) -> Result<(), ComposeError> {
        if cancel.is_cancelled() {
            return Err(ComposeError::Cancelled);
        }
        if let Some(runner) = &self.runner {
            return runner.run(inv, on_line, cancel, timeout).await;
        }
        let mut cmd = self.command(inv);
        tracing::debug!(project = %inv.project, args = ?inv.args, dir = %inv.dir.display(), "running {}", self.program.join(" "));
        let mut child = cmd.spawn().map_err(|source| ComposeError::Spawn {
            program: self.program.join(" "),
            source,
        })?;
        let pid = child.id().expect("a child that was just spawned has a pid");
        on_spawn(pid);
        let mut group = GroupGuard::new(pid);

        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
        let (mut out_open, mut err_open) = (true, true);
        let mut last_stdout = String::new();
        let mut last_stderr = String::new();

        let deadline = Instant::now() + timeout;
        let mut status: Option<ExitStatus> = None;
        let mut drain_until = Instant::now();
        // Why we are stopping it, and when SIGKILL follows.
        let mut stopping: Option<(ComposeError, Instant)> = None;
        let mut killed = false;

        loop {
            if status.is_some() && !out_open && !err_open {
                break;
            }
            let kill_at = stopping.as_ref().map_or(deadline, |(_, at)| *at);
            tokio::select! {
                // read_until keeps partial data in the buffer when another
                // branch wins, so nothing is lost.
                r = stdout.read_until(b'\n', &mut out_buf), if out_open => {
                    if !take_line(r, &mut out_buf, &mut out_open, |l| {
                        remember(&mut last_stdout, l);
                        on_line(Source::Stdout, l);
                    }) {
                        continue;
                    }
                }
                r = stderr.read_until(b'\n', &mut err_buf), if err_open => {
                    if !take_line(r, &mut err_buf, &mut err_open, |l| {
                        remember(&mut last_stderr, l);
                        on_line(Source::Stderr, l);
                    }) {
                        continue;
                    }
                }
                s = child.wait(), if status.is_none() => {
                    let s = s.map_err(ComposeError::Io)?;
                    status = Some(s);
                    drain_until = Instant::now() + DRAIN_GRACE;
                    if stopping.is_some() {
                        // Compose is gone; anything it left behind goes too.
                        group.kill(Signal::SIGKILL);
                    }
                }
                _ = cancel.cancelled(), if stopping.is_none() && status.is_none() => {
                    tracing::info!(project = %inv.project, "cancelling compose (pid {pid})");
                    group.kill(Signal::SIGTERM);
                    stopping = Some((ComposeError::Cancelled, Instant::now() + KILL_GRACE));
                }
                _ = sleep_until(deadline), if stopping.is_none() && status.is_none() => {
                    tracing::warn!(project = %inv.project, "compose timed out after {timeout:?} (pid {pid})");
                    group.kill(Signal::SIGTERM);
                    stopping = Some((ComposeError::TimedOut(timeout), Instant::now() + KILL_GRACE));
                }
                _ = sleep_until(kill_at), if stopping.is_some() && !killed && status.is_none() => {
                    tracing::warn!(project = %inv.project, "compose ignored SIGTERM for {KILL_GRACE:?}; killing it");
                    group.kill(Signal::SIGKILL);
                    killed = true;
                }
                _ = sleep_until(drain_until), if status.is_some() => {
                    // Something Compose started still holds its output.
                    group.kill(Signal::SIGKILL);
                    break;
                }
            }
        }
        group.disarm();

        if let Some((why, _)) = stopping {
            return Err(why);
        }
        let status = status.expect("the loop ends only after the child exited");
        if status.success() {
            return Ok(());
        }
        Err(ComposeError::Failed {
            code: status.code(),
            signal: status.signal(),
            last_line: if last_stderr.is_empty() {
                last_stdout
            } else {
                last_stderr
            },
        })
    }
}

/// Handles one `read_until` result: hands over a complete line (or the
/// last partial one at EOF). Returns false when nothing was handed over.
fn take_line(
    r: io::Result<usize>,
    buf: &mut Vec<u8>,
    open: &mut bool,
    mut emit: impl FnMut(&str),
) -> bool {
    match r {
        Ok(0) | Err(_) => {
            *open = false;
            if buf.is_empty() {
                return false;
            }
        }
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(buf);
    emit(text.trim_end_matches(['\n', '\r']));
    buf.clear();
    true
}

fn remember(last: &mut String, line: &str) {
    if !line.trim().is_empty() {
        last.clear();
        last.push_str(line.trim());
    }
}

/// Signals the child's process group; kills it when dropped while armed
/// (the run future was dropped midway).
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    fn new(pid: u32) -> GroupGuard {
        GroupGuard {
            pgid: Pid::from_raw(pid as i32),
            armed: true,
        }
    }

    fn kill(&self, signal: Signal) {
        match killpg(self.pgid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!("cannot send {signal} to process group {}: {e}", self.pgid),
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill(Signal::SIGKILL);
        }
    }
}

/// Runs `program version`; Ok when it answers like Compose.
async fn probe(program: &[&str]) -> Result<Compose, String> {
    let mut cmd = Command::new(program[0]);
    cmd.args(&program[1..])
        .arg("version")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("could not run: {e}")),
        Err(_) => return Err(format!("gave no answer within {PROBE_TIMEOUT:?}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let said = stderr
            .lines()
            .chain(stdout.lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(format!(
            "failed ({}): {said}",
            describe_exit(out.status.code(), out.status.signal())
        ));
    }
    let (flavor, version) = parse_version_output(&stdout).ok_or_else(|| {
        format!(
            "printed something that is not a Compose version: {:?}",
            stdout.trim()
        )
    })?;
    Ok(Compose {
        program: program.iter().map(|p| p.to_string()).collect(),
        flavor,
        version,
        runner: None,
    })
}

#[cfg(test)]
mod tests;
