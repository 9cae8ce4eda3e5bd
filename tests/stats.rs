//! Resource figures read from cgroups and procfs, through D-Bus and
//! stackctl, and CPU and memory spikes announced as alerts.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn docker_a_spinning_container_shows_its_cpu_and_raises_a_spike() {
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
    // A spike counts from 10% CPU held for 0 s: the first two samples (a
    // second apart) are enough.
    env.write_config(&format!(
        "sample_interval = \"1s\"\n\n[services.{spin}]\nauto_start = false\nresources = {{ cpu_percent = 10, sustain = \"0s\" }}\n"
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
    // `stackctl top`, batch mode: the header, then the spinning container
    // with its figures; plain text (stdout is a pipe here anyway).
    let container = containers(&spin).remove(0).name;
    let top = stackctl(&env, &bus, &["top", "-b", "-n", "1"]).expect_success();
    assert!(!top.stdout.contains('\x1b'), "no escape codes: {top}");
    let lines: Vec<&str> = top.stdout.lines().collect();
    assert!(lines[0].starts_with("Host: CPU "), "{top}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SERVICE",
            "CONTAINER",
            "CPU%",
            "MEMORY",
            "LIMIT",
            "PIDS",
            "NET-RX",
            "NET-TX"
        ],
        "{top}"
    );
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(&spin))
        .unwrap_or_else(|| panic!("no row for {spin}: {top}"))
        .split_whitespace()
        .collect();
    assert_eq!(row.len(), 8, "{top}");
    assert_eq!(row[1], container, "{top}");
    assert!(row[2].parse::<f64>().unwrap() > 10.0, "CPU%: {top}");
    assert!(row[3].ends_with(['K', 'M']), "memory: {top}");
    assert_eq!(row[4], "-", "no memory limit: {top}");
    assert_eq!(row[5], "1", "one sh spinning: {top}");
    // Three snapshots, one after the other; JSON has every figure.
    let three = stackctl(
        &env,
        &bus,
        &["top", "-b", "-n", "3", "-d", "0.2", "--order=name"],
    )
    .expect_success();
    assert_eq!(three.stdout.matches("SERVICE  ").count(), 3, "{three}");
    let json = stackctl_json(&env, &bus, &["top", "-n", "1"]);
    let first = &json.as_array().unwrap()[0];
    assert_eq!(first["service"], spin.as_str(), "{json}");
    assert!(first["memory_bytes"].as_u64().unwrap() > 0, "{json}");
    let bad = stackctl(&env, &bus, &["top", "-d", "0"]);
    assert_eq!(bad.code, 2, "{bad}");

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

#[test]
fn docker_a_growing_memory_raises_a_spike_that_ends_when_it_is_freed() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("stats_memory");
    // 48 MiB written to /dev/shm (tmpfs: it counts in the container's
    // memory cgroup), held for 12 s, then freed.
    let grow = env.add_project(
        "grow",
        &format!(
            r#"version: "2.4"
services:
  main:
    image: {image}
    command: ["sh", "-c", "sleep 2; dd if=/dev/zero of=/dev/shm/fill bs=1M count=48; sleep 12; rm /dev/shm/fill; sleep 3600"]
    shm_size: 96m
    stop_grace_period: 1s
"#
        ),
    );
    // Sampled every second; a spike is 32 MiB held for 2 s.
    env.write_config(&format!(
        "sample_interval = \"1s\"\n\n[services.{grow}]\nauto_start = false\n\
         resources = {{ memory = \"32M\", sustain = \"2s\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &grow]).expect_success();

    // The journal line of the alert: "[stackd] HOST: SERVICE memory at
    // 50 MiB (threshold 32 MiB)".
    let started = format!("{grow} memory at ");
    wait_until(Duration::from_secs(30), "the memory spike", || {
        daemon.stderr().contains(&started)
    });
    let log = daemon.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&started)).collect();
    assert_eq!(lines.len(), 1, "one journal line per spike: {lines:#?}");
    assert!(
        lines[0].contains("stackd_alert=\"spike-started\""),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("(threshold 32 MiB)"), "{}", lines[0]);
    // The figure is the bytes in use: at least the 48 MiB written.
    let mib: u64 = lines[0]
        .split(&started)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {}", lines[0]));
    assert!(mib >= 48, "{}", lines[0]);
    assert!(!log.contains("memory back to normal"), "{log}");

    // Freed, not stopped: the service keeps running.
    wait_until(Duration::from_secs(40), "the spike ends", || {
        daemon.stderr().contains("memory back to normal")
    });
    assert_eq!(running(&grow), 1);
}
