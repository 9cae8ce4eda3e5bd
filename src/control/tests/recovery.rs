//! Recovery decisions: a crash is restarted with its evidence in the task
//! log; a crash loop spends its budget, then the service is failed with a
//! critical alert and nothing more is tried; an OOM kill is named.

use super::{wait_for, Dir, FakePeers, Host, APP};

async fn one(name: &str, compose: &str, service: &str) -> (tempfile::TempDir, Host) {
    let root = tempfile::tempdir().unwrap();
    let dir = Dir::new(root.path(), "a");
    dir.project(name, compose);
    dir.config(service);
    let host = Host::start(&dir, "a", "boot-1", FakePeers::new()).await;
    (root, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_restarted_with_its_evidence() {
    let (_root, host) = one("web", APP, "[services.web]\nauto_start = true\n").await;
    wait_for!("web active", host.active_state("web").await == "active");
    host.settled().await;
    host.sim("crash web 3");
    wait_for!(
        "web restarted",
        !host.tasks_from("web", "recovery").await.is_empty()
            && host.running("web") == 1
            && host.active_state("web").await == "active"
    );
    let task = host.tasks_from("web", "recovery").await.remove(0);
    let mut log: String;
    wait_for!("the decision in the log", {
        log = host.log(&task).await;
        log.contains("decision:")
    });
    assert!(log.contains("exit code 3"), "{log}");
    assert!(log.contains("decision: restart (exited)"), "{log}");
    assert_eq!(host.restart_count("web").await, 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_spends_its_budget_then_fails_with_an_alert() {
    let (_root, host) = one(
        "loop",
        APP,
        "[services.loop]\nauto_start = false\n\
         restart = { on_failure = true, max_restarts = 2, window = \"2m\", backoff = \"100ms..200ms\" }\n",
    )
    .await;
    // Every start of it dies 200 ms later with code 1.
    host.sim("fault loop exit 1 after 200");
    host.manager().await.start_service("loop").await.unwrap();
    wait_for!(
        "stackd gives up",
        host.text_property("loop", "HealthMessage")
            .await
            .starts_with("gave up")
    );
    let row = host.row("loop").await;
    assert_eq!(row.active_state.to_string(), "failed", "{row:?}");
    assert_eq!(row.health.to_string(), "unhealthy", "{row:?}");
    assert_eq!(host.restart_count("loop").await, 2, "max_restarts is 2");
    wait_for!(
        "the give-up alert",
        host.alerts().iter().any(|a| a.kind == "gave-up")
    );
    let alert = host
        .alerts()
        .into_iter()
        .find(|a| a.kind == "gave-up")
        .unwrap();
    assert_eq!(alert.severity, "critical");
    assert_eq!(alert.service, "loop");
    // Nothing more after giving up.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(host.restart_count("loop").await, 2);
    assert_eq!(host.tasks_from("loop", "recovery").await.len(), 2);
    assert_eq!(
        host.alerts().iter().filter(|a| a.kind == "gave-up").count(),
        1,
        "one alert"
    );
    let diagnose = host
        .manager()
        .await
        .diagnose("loop")
        .await
        .unwrap()
        .join("\n");
    assert!(diagnose.contains("cause: crash-loop"), "{diagnose}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_diagnosed_and_restarted() {
    let (_root, host) = one(
        "hog",
        "services:\n  main:\n    image: stackd-sim/app:1\n    mem_limit: 16m\n",
        "[services.hog]\nauto_start = true\n\
         restart = { max_restarts = 1, window = \"2m\", backoff = \"100ms..200ms\" }\n",
    )
    .await;
    wait_for!("hog active", host.active_state("hog").await == "active");
    host.settled().await;
    host.sim("oom hog");
    wait_for!(
        "a recovery after the OOM kill",
        !host.tasks_from("hog", "recovery").await.is_empty()
    );
    let task = host.tasks_from("hog", "recovery").await.remove(0);
    let mut log: String;
    wait_for!("the decision in the log", {
        log = host.log(&task).await;
        log.contains("decision:")
    });
    assert!(log.contains("killed by the OOM killer"), "{log}");
    assert!(log.contains("decision: restart (oom-killed)"), "{log}");
    wait_for!("hog runs again", host.running("hog") == 1);
    host.stop().await;
}
