//! `stackctl apply --all-hosts` (issue 15, item 2): after a service's
//! `host =` changes, it is stopped on the host it leaves before it starts
//! on the host it goes to, read from Docker's own timestamps. Two daemons
//! on loopback addresses sharing this machine's engine (`TwoHosts`): the
//! Compose service is named after the host that started it.
//!
//! stackctl asks its own daemon (`Manager.ApplyAllHosts`), which holds the
//! cluster file and the peer token: the caller reads neither, so the
//! applies here name a cluster file that does not exist.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const TOKEN: &str = "cluster-apply-test-token-0123456789abcdef";

/// Docker's own record of `project`'s containers since `since` (unix
/// seconds): (nanoseconds, action, Compose service) of each `start` and
/// `die` event. Events, not `inspect`: the container that stopped may be
/// gone by the time the test looks.
fn container_events(project: &str, since: u64) -> Vec<(u128, String, String)> {
    // `--until` counts in whole seconds: the next second, so that what
    // happened in this one is included (docker waits for it to come).
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let out = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        "type=container",
        "--format",
        "{{.TimeNano}} {{.Action}} {{index .Actor.Attributes \"com.docker.compose.service\"}}",
    ])
    .expect_success();
    out.stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_string(),
                f.get(2)?.to_string(),
            ))
        })
        .filter(|(_, a, _)| a == "start" || a == "die")
        .collect()
}

fn runs(project: &str, svc: &str) -> bool {
    containers(project)
        .iter()
        .any(|c| c.service == svc && c.state == "running")
}

#[test]
fn docker_a_placement_change_stops_the_old_host_before_the_new_one_starts() {
    if !have_docker() || !have_bus() {
        return;
    }
    let names = TestEnv::new("cluster_apply_names");
    let (mv, stay) = (names.project("mv"), names.project("stay"));
    let pair = TwoHosts::start(
        TOKEN,
        "cluster_apply",
        &[
            (
                &mv,
                "stop-first",
                host_sleeper("a", None, None),
                host_sleeper("b", None, None),
            ),
            (
                &stay,
                "stop-first",
                host_sleeper("a", None, None),
                host_sleeper("b", None, None),
            ),
        ],
    );
    pair.ctl(0, &["start", &mv, &stay]).expect_success();
    assert!(runs(&mv, "main_a"));

    // stackctl with a cluster file it cannot read: the daemon's is used.
    let ctl = |args: &[&str]| {
        let mut all = vec!["-c", "/nonexistent/stackd.toml"];
        all.extend(args);
        stackctl(&pair.envs[0], &pair.buses[0], &all)
    };

    // Nothing moves while the placement is unchanged.
    let out = ctl(&["apply", "--all-hosts", "--dry-run"]).expect_success();
    assert!(!out.stdout.contains(&mv), "{out}");

    // mv goes to b in both copies of the cluster file.
    let section = format!("[services.{mv}]\nhost = \"a\"");
    for (i, path) in pair.clusters.iter().enumerate() {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(&section));
        let moved = text.replace(&section, &format!("[services.{mv}]\nhost = \"b\""));
        std::fs::write(path, moved).unwrap();
        pair.ctl(i, &["reload"]).expect_success();
    }
    assert!(runs(&mv, "main_a"), "a reload alone moves nothing");

    // The plan: stop on a, preflight and start on b; stay is left alone.
    let out = ctl(&["apply", "--all-hosts", "--dry-run"]).expect_success();
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains(&mv)).collect();
    let at = |host: &str, action: &str| {
        lines
            .iter()
            .position(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[0] == host && f[1] == action && f[2] == mv
            })
            .unwrap_or_else(|| panic!("no {action} on {host} in the plan: {out}"))
    };
    assert!(at("a", "stop") < at("b", "start"), "{out}");
    assert!(at("b", "preflight") < at("b", "start"), "{out}");
    assert!(!out.stdout.contains(&stay), "{out}");
    assert!(runs(&mv, "main_a"), "a dry run changes nothing");
    assert!(!runs(&mv, "main_b"));

    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let out = ctl(&["apply", "--all-hosts"]).expect_success();
    assert!(out.stdout.contains(&format!("a: stopped {mv}")), "{out}");
    assert!(out.stdout.contains(&format!("b: started {mv}")), "{out}");
    assert!(runs(&mv, "main_b"), "{out}");
    assert!(!runs(&mv, "main_a"), "{out}");
    assert!(runs(&stay, "main_a"), "stay stays on a");

    // Docker's own clock: a's container died before b's started.
    let seen = container_events(&mv, since);
    let when = |action: &str, svc: &str| {
        seen.iter()
            .filter(|(_, a, s)| a == action && s == svc)
            .map(|(t, _, _)| *t)
            .next_back()
            .unwrap_or_else(|| panic!("no {action} of {svc}: {seen:?}"))
    };
    let (a_died, b_started) = (when("die", "main_a"), when("start", "main_b"));
    println!(
        "figures: a's container died {:.3} s before b's started",
        (b_started as f64 - a_died as f64) / 1e9
    );
    assert!(a_died < b_started, "{seen:?}");
    let b = pair
        .ctl(1, &["--output", "json", "status", &mv])
        .expect_success();
    assert!(b.stdout.contains("\"desired_state\": \"running\""), "{b}");
}
