use std::sync::Mutex;

use super::*;
use crate::engine::docker::ContainerState;
use crate::engine::testing::{self, Project};

#[test]
fn config_hash_lines_of_both_flavors() {
    // v1 1.29 and v2 2.26 print the same shape; warnings are skipped.
    let lines: Vec<String> = [
        "db 15ce699da1682bbc22100af55c40f3a34de5cbf0c59314028bbafbde933dcabb",
        "WARNING: something odd",
        "web 38927781c00986f61463b3ad4e0d5f798a5d26681e8065fbe7293ed9efb11732",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let m = parse_config_hashes(&lines);
    assert_eq!(m.len(), 2);
    assert_eq!(
        m["db"],
        "15ce699da1682bbc22100af55c40f3a34de5cbf0c59314028bbafbde933dcabb"
    );
    assert!(m.contains_key("web"));
}

fn sleeper(name: &str, secs: u32) -> String {
    let image = testing::test_image();
    format!(
            "  {name}:\n    image: {image}\n    pull_policy: never\n    stop_signal: SIGKILL\n    command: [\"sh\", \"-c\", \"echo started; sleep {secs}\"]\n"
        )
}

/// No live (non-zombie) process is left in the group `pgid`; killed
/// processes may take a moment to die, so it looks for up to 2 s.
async fn process_gone(pgid: u32) -> bool {
    let alive = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .any(|stat| {
                // "pid (comm) state ppid pgrp ..."; comm may hold spaces.
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
            })
    };
    for _ in 0..20 {
        if !alive() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[test]
fn parses_version_output() {
    assert_eq!(
        parse_version_output(
            "docker-compose version 1.29.2, build unknown\ndocker-py version: 5.0.3\n"
        ),
        Some((ComposeFlavor::V1, "1.29.2".to_string()))
    );
    assert_eq!(
        parse_version_output("Docker Compose version v2.29.1\n"),
        Some((ComposeFlavor::V2, "2.29.1".to_string()))
    );
    assert_eq!(
        parse_version_output("Docker Compose version 2.24.6-desktop.1"),
        Some((ComposeFlavor::V2, "2.24.6-desktop.1".to_string()))
    );
    assert_eq!(
        parse_version_output("Usage: docker [OPTIONS] COMMAND"),
        None
    );
    assert!(version_at_least("2.19.0", V2_PROGRESS_FLAG_SINCE));
    assert!(version_at_least("2.24.6-desktop.1", V2_PROGRESS_FLAG_SINCE));
    assert!(version_at_least("5.0.1", V2_PROGRESS_FLAG_SINCE));
    assert!(!version_at_least("2.17.2", V2_PROGRESS_FLAG_SINCE));
}

#[test]
fn reads_images_from_v1_config_output() {
    // Real `docker-compose config` 1.29 output, long values wrapped.
    let out = "services:
  app:
    command:
    - sh
    - -c
    - 'echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
      image: x'
    image: stackd-test/busybox:1
  built:
    build:
      context: /tmp/cfx/b
    environment:
      FOO: 'image: nope'
  reg:
    image: localhost:5000/x/y@sha256:00
    labels:
      image: zzz
  plain:
    image: 'busybox:1'
volumes:
  data:
    image: not-a-service
version: '2.4'
";
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(
        v1_images_from_config("Stackd.Eng", &lines),
        vec![
            "stackd-test/busybox:1",
            "stackdeng_built",
            "localhost:5000/x/y@sha256:00",
            "busybox:1"
        ]
    );
}

#[test]
fn failure_messages_say_what_happened() {
    let e = ComposeError::Failed {
        code: Some(1),
        signal: None,
        last_line: "no such service: x".into(),
    };
    assert_eq!(
        e.to_string(),
        "compose exited with code 1: no such service: x"
    );
    let e = ComposeError::Failed {
        code: None,
        signal: Some(9),
        last_line: String::new(),
    };
    assert_eq!(e.to_string(), "compose was killed by signal 9: (no output)");
}

#[tokio::test]
async fn docker_detects_compose() {
    let Some(compose) = testing::compose().await else {
        return;
    };
    let described = compose.describe();
    assert!(described.contains("compose"), "{described}");
    assert!(described.chars().any(|c| c.is_ascii_digit()), "{described}");
    // Whatever `auto` found, asking for that flavour explicitly agrees.
    let again = match compose.program() {
        [one] if one == "docker-compose" => Compose::detect(ComposeChoice::V1).await,
        _ => Compose::detect(ComposeChoice::V2).await,
    }
    .unwrap();
    assert_eq!(again.flavor(), compose.flavor());
}

#[tokio::test]
async fn missing_compose_is_reported() {
    let err = probe(&["/nonexistent/docker-compose"]).await.err().unwrap();
    assert!(err.contains("could not run"), "{err}");
    let compose = Compose {
        program: vec!["/nonexistent/docker-compose".into()],
        flavor: ComposeFlavor::V1,
        version: "1.29.2".into(),
        runner: None,
    };
    let inv = Invocation {
        project: "stackdengspawn".into(),
        dir: std::env::temp_dir(),
        file: "compose.yaml".into(),
        args: vec!["ps".into()],
    };
    let err = compose
        .run(
            &inv,
            &|_| {},
            &CancellationToken::new(),
            Duration::from_secs(5),
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ComposeError::Spawn { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/docker-compose"),
        "{err}"
    );
}

#[tokio::test]
async fn docker_up_streams_output_and_the_container_is_listed() {
    let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await) else {
        return;
    };
    testing::test_image();
    let project = Project::new(&compose, "up", &sleeper("app", 600));
    let lines = Mutex::new(Vec::<String>::new());
    compose
        .run(
            &project.invocation(&["up", "-d"]),
            &|l| lines.lock().unwrap().push(l.to_string()),
            &CancellationToken::new(),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let lines = lines.into_inner().unwrap();
    assert!(!lines.is_empty(), "no output from compose up");
    assert!(
        lines.iter().all(|l| !l.contains('\x1b')),
        "ANSI escapes in {lines:?}"
    );

    let containers = docker.list_containers(Some(&project.name)).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let c = &containers[0];
    assert_eq!(c.project, project.name);
    assert_eq!(c.service, "app");
    assert_eq!(c.number, Some(1));
    assert!(!c.oneoff);
    assert_eq!(c.image, testing::test_image());
    assert_eq!(c.state, ContainerState::Running);
    assert!(c.status.starts_with("Up"), "{}", c.status);
    assert_eq!(c.exit_code, None);
    assert!(c.pid.is_some() && c.started_at_usec.is_some());
    assert_eq!(c.finished_at_usec, None);
    assert_eq!(c.restart_policy, "no");
    assert_eq!(c.health, None);

    let all = docker.list_containers(None).await.unwrap();
    assert!(all.iter().any(|a| a.id == c.id));
    let again = docker.inspect(&c.id).await.unwrap().unwrap();
    assert_eq!(again.name, c.name);
    assert!(again.status.starts_with("Up"), "{}", again.status);
}

#[tokio::test]
async fn docker_failure_carries_the_last_line() {
    let Some(compose) = testing::compose().await else {
        return;
    };
    testing::test_image();
    let project = Project::new(&compose, "fail", &sleeper("app", 1));
    let err = compose
        .run(
            &project.invocation(&["up", "-d", "no-such-service"]),
            &|_| {},
            &CancellationToken::new(),
            Duration::from_secs(60),
        )
        .await
        .err()
        .unwrap();
    let ComposeError::Failed {
        code, last_line, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*code, Some(1));
    assert!(last_line.contains("no-such-service"), "{err}");
}

#[tokio::test]
async fn docker_config_check_and_images() {
    let Some(compose) = testing::compose().await else {
        return;
    };
    let project = Project::new(&compose, "config", &sleeper("app", 1));
    let dir = project.dir.path();
    compose
        .config_check(&project.name, dir, &project.file)
        .await
        .unwrap();
    assert_eq!(
        compose
            .images(&project.name, dir, &project.file)
            .await
            .unwrap(),
        vec![testing::test_image().to_string()]
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "services:\n  app:\n    image: x\n    no_such_key: 1\n",
    )
    .unwrap();
    let err = compose
        .config_check(&project.name, dir, &bad)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("no_such_key"), "{err}");
}

/// Runs an attached `up` (it never ends on its own) and stops it with
/// `stop`, returning the result, how long stopping took and the pid.
async fn stop_attached_up(
    suffix: &str,
    cancel_after: Option<Duration>,
    timeout: Duration,
) -> Option<(ComposeError, Duration, u32)> {
    let compose = testing::compose().await?;
    testing::docker().await?;
    testing::test_image();
    let project = Project::new(&compose, suffix, &sleeper("app", 600));
    let inv = project.invocation(&["up"]);
    let cancel = CancellationToken::new();
    let pid = Mutex::new(None);
    let seen = Mutex::new(Vec::<String>::new());
    let started = tokio::sync::Notify::new();
    let mut on_line = |_: Source, l: &str| {
        seen.lock().unwrap().push(l.to_string());
        if l.contains("started") {
            started.notify_one();
        }
    };
    let on_spawn = |p: u32| *pid.lock().unwrap() = Some(p);
    let run = compose.exec(&inv, &mut on_line, &cancel, timeout, &on_spawn);
    let stopper = async {
        if let Some(after) = cancel_after {
            // Wait until the container really runs attached.
            let _ = tokio::time::timeout(Duration::from_secs(60), started.notified()).await;
            tokio::time::sleep(after).await;
            cancel.cancel();
        }
        Instant::now()
    };
    let (result, stop_sent) = tokio::join!(run, stopper);
    let took = stop_sent.elapsed();
    let pid = pid.lock().unwrap().expect("spawned");
    let lines = seen.into_inner().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("started")),
        "container output never arrived: {lines:?}"
    );
    Some((
        result.expect_err("an endless run must not succeed"),
        took,
        pid,
    ))
}

#[tokio::test]
async fn docker_cancel_stops_the_whole_process_group() {
    let Some((err, took, pid)) = stop_attached_up(
        "cancel",
        Some(Duration::from_millis(200)),
        Duration::from_secs(300),
    )
    .await
    else {
        return;
    };
    assert!(matches!(err, ComposeError::Cancelled), "{err}");
    // Compose stops on SIGTERM by itself: no need for SIGKILL.
    assert!(took < KILL_GRACE, "took {took:?}");
    assert!(
        process_gone(pid).await,
        "compose (pid {pid}) or its group survived"
    );
}

#[tokio::test]
async fn docker_timeout_stops_the_whole_process_group() {
    let Some((err, _, pid)) = stop_attached_up("timeout", None, Duration::from_secs(8)).await
    else {
        return;
    };
    assert!(
        matches!(err, ComposeError::TimedOut(d) if d == Duration::from_secs(8)),
        "{err}"
    );
    assert!(
        process_gone(pid).await,
        "compose (pid {pid}) or its group survived"
    );
}

/// A stand-in "compose" that is a shell script, for the process
/// handling alone (no Docker needed).
fn fake_compose(script: &str) -> Compose {
    Compose {
        program: vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "fake-compose".into(),
        ],
        flavor: ComposeFlavor::V1,
        version: "1.29.2".into(),
        runner: None,
    }
}

/// How a fake Compose running `script` fails.
async fn fake_failure(script: &str) -> ComposeError {
    fake_compose(script)
        .run(
            &fake_invocation(),
            &|_| {},
            &CancellationToken::new(),
            Duration::from_secs(30),
        )
        .await
        .expect_err("the fake Compose failed")
}

fn fake_invocation() -> Invocation {
    Invocation {
        project: "stackdengfake".into(),
        dir: std::env::temp_dir(),
        file: "compose.yaml".into(),
        args: vec!["up".into()],
    }
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_for_the_whole_group() {
    // Both the script and its child ignore SIGTERM (SIG_IGN survives exec).
    let compose = fake_compose("trap '' TERM; echo ready; sleep 600 & wait");
    let cancel = CancellationToken::new();
    let pid = Mutex::new(None);
    let on_spawn = |p: u32| *pid.lock().unwrap() = Some(p);
    let ready = tokio::sync::Notify::new();
    let mut on_line = |_: Source, l: &str| {
        if l == "ready" {
            ready.notify_one();
        }
    };
    let inv = fake_invocation();
    let run = compose.exec(
        &inv,
        &mut on_line,
        &cancel,
        Duration::from_secs(300),
        &on_spawn,
    );
    let stopper = async {
        ready.notified().await;
        cancel.cancel();
        Instant::now()
    };
    let (result, cancelled_at) = tokio::join!(run, stopper);
    let took = cancelled_at.elapsed();
    assert!(matches!(result, Err(ComposeError::Cancelled)), "{result:?}");
    assert!(
        took >= KILL_GRACE && took < KILL_GRACE + Duration::from_secs(3),
        "took {took:?}"
    );
    let pid = pid.lock().unwrap().unwrap();
    assert!(process_gone(pid).await);
}

#[tokio::test]
async fn leftovers_holding_the_output_are_killed() {
    let compose = fake_compose("echo done; echo warn >&2; sleep 600 &");
    let pid = Mutex::new(None);
    let on_spawn = |p: u32| *pid.lock().unwrap() = Some(p);
    let lines = Mutex::new(Vec::new());
    let mut on_line = |s: Source, l: &str| lines.lock().unwrap().push((s, l.to_string()));
    let started = Instant::now();
    compose
        .exec(
            &fake_invocation(),
            &mut on_line,
            &CancellationToken::new(),
            Duration::from_secs(60),
            &on_spawn,
        )
        .await
        .unwrap();
    assert!(started.elapsed() < DRAIN_GRACE + Duration::from_secs(2));
    // Two pipes keep no order between them: both lines, in any order.
    let mut got = lines.into_inner().unwrap();
    got.sort_by_key(|(_, l)| l.clone());
    assert_eq!(
        got,
        vec![
            (Source::Stdout, "done".to_string()),
            (Source::Stderr, "warn".to_string())
        ]
    );
    let pid = pid.lock().unwrap().unwrap();
    assert!(process_gone(pid).await);
}

#[tokio::test]
async fn exit_code_and_signal_are_reported() {
    let err = fake_failure("echo out; echo 'it broke' >&2; exit 4").await;
    assert!(
        matches!(&err, ComposeError::Failed { code: Some(4), signal: None, last_line } if last_line == "it broke"),
        "{err:?}"
    );
    let err = fake_failure("kill -9 $$").await;
    assert!(
        matches!(
            &err,
            ComposeError::Failed {
                code: None,
                signal: Some(9),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn cancelled_before_start_does_not_spawn() {
    let compose = Compose {
        program: vec!["/nonexistent/docker-compose".into()],
        flavor: ComposeFlavor::V1,
        version: "1.29.2".into(),
        runner: None,
    };
    let cancel = CancellationToken::new();
    cancel.cancel();
    let inv = Invocation {
        project: "stackdengpre".into(),
        dir: std::env::temp_dir(),
        file: "compose.yaml".into(),
        args: vec![],
    };
    let err = compose
        .run(&inv, &|_| {}, &cancel, Duration::from_secs(5))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ComposeError::Cancelled), "{err}");
}
