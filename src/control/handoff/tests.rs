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
