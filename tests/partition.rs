//! Hosts that lose each other (issue 15, item 1): three hosts, each a
//! network namespace with its own Docker engine and stackd, joined by a
//! bridge whose ports the test sets down and up (`common/netns.rs`).
//! Each scenario cuts one host's link at the worst moment of a move or a
//! start (the target after the stop of a stop-first move, with its start
//! succeeding or failing on its own; the source of an overlap move; a
//! third host while a start asks the hand-off rule, then a forced start
//! that conflicts), then heals it, and checks what users see: where the service
//! runs (read from each host's Docker), the task's log and result, the
//! alerts, and that once the hosts see each other again no two of them
//! want the service running.
//!
//! A sampler reads Docker on every host every 100 ms for the whole test
//! and counts the samples in which a service ran on two hosts at once; it
//! must count none. The one window left out is the overlap an `overlap`
//! move has by design (the target started, the source not yet stopped),
//! bounded by the source's `migrate` task.
//!
//! Heavy (root, three extra dockerds): `STACKD_HEAVY_TESTS=1`. The tests
//! run one at a time (a lock), each on its own three hosts.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/engine.rs"]
mod engine;
#[path = "common/netns.rs"]
mod netns;

use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use netns::{Host, Net};

/// One three-host world at a time: each runs three dockerds.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

use netns::TOKEN;

/// A service placed on host a, started by hand, moved with `handoff`.
fn service(name: &str, handoff: &str) -> String {
    format!(
        "[services.{name}]\nhost = \"a\"\nauto_start = false\nhandoff = \"{handoff}\"\nstart_timeout = \"30s\"\n\n"
    )
}

/// Three hosts a, b, c with `services` (cluster file text) and each
/// `(project, compose file)`, daemons started; None when skipped.
fn world(test: &str, services: &str, projects: &[(&str, String)]) -> Option<Net> {
    world_with(test, services, projects, |_| {})
}

/// [`world`], with `more` run on the hosts before their daemons start.
fn world_with(
    test: &str,
    services: &str,
    projects: &[(&str, String)],
    more: impl FnOnce(&Net),
) -> Option<Net> {
    if !heavy("the partition tests (three dockerds in network namespaces)")
        || !have_docker()
        || !have_bus()
    {
        return None;
    }
    let image = ensure_image();
    let mut net = Net::new(test, &["a", "b", "c"], image, services)?;
    for (p, text) in projects {
        net.compose(p, text);
    }
    more(&net);
    net.start();
    // Every host sees the two others before anything is asked.
    for h in &net.hosts {
        wait_until(
            Duration::from_secs(30),
            "every host to see the others",
            || {
                let rows = h.json(&["hosts"]);
                rows.as_array()
                    .is_some_and(|r| r.iter().all(|x| x["reachable"] == true))
            },
        );
    }
    Some(net)
}

/// The events of `kind` on host `h` (its peer endpoint, from inside its
/// namespace).
fn events(h: &Host, kind: &str, service: &str) -> Vec<serde_json::Value> {
    let body = h
        .peer_get("/v1/events?after=0&timeout=0", TOKEN)
        .unwrap_or_else(|| panic!("{}'s peer endpoint does not answer", h.name));
    let v: serde_json::Value = serde_json::from_str(&body).expect("events JSON");
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind && (service.is_empty() || e["service"] == service))
        .cloned()
        .collect()
}

/// `stackctl status NAME` on `h`, as JSON.
fn status(h: &Host, name: &str) -> serde_json::Value {
    h.json(&["status", name])[0].clone()
}

/// Where `name` runs now, by each host's Docker.
fn where_runs(net: &Net, name: &str) -> Vec<String> {
    net.hosts
        .iter()
        .filter(|h| h.running(name) > 0)
        .map(|h| h.name.clone())
        .collect()
}

/// The hosts whose stackd wants `name` running (desired state, as each
/// reports it).
fn wanted_on(net: &Net, name: &str) -> Vec<String> {
    net.hosts
        .iter()
        .filter(|h| {
            let out = h.ctl_here(&["--output", "json", "status", name]);
            out.success()
                && serde_json::from_str::<serde_json::Value>(&out.stdout)
                    .is_ok_and(|v| v[0]["desired_state"] == "running")
        })
        .map(|h| h.name.clone())
        .collect()
}

/// Runs `stackctl migrate NAME TO` on host a in a thread; the join handle
/// gives its output.
fn migrate_in_background(net: &Net, name: &str, to: &str) -> thread::JoinHandle<Output> {
    let a = net.host("a");
    let (cluster, bus, run_dir, netns) = (
        a.cluster.display().to_string(),
        a.bus.address().to_string(),
        a.env.run_dir(),
        a.engine.netns().to_string(),
    );
    let (name, to) = (name.to_string(), to.to_string());
    thread::spawn(move || {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{netns}"))
            .arg(env!("CARGO_BIN_EXE_stackctl"))
            .args(["--user", "-c", &cluster, "migrate", &name, &to])
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .env("XDG_RUNTIME_DIR", run_dir);
        run(&mut cmd, COMMAND_TIMEOUT)
    })
}

/// Polls `f` every 20 ms (tighter than `wait_until`: the cut must land in
/// a window of a few seconds).
#[track_caller]
fn wait_fast(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn docker_the_target_cut_in_the_middle_of_a_stop_first_move() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = "sf";
    // Healthy 2 s after its start: the window in which b is cut.
    let compose = host_sleeper("x", Some(2), None);
    let Some(net) = world("sf", &service(name, "stop-first"), &[(name, compose)]) else {
        return;
    };
    let (a, b) = (net.host("a"), net.host("b"));
    a.ctl(&["start", name]).expect_success();
    wait_until(Duration::from_secs(30), "sf to run on a", || {
        a.running(name) == 1
    });
    let mut sampler = net.sampler(&[name]);

    let moving = migrate_in_background(&net, name, "b");
    // Stopped on a, started on b, not yet healthy there: cut b.
    wait_fast(Duration::from_secs(60), "sf to start on b", || {
        b.running(name) == 1
    });
    net.cut("b");
    let cut_at = Instant::now();
    let out = moving.join().unwrap();
    let took = cut_at.elapsed();
    println!("migrate after the cut: {out}");
    assert!(!out.success(), "the move cannot be confirmed: {out}");
    assert!(out.stdout.contains("a: stopped"), "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("in doubt"), "{out}");
    assert!(
        text.contains("stackctl start --force sf"),
        "says what a person must do: {out}"
    );
    // Cut off, b finishes its half on its own: it runs there, not on a.
    wait_until(Duration::from_secs(30), "sf to be healthy on b", || {
        status(b, name)["health"] == "healthy"
    });
    assert_eq!(where_runs(&net, name), ["b"]);
    let s = status(a, name);
    assert_eq!(s["desired_state"], "stopped", "{s}");
    assert!(
        s["desired_source"]
            .as_str()
            .unwrap()
            .contains("migrate to b (in doubt)"),
        "{s}"
    );
    let doubt = events(a, "migrate-in-doubt", name);
    assert_eq!(doubt.len(), 1, "{doubt:?}");
    assert_eq!(doubt[0]["severity"], "warning");
    assert_eq!(doubt[0]["data"]["to"], "b", "{doubt:?}");
    assert!(
        doubt[0]["data"]["action"]
            .as_str()
            .unwrap()
            .contains("stackctl start --force sf"),
        "{doubt:?}"
    );

    // Healed: a asks b, learns the move completed, and says so.
    net.heal("b");
    wait_until(Duration::from_secs(30), "a to settle the move", || {
        !events(a, "migrate-settled", name).is_empty()
    });
    let settled = &events(a, "migrate-settled", name)[0];
    assert!(
        settled["summary"].as_str().unwrap().contains("runs on b"),
        "{settled}"
    );
    let s = status(a, name);
    assert_eq!(s["desired_source"], "migrate to b", "{s}");
    assert_eq!(wanted_on(&net, name), ["b"]);
    assert_eq!(where_runs(&net, name), ["b"]);

    sampler.stop();
    let twice = sampler.twice(name, &[]);
    println!(
        "figures: stop-first, target cut: {} samples, {} on two hosts; migrate returned {:.1} s after the cut",
        sampler.samples().len(),
        twice.len(),
        took.as_secs_f64()
    );
    assert!(twice.is_empty(), "ran on two hosts at once: {twice:?}");
}

#[test]
fn docker_the_source_cut_during_an_overlap_move() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = "ov";
    let compose = host_sleeper("x", Some(2), None);
    let Some(net) = world("ov", &service(name, "overlap"), &[(name, compose)]) else {
        return;
    };
    let (a, b) = (net.host("a"), net.host("b"));
    a.ctl(&["start", name]).expect_success();
    wait_until(Duration::from_secs(30), "ov to run on a", || {
        a.running(name) == 1
    });
    let mut sampler = net.sampler(&[name]);

    let asked = Instant::now();
    let moving = migrate_in_background(&net, name, "b");
    // b started it and is not yet healthy; a still runs it: cut a.
    wait_fast(Duration::from_secs(60), "ov to start on b", || {
        b.running(name) == 1
    });
    net.cut("a");
    let cut_at = Instant::now();
    let out = moving.join().unwrap();
    let returned = Instant::now();
    println!("migrate after the cut: {out}");
    assert!(!out.success(), "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("in doubt"), "{out}");
    assert!(out.stdout.contains("a: stopped"), "a stops its copy: {out}");
    // Cut off from a, b finishes its half: the service runs on b alone.
    wait_until(Duration::from_secs(30), "ov to be healthy on b", || {
        status(b, name)["health"] == "healthy"
    });
    assert_eq!(where_runs(&net, name), ["b"]);
    assert!(status(a, name)["desired_source"]
        .as_str()
        .unwrap()
        .contains("(in doubt)"));
    assert_eq!(events(a, "migrate-in-doubt", name).len(), 1);

    net.heal("a");
    wait_until(Duration::from_secs(30), "a to settle the move", || {
        !events(a, "migrate-settled", name).is_empty()
    });
    assert_eq!(wanted_on(&net, name), ["b"]);
    assert_eq!(where_runs(&net, name), ["b"]);

    sampler.stop();
    // The overlap by design: from the request to the move's end on a.
    let designed = sampler.twice(name, &[]).len();
    let twice = sampler.twice(name, &[(asked, returned)]);
    println!(
        "figures: overlap, source cut: {} samples, {designed} on two hosts inside the move (the overlap, ended {:.1} s after the cut), {} outside",
        sampler.samples().len(),
        (returned - cut_at).as_secs_f64(),
        twice.len()
    );
    assert!(twice.is_empty(), "ran on two hosts at once: {twice:?}");
}

#[test]
fn docker_a_third_host_cut_while_a_start_asks_the_hand_off_rule() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = "hr";
    let compose = host_sleeper("x", None, None);
    let Some(net) = world("hr", &service(name, "stop-first"), &[(name, compose)]) else {
        return;
    };
    let (a, c) = (net.host("a"), net.host("c"));
    a.ctl(&["start", name]).expect_success();
    wait_until(Duration::from_secs(30), "hr to run on a", || {
        a.running(name) == 1
    });
    a.ctl(&["migrate", name, "c"]).expect_success();
    assert_eq!(where_runs(&net, name), ["c"]);
    let mut sampler = net.sampler(&[name]);

    // c cut: a start on a cannot ask c, and is refused; nothing changes.
    net.cut("c");
    let out = a.ctl(&["start", name]).expect_failure();
    assert!(out.stderr.contains("cannot ask c"), "{out}");
    assert!(out.stderr.contains("nothing was changed"), "{out}");
    assert_eq!(where_runs(&net, name), ["c"]);
    assert_eq!(status(a, name)["desired_state"], "stopped");

    // Healed: the start is refused again, now because c runs it.
    net.heal("c");
    wait_until(Duration::from_secs(30), "a to see c again", || {
        a.json(&["hosts"])
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["reachable"] == true)
    });
    let out = a.ctl(&["start", name]).expect_failure();
    assert!(out.stderr.contains("runs on c"), "{out}");
    assert_eq!(where_runs(&net, name), ["c"]);
    assert_eq!(wanted_on(&net, name), ["c"]);

    // A conflict made on purpose: c cut again, a person forces the start
    // on a (c is taken for gone). Both want it running; on heal the newer
    // claim (a's) wins, c stops its copy and says so.
    net.cut("c");
    let forced = Instant::now();
    a.ctl(&["start", "--force", name]).expect_success();
    wait_until(Duration::from_secs(30), "hr to run on a", || {
        a.running(name) == 1
    });
    assert_eq!(where_runs(&net, name), ["a", "c"], "c runs on, cut off");
    net.heal("c");
    wait_until(
        Duration::from_secs(60),
        "the conflict to be resolved",
        || where_runs(&net, name) == ["a"],
    );
    let resolved = Instant::now();
    let conflict = events(c, "handoff-conflict", name);
    assert_eq!(conflict.len(), 1, "{conflict:?}");
    assert_eq!(conflict[0]["data"]["winner"], "a", "{conflict:?}");
    assert!(
        conflict[0]["data"]["rule"]
            .as_str()
            .unwrap()
            .contains("newer claim wins"),
        "{conflict:?}"
    );
    assert!(events(a, "handoff-conflict", name).is_empty());
    assert_eq!(wanted_on(&net, name), ["a"]);
    assert_eq!(status(c, name)["desired_source"], "migrate to a");

    sampler.stop();
    let forced_twice = sampler.twice(name, &[]).len();
    let twice = sampler.twice(name, &[(forced, resolved)]);
    println!(
        "figures: third host cut: {} samples, {} on two hosts outside the forced start, {forced_twice} while the person's --force overrode the rule (until the heal resolved it)",
        sampler.samples().len(),
        twice.len()
    );
    assert!(twice.is_empty(), "ran on two hosts at once: {twice:?}");
}

#[test]
fn docker_a_move_in_doubt_that_did_not_happen_starts_on_the_source_again_on_heal() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = "nh";
    // On b it never gets healthy: b's own half fails while b is cut off.
    let unhealthy = host_sleeper("x", None, None)
        + "    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      timeout: 1s\n      retries: 2\n";
    let Some(net) = world_with(
        "nh",
        &service(name, "stop-first"),
        &[(name, host_sleeper("x", None, None))],
        |net| net.compose_on("b", name, &unhealthy),
    ) else {
        return;
    };
    let (a, b) = (net.host("a"), net.host("b"));
    a.ctl(&["start", name]).expect_success();
    wait_until(Duration::from_secs(30), "nh to run on a", || {
        a.running(name) == 1
    });
    let mut sampler = net.sampler(&[name]);
    let moving = migrate_in_background(&net, name, "b");
    wait_fast(Duration::from_secs(60), "nh to start on b", || {
        b.running(name) == 1
    });
    net.cut("b");
    let out = moving.join().unwrap();
    assert!(!out.success(), "{out}");
    assert!(format!("{out}").contains("in doubt"), "{out}");
    // b gives up on its own and stops its attempt: nh runs nowhere, and
    // a's task log and alert say where it was and what to do.
    wait_until(Duration::from_secs(60), "b to hand it back", || {
        status(b, name)["desired_state"] == "stopped"
    });
    assert_eq!(where_runs(&net, name), Vec::<String>::new());
    let doubt = events(a, "migrate-in-doubt", name);
    assert_eq!(doubt.len(), 1, "{doubt:?}");
    assert_eq!(doubt[0]["data"]["from"], "a");

    // Healed: a learns the move did not happen and starts nh again.
    net.heal("b");
    wait_until(Duration::from_secs(60), "nh to run on a again", || {
        where_runs(&net, name) == ["a"]
    });
    let settled = events(a, "migrate-settled", name);
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(settled[0]["severity"], "warning");
    assert!(
        settled[0]["summary"]
            .as_str()
            .unwrap()
            .contains("did not happen"),
        "{settled:?}"
    );
    assert_eq!(wanted_on(&net, name), ["a"]);
    sampler.stop();
    let twice = sampler.twice(name, &[]);
    println!(
        "figures: stop-first, target cut and failing: {} samples, {} on two hosts",
        sampler.samples().len(),
        twice.len()
    );
    assert!(twice.is_empty(), "ran on two hosts at once: {twice:?}");
}

/// Microseconds since the epoch of a timestamp as Docker writes it (its
/// fraction drops trailing zeros, so the strings do not compare as text).
fn unix_usec(t: &str) -> u64 {
    stackd::time::parse_rfc3339_usec(t.trim()).unwrap_or_else(|| panic!("bad time {t}"))
}

/// The placement change of issue 15's item 2 on hosts with engines of
/// their own: `apply --all-hosts` stops the service on the host it
/// leaves before it starts on the one it goes to, by each host's Docker.
#[test]
fn docker_apply_all_hosts_moves_a_changed_placement_stop_first() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (pl, keep) = ("pl", "keep");
    let services = service(pl, "stop-first") + &service(keep, "stop-first");
    let sleeper = host_sleeper("x", None, None);
    let Some(net) = world("pl", &services, &[(pl, sleeper.clone()), (keep, sleeper)]) else {
        return;
    };
    let (a, b) = (net.host("a"), net.host("b"));
    a.ctl(&["start", pl, keep]).expect_success();
    wait_until(Duration::from_secs(30), "both to run on a", || {
        a.running(pl) == 1 && a.running(keep) == 1
    });
    let mut sampler = net.sampler(&[pl, keep]);

    let from = format!("[services.{pl}]\nhost = \"a\"");
    for h in &net.hosts {
        let text = std::fs::read_to_string(&h.cluster).unwrap();
        assert!(text.contains(&from));
        let to = format!("[services.{pl}]\nhost = \"b\"");
        std::fs::write(&h.cluster, text.replace(&from, &to)).unwrap();
        h.ctl(&["reload"]).expect_success();
    }
    let plan = a
        .ctl(&["apply", "--all-hosts", "--dry-run"])
        .expect_success();
    println!("{plan}");
    let steps: Vec<Vec<&str>> = plan
        .stdout
        .lines()
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        steps,
        [
            vec!["a", "stop", pl],
            vec!["b", "preflight", pl],
            vec!["b", "start", pl]
        ],
        "{plan}"
    );
    assert_eq!(where_runs(&net, pl), ["a"], "a dry run changes nothing");

    let out = a.ctl(&["apply", "--all-hosts"]).expect_success();
    println!("{out}");
    assert_eq!(where_runs(&net, pl), ["b"]);
    assert_eq!(where_runs(&net, keep), ["a"]);
    let inspect = |h: &Host, field: &str| {
        let id = h.engine.container(pl);
        let out = h
            .engine
            .docker(&["inspect", "-f", field, &id])
            .expect_success();
        unix_usec(&out.stdout)
    };
    let a_finished = inspect(a, "{{.State.FinishedAt}}");
    let b_started = inspect(b, "{{.State.StartedAt}}");
    println!(
        "figures: apply --all-hosts: pl finished on a {:.3} s before it started on b",
        (b_started as f64 - a_finished as f64) / 1e6
    );
    assert!(a_finished < b_started, "{a_finished} !< {b_started}");
    assert_eq!(wanted_on(&net, pl), ["b"]);
    let again = a
        .ctl(&["apply", "--all-hosts", "--dry-run"])
        .expect_success();
    assert!(!again.stdout.contains(pl), "{again}");
    sampler.stop();
    for p in [pl, keep] {
        let twice = sampler.twice(p, &[]);
        assert!(twice.is_empty(), "{p} ran on two hosts at once: {twice:?}");
    }
}

// ---------------------------------------------------------------------------
// Moves that carry their data (issue 15, item 3)
// ---------------------------------------------------------------------------

/// A service that keeps its data in the named volume `data` (16 MiB of
/// random bytes, written at its first start only, so a copy that starts
/// empty writes other bytes) and reads a bind mount, which stays behind.
fn keeper() -> String {
    keeper_of(16)
}

/// [`keeper`] with `mib` MiB in its volume.
fn keeper_of(mib: u32) -> String {
    format!(
        "version: \"2.4\"\nservices:\n  main:\n    image: {}\n    pull_policy: never\n    init: true\n    stop_grace_period: 5s\n    \
         command: [\"sh\", \"-c\", \"test -f /data/blob || dd if=/dev/urandom of=/data/blob bs=1048576 count={mib} 2>/dev/null; touch /tmp/ready; trap 'exit 0' TERM; sleep 3600 & wait\"]\n    \
         healthcheck:\n      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]\n      interval: 1s\n      timeout: 1s\n      retries: 3\n    \
         volumes:\n      - data:/data\n      - ./conf:/conf\nvolumes:\n  data: {{}}\n",
        ensure_image(),
    )
}

/// The SHA-256 of `/blob` in `volume` on `h`'s engine, read by a
/// throw-away container there (not a Compose one); None when it cannot
/// be read.
fn blob_sha(h: &Host, volume: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    let out = Command::new("docker")
        .args(["-H", &h.engine.host(), "run", "--rm", "-v"])
        .arg(format!("{volume}:/d:ro"))
        .args([ensure_image(), "cat", "/d/blob"])
        .output()
        .ok()?;
    (out.status.success() && !out.stdout.is_empty()).then(|| {
        Sha256::digest(&out.stdout)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

#[test]
fn docker_a_move_with_volumes_carries_the_data_and_a_refusal_leaves_it_on_the_source() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = "vk";
    let volume = "vk_data";
    let Some(net) = world_with(
        "vk",
        &service(name, "stop-first"),
        &[(name, keeper())],
        |net| {
            for h in &net.hosts {
                std::fs::create_dir_all(h.env.compose_dir().join(name).join("conf")).expect("conf");
            }
        },
    ) else {
        return;
    };
    let (a, b) = (net.host("a"), net.host("b"));
    a.ctl(&["start", name]).expect_success();
    wait_until(Duration::from_secs(60), "vk to be healthy on a", || {
        status(a, name)["health"] == "healthy"
    });
    let on_a = blob_sha(a, volume).expect("the blob on a");
    let mut sampler = net.sampler(&[name]);

    // b refuses the volume: a volume of that name there is in use by a
    // running container that is not the project's. Nothing was started
    // on b, so a starts vk again with its data as it was.
    b.engine
        .docker(&["volume", "create", volume])
        .expect_success();
    b.engine
        .docker(&[
            "run",
            "-d",
            "--name",
            "volumes-blocker",
            "-v",
            &format!("{volume}:/x"),
            ensure_image(),
            "sleep",
            "3600",
        ])
        .expect_success();
    let out = a.ctl(&["migrate", name, "b", "--with-volumes"]);
    println!("refused move: {out}");
    assert!(!out.success(), "b refused the volume: {out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("a: stopped"), "{out}");
    assert!(text.contains("volumes-blocker"), "says what refused: {out}");
    assert!(text.contains("untouched"), "{out}");
    assert!(text.contains("vk runs on a again"), "{out}");
    wait_until(
        Duration::from_secs(60),
        "vk to be healthy on a again",
        || status(a, name)["health"] == "healthy",
    );
    assert_eq!(where_runs(&net, name), ["a"]);
    assert_eq!(status(a, name)["desired_state"], "running");
    assert_eq!(blob_sha(a, volume).as_deref(), Some(on_a.as_str()));

    // The blocker goes; its volume (no labels, no user) is stale and is
    // replaced. The move carries the 16 MiB and b starts vk on them.
    b.engine
        .docker(&["rm", "-f", "volumes-blocker"])
        .expect_success();
    let out = a.ctl(&["migrate", name, "b", "--with-volumes"]);
    println!("move: {out}");
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("not carried: bind"),
        "names the bind mount: {out}"
    );
    assert!(out.stdout.contains("verified there"), "{out}");
    assert!(out.stdout.contains("was replaced"), "{out}");
    wait_until(Duration::from_secs(30), "vk to be healthy on b", || {
        status(b, name)["health"] == "healthy"
    });
    assert_eq!(where_runs(&net, name), ["b"]);
    assert_eq!(
        blob_sha(b, volume).as_deref(),
        Some(on_a.as_str()),
        "the data on b is a's"
    );
    let labels = b
        .engine
        .docker(&["volume", "inspect", "--format", "{{json .Labels}}", volume])
        .expect_success();
    assert!(
        labels
            .stdout
            .contains("\"com.docker.compose.project\":\"vk\""),
        "{labels}"
    );
    // a's copy stays as it was (stopped there, not removed).
    assert_eq!(blob_sha(a, volume).as_deref(), Some(on_a.as_str()));

    sampler.stop();
    let twice = sampler.twice(name, &[]);
    assert!(twice.is_empty(), "ran on two hosts at once: {twice:?}");
}

/// A service placed on host a with `handoff_volumes = true`: any move of
/// it carries its named volumes.
fn carried(name: &str, auto_start: bool) -> String {
    format!(
        "[services.{name}]\nhost = \"a\"\nauto_start = {auto_start}\nhandoff = \"stop-first\"\nhandoff_volumes = true\nstart_timeout = \"30s\"\n\n"
    )
}

/// Makes the `conf` directory the keeper's bind mount reads, on every
/// host, for each of `names`.
fn conf_dirs(net: &Net, names: &[&str]) {
    for h in &net.hosts {
        for n in names {
            std::fs::create_dir_all(h.env.compose_dir().join(n).join("conf")).expect("conf");
        }
    }
}

/// Whether `h`'s engine has volume `volume`, and a carrier container
/// (`stackd-carry-*`, the stopped container a volume is filled through).
fn volume_there(h: &Host, volume: &str) -> (bool, bool) {
    let vols = h
        .engine
        .docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")])
        .expect_success();
    let carriers = h
        .engine
        .docker(&["ps", "-aq", "--filter", "label=org.stackd.carrier"])
        .expect_success();
    (
        vols.stdout.lines().any(|l| l.trim() == volume),
        carriers.stdout.lines().any(|l| !l.trim().is_empty()),
    )
}

/// Issue 15, item 3: a move of a service with `handoff_volumes` (a plain
/// `stackctl migrate`, no `--with-volumes`) whose target is cut off in the
/// middle of a volume's stream. Nothing was asked of the target's start
/// yet, so the source's data is untouched and the service runs there
/// again; the task log and the alert say so; once the link is back the
/// target has dropped what it had received. Then the same move, uncut,
/// carries the data.
#[test]
fn docker_a_cut_in_the_middle_of_a_volume_leaves_the_data_on_the_source() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (name, volume) = ("mt", "mt_data");
    let mib = 48;
    // On a the volume keeps its data in a directory of its own (local
    // driver, driver_opts type=none o=bind): options the move does not
    // carry, and says so.
    let store = std::env::temp_dir().join(format!("stackd-mt-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).expect("the volume's directory");
    let compose = keeper_of(mib).replace(
        "  data: {}\n",
        &format!(
            "  data:\n    driver_opts: {{type: none, o: bind, device: {}}}\n",
            store.display()
        ),
    );
    assert!(compose.contains("driver_opts"));
    let Some(net) = world_with("mt", &carried(name, false), &[(name, compose)], |net| {
        conf_dirs(net, &[name]);
    }) else {
        return;
    };
    let (a, b) = (net.host("a"), net.host("b"));
    a.ctl(&["start", name]).expect_success();
    wait_until(Duration::from_secs(90), "mt to be healthy on a", || {
        status(a, name)["health"] == "healthy"
    });
    let on_a = blob_sha(a, volume).expect("the blob on a");
    let mut sampler = net.sampler(&[name]);

    // 48 MiB at 64 Mbit/s: about 6 s on the wire, a window to cut in.
    net.throttle("b", Some("64mbit"));
    let moving = migrate_in_background(&net, name, "b");
    wait_fast(
        Duration::from_secs(60),
        "b to receive the volume (its carrier container)",
        || volume_there(b, volume).1,
    );
    let receiving = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    net.cut("b");
    let cut_at = Instant::now();
    let out = moving.join().unwrap();
    let returned = cut_at.elapsed();
    println!("migrate cut mid-transfer: {out}");
    assert!(!out.success(), "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("(handoff stop-first, with its named volumes)"),
        "handoff_volumes carries them without --with-volumes: {out}"
    );
    assert!(text.contains("a: stopped"), "{out}");
    assert!(
        text.contains("not carried: bind"),
        "names the bind mount: {out}"
    );
    assert!(
        text.contains(&format!(
            "not carried: the driver_opts of volume mt_data (device={}, o=bind, type=none); b makes it with driver local alone",
            store.display()
        )),
        "names the options left behind: {out}"
    );
    assert!(
        text.contains("carrying volume mt_data to b failed"),
        "{out}"
    );
    assert!(
        text.contains("volumes on a were only read and are untouched"),
        "{out}"
    );
    assert!(text.contains("mt runs on a again"), "{out}");
    wait_until(
        Duration::from_secs(60),
        "mt to be healthy on a again",
        || status(a, name)["health"] == "healthy",
    );
    assert_eq!(where_runs(&net, name), ["a"]);
    let s = status(a, name);
    assert_eq!(s["desired_state"], "running", "{s}");
    assert_eq!(
        blob_sha(a, volume).as_deref(),
        Some(on_a.as_str()),
        "a's data is as it was"
    );
    // The alert: a failed migrate, and why, in the event log.
    let failed = events(a, "task-failed", name);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let why = failed[0]["data"]["error"].as_str().unwrap_or_default();
    assert_eq!(failed[0]["data"]["kind"], "migrate", "{failed:?}");
    assert!(why.contains("carrying volume mt_data to b failed"), "{why}");
    assert!(why.contains("mt runs on a again"), "{why}");

    // Healed: b, whose body stopped coming, drops the half-filled volume
    // and its carrier; it never ran mt.
    net.heal("b");
    net.throttle("b", None);
    wait_until(
        Duration::from_secs(60),
        "b to drop the half-received volume",
        || volume_there(b, volume) == (false, false),
    );
    let dropped = cut_at.elapsed();
    assert_eq!(b.running(name), 0);
    assert_eq!(wanted_on(&net, name), ["a"]);

    // The same plain move, uncut, carries the data.
    wait_until(Duration::from_secs(30), "a to see b again", || {
        a.json(&["hosts"])
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["reachable"] == true)
    });
    let out = a.ctl(&["migrate", name, "b"]);
    println!("move: {out}");
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("verified there"), "{out}");
    assert!(
        out.stdout
            .contains("kept on a, as they were: volume mt_data"),
        "names the volumes left on a: {out}"
    );
    wait_until(Duration::from_secs(30), "mt to be healthy on b", || {
        status(b, name)["health"] == "healthy"
    });
    assert_eq!(where_runs(&net, name), ["b"]);
    assert_eq!(blob_sha(b, volume).as_deref(), Some(on_a.as_str()));
    assert_eq!(blob_sha(a, volume).as_deref(), Some(on_a.as_str()));

    sampler.stop();
    let twice = sampler.twice(name, &[]);
    println!(
        "figures: {mib} MiB volume, b cut {:.1} s into its stream: migrate returned {:.1} s after the cut (mt running on a again), b dropped the partial volume {:.1} s after the cut; {} samples, {} on two hosts",
        (cut_at - receiving).as_secs_f64(),
        returned.as_secs_f64(),
        dropped.as_secs_f64(),
        sampler.samples().len(),
        twice.len()
    );
    assert!(twice.is_empty(), "ran on two hosts at once: {twice:?}");
    drop(net);
    let _ = std::fs::remove_dir_all(&store);
}

/// Issue 15, items 2 and 3 together: `apply --all-hosts` after the
/// placement of two `handoff_volumes` services changed from a to b. `db`
/// is carried: stopped on a, its volume streamed and checked, started on
/// b on a's data (a's container finished before b's started). `dk` cannot
/// be: b refuses its volume (a running container of another project uses
/// one of that name), so it runs on a again, kept there, and b keeps it
/// stopped, so that b's own apply does not start it empty; another apply
/// leaves both where they are.
#[test]
fn docker_apply_all_hosts_carries_the_volumes_of_a_moved_service() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (db, dk) = ("db", "dk");
    let services = carried(db, false) + &carried(dk, true);
    let Some(net) = world_with("cv", &services, &[(db, keeper()), (dk, keeper())], |net| {
        conf_dirs(net, &[db, dk])
    }) else {
        return;
    };
    let (a, b) = (net.host("a"), net.host("b"));
    a.ctl(&["start", db]).expect_success();
    wait_until(
        Duration::from_secs(90),
        "db and dk to be healthy on a",
        || status(a, db)["health"] == "healthy" && status(a, dk)["health"] == "healthy",
    );
    let (db_sha, dk_sha) = (
        blob_sha(a, "db_data").expect("db's blob"),
        blob_sha(a, "dk_data").expect("dk's blob"),
    );
    // What makes b refuse dk's volume.
    b.engine
        .docker(&["volume", "create", "dk_data"])
        .expect_success();
    b.engine
        .docker(&[
            "run",
            "-d",
            "--name",
            "dk-blocker",
            "-v",
            "dk_data:/x",
            ensure_image(),
            "sleep",
            "3600",
        ])
        .expect_success();
    let mut sampler = net.sampler(&[db, dk]);

    for h in &net.hosts {
        let mut text = std::fs::read_to_string(&h.cluster).unwrap();
        for n in [db, dk] {
            let from = format!("[services.{n}]\nhost = \"a\"");
            assert!(text.contains(&from));
            text = text.replace(&from, &format!("[services.{n}]\nhost = \"b\""));
        }
        std::fs::write(&h.cluster, text).unwrap();
        // Both of a's services leave it: past its reload_guard.
        h.ctl(&["reload", "--force"]).expect_success();
    }
    let plan = a
        .ctl(&["apply", "--all-hosts", "--dry-run"])
        .expect_success();
    println!("{plan}");
    let steps: Vec<Vec<&str>> = plan
        .stdout
        .lines()
        .filter(|l| l.contains(db))
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        steps,
        [
            vec!["a", "stop", db],
            vec!["b", "preflight", db],
            vec!["a", "carry", db],
            vec!["b", "start", db]
        ],
        "{plan}"
    );
    assert!(plan.stdout.contains("with its named volumes"), "{plan}");
    assert_eq!(where_runs(&net, db), ["a"], "a dry run changes nothing");

    let started = Instant::now();
    let out = a.ctl(&["apply", "--all-hosts"]);
    let took = started.elapsed();
    println!("{out}");
    assert!(!out.success(), "dk's move failed: {out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("a: moved db to b with its named volumes"),
        "{out}"
    );
    assert!(text.contains("dk-blocker"), "says what refused dk: {out}");
    assert!(text.contains("dk runs on a again"), "{out}");
    assert!(text.contains("b keeps it stopped"), "{out}");

    // db: on b, on a's data; stopped on a before it started on b.
    wait_until(Duration::from_secs(30), "db to be healthy on b", || {
        status(b, db)["health"] == "healthy"
    });
    assert_eq!(where_runs(&net, db), ["b"]);
    assert_eq!(blob_sha(b, "db_data").as_deref(), Some(db_sha.as_str()));
    assert_eq!(blob_sha(a, "db_data").as_deref(), Some(db_sha.as_str()));
    let inspect = |h: &Host, field: &str| {
        let id = h.engine.container(db);
        let out = h
            .engine
            .docker(&["inspect", "-f", field, &id])
            .expect_success();
        unix_usec(&out.stdout)
    };
    let a_finished = inspect(a, "{{.State.FinishedAt}}");
    let b_started = inspect(b, "{{.State.StartedAt}}");
    assert!(a_finished < b_started, "{a_finished} !< {b_started}");

    // dk: runs on a with its data, kept there; b keeps it stopped.
    wait_until(Duration::from_secs(60), "dk to be healthy on a", || {
        status(a, dk)["health"] == "healthy"
    });
    assert_eq!(where_runs(&net, dk), ["a"]);
    assert_eq!(blob_sha(a, "dk_data").as_deref(), Some(dk_sha.as_str()));
    let s = status(a, dk);
    assert_eq!(s["desired_state"], "running", "{s}");
    assert_eq!(
        s["desired_source"], "kept here: its move to b failed",
        "{s}"
    );
    assert_eq!(status(b, dk)["desired_state"], "stopped");
    assert_eq!(wanted_on(&net, dk), ["a"]);
    assert_eq!(wanted_on(&net, db), ["b"]);

    // Another apply changes nothing: nothing is planned for either.
    let again = a
        .ctl(&["apply", "--all-hosts", "--dry-run"])
        .expect_success();
    assert!(
        !again.stdout.contains(db) && !again.stdout.contains(dk),
        "{again}"
    );
    sampler.stop();
    println!(
        "figures: apply --all-hosts with two carried services: {:.1} s; db finished on a {:.3} s before it started on b; {} samples",
        took.as_secs_f64(),
        (b_started as f64 - a_finished as f64) / 1e6,
        sampler.samples().len()
    );
    for p in [db, dk] {
        let twice = sampler.twice(p, &[]);
        assert!(twice.is_empty(), "{p} ran on two hosts at once: {twice:?}");
    }
}
