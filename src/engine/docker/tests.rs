use std::time::Instant;

use bollard::models::EventActor;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::engine::testing::{self, Project};
use crate::engine::Docker;

#[test]
fn converts_events() {
    let attrs = HashMap::from([
        (PROJECT_LABEL.to_string(), "web".to_string()),
        (SERVICE_LABEL.to_string(), "app".to_string()),
        ("name".to_string(), "web-app-1".to_string()),
        ("exitCode".to_string(), "137".to_string()),
    ]);
    let msg = |action: &str, attrs: HashMap<String, String>| EventMessage {
        typ: Some(EventMessageTypeEnum::CONTAINER),
        action: Some(action.to_string()),
        actor: Some(EventActor {
            id: Some("abc".to_string()),
            attributes: Some(attrs),
        }),
        scope: None,
        time: Some(1_700_000_000),
        time_nano: Some(1_700_000_000_123_456_789),
    };
    let die = engine_event(msg("die", attrs.clone())).unwrap();
    assert_eq!(die.action, "die");
    assert_eq!(die.exit_code, Some(137));
    assert_eq!(die.container_name, "web-app-1");
    assert_eq!(die.time_usec, 1_700_000_000_123_456);
    let health = engine_event(msg("health_status: healthy", attrs)).unwrap();
    assert_eq!(health.action, "health_status");
    assert_eq!(health.detail.as_deref(), Some("healthy"));
    assert!(engine_event(msg("start", HashMap::new())).is_none());
}

#[tokio::test]
async fn docker_connects_negotiates_and_reports_info() {
    let Some(docker) = testing::docker().await else {
        return;
    };
    docker.ping().await.unwrap();
    let info = docker.info().await.unwrap();
    assert!(!info.version.is_empty(), "{info:?}");
    assert!(info.api_version.starts_with("1."), "{info:?}");
    assert!(info.data_root.starts_with('/'), "{info:?}");
    assert!(
        matches!(info.cgroup_version.as_str(), "1" | "2"),
        "{info:?}"
    );
    assert!(!info.cgroup_driver.is_empty(), "{info:?}");
    assert!(info.running <= info.containers);
    // The agreed version is never newer than the engine's.
    let agreed: Vec<u32> = docker
        .api_version()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let engine: Vec<u32> = info
        .api_version
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(agreed <= engine, "{agreed:?} > {engine:?}");
}

#[tokio::test]
async fn unreachable_engine_fails_fast_and_names_the_address() {
    let started = Instant::now();
    let err = Docker::connect_to("unix:///nonexistent/docker.sock")
        .await
        .err()
        .expect("connect must fail");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string().contains("unix:///nonexistent/docker.sock"),
        "{err}"
    );

    // A socket file nobody listens on: connection refused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let address = format!("unix://{}", path.display());
    let err = Bollard::connect_to(&address)
        .await
        .err()
        .expect("must fail");
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains(&address), "{err}");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");

    let err = Docker::connect_to("tcp://127.0.0.1:1").await.err().unwrap();
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let err = Docker::connect_to("ssh://host").await.err().unwrap();
    assert!(matches!(err, EngineError::BadAddress(_)), "{err}");
}

#[tokio::test]
async fn docker_images_and_gone_containers() {
    let Some(docker) = testing::docker().await else {
        return;
    };
    testing::test_image();
    assert!(docker.image_present(testing::test_image()).await.unwrap());
    assert!(!docker
        .image_present("stackd-test/not-there:0")
        .await
        .unwrap());
    assert_eq!(
        docker.inspect("stackdeng-no-such-container").await.unwrap(),
        None
    );
}

async fn up(compose: &crate::engine::Compose, project: &Project) {
    compose
        .run(
            &project.invocation(&["up", "-d"]),
            &|_| {},
            &CancellationToken::new(),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
}

/// Project `name`, one service of the test image running `command` (a
/// YAML list), up: the project (removed when dropped) and the id of its
/// container.
async fn running(
    docker: &Docker,
    compose: &crate::engine::Compose,
    name: &str,
    command: &str,
) -> (Project, String) {
    let image = testing::test_image();
    let project = Project::new(
            compose,
            name,
            &format!(
                "  main:\n    image: {image}\n    pull_policy: never\n    command: {command}\n    stop_signal: SIGKILL\n"
            ),
        );
    up(compose, &project).await;
    let id = docker.list_containers(Some(&project.name)).await.unwrap()[0]
        .id
        .clone();
    (project, id)
}

#[tokio::test]
async fn docker_events_report_death_with_exit_code() {
    let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await) else {
        return;
    };
    let image = testing::test_image();
    let project = Project::new(
            &compose,
            "events",
            &format!(
                "  job:\n    image: {image}\n    pull_policy: never\n    command: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n"
            ),
        );
    let mut events = Box::pin(docker.events());
    up(&compose, &project).await;
    let died = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if ev.project == project.name && ev.action == "die" {
                return ev;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("no die event within 60s");
    assert_eq!(died.service, "job");
    assert_eq!(died.exit_code, Some(3));
    assert!(died.time_usec > 1_600_000_000_000_000);

    let info = docker.inspect(&died.container_id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(3));
    assert!(info.finished_at_usec >= info.started_at_usec);
    assert_eq!(info.pid, None);
    assert!(info.status.starts_with("Exited (3)"), "{}", info.status);
}

#[tokio::test]
async fn docker_logs_return_what_the_container_printed() {
    let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await) else {
        return;
    };
    let (_project, id) = running(
        &docker,
        &compose,
        "logs",
        r#"["sh", "-c", "echo line one; echo line two >&2; echo line three; sleep 600"]"#,
    )
    .await;
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = docker
            .logs(&id, None, false)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
            .await;
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    for want in ["line one", "line two", "line three"] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want} missing in {lines:?}"
        );
    }
    let tail: Vec<String> = docker
        .logs(&id, Some(1), false)
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert_eq!(tail.len(), 1, "{tail:?}");

    // follow keeps the stream open while the container runs.
    let mut follow = Box::pin(docker.logs(&id, Some(0), true));
    let pending = tokio::time::timeout(Duration::from_millis(300), follow.next()).await;
    assert!(pending.is_err(), "a followed log stream ended early");

    let gone: Vec<_> = docker.logs("stackdeng-nope", None, false).collect().await;
    assert!(
        matches!(gone.as_slice(), [Err(EngineError::NotFound { .. })]),
        "{gone:?}"
    );
}

#[tokio::test]
async fn docker_exec_returns_the_exit_code() {
    let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await) else {
        return;
    };
    let (_project, id) = running(&docker, &compose, "exec", r#"["sleep", "600"]"#).await;
    let argv = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let t = Duration::from_secs(20);
    assert_eq!(docker.exec(&id, &argv(&["true"]), t).await.unwrap(), 0);
    assert_eq!(
        docker
            .exec(&id, &argv(&["sh", "-c", "echo out; exit 7"]), t)
            .await
            .unwrap(),
        7
    );
    let slow = docker
        .exec(&id, &argv(&["sleep", "5"]), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(slow.to_string().contains("did not finish"), "{slow}");
    let gone = docker
        .exec("stackdeng-nope", &argv(&["true"]), t)
        .await
        .unwrap_err();
    assert!(matches!(gone, EngineError::NotFound { .. }), "{gone}");
}
