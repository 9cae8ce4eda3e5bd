//! The hand-off rule with the other hosts faked: a start is refused while
//! another host runs the service (or cannot be asked), and a migrate
//! hands it over step by step.

use std::os::unix::fs::PermissionsExt;

use super::{toml_str, Dir, FakePeers, Host, APP};

const B: &str = "http://127.0.0.2:9";

async fn host_a(peers: std::sync::Arc<FakePeers>) -> (tempfile::TempDir, Host) {
    let root = tempfile::tempdir().unwrap();
    let dir = Dir::new(root.path(), "a");
    dir.project("mv", APP);
    let token = dir.dir.join("peer.token");
    std::fs::write(&token, "in-process-token-0123456789\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir.config(&format!(
        "[peer]\ntoken_file = {}\ntimeout = \"2s\"\n\n\
         [hosts.a]\npeer = \"http://127.0.0.1:9\"\n[hosts.b]\npeer = \"{B}\"\n\n\
         [services.mv]\nhost = \"a\"\nauto_start = false\nhandoff = \"stop-first\"\n",
        toml_str(&token.display().to_string())
    ));
    let host = Host::start(&dir, "a", "boot-1", peers).await;
    (root, host)
}

fn refusal(e: zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(text), _) => format!("{name}: {text}"),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_refused_while_another_host_runs_the_service() {
    let peers = FakePeers::new();
    peers.set_service(B, "mv", "running", "active");
    let (_root, host) = host_a(peers.clone()).await;
    let e = host.manager().await.start_service("mv").await.unwrap_err();
    let e = refusal(e);
    assert!(e.contains("runs on b"), "{e}");
    assert!(peers.calls().contains(&format!("service mv @{B}")));
    assert_eq!(host.running("mv"), 0, "the refused start started it here");
    assert!(
        host.tasks("mv").await.is_empty(),
        "no task for a refused start"
    );

    // b does not answer: refused too, naming it.
    peers.set_down(B, true);
    let e = refusal(host.manager().await.start_service("mv").await.unwrap_err());
    assert!(e.contains("cannot ask b"), "{e}");
    assert_eq!(host.running("mv"), 0);

    // b answers and has stopped it: the start goes ahead.
    peers.set_down(B, false);
    peers.set_service(B, "mv", "stopped", "inactive");
    host.manager().await.start_service("mv").await.unwrap();
    let task = host.ended("mv", "deploy").await;
    assert_eq!(task.result, "done", "{task:?}");
    assert_eq!(host.running("mv"), 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrate_hands_the_service_over() {
    let peers = FakePeers::new();
    // b knows mv (the same cluster file) and does not run it.
    peers.set_service(B, "mv", "stopped", "inactive");
    let (_root, host) = host_a(peers.clone()).await;
    host.manager().await.start_service("mv").await.unwrap();
    host.ended("mv", "deploy").await;
    assert_eq!(host.running("mv"), 1);

    host.manager()
        .await
        .migrate_mode("mv", "b", "fail")
        .await
        .unwrap();
    let task = host.ended("mv", "migrate").await;
    let log = host.log(&task).await;
    assert_eq!(task.result, "done", "{task:?}\n{log}");
    for step in [
        "b: preflight, then pull",
        "a: stopping mv",
        "b: starting mv",
        "runs and is healthy",
        "mv moved from a to b",
    ] {
        assert!(log.contains(step), "no {step:?} in the log:\n{log}");
    }
    let calls = peers.calls();
    let asked = |c: &str| calls.iter().position(|x| x == &format!("{c} @{B}"));
    assert!(
        asked("prepare mv from a") < asked("receive mv from a"),
        "prepared before it was received: {calls:?}"
    );
    assert_eq!(host.running("mv"), 0, "a stopped it");
    let row = host.row("mv").await;
    assert_eq!(row.desired_state, "stopped", "{row:?}");
    let source = host.text_property("mv", "DesiredSource").await;
    assert_eq!(source, "migrate to b");

    // b runs it now: a start here is refused.
    let e = refusal(host.manager().await.start_service("mv").await.unwrap_err());
    assert!(e.contains("runs on b"), "{e}");
    host.stop().await;
}
