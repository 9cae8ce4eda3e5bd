use super::settle::{verdict, Verdict};
use super::*;

fn there(desired: &str, active: &str) -> Result<Option<PeerService>, PeerFailure> {
    Ok(Some(PeerService {
        desired_state: desired.into(),
        active_state: active.into(),
        sub_state: "running".into(),
        desired_since_usec: 1,
    }))
}

#[test]
fn a_move_in_doubt_is_settled_only_by_a_clear_answer() {
    assert_eq!(verdict(&there("running", "active")), Verdict::Moved);
    // Still starting there, or wanted but not up yet: ask again.
    assert_eq!(verdict(&there("running", "activating")), Verdict::Unknown);
    assert_eq!(verdict(&there("running", "failed")), Verdict::Unknown);
    // Its receive failed and handed it back, or it never got it.
    assert_eq!(verdict(&there("stopped", "inactive")), Verdict::NotThere);
    assert_eq!(verdict(&Ok(None)), Verdict::NotThere);
    let refused = |kind: &str| {
        Err(PeerFailure::Refused {
            kind: kind.into(),
            message: "x".into(),
        })
    };
    assert_eq!(verdict(&refused("NoSuchService")), Verdict::NotThere);
    assert_eq!(verdict(&refused("Unauthorized")), Verdict::Unknown);
    let silent = Err(PeerFailure::Unreachable("timeout".into()));
    assert_eq!(verdict(&silent), Verdict::Unknown);
}

#[test]
fn a_stopped_service_whose_containers_exited_0_does_not_run_there() {
    let svc = |desired: &str, active: &str, sub: &str| PeerService {
        desired_state: desired.into(),
        active_state: active.into(),
        sub_state: sub.into(),
        desired_since_usec: 0,
    };
    assert!(!svc("stopped", "active", "exited").runs());
    assert!(!svc("stopped", "inactive", "dead").runs());
    assert!(svc("stopped", "active", "running").runs());
    assert!(svc("stopped", "activating", "deploy").runs());
    assert!(svc("running", "active", "exited").runs());
    assert!(svc("running", "inactive", "dead").runs());
}

#[test]
fn the_newer_claim_wins_and_both_hosts_agree() {
    let cases = [
        ((20, "a"), (10, "c"), true),
        ((10, "a"), (20, "c"), false),
        // auto_start (0) loses to any decision.
        ((0, "a"), (5, "c"), false),
        // Equally old: the smaller host name.
        ((7, "a"), (7, "c"), true),
        ((7, "c"), (7, "a"), false),
        ((0, "b"), (0, "a"), false),
    ];
    for (mine, theirs, wins) in cases {
        assert_eq!(claim_wins(mine, theirs), wins, "{mine:?} vs {theirs:?}");
        // The other host computes the opposite: exactly one keeps it.
        assert_eq!(claim_wins(theirs, mine), !wins, "{theirs:?} vs {mine:?}");
    }
}

#[test]
fn doubt_comes_after_the_heartbeat_would_call_the_host_lost() {
    let peer = PeerConfig {
        listen: String::new(),
        token_file: "/t".into(),
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
        tls_pin_sha256: None,
        timeout: Duration::from_secs(2),
        heartbeat: Duration::from_secs(5),
    };
    assert_eq!(doubt_after(&peer), Duration::from_secs(17));
}

// ---------------------------------------------------------------------------
// The rule and the settling on a real core: an in-memory store, no engine
// (Docker is away, so whatever passes the hand-off rule stops at that), and
// the other hosts faked.
// ---------------------------------------------------------------------------

use std::path::Path;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::config::LoadOptions;
use crate::control::tests::peers::FakePeers;
use crate::events::Alert;
use crate::store::{DesiredSource, Store};
use crate::world::World;

/// Host a, this one, and b, which the fake answers for; `web` is a's
/// service of one host, `both` runs on both by design.
const CLUSTER: &str = r#"host = "a"
compose_dir = "/nonexistent/stackd-handoff-tests"

[hosts.a]
peer = "http://127.0.0.1:9"
[hosts.b]
peer = "http://127.0.0.2:9"

[peer]
token_file = "/nonexistent/stackd-handoff-tests/peer.token"

[services.web]
host = "a"

[services.both]
host = ["a", "b"]
"#;

/// b's peer URL in [`CLUSTER`].
const B: &str = "http://127.0.0.2:9";

/// What host b says of `web` when asked.
enum BSays {
    /// Wanted `desired` since `since_usec`, and `active`.
    Wants(&'static str, &'static str, u64),
    /// It does not manage it.
    Nothing,
    /// It does not answer (connection refused).
    Down,
}
use BSays::{Down, Nothing, Wants};

/// How many times a asked b about a service.
fn asked(b: &FakePeers) -> usize {
    b.calls()
        .iter()
        .filter(|c| c.starts_with("service "))
        .count()
}

/// The origin of the requests these tests make.
fn by_test() -> Origin {
    Origin::Other("test".into())
}

/// Host a's core, with b answering `answer`; the receiver sees its alerts.
fn host_a(answer: BSays) -> (Control, Arc<FakePeers>, broadcast::Receiver<Event>) {
    let cfg = crate::config::parse_str(
        CLUSTER,
        Path::new("/cfg/stackd.toml"),
        &LoadOptions::default(),
        false,
    )
    .unwrap();
    let events = crate::events::channel();
    let rx = events.subscribe();
    let store = Arc::new(Store::open_in_memory().unwrap());
    let control = Control::new(
        cfg,
        LoadOptions::default(),
        store,
        World::new(crate::engine::Engine::Docker),
        events,
        "boot".into(),
    );
    let b = FakePeers::new();
    match answer {
        Wants(desired, active, since) => b.set_service_since(B, "web", desired, active, since),
        Nothing => {}
        Down => b.set_down(B, true),
    }
    control.set_peers(b.clone());
    (control, b, rx)
}

/// The alerts of `kind` published so far.
fn alerts(rx: &mut broadcast::Receiver<Event>, kind: &str) -> Vec<Alert> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Alert(a) = e {
            if a.kind == kind {
                out.push(a);
            }
        }
    }
    out
}

/// The one alert of `kind` published so far.
#[track_caller]
fn one_alert(rx: &mut broadcast::Receiver<Event>, kind: &str) -> Alert {
    let mut all = alerts(rx, kind);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// Host a with a move of `web` to b in doubt, settled once b answers
/// `answer`.
async fn settled(answer: BSays) -> (Control, broadcast::Receiver<Event>) {
    let (a, _, rx) = host_a(answer);
    a.store().set_move_in_doubt("web", "b").unwrap();
    a.settle("b", false).await;
    (a, rx)
}

/// What `stackctl status web` says of its desired state on a.
fn desired(control: &Control, name: &str) -> String {
    let s = control.service(name).unwrap();
    format!("{} (set by {})", s.desired.as_str(), s.desired_source)
}

#[tokio::test]
async fn a_start_is_refused_while_a_peer_runs_it_even_forced() {
    let (a, _, _) = host_a(Wants("running", "active", 1));
    for force in [false, true] {
        let e = a
            .request(Op::Start, "web", &by_test(), force)
            .await
            .unwrap_err();
        let ControlError::Conflict(m) = e else {
            panic!("expected a conflict, got {e:?}")
        };
        assert!(m.contains("web runs on b (desired running, active)"), "{m}");
    }
    assert_eq!(a.store().desired("web").unwrap(), None, "nothing stored");
    // A person's restart and update make it run too.
    for op in [Op::Restart, Op::Update] {
        let e = a.request(op, "web", &by_test(), false).await.unwrap_err();
        assert!(matches!(e, ControlError::Conflict(_)), "{op:?}: {e:?}");
    }
}

#[tokio::test]
async fn a_peer_that_does_not_answer_blocks_a_start_unless_forced() {
    let (a, _, _) = host_a(Down);
    let e = a
        .request(Op::Start, "web", &by_test(), false)
        .await
        .unwrap_err();
    let ControlError::PeerUnreachable(m) = e else {
        panic!("expected the peer unreachable, got {e:?}")
    };
    assert!(
        m.contains("cannot ask b (no answer: connection refused) whether it runs web"),
        "{m}"
    );
    // Forced, the rule lets it through: what stops it here is only that
    // this test has no Docker.
    let e = a
        .request(Op::Start, "web", &by_test(), true)
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::DockerUnavailable(_)), "{e:?}");
}

#[tokio::test]
async fn a_peer_that_stopped_it_lets_the_start_through() {
    for there in [Wants("stopped", "inactive", 1), Nothing] {
        let (a, b, _) = host_a(there);
        let e = a
            .request(Op::Start, "web", &by_test(), false)
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::DockerUnavailable(_)), "{e:?}");
        assert_eq!(asked(&b), 1);
    }
}

#[tokio::test]
async fn a_service_of_several_hosts_asks_nobody() {
    let (a, b, _) = host_a(Wants("running", "active", 1));
    let e = a
        .request(Op::Start, "both", &by_test(), false)
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::DockerUnavailable(_)), "{e:?}");
    // A stop never asks either.
    let _ = a.request(Op::Stop, "web", &by_test(), false).await;
    assert_eq!(asked(&b), 0);
}

#[tokio::test]
async fn a_move_that_cannot_be_is_refused_at_once_and_changes_nothing() {
    let (a, _, _) = host_a(Nothing);
    let refused = |r: Result<TaskRecord, ControlError>| match r {
        Err(ControlError::InvalidArgument(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let m = refused(a.migrate("web", "a", false, &by_test()).await);
    assert!(m.contains("web is on a already"), "{m}");
    let m = refused(a.migrate("both", "b", false, &by_test()).await);
    assert!(m.contains("only a service of one host moves"), "{m}");
    let m = refused(a.migrate("web", "c", false, &by_test()).await);
    assert!(
        m.contains("no host c with a peer URL in [hosts] (others: b)"),
        "{m}"
    );
    let e = a.migrate("web", "b", false, &by_test()).await.unwrap_err();
    assert!(matches!(e, ControlError::DockerUnavailable(_)), "{e:?}");
    assert_eq!(a.store().desired("web").unwrap(), None, "nothing stored");
    assert!(!a.queue().busy("web"), "nothing queued");
}

#[tokio::test]
async fn a_move_in_doubt_that_completed_leaves_the_service_stopped_here() {
    let (a, mut rx) = settled(Wants("running", "active", 1)).await;
    assert!(!a.store().desired("web").unwrap().unwrap().in_doubt());
    assert_eq!(desired(&a, "web"), "stopped (set by migrate to b)");
    let alert = one_alert(&mut rx, "migrate-settled");
    assert_eq!(alert.summary, "web runs on b: its move from a completed");
}

#[tokio::test]
async fn a_move_in_doubt_that_did_not_happen_starts_the_service_here_again() {
    // b does not manage it (what the peer client makes of NoSuchService),
    // or handed it back.
    for not_there in [Nothing, Wants("stopped", "inactive", 1)] {
        let (a, mut rx) = settled(not_there).await;
        assert!(!a.store().desired("web").unwrap().unwrap().in_doubt());
        assert_eq!(desired(&a, "web"), "running (set by migrate from b)");
        let alert = one_alert(&mut rx, "migrate-settled");
        assert_eq!(alert.severity, Severity::Warning);
        assert_eq!(
            alert.summary,
            "web's move to b did not happen; it starts on a again"
        );
        assert!(alert.body.contains("(task "), "{}", alert.body);
    }
}

#[tokio::test]
async fn a_move_in_doubt_stays_so_until_the_answer_is_clear() {
    for unclear in [Wants("running", "activating", 1), Down] {
        let (a, mut rx) = settled(unclear).await;
        assert!(a.store().desired("web").unwrap().unwrap().in_doubt());
        assert!(alerts(&mut rx, "migrate-settled").is_empty());
    }
}

#[tokio::test]
async fn on_heal_the_older_claim_stops_and_says_who_keeps_it() {
    // a's claim: a person's start now; b's is newer still.
    let (a, _, mut rx) = host_a(Wants("running", "active", u64::MAX));
    a.store()
        .set_desired("web", DesiredState::Running, DesiredSource::User)
        .unwrap();
    // Without a reunion (b had not been lost) nothing is compared.
    a.settle("b", false).await;
    assert_eq!(a.desired_state("web"), DesiredState::Running);
    a.settle("b", true).await;
    assert_eq!(desired(&a, "web"), "stopped (set by migrate to b)");
    assert_eq!(
        one_alert(&mut rx, "handoff-conflict").summary,
        "web was wanted running on a and on b; b keeps it, a stops it"
    );
}

#[tokio::test]
async fn on_heal_the_newer_claim_keeps_the_service() {
    // b wants it by its auto_start only: any decision here is newer.
    let (a, _, mut rx) = host_a(Wants("running", "active", 0));
    a.store()
        .set_desired("web", DesiredState::Running, DesiredSource::User)
        .unwrap();
    a.settle("b", true).await;
    assert_eq!(a.desired_state("web"), DesiredState::Running);
    assert!(alerts(&mut rx, "handoff-conflict").is_empty());
}
