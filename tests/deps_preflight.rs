//! Dependencies and conflicts between services, and the preflight checks
//! before a deploy, through stackctl against the real engine.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn docker_dependencies_start_in_order_and_guard_stop_and_conflicts() {
    if !(have_docker() && have_bus()) {
        return;
    }
    ensure_image();
    let env = TestEnv::new("deps");
    let db = env.add_sleeper("db");
    let web = env.add_sleeper("web");
    let other = env.add_sleeper("other");
    env.write_config(&format!(
        "[services.{db}]\n[services.{web}]\ndepends_on = [\"{db}\"]\n[services.{other}]\nauto_start = false\nconflicts = [\"{web}\"]\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(60), "boot recovery starts both", || {
        running(&db) == 1 && running(&web) == 1
    });
    // Task timestamps: web's deploy started after db's ended.
    let (_, _, db_done) = task_of(&env, &bus, &db, None);
    let (_, web_started, _) = task_of(&env, &bus, &web, None);
    assert!(
        web_started >= db_done,
        "web started {web_started}, db done {db_done}"
    );

    let refused = stackctl(&env, &bus, &["stop", &db]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("needed by running services") && refused.stderr.contains(&web),
        "{refused}"
    );
    assert_eq!(running(&db), 1);

    let conflict = stackctl(&env, &bus, &["start", &other]);
    assert_eq!(conflict.code, 1, "{conflict}");
    assert!(
        conflict.stderr.contains("conflicts with running services"),
        "{conflict}"
    );
    assert_eq!(running(&other), 0);

    // One command names both, dependent first: the stop of db is not
    // refused, since web's stop is queued, and waits for it.
    stackctl(&env, &bus, &["stop", &web, &db]).expect_success();
    assert_eq!(running(&web), 0);
    assert_eq!(running(&db), 0);
    let (_, _, web_stopped) = task_of(&env, &bus, &web, Some("stop"));
    let (_, db_stop_started, _) = task_of(&env, &bus, &db, Some("stop"));
    assert!(
        db_stop_started >= web_stopped,
        "db stop started {db_stop_started}, web stopped {web_stopped}"
    );
    stackctl(&env, &bus, &["start", &other]).expect_success();
    assert_eq!(running(&other), 1);
}

#[test]
fn docker_preflight_lists_every_problem_and_a_held_port_is_not_retried() {
    if !(have_docker() && have_bus()) {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("preflight");
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let app = env.add_project(
        "app",
        &format!(
            r#"version: "2.4"
services:
  main:
    image: {image}
    command: ["sleep", "3600"]
    ports:
      - "{port}:80"
    volumes:
      - ./missing-dir:/data
"#
        ),
    );
    env.write_config(&format!("[services.{app}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let check = stackctl(&env, &bus, &["check", &app]);
    assert_eq!(check.code, 1, "{check}");
    assert!(check.stderr.contains("preflight failed"), "{check}");
    assert!(check.stderr.contains(&port.to_string()), "{check}");
    assert!(check.stderr.contains("missing-dir"), "{check}");
    assert!(
        busctl_error_name(
            None,
            &bus,
            &[
                "call",
                "org.stackd1",
                "/org/stackd1",
                "org.stackd1.Manager",
                "CheckService",
                "s",
                &app
            ]
        )
        .as_deref()
            == Some("org.stackd1.Error.PreflightFailed")
    );

    let start = stackctl(&env, &bus, &["start", &app]);
    assert_eq!(start.code, 1, "{start}");
    assert!(start.stderr.contains("PreflightFailed"), "{start}");
    assert!(containers(&app).is_empty(), "nothing was created");
    // No retry loop follows.
    std::thread::sleep(Duration::from_secs(3));
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &app]);
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    drop(holder);
}

/// The newest task of `service` (of `kind`, when given): (id, started, finished).
fn task_of(env: &TestEnv, bus: &Bus, service: &str, kind: Option<&str>) -> (String, u64, u64) {
    let tasks = stackctl_json(env, bus, &["tasks", "--service", service]);
    let t = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| kind.map_or(true, |k| t["kind"] == k))
        .unwrap_or_else(|| panic!("no {kind:?} task of {service}: {tasks}"));
    let id = t["id"].as_u64().unwrap().to_string();
    let t = stackctl_json(env, bus, &["task", &id]);
    (
        id,
        t["started_usec"].as_u64().unwrap(),
        t["finished_usec"].as_u64().unwrap(),
    )
}

#[test]
fn docker_a_start_waits_for_healthy_dependencies_and_force_clears_the_way() {
    if !(have_docker() && have_bus()) {
        return;
    }
    ensure_image();
    let env = TestEnv::new("deps_force");
    let db = env.add_sleeper("db");
    let web = env.add_sleeper("web");
    let other = env.add_sleeper("other");
    // db is healthy once its folder holds "ready"; web gives it 30 s (a
    // start of db under Compose v1 on a loaded 2-core machine, health
    // check included, has taken more than 10).
    env.write_config(&format!(
        "[services.{db}]\nauto_start = false\nhealth = {{ file = \"ready\", interval = \"1s\", retries = 1 }}\nrestart = {{ on_failure = false }}\n\
         [services.{web}]\nauto_start = false\ndepends_on = [\"{db}\"]\nstart_timeout = \"30s\"\n\
         [services.{other}]\nauto_start = false\nconflicts = [\"{web}\"]\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let dry = stackctl(&env, &bus, &["start", "--dry-run", &web]).expect_success();
    assert!(dry.stdout.contains("preflight passed"), "{dry}");
    assert!(
        dry.stdout
            .contains(&format!("1. start {db} (needed by {web})"))
            && dry.stdout.contains(&format!("2. start {web} (requested)")),
        "{dry}"
    );
    assert_eq!(running(&db) + running(&web), 0, "a dry run starts nothing");

    // db runs but never turns healthy: web's start gives up, naming why.
    stackctl(&env, &bus, &["start", &db]).expect_success();
    let late = stackctl(&env, &bus, &["start", &web]);
    assert_eq!(late.code, 1, "{late}");
    assert!(
        late.stderr
            .contains(&format!("dependency {db} was not healthy within 30s")),
        "{late}"
    );
    assert!(late.stderr.contains("ready does not exist"), "{late}");
    assert_eq!((running(&db), running(&web)), (1, 0));

    // With both stopped, starting web starts db first and waits for it.
    std::fs::write(env.compose_dir().join(&db).join("ready"), "").unwrap();
    stackctl(&env, &bus, &["stop", &db]).expect_success();
    let ok = stackctl(&env, &bus, &["start", &web]).expect_success();
    assert!(
        ok.stdout.contains(&format!(
            "waiting up to 30s for dependency {db} to be healthy"
        )) && ok
            .stdout
            .contains(&format!("dependency {db} is healthy after")),
        "{ok}"
    );
    assert_eq!((running(&db), running(&web)), (1, 1));

    let tree = stackctl(&env, &bus, &["dependencies", &web]).expect_success();
    assert_eq!(tree.stdout, format!("{web}\n● └─{db}\n"), "{tree}");
    let reverse = stackctl(&env, &bus, &["dependencies", "--reverse", &db]).expect_success();
    assert_eq!(reverse.stdout, format!("{db}\n● └─{web}\n"), "{reverse}");
    let rows = busctl(
        &bus,
        &[
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "ListDependencies",
            "sb",
            &web,
            "false",
        ],
    )
    .expect_success();
    assert!(
        rows.stdout
            .starts_with(&format!("a(ussss) 2 0 \"{web}\" \"active\"")),
        "{rows}"
    );
    assert_eq!(
        busctl_error_name(
            None,
            &bus,
            &[
                "call",
                "org.stackd1",
                "/org/stackd1",
                "org.stackd1.Manager",
                "StopServiceMode",
                "ss",
                &db,
                "isolate"
            ]
        )
        .as_deref(),
        Some("org.stackd1.Error.InvalidArgument")
    );

    // --force stops web, then db.
    let refused = stackctl(&env, &bus, &["stop", &db]);
    assert!(refused.stderr.contains("--force"), "{refused}");
    stackctl(&env, &bus, &["stop", "--force", &db]).expect_success();
    assert_eq!((running(&db), running(&web)), (0, 0));
    let (_, _, web_stopped) = task_of(&env, &bus, &web, Some("stop"));
    let (_, db_stop_started, _) = task_of(&env, &bus, &db, Some("stop"));
    assert!(
        db_stop_started >= web_stopped,
        "db stop started {db_stop_started}, web stopped {web_stopped}"
    );

    // A forced start of other stops web (which conflicts) first.
    stackctl(&env, &bus, &["start", &web]).expect_success();
    let dry = stackctl(&env, &bus, &["start", "--dry-run", &other]);
    assert_eq!(dry.code, 1, "{dry}");
    assert!(dry.stderr.contains("--force"), "{dry}");
    let dry = stackctl(&env, &bus, &["start", "--dry-run", "--force", &other]).expect_success();
    assert!(
        dry.stdout
            .contains(&format!("1. stop {web} (conflicts with {other})")),
        "{dry}"
    );
    stackctl(&env, &bus, &["start", "--force", &other]).expect_success();
    assert_eq!(
        (running(&other), running(&web), running(&db)),
        (1, 0, 1),
        "web made way, db stays"
    );
    let web_status = stackctl_json(&env, &bus, &["status", &web]);
    assert_eq!(web_status[0]["desired_state"], "stopped", "{web_status}");
}

#[test]
fn docker_a_port_held_by_a_container_is_named_by_check() {
    if !(have_docker() && have_bus()) {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("preflight_port");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publishing = format!(
        r#"version: "2.4"
services:
  main:
    image: {image}
    command: ["sleep", "3600"]
    ports:
      - "127.0.0.1:{port}:80"
    stop_grace_period: 1s
"#
    );
    // Not one of stackd's: started by hand, holding the port.
    let holder = env.add_project("holder", &publishing);
    let app = env.add_project("app", &publishing);
    env.write_config(&format!("[services.{app}]\nauto_start = false\n"));
    env.compose(&holder, &["up", "-d"]).expect_success();
    let holder_container = containers(&holder)[0].name.clone();
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let check = stackctl(&env, &bus, &["check", &app]);
    assert_eq!(check.code, 1, "{check}");
    assert!(
        check.stderr.contains(&format!(
            "host port {port} (service main) is already in use by container {holder_container} (Compose project {holder}) (docker-proxy, pid"
        )),
        "{check}"
    );
}
