//! Dependencies and conflicts between services, and the preflight checks
//! before a deploy, through stackctl against the real engine.

mod common;

use std::time::Duration;

use common::*;

fn task_times(env: &TestEnv, bus: &Bus, service: &str) -> (u64, u64) {
    let tasks = stackctl_json(env, bus, &["tasks", "--service", service]);
    let id = tasks[0]["id"].as_u64().unwrap().to_string();
    let t = stackctl_json(env, bus, &["task", &id]);
    (
        t["started_usec"].as_u64().unwrap(),
        t["finished_usec"].as_u64().unwrap(),
    )
}

#[test]
fn dependencies_start_in_order_and_guard_stop_and_conflicts() {
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
    let (_, db_done) = task_times(&env, &bus, &db);
    let (web_started, _) = task_times(&env, &bus, &web);
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

    stackctl(&env, &bus, &["stop", &web]).expect_success();
    stackctl(&env, &bus, &["stop", &db]).expect_success();
    assert_eq!(running(&db), 0);
    stackctl(&env, &bus, &["start", &other]).expect_success();
    assert_eq!(running(&other), 1);
}

#[test]
fn preflight_lists_every_problem_and_a_held_port_is_not_retried() {
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
