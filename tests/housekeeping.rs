//! Housekeeping as an admin meets it, through `stackctl` against the real
//! Docker engine: `prune --dry-run` then `prune` after two updates (the
//! oldest image goes, the previous one stays for rollback, another
//! project's images and every volume stay), a project stackd no longer
//! manages cleaned up, `rollback` back to the previous image, the disk
//! warning on a state directory that fills up, and who may prune.
//!
//! There is no registry: each "new release" is a distinct image made with
//! `docker commit` (a label that differs) and tagged as the name Compose
//! gives the service's built image, so `update` (pull, then `up -d`)
//! recreates the container on it under Compose v1 and v2 alike.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    busctl_error_name, docker, have_bus, have_docker, stackctl, try_run, wait_until, Bus, Daemon,
    TestEnv, COMMAND_TIMEOUT,
};

/// A project whose one service `main` is built from the test image, with a
/// named volume. Compose names the built image `<project>_main` (v1) or
/// `<project>-main` (v2); the test tags its releases as that name.
fn built_compose() -> String {
    r#"version: "2.4"
services:
  main:
    build: .
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
    volumes:
      - data:/data
volumes:
  data: {}
"#
    .to_string()
}

fn add_built(env: &TestEnv, short: &str) -> String {
    let name = env.add_project(short, &built_compose());
    std::fs::write(
        env.compose_dir().join(&name).join("Dockerfile"),
        format!("FROM {}\n", common::ensure_image()),
    )
    .expect("Dockerfile");
    name
}

fn v1() -> bool {
    common::compose_command().is_some_and(|c| c[0] == "docker-compose")
}

/// The reference Compose gives the built image of `project`'s `main`.
fn built_reference(project: &str) -> String {
    if v1() {
        format!("{project}_main:latest")
    } else {
        format!("{project}-main:latest")
    }
}

/// Removes the images a test made (by id: each is a commit of its own, so
/// no other image has its id) when dropped, after the containers of the
/// test's projects (which would keep them).
struct Images {
    prefix: String,
    ids: Vec<String>,
}

impl Images {
    /// A new image from the test image, distinct by its label, tagged as
    /// `reference`; its id.
    fn release(&mut self, reference: &str, label: &str) -> String {
        let created = docker(&["create", common::ensure_image(), "true"]).expect_success();
        let cid = created.stdout.trim().to_string();
        let committed = docker(&[
            "commit",
            "--change",
            &format!("LABEL org.stackd.test.release={label}"),
            &cid,
            reference,
        ]);
        docker(&["rm", &cid]).expect_success();
        let id = committed.expect_success().stdout.trim().to_string();
        self.ids.push(id.clone());
        id
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        common::remove_projects(&format!("{}-", self.prefix));
        for id in self.ids.iter().rev() {
            let _ = try_run(
                std::process::Command::new("docker").args(["image", "rm", "-f", id]),
                COMMAND_TIMEOUT,
            );
        }
    }
}

fn image_exists(id: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", id]).success()
}

/// The image id the project's one container runs.
fn running_image(project: &str) -> String {
    let rows = common::containers(project);
    assert_eq!(rows.len(), 1, "one container expected: {rows:?}");
    docker(&["inspect", "--format", "{{.Image}}", &rows[0].id])
        .expect_success()
        .stdout
        .trim()
        .to_string()
}

fn short(id: &str) -> &str {
    &id.trim_start_matches("sha256:")[..12]
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).success()
}

#[test]
fn docker_prune_frees_the_oldest_image_keeps_the_previous_and_rollback_brings_it_back() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("housekeeping_prune");
    let mut images = Images {
        prefix: env.prefix().to_string(),
        ids: Vec::new(),
    };
    let web = add_built(&env, "web");
    // Each project runs an image of its own: the shared test image is
    // never recorded as one a service of this daemon ran, so no prune here
    // can take it from the tests that run alongside.
    let old_ref = format!("{}-old:1", env.prefix());
    images.release(&old_ref, "old");
    let old = env.add_project("old", &common::sleeper_compose(&old_ref));
    // Somebody else's project on the same host, and an image nobody runs.
    let other_ref = format!("{}-other:1", env.prefix());
    let x = images.release(&other_ref, "other");
    let other = env.add_project("other", &common::sleeper_compose(&other_ref));
    let stray = images.release(&format!("{}-stray:1", env.prefix()), "stray");
    let reference = built_reference(&web);
    let a = images.release(&reference, "a");

    let services = |names: &[&str]| {
        names
            .iter()
            .map(|s| format!("[services.{s}]\nauto_start = false\n\n"))
            .collect::<String>()
    };
    env.write_config(&services(&[&web, &old]));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    env.compose(&other, &["up", "-d"]).expect_success();

    stackctl(&env, &bus, &["start", &web, &old]).expect_success();
    assert_eq!(running_image(&web), a);
    let b = images.release(&reference, "b");
    stackctl(&env, &bus, &["update", &web]).expect_success();
    assert_eq!(running_image(&web), b, "the first update runs b");
    let c = images.release(&reference, "c");
    stackctl(&env, &bus, &["update", &web]).expect_success();
    assert_eq!(running_image(&web), c, "the second update runs c");

    // `old` leaves the config: apply stops it; its stopped container and
    // network are what prune cleans up, never its volume-less image.
    env.write_config(&services(&[&web]));
    stackctl(&env, &bus, &["reload"]).expect_success();
    stackctl(&env, &bus, &["apply"]).expect_success();
    assert_eq!(common::running(&old), 0);
    assert_eq!(common::containers(&old).len(), 1);

    let dry = stackctl(&env, &bus, &["prune", "--dry-run"]).expect_success();
    assert!(
        dry.stdout
            .contains(&format!("would remove image {}", short(&a))),
        "{dry}"
    );
    assert!(
        dry.stdout.contains(&format!("kept image {}", short(&b)))
            && dry.stdout.contains("previous image of")
            && dry.stdout.contains("kept for rollback"),
        "{dry}"
    );
    assert!(dry.stdout.contains("would remove container"), "{dry}");
    // a and old's image (its container goes in the same prune).
    assert!(
        dry.stdout
            .contains("would remove 2 images, 1 container, 1 network ("),
        "{dry}"
    );
    for id in [&b, &c, &x, &stray] {
        assert!(
            !dry.stdout
                .contains(&format!("would remove image {}", short(id))),
            "{dry}"
        );
    }
    assert!(image_exists(&a), "a dry run removes nothing");
    assert_eq!(
        common::containers(&old).len(),
        1,
        "a dry run removes nothing"
    );

    let started = Instant::now();
    let out = stackctl(&env, &bus, &["prune"]).expect_success();
    eprintln!("prune took {:?}", started.elapsed());
    assert!(
        out.stdout.contains(&format!("removed image {}", short(&a))),
        "{out}"
    );
    assert!(out.stdout.contains("freed"), "{out}");
    assert!(!image_exists(&a), "the oldest image is gone: {out}");
    for (what, id) in [
        ("previous", &b),
        ("current", &c),
        ("another project's", &x),
        ("a never-run", &stray),
    ] {
        assert!(image_exists(id), "the {what} image stays: {out}");
    }
    assert!(common::containers(&old).is_empty(), "{out}");
    assert!(common::containers(&other).len() == 1, "{out}");
    assert!(
        volume_exists(&format!("{web}_data")),
        "volumes are never pruned: {out}"
    );
    assert_eq!(running_image(&web), c);

    // Rollback: back to b, the image before the last update.
    let back = stackctl(&env, &bus, &["rollback", &web]).expect_success();
    assert!(
        back.stdout.contains(&format!("tagged {}", short(&b))),
        "{back}"
    );
    assert_eq!(
        running_image(&web),
        b,
        "rollback runs the previous image: {back}"
    );
    assert_eq!(common::running(&web), 1);
    // The image rolled away from is now the previous one: prune keeps it.
    let again = stackctl(&env, &bus, &["prune", "--images"]).expect_success();
    assert!(image_exists(&c), "{again}");
    assert!(again.stdout.contains("removed 0 images"), "{again}");
}

#[test]
fn docker_rollback_without_a_previous_image_is_refused_and_prune_needs_the_right_to_change() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("housekeeping_refusals");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &web]).expect_success();

    let out = stackctl(&env, &bus, &["rollback", &web]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no previous image"), "{out}");

    let prune = [
        "call",
        "org.stackd1",
        "/org/stackd1",
        "org.stackd1.Manager",
        "Prune",
        "a{sv}",
        "1",
        "dry_run",
        "b",
        "true",
    ];
    assert_eq!(
        busctl_error_name(Some(65534), &bus, &prune).as_deref(),
        Some("org.stackd1.Error.AccessDenied")
    );
    let mut bad = prune;
    bad[7] = "volumes";
    assert_eq!(
        busctl_error_name(None, &bus, &bad).as_deref(),
        Some("org.stackd1.Error.InvalidArgument")
    );
}

/// A tmpfs mounted on a directory for the test's life.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = try_run(
            std::process::Command::new("umount").arg("-l").arg(&self.0),
            COMMAND_TIMEOUT,
        );
    }
}

#[test]
fn docker_a_state_directory_below_disk_warning_raises_a_warning_naming_what_prune_frees() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("housekeeping_disk");
    let state = env.state_dir();
    let mounted = try_run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
            .arg(&state),
        COMMAND_TIMEOUT,
    )
    .is_ok_and(|o| o.success());
    if !common::require(
        "a tmpfs mount",
        mounted,
        "run the tests as root (mount -t tmpfs)",
    ) {
        return;
    }
    let _tmpfs = Tmpfs(state.clone());
    env.write_config("sample_interval = \"1s\"\n\n[housekeeping]\ndisk_warning = \"25%\"\n");
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    let alerts = |d: &Daemon| {
        d.stderr()
            .lines()
            .filter(|l| l.contains("stackd_alert=\"disk-low\""))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Free enough: no warning. The status shows the daemon is past start-up.
    wait_until(Duration::from_secs(30), "the daemon to be running", || {
        stackctl(&env, &bus, &["status"]).stdout.contains("running")
    });
    assert!(alerts(&daemon).is_empty(), "{}", daemon.stderr());

    // Fill the state directory to above 75 %.
    let filler = state.join("filler");
    let out = try_run(
        std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=7"])
            .arg(format!("of={}", filler.display())),
        COMMAND_TIMEOUT,
    )
    .expect("dd");
    assert!(out.success() || out.stderr.contains("No space"), "{out}");
    wait_until(Duration::from_secs(30), "a disk-low alert", || {
        !alerts(&daemon).is_empty()
    });
    let alert = alerts(&daemon).remove(0);
    // Severity warning: the journal channel logs it at WARN.
    assert!(alert.contains(" WARN "), "{alert}");
    assert!(alert.contains(&state.display().to_string()), "{alert}");
    assert!(alert.contains("below disk_warning 25%"), "{alert}");
    assert!(alert.contains("stackctl prune would free"), "{alert}");
}

#[test]
fn docker_prune_after_twenty_releases_keeps_only_the_current_and_the_previous() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("housekeeping_twenty");
    let mut images = Images {
        prefix: env.prefix().to_string(),
        ids: Vec::new(),
    };
    let web = add_built(&env, "web");
    let reference = built_reference(&web);
    let mut releases = vec![images.release(&reference, "r0")];
    env.write_config(&format!("[services.{web}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &web]).expect_success();
    for i in 1..20 {
        releases.push(images.release(&reference, &format!("r{i}")));
        stackctl(&env, &bus, &["update", &web]).expect_success();
    }
    assert_eq!(running_image(&web), releases[19]);

    let started = Instant::now();
    let out = stackctl(&env, &bus, &["prune", "--images"]).expect_success();
    eprintln!(
        "prune of 20 images (18 removed) took {:?}",
        started.elapsed()
    );
    assert!(
        out.stdout
            .contains("removed 18 images, 0 containers, 0 networks"),
        "{out}"
    );
    for (i, id) in releases.iter().enumerate() {
        assert_eq!(image_exists(id), i >= 18, "release {i}: {out}");
    }
}

#[test]
fn docker_a_scheduled_prune_runs_by_itself_every_interval() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("housekeeping_schedule");
    env.write_config("sample_interval = \"1s\"\n\n[housekeeping]\nprune = \"2s\"\n");
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    let prunes = || -> Vec<serde_json::Value> {
        common::stackctl_json(&env, &bus, &["tasks"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["kind"] == "prune" && t["state"] == "succeeded")
            .collect()
    };
    // Two: it is a schedule, not a prune at start-up.
    wait_until(Duration::from_secs(60), "two scheduled prunes", || {
        prunes().len() >= 2
    });
    let id = prunes()[0]["id"].to_string();
    let task = stackctl(&env, &bus, &["task", &id]).expect_success();
    assert!(task.stdout.contains("Origin: schedule"), "{task}");
    assert!(
        task.stdout.contains("prune images, containers, networks"),
        "{task}"
    );
}
