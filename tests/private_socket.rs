//! The private peer-to-peer socket, as systemd's /run/systemd/private: the
//! daemon's own user drives it with no bus in between.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn docker_stackctl_works_over_the_private_socket_without_a_bus() {
    if !have_docker() || !have_bus() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("private_socket");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let socket = env.run_dir().join("stackd/private");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the private socket is for the daemon's user only"
    );

    let list = stackctl_private(&env, &["list"]).expect_success();
    assert!(list.stdout.contains(&web), "{list}");

    // A task over the socket, streamed to its end.
    let start = stackctl_private(&env, &["start", &web]).expect_success();
    assert!(start.stdout.contains("up -d"), "{start}");
    assert_eq!(running(&web), 1);

    let status = stackctl_private(&env, &["status", &web]).expect_success();
    assert!(
        status.stdout.contains("Desired: running (set by user)"),
        "{status}"
    );

    stackctl_private(&env, &["stop", &web]).expect_success();
    assert_eq!(running(&web), 0);
    let gone = stackctl_private(&env, &["status", "nope"]);
    assert_eq!(gone.code, 4, "{gone}");
}
