use super::*;

fn policy() -> RestartConfig {
    RestartConfig {
        on_failure: true,
        max_restarts: 3,
        window: Duration::from_secs(600),
        backoff_min: Duration::from_secs(5),
        backoff_max: Duration::from_secs(60),
        manual_stop: ManualStop::Respect,
        retry_interval: Duration::from_secs(60),
    }
}

#[test]
fn a_stop_outside_stackd_is_respected_unless_reverted() {
    let mut e = ev();
    e.exit_code = Some(137);
    e.stopped_outside = Some("docker stop".into());
    let d = diagnose(&e, &policy());
    assert_eq!(d.cause, Cause::StoppedOutside, "{}", d.summary);
    assert!(d.action.is_none());
    assert!(d.summary.contains("(docker stop)"), "{}", d.summary);
    let revert = RestartConfig {
        manual_stop: ManualStop::Revert,
        ..policy()
    };
    let d = diagnose(&e, &revert);
    assert_eq!(d.cause, Cause::Exited, "{}", d.summary);
    assert!(matches!(d.action, Action::Restart { .. }));
    // A person's stop task or desired state still comes first.
    e.desired = DesiredState::Stopped;
    assert_eq!(diagnose(&e, &policy()).cause, Cause::DesiredStopped);
}

pub(super) fn ev() -> Evidence {
    let mut e = Evidence::new("web", DesiredState::Running);
    e.container = Some("web-app-1".into());
    e.retries = 3;
    e.budget = Budget {
        restarts_in_window: 0,
        backoff: Duration::from_secs(5),
    };
    e
}

const D5: Duration = Duration::from_secs(5);

#[test]
fn rule_table() {
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Evidence)>,
        Cause,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("nothing wrong", Box::new(|_| {}), Cause::Healthy, "none"),
        (
            "exited non-zero → restart",
            Box::new(|e| e.exit_code = Some(2)),
            Cause::Exited,
            "restart",
        ),
        (
            "long-running exited 0 → restart",
            Box::new(|e| e.exit_code = Some(0)),
            Cause::Exited,
            "restart",
        ),
        (
            "one-shot exited 0 → complete",
            Box::new(|e| {
                e.exit_code = Some(0);
                e.one_shot = true;
                e.failed_probes = 9;
            }),
            Cause::Completed,
            "none",
        ),
        (
            "one-shot exited 1 → restart",
            Box::new(|e| {
                e.exit_code = Some(1);
                e.one_shot = true;
            }),
            Cause::Exited,
            "restart",
        ),
        (
            "unhealthy below retries → none",
            Box::new(|e| e.failed_probes = 2),
            Cause::Healthy,
            "none",
        ),
        (
            "unhealthy for retries probes → restart",
            Box::new(|e| e.failed_probes = 3),
            Cause::Unhealthy,
            "restart",
        ),
        (
            "OOM → restart",
            Box::new(|e| {
                e.exit_code = Some(137);
                e.oom_killed = true;
            }),
            Cause::OomKilled,
            "restart",
        ),
        (
            "container missing → recreate",
            Box::new(|e| e.container_missing = true),
            Cause::ContainerMissing,
            "recreate",
        ),
        (
            "added by a reload, never taken up → wait for apply, missing or exited",
            Box::new(|e| {
                e.container_missing = true;
                e.exit_code = Some(0);
                e.not_applied = true;
            }),
            Cause::NotApplied,
            "none",
        ),
        (
            "network missing → wait and retry",
            Box::new(|e| e.network_missing = Some("web_default".into())),
            Cause::NetworkMissing,
            "retry",
        ),
        (
            "image missing → wait and retry",
            Box::new(|e| e.image_missing = Some("nginx:1".into())),
            Cause::ImageMissing,
            "retry",
        ),
        (
            "pull failed → wait and retry, never give up",
            Box::new(|e| {
                e.image_missing = Some("nginx:1".into());
                e.pull_failed = Some("no registry".into());
            }),
            Cause::PullFailed,
            "retry",
        ),
        (
            "port allocated → wait for it, naming the holder",
            Box::new(|e| {
                e.exit_code = Some(1);
                e.port_allocated = Some(PortConflict {
                    port: 8080,
                    holder: Some("process 42 (nginx) listening on 0.0.0.0:8080".into()),
                });
            }),
            Cause::PortAllocated,
            "retry",
        ),
        (
            "bind source missing → wait and retry",
            Box::new(|e| {
                e.exit_code = Some(127);
                e.bind_missing = Some("/mnt/late".into());
            }),
            Cause::BindSourceMissing,
            "retry",
        ),
        (
            "desired stopped → never act",
            Box::new(|e| {
                e.desired = DesiredState::Stopped;
                e.exit_code = Some(1);
                e.container_missing = true;
            }),
            Cause::DesiredStopped,
            "none",
        ),
        (
            "user task active → never act",
            Box::new(|e| {
                e.user_task_active = true;
                e.exit_code = Some(1);
                e.port_allocated = Some(PortConflict {
                    port: 1,
                    holder: None,
                });
            }),
            Cause::UserTaskActive,
            "none",
        ),
    ];
    for (what, change, cause, action) in cases {
        let mut e = ev();
        change(&mut e);
        let d = diagnose(&e, &policy());
        let got = match d.action {
            Action::Restart { delay } => {
                assert_eq!(delay, D5, "{what}");
                "restart"
            }
            Action::Recreate { delay } => {
                assert_eq!(delay, D5, "{what}");
                "recreate"
            }
            Action::PullThenRecreate { .. } => "pull",
            Action::RetryLater => "retry",
            Action::None { .. } => "none",
            Action::GiveUp { .. } => "give up",
        };
        assert_eq!((d.cause, got), (cause, action), "{what}: {}", d.summary);
        assert!(!d.summary.is_empty(), "{what}");
    }
}

#[test]
fn oom_warning_names_limit_and_peak() {
    let mut e = ev();
    e.exit_code = Some(137);
    e.oom_killed = true;
    e.memory_limit = Some(256 * 1024 * 1024);
    e.memory_peak = Some(255 * 1024 * 1024);
    let d = diagnose(&e, &policy());
    assert_eq!(d.action, Action::Restart { delay: D5 });
    assert_eq!(d.warnings.len(), 1);
    assert!(d.warnings[0].contains("limit 256 MiB"), "{}", d.warnings[0]);
    assert!(
        d.warnings[0].contains("peak use 255 MiB"),
        "{}",
        d.warnings[0]
    );
}

#[test]
fn port_conflict_names_the_holder() {
    let mut e = ev();
    e.port_allocated = Some(PortConflict {
        port: 8080,
        holder: Some("process 42 (nginx) listening on 0.0.0.0:8080".into()),
    });
    let d = diagnose(&e, &policy());
    assert_eq!(d.cause.outcome(), "waiting");
    assert!(d.summary.contains("8080"), "{}", d.summary);
    assert!(d.summary.contains("process 42 (nginx)"), "{}", d.summary);
}

#[test]
fn restart_off_leaves_failures_alone() {
    let mut e = ev();
    e.exit_code = Some(1);
    let d = diagnose(
        &e,
        &RestartConfig {
            on_failure: false,
            ..policy()
        },
    );
    assert_eq!(d.cause, Cause::RestartDisabled);
    assert!(d.action.is_none());
}

#[test]
fn crash_loop_backs_off_then_gives_up() {
    let t0 = Instant::now();
    let mut limiter = RestartLimiter::new(policy());
    let mut e = ev();
    e.exit_code = Some(1);
    // (seconds after t0 the failure is seen) → expected action
    let mut delays = Vec::new();
    for step in 0..3u64 {
        let now = t0 + Duration::from_secs(step * 10);
        let d = diagnose_with(&e, &policy(), &limiter, now);
        match d.action {
            Action::Restart { delay } => delays.push(delay.as_secs()),
            other => panic!("step {step}: {other:?}"),
        }
        limiter.record(now);
    }
    assert_eq!(delays, [5, 10, 20]);
    let now = t0 + Duration::from_secs(30);
    let d = diagnose_with(&e, &policy(), &limiter, now);
    assert_eq!(d.cause, Cause::CrashLoop);
    assert_eq!(d.cause.outcome(), "gave up");
    assert!(matches!(d.action, Action::GiveUp { .. }));
    assert!(d.summary.contains("3 times within 10m"), "{}", d.summary);
    // Once the window has passed the budget is back.
    let later = t0 + Duration::from_secs(20 + 600);
    assert!(limiter.allowed(later));
    let d = diagnose_with(&e, &policy(), &limiter, later);
    assert_eq!(d.action, Action::Restart { delay: D5 });
}

#[test]
fn backoff_table() {
    let t0 = Instant::now();
    // (restarts recorded, expected backoff in seconds); min 5, max 60
    let cases = [
        (0, 5),
        (1, 10),
        (2, 20),
        (3, 40),
        (4, 60),
        (10, 60),
        (40, 60),
    ];
    for (n, want) in cases {
        let mut l = RestartLimiter::new(RestartConfig {
            max_restarts: 100,
            ..policy()
        });
        for i in 0..n {
            l.record(t0 + Duration::from_millis(i));
        }
        assert_eq!(
            l.next_backoff(t0 + Duration::from_secs(1)),
            Duration::from_secs(want),
            "{n} restarts"
        );
    }
    let mut l = RestartLimiter::new(policy());
    l.record(t0);
    l.reset();
    assert_eq!(l.restarts_in_window(t0), 0);
}
