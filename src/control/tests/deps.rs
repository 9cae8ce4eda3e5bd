//! Dependency waits: a start starts its dependency first and waits until
//! it is healthy; a dependency that never gets healthy fails the start.

use super::{Dir, FakePeers, Host, APP};
use crate::dbus::types::TaskRow;

async fn pair(db_compose: &str, web_extra: &str) -> (tempfile::TempDir, Host) {
    let root = tempfile::tempdir().unwrap();
    let dir = Dir::new(root.path(), "a");
    dir.project("db", db_compose);
    dir.project("web", APP);
    dir.config(&format!(
        "[services.db]\nauto_start = false\n\n\
         [services.web]\nauto_start = false\ndepends_on = [\"db\"]\n{web_extra}"
    ));
    let host = Host::start(&dir, "a", "boot-1", FakePeers::new()).await;
    (root, host)
}

/// Starts web as `stackctl start` does and waits for its task to end.
async fn start_web(host: &Host) -> TaskRow {
    host.manager().await.start_service("web").await.unwrap();
    host.ended("web", "deploy").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_is_started_first_and_waited_for_until_healthy() {
    let (_root, host) = pair(
        "services:\n  main:\n    image: stackd-sim/db:1\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n",
        "",
    )
    .await;
    let task = start_web(&host).await;
    assert_eq!(task.result, "done", "{task:?}");
    assert_eq!(host.running("db"), 1, "db was started for web");
    assert_eq!(
        host.ps("db")[0][3],
        "healthy",
        "web waited for db's healthcheck"
    );
    assert_eq!(host.running("web"), 1);
    let log = host.log(&task).await;
    assert!(
        log.contains("waiting up to") && log.contains("dependency db is healthy"),
        "{log}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_never_gets_healthy_fails_the_start() {
    let (_root, host) = pair(
        "services:\n  main:\n    image: stackd-sim/db:1\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n",
        "start_timeout = \"1s\"\n",
    )
    .await;
    // Its healthcheck says "unhealthy" 100 ms after each start.
    host.sim("fault db unhealthy after 100");
    let task = start_web(&host).await;
    assert_eq!(task.state, "failed", "{task:?}");
    assert_eq!(task.result, "dependency", "{task:?}");
    assert_eq!(host.running("web"), 0, "web was not started");
    host.stop().await;
}
