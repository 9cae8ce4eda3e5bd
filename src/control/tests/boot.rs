//! The start-up reconcile: what should run is started, a person's stop
//! (a `docker stop` outside stackd) is kept across a reboot, and the boot
//! recovery says what it did once.

use super::{wait_for, Dir, FakePeers, Host, APP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_brings_back_what_should_run_and_keeps_a_persons_stop() {
    let root = tempfile::tempdir().unwrap();
    let dir = Dir::new(root.path(), "a");
    for p in ["web", "db", "tool"] {
        dir.project(p, APP);
    }
    dir.config(
        "[services.web]\nauto_start = true\n\n[services.db]\nauto_start = true\n\n\
         [services.tool]\nauto_start = false\n",
    );
    let host = Host::start(&dir, "a", "boot-1", FakePeers::new()).await;
    wait_for!(
        "web and db active after the first start",
        host.active_state("web").await == "active" && host.active_state("db").await == "active"
    );
    assert_eq!(host.running("tool"), 0, "tool is not auto_start");
    host.settled().await;

    // A person's `docker stop`: stored as the desired state.
    host.sim("stop db");
    wait_for!(
        "db's stop taken as a person's",
        host.row("db").await.desired_state == "stopped"
    );
    let source = host.text_property("db", "DesiredSource").await;
    assert!(source.contains("outside stackd"), "{source}");
    assert!(host.tasks_from("db", "recovery").await.is_empty());

    // A reboot: stackd and its (simulated) engine go down together; the
    // engine comes back with its containers stopped, under a new boot id.
    host.saved(&dir).await;
    host.stop().await;
    let host = Host::start(&dir, "a", "boot-2", FakePeers::new()).await;
    wait_for!(
        "web back after the reboot",
        host.running("web") == 1 && host.active_state("web").await == "active"
    );
    let boot: Vec<_> = host
        .all_tasks()
        .await
        .into_iter()
        .filter(|t| t.kind == "reconcile" && t.origin.to_string() == "boot")
        .collect();
    assert!(!boot.is_empty(), "a boot reconcile ran");
    wait_for!(
        "the boot recovery's alert",
        host.alerts().iter().any(|a| a.kind == "recovered")
    );
    let recovered: Vec<_> = host
        .alerts()
        .into_iter()
        .filter(|a| a.kind == "recovered")
        .collect();
    assert_eq!(
        recovered.len(),
        1,
        "one recovery notification: {recovered:?}"
    );
    assert!(recovered[0].body.contains("web"), "{:?}", recovered[0]);
    assert!(
        recovered[0].body.contains("db"),
        "db named as left stopped: {:?}",
        recovered[0]
    );
    assert_eq!(host.running("db"), 0, "the person's stop is kept");
    assert_eq!(host.row("db").await.active_state.to_string(), "inactive");
    assert_eq!(host.running("tool"), 0);
    host.stop().await;
}
