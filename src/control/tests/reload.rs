//! A reload alone changes nothing in Docker: a service it adds waits for
//! `apply` (or a person's `start`), even when the supervisor looks at
//! every service at the end of a reconcile that was running meanwhile.

use super::{wait_for, Dir, FakePeers, Host, APP};

const WEB: &str = "[services.web]\nauto_start = true\n";
const ADDED: &str = "\n[services.added]\nauto_start = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_a_reload_adds_waits_for_apply() {
    let root = tempfile::tempdir().unwrap();
    let dir = Dir::new(root.path(), "a");
    dir.project("web", APP);
    dir.project("added", APP);
    dir.config(WEB);
    // Every engine and Compose call is slow, so the start-up reconcile
    // still runs when the reload comes; at its end the supervisor looks
    // at every service the config then names.
    let host = Host::start_with(&dir, "a", "boot-1", FakePeers::new(), &["slow 300"]).await;
    dir.config(&format!("{WEB}{ADDED}"));
    host.manager().await.reload_mode("fail").await.unwrap();
    let boot_running = host
        .all_tasks()
        .await
        .iter()
        .any(|t| t.kind == "reconcile" && matches!(t.state.as_str(), "pending" | "running"));
    assert!(
        boot_running,
        "the reload came during the start-up reconcile"
    );
    wait_for!("web active", host.active_state("web").await == "active");
    host.settled().await;
    host.sim("slow 0");
    // The supervisor has had its look (and a second one after the settle).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(host.running("added"), 0, "a reload alone starts nothing");
    assert!(
        host.tasks("added").await.is_empty(),
        "{:?}",
        host.tasks("added").await
    );
    let diagnose = host
        .manager()
        .await
        .diagnose("added")
        .await
        .unwrap()
        .join("\n");
    assert!(diagnose.contains("cause: not-applied"), "{diagnose}");
    assert!(diagnose.contains("stackctl apply"), "{diagnose}");

    // `apply` brings it up.
    host.manager().await.apply_mode("fail").await.unwrap();
    wait_for!(
        "added active after apply",
        host.running("added") == 1 && host.active_state("added").await == "active"
    );
    // From then on it is the supervisor's like any other: a crash is
    // restarted.
    host.settled().await;
    host.sim("crash added 2");
    wait_for!(
        "added restarted after its crash",
        !host.tasks_from("added", "recovery").await.is_empty() && host.running("added") == 1
    );
    host.stop().await;
}
