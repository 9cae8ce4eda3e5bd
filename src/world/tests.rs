use super::*;
use crate::engine::EngineEvent;

fn event(action: &str, at_usec: u64) -> EngineEvent {
    EngineEvent {
        project: "p".into(),
        service: "main".into(),
        container_id: "c1".into(),
        container_name: "p-main-1".into(),
        action: action.into(),
        detail: None,
        exit_code: (action == "die").then_some(137),
        // Docker's clock: well past any task's end (none ran here).
        time_usec: 1_800_000_000_000_000 + at_usec,
    }
}

#[test]
fn a_die_is_seen_with_the_evidence_that_came_before_it() {
    let w = World::new();
    assert!(!w.die_seen("c1"));
    // An OOM kill: Docker's `oom` comes before the `die`.
    w.note_event(&event("oom", 1_000));
    w.note_event(&event("die", 2_000));
    assert!(w.die_seen("c1") && w.oom_seen("c1"));
    // Started again: the next death is a new one.
    w.note_event(&event("start", 3_000));
    assert!(!w.die_seen("c1") && !w.oom_seen("c1"));
    // A person's `docker kill`: `kill`, then `die`.
    w.note_event(&event("kill", 4_000));
    w.note_event(&event("die", 5_000));
    assert!(w.die_seen("c1"));
    assert_eq!(
        w.outside_stop("p").map(|o| o.door),
        Some("docker kill"),
        "the kill before the die is a person's"
    );
    w.note_event(&event("destroy", 6_000));
    assert!(!w.die_seen("c1"));
    w.note_event(&event("die", 7_000));
    w.forget_intent();
    assert!(!w.die_seen("c1"), "the engine went away: start afresh");
}
