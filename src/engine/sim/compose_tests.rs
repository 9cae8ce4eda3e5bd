use super::*;
use crate::engine::sim::Sim;
use crate::engine::ContainerApi;

fn project(yaml: &str) -> (tempfile::TempDir, Invocation) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, yaml).unwrap();
    let inv = Invocation {
        project: "demo".into(),
        dir: dir.path().to_path_buf(),
        file,
        args: vec![],
    };
    (dir, inv)
}

async fn run(
    sim: &Sim,
    inv: &Invocation,
    args: &[&str],
) -> (Result<(), ComposeError>, Vec<String>) {
    let inv = Invocation {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..inv.clone()
    };
    let mut lines = Vec::new();
    let mut on_line = |_: Source, l: &str| lines.push(l.to_string());
    let r = ComposeApi::run(
        sim,
        &inv,
        &mut on_line,
        &CancellationToken::new(),
        Duration::from_secs(10),
    )
    .await;
    (r, lines)
}

const TWO: &str = "services:\n  db:\n    image: postgres:16\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 50ms\n  web:\n    image: nginx\n    depends_on:\n      db:\n        condition: service_healthy\n";

#[tokio::test]
async fn up_waits_for_a_healthy_dependency_and_labels_as_compose_does() {
    let sim = Sim::new();
    let (_dir, inv) = project(TWO);
    let (r, lines) = run(&sim, &inv, &["up", "-d", "--remove-orphans"]).await;
    r.unwrap();
    let waited = lines
        .iter()
        .position(|l| l.contains("demo-db-1  Healthy"))
        .unwrap();
    let web = lines
        .iter()
        .position(|l| l.contains("demo-web-1  Started"))
        .unwrap();
    assert!(waited < web, "{lines:?}");
    let list = sim.list_containers(Some("demo")).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|c| c.state == ContainerState::Running));
    let (_, hashes) = run(&sim, &inv, &["config", "--hash", "*"]).await;
    let hashes = crate::engine::compose::parse_config_hashes(&hashes);
    assert_eq!(list[0].config_hash.as_ref(), hashes.get("db"));
    // A second `up` recreates nothing.
    let ids: Vec<_> = list.iter().map(|c| c.id.clone()).collect();
    run(&sim, &inv, &["up", "-d"]).await.0.unwrap();
    let again: Vec<_> = sim
        .list_containers(Some("demo"))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, again);
}

#[tokio::test]
async fn published_ports_answer_while_the_container_runs() {
    let sim = Sim::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_dir, inv) = project(&format!(
        "services:\n  web:\n    image: nginx\n    ports: [\"127.0.0.1:{port}:80\"]\n"
    ));
    run(&sim, &inv, &["up", "-d"]).await.0.unwrap();
    let (r, lines) = run(&sim, &inv, &["port", "web", "80"]).await;
    r.unwrap();
    assert_eq!(lines, [format!("0.0.0.0:{port}")]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(
        sim.publishing(port).await.unwrap(),
        ["demo-web-1 (Compose project demo)"]
    );
    run(&sim, &inv, &["stop"]).await.0.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn stop_sends_the_engine_events_in_dockers_order() {
    let sim = Sim::new();
    let (_dir, inv) = project("services:\n  app:\n    image: busybox\n");
    run(&sim, &inv, &["up", "-d"]).await.0.unwrap();
    let mut events = sim.events();
    run(&sim, &inv, &["stop"]).await.0.unwrap();
    use futures_util::StreamExt;
    let mut actions = Vec::new();
    for _ in 0..3 {
        actions.push(events.next().await.unwrap().unwrap().action);
    }
    assert_eq!(actions, ["kill", "die", "stop"]);
}

#[tokio::test]
async fn an_injected_compose_failure_is_the_last_line() {
    let sim = Sim::new();
    let (_dir, inv) = project("services:\n  app:\n    image: busybox\n");
    sim.lock().compose_fail.insert(
        "demo".into(),
        "Error response from daemon: pull access denied for busybox".into(),
    );
    let (r, _) = run(&sim, &inv, &["up", "-d"]).await;
    match r {
        Err(ComposeError::Failed { last_line, .. }) => {
            assert!(last_line.contains("pull access denied"))
        }
        other => panic!("{other:?}"),
    }
}
