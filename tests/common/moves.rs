//! What a person sees of a move between two hosts, checked alike on the
//! simulator (`tests/sim.rs`) and on Docker (`tests/peer.rs`).

use super::Output;

/// Moves `name` from host a to host b with `stackctl migrate` on a, where
/// `ctl(i, args)` runs `stackctl` against host `i` (0 is a, 1 is b), and
/// checks what a person sees: every step in the move's task log, and
/// `status` on both hosts (stopped by the move on a, running and active,
/// set by the move, on b). Returns the migrate's output.
#[track_caller]
pub fn move_a_to_b(ctl: impl Fn(usize, &[&str]) -> Output, name: &str) -> Output {
    let out = ctl(0, &["migrate", name, "b"]).expect_success();
    for step in [
        "moving",
        "b: preflight, then pull",
        "a: stopping",
        "b: starting",
        "runs and is healthy",
        &format!("{name} moved from a to b"),
    ] {
        assert!(out.stdout.contains(step), "no {step:?} in the log: {out}");
    }
    let a = ctl(0, &["status", name]);
    assert!(
        a.stdout.contains("Desired: stopped (set by migrate to b)"),
        "{a}"
    );
    let b = ctl(1, &["status", name]).expect_success();
    assert!(
        b.stdout
            .contains("Desired: running (set by migrate from a)"),
        "{b}"
    );
    assert!(b.stdout.contains("Active: active"), "{b}");
    out
}

/// A stop-first move of `name` from a to b that fails after a stopped it
/// (b could not start it, or it never got healthy there): `stackctl
/// migrate` fails, its log says a stopped it and runs it again, and
/// `status` says a runs it as a person wanted while b, which handed it
/// back, keeps it stopped. Returns the migrate's log and error together.
#[track_caller]
pub fn failed_move_a_to_b(ctl: impl Fn(usize, &[&str]) -> Output, name: &str) -> String {
    let out = ctl(0, &["migrate", name, "b"]).expect_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("a: stopping"), "{out}");
    assert!(text.contains(&format!("{name} runs on a again")), "{out}");
    let a = ctl(0, &["status", name]).expect_success();
    assert!(a.stdout.contains("Desired: running (set by user)"), "{a}");
    let b = ctl(1, &["status", name]);
    assert!(
        b.stdout.contains("Desired: stopped (set by migrate to a)"),
        "{b}"
    );
    text
}
