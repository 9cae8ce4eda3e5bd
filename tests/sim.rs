//! The core's rules on the simulated engine: a real `stackd --sim` (D-Bus,
//! store, planner, supervisor, notifications) with no Docker at all
//! (`DOCKER_HOST` points at a socket that does not exist), driven through
//! `stackctl` and the simulator's control socket. Each test takes seconds.
//!
//! Reconcile at boot, recovery decisions (crash, OOM, crash loop and its
//! budget), a person's stop, dependency order and waits, and an engine that
//! goes away and comes back.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{have_bus, stackctl, stackctl_json, wait_until, Bus, Daemon, TestEnv};

const WAIT: Duration = Duration::from_secs(15);
const NO_DOCKER: &str = "unix:///nonexistent/stackd-sim-test/docker.sock";

/// One simulated service: a container that runs until told otherwise.
const APP: &str = "services:\n  main:\n    image: stackd-sim/app:1\n";

/// The simulator's control socket of a `stackd --sim`.
struct SimCtl(PathBuf);

impl SimCtl {
    fn of(env: &TestEnv) -> SimCtl {
        SimCtl(env.state_dir().join("sim.sock"))
    }

    /// Sends one command; returns the lines before "ok", panics on "error:".
    #[track_caller]
    fn cmd(&self, line: &str) -> Vec<String> {
        let mut conn = UnixStream::connect(&self.0)
            .unwrap_or_else(|e| panic!("sim control socket {}: {e}", self.0.display()));
        conn.set_read_timeout(Some(WAIT)).unwrap();
        writeln!(conn, "{line}").unwrap();
        let mut out = Vec::new();
        for l in BufReader::new(conn).lines() {
            let l = l.expect("an answer from the sim");
            if l == "ok" {
                return out;
            }
            assert!(!l.starts_with("error:"), "sim {line:?}: {l}");
            out.push(l);
        }
        panic!("sim {line:?}: no answer");
    }

    /// `ps PROJECT`: (name, state, exit, health, restarts) per container.
    fn ps(&self, project: &str) -> Vec<Vec<String>> {
        self.cmd(&format!("ps {project}"))
            .into_iter()
            .map(|l| l.split(' ').map(str::to_string).collect())
            .collect()
    }

    fn running(&self, project: &str) -> usize {
        self.ps(project)
            .iter()
            .filter(|r| r[1] == "running")
            .count()
    }
}

fn start(env: &TestEnv, bus: &Bus) -> Daemon {
    Daemon::start_with(env, bus, &[("DOCKER_HOST", NO_DOCKER)], &["--sim"])
}

fn row(env: &TestEnv, bus: &Bus, name: &str) -> serde_json::Value {
    stackctl_json(env, bus, &["list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no row for {name}"))
}

fn active(env: &TestEnv, bus: &Bus, name: &str) -> bool {
    row(env, bus, name)["active_state"] == "active"
}

/// The service's tasks of origin `recovery`, newest first, as JSON rows.
fn recoveries(env: &TestEnv, bus: &Bus, name: &str) -> Vec<serde_json::Value> {
    stackctl_json(env, bus, &["tasks", "--service", name])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["origin"] == "recovery")
        .cloned()
        .collect()
}

fn task_log(env: &TestEnv, bus: &Bus, task: &serde_json::Value) -> String {
    let id = task["id"].as_u64().unwrap().to_string();
    stackctl(env, bus, &["task", &id]).expect_success().stdout
}

fn restart_count(env: &TestEnv, bus: &Bus, name: &str) -> u64 {
    let out = stackctl(env, bus, &["--output", "json", "health", name]);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v[0]["restart_count"].as_u64().unwrap()
}

#[test]
fn boot_reconcile_starts_what_should_run_and_keeps_a_persons_stop() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("sim_boot");
    let a = env.add_project("a", APP);
    let b = env.add_project("b", APP);
    let c = env.add_project("c", APP);
    env.write_config(&format!(
        "[services.{a}]\nauto_start = true\n\n[services.{b}]\nauto_start = true\n\n\
         [services.{c}]\nauto_start = false\n"
    ));
    let bus = Bus::start(env.dir());
    let mut daemon = start(&env, &bus);
    let sim = SimCtl::of(&env);
    wait_until(WAIT, "a and b started at boot", || {
        sim.running(&a) == 1 && sim.running(&b) == 1
    });
    assert_eq!(sim.ps(&c), Vec::<Vec<String>>::new(), "c is not auto_start");
    wait_until(WAIT, "a and b active", || {
        active(&env, &bus, &a) && active(&env, &bus, &b)
    });

    // A person's `docker stop`: the evidence (kill, die, stop) outside any
    // stackd task is stored as the desired state.
    sim.cmd(&format!("stop {b}"));
    wait_until(WAIT, "b is known as stopped outside stackd", || {
        stackctl(&env, &bus, &["status", &b])
            .stdout
            .contains("stopped outside stackd")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sim.running(&b), 0, "nobody restarted b");
    assert!(recoveries(&env, &bus, &b).is_empty());

    // A reboot: the daemon dies with its (simulated) engine; a new boot id.
    daemon.kill();
    env.new_boot();
    let _daemon = start(&env, &bus);
    wait_until(WAIT, "a back after the reboot", || sim.running(&a) == 1);
    let reconcile = stackctl_json(&env, &bus, &["tasks", "-n", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "reconcile" && t["origin"] == "boot")
        .count();
    assert!(reconcile >= 1, "a boot reconcile ran");
    let status = stackctl(&env, &bus, &["status", &b]);
    assert_eq!(status.code, 3, "b stays stopped: {status}");
    assert!(status.stdout.contains("stopped outside stackd"), "{status}");
    assert_eq!(sim.running(&b), 0);
    assert_eq!(sim.running(&c), 0);
}

/// A `stackd --sim` whose one service, `web`, starts at boot; back once
/// web is active. Bound in this order, they go away in reverse.
fn web_at_boot(test: &str) -> (TestEnv, Bus, Daemon, SimCtl, String) {
    let env = TestEnv::new(test);
    let web = env.add_project("web", APP);
    env.write_config(&format!("[services.{web}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let daemon = start(&env, &bus);
    let sim = SimCtl::of(&env);
    wait_until(WAIT, "web started at boot", || active(&env, &bus, &web));
    (env, bus, daemon, sim, web)
}

#[test]
fn a_crash_is_restarted_with_its_evidence() {
    if !have_bus() {
        return;
    }
    let (env, bus, _daemon, sim, web) = web_at_boot("sim_crash");

    sim.cmd(&format!("crash {web} 3"));
    wait_until(WAIT, "a recovery task", || {
        !recoveries(&env, &bus, &web).is_empty()
    });
    wait_until(WAIT, "web runs again", || {
        sim.running(&web) == 1 && active(&env, &bus, &web)
    });
    let task = recoveries(&env, &bus, &web).remove(0);
    let mut log = String::new();
    wait_until(WAIT, "the recovery task's log", || {
        log = task_log(&env, &bus, &task);
        log.contains("decision:")
    });
    assert!(log.contains("exit code 3"), "{log}");
    assert!(log.contains("decision: restart (exited)"), "{log}");
    assert_eq!(restart_count(&env, &bus, &web), 1);
}

#[test]
fn a_crash_loop_spends_its_budget_then_fails_with_an_alert() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("sim_loop");
    let app = env.add_project("loop", APP);
    env.write_config(&format!(
        "[services.{app}]\nauto_start = false\n\
         restart = {{ on_failure = true, max_restarts = 2, window = \"2m\", backoff = \"100ms..200ms\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = start(&env, &bus);
    let sim = SimCtl::of(&env);
    // Every start of it dies 200 ms later with code 1.
    sim.cmd(&format!("fault {app} exit 1 after 200"));
    stackctl(&env, &bus, &["start", &app]).expect_success();
    wait_until(WAIT, "stackd gives up", || {
        stackctl(&env, &bus, &["status", &app])
            .stdout
            .contains("gave up")
    });
    assert_eq!(restart_count(&env, &bus, &app), 2, "max_restarts is 2");
    let r = row(&env, &bus, &app);
    assert_eq!(r["active_state"], "failed", "{r}");
    assert_eq!(r["health"], "unhealthy", "{r}");
    // The alert is routed after the status changes: wait for its line.
    wait_until(
        WAIT,
        "the give-up alert is logged with its MESSAGE_ID",
        || {
            daemon
                .stderr()
                .contains("message_id=7e61e01ca82544a1a645ed81386e1499")
        },
    );
    // Nothing more after giving up.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(restart_count(&env, &bus, &app), 2);
    assert_eq!(recoveries(&env, &bus, &app).len(), 2);
    let diagnose = stackctl(&env, &bus, &["diagnose", &app]).expect_success();
    assert!(diagnose.stdout.contains("cause: crash-loop"), "{diagnose}");
}

#[test]
fn an_oom_kill_is_diagnosed_and_restarted() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("sim_oom");
    let hog = env.add_project(
        "hog",
        "services:\n  main:\n    image: stackd-sim/app:1\n    mem_limit: 16m\n",
    );
    env.write_config(&format!(
        "[services.{hog}]\nauto_start = true\nrestart = {{ max_restarts = 1, window = \"2m\", backoff = \"100ms..200ms\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = start(&env, &bus);
    let sim = SimCtl::of(&env);
    wait_until(WAIT, "hog started at boot", || active(&env, &bus, &hog));
    sim.cmd(&format!("oom {hog}"));
    wait_until(WAIT, "a recovery after the OOM kill", || {
        !recoveries(&env, &bus, &hog).is_empty()
    });
    let task = recoveries(&env, &bus, &hog).remove(0);
    let mut log = String::new();
    wait_until(WAIT, "the decision is in the log", || {
        log = task_log(&env, &bus, &task);
        log.contains("decision:")
    });
    assert!(log.contains("killed by the OOM killer"), "{log}");
    assert!(log.contains("decision: restart (oom-killed)"), "{log}");
    wait_until(WAIT, "hog runs again", || sim.running(&hog) == 1);
}

/// Projects `db`, whose healthcheck runs `test`, and `web`, which depends
/// on it (with `web_keys` in its section); neither starts by itself.
fn web_on_db(env: &TestEnv, test: &str, web_keys: &str) -> (String, String) {
    let db = env.add_project(
        "db",
        &format!("services:\n  main:\n    image: stackd-sim/db:1\n    healthcheck:\n      test: {test}\n"),
    );
    let web = env.add_project("web", APP);
    env.write_config(&format!(
        "[services.{db}]\nauto_start = false\n\n\
         [services.{web}]\nauto_start = false\ndepends_on = [\"{db}\"]\n{web_keys}"
    ));
    (db, web)
}

#[test]
fn a_dependency_is_started_first_and_waited_for_until_healthy() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("sim_deps");
    let (db, web) = web_on_db(&env, "[\"CMD\", \"true\"]\n      interval: 1s", "");
    let bus = Bus::start(env.dir());
    let _daemon = start(&env, &bus);
    let sim = SimCtl::of(&env);
    stackctl(&env, &bus, &["start", &web]).expect_success();
    assert_eq!(sim.running(&db), 1, "db was started for web");
    assert_eq!(
        sim.ps(&db)[0][3],
        "healthy",
        "web waited for db's healthcheck"
    );
    assert_eq!(sim.running(&web), 1);
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web]);
    let task = tasks.as_array().unwrap()[0].clone();
    let log = task_log(&env, &bus, &task);
    assert!(
        log.contains("waiting up to") && log.contains(&format!("dependency {db} is healthy")),
        "{log}"
    );
}

#[test]
fn a_dependency_that_never_gets_healthy_fails_the_start() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("sim_deps_unhealthy");
    let (db, web) = web_on_db(&env, "[\"CMD\", \"false\"]", "start_timeout = \"2s\"\n");
    let bus = Bus::start(env.dir());
    let _daemon = start(&env, &bus);
    let sim = SimCtl::of(&env);
    // Its healthcheck says "unhealthy" 100 ms after each start.
    sim.cmd(&format!("fault {db} unhealthy after 100"));
    let out = stackctl(&env, &bus, &["start", &web]);
    assert!(
        !out.success(),
        "web cannot start without a healthy db: {out}"
    );
    assert_eq!(sim.running(&web), 0, "{out}");
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web]);
    let task = &tasks.as_array().unwrap()[0];
    assert_eq!(task["result"], "dependency", "{task}");
}

#[test]
fn an_engine_that_goes_away_and_comes_back_is_resynced() {
    if !have_bus() {
        return;
    }
    let (env, bus, _daemon, sim, web) = web_at_boot("sim_engine");
    let connected = |want: bool| {
        let out = stackctl(&env, &bus, &["--output", "json", "status"]);
        out.stdout.contains(&format!("\"docker_connected\":{want}"))
            || out
                .stdout
                .contains(&format!("\"docker_connected\": {want}"))
    };
    sim.cmd("engine down");
    wait_until(WAIT, "stackd sees the engine gone", || connected(false));
    // While it is gone the container dies; nobody can see it.
    sim.cmd(&format!("crash {web} 1"));
    sim.cmd("engine up");
    wait_until(WAIT, "stackd reconnects", || connected(true));
    wait_until(WAIT, "web brought back after the engine came back", || {
        sim.running(&web) == 1 && active(&env, &bus, &web)
    });
}

/// Two `stackd --sim` hosts, a (127.0.0.1) and b (127.0.0.2), each with its
/// own simulated engine, bus and state, and one cluster file placing
/// `name` on a.
struct Pair {
    envs: Vec<TestEnv>,
    buses: Vec<Bus>,
    daemons: Vec<Daemon>,
    cluster: PathBuf,
}

impl Pair {
    fn start(test: &str, name_env: &TestEnv, name: &str, handoff: &str) -> Pair {
        let envs: Vec<TestEnv> = ["a", "b"]
            .iter()
            .map(|h| TestEnv::new(&format!("{test}_{h}")))
            .collect();
        let port = common::loopback::free_port();
        let token = common::loopback::token_file(envs[0].dir());
        let dir = name_env.compose_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), APP).unwrap();
        let cluster = envs[0].dir().join("cluster.toml");
        std::fs::write(
            &cluster,
            format!(
                "compose_dir = {}\n\n[peer]\ntoken_file = {}\ntimeout = \"2s\"\n\n\
                 [hosts.a]\npeer = \"http://127.0.0.1:{port}\"\n[hosts.b]\npeer = \"http://127.0.0.2:{port}\"\n\n\
                 [services.{name}]\nhost = \"a\"\nauto_start = false\nhandoff = \"{handoff}\"\nstart_timeout = \"10s\"\n",
                common::toml_str(&name_env.compose_dir().display().to_string()),
                token,
            ),
        )
        .unwrap();
        let buses: Vec<Bus> = envs.iter().map(|e| Bus::start(e.dir())).collect();
        let c = cluster.display().to_string();
        let daemons = ["a", "b"]
            .iter()
            .zip(envs.iter().zip(&buses))
            .map(|(h, (env, bus))| {
                Daemon::start_with(
                    env,
                    bus,
                    &[("DOCKER_HOST", NO_DOCKER)],
                    &["--sim", "--config", &c, "--host", h],
                )
            })
            .collect();
        Pair {
            envs,
            buses,
            daemons,
            cluster,
        }
    }

    fn ctl(&self, i: usize, args: &[&str]) -> common::Output {
        let c = self.cluster.display().to_string();
        let mut all = vec!["-c", c.as_str()];
        all.extend(args);
        stackctl(&self.envs[i], &self.buses[i], &all)
    }

    /// Host `i`'s simulator: its state is under `$XDG_STATE_HOME/stackd`
    /// (the cluster file names no `state_dir`).
    fn sim(&self, i: usize) -> SimCtl {
        SimCtl(self.envs[i].dir().join("xdg-state/stackd/sim.sock"))
    }
}

#[test]
fn a_migrate_hands_the_service_over_and_the_hand_off_rule_guards_starts() {
    if !have_bus() {
        return;
    }
    let names = TestEnv::new("sim_move_names");
    let name = names.project("mv");
    let mut pair = Pair::start("sim_move", &names, &name, "stop-first");
    pair.ctl(0, &["start", &name]).expect_success();
    assert_eq!(pair.sim(0).running(&name), 1);

    common::moves::move_a_to_b(|i, args| pair.ctl(i, args), &name);
    assert_eq!(pair.sim(1).running(&name), 1, "b runs it");
    assert_eq!(pair.sim(0).running(&name), 0, "a stopped it");

    // b runs it: a start on a is refused, naming b.
    let out = pair.ctl(0, &["start", &name]).expect_failure();
    assert!(out.stderr.contains("runs on b"), "{out}");
    assert_eq!(pair.sim(0).running(&name), 0, "the refused start started a");

    // b is gone: refused naming b, unless forced.
    pair.daemons[1].kill();
    let out = pair.ctl(0, &["start", &name]).expect_failure();
    assert!(out.stderr.contains("cannot ask b"), "{out}");
    pair.ctl(0, &["start", "--force", &name]).expect_success();
    assert_eq!(pair.sim(0).running(&name), 1);
    // A move to a host that does not answer is refused and stops nothing.
    let out = pair.ctl(0, &["migrate", &name, "b"]).expect_failure();
    assert!(out.stderr.contains("b does not answer"), "{out}");
    assert_eq!(pair.sim(0).running(&name), 1, "the refused move stopped a");
}

#[test]
fn a_restart_of_stackd_leaves_what_runs_alone_and_a_reboot_brings_it_back() {
    if !have_bus() {
        return;
    }
    let (env, bus, mut daemon, sim, web) = web_at_boot("sim_restart");
    let before = sim.ps(&web);
    let tasks_before = common::max_task_id(&env, &bus);

    // stackd dies; the (simulated) engine and its containers do not (it
    // keeps them in sim-state.json, written a moment after each change).
    let saved = env.state_dir().join("sim-state.json");
    wait_until(WAIT, "the engine's state saved", || {
        std::fs::read_to_string(&saved).is_ok_and(|t| t.contains("\"running\""))
    });
    daemon.kill();
    let mut daemon = start(&env, &bus);
    wait_until(WAIT, "web active after the restart", || {
        active(&env, &bus, &web)
    });
    assert_eq!(sim.ps(&web), before, "the same container, still running");
    let deploys: Vec<serde_json::Value> = stackctl_json(&env, &bus, &["tasks", "--service", &web])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_u64() > Some(tasks_before))
        .cloned()
        .collect();
    assert!(
        deploys.is_empty(),
        "nothing was deployed again: {deploys:?}"
    );

    // A reboot: the engine finds its containers dead; the boot reconcile
    // starts web again.
    daemon.kill();
    env.new_boot();
    let _daemon = start(&env, &bus);
    wait_until(WAIT, "web back after the reboot", || {
        sim.running(&web) == 1 && active(&env, &bus, &web)
    });
    assert_eq!(
        sim.ps(&web)[0][0],
        before[0][0],
        "its container, started again"
    );
}

#[test]
fn a_move_that_fails_on_the_target_leaves_the_service_running_here() {
    if !have_bus() {
        return;
    }
    let names = TestEnv::new("sim_move_fail_names");
    let name = names.project("mvbad");
    let pair = Pair::start("sim_move_fail", &names, &name, "stop-first");
    pair.ctl(0, &["start", &name]).expect_success();

    // Stop-first, and b's Compose cannot start it: a starts it again.
    let sim_b = pair.sim(1);
    sim_b.cmd(&format!("compose-fail {name} no such image here"));
    let text = common::moves::failed_move_a_to_b(|i, args| pair.ctl(i, args), &name);
    assert!(text.contains("starting on b failed"), "{text}");
    assert!(text.contains("no such image here"), "{text}");
    assert_eq!(pair.sim(0).running(&name), 1, "a did not start it again");
    sim_b.cmd(&format!("compose-fail {name} clear"));

    // Stop-first, and b's start is never healthy: b stops its attempt, a
    // starts it again.
    sim_b.cmd(&format!("fault {name} unhealthy after 100"));
    common::moves::failed_move_a_to_b(|i, args| pair.ctl(i, args), &name);
    assert_eq!(pair.sim(0).running(&name), 1, "a did not start it again");
    assert_eq!(pair.sim(1).running(&name), 0, "b left its attempt running");
}
