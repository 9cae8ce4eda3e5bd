use super::*;

fn state(active: &str, sub: &str, result: &str, code: i32, status: i32) -> UnitState {
    UnitState {
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: sub.into(),
        result: result.into(),
        exec_main_code: code,
        exec_main_status: status,
        main_pid: if active == "active" { 42 } else { 0 },
        ..UnitState::default()
    }
}

#[test]
fn a_running_unit_is_a_running_container_with_its_pid() {
    let c = state("active", "running", "success", 0, 0)
        .container("web", "stackd-web.service")
        .unwrap();
    assert_eq!(c.state, ContainerState::Running);
    assert_eq!(c.pid, Some(42));
    assert_eq!(c.exit_code, None);
    assert_eq!(
        crate::world::classify(std::slice::from_ref(&c)),
        crate::world::Observed::Running
    );
}

#[test]
fn a_killed_unit_is_a_failed_container_with_the_engine_s_exit_code() {
    let c = state("failed", "failed", "signal", CLD_KILLED, 9)
        .container("web", "stackd-web.service")
        .unwrap();
    assert_eq!(c.exit_code, Some(137));
    assert!(crate::world::any_failed(std::slice::from_ref(&c)));
    assert_eq!(
        crate::world::classify(std::slice::from_ref(&c)),
        crate::world::Observed::Stopped
    );
    let c = state("failed", "failed", "exit-code", CLD_EXITED, 3)
        .container("web", "u")
        .unwrap();
    assert_eq!(c.exit_code, Some(3));
    let c = state("failed", "failed", "oom-kill", CLD_KILLED, 9)
        .container("web", "u")
        .unwrap();
    assert!(c.oom_killed);
}

#[test]
fn only_a_clean_end_of_a_running_unit_reads_as_a_person_s_stop() {
    let running = state("active", "running", "success", 0, 0);
    let stopped = state("inactive", "dead", "success", CLD_KILLED, 15);
    let exited = state("inactive", "dead", "success", CLD_EXITED, 0);
    let collected = UnitState {
        load_state: "not-found".into(),
        active_state: "inactive".into(),
        ..UnitState::default()
    };
    let crashed = state("failed", "failed", "signal", CLD_KILLED, 9);
    let oom = state("failed", "failed", "oom-kill", CLD_KILLED, 9);
    // (from, to) → a clean end, and how it reads
    let cases = [
        (&running, &stopped, Some("systemctl stop")),
        (&running, &collected, Some("systemctl stop")),
        (&running, &exited, Some("exit 0 under systemd")),
        (&running, &crashed, None),
        (&running, &oom, None),
        (&stopped, &collected, None),
        (&crashed, &collected, None),
        (&running, &running, None),
    ];
    for (i, (was, now, want)) in cases.into_iter().enumerate() {
        let got = now.ends_cleanly(was).then(|| now.clean_end());
        assert_eq!(got, want, "case {i}: {was:?} → {now:?}");
    }
}

#[test]
fn a_stopped_unit_is_stopped_not_a_finished_one_shot() {
    let c = state("inactive", "dead", "success", CLD_EXITED, 0)
        .container("web", "u")
        .unwrap();
    assert!(!crate::world::is_complete(&c));
    assert!(!crate::world::any_failed(std::slice::from_ref(&c)));
    assert_eq!(
        crate::world::classify(std::slice::from_ref(&c)),
        crate::world::Observed::Stopped
    );
}

#[test]
fn a_stop_s_sigterm_is_no_failure() {
    let c = state("inactive", "dead", "success", CLD_KILLED, 15)
        .container("web", "u")
        .unwrap();
    assert_eq!(c.exit_code, Some(0));
    assert!(!crate::world::any_failed(std::slice::from_ref(&c)));
}

/// A manager that is only ever handed over, never called: what the
/// waiting is about is the connection's arrival.
struct Connected;

impl UnitManager for Connected {
    fn start<'a>(&'a self, _: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>> {
        unreachable!("not called")
    }
    fn stop<'a>(&'a self, _: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>> {
        unreachable!("not called")
    }
    fn restart<'a>(&'a self, _: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>> {
        unreachable!("not called")
    }
    fn state<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<UnitState, UnitError>> {
        unreachable!("not called")
    }
    fn follow(&self, _: String, _: OnChange) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
    fn user(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_task_before_the_connection_waits_for_it() {
    let units = Units::new();
    assert!(units.manager().is_err());
    let waiting = tokio::spawn({
        let units = units.clone();
        async move { units.wait_manager(Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    units.set_manager(Arc::new(Connected));
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken when the connection came")
        .unwrap();
    assert!(got.is_ok());
    // Connected already: no wait at all.
    assert!(units.wait_manager(Duration::ZERO).await.is_ok());
}

#[tokio::test]
async fn without_a_connection_the_wait_ends_with_the_reason() {
    let units = Units::new();
    units.set_error("systemd is not running".into());
    match units.wait_manager(Duration::from_millis(20)).await {
        Err(UnitError::Unavailable(why)) => assert_eq!(why, "systemd is not running"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn a_unit_systemd_does_not_know_is_absent() {
    let mut s = state("inactive", "dead", "success", 0, 0);
    s.load_state = "not-found".into();
    assert!(s.container("web", "u").is_none());
}
