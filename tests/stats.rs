//! Resource figures read from cgroups and procfs, through D-Bus and
//! stackctl, and a CPU spike announced as an alert.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_spinning_container_shows_its_cpu_and_raises_a_spike() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("stats");
    let spin = env.add_project(
        "spin",
        &format!(
            r#"version: "2.4"
services:
  main:
    image: {image}
    command: ["sh", "-c", "while :; do :; done"]
    stop_grace_period: 1s
"#
        ),
    );
    // A spike counts from 10% CPU held for 0 s: the first two samples (5 s
    // apart) are enough.
    env.write_config(&format!(
        "[services.{spin}]\nauto_start = false\nresources = {{ cpu_percent = 10, sustain = \"0s\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &spin]).expect_success();

    let path = service_path(&spin);
    let cpu = || -> f64 {
        let out = busctl(
            &bus,
            &[
                "get-property",
                "org.stackd1",
                &path,
                "org.stackd1.Service",
                "CpuPercent",
            ],
        )
        .expect_success();
        out.stdout.trim().trim_start_matches("d ").parse().unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        "CpuPercent from the cgroup",
        || cpu() > 10.0,
    );
    let memory = busctl(
        &bus,
        &[
            "get-property",
            "org.stackd1",
            &path,
            "org.stackd1.Service",
            "MemoryBytes",
        ],
    )
    .expect_success();
    let bytes: u64 = memory
        .stdout
        .trim()
        .trim_start_matches("t ")
        .parse()
        .unwrap();
    assert!(bytes > 0, "{memory}");

    let host = stackctl(&env, &bus, &["status"]).expect_success();
    assert!(
        host.stdout.contains("Memory:") && host.stdout.contains("Load:"),
        "{host}"
    );
    let stats = busctl(
        &bus,
        &[
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "HostStats",
        ],
    )
    .expect_success();
    assert!(stats.stdout.contains("MemoryTotal"), "{stats}");

    wait_until(Duration::from_secs(30), "the spike is announced", || {
        daemon.stderr().contains("spike-started") || daemon.stderr().contains("cpu_percent at")
    });
    stackctl(&env, &bus, &["stop", &spin]).expect_success();
    wait_until(Duration::from_secs(30), "the spike ends", || {
        daemon.stderr().contains("back to normal")
    });
}
