//! The spine, as a user drives it: start, stop, restart and update of a
//! Compose project through `stackctl` and through `busctl`, checked against
//! what Docker really runs; `status`, `list --output json`, `--no-block` and
//! the "no such service" answers.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    busctl, containers, docker, have_bus, have_docker, stackctl, stackctl_json, wait_until, Bus,
    ContainerRow, Daemon, TestEnv,
};

const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// A project whose one service `main` is built from the local test image
/// (`FROM` it, nothing else): `compose pull` has nothing to fetch, so an
/// update can succeed on a machine without a registry. The built tag is
/// removed on drop.
struct BuiltProject {
    name: String,
}

impl BuiltProject {
    fn add(env: &TestEnv, short: &str, sleep: u32) -> BuiltProject {
        let image = common::ensure_image();
        let name = env.add_project(short, &built_compose(sleep));
        std::fs::write(
            env.compose_dir().join(&name).join("Dockerfile"),
            format!("FROM {image}\n"),
        )
        .expect("Dockerfile");
        BuiltProject { name }
    }
}

fn built_compose(sleep: u32) -> String {
    format!(
        r#"version: "2.4"
services:
  main:
    build: .
    command: ["sleep", "{sleep}"]
    init: true
    stop_grace_period: 1s
"#
    )
}

impl Drop for BuiltProject {
    fn drop(&mut self) {
        // Dropped before the TestEnv: its containers would keep the tag.
        common::remove_projects(&self.name);
        // Compose v1 tags `<project>_main`, v2 `<project>-main`.
        let reference = format!("reference={}*", self.name);
        if let Ok(out) = common::try_run(
            std::process::Command::new("docker").args([
                "image",
                "ls",
                "--filter",
                &reference,
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]),
            common::COMMAND_TIMEOUT,
        ) {
            // By name, never by id: the built image has the test image's id
            // (`FROM` and nothing else), and removing the id would remove
            // the test image too.
            let tags: Vec<&str> = out.stdout.split_whitespace().collect();
            if !tags.is_empty() {
                let mut args = vec!["image", "rm"];
                args.extend(tags);
                let _ = common::try_run(
                    std::process::Command::new("docker").args(&args),
                    common::COMMAND_TIMEOUT,
                );
            }
        }
    }
}

fn config_for(services: &[&str]) -> String {
    services
        .iter()
        .map(|s| format!("[services.{s}]\nauto_start = false\n\n"))
        .collect()
}

fn only_container(project: &str) -> ContainerRow {
    let rows = containers(project);
    assert_eq!(
        rows.len(),
        1,
        "one container expected for {project}: {rows:?}"
    );
    rows.into_iter().next().unwrap()
}

fn started_at(id: &str) -> String {
    docker(&["inspect", "--format", "{{.State.StartedAt}}", id])
        .expect_success()
        .stdout
        .trim()
        .to_owned()
}

/// `busctl call ... Manager METHOD s NAME` → the task id from the returned
/// path `/org/stackd1/task/ID`.
fn busctl_op(bus: &Bus, method: &str, name: &str) -> u64 {
    let out = busctl(
        bus,
        &[
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            method,
            "s",
            name,
        ],
    )
    .expect_success();
    task_id_of(&out.stdout)
}

fn task_id_of(reply: &str) -> u64 {
    // `o "/org/stackd1/task/12"`
    let path = reply
        .trim()
        .strip_prefix("o ")
        .unwrap_or_else(|| panic!("not an object path reply: {reply}"))
        .trim_matches('"');
    path.strip_prefix("/org/stackd1/task/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a task path: {path}"))
}

/// Polls the task's `State` property over the bus until it has finished;
/// returns the final state.
fn busctl_wait_task(bus: &Bus, id: u64) -> String {
    let path = format!("/org/stackd1/task/{id}");
    let mut state = String::new();
    wait_until(TASK_TIMEOUT, &format!("task {id} to finish"), || {
        let out = busctl(
            bus,
            &[
                "get-property",
                "org.stackd1",
                &path,
                "org.stackd1.Task",
                "State",
            ],
        )
        .expect_success();
        state = out
            .stdout
            .trim()
            .strip_prefix("s ")
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
        matches!(state.as_str(), "succeeded" | "failed" | "cancelled")
    });
    state
}

fn service_row<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap_or_else(|| panic!("list is not an array: {list}"))
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in list: {list}"))
}

#[test]
fn docker_stackctl_start_stop_restart_update() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("lifecycle_stackctl");
    let web = BuiltProject::add(&env, "web", 3600);
    let name = web.name.as_str();
    env.write_config(&config_for(&[name]));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    // Configured, not auto-started: listed as stopped, nothing in Docker.
    let list = stackctl_json(&env, &bus, &["list"]);
    let row = service_row(&list, name);
    assert_eq!(row["desired_state"], "stopped", "{row}");
    assert_eq!(row["active_state"], "inactive", "{row}");
    assert_eq!(containers(name), vec![]);
    let status = stackctl(&env, &bus, &["status", name]);
    assert_eq!(status.code, 3, "not running → exit 3: {status}");
    assert!(
        status.stdout.contains("Desired: stopped (set by config)"),
        "{status}"
    );

    // start: waits for the task and prints Compose's own lines.
    let out = stackctl(&env, &bus, &["start", name]).expect_success();
    let c = only_container(name);
    assert_eq!(c.state, "running", "{c:?}");
    assert!(
        out.stdout.contains("up -d"),
        "the compose command is echoed: {out}"
    );
    assert!(
        out.stdout.contains(&c.name),
        "Compose's output names the container {}: {out}",
        c.name
    );
    let status = stackctl(&env, &bus, &["status", name]).expect_success();
    assert!(
        status.stdout.contains("Desired: running (set by user)"),
        "{status}"
    );
    assert!(
        status.stdout.contains("Active: active (running)"),
        "{status}"
    );
    assert!(
        status.stdout.contains(&c.name),
        "status shows the container: {status}"
    );
    let list = stackctl_json(&env, &bus, &["list"]);
    let row = service_row(&list, name);
    assert_eq!(row["desired_state"], "running", "{row}");
    assert_eq!(row["active_state"], "active", "{row}");
    assert_eq!(row["containers"], 1, "{row}");

    // stop: the container exits (and stays, as `compose stop` leaves it).
    stackctl(&env, &bus, &["stop", name]).expect_success();
    let stopped = only_container(name);
    assert_eq!(stopped.id, c.id);
    assert_eq!(stopped.state, "exited", "{stopped:?}");
    let status = stackctl(&env, &bus, &["status", name]);
    assert_eq!(status.code, 3, "stopped → exit 3: {status}");
    assert!(
        status.stdout.contains("Desired: stopped (set by user)"),
        "{status}"
    );
    assert!(status.stdout.contains(&c.name), "{status}");

    // start again, then restart: same container, a new StartedAt.
    stackctl(&env, &bus, &["start", name]).expect_success();
    assert_eq!(only_container(name).state, "running");
    let before = started_at(&c.id);
    stackctl(&env, &bus, &["restart", name]).expect_success();
    let restarted = only_container(name);
    assert_eq!(restarted.state, "running", "{restarted:?}");
    assert_eq!(restarted.id, c.id, "restart keeps the container");
    assert_ne!(started_at(&c.id), before, "restart restarts the container");

    // update after the compose file changed: pull (nothing to fetch, the
    // image is built) and recreate.
    std::fs::write(
        env.compose_dir().join(name).join("docker-compose.yml"),
        built_compose(3601),
    )
    .unwrap();
    let out = stackctl(&env, &bus, &["update", name]).expect_success();
    assert!(out.stdout.contains("pull"), "{out}");
    let updated = only_container(name);
    assert_eq!(updated.state, "running", "{updated:?}");
    assert_ne!(updated.id, c.id, "the changed project is recreated: {out}");

    // --no-block prints the task id; the task finishes on its own.
    let out = stackctl(&env, &bus, &["--no-block", "stop", name]).expect_success();
    let id: u64 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("--no-block prints a task id: {out}"));
    wait_until(TASK_TIMEOUT, "the --no-block stop to finish", || {
        stackctl_json(&env, &bus, &["task", &id.to_string()])["state"] == "succeeded"
    });
    let task = stackctl_json(&env, &bus, &["task", &id.to_string()]);
    assert_eq!(task["kind"], "stop", "{task}");
    assert_eq!(task["service"], name, "{task}");
    assert_eq!(only_container(name).state, "exited");
}

#[test]
fn docker_busctl_start_stop_restart_update() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("lifecycle_busctl");
    let web = BuiltProject::add(&env, "web", 3600);
    let name = web.name.as_str();
    env.write_config(&config_for(&[name]));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let id = busctl_op(&bus, "StartService", name);
    assert_eq!(busctl_wait_task(&bus, id), "succeeded");
    let c = only_container(name);
    assert_eq!(c.state, "running", "{c:?}");
    // The same task as stackctl sees it, with Compose's log.
    let task = stackctl_json(&env, &bus, &["task", &id.to_string()]);
    assert_eq!(task["kind"], "deploy", "{task}");
    assert_eq!(task["result"], "done", "{task}");
    assert!(
        task["origin"]
            .as_str()
            .unwrap_or_default()
            .starts_with("dbus:"),
        "{task}"
    );
    let log = task["log"].to_string();
    assert!(
        log.contains(&c.name),
        "the task log holds Compose's output: {task}"
    );
    // The Service object agrees.
    let path = busctl(
        &bus,
        &[
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "GetService",
            "s",
            name,
        ],
    )
    .expect_success();
    let path = path
        .stdout
        .trim()
        .strip_prefix("o ")
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let active = busctl(
        &bus,
        &[
            "get-property",
            "org.stackd1",
            &path,
            "org.stackd1.Service",
            "ActiveState",
            "DesiredState",
        ],
    )
    .expect_success();
    assert_eq!(active.stdout, "s \"active\"\ns \"running\"\n", "{active}");

    let id = busctl_op(&bus, "StopService", name);
    assert_eq!(busctl_wait_task(&bus, id), "succeeded");
    assert_eq!(only_container(name).state, "exited");
    assert_eq!(stackctl(&env, &bus, &["status", name]).code, 3);

    let id = busctl_op(&bus, "StartService", name);
    assert_eq!(busctl_wait_task(&bus, id), "succeeded");
    assert_eq!(only_container(name).state, "running");
    let before = started_at(&c.id);
    let id = busctl_op(&bus, "RestartService", name);
    assert_eq!(busctl_wait_task(&bus, id), "succeeded");
    let restarted = only_container(name);
    assert_eq!(
        (restarted.id.as_str(), restarted.state.as_str()),
        (c.id.as_str(), "running")
    );
    assert_ne!(
        started_at(&c.id),
        before,
        "RestartService restarts the container"
    );

    std::fs::write(
        env.compose_dir().join(name).join("docker-compose.yml"),
        built_compose(3601),
    )
    .unwrap();
    let id = busctl_op(&bus, "UpdateService", name);
    assert_eq!(busctl_wait_task(&bus, id), "succeeded");
    let updated = only_container(name);
    assert_eq!(updated.state, "running", "{updated:?}");
    assert_ne!(
        updated.id, c.id,
        "UpdateService recreates the changed project"
    );
}

#[test]
fn docker_unknown_service_exits_4_naming_it() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("lifecycle_unknown");
    let web = env.add_sleeper("web");
    env.write_config(&config_for(&[&web]));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    for args in [
        &["status", "nope"][..],
        &["start", "nope"],
        &["stop", "nope"],
    ] {
        let out = stackctl(&env, &bus, args);
        assert_eq!(out.code, 4, "{out}");
        assert!(
            out.stderr.contains("nope"),
            "the message names the service: {out}"
        );
    }
    let out = busctl(
        &bus,
        &[
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "StartService",
            "s",
            "nope",
        ],
    )
    .expect_failure();
    assert!(out.stderr.contains("nope"), "{out}");
    // Nothing was queued for it.
    let tasks = stackctl_json(&env, &bus, &["tasks"]);
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["service"] != "nope"),
        "{tasks}"
    );
}

/// The test image under a name whose registry refuses connections
/// (`127.0.0.1:9`, discard): present locally, so `up` works, but every pull
/// fails fast. The tag is removed on drop.
struct UnpullableImage(String);

impl UnpullableImage {
    fn tag(env: &TestEnv) -> UnpullableImage {
        let name = format!("127.0.0.1:9/{}/busybox:1", env.prefix());
        docker(&["tag", common::ensure_image(), &name]).expect_success();
        UnpullableImage(name)
    }
}

impl Drop for UnpullableImage {
    fn drop(&mut self) {
        let _ = common::try_run(
            std::process::Command::new("docker").args(["image", "rm", &self.0]),
            common::COMMAND_TIMEOUT,
        );
    }
}

#[test]
fn docker_update_with_a_failing_pull_leaves_the_service_as_it_was() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("lifecycle_update_pull_fails");
    let image = UnpullableImage::tag(&env);
    let web = env.add_project(
        "web",
        &format!(
            r#"version: "2.4"
services:
  main:
    image: {}
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
"#,
            image.0
        ),
    );
    env.write_config(&config_for(&[&web]));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    stackctl(&env, &bus, &["start", &web]).expect_success();
    let before = only_container(&web);
    assert_eq!(before.state, "running");
    let started = started_at(&before.id);

    let out = stackctl(&env, &bus, &["update", &web]);
    assert_eq!(out.code, 1, "a failed update fails stackctl: {out}");
    assert!(out.stderr.contains("failed"), "{out}");
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web]);
    let update = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "update")
        .unwrap_or_else(|| panic!("no update task: {tasks}"))
        .clone();
    assert_eq!(update["state"], "failed", "{update}");
    let id = update["id"].to_string();
    let task = stackctl(&env, &bus, &["task", &id]).expect_success();
    assert!(
        task.stdout
            .lines()
            .any(|l| !l.starts_with('$') && l.contains("127.0.0.1:9") && l.contains("refused")),
        "the task log holds the pull error: {task}"
    );
    assert!(
        !task.stdout.contains(" up -d"),
        "no recreate after a failed pull: {task}"
    );

    let after = only_container(&web);
    assert_eq!(after.id, before.id, "the same container");
    assert_eq!(after.state, "running");
    assert_eq!(started_at(&after.id), started, "not restarted");
    stackctl(&env, &bus, &["status", &web]).expect_success();
}
