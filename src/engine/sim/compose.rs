//! Compose v2's commands, run on the simulated engine: what `up -d`,
//! `stop`, `start`, `restart`, `down`, `pull`, `kill` and `config` do to a
//! project's containers, with progress lines in v2's words on stderr.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::model::{ProjectModel, ServiceModel};
use super::{End, Sim, State};
use crate::engine::compose::{ComposeApi, Invocation, Source};
use crate::engine::{ComposeError, ContainerState, NetworkRecord};

/// How long `up` waits for a dependency's condition before failing, as
/// Compose would with a dependency that never gets healthy.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// A run's output and outcome.
struct Out<'a> {
    on_line: &'a mut (dyn FnMut(Source, &str) + Send),
}

impl Out<'_> {
    fn say(&mut self, line: &str) {
        (self.on_line)(Source::Stderr, line);
    }
    fn print(&mut self, line: &str) {
        (self.on_line)(Source::Stdout, line);
    }
}

fn failed(line: impl Into<String>) -> ComposeError {
    ComposeError::Failed {
        code: Some(1),
        signal: None,
        last_line: line.into(),
    }
}

/// The arguments after the subcommand: flags and service names.
struct Args {
    sub: String,
    flags: Vec<String>,
    services: Vec<String>,
}

fn parse_args(args: &[String]) -> Args {
    let mut it = args.iter().peekable();
    let sub = it.next().cloned().unwrap_or_default();
    let (mut flags, mut services) = (Vec::new(), Vec::new());
    while let Some(a) = it.next() {
        if a.starts_with('-') {
            flags.push(a.clone());
            // Flags that take a value.
            if matches!(
                a.as_str(),
                "-t" | "--timeout" | "--pull" | "--hash" | "--scale"
            ) {
                if let Some(v) = it.next() {
                    flags.push(v.clone());
                }
            }
        } else {
            services.push(a.clone());
        }
    }
    Args {
        sub,
        flags,
        services,
    }
}

impl ComposeApi for Sim {
    fn run<'a>(
        &'a self,
        inv: &'a Invocation,
        on_line: &'a mut (dyn FnMut(Source, &str) + Send),
        cancel: &'a CancellationToken,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        Box::pin(async move {
            let mut out = Out { on_line };
            let work = self.run_compose(inv, &mut out);
            tokio::select! {
                r = work => r,
                _ = cancel.cancelled() => Err(ComposeError::Cancelled),
                _ = tokio::time::sleep(timeout) => Err(ComposeError::TimedOut(timeout)),
            }
        })
    }
}

impl Sim {
    async fn run_compose(&self, inv: &Invocation, out: &mut Out<'_>) -> Result<(), ComposeError> {
        let slow = self.lock().slow;
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        let args = parse_args(&inv.args);
        if args.sub != "config" && args.sub != "port" {
            self.touch();
        }
        let model = ProjectModel::load(&inv.dir, &inv.file).map_err(failed)?;
        if args.sub == "config" {
            return config(&model, inv, &args, out);
        }
        if self.lock().down {
            return Err(failed(
                "Cannot connect to the Docker daemon at sim://stackd. Is the docker daemon running?",
            ));
        }
        if let Some(line) = self.lock().compose_fail.get(&inv.project).cloned() {
            out.say(&line);
            return Err(failed(line));
        }
        let project = inv.project.as_str();
        for s in args
            .services
            .iter()
            .take(if args.sub == "port" { 1 } else { usize::MAX })
        {
            if model.service(s).is_none() {
                return Err(failed(format!("no such service: {s}")));
            }
        }
        let with_deps = !args.flags.iter().any(|f| f == "--no-deps");
        match args.sub.as_str() {
            "up" | "create" => self.up(project, &model, &args, with_deps, out).await,
            "start" => {
                for svc in model.closure(&args.services, false) {
                    let mut st = self.lock();
                    for id in ids(&st, project, &svc.name) {
                        self.start_one(&mut st, &id, out)?;
                    }
                }
                Ok(())
            }
            "stop" => {
                self.stop(project, &model, &args.services, out);
                Ok(())
            }
            "kill" => {
                let mut st = self.lock();
                for svc in model.closure(&args.services, false).into_iter().rev() {
                    for id in ids(&st, project, &svc.name) {
                        self.end(&mut st, &id, End::Kill);
                    }
                }
                Ok(())
            }
            "restart" => {
                self.stop(project, &model, &args.services, out);
                for svc in model.closure(&args.services, false) {
                    let mut st = self.lock();
                    for id in ids(&st, project, &svc.name) {
                        self.start_one(&mut st, &id, out)?;
                    }
                }
                Ok(())
            }
            "down" | "rm" => {
                let mut st = self.lock();
                let mut all: Vec<String> = st
                    .containers
                    .values()
                    .filter(|c| c.info.project == project)
                    .filter(|c| args.services.is_empty() || args.services.contains(&c.info.service))
                    .map(|c| c.info.id.clone())
                    .collect();
                all.sort_by(|a, b| st.containers[b].info.name.cmp(&st.containers[a].info.name));
                for id in all {
                    let name = st.containers[&id].info.name.clone();
                    if st.containers[&id].info.state == ContainerState::Running {
                        out.say(&format!(" Container {name}  Stopping"));
                        self.end(&mut st, &id, End::Stop);
                        out.say(&format!(" Container {name}  Stopped"));
                    }
                    out.say(&format!(" Container {name}  Removing"));
                    self.remove(&mut st, &id);
                    out.say(&format!(" Container {name}  Removed"));
                }
                if args.sub == "down" {
                    st.networks.retain(|_, n| n.project != project);
                    out.say(&format!(" Network {project}_default  Removed"));
                }
                Ok(())
            }
            "port" => {
                // `port SERVICE CONTAINER_PORT`: where a running container
                // publishes it.
                let st = self.lock();
                let (Some(svc), Some(port)) = (args.services.first(), args.services.get(1)) else {
                    return Err(failed("port: expected SERVICE PRIVATE_PORT"));
                };
                let port: u16 = port
                    .parse()
                    .map_err(|_| failed(format!("invalid port {port}")))?;
                let published = ids(&st, project, svc).into_iter().find_map(|id| {
                    let c = &st.containers[&id];
                    let running = c.info.state == ContainerState::Running;
                    c.ports.iter().find(|p| running && p.1 == port).map(|p| p.0)
                });
                match published {
                    Some(host) => {
                        out.print(&format!("0.0.0.0:{host}"));
                        Ok(())
                    }
                    None => Err(failed(format!(
                        "no port {port}/tcp for container {project}-{svc}-1"
                    ))),
                }
            }
            "pull" => {
                let mut st = self.lock();
                for svc in model.closure(&args.services, false) {
                    pull(&mut st, svc, out);
                }
                Ok(())
            }
            other => Err(failed(format!(
                "unknown docker command: \"compose {other}\" (not simulated)"
            ))),
        }
    }

    fn start_one(&self, st: &mut State, id: &str, out: &mut Out<'_>) -> Result<(), ComposeError> {
        let name = st.containers[id].info.name.clone();
        if st.containers[id].info.state == ContainerState::Running {
            out.say(&format!(" Container {name}  Running"));
            return Ok(());
        }
        out.say(&format!(" Container {name}  Starting"));
        if let Err(e) = self.start_ctr(st, id) {
            let line = format!("Error response from daemon: {e}");
            out.say(&line);
            return Err(failed(line));
        }
        out.say(&format!(" Container {name}  Started"));
        Ok(())
    }

    fn stop(&self, project: &str, model: &ProjectModel, services: &[String], out: &mut Out<'_>) {
        let mut st = self.lock();
        for svc in model.closure(services, false).into_iter().rev() {
            for id in ids(&st, project, &svc.name) {
                if st.containers[&id].info.state != ContainerState::Running {
                    continue;
                }
                let name = st.containers[&id].info.name.clone();
                out.say(&format!(" Container {name}  Stopping"));
                self.end(&mut st, &id, End::Stop);
                out.say(&format!(" Container {name}  Stopped"));
            }
        }
    }

    async fn up(
        &self,
        project: &str,
        model: &ProjectModel,
        args: &Args,
        with_deps: bool,
        out: &mut Out<'_>,
    ) -> Result<(), ComposeError> {
        let pull_never = args
            .flags
            .windows(2)
            .any(|w| w[0] == "--pull" && w[1] == "never");
        let force = args.flags.iter().any(|f| f == "--force-recreate");
        let start = args.sub == "up";
        {
            let mut st = self.lock();
            st.networks
                .entry(project.to_string())
                .or_insert_with(|| NetworkRecord {
                    id: super::id_of(&format!("{project}_default")),
                    name: format!("{project}_default"),
                    project: project.to_string(),
                    containers: 0,
                });
            if args.flags.iter().any(|f| f == "--remove-orphans") {
                let orphans: Vec<String> = st
                    .containers
                    .values()
                    .filter(|c| {
                        c.info.project == project && model.service(&c.info.service).is_none()
                    })
                    .map(|c| c.info.id.clone())
                    .collect();
                for id in orphans {
                    out.say(&format!(
                        " Container {}  Removing orphan",
                        st.containers[&id].info.name
                    ));
                    self.end(&mut st, &id, End::Stop);
                    self.remove(&mut st, &id);
                }
            }
        }
        for svc in model.closure(&args.services, with_deps) {
            if start {
                for (dep, cond) in &svc.depends_on {
                    self.wait_for(project, dep, cond, out).await?;
                }
            }
            let mut st = self.lock();
            if Sim::image_id_for(&st, &svc.image).is_none() {
                if pull_never {
                    let line = format!("Error response from daemon: No such image: {}", svc.image);
                    out.say(&line);
                    return Err(failed(line));
                }
                pull(&mut st, svc, out);
            }
            let image_id = Sim::image_id_for(&st, &svc.image).unwrap_or_default();
            let have = ids(&st, project, &svc.name);
            for n in 1..=svc.replicas {
                let existing = have
                    .iter()
                    .find(|id| st.containers[*id].info.number == Some(n))
                    .cloned();
                let id = match existing {
                    Some(id) => {
                        let c = &st.containers[&id].info;
                        let same = c.config_hash.as_deref() == Some(svc.config_hash.as_str())
                            && c.image_id == image_id;
                        if same && !force {
                            id
                        } else {
                            let name = c.name.clone();
                            out.say(&format!(" Container {name}  Recreate"));
                            self.end(&mut st, &id, End::Stop);
                            self.remove(&mut st, &id);
                            let id = self.create(&mut st, project, svc, n);
                            out.say(&format!(" Container {name}  Recreated"));
                            id
                        }
                    }
                    None => {
                        let name = format!("{project}-{}-{n}", svc.name);
                        out.say(&format!(" Container {name}  Creating"));
                        let id = self.create(&mut st, project, svc, n);
                        out.say(&format!(" Container {name}  Created"));
                        id
                    }
                };
                if start {
                    self.start_one(&mut st, &id, out)?;
                }
            }
            // Scaled down: the extra containers go.
            for id in have {
                let extra = st
                    .containers
                    .get(&id)
                    .is_some_and(|c| c.info.number.unwrap_or(1) > svc.replicas);
                if extra {
                    self.end(&mut st, &id, End::Stop);
                    self.remove(&mut st, &id);
                }
            }
        }
        Ok(())
    }

    /// Waits for `dep`'s containers to meet `cond`, as `up` does.
    async fn wait_for(
        &self,
        project: &str,
        dep: &str,
        cond: &str,
        out: &mut Out<'_>,
    ) -> Result<(), ComposeError> {
        if cond == "service_started" {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + DEPENDENCY_WAIT;
        let mut said = false;
        loop {
            {
                let st = self.lock();
                let cs: Vec<_> = st
                    .containers
                    .values()
                    .filter(|c| c.info.project == project && c.info.service == dep)
                    .map(|c| &c.info)
                    .collect();
                if !said {
                    for c in &cs {
                        out.say(&format!(" Container {}  Waiting", c.name));
                    }
                    said = true;
                }
                let met = !cs.is_empty()
                    && cs.iter().all(|c| match cond {
                        "service_healthy" => {
                            c.state == ContainerState::Running
                                && matches!(c.health.as_deref(), None | Some("healthy"))
                        }
                        _ => c.state == ContainerState::Exited && c.exit_code == Some(0),
                    });
                if met {
                    for c in &cs {
                        out.say(&format!(" Container {}  Healthy", c.name));
                    }
                    return Ok(());
                }
                let broken = cs.iter().find(|c| {
                    let exited = c.state == ContainerState::Exited;
                    c.health.as_deref() == Some("unhealthy")
                        || exited && (cond == "service_healthy" || c.exit_code != Some(0))
                });
                if let Some(c) = broken {
                    let line = if cond == "service_healthy" {
                        format!(
                            "dependency failed to start: container {} is unhealthy",
                            c.name
                        )
                    } else {
                        format!(
                            "service {:?} didn't complete successfully: exit {}",
                            dep,
                            c.exit_code.unwrap_or(-1)
                        )
                    };
                    out.say(&line);
                    return Err(failed(line));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let line =
                    format!("dependency failed to start: container {project}-{dep}-1 is unhealthy");
                out.say(&line);
                return Err(failed(line));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The ids of `service`'s containers in `project`, by name.
fn ids(st: &State, project: &str, service: &str) -> Vec<String> {
    let mut v: Vec<_> = st
        .containers
        .values()
        .filter(|c| c.info.project == project && c.info.service == service)
        .map(|c| (c.info.name.clone(), c.info.id.clone()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, id)| id).collect()
}

fn pull(st: &mut State, svc: &ServiceModel, out: &mut Out<'_>) {
    out.say(&format!(" {} Pulling", svc.name));
    let id = Sim::registry_id(st, &svc.image);
    st.removed.remove(&svc.image);
    st.images.insert(svc.image.clone(), id);
    out.say(&format!(" {} Pulled", svc.name));
}

/// `config` and its variants print to stdout.
fn config(
    model: &ProjectModel,
    inv: &Invocation,
    args: &Args,
    out: &mut Out<'_>,
) -> Result<(), ComposeError> {
    if args.flags.iter().any(|f| f == "-q" || f == "--quiet") {
        return Ok(());
    }
    if args.flags.iter().any(|f| f == "--hash") {
        for s in &model.services {
            out.print(&format!("{} {}", s.name, s.config_hash));
        }
        return Ok(());
    }
    if args.flags.iter().any(|f| f == "--images") {
        for s in &model.services {
            out.print(&s.image);
        }
        return Ok(());
    }
    let path = if inv.file.is_absolute() {
        inv.file.clone()
    } else {
        inv.dir.join(&inv.file)
    };
    let text = std::fs::read_to_string(&path).map_err(|e| failed(e.to_string()))?;
    out.print(&format!("name: {}", inv.project));
    for line in text.lines().filter(|l| !l.starts_with("name:")) {
        out.print(line);
    }
    Ok(())
}

#[cfg(test)]
#[path = "compose_tests.rs"]
mod tests;
