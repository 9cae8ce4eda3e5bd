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

/// "docker-compose version 1.29.2, build unknown" → (V1, "1.29.2");
/// "Docker Compose version v2.29.1" → (V2, "2.29.1").
fn parse_version_output(out: &str) -> Option<(ComposeFlavor, String)> {
    let first = out.lines().find(|l| !l.trim().is_empty())?;
    let lower = first.to_ascii_lowercase();
    if !lower.contains("compose") {
        return None;
    }
    let word = first
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("version"))
        .nth(1)?;
    let version = word
        .trim_end_matches(',')
        .trim_start_matches(['v', 'V'])
        .to_string();
    let major: u32 = version.split('.').next()?.parse().ok()?;
    let flavor = if major <= 1 {
        ComposeFlavor::V1
    } else {
        ComposeFlavor::V2
    };
    Some((flavor, version))
}

/// Compares "2.29.1" (or "2.29.1-desktop.1") with a minimum; an unreadable
/// version counts as new.
/// `SERVICE HASH` lines of `config --hash` into a map; other lines are
/// skipped.
pub fn parse_config_hashes(lines: &[String]) -> std::collections::BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (service, hash) = (words.next()?, words.next()?);
            let hex = hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            (hex && words.next().is_none()).then(|| (service.to_string(), hash.to_string()))
        })
        .collect()
}

fn version_at_least(version: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().ok());
    let mut next = || parts.next().flatten();
    match (next(), next(), next()) {
        (Some(a), Some(b), c) => (a, b, c.unwrap_or(0)) >= min,
        _ => true,
    }
}

/// Reads the images from Compose v1's `config` output.
///
/// That output is not the user's file: it is v1's own normalised dump
/// (PyYAML, two-space indent, keys sorted, variables resolved), so every
/// service sits at indent 2 under the top-level `services:` and its keys at
/// indent 4; wrapped long values continue at a deeper indent. A service
/// with `build:` and no `image:` gets v1's default name
/// `{project}_{service}`.
fn v1_images_from_config(project: &str, lines: &[String]) -> Vec<String> {
    let project: String = project
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let mut images = Vec::new();
    let mut in_services = false;
    // (service name, image, has build)
    let mut current: Option<(String, Option<String>, bool)> = None;
    let finish = |svc: Option<(String, Option<String>, bool)>, images: &mut Vec<String>| match svc {
        Some((_, Some(image), _)) => images.push(image),
        Some((name, None, true)) => images.push(format!("{project}_{name}")),
        _ => {}
    };
    for line in lines {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = line.trim_end();
        if body.trim().is_empty() {
            continue;
        }
        if indent == 0 {
            finish(current.take(), &mut images);
            in_services = body == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            finish(current.take(), &mut images);
            if let Some(name) = body.trim().strip_suffix(':') {
                current = Some((unquote(name), None, false));
            }
        } else if indent == 4 {
            if let Some(svc) = current.as_mut() {
                let key_value = body.trim();
                if let Some(value) = key_value.strip_prefix("image:") {
                    svc.1 = Some(unquote(value.trim()));
                } else if key_value == "build:" || key_value.starts_with("build: ") {
                    svc.2 = true;
                }
            }
        }
    }
    finish(current.take(), &mut images);
    images
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 {
        if let Some(inner) = s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            return inner.replace("''", "'");
        }
        if let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            return inner.to_string();
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::docker::ContainerState;
    use crate::engine::testing::{self, Project};

    #[test]
    fn config_hash_lines_of_both_flavors() {
        // v1 1.29 and v2 2.26 print the same shape; warnings are skipped.
        let lines: Vec<String> = [
            "db 15ce699da1682bbc22100af55c40f3a34de5cbf0c59314028bbafbde933dcabb",
            "WARNING: something odd",
            "web 38927781c00986f61463b3ad4e0d5f798a5d26681e8065fbe7293ed9efb11732",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = parse_config_hashes(&lines);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m["db"],
            "15ce699da1682bbc22100af55c40f3a34de5cbf0c59314028bbafbde933dcabb"
        );
        assert!(m.contains_key("web"));
    }

    fn sleeper(name: &str, secs: u32) -> String {
        let image = testing::test_image();
        format!(
            "  {name}:\n    image: {image}\n    pull_policy: never\n    stop_signal: SIGKILL\n    command: [\"sh\", \"-c\", \"echo started; sleep {secs}\"]\n"
        )
    }

    /// No live (non-zombie) process is left in the group `pgid`; killed
    /// processes may take a moment to die, so it looks for up to 2 s.
    async fn process_gone(pgid: u32) -> bool {
        let alive = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
                .any(|stat| {
                    // "pid (comm) state ppid pgrp ..."; comm may hold spaces.
                    let Some((_, rest)) = stat.rsplit_once(')') else {
                        return false;
                    };
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
                })
        };
        for _ in 0..20 {
            if !alive() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    #[test]
    fn parses_version_output() {
        assert_eq!(
            parse_version_output(
                "docker-compose version 1.29.2, build unknown\ndocker-py version: 5.0.3\n"
            ),
            Some((ComposeFlavor::V1, "1.29.2".to_string()))
        );
        assert_eq!(
            parse_version_output("Docker Compose version v2.29.1\n"),
            Some((ComposeFlavor::V2, "2.29.1".to_string()))
        );
        assert_eq!(
            parse_version_output("Docker Compose version 2.24.6-desktop.1"),
            Some((ComposeFlavor::V2, "2.24.6-desktop.1".to_string()))
        );
        assert_eq!(
            parse_version_output("Usage: docker [OPTIONS] COMMAND"),
            None
        );
        assert!(version_at_least("2.19.0", V2_PROGRESS_FLAG_SINCE));
        assert!(version_at_least("2.24.6-desktop.1", V2_PROGRESS_FLAG_SINCE));
        assert!(version_at_least("5.0.1", V2_PROGRESS_FLAG_SINCE));
        assert!(!version_at_least("2.17.2", V2_PROGRESS_FLAG_SINCE));
    }

    #[test]
    fn reads_images_from_v1_config_output() {
        // Real `docker-compose config` 1.29 output, long values wrapped.
        let out = "services:
  app:
    command:
    - sh
    - -c
    - 'echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
      image: x'
    image: stackd-test/busybox:1
  built:
    build:
      context: /tmp/cfx/b
    environment:
      FOO: 'image: nope'
  reg:
    image: localhost:5000/x/y@sha256:00
    labels:
      image: zzz
  plain:
    image: 'busybox:1'
volumes:
  data:
    image: not-a-service
version: '2.4'
";
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        assert_eq!(
            v1_images_from_config("Stackd.Eng", &lines),
            vec![
                "stackd-test/busybox:1",
                "stackdeng_built",
                "localhost:5000/x/y@sha256:00",
                "busybox:1"
            ]
        );
    }

    #[test]
    fn failure_messages_say_what_happened() {
        let e = ComposeError::Failed {
            code: Some(1),
            signal: None,
            last_line: "no such service: x".into(),
        };
        assert_eq!(
            e.to_string(),
            "compose exited with code 1: no such service: x"
        );
        let e = ComposeError::Failed {
            code: None,
            signal: Some(9),
            last_line: String::new(),
        };
        assert_eq!(e.to_string(), "compose was killed by signal 9: (no output)");
    }

    #[tokio::test]
    async fn docker_detects_compose() {
        let Some(compose) = testing::compose().await else {
            return;
        };
        let described = compose.describe();
        assert!(described.contains("compose"), "{described}");
        assert!(described.chars().any(|c| c.is_ascii_digit()), "{described}");
        // Whatever `auto` found, asking for that flavour explicitly agrees.
        let again = match compose.program() {
            [one] if one == "docker-compose" => Compose::detect(ComposeChoice::V1).await,
            _ => Compose::detect(ComposeChoice::V2).await,
        }
        .unwrap();
        assert_eq!(again.flavor(), compose.flavor());
    }

    #[tokio::test]
    async fn missing_compose_is_reported() {
        let err = probe(&["/nonexistent/docker-compose"]).await.err().unwrap();
        assert!(err.contains("could not run"), "{err}");
        let compose = Compose {
            program: vec!["/nonexistent/docker-compose".into()],
            flavor: ComposeFlavor::V1,
            version: "1.29.2".into(),
            runner: None,
        };
        let inv = Invocation {
            project: "stackdengspawn".into(),
            dir: std::env::temp_dir(),
            file: "compose.yaml".into(),
            args: vec!["ps".into()],
        };
        let err = compose
            .run(
                &inv,
                &|_| {},
                &CancellationToken::new(),
                Duration::from_secs(5),
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ComposeError::Spawn { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/docker-compose"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn docker_up_streams_output_and_the_container_is_listed() {
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        testing::test_image();
        let project = Project::new(&compose, "up", &sleeper("app", 600));
        let lines = Mutex::new(Vec::<String>::new());
        compose
            .run(
                &project.invocation(&["up", "-d"]),
                &|l| lines.lock().unwrap().push(l.to_string()),
                &CancellationToken::new(),
                Duration::from_secs(120),
            )
            .await
            .unwrap();
        let lines = lines.into_inner().unwrap();
        assert!(!lines.is_empty(), "no output from compose up");
        assert!(
            lines.iter().all(|l| !l.contains('\x1b')),
            "ANSI escapes in {lines:?}"
        );

        let containers = docker.list_containers(Some(&project.name)).await.unwrap();
        assert_eq!(containers.len(), 1, "{containers:?}");
        let c = &containers[0];
        assert_eq!(c.project, project.name);
        assert_eq!(c.service, "app");
        assert_eq!(c.number, Some(1));
        assert!(!c.oneoff);
        assert_eq!(c.image, testing::test_image());
        assert_eq!(c.state, ContainerState::Running);
        assert!(c.status.starts_with("Up"), "{}", c.status);
        assert_eq!(c.exit_code, None);
        assert!(c.pid.is_some() && c.started_at_usec.is_some());
        assert_eq!(c.finished_at_usec, None);
        assert_eq!(c.restart_policy, "no");
        assert_eq!(c.health, None);

        let all = docker.list_containers(None).await.unwrap();
        assert!(all.iter().any(|a| a.id == c.id));
        let again = docker.inspect(&c.id).await.unwrap().unwrap();
        assert_eq!(again.name, c.name);
        assert!(again.status.starts_with("Up"), "{}", again.status);
    }

    #[tokio::test]
    async fn docker_failure_carries_the_last_line() {
        let Some(compose) = testing::compose().await else {
            return;
        };
        testing::test_image();
        let project = Project::new(&compose, "fail", &sleeper("app", 1));
        let err = compose
            .run(
                &project.invocation(&["up", "-d", "no-such-service"]),
                &|_| {},
                &CancellationToken::new(),
                Duration::from_secs(60),
            )
            .await
            .err()
            .unwrap();
        let ComposeError::Failed {
            code, last_line, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(*code, Some(1));
        assert!(last_line.contains("no-such-service"), "{err}");
    }

    #[tokio::test]
    async fn docker_config_check_and_images() {
        let Some(compose) = testing::compose().await else {
            return;
        };
        let project = Project::new(&compose, "config", &sleeper("app", 1));
        let dir = project.dir.path();
        compose
            .config_check(&project.name, dir, &project.file)
            .await
            .unwrap();
        assert_eq!(
            compose
                .images(&project.name, dir, &project.file)
                .await
                .unwrap(),
            vec![testing::test_image().to_string()]
        );

        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            "services:\n  app:\n    image: x\n    no_such_key: 1\n",
        )
        .unwrap();
        let err = compose
            .config_check(&project.name, dir, &bad)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }

    /// Runs an attached `up` (it never ends on its own) and stops it with
    /// `stop`, returning the result, how long stopping took and the pid.
    async fn stop_attached_up(
        suffix: &str,
        cancel_after: Option<Duration>,
        timeout: Duration,
    ) -> Option<(ComposeError, Duration, u32)> {
        let compose = testing::compose().await?;
        testing::docker().await?;
        testing::test_image();
        let project = Project::new(&compose, suffix, &sleeper("app", 600));
        let inv = project.invocation(&["up"]);
        let cancel = CancellationToken::new();
        let pid = Mutex::new(None);
        let seen = Mutex::new(Vec::<String>::new());
        let started = tokio::sync::Notify::new();
        let mut on_line = |_: Source, l: &str| {
            seen.lock().unwrap().push(l.to_string());
            if l.contains("started") {
                started.notify_one();
            }
        };
        let on_spawn = |p: u32| *pid.lock().unwrap() = Some(p);
        let run = compose.exec(&inv, &mut on_line, &cancel, timeout, &on_spawn);
        let stopper = async {
            if let Some(after) = cancel_after {
                // Wait until the container really runs attached.
                let _ = tokio::time::timeout(Duration::from_secs(60), started.notified()).await;
                tokio::time::sleep(after).await;
                cancel.cancel();
            }
            Instant::now()
        };
        let (result, stop_sent) = tokio::join!(run, stopper);
        let took = stop_sent.elapsed();
        let pid = pid.lock().unwrap().expect("spawned");
        let lines = seen.into_inner().unwrap();
        assert!(
            lines.iter().any(|l| l.contains("started")),
            "container output never arrived: {lines:?}"
        );
        Some((
            result.expect_err("an endless run must not succeed"),
            took,
            pid,
        ))
    }

    #[tokio::test]
    async fn docker_cancel_stops_the_whole_process_group() {
        let Some((err, took, pid)) = stop_attached_up(
            "cancel",
            Some(Duration::from_millis(200)),
            Duration::from_secs(300),
        )
        .await
        else {
            return;
        };
        assert!(matches!(err, ComposeError::Cancelled), "{err}");
        // Compose stops on SIGTERM by itself: no need for SIGKILL.
        assert!(took < KILL_GRACE, "took {took:?}");
        assert!(
            process_gone(pid).await,
            "compose (pid {pid}) or its group survived"
        );
    }

    #[tokio::test]
    async fn docker_timeout_stops_the_whole_process_group() {
        let Some((err, _, pid)) = stop_attached_up("timeout", None, Duration::from_secs(8)).await
        else {
            return;
        };
        assert!(
            matches!(err, ComposeError::TimedOut(d) if d == Duration::from_secs(8)),
            "{err}"
        );
        assert!(
            process_gone(pid).await,
            "compose (pid {pid}) or its group survived"
        );
    }

    /// A stand-in "compose" that is a shell script, for the process
    /// handling alone (no Docker needed).
    fn fake_compose(script: &str) -> Compose {
        Compose {
            program: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "fake-compose".into(),
            ],
            flavor: ComposeFlavor::V1,
            version: "1.29.2".into(),
            runner: None,
        }
    }

    /// How a fake Compose running `script` fails.
    async fn fake_failure(script: &str) -> ComposeError {
        fake_compose(script)
            .run(
                &fake_invocation(),
                &|_| {},
                &CancellationToken::new(),
                Duration::from_secs(30),
            )
            .await
            .expect_err("the fake Compose failed")
    }

    fn fake_invocation() -> Invocation {
        Invocation {
            project: "stackdengfake".into(),
            dir: std::env::temp_dir(),
            file: "compose.yaml".into(),
            args: vec!["up".into()],
        }
    }

    #[tokio::test]
    async fn sigterm_ignored_means_sigkill_for_the_whole_group() {
        // Both the script and its child ignore SIGTERM (SIG_IGN survives exec).
        let compose = fake_compose("trap '' TERM; echo ready; sleep 600 & wait");
        let cancel = CancellationToken::new();
        let pid = Mutex::new(None);
        let on_spawn = |p: u32| *pid.lock().unwrap() = Some(p);
        let ready = tokio::sync::Notify::new();
        let mut on_line = |_: Source, l: &str| {
            if l == "ready" {
                ready.notify_one();
            }
        };
        let inv = fake_invocation();
        let run = compose.exec(
            &inv,
            &mut on_line,
            &cancel,
            Duration::from_secs(300),
            &on_spawn,
        );
        let stopper = async {
            ready.notified().await;
            cancel.cancel();
            Instant::now()
        };
        let (result, cancelled_at) = tokio::join!(run, stopper);
        let took = cancelled_at.elapsed();
        assert!(matches!(result, Err(ComposeError::Cancelled)), "{result:?}");
        assert!(
            took >= KILL_GRACE && took < KILL_GRACE + Duration::from_secs(3),
            "took {took:?}"
        );
        let pid = pid.lock().unwrap().unwrap();
        assert!(process_gone(pid).await);
    }

    #[tokio::test]
    async fn leftovers_holding_the_output_are_killed() {
        let compose = fake_compose("echo done; echo warn >&2; sleep 600 &");
        let pid = Mutex::new(None);
        let on_spawn = |p: u32| *pid.lock().unwrap() = Some(p);
        let lines = Mutex::new(Vec::new());
        let mut on_line = |s: Source, l: &str| lines.lock().unwrap().push((s, l.to_string()));
        let started = Instant::now();
        compose
            .exec(
                &fake_invocation(),
                &mut on_line,
                &CancellationToken::new(),
                Duration::from_secs(60),
                &on_spawn,
            )
            .await
            .unwrap();
        assert!(started.elapsed() < DRAIN_GRACE + Duration::from_secs(2));
        // Two pipes keep no order between them: both lines, in any order.
        let mut got = lines.into_inner().unwrap();
        got.sort_by_key(|(_, l)| l.clone());
        assert_eq!(
            got,
            vec![
                (Source::Stdout, "done".to_string()),
                (Source::Stderr, "warn".to_string())
            ]
        );
        let pid = pid.lock().unwrap().unwrap();
        assert!(process_gone(pid).await);
    }

    #[tokio::test]
    async fn exit_code_and_signal_are_reported() {
        let err = fake_failure("echo out; echo 'it broke' >&2; exit 4").await;
        assert!(
            matches!(&err, ComposeError::Failed { code: Some(4), signal: None, last_line } if last_line == "it broke"),
            "{err:?}"
        );
        let err = fake_failure("kill -9 $$").await;
        assert!(
            matches!(
                &err,
                ComposeError::Failed {
                    code: None,
                    signal: Some(9),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn cancelled_before_start_does_not_spawn() {
        let compose = Compose {
            program: vec!["/nonexistent/docker-compose".into()],
            flavor: ComposeFlavor::V1,
            version: "1.29.2".into(),
            runner: None,
        };
        let cancel = CancellationToken::new();
        cancel.cancel();
        let inv = Invocation {
            project: "stackdengpre".into(),
            dir: std::env::temp_dir(),
            file: "compose.yaml".into(),
            args: vec![],
        };
        let err = compose
            .run(&inv, &|_| {}, &cancel, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ComposeError::Cancelled), "{err}");
    }
}
