use super::*;
use crate::engine::testing;

fn fixture(dir: &Path, port: u16, bind: &str) -> Target {
    let image = testing::test_image();
    std::fs::write(dir.join("app.env"), "A=1\n").unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:\n  app:\n    image: {image}\n    pull_policy: never\n    env_file: app.env\n    ports: [\"{port}:80\"]\n    volumes: [\"{bind}:/data\"]\n    command: [\"sleep\", \"600\"]\n"
        ),
    )
    .unwrap();
    Target {
        project: format!("stackdpf{port}"),
        dir: dir.to_path_buf(),
        file: dir.join("compose.yaml"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const NO_DISK_LIMIT: Options = Options { min_free_bytes: 0 };

#[tokio::test]
async fn docker_a_clean_project_passes() {
    let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await) else {
        return;
    };
    testing::test_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let target = fixture(dir.path(), free_port(), "./data");
    let report = check(&compose, Some(&docker), &target, &NO_DISK_LIMIT).await;
    assert!(report.problems.is_empty(), "{report}");
    assert!(report.passed());
}

#[tokio::test]
async fn docker_missing_bind_source_and_held_port_in_one_report() {
    let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await) else {
        return;
    };
    testing::test_image();
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let target = fixture(dir.path(), port, "./nope");
    let report = check(
        &compose,
        Some(&docker),
        &target,
        &Options {
            min_free_bytes: u64::MAX,
        },
    )
    .await;
    assert!(!report.passed());
    let checks: Vec<Check> = report.fatal().map(|p| p.check).collect();
    assert!(checks.contains(&Check::BindMounts), "{report}");
    assert!(checks.contains(&Check::Ports), "{report}");
    assert!(checks.contains(&Check::Disk), "{report}");
    let ports = report.fatal().find(|p| p.check == Check::Ports).unwrap();
    assert!(
        ports
            .message
            .contains(&format!("process {}", std::process::id())),
        "{}",
        ports.message
    );
    let bind = report
        .fatal()
        .find(|p| p.check == Check::BindMounts)
        .unwrap();
    assert!(bind.message.contains("nope"), "{}", bind.message);
}

#[tokio::test]
async fn docker_broken_file_and_missing_image() {
    let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yaml"), "services:\n  app: [\n").unwrap();
    let target = Target {
        project: "stackdpfbroken".into(),
        dir: dir.path().to_path_buf(),
        file: dir.path().join("compose.yaml"),
    };
    let report = check(&compose, Some(&docker), &target, &NO_DISK_LIMIT).await;
    assert_eq!(report.fatal().count(), 1, "{report}");
    assert_eq!(report.problems[0].check, Check::ComposeFile);

    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  a:\n    image: stackd-test/absent:1\n    pull_policy: never\n  b:\n    image: stackd-test/absent:2\n",
    )
    .unwrap();
    let report = check(&compose, Some(&docker), &target, &NO_DISK_LIMIT).await;
    let images: Vec<(bool, &str)> = report
        .problems
        .iter()
        .filter(|p| p.check == Check::Images)
        .map(|p| (p.fatal, p.message.as_str()))
        .collect();
    assert_eq!(images.len(), 2, "{report}");
    assert!(images[0].0 && images[0].1.contains("pull_policy is never"));
    assert!(!images[1].0 && images[1].1.contains("will be pulled"));
}
